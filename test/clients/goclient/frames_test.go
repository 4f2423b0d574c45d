package main

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// serverFrame encodes an unmasked frame as a server sends it.
func serverFrame(fin bool, op byte, payload []byte) []byte {
	b := []byte{op}
	if fin {
		b[0] |= 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

func TestCheckFrames(t *testing.T) {
	want := clientFrames("c")
	var good []byte
	good = append(good, serverFrame(true, opText, want[0].payload)...)
	// The binary echo arrives fragmented, with the pong in between.
	good = append(good, serverFrame(false, opBinary, want[1].payload[:1000])...)
	good = append(good, serverFrame(true, opPong, want[2].payload)...)
	good = append(good, serverFrame(true, 0, want[1].payload[1000:])...)
	good = append(good, serverFrame(true, opClose, []byte{0x03, 0xe8})...)

	badBinary := bytes.Clone(good)
	badBinary[len(serverFrame(true, opText, want[0].payload))+20] ^= 1

	tests := map[string]struct {
		data   []byte
		failed bool
	}{
		"all steps":        {good, false},
		"corrupted binary": {badBinary, true},
		"truncated":        {good[:len(good)-3], true},
		"close 1001": {append(bytes.Clone(good[:len(good)-4]),
			serverFrame(true, opClose, []byte{0x03, 0xe9})...), true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			r := &report{}
			checkFrames("c", tt.data, r)
			if r.failed != tt.failed {
				t.Errorf("checkFrames() failed = %v; want %v", r.failed, tt.failed)
			}
		})
	}
}

func TestWriteFrameMasks(t *testing.T) {
	var b bytes.Buffer
	payload := bytes.Repeat([]byte("x"), 70000)
	if err := writeFrame(&b, opBinary, payload); err != nil {
		t.Fatal(err)
	}
	got := b.Bytes()
	if got[0] != 0x80|opBinary || got[1] != 0x80|127 {
		t.Fatalf("header % x; want final binary, masked, 64-bit length", got[:2])
	}
	if n := binary.BigEndian.Uint64(got[2:10]); n != uint64(len(payload)) {
		t.Fatalf("length %d; want %d", n, len(payload))
	}
	mask, body := got[10:14], got[14:]
	for i := range body {
		body[i] ^= mask[i%4]
	}
	if !bytes.Equal(body, payload) {
		t.Error("unmasked payload differs from the input")
	}
}
