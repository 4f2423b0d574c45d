package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// runFrames serves the curl client, which speaks no WebSocket itself (the
// Debian curl has no ws:// support): "build" writes the masked client
// frames that curl sends right behind its handshake, "check" reads what
// curl saved after the 101 and reports the same steps as the other clients.
func runFrames(args []string) error {
	if len(args) < 1 {
		return errors.New("frames: want build or check")
	}
	fs := flag.NewFlagSet("frames "+args[0], flag.ContinueOnError)
	id := fs.String("case", "", "case id (required)")
	file := fs.String("file", "", "frames file: written by build, read by check (required)")
	headers := fs.String("headers", "", "check: curl's --dump-header file, whose last response must be the 101")
	key := fs.String("key", "", "check: the Sec-WebSocket-Key curl sent")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *id == "" || *file == "" {
		return errors.New("frames: -case and -file are required")
	}
	switch args[0] {
	case "build":
		var b bytes.Buffer
		for _, f := range clientFrames(*id) {
			if err := writeFrame(&b, f.op, f.payload); err != nil {
				return err
			}
		}
		if err := os.WriteFile(*file, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write frames: %w", err)
		}
		return nil
	case "check":
		data, err := os.ReadFile(*file)
		if err != nil {
			return fmt.Errorf("read curl output: %w", err)
		}
		r := &report{}
		if *headers != "" {
			if !checkUpgrade(*headers, *key, r) {
				os.Exit(1)
			}
		}
		checkFrames(*id, data, r)
		if r.failed {
			os.Exit(1)
		}
		return nil
	default:
		return fmt.Errorf("frames: unknown action %q (want build or check)", args[0])
	}
}

type frame struct {
	op      byte
	payload []byte
}

func clientFrames(id string) []frame {
	return []frame{
		{opText, []byte("hello from curl " + id)},
		{opBinary, payload1MiB(3)},
		{opPing, []byte("ping-" + id)},
		{opClose, []byte{0x03, 0xe8, 'b', 'y', 'e'}}, // 1000 "bye"
	}
}

// writeFrame writes one final, masked client frame.
func writeFrame(w io.Writer, op byte, payload []byte) error {
	hdr := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n <= 0xffff:
		hdr = append(hdr, 0x80|126)
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	var mask [4]byte
	if _, err := rand.Read(mask[:]); err != nil {
		return fmt.Errorf("mask: %w", err)
	}
	hdr = append(hdr, mask[:]...)
	masked := make([]byte, len(payload))
	for i, c := range payload {
		masked[i] = c ^ mask[i%4]
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	_, err := w.Write(masked)
	return err
}

// readFrames parses unmasked server frames; fragmented messages are joined.
func readFrames(data []byte) ([]frame, error) {
	var out []frame
	var msg *frame
	for len(data) > 0 {
		if len(data) < 2 {
			return out, errors.New("truncated frame header")
		}
		fin, op := data[0]&0x80 != 0, data[0]&0x0f
		if data[1]&0x80 != 0 {
			return out, errors.New("server frame is masked")
		}
		n, p := uint64(data[1]&0x7f), 2
		switch n {
		case 126:
			if len(data) < 4 {
				return out, errors.New("truncated frame length")
			}
			n, p = uint64(binary.BigEndian.Uint16(data[2:])), 4
		case 127:
			if len(data) < 10 {
				return out, errors.New("truncated frame length")
			}
			n, p = binary.BigEndian.Uint64(data[2:]), 10
		}
		if uint64(len(data)-p) < n {
			return out, fmt.Errorf("truncated frame: have %d of %d payload bytes", len(data)-p, n)
		}
		payload := data[p : p+int(n)]
		data = data[p+int(n):]
		switch {
		case op >= opClose:
			out = append(out, frame{op, payload})
		case op == 0 && msg != nil:
			msg.payload = append(msg.payload, payload...)
		case op == 0:
			return out, errors.New("continuation without a message")
		default:
			msg = &frame{op, append([]byte(nil), payload...)}
		}
		if fin && op < opClose && msg != nil {
			out = append(out, *msg)
			msg = nil
		}
	}
	return out, nil
}

func checkFrames(id string, data []byte, r *report) {
	want := clientFrames(id)
	got, err := readFrames(data)
	if err != nil {
		r.fail("frames", "%v (after %d frames)", err, len(got))
	}
	var msgs []frame
	var pong, closing *frame
	for i := range got {
		switch got[i].op {
		case opPong:
			pong = &got[i]
		case opClose:
			closing = &got[i]
		case opText, opBinary:
			msgs = append(msgs, got[i])
		}
	}
	for i, step := range []string{"text-echo", "binary-1mib"} {
		switch {
		case i >= len(msgs):
			r.fail(step, "no echo: got %d messages", len(msgs))
		case msgs[i].op != want[i].op || !bytes.Equal(msgs[i].payload, want[i].payload):
			r.fail(step, "echo differs: opcode %d, %d bytes; want opcode %d, %d bytes",
				msgs[i].op, len(msgs[i].payload), want[i].op, len(want[i].payload))
		case i == 0:
			r.ok(step, "%q", msgs[i].payload)
		default:
			r.ok(step, "%d bytes byte-exact", len(msgs[i].payload))
		}
	}
	switch {
	case pong == nil:
		r.fail("ping-pong", "no pong")
	case !bytes.Equal(pong.payload, want[2].payload):
		r.fail("ping-pong", "pong payload %q; want %q", pong.payload, want[2].payload)
	default:
		r.ok("ping-pong", "pong %q", pong.payload)
	}
	switch {
	case closing == nil:
		r.fail("close-1000", "no close frame from the server")
	case len(closing.payload) < 2 || binary.BigEndian.Uint16(closing.payload) != 1000:
		r.fail("close-1000", "server close payload %q; want code 1000", closing.payload)
	default:
		r.ok("close-1000", "client got close %d %q", binary.BigEndian.Uint16(closing.payload), closing.payload[2:])
	}
}

// checkUpgrade checks the handshake response curl saved, as a WebSocket
// client would: status 101, Upgrade: websocket and the Sec-WebSocket-Accept
// derived from the key (RFC 6455 section 4.1). curl saves the proxy's
// "200 Connection established" first; the 101 is the last response.
func checkUpgrade(path, key string, r *report) bool {
	raw, err := os.ReadFile(path)
	if err != nil {
		r.fail("connect", "read headers: %v", err)
		return false
	}
	blocks := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(raw), "\r\n", "\n")), "\n\n")
	last := blocks[len(blocks)-1] + "\n\n"
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(last)), nil)
	if err != nil {
		r.fail("connect", "parse handshake response: %v", err)
		return false
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	accept := base64.StdEncoding.EncodeToString(sum[:])
	switch {
	case resp.StatusCode != http.StatusSwitchingProtocols:
		r.fail("connect", "handshake answered %s", resp.Status)
	case !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket"):
		r.fail("connect", "Upgrade %q", resp.Header.Get("Upgrade"))
	case resp.Header.Get("Sec-WebSocket-Accept") != accept:
		r.fail("connect", "Sec-WebSocket-Accept %q; want %q", resp.Header.Get("Sec-WebSocket-Accept"), accept)
	case resp.Header.Get("Sec-WebSocket-Protocol") != "wsegress-echo":
		r.fail("connect", "subprotocol %q; want wsegress-echo", resp.Header.Get("Sec-WebSocket-Protocol"))
	default:
		return true
	}
	return false
}
