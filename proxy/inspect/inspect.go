package inspect

import (
	"fmt"

	"github.com/wsegress/wsegress/acl"
)

// MaxFirstFlight bounds how many of a tunnel's first bytes are looked at. A
// WebSocket handshake head or a ClientHello (with its record headers) that
// does not end within it is refused with TooLarge. The proxy buffers at most
// this much before forwarding.
const MaxFirstFlight = 16 << 10

// Mode is what Check requires of a tunnel. The zero Mode is WebSocketOnly,
// the stricter one.
type Mode int

const (
	// WebSocketOnly passes a WebSocket handshake naming the target or a TLS
	// ClientHello whose SNI names it (--websocket-only, websocket_only: true).
	WebSocketOnly Mode = iota
	// SNICheck passes anything that does not start with a TLS record; a
	// tunnel that does must have a ClientHello whose SNI names the target
	// (--sni-check alone).
	SNICheck
)

// Options tune Check.
type Options struct {
	Mode Mode
	// AllowMissingSNI passes a ClientHello without SNI, or offering ECH with
	// an outer SNI that is not the target (--allow-missing-sni). A target
	// that is an IP literal never needs an SNI.
	AllowMissingSNI bool
}

// Result is the kind of a Verdict.
type Result int

const (
	// NeedMore: no verdict yet; call Check again once the tunnel has sent
	// at least Verdict.Need bytes.
	NeedMore Result = iota
	// PassWebSocket: a WebSocket handshake whose Host names the target.
	PassWebSocket
	// PassTLS: a ClientHello whose SNI names the target (or is allowed to
	// be missing).
	PassTLS
	// PassNotTLS: in SNICheck mode, the tunnel does not start with TLS.
	PassNotTLS
	// Refuse: close the tunnel before any byte reaches the target.
	Refuse
)

// String returns the name of the result, for logs and tests.
func (r Result) String() string {
	switch r {
	case NeedMore:
		return "need_more"
	case PassWebSocket:
		return "pass_websocket"
	case PassTLS:
		return "pass_tls"
	case PassNotTLS:
		return "pass_not_tls"
	case Refuse:
		return "refuse"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Reason says in one stable word why a tunnel was refused, for log keys and
// metric labels. The proxy counts every refusal as
// wsegress_tunnels_total{result="not_websocket"} and logs the Reason.
type Reason string

// The reasons of a refusal.
const (
	NotWebSocket Reason = "not_websocket" // neither TLS nor a WebSocket handshake
	BadHost      Reason = "bad_host"      // the handshake's Host is not the CONNECT target
	BadTLS       Reason = "bad_tls"       // starts as TLS but is not a well-formed ClientHello
	SNIMismatch  Reason = "sni_mismatch"  // the SNI names another host (domain fronting)
	MissingSNI   Reason = "missing_sni"   // no SNI, target is a name, not allowed
	ECH          Reason = "ech"           // ECH with an outer SNI that is not the target
	BadALPN      Reason = "bad_alpn"      // ALPN offered without http/1.1
	TooLarge     Reason = "too_large"     // no verdict within MaxFirstFlight bytes
)

// Verdict is the outcome of Check.
type Verdict struct {
	Result Result
	// Need, for NeedMore, is the least total number of bytes after which
	// the verdict can change: len(first) < Need <= MaxFirstFlight.
	Need int
	// Reason, for Refuse, is the machine reason; empty otherwise.
	Reason Reason
	// Text is a sentence for logs: why the tunnel passed or was refused.
	Text string
	// Hello is the parsed ClientHello when the tunnel starts with a
	// complete one, for logs.
	Hello *ClientHello
}

// Done reports whether v is a verdict, not a request for more bytes.
func (v Verdict) Done() bool { return v.Result != NeedMore }

// Pass reports whether the tunnel may go on.
func (v Verdict) Pass() bool {
	return v.Result == PassWebSocket || v.Result == PassTLS || v.Result == PassNotTLS
}

func need(n int) Verdict {
	if n > MaxFirstFlight {
		return refuse(TooLarge, "first flight over %d bytes (16 KiB) without a complete handshake or ClientHello", MaxFirstFlight)
	}
	return Verdict{Result: NeedMore, Need: n}
}

func refuse(r Reason, format string, args ...any) Verdict {
	return Verdict{Result: Refuse, Reason: r, Text: fmt.Sprintf(format, args...)}
}

// Check inspects first, the bytes a client has sent into the tunnel to t so
// far, and returns a verdict or NeedMore. It is pure and deterministic, and
// a verdict depends only on the bytes up to the end of the handshake head or
// the ClientHello: for any split of a stream into reads, calling Check on
// the growing prefix until it is Done gives the verdict Check gives on the
// whole stream. Bytes after the handshake or ClientHello are ignored (they
// are forwarded verbatim with the rest); only the first MaxFirstFlight bytes
// are ever read.
func Check(first []byte, t acl.Target, o Options) Verdict {
	if len(first) > MaxFirstFlight {
		first = first[:MaxFirstFlight]
	}
	if len(first) == 0 {
		return need(1)
	}
	if first[0] == recordTypeHandshake {
		return checkTLS(first, t, o)
	}
	if o.Mode == SNICheck {
		return Verdict{Result: PassNotTLS, Text: "the tunnel does not start with TLS; --sni-check checks only TLS"}
	}
	return checkHandshake(first, t)
}
