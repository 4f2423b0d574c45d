package pac

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// evalPAC runs f's script in Node with the standard PAC helpers
// (testdata/helpers.js, DNS from a fixed table) and returns
// FindProxyForURL for each [url, host] and the DNS lookups it made.
func evalPAC(t *testing.T, f *File, cases [][2]string) ([]string, int) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node is needed to evaluate the PAC file (CI is set): %v", err)
		}
		t.Skip("node not found: skipping the evaluation of the PAC file in JavaScript")
	}
	file := filepath.Join(t.TempDir(), "proxy.pac")
	if err := os.WriteFile(file, f.Script(), 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, filepath.Join("testdata", "eval.js"), file)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.String())
	}
	var res struct {
		Results    []string `json:"results"`
		DNSLookups int      `json:"dnsLookups"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Results) != len(cases) {
		t.Fatalf("node output %q: %v", out, err)
	}
	return res.Results, res.DNSLookups
}

func TestFindProxyForURL(t *testing.T) {
	f, err := New(Config{
		Proxy: "Proxy.Example.COM:3128",
		Direct: []string{
			"intranet.example.com",
			"*.corp.example",
			".example.org",
			"10.0.0.0/8",
			"192.168.1.0/24",
			"127.0.0.1",
			"fd00::/8",
			"2001:db8:1::/48",
			"[::1]",
			"::ffff:172.16.0.0/108", // IPv4-mapped: the same as 172.16.0.0/12
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	const proxy = "PROXY proxy.example.com:3128"
	cases := []struct {
		url, host, want string
	}{
		// Names.
		{"https://intranet.example.com/", "intranet.example.com", "DIRECT"},
		{"https://INTRANET.example.com./", "INTRANET.example.com.", "DIRECT"},
		{"https://www.intranet.example.com/", "www.intranet.example.com", proxy},
		{"https://app.corp.example/", "app.corp.example", "DIRECT"},
		{"https://a.b.corp.example/", "a.b.corp.example", "DIRECT"},
		{"https://corp.example/", "corp.example", proxy}, // *.: strict subdomains
		{"https://xcorp.example/", "xcorp.example", proxy},
		{"https://example.org/", "example.org", "DIRECT"}, // .domain: apex too
		{"https://www.example.org/", "www.example.org", "DIRECT"},
		{"https://notexample.org/", "notexample.org", proxy},
		{"wss://chat.example.net/ws", "chat.example.net", proxy},
		{"http://localhost/", "localhost", proxy},
		// A name that would resolve into 10/8 is not matched: no DNS.
		{"https://intranet-by-ip.example/", "intranet-by-ip.example", proxy},
		// IPv4 literals through isInNet.
		{"http://10.20.30.40/", "10.20.30.40", "DIRECT"},
		{"http://10.255.255.255/", "10.255.255.255", "DIRECT"},
		{"http://11.0.0.1/", "11.0.0.1", proxy},
		{"http://192.168.1.77/", "192.168.1.77", "DIRECT"},
		{"http://192.168.2.1/", "192.168.2.1", proxy},
		{"http://127.0.0.1:8080/", "127.0.0.1", "DIRECT"},
		{"http://127.0.0.2/", "127.0.0.2", proxy},
		{"http://172.20.0.1/", "172.20.0.1", "DIRECT"},
		{"http://172.32.0.1/", "172.32.0.1", proxy},
		{"http://203.0.113.5/", "203.0.113.5", proxy},
		// IPv6 literals, with and without brackets (browsers differ).
		{"http://[::1]/", "::1", "DIRECT"},
		{"http://[::1]:8080/", "[::1]", "DIRECT"},
		{"http://[::2]/", "::2", proxy},
		{"http://[fd12:3456::1]/", "fd12:3456::1", "DIRECT"},
		{"http://[FD00::ABCD]/", "FD00::ABCD", "DIRECT"},
		{"http://[fe80::1]/", "fe80::1", proxy},
		{"http://[2001:db8::1]/", "2001:db8::1", proxy},
		{"http://[2001:db8:1::1]/", "2001:db8:1::1", "DIRECT"},
		{"http://[2001:db8:1:ffff:ffff:ffff:ffff:ffff]/", "2001:db8:1:ffff:ffff:ffff:ffff:ffff", "DIRECT"},
		{"http://[2001:db8:2::1]/", "2001:db8:2::1", proxy},
		{"http://[2001:db8:1:0:0:0:0:1]/", "2001:db8:1:0:0:0:0:1", "DIRECT"},
		{"http://[fd00::1%25eth0]/", "fd00::1%eth0", "DIRECT"},
		// IPv4-mapped IPv6 reaches the IPv4 address: IPv4 ranges apply.
		{"http://[::ffff:10.1.2.3]/", "::ffff:10.1.2.3", "DIRECT"},
		{"http://[::ffff:a01:203]/", "::ffff:a01:203", "DIRECT"},
		{"http://[::ffff:b01:203]/", "::ffff:b01:203", proxy},
		{"http://[::ffff:172.16.0.1]/", "::ffff:172.16.0.1", "DIRECT"},
		// Not addresses: through the proxy, never an error.
		{"http://[1::2::3]/", "1::2::3", proxy},
		{"http://[::g]/", "::g", proxy},
		{"http://300.1.1.1/", "300.1.1.1", proxy},
	}
	in := make([][2]string, len(cases))
	for i, c := range cases {
		in[i] = [2]string{c.url, c.host}
	}
	got, lookups := evalPAC(t, f, in)
	for i, c := range cases {
		if got[i] != c.want {
			t.Errorf("FindProxyForURL(%q, %q) = %q; want %q", c.url, c.host, got[i], c.want)
		}
	}
	if lookups != 0 {
		t.Errorf("the PAC made %d DNS lookups; want none", lookups)
	}
}

func TestFindProxyForURLTLS(t *testing.T) {
	f, err := New(Config{Proxy: "[2001:db8::5]:3129", TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := evalPAC(t, f, [][2]string{{"https://example.com/", "example.com"}, {"http://10.0.0.1/", "10.0.0.1"}, {"http://[::1]/", "::1"}})
	for _, g := range got {
		if g != "HTTPS [2001:db8::5]:3129" {
			t.Errorf("FindProxyForURL = %q; want %q", g, "HTTPS [2001:db8::5]:3129")
		}
	}
}

func TestNewErrors(t *testing.T) {
	cases := []struct {
		cfg  Config
		want []string // substrings of the error
	}{
		{Config{}, []string{"--pac-proxy is empty"}},
		{Config{Proxy: "proxy.example.com"}, []string{"--pac-proxy", "missing port"}},
		{Config{Proxy: "https://proxy.example.com:3128"}, []string{"--pac-proxy", "without a scheme"}},
		{Config{Proxy: `pro"xy:1`}, []string{"--pac-proxy", "invalid character"}},
		{Config{Proxy: "p:3128", Direct: []string{""}}, []string{`--pac-direct ""`, "empty entry"}},
		{Config{Proxy: "p:3128", Direct: []string{"10.1.2.3/8"}}, []string{`--pac-direct "10.1.2.3/8"`, `write "10.0.0.0/8"`}},
		{Config{Proxy: "p:3128", Direct: []string{"fd00::1/8"}}, []string{`write "fd00::/8"`}},
		{Config{Proxy: "p:3128", Direct: []string{"10.0.0.0/33"}}, []string{"bad CIDR"}},
		{Config{Proxy: "p:3128", Direct: []string{"example.com:443"}}, []string{"port is not allowed"}},
		{Config{Proxy: "p:3128", Direct: []string{"*example.com"}}, []string{`whole first label`}},
		{Config{Proxy: "p:3128", Direct: []string{"a.*.example.com"}}, []string{`whole first label`}},
		{Config{Proxy: "p:3128", Direct: []string{"*.10.0.0.1"}}, []string{`write a CIDR such as "10.0.0.1/32"`}},
		{Config{Proxy: "p:3128", Direct: []string{"a..example"}}, []string{"bad host", "empty label"}},
		{Config{Proxy: "p:3128", Direct: []string{`x";alert(1);"`}}, []string{"bad host", "invalid character"}},
		{Config{Proxy: "p:3128", Direct: []string{"fe80::1%eth0"}}, []string{"zones"}},
		{Config{Proxy: "p:3128", Direct: []string{"1::2::3"}}, []string{"neither a host name"}},
		// Every problem at once.
		{Config{Direct: []string{"a..b", "10.1.2.3/8"}}, []string{"--pac-proxy", `"a..b"`, `"10.1.2.3/8"`}},
	}
	for _, c := range cases {
		_, err := New(c.cfg)
		if err == nil {
			t.Errorf("New(%+v) = nil error; want %q", c.cfg, c.want)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("New(%+v) = %q; want it to contain %q", c.cfg, err, w)
			}
		}
	}
}

func TestNormalisedEntries(t *testing.T) {
	f, err := New(Config{Proxy: "p:3128", Direct: []string{"Bücher.Example", "*.EXAMPLE.net.", "10.0.0.0/8", "10.0.0.0/8", "::ffff:10.0.0.0/104"}})
	if err != nil {
		t.Fatal(err)
	}
	s := string(f.Script())
	for _, want := range []string{`["xn--bcher-kva.example"]`, `[".example.net"]`, `[["10.0.0.0","255.0.0.0"]];`} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %s:\n%s", want, s[:400])
		}
	}
}

func TestETag(t *testing.T) {
	mk := func(c Config) *File {
		f, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	a := mk(Config{Proxy: "p:3128", Direct: []string{"10.0.0.0/8"}})
	b := mk(Config{Proxy: "p:3128", Direct: []string{"10.0.0.0/8"}})
	if a.ETag() != b.ETag() || !strings.HasPrefix(a.ETag(), `"`) || strings.HasPrefix(a.ETag(), "W/") {
		t.Errorf("ETags %s, %s; want the same strong tag for the same config", a.ETag(), b.ETag())
	}
	for _, c := range []Config{
		{Proxy: "p:3128", TLS: true, Direct: []string{"10.0.0.0/8"}},
		{Proxy: "p:3129", Direct: []string{"10.0.0.0/8"}},
		{Proxy: "p:3128", Direct: []string{"10.0.0.0/9"}},
	} {
		if e := mk(c).ETag(); e == a.ETag() {
			t.Errorf("config %+v has the ETag of a different config", c)
		}
	}
}

func TestHandler(t *testing.T) {
	f, err := New(Config{Proxy: "proxy.example.com:3128", Direct: []string{"*.corp.example"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f)
	defer srv.Close()
	do := func(method string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+"/proxy.pac", nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}

	resp, body := do("GET", nil)
	if resp.StatusCode != 200 || body != string(f.Script()) {
		t.Fatalf("GET = %d, %d bytes; want 200 and the script", resp.StatusCode, len(body))
	}
	if ct := resp.Header.Get("Content-Type"); ct != ContentType {
		t.Errorf("Content-Type = %q; want %q", ct, ContentType)
	}
	if e := resp.Header.Get("ETag"); e != f.ETag() {
		t.Errorf("ETag = %q; want %q", e, f.ETag())
	}
	if resp, body := do("GET", map[string]string{"If-None-Match": f.ETag()}); resp.StatusCode != 304 || body != "" {
		t.Errorf("GET If-None-Match: same = %d %q; want 304 and no body", resp.StatusCode, body)
	}
	if resp, _ := do("GET", map[string]string{"If-None-Match": `"other", ` + f.ETag()}); resp.StatusCode != 304 {
		t.Errorf("GET If-None-Match: list with the tag = %d; want 304", resp.StatusCode)
	}
	if resp, _ := do("GET", map[string]string{"If-None-Match": `"stale"`}); resp.StatusCode != 200 {
		t.Errorf("GET If-None-Match: stale = %d; want 200", resp.StatusCode)
	}
	if resp, body := do("HEAD", nil); resp.StatusCode != 200 || body != "" || resp.Header.Get("ETag") != f.ETag() {
		t.Errorf("HEAD = %d %q ETag %q; want 200, no body, the ETag", resp.StatusCode, body, resp.Header.Get("ETag"))
	}
	if resp, _ := do("POST", nil); resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST = %d Allow %q; want 405 with Allow: GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}
}
