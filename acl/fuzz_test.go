package acl

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func FuzzParseTarget(f *testing.F) {
	for _, tc := range parseTargetOK {
		f.Add(tc.in)
	}
	for _, tc := range parseTargetBad {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseTarget(in)
		if err != nil {
			if !errors.Is(err, ErrBadTarget) {
				t.Fatalf("ParseTarget(%q) error %v does not wrap ErrBadTarget", in, err)
			}
			return
		}
		checkCanonical(t, in, got)
		again, err := ParseTarget(got.String())
		if err != nil || again != got {
			t.Fatalf("ParseTarget(%q) = %+v, %v; want %+v (round trip of %q)", got.String(), again, err, got, in)
		}
	})
}

// checkCanonical checks the invariants of a Target from ParseTarget.
func checkCanonical(t *testing.T, in string, got Target) {
	t.Helper()
	h := got.Host
	switch {
	case got.Port == 0:
		t.Fatalf("ParseTarget(%q) = %+v: port 0", in, got)
	case h == "" || strings.HasSuffix(h, ".") || len(h) > maxNameLen:
		t.Fatalf("ParseTarget(%q) = %+v: empty, dotted or long host", in, got)
	case strings.ToLower(h) != h || !isASCII(h):
		t.Fatalf("ParseTarget(%q) = %+v: host not lowercase ASCII", in, got)
	case strings.ContainsAny(h, "%[]@/"):
		t.Fatalf("ParseTarget(%q) = %+v: host has a delimiter", in, got)
	}
	if a, ok := got.Addr(); ok {
		if a.String() != h || a.Is4In6() {
			t.Fatalf("ParseTarget(%q) = %+v: address not canonical (%v)", in, got, a)
		}
		return
	}
	// A name: no resolver may read it as an IPv4 address.
	if a, ok := legacyIPv4(h); ok {
		t.Fatalf("ParseTarget(%q) = %+v: inet_aton reads the name as %v", in, got, a)
	}
	if _, err := netip.ParseAddr(h); err == nil {
		t.Fatalf("ParseTarget(%q) = %+v: name parses as an address", in, got)
	}
	labels := strings.Split(h, ".")
	if numericLabel(labels[len(labels)-1]) {
		t.Fatalf("ParseTarget(%q) = %+v: numeric last label", in, got)
	}
	for _, l := range labels {
		if l == "" || len(l) > maxLabelLen {
			t.Fatalf("ParseTarget(%q) = %+v: bad label %q", in, got, l)
		}
	}
}

// FuzzCompileTarget compiles one rule from an arbitrary target and decides
// against it: Compile must not panic, must reject a repeated rule, and a
// rule that compiles must be reported back verbatim and decide without
// panicking.
func FuzzCompileTarget(f *testing.F) {
	for _, s := range compileOK {
		f.Add(s, "example.com:443")
	}
	for _, s := range []string{"*", "api.*.com", "*foo.com", "10.1.*", "203.0.113.9/24", "2001:db8::/32",
		"[::ffff:10.0.0.0/104]", "example.com:9000-8000", "Example.COM", "127.1", "0.0.0.0/0", "[fe80::1%eth0]"} {
		f.Add(s, "127.0.0.1:9000")
	}
	ips := []netip.Addr{netip.MustParseAddr(pub4), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("fd00::1")}
	f.Fuzz(func(t *testing.T, target, authority string) {
		if _, err := Compile(Config{Rules: []RuleSpec{allow(target), allow(target)}}, Options{}); err == nil {
			t.Fatalf("Compile(allow %q twice) = nil error; want an error (bad target or duplicate)", target)
		}
		p, err := Compile(Config{Rules: []RuleSpec{allow(target)}}, Options{})
		if err != nil {
			return
		}
		if got := p.Rules()[0].Target; got != target {
			t.Fatalf("Rules()[0].Target = %q; want %q", got, target)
		}
		tg, err := ParseTarget(authority)
		if err != nil {
			return
		}
		for _, ip := range ips {
			if d := p.Decide(tg, ip, Subject{}); d.Rule == "" || d.Reason == "" {
				t.Fatalf("Decide(%v, %v) = %+v; want a rule and a reason", tg, ip, d)
			}
		}
		if d := p.DecideName(tg, Subject{}); d.Rule == "" || d.Reason == "" {
			t.Fatalf("DecideName(%v) = %+v; want a rule and a reason", tg, d)
		}
	})
}
