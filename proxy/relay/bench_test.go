//go:build linux

package relay

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Benchmarks for the relay against a direct loopback connection. Everything
// runs in one process, so besides MB/s each reports cpu-ns/MB, the process
// CPU (user+sys, both endpoints included) per MB moved: the relay's own cost
// is its figure minus direct's.

// benchPath is one way to connect the benchmark's two endpoints.
type benchPath struct {
	name  string
	relay *Relay // nil: direct connection, or naive
	naive bool   // io.Copy both ways, Go's own splice: the reference design
	mode  mode
}

var benchPaths = []benchPath{
	{name: "direct"},
	{name: "iocopy", naive: true},
	{name: "splice64K", relay: &Relay{pipeSize: 64 << 10}},
	{name: "splice256K", relay: &Relay{pipeSize: 256 << 10}},
	{name: "splice1M", relay: &Relay{pipeSize: 1 << 20}},
	{name: "buffer", relay: &Relay{}, mode: modes[1]},
	{name: "noPark", relay: &Relay{noPark: true}},
}

// benchConnect returns the endpoints' conns: direct, or through a
// running Relay that the cleanup stops.
func benchConnect(b *testing.B, p benchPath) (client, target *net.TCPConn) {
	ln := listen(b)
	if p.naive {
		var clientSide, targetSide *net.TCPConn
		client, clientSide = connPair(b, ln)
		targetSide, target = connPair(b, ln)
		var wg sync.WaitGroup
		for _, d := range [][2]*net.TCPConn{{clientSide, targetSide}, {targetSide, clientSide}} {
			wg.Go(func() {
				io.Copy(d[1], d[0])
				d[1].CloseWrite()
			})
		}
		b.Cleanup(func() {
			for _, c := range []*net.TCPConn{client, target, clientSide, targetSide} {
				c.Close()
			}
			wg.Wait()
		})
		return client, target
	}
	if p.relay == nil {
		client, target = connPair(b, ln)
		b.Cleanup(func() {
			client.Close()
			target.Close()
		})
		return client, target
	}
	tt := startTunnel(b, p.relay, ln, p.mode)
	return tt.client, tt.target
}

// cpuTime returns the CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRelayIdle holds 2000 idle tunnels (each has moved one message
// each way) and reports what the relay itself costs per tunnel, beyond the
// conns: live Go heap, goroutine stacks and goroutines; ns/op means nothing
// here. "goroutines" is the splice-capable path kept off the epoll set
// (two goroutines per tunnel, as before parking), "parked" the same conns
// parked. It comes first in this file so that it runs first: new goroutines
// start with a stack sized to the process's average stack use so far, so
// earlier benchmarks would inflate stack-B/tunnel.
func BenchmarkRelayIdle(b *testing.B) {
	const n = 2000
	modes := []struct {
		mode
		noPark bool
	}{
		{mode{name: "goroutines"}, true},
		{mode{name: "parked"}, false},
		{modes[1], false},
		{modes[2], false},
	}
	for _, m := range modes {
		// The harness calls the function again while it sizes b.N; measure
		// on the first call only, as later ones would see bigger stacks.
		var heap, stack, spare, gs float64
		measured := false
		b.Run(m.name, func(b *testing.B) {
			defer func() {
				b.ReportMetric(heap, "heap-B/tunnel")
				b.ReportMetric(stack, "stack-B/tunnel")
				b.ReportMetric(gs, "goroutines/tunnel")
				b.ReportMetric(spare, "spare-pipes")
			}()
			if measured {
				return
			}
			measured = true
			b.StopTimer()
			r := &Relay{IdleTimeout: time.Hour, noPark: m.noPark}
			ln := listen(b)
			type ends struct{ client, clientSide, targetSide, target *net.TCPConn }
			conns := make([]ends, n)
			for i := range conns {
				e := &conns[i]
				e.client, e.clientSide = connPair(b, ln)
				e.targetSide, e.target = connPair(b, ln)
			}
			before := memNow()
			g0 := runtime.NumGoroutine()
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			msg := make([]byte, 4)
			for _, e := range conns {
				var cs, ts net.Conn = e.clientSide, e.targetSide
				if m.opaqueClient {
					cs = opaque{cs}
				}
				if m.opaqueTarget {
					ts = opaque{ts}
				}
				wg.Add(1)
				r.Start(ctx, cs, ts, func(Result) { wg.Done() })
				for _, p := range [][2]*net.TCPConn{{e.client, e.target}, {e.target, e.client}} {
					if _, err := p[0].Write([]byte("ping")); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(p[1], msg); err != nil {
						b.Fatal(err)
					}
				}
			}
			want := 2 * n
			if m.name == "parked" {
				want = 0
			}
			eventually(b, 10*time.Second, func() error {
				if got := copierGoroutines(); got != want {
					return fmt.Errorf("%d relay goroutines, want %d", got, want)
				}
				return nil
			})
			after := memNow()
			heap = float64(int64(after.heap)-int64(before.heap)) / n
			stack = float64(int64(after.stack)-int64(before.stack)) / n
			gs = float64(runtime.NumGoroutine()-g0) / n
			spare = float64(r.getSpares().pipes.spare())
			cancel()
			wg.Wait()
			for _, e := range conns {
				e.client.Close()
				e.target.Close()
			}
			r.getSpares().pipes.closeAll()
		})
	}
}

// BenchmarkRelayBulk streams 1 MiB per op one way (up) or both ways at once
// (both).
func BenchmarkRelayBulk(b *testing.B) {
	const chunk = 1 << 20
	data := make([]byte, chunk)
	rand.NewChaCha8([32]byte{9}).Read(data)
	for _, both := range []bool{false, true} {
		dir := "up"
		if both {
			dir = "both"
		}
		for _, p := range benchPaths {
			b.Run(dir+"/"+p.name, func(b *testing.B) {
				client, target := benchConnect(b, p)
				streams := [][2]*net.TCPConn{{client, target}}
				if both {
					streams = append(streams, [2]*net.TCPConn{target, client})
				}
				b.SetBytes(int64(len(streams) * chunk))
				b.ReportAllocs()
				cpu0 := cpuTime(b)
				b.ResetTimer()
				var wg sync.WaitGroup
				for _, s := range streams {
					wg.Go(func() {
						for range b.N {
							if _, err := s[0].Write(data); err != nil {
								b.Error(err)
								return
							}
						}
					})
					wg.Go(func() {
						buf := make([]byte, 256<<10)
						if _, err := io.CopyBuffer(io.Discard, io.LimitReader(onlyReader{s[1]}, int64(b.N)*chunk), buf); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				mb := float64(b.N) * float64(len(streams)*chunk) / 1e6
				b.ReportMetric(float64(cpuTime(b)-cpu0)/mb, "cpu-ns/MB")
			})
		}
	}
}

// onlyReader hides WriterTo/ReaderFrom so the reader uses its own buffer.
type onlyReader struct{ io.Reader }

// BenchmarkRelayEcho measures the round trip of a 64-byte message echoed by
// the target: the cost of small WebSocket frames.
func BenchmarkRelayEcho(b *testing.B) {
	paths := []benchPath{benchPaths[0], benchPaths[1], benchPaths[3], benchPaths[6], benchPaths[5]}
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) {
			client, target := benchConnect(b, p)
			go func() {
				buf := make([]byte, 64)
				for {
					if _, err := io.ReadFull(target, buf); err != nil {
						return
					}
					if _, err := target.Write(buf); err != nil {
						return
					}
				}
			}()
			msg, got := make([]byte, 64), make([]byte, 64)
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				if _, err := client.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(client, got); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

type memStats struct{ heap, stack uint64 }

func memNow() memStats {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memStats{heap: ms.HeapAlloc, stack: ms.StackInuse}
}
