package acl

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

// parseTargetOK are authorities ParseTarget accepts, with the canonical form.
var parseTargetOK = []struct {
	name string
	in   string
	want Target
}{
	{"name", "example.com:443", Target{"example.com", 443}},
	{"mixed case and trailing dot", "EXAMPLE.com.:443", Target{"example.com", 443}},
	{"upper case", "Api.Example.COM:80", Target{"api.example.com", 80}},
	{"single label", "localhost:9000", Target{"localhost", 9000}},
	{"underscore", "_acme-challenge.example.com:443", Target{"_acme-challenge.example.com", 443}},
	{"hyphens in 3rd and 4th position", "r3---sn-abc.googlevideo.com:443", Target{"r3---sn-abc.googlevideo.com", 443}},
	{"idna", "bücher.example:443", Target{"xn--bcher-kva.example", 443}},
	{"idna upper case", "BÜCHER.example:443", Target{"xn--bcher-kva.example", 443}},
	{"punycode", "xn--bcher-kva.example:443", Target{"xn--bcher-kva.example", 443}},
	{"punycode upper case", "XN--BCHER-KVA.example:443", Target{"xn--bcher-kva.example", 443}},
	{"idna sharp s (nontransitional)", "ß.example:443", Target{"xn--zca.example", 443}},
	{"idna japanese", "例え.テスト:443", Target{"xn--r8jz45g.xn--zckzah", 443}},
	{"idna fullwidth letters", "ｅｘａｍｐｌｅ.com:443", Target{"example.com", 443}},
	{"ideographic full stop", "example\u3002com:443", Target{"example.com", 443}},
	{"alphanumeric last label", "foo.123abc:443", Target{"foo.123abc", 443}},
	{"numeric first label", "123.example.com:443", Target{"123.example.com", 443}},
	{"ipv4", "127.0.0.2:443", Target{"127.0.0.2", 443}},
	{"ipv4 trailing dot", "127.0.0.2.:443", Target{"127.0.0.2", 443}},
	{"ipv4 zero", "0.0.0.0:80", Target{"0.0.0.0", 80}},
	{"ipv6 loopback", "[::1]:443", Target{"::1", 443}},
	{"ipv6 unspecified", "[::]:443", Target{"::", 443}},
	{"ipv6 not compressed", "[2001:DB8:0:0:0:0:0:1]:8443", Target{"2001:db8::1", 8443}},
	{"ipv4-mapped ipv6", "[::ffff:127.0.0.2]:443", Target{"127.0.0.2", 443}},
	{"ipv4-mapped ipv6 hex", "[::ffff:7f00:2]:443", Target{"127.0.0.2", 443}},
	{"port 1", "example.com:1", Target{"example.com", 1}},
	{"port 65535", "example.com:65535", Target{"example.com", 65535}},
	{"63-byte label", strings.Repeat("a", 63) + ".example:443", Target{strings.Repeat("a", 63) + ".example", 443}},
	{"253-byte name", name253 + ":443", Target{name253, 443}},
	{"253-byte name and root dot", name253 + ".:443", Target{name253, 443}},
}

// name253 is a host name of exactly 253 bytes.
var name253 = strings.Repeat(strings.Repeat("a", 62)+".", 4)[:249] + ".com"

// parseTargetBad are authorities ParseTarget rejects, with a part of the
// message that says why.
var parseTargetBad = []struct {
	name string
	in   string
	want string
}{
	{"empty", "", "empty target"},
	{"missing port", "example.com", "missing port"},
	{"missing port ipv6", "[::1]", "missing port"},
	{"empty port", "example.com:", "empty port"},
	{"port 0", "example.com:0", "port 0"},
	{"port too big", "example.com:65536", "out of range"},
	{"port huge", "example.com:99999999999999999999", "out of range"},
	{"port leading zero", "example.com:0443", "leading zero"},
	{"port zeros", "example.com:00", "not a port"},
	{"port plus", "example.com:+443", "not a decimal number"},
	{"port minus", "example.com:-1", "not a decimal number"},
	{"port hex", "example.com:0x1bb", "not a decimal number"},
	{"port space", "example.com:443 ", "not a decimal number"},
	{"port name", "example.com:https", "not a decimal number"},
	{"empty host", ":443", "empty host"},
	{"userinfo", "user@example.com:443", "userinfo"},
	{"userinfo password", "user:secret@example.com:443", "userinfo"},
	{"path", "example.com:443/x", "path"},
	{"query", "example.com:443?x", "path, query"},
	{"fragment", "example.com:443#x", "path, query"},
	{"backslash", `example.com\@evil:443`, "userinfo"},
	{"backslash path", `example.com\x:443`, "path"},
	{"percent-encoding", "exa%6dple.com:443", "percent-encoding"},
	{"empty label", "a..b:443", "empty label"},
	{"leading dot", ".example.com:443", "empty label"},
	{"two trailing dots", "example.com..:443", "empty label"},
	{"only a dot", ".:443", "empty host"},
	{"label too long", strings.Repeat("a", 64) + ".example:443", "longer than 63"},
	{"name too long", "a" + name253 + ":443", "longer than 253"},
	{"authority too long", strings.Repeat("ü", 600) + ".example:443", "longer than 1024 bytes"},
	{"space", "exa mple.com:443", "invalid character"},
	{"star", "*.example.com:443", "invalid character"},
	{"nul", "exa\x00mple.com:443", "invalid character"},
	{"decimal ipv4", "2130706433:443", "non-canonical IPv4"},
	{"hex ipv4", "0x7f000001:443", "non-canonical IPv4"},
	{"hex ipv4 upper", "0X7F000001:443", "non-canonical IPv4"},
	{"hex octet", "0x7f.0.0.1:443", "non-canonical IPv4"},
	{"octal octet", "0177.0.0.1:443", "non-canonical IPv4"},
	{"leading zeros", "127.000.0.1:443", "non-canonical IPv4"},
	{"leading zero last", "127.0.0.01:443", "non-canonical IPv4"},
	{"short two parts", "127.1:443", "read it as 127.0.0.1"},
	{"short three parts", "127.0.1:443", "read it as 127.0.0.1"},
	{"short with trailing dot", "127.2.:443", "non-canonical IPv4"},
	{"zero", "0:443", "non-canonical IPv4"},
	{"bare 0x", "0x:443", "non-canonical IPv4"},
	{"fullwidth digits", "１２７.１:443", "non-canonical IPv4"},
	{"octet out of range", "256.0.0.1:443", "numeric label"},
	{"five parts", "127.0.0.1.1:443", "numeric label"},
	{"numeric last label", "foo.123:443", "numeric label"},
	{"hex last label", "foo.0xff:443", "numeric label"},
	{"ipv6 without brackets", "::1:443", "must be in brackets"},
	{"ipv6 without brackets no port", "2001:db8::1", "must be in brackets"},
	{"ipv6 zone", "[fe80::1%25eth0]:443", "zones"},
	{"ipv6 zone raw", "[fe80::1%eth0]:443", "zones"},
	{"ipv4 in brackets", "[127.0.0.1]:443", "without brackets"},
	{"empty brackets", "[]:443", "invalid IPv6"},
	{"bad ipv6", "[::g]:443", "invalid IPv6"},
	{"missing bracket", "[::1:443", "missing ']'"},
	{"junk after bracket", "[::1]x:443", "after ']'"},
	{"stray bracket", "host[1]:443", "misplaced"},
	{"invalid punycode", "xn--zz-.example:443", "not valid punycode"},
	{"ascii punycode", "xn--abc-.example:443", "not valid punycode"},
	{"empty punycode", "xn--.example:443", "not valid punycode"},
	{"idn with underscore", "ex_ü.example:443", "internationalised"},
	{"idn with joiner", "a\u200db.example:443", "internationalised"},
}

func TestParseTarget(t *testing.T) {
	for _, tc := range parseTargetOK {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if err != nil || got != tc.want {
				t.Fatalf("ParseTarget(%q) = %+v, %v; want %+v, nil", tc.in, got, err, tc.want)
			}
			again, err := ParseTarget(got.String())
			if err != nil || again != got {
				t.Errorf("ParseTarget(%q) = %+v, %v; want %+v (round trip)", got.String(), again, err, got)
			}
		})
	}
}

func TestParseTargetRejects(t *testing.T) {
	for _, tc := range parseTargetBad {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if err == nil {
				t.Fatalf("ParseTarget(%q) = %+v, nil; want error containing %q", tc.in, got, tc.want)
			}
			if !errors.Is(err, ErrBadTarget) {
				t.Errorf("ParseTarget(%q) error %v does not wrap ErrBadTarget", tc.in, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseTarget(%q) error = %q; want it to contain %q", tc.in, err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("ParseTarget(%q) error = %q; must not repeat the password", tc.in, err)
			}
		})
	}
}

func TestTargetAddr(t *testing.T) {
	for _, tc := range []struct {
		t    Target
		want string // "" means not an address
	}{
		{Target{"127.0.0.1", 443}, "127.0.0.1"},
		{Target{"::1", 443}, "::1"},
		{Target{"::ffff:10.0.0.1", 443}, "10.0.0.1"},
		{Target{"fe80::1%eth0", 443}, ""},
		{Target{"example.com", 443}, ""},
	} {
		a, ok := tc.t.Addr()
		got := ""
		if ok {
			got = a.String()
		}
		if got != tc.want {
			t.Errorf("%+v.Addr() = %q, %v; want %q", tc.t, got, ok, tc.want)
		}
	}
	if got, want := (Target{"2001:db8::1", 443}).String(), "[2001:db8::1]:443"; got != want {
		t.Errorf("String() = %q; want %q", got, want)
	}
}

func TestParseURLTarget(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Target
		wantErr string
	}{
		{in: "http://example.com/x?y", want: Target{"example.com", 80}},
		{in: "https://Example.COM./", want: Target{"example.com", 443}},
		{in: "ws://h.example:8080/chat", want: Target{"h.example", 8080}},
		{in: "wss://h.example", want: Target{"h.example", 443}},
		{in: "HTTP://h.example/", want: Target{"h.example", 80}},
		{in: "http://h.example:/", want: Target{"h.example", 80}},
		{in: "http://[::ffff:127.0.0.2]:8080/", want: Target{"127.0.0.2", 8080}},
		{in: "https://bücher.example/", want: Target{"xn--bcher-kva.example", 443}},
		{in: "ftp://h.example/", wantErr: "unsupported scheme"},
		{in: "/relative", wantErr: "not an absolute URL"},
		{in: "http://user:secret@h.example/", wantErr: "userinfo"},
		{in: "http:///x", wantErr: "missing host"},
		{in: "http:opaque", wantErr: "missing host"},
		{in: "http://127.1/", wantErr: "non-canonical IPv4"},
		{in: "http://2130706433/", wantErr: "non-canonical IPv4"},
		{in: "http://h.example:0/", wantErr: "port 0"},
		{in: "http://h.example:0080/", wantErr: "leading zero"},
		{in: "http://[fe80::1%25en0]/", wantErr: "zones"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := url.Parse(tc.in)
			if err != nil {
				t.Fatalf("url.Parse(%q): %v", tc.in, err)
			}
			got, err := ParseURLTarget(u)
			if tc.wantErr == "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseURLTarget(%q) = %+v, %v; want %+v, nil", tc.in, got, err, tc.want)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrBadTarget) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseURLTarget(%q) = %+v, %v; want ErrBadTarget containing %q", tc.in, got, err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("ParseURLTarget(%q) error = %q; must not repeat the password", tc.in, err)
			}
		})
	}
	if _, err := ParseURLTarget(nil); !errors.Is(err, ErrBadTarget) {
		t.Errorf("ParseURLTarget(nil) error = %v; want ErrBadTarget", err)
	}
}
