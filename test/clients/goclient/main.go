package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: goclient gorilla|coder|frames [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gorilla", "coder":
		err = runClient(os.Args[1], os.Args[2:])
	case "frames":
		err = runFrames(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q (want gorilla, coder or frames)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
}

// options are what the runner passes to a client.
type options struct {
	mode   string // session, fail or env
	url    string
	caseID string
	proxy  string // coder: proxy URL with user:password; gorilla: instead of the environment
	// proxyTLS (gorilla): speak TLS to the proxy from NetDialContext
	// (gorilla v1.5.3 refuses https:// proxy URLs); trusts SSL_CERT_FILE.
	proxyTLS          bool
	certFile, keyFile string // a client certificate for the proxy
	timeout           time.Duration
}

func runClient(name string, args []string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var o options
	fs.StringVar(&o.mode, "mode", "session", "session (echo, ping, close), fail (the dial must fail) or env (gorilla: show what ProxyFromEnvironment picks)")
	fs.StringVar(&o.url, "url", "", "ws:// or wss:// URL of the target (required)")
	fs.StringVar(&o.caseID, "case", "", "case id, sent in the query and the X-Wsegress-Test header (required)")
	fs.StringVar(&o.proxy, "proxy", "", "proxy URL http://user:pass@host:port (coder: also https://); gorilla: instead of HTTP_PROXY/HTTPS_PROXY")
	fs.BoolVar(&o.proxyTLS, "proxy-tls", false, "gorilla: TLS to the proxy from NetDialContext (the https:// proxy workaround)")
	fs.StringVar(&o.certFile, "cert", "", "client certificate (PEM) for the proxy")
	fs.StringVar(&o.keyFile, "key", "", "key of -cert")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.url == "" || o.caseID == "" {
		return fmt.Errorf("%s: -url and -case are required", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	r := &report{}
	switch name {
	case "gorilla":
		runGorilla(ctx, o, r)
	default:
		runCoder(ctx, o, r)
	}
	if r.failed {
		os.Exit(1)
	}
	return nil
}

// caseURL adds the case id to the target URL: the echo server files what it
// sees under that id.
func caseURL(o options) string {
	sep := "?"
	if strings.Contains(o.url, "?") {
		sep = "&"
	}
	return o.url + sep + "case=" + o.caseID
}

// handshakeHeader is what every Go client adds to its handshake; the
// runner checks each value arrives unchanged.
func handshakeHeader(client, caseID string) http.Header {
	return http.Header{
		"X-Wsegress-Test": {client + "/" + caseID},
		"Origin":          {"http://" + client + ".origin.test"},
	}
}

// subprotocols offered by every client; the echo server picks wsegress-echo.
func subprotocols(client string) []string { return []string{"wsegress-echo", client + ".v1"} }

// payload1MiB returns 1 MiB of pseudo-random bytes, so a relay that
// truncated, reordered or re-encoded the message is caught.
func payload1MiB(seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x77736567))
	b := make([]byte, 1<<20)
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// report prints the step lines.
type report struct{ failed bool }

func (r *report) ok(step, format string, a ...any) {
	fmt.Printf("ok %s %s\n", step, fmt.Sprintf(format, a...))
}

func (r *report) fail(step, format string, a ...any) {
	r.failed = true
	fmt.Printf("fail %s %s\n", step, oneLine(fmt.Sprintf(format, a...)))
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// statusCodeRe finds a status code where libraries put one in an error
// ("status code 407", "got 403", "HTTP/1.1 407").
var statusCodeRe = regexp.MustCompile(`(?i)(?:status(?: code)?|got|HTTP/1\.[01])[ :=]*([1-5][0-9]{2})\b`)

// statusOf finds the HTTP status a failed dial reports: from the response
// when the library returns one, else from the error text (gorilla reports a
// refused CONNECT by its reason phrase only, "Proxy Authentication Required").
func statusOf(resp *http.Response, err error) string {
	if resp != nil {
		return strconv.Itoa(resp.StatusCode)
	}
	if err == nil {
		return "none"
	}
	msg := err.Error()
	for code := 400; code < 600; code++ {
		if t := http.StatusText(code); t != "" && strings.Contains(msg, t) {
			return strconv.Itoa(code)
		}
	}
	if m := statusCodeRe.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	return "unknown"
}
