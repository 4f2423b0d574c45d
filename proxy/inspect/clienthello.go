package inspect

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/cryptobyte"

	"github.com/wsegress/wsegress/acl"
)

const (
	recordTypeHandshake  = 22      // TLS ContentType handshake
	maxRecordPayload     = 1 << 14 // RFC 8446 5.1: TLSPlaintext.length <= 2^14
	handshakeClientHello = 1

	extServerName = 0      // RFC 6066
	extALPN       = 16     // RFC 7301
	extECH        = 0xfe0d // encrypted_client_hello (draft-ietf-tls-esni)
)

// ClientHello is what Check reads from a TLS ClientHello.
type ClientHello struct {
	// SNI is the host_name of the server_name extension as sent (not
	// lowercased, trailing dot kept); empty when there is none.
	SNI string
	// ALPN is the protocol list offered, in order; nil when not offered.
	ALPN []string
	// ECH reports an encrypted_client_hello extension. Then SNI is the
	// outer name: either a real ECH public name (the name the client wants
	// is encrypted) or, for a client that sends GREASE ECH as Chrome does,
	// the real name. The two cannot be told apart by design.
	ECH bool
}

// clientHelloMessage reassembles the first handshake message from the TLS
// records at the start of b, which may split it over any number of
// records. It returns the message (header included), or nil and the least
// total length of b that could complete it, or an error when b cannot be
// the start of a ClientHello. Records must be handshake records of TLS
// (major version 3), non-empty and at most 2^14 bytes: RFC 8446 5.1
// forbids interleaving other record types with a handshake message.
func clientHelloMessage(b []byte) (msg []byte, need int, err error) {
	// A first pass only counts, so that calling this on every read of a
	// ClientHello trickled in one-byte records costs O(records), not a copy.
	var hdr [4]byte // the handshake message header, once have >= 4
	have := 0       // handshake bytes seen
	msgLen := -1    // length of the message with its header, once known
	off := 0
	for {
		if len(b)-off < 5 {
			if msgLen >= 0 {
				// At least one more record header and the missing bytes.
				return nil, off + 5 + msgLen - have, nil
			}
			return nil, off + 5, nil
		}
		typ, major, n := b[off], b[off+1], int(b[off+3])<<8|int(b[off+4])
		switch {
		case typ != recordTypeHandshake:
			return nil, 0, fmt.Errorf("a record of type %d inside the ClientHello", typ)
		case major != 3:
			return nil, 0, fmt.Errorf("record version %d.%d is not TLS", major, b[off+2])
		case n == 0:
			return nil, 0, errors.New("an empty handshake record")
		case n > maxRecordPayload:
			return nil, 0, fmt.Errorf("a record of %d bytes, over the TLS limit of %d", n, maxRecordPayload)
		case len(b)-off-5 < n:
			return nil, off + 5 + n, nil
		}
		for i := have; i < 4 && i-have < n; i++ {
			hdr[i] = b[off+5+i-have]
		}
		have += n
		off += 5 + n
		if hdr[0] != handshakeClientHello {
			return nil, 0, fmt.Errorf("handshake message type %d where a ClientHello (1) must come first", hdr[0])
		}
		if msgLen < 0 && have >= 4 {
			msgLen = 4 + (int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3]))
		}
		if msgLen >= 0 && have >= msgLen {
			return joinRecords(b[:off], msgLen), 0, nil
		}
		if msgLen >= 0 && off+5+msgLen-have > MaxFirstFlight {
			// Cannot end within the bound, whatever the next records hold:
			// say so now, as a longer read would (need makes it TooLarge).
			return nil, off + 5 + msgLen - have, nil
		}
	}
}

// joinRecords returns the first n bytes of the payloads of the well-formed
// records in b.
func joinRecords(b []byte, n int) []byte {
	if l := int(b[3])<<8 | int(b[4]); l >= n {
		return b[5 : 5+n] // one record: no copy
	}
	out := make([]byte, 0, n)
	for len(out) < n {
		l := int(b[3])<<8 | int(b[4])
		out = append(out, b[5:5+l]...)
		b = b[5+l:]
	}
	return out[:n]
}

// ParseClientHello parses a ClientHello handshake message, 4-byte header
// included, as TLS 1.0 to 1.3 send it. It checks the structure (lengths,
// no trailing bytes, no extension twice) and reads server_name, ALPN and
// the presence of ECH; it does not judge cipher suites or versions.
func ParseClientHello(msg []byte) (*ClientHello, error) {
	s := cryptobyte.String(msg)
	var typ uint8
	var body cryptobyte.String
	if !s.ReadUint8(&typ) || typ != handshakeClientHello || !s.ReadUint24LengthPrefixed(&body) || !s.Empty() {
		return nil, errors.New("malformed handshake message header")
	}
	var vers uint16
	var random []byte
	var sessionID, suites, compression cryptobyte.String
	if !body.ReadUint16(&vers) || !body.ReadBytes(&random, 32) ||
		!body.ReadUint8LengthPrefixed(&sessionID) || len(sessionID) > 32 ||
		!body.ReadUint16LengthPrefixed(&suites) || len(suites) < 2 || len(suites)%2 != 0 ||
		!body.ReadUint8LengthPrefixed(&compression) || len(compression) < 1 {
		return nil, errors.New("malformed ClientHello")
	}
	if vers>>8 != 3 {
		return nil, fmt.Errorf("ClientHello version %#04x is not TLS", vers)
	}
	h := &ClientHello{}
	if body.Empty() {
		return h, nil // no extensions at all (allowed before TLS 1.3)
	}
	var exts cryptobyte.String
	if !body.ReadUint16LengthPrefixed(&exts) || !body.Empty() {
		return nil, errors.New("malformed ClientHello extensions")
	}
	seen := make(map[uint16]bool)
	for !exts.Empty() {
		var et uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&et) || !exts.ReadUint16LengthPrefixed(&data) {
			return nil, errors.New("malformed ClientHello extension")
		}
		if seen[et] {
			return nil, fmt.Errorf("extension %d sent twice", et)
		}
		seen[et] = true
		var err error
		switch et {
		case extServerName:
			h.SNI, err = parseServerName(data)
		case extALPN:
			h.ALPN, err = parseALPN(data)
		case extECH:
			h.ECH = true
		}
		if err != nil {
			return nil, err
		}
	}
	return h, nil
}

// parseServerName returns the host_name of a server_name extension
// (RFC 6066 3): at most one, non-empty, printable ASCII.
func parseServerName(data cryptobyte.String) (string, error) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
		return "", errors.New("malformed server_name extension")
	}
	var name string
	for !list.Empty() {
		var nt uint8
		var n cryptobyte.String
		if !list.ReadUint8(&nt) || !list.ReadUint16LengthPrefixed(&n) {
			return "", errors.New("malformed server_name extension")
		}
		if nt != 0 {
			continue // not host_name; no other type is defined
		}
		if name != "" {
			return "", errors.New("two host names in server_name")
		}
		if len(n) == 0 {
			return "", errors.New("empty host name in server_name")
		}
		for _, c := range n {
			if c <= ' ' || c >= 0x7f {
				return "", fmt.Errorf("server name %q is not printable ASCII", []byte(n))
			}
		}
		name = string(n)
	}
	return name, nil
}

// parseALPN returns the protocol list of an ALPN extension (RFC 7301 3.1):
// non-empty, of non-empty names.
func parseALPN(data cryptobyte.String) ([]string, error) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
		return nil, errors.New("malformed ALPN extension")
	}
	var out []string
	for !list.Empty() {
		var p cryptobyte.String
		if !list.ReadUint8LengthPrefixed(&p) || p.Empty() {
			return nil, errors.New("malformed ALPN extension")
		}
		out = append(out, string(p))
	}
	return out, nil
}

// checkTLS decides on a tunnel that starts with a TLS record.
func checkTLS(b []byte, t acl.Target, o Options) Verdict {
	msg, n, err := clientHelloMessage(b)
	if err == nil && msg == nil {
		return need(n)
	}
	var h *ClientHello
	if err == nil {
		h, err = ParseClientHello(msg)
	}
	if err != nil {
		return refuse(BadTLS, "the tunnel starts as TLS but is not a well-formed ClientHello: %v", err)
	}
	v := decideTLS(h, t, o)
	v.Hello = h
	return v
}

// decideTLS applies the SNI and ALPN rules to a parsed ClientHello.
func decideTLS(h *ClientHello, t acl.Target, o Options) Verdict {
	_, isIP := t.Addr()
	matches := h.SNI != "" && sameHost(h.SNI, t)
	var pass Verdict
	switch {
	case matches:
		pass = Verdict{Result: PassTLS, Text: fmt.Sprintf("TLS with SNI %q naming the CONNECT host %s", h.SNI, t.Host)}
	case h.SNI == "" && isIP:
		// Before the ECH cases: Chromium sends a GREASE ECH extension on
		// every connection, also to an IP address, without an SNI. Real
		// ECH always has an outer SNI (the ECHConfig's public_name), so
		// this hides no server name.
		pass = Verdict{Result: PassTLS, Text: fmt.Sprintf("TLS without SNI to the IP literal %s", t.Host)}
	case h.ECH && !o.AllowMissingSNI:
		return refuse(ECH, "TLS with ECH and outer SNI %q, not the CONNECT host %s: the real server name is encrypted; --allow-missing-sni lets it through", h.SNI, t.Host)
	case h.ECH:
		pass = Verdict{Result: PassTLS, Text: fmt.Sprintf("TLS with ECH and outer SNI %q (not checked: --allow-missing-sni)", h.SNI)}
	case h.SNI != "":
		return refuse(SNIMismatch, "TLS SNI %q does not name the CONNECT host %s (domain fronting)", h.SNI, t.Host)
	case o.AllowMissingSNI:
		pass = Verdict{Result: PassTLS, Text: "TLS without SNI (allowed by --allow-missing-sni)"}
	default:
		return refuse(MissingSNI, "TLS without SNI to %s; the host cannot be checked, --allow-missing-sni lets it through", t.Host)
	}
	if o.Mode == WebSocketOnly && h.ALPN != nil && !slices.Contains(h.ALPN, "http/1.1") {
		return refuse(BadALPN, "TLS offers ALPN %q without http/1.1, so it cannot carry a WebSocket handshake", h.ALPN)
	}
	return pass
}
