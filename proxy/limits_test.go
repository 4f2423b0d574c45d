package proxy

import (
	"syscall"
	"testing"
)

func TestDefaultMaxTunnels(t *testing.T) {
	for _, tt := range []struct {
		nofile uint64
		want   int
	}{
		{0, 1}, {256, 1}, {258, 1}, {300, 22}, {1024, 384}, {2560, 1152}, {2570, 1156},
		{20000, 9000}, {1 << 20, 471859}, {^uint64(0), 966367641},
	} {
		if got := maxTunnelsFor(tt.nofile); got != tt.want {
			t.Errorf("maxTunnelsFor(%d) = %d; want %d", tt.nofile, got, tt.want)
		}
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if got, want := DefaultMaxTunnels(), maxTunnelsFor(rl.Cur); got != want {
		t.Errorf("DefaultMaxTunnels() = %d; want %d for RLIMIT_NOFILE %d", got, want, rl.Cur)
	}
	t.Logf("RLIMIT_NOFILE soft=%d hard=%d -> DefaultMaxTunnels()=%d", rl.Cur, rl.Max, DefaultMaxTunnels())
}
