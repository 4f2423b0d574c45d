package proxy

import (
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsegress/wsegress/proxy/listen"
)

// syncBuffer is a log sink safe for the refusal timer's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRefusalLogAggregates: a flood of refusals writes one line at once
// and one summary with the count at the end of the quiet period, per
// kind; never a line per refusal.
func TestRefusalLogAggregates(t *testing.T) {
	var buf syncBuffer
	rl := &refusalLog{log: slog.New(slog.NewTextHandler(&buf, nil)), every: 100 * time.Millisecond}
	client := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}
	for range 1000 {
		rl.add(listen.Refusal{Kind: listen.KindConns, Remote: client})
	}
	rl.add(listen.Refusal{Kind: listen.KindConnsPerIP, Remote: client})
	if got := strings.Count(buf.String(), "\n"); got != 2 {
		t.Fatalf("lines right after the flood = %d; want 2 (one per kind):\n%s", got, buf.String())
	}
	eventually(t, 5*time.Second, "a summary of the 999 suppressed refusals", func() bool {
		return strings.Contains(buf.String(), `msg="connections refused" kind=conns count=999 client=192.0.2.1:1 period=100ms`)
	})
	if got := strings.Count(buf.String(), "\n"); got != 3 {
		t.Errorf("lines = %d; want 3:\n%s", got, buf.String())
	}
}
