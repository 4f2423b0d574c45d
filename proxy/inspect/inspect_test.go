package inspect

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
)

type checkCase struct {
	name   string
	in     []byte
	target string // CONNECT authority
	opts   Options
	want   Result
	reason Reason // for Refuse
	text   string // must appear in Verdict.Text
}

func (tc checkCase) run(t *testing.T) {
	t.Helper()
	tg := mustTarget(t, tc.target)
	for _, split := range []struct {
		name  string
		sizes []int
	}{{"whole", []int{len(tc.in) + 1}}, {"bytewise", []int{1}}, {"uneven", []int{3, 1, 7, 2, 300}}} {
		v := feed(tc.in, tg, tc.opts, split.sizes...)
		if v.Result != tc.want || v.Reason != tc.reason || !strings.Contains(v.Text, tc.text) {
			t.Errorf("%s: Check(%.40q..., %v, %+v) = %v %q %q; want %v %q, text containing %q",
				split.name, tc.in, tg, tc.opts, v.Result, v.Reason, v.Text, tc.want, tc.reason, tc.text)
		}
	}
}

func TestCheckHandshake(t *testing.T) {
	b := func(s string) []byte { return []byte(s) }
	std := wsHead("a.example")
	for _, tc := range []checkCase{
		{name: "handshake", in: b(std), target: "a.example:80", want: PassWebSocket},
		{name: "handshake and first frame", in: b(std + "\x81\x85junk"), target: "a.example:80", want: PassWebSocket},
		{name: "host case and trailing dot", in: b(wsHead("A.Example.")), target: "a.example:80", want: PassWebSocket},
		{name: "host without port to 443", in: b(std), target: "a.example:443", want: PassWebSocket},
		{name: "host with port", in: b(wsHead("a.example:8080")), target: "a.example:8080", want: PassWebSocket},
		{name: "host with empty port", in: b(wsHead("a.example:")), target: "a.example:80", want: PassWebSocket},
		{name: "ipv6 host", in: b(wsHead("[::1]:8080")), target: "[::1]:8080", want: PassWebSocket},
		{name: "ipv4 host", in: b(wsHead("127.0.0.1:9000")), target: "127.0.0.1:9000", want: PassWebSocket},
		{name: "connection list", in: b(strings.Replace(std, "Connection: Upgrade", "Connection: keep-alive, UPGRADE", 1)),
			target: "a.example:80", want: PassWebSocket},
		{name: "upgrade case", in: b(strings.Replace(std, "Upgrade: websocket", "Upgrade: WebSocket", 1)),
			target: "a.example:80", want: PassWebSocket},

		{name: "wrong host", in: b(wsHead("b.example")), target: "a.example:80", want: Refuse, reason: BadHost, text: "not the CONNECT host"},
		{name: "suffix host", in: b(wsHead("xa.example")), target: "a.example:80", want: Refuse, reason: BadHost},
		{name: "no port to 8080", in: b(std), target: "a.example:8080", want: Refuse, reason: BadHost, text: "not a default"},
		{name: "wrong port", in: b(wsHead("a.example:81")), target: "a.example:80", want: Refuse, reason: BadHost, text: "port 81"},
		{name: "ipv6 unbracketed", in: b(wsHead("::1")), target: "[::1]:80", want: Refuse, reason: BadHost, text: "brackets"},
		{name: "ipv4 in brackets", in: b(wsHead("[127.0.0.1]")), target: "127.0.0.1:80", want: Refuse, reason: BadHost},
		{name: "kelvin sign", in: b(wsHead("\u212a.example")), target: "k.example:80", want: Refuse, reason: BadHost},
		{name: "two hosts", in: b(wsHead("a.example", "Host: b.example")), target: "a.example:80", want: Refuse, reason: BadHost, text: "2 Host"},
		{name: "no host", in: b(strings.Replace(std, "Host: a.example\r\n", "", 1)), target: "a.example:80", want: Refuse, reason: BadHost},

		{name: "random tcp", in: b("\x00\x01\x02\xffbinary"), target: "a.example:443", want: Refuse, reason: NotWebSocket, text: "neither TLS"},
		{name: "ssh", in: b("SSH-2.0-OpenSSH_9.6\r\n"), target: "a.example:22", want: Refuse, reason: NotWebSocket},
		{name: "post", in: b("POST / HTTP/1.1\r\n\r\n"), target: "a.example:80", want: Refuse, reason: NotWebSocket},
		{name: "plain get", in: b("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), target: "a.example:80", want: Refuse, reason: NotWebSocket, text: "Upgrade"},
		{name: "no connection upgrade", in: b(strings.Replace(std, "Connection: Upgrade", "Connection: keep-alive", 1)),
			target: "a.example:80", want: Refuse, reason: NotWebSocket, text: "Connection"},
		{name: "version 8", in: b(strings.Replace(std, "Version: 13", "Version: 8", 1)), target: "a.example:80", want: Refuse, reason: NotWebSocket, text: "13"},
		{name: "no key", in: b(strings.Replace(std, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 1)),
			target: "a.example:80", want: Refuse, reason: NotWebSocket, text: "Key"},
		{name: "short key", in: b(strings.Replace(std, "dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=", 1)), target: "a.example:80", want: Refuse, reason: NotWebSocket},
		{name: "http/1.0", in: b(strings.Replace(std, "HTTP/1.1", "HTTP/1.0", 1)), target: "a.example:80", want: Refuse, reason: NotWebSocket},
		{name: "absolute form", in: b(strings.Replace(std, "/chat", "ws://a.example/chat", 1)), target: "a.example:80", want: Refuse, reason: NotWebSocket, text: "origin-form"},
		{name: "obsolete folding", in: b(wsHead("a.example", "X-A: 1", " continued")), target: "a.example:80", want: Refuse, reason: NotWebSocket, text: "folding"},
		{name: "space before colon", in: b(wsHead("a.example", "X-A : 1")), target: "a.example:80", want: Refuse, reason: NotWebSocket, text: "malformed header"},
		{name: "bare lf", in: b(strings.ReplaceAll(std, "\r\n", "\n")), target: "a.example:80", want: Refuse, reason: NotWebSocket, text: "bare LF"},
		{name: "one bare lf", in: b(strings.Replace(std, "Upgrade: websocket\r\n", "Upgrade: websocket\n", 1)), target: "a.example:80", want: Refuse, reason: NotWebSocket, text: "bare LF"},

		{name: "empty", in: nil, target: "a.example:80", want: NeedMore},
		{name: "partial method", in: b("GE"), target: "a.example:80", want: NeedMore},
		{name: "partial head", in: b(std[:len(std)-2]), target: "a.example:80", want: NeedMore},
		{name: "head of 16 KiB", in: b(wsHead("a.example", "X-Pad: "+strings.Repeat("a", MaxFirstFlight-len(std)-9))), target: "a.example:80", want: PassWebSocket},
		{name: "head of 16 KiB+1", in: b(wsHead("a.example", "X-Pad: "+strings.Repeat("a", MaxFirstFlight-len(std)-8))), target: "a.example:80",
			want: Refuse, reason: TooLarge, text: "16 KiB"},

		{name: "sni-check passes plain text", in: b("\x00random"), target: "a.example:443", opts: Options{Mode: SNICheck}, want: PassNotTLS},
		{name: "sni-check passes wrong host", in: b(wsHead("b.example")), target: "a.example:80", opts: Options{Mode: SNICheck}, want: PassNotTLS},
	} {
		t.Run(tc.name, tc.run)
	}
}

func TestCheckTLS(t *testing.T) {
	h := func(s helloSpec, frag int) []byte { return records(buildHello(s), frag) }
	chrome := helloSpec{sni: "a.example", alpn: []string{"h2", "http/1.1"}, grease: true, ech: true}
	goSNI := goHello(t, &tls.Config{ServerName: "a.example", NextProtos: []string{"http/1.1"}})
	goNoSNI := goHello(t, &tls.Config{InsecureSkipVerify: true})
	goIP := goHello(t, &tls.Config{ServerName: "127.0.0.1"})
	goH2 := goHello(t, &tls.Config{ServerName: "a.example", NextProtos: []string{"h2"}})
	big := h(helloSpec{sni: "a.example", padding: MaxFirstFlight + 1 - 5 - 4 - len(buildHello(helloSpec{sni: "a.example"}))}, 0)
	bigSplit := records(buildHello(helloSpec{sni: "a.example", padding: MaxFirstFlight - 10 - 4 - len(buildHello(helloSpec{sni: "a.example"}))}), MaxFirstFlight/2)
	allow := Options{AllowMissingSNI: true}
	for _, tc := range []checkCase{
		{name: "crypto/tls", in: goSNI, target: "a.example:443", want: PassTLS, text: `SNI "a.example"`},
		{name: "crypto/tls and more records", in: append(append([]byte{}, goSNI...), 0x17, 3, 3, 0, 1, 0), target: "a.example:443", want: PassTLS},
		{name: "chrome-like with grease and grease ech", in: h(chrome, 0), target: "a.example:443", want: PassTLS},
		{name: "one byte records", in: h(chrome, 1), target: "a.example:443", want: PassTLS},
		{name: "sni case and trailing dot", in: h(helloSpec{sni: "A.EXAMPLE."}, 0), target: "a.example:443", want: PassTLS},
		{name: "fronted sni", in: goHello(t, &tls.Config{ServerName: "b.example"}), target: "a.example:443", want: Refuse, reason: SNIMismatch, text: "fronting"},
		{name: "fronted sni in sni-check mode", in: h(helloSpec{sni: "b.example"}, 7), target: "a.example:443", opts: Options{Mode: SNICheck}, want: Refuse, reason: SNIMismatch},
		{name: "sni to ip target", in: h(helloSpec{sni: "a.example"}, 0), target: "127.0.0.1:443", want: Refuse, reason: SNIMismatch},
		{name: "missing sni", in: goNoSNI, target: "a.example:443", want: Refuse, reason: MissingSNI},
		{name: "missing sni allowed", in: goNoSNI, target: "a.example:443", opts: allow, want: PassTLS, text: "--allow-missing-sni"},
		{name: "ip target without sni", in: goIP, target: "127.0.0.1:443", want: PassTLS, text: "IP literal"},
		{name: "ech with public name", in: h(helloSpec{sni: "public.example", ech: true}, 0), target: "a.example:443", want: Refuse, reason: ECH},
		{name: "ech without sni", in: h(helloSpec{ech: true}, 0), target: "a.example:443", want: Refuse, reason: ECH},
		{name: "chromium to an ip: grease ech without sni", in: h(helloSpec{alpn: []string{"http/1.1"}, grease: true, ech: true}, 0), target: "192.0.2.1:443", want: PassTLS},
		{name: "ech with public name to an ip", in: h(helloSpec{sni: "public.example", ech: true}, 0), target: "192.0.2.1:443", want: Refuse, reason: ECH},
		{name: "ech allowed", in: h(helloSpec{sni: "public.example", ech: true}, 0), target: "a.example:443", opts: allow, want: PassTLS},
		{name: "alpn h2 only", in: goH2, target: "a.example:443", want: Refuse, reason: BadALPN, text: "http/1.1"},
		{name: "alpn h2 only in sni-check mode", in: goH2, target: "a.example:443", opts: Options{Mode: SNICheck}, want: PassTLS},
		{name: "no alpn", in: h(helloSpec{sni: "a.example"}, 0), target: "a.example:443", want: PassTLS},
		{name: "16 KiB in two records", in: bigSplit, target: "a.example:443", want: PassTLS},
		{name: "16 KiB+1", in: big, target: "a.example:443", want: Refuse, reason: TooLarge},
		{name: "partial", in: goSNI[:len(goSNI)-1], target: "a.example:443", want: NeedMore},
		{name: "not a record", in: []byte{0x16, 0x02, 0x00, 0x00, 0x01, 0x01}, target: "a.example:443", want: Refuse, reason: BadTLS, text: "not TLS"},
		{name: "empty record", in: []byte{0x16, 0x03, 0x01, 0x00, 0x00}, target: "a.example:443", want: Refuse, reason: BadTLS, text: "empty"},
		{name: "server hello", in: records([]byte{2, 0, 0, 1, 0}, 0), target: "a.example:443", want: Refuse, reason: BadTLS, text: "type 2"},
		{name: "alert interleaved", in: append(records(buildHello(chrome)[:10], 0), 0x15, 3, 3, 0, 2, 2, 40), target: "a.example:443", want: Refuse, reason: BadTLS},
		{name: "truncated hello body", in: records([]byte{1, 0, 0, 3, 3, 3, 0}, 0), target: "a.example:443", want: Refuse, reason: BadTLS, text: "malformed"},
	} {
		t.Run(tc.name, tc.run)
	}
}

// TestNeed checks the NeedMore contract: Need is past the bytes given and
// within the bound, and nothing changes before Need bytes.
func TestNeed(t *testing.T) {
	tg := mustTarget(t, "a.example:443")
	for _, in := range [][]byte{records(buildHello(helloSpec{sni: "a.example", grease: true}), 5), []byte(wsHead("a.example"))} {
		for n := 0; n < len(in); n++ {
			v := Check(in[:n], tg, Options{})
			if v.Done() {
				break
			}
			if v.Need <= n || v.Need > MaxFirstFlight {
				t.Fatalf("Check(%d bytes).Need = %d; want in (%d, %d]", n, v.Need, n, MaxFirstFlight)
			}
			for m := n + 1; m < v.Need; m++ {
				if w := Check(in[:m], tg, Options{}); w.Done() {
					t.Fatalf("Check(%d bytes) = %v, before Need %d said by Check(%d bytes)", m, w.Result, v.Need, n)
				}
			}
		}
	}
}

func TestCheckRequest(t *testing.T) {
	tg := mustTarget(t, "a.example:80")
	for _, tc := range []struct {
		host string
		hdr  map[string]string
		want Result
	}{
		{"a.example", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, PassWebSocket},
		{"b.example", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, Refuse},
		{"a.example", map[string]string{"Connection": "Upgrade"}, Refuse},
	} {
		r, _ := http.NewRequest("GET", "ws://"+tc.host+"/", nil)
		for k, v := range tc.hdr {
			r.Header.Set(k, v)
		}
		if v := CheckRequest(r, tg); v.Result != tc.want {
			t.Errorf("CheckRequest(Host %s, %v) = %v %s; want %v", tc.host, tc.hdr, v.Result, v.Text, tc.want)
		}
	}
}

func TestParseClientHello(t *testing.T) {
	msg := buildHello(helloSpec{sni: "a.example", alpn: []string{"h2", "http/1.1"}, ech: true, grease: true})
	h, err := ParseClientHello(msg)
	if err != nil {
		t.Fatalf("ParseClientHello: %v", err)
	}
	if h.SNI != "a.example" || len(h.ALPN) != 2 || h.ALPN[1] != "http/1.1" || !h.ECH {
		t.Errorf("ParseClientHello = %+v; want SNI a.example, ALPN [h2 http/1.1], ECH", h)
	}
	if _, err := ParseClientHello(append(msg, 0)); err == nil {
		t.Errorf("ParseClientHello with a trailing byte: err = nil; want an error")
	}
}
