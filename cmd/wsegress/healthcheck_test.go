package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestHealthcheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "draining", 503) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()
	base := "http://" + ln.Addr().String()

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + closed.Addr().String() + "/healthz"
	closed.Close()

	cases := []struct {
		name    string
		args    []string
		wantOut string
		wantErr string
		code    int
	}{
		{"healthy", []string{"healthcheck", "--url", base + "/healthz"}, "healthy", "", 0},
		{"not ready", []string{"healthcheck", "--url", base + "/readyz"}, "", "503", 1},
		{"no listener", []string{"healthcheck", "--url", dead, "--timeout", "2s"}, "", "unhealthy", 1},
		{"bad url", []string{"healthcheck", "--url", "ftp://x/"}, "", "http:// or https://", 2},
		{"stray arg", []string{"healthcheck", "x"}, "", "unexpected argument", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCLI(t, context.Background(), "", tc.args...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("run %v: %v", tc.args, err)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("run %v: err = %v; want one containing %q", tc.args, err, tc.wantErr)
				}
				if ec, ok := err.(cli.ExitCoder); !ok || ec.ExitCode() != tc.code {
					t.Errorf("exit code of %v; want %d", err, tc.code)
				}
			}
			if !strings.Contains(out, tc.wantOut) {
				t.Errorf("output %q; want %q", out, tc.wantOut)
			}
		})
	}
}
