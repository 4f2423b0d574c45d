package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/elazarl/goproxy"
)

// runGoproxy is the "goproxy" subcommand: the naive reference relay the
// issue's figures name ("naive goproxy"), goproxy's default CONNECT handling
// with io.Copy (splice) both ways and nothing else. Importing goproxy here
// outside proxy/ is deliberate: it is a peer under test, not product code.
func runGoproxy() error {
	if _, err := raiseNoFile(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// goproxy chains to HTTP(S)_PROXY from the environment; the reference
	// relay must dial the echo server itself.
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		_ = os.Unsetenv(k)
	}
	p := goproxy.NewProxyHttpServer()
	p.Logger = log.New(io.Discard, "", 0)
	fmt.Fprintf(os.Stderr, "msg=listening addr=%s\n", ln.Addr())
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	return srv.Serve(ln)
}
