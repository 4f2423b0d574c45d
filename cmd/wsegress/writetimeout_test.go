package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestWriteTimeout: with $WSEGRESS_WRITE_TIMEOUT short, a tunnel whose
// client stopped reading while its target sends is closed, and its end line
// says write_timeout.
func TestWriteTimeout(t *testing.T) {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		c, err := target.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for i := 0; i < 1024; i++ { // 64 MiB at most: far more than buffers hold
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()

	t.Setenv("WSEGRESS_WRITE_TIMEOUT", "300ms")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	args := []string{"wsegress", "serve", "--listen", "127.0.0.1:0", "--drain-timeout", "1s",
		"--allow", target.Addr().String()}
	go func() { done <- run(ctx, args, strings.NewReader(""), &out, &out) }()
	addrRe := regexp.MustCompile(`msg=listening addr=(\S+)`)
	eventually(t, 10*time.Second, "the listening line", func() bool { return addrRe.MatchString(out.String()) })
	proxyAddr := addrRe.FindStringSubmatch(out.String())[1]

	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %[1]s\r\n\r\n", target.Addr())
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	// The client reads nothing more: the proxy's writes to it stall.
	eventually(t, 15*time.Second, "end=write_timeout", func() bool {
		return strings.Contains(out.String(), "end=write_timeout")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}
