package inspect

import (
	"crypto/tls"
	"testing"

	"github.com/wsegress/wsegress/acl"
)

// checkSplits asserts the invariants of Check on in: no panic, NeedMore
// within bounds, and the same verdict however in is split into reads.
func checkSplits(t *testing.T, in []byte, tg acl.Target, o Options, split uint8) {
	whole := Check(in, tg, o)
	if !whole.Done() && (whole.Need <= min(len(in), MaxFirstFlight) || whole.Need > MaxFirstFlight) {
		t.Fatalf("Check(%d bytes).Need = %d; want in (%d, %d]", len(in), whole.Need, len(in), MaxFirstFlight)
	}
	if whole.Result == Refuse && whole.Reason == "" || whole.Done() && whole.Text == "" {
		t.Fatalf("Check = %+v; a verdict needs a text and a refusal a reason", whole)
	}
	// Reads of one or a few bytes are quadratic in the input: keep them
	// to small inputs so the fuzzer stays fast.
	splits := [][]int{{int(split%7) + 1, int(split) + 1}, {1}, {len(in) + 1}}
	if len(in) > 2<<10 {
		splits = [][]int{{int(split) + 257}, {len(in) + 1}}
	}
	for _, sizes := range splits {
		v := feed(in, tg, o, sizes...)
		if v.Result != whole.Result || v.Reason != whole.Reason {
			t.Fatalf("in reads of %v: %v %q (%s); all at once: %v %q (%s)",
				sizes, v.Result, v.Reason, v.Text, whole.Result, whole.Reason, whole.Text)
		}
	}
}

func FuzzClientHello(f *testing.F) {
	for _, cfg := range []*tls.Config{
		{ServerName: "a.example"},
		{ServerName: "a.example", NextProtos: []string{"h2", "http/1.1"}},
		{ServerName: "b.example", NextProtos: []string{"h2"}},
		{InsecureSkipVerify: true},
		{ServerName: "a.example", MaxVersion: tls.VersionTLS12},
	} {
		f.Add(goHello(f, cfg), uint8(0), false)
	}
	for _, s := range []helloSpec{
		{sni: "a.example", alpn: []string{"h2", "http/1.1"}, grease: true, ech: true},
		{sni: "public.example", ech: true},
		{sni: "A.EXAMPLE."},
		{alpn: []string{"http/1.1"}},
		{sni: "a.example", padding: 600},
	} {
		msg := buildHello(s)
		f.Add(records(msg, 0), uint8(3), false)
		f.Add(records(msg, 1), uint8(1), true)
		f.Add(records(msg, 100), uint8(200), false)
	}
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x00}, uint8(0), false)
	tg := mustTarget(f, "a.example:443")
	f.Fuzz(func(t *testing.T, in []byte, split uint8, allowMissing bool) {
		for _, mode := range []Mode{WebSocketOnly, SNICheck} {
			checkSplits(t, in, tg, Options{Mode: mode, AllowMissingSNI: allowMissing}, split)
		}
		if msg, _, err := clientHelloMessage(in); err == nil && msg != nil {
			ParseClientHello(msg)
		}
		ParseClientHello(in)
	})
}

func FuzzHandshake(f *testing.F) {
	for _, s := range []string{
		wsHead("a.example"),
		wsHead("a.example:8080"),
		wsHead("[::1]:8080"),
		wsHead("A.Example."),
		wsHead("b.example", "Host: a.example"),
		wsHead("a.example", "X-A: 1", " folded"),
		"GET / HTTP/1.1\nHost: a.example\n\n",
		"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
		"\x00random",
		"SSH-2.0-OpenSSH_9.6\r\n",
	} {
		f.Add(s, "a.example:80", uint8(5))
	}
	f.Add(wsHead("a.example:8080"), "a.example:8080", uint8(1))
	f.Add(wsHead("[::1]:8080"), "[::1]:8080", uint8(2))
	f.Fuzz(func(t *testing.T, in, target string, split uint8) {
		tg, err := acl.ParseTarget(target)
		if err != nil {
			return
		}
		checkSplits(t, []byte(in), tg, Options{}, split)
	})
}
