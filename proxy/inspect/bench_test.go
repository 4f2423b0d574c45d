package inspect

import "testing"

// BenchmarkCheck is the CPU the proxy spends per checked tunnel: one Check
// on a complete first flight (a Chrome-like ClientHello, a WebSocket head).
func BenchmarkCheck(b *testing.B) {
	for _, tc := range []struct {
		name, target string
		in           []byte
	}{
		{"clienthello", "a.example:443", records(buildHello(helloSpec{sni: "a.example", alpn: []string{"h2", "http/1.1"}, grease: true, ech: true}), 0)},
		{"websocket", "a.example:80", []byte(wsHead("a.example"))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tg := mustTarget(b, tc.target)
			b.ReportAllocs()
			for b.Loop() {
				if v := Check(tc.in, tg, Options{}); !v.Pass() {
					b.Fatalf("Check = %v %s", v.Result, v.Text)
				}
			}
		})
	}
}
