package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDiffHeads(t *testing.T) {
	const target = "GET /echo?case=a HTTP/1.1\r\nHost: h:1\r\nX-Test: v\r\nOrigin: http://o\r\n\r\n"
	tests := map[string]struct {
		sent string
		want string // substring of the diff; "" for no difference
	}{
		"identical": {target, ""},
		"absolute form, proxy headers dropped": {
			"GET http://h:1/echo?case=a HTTP/1.1\r\nHost: h:1\r\nProxy-Authorization: Basic eDp5\r\nx-test: v\r\nProxy-Connection: close\r\nOrigin: http://o\r\n\r\n", "",
		},
		"value changed": {
			"GET /echo?case=a HTTP/1.1\r\nHost: h:1\r\nX-Test: V\r\nOrigin: http://o\r\n\r\n", `sent but not received: ["x-test: V"]`,
		},
		"path changed": {
			"GET http://h:1/other HTTP/1.1\r\nHost: h:1\r\nX-Test: v\r\nOrigin: http://o\r\n\r\n", "request line",
		},
		"header lost": {
			"GET /echo?case=a HTTP/1.1\r\nHost: h:1\r\nX-Test: v\r\nOrigin: http://o\r\nX-More: 1\r\n\r\n", `sent but not received: ["x-more: 1"]`,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := diffHeads([]byte(tt.sent), []byte(target))
			if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("diffHeads() = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestDiffHeadsRedactsLeakedCredential(t *testing.T) {
	sent := "GET /e HTTP/1.1\r\nHost: h\r\n\r\n"
	target := "GET /e HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic c2VjcmV0\r\n\r\n"
	got := diffHeads([]byte(sent), []byte(target))
	if strings.Contains(got, "c2VjcmV0") || !strings.Contains(got, "proxy-authorization: [redacted]") {
		t.Errorf("diffHeads() = %q; want the header reported with its value redacted", got)
	}
}

func TestFindSent(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A first attempt answered 407, then a retry on a new connection whose
	// CONNECT carries credentials, followed by frames.
	write("tap-1.raw", "CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\n\r\n")
	write("tap-2.raw", "CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\n\r\nGET /echo?case=x HTTP/1.1\r\nHost: h:1\r\n\r\n\x81\x85abcd")
	write("tap-10.raw", "GET http://h:1/echo?case=y HTTP/1.1\r\nHost: h:1\r\n\r\n")
	got, tunnel, err := findSent(dir, "x")
	if err != nil || !tunnel || string(got) != "GET /echo?case=x HTTP/1.1\r\nHost: h:1\r\n\r\n" {
		t.Errorf("findSent(x) = %q, %v, %v; want the tunnelled GET", got, tunnel, err)
	}
	got, tunnel, err = findSent(dir, "y")
	if err != nil || tunnel || !strings.HasPrefix(string(got), "GET http://") {
		t.Errorf("findSent(y) = %q, %v, %v; want the absolute-form GET", got, tunnel, err)
	}
	if _, _, err := findSent(dir, "z"); err == nil {
		t.Error("findSent(z) succeeded; want an error for a case never sent")
	}
}
