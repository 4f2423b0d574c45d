// Command relayload is the loopback load driver behind the relay figures in
// the README (Performance): echo (closed loop), churn (a tunnel per
// message), bulk (up, down, both) and mixed (bulk beside paced echoes),
// each bounded in time, with the proxy's CPU time from /proc and its
// syscalls from perf stat. It also runs the echo server and a naive
// io.Copy CONNECT proxy to compare with. run.sh runs the whole set.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	proxyAddr = flag.String("proxy", "", "CONNECT proxy address (empty: direct)")
	pid       = flag.Int("pid", 0, "proxy pid for CPU and perf")
	mode      = flag.String("mode", "echo", "echo|up|down|both|mixed")
	n         = flag.Int("n", 256, "echo tunnels")
	size      = flag.Int("size", 128, "echo message size")
	window    = flag.Duration("time", 4*time.Second, "window")
	naive     = flag.String("naive", "", "run a naive io.Copy CONNECT proxy on this address")
	echoAddr  = flag.String("echo", "", "run only an echo server on this address")
	target    = flag.String("target", "127.0.0.1:9901", "echo server address")
	perfOn    = flag.Bool("perf", true, "run perf stat")
)

func main() {
	flag.Parse()
	if *naive != "" {
		runNaive(*naive)
		return
	}
	if *echoAddr != "" {
		runEcho(*echoAddr)
		return
	}
	switch *mode {
	case "echo":
		echo()
	case "up", "down", "both":
		bulk(*mode)
	case "mixed":
		mixed()
	case "bulkbg":
		bulkBG()
	case "paced":
		paced()
	case "churn":
		churn()
	}
}

func runEcho(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var m [1]byte
			if _, err := io.ReadFull(c, m[:]); err != nil {
				return
			}
			switch m[0] {
			case 'e':
				buf := make([]byte, 32<<10)
				for {
					k, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:k]); err != nil {
						return
					}
				}
			case 'u':
				io.Copy(io.Discard, c)
			case 'd':
				buf := make([]byte, 256<<10)
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			case 'b':
				go io.Copy(io.Discard, c)
				buf := make([]byte, 256<<10)
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}
		}()
	}
}

func runNaive(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err != nil {
				c.Close()
				return
			}
			t, err := net.Dial("tcp", req.Host)
			if err != nil {
				c.Close()
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
			go func() { io.Copy(t, c); t.(*net.TCPConn).CloseWrite() }()
			io.Copy(c, t)
			c.Close()
			t.Close()
		}()
	}
}

func dial(m byte) net.Conn {
	var c net.Conn
	var err error
	if *proxyAddr == "" {
		c, err = net.Dial("tcp", *target)
		if err != nil {
			panic(err)
		}
	} else {
		c, err = net.Dial("tcp", *proxyAddr)
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", *target, *target)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			panic(fmt.Sprint("connect: ", err, resp))
		}
		if br.Buffered() > 0 {
			panic("buffered")
		}
	}
	c.Write([]byte{m})
	return c
}

func cpuTicks() int64 {
	if *pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", *pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

type meter struct {
	t0   int64
	perf *exec.Cmd
	out  *strings.Builder
	t    time.Time
}

func startMeter() *meter {
	m := &meter{t0: cpuTicks(), t: time.Now()}
	if *pid != 0 && *perfOn {
		m.out = &strings.Builder{}
		secs := fmt.Sprintf("%.1f", window.Seconds())
		m.perf = exec.Command("perf", "stat", "-x,", "-p", strconv.Itoa(*pid), "-e",
			"raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_setsockopt,syscalls:sys_enter_getsockopt,syscalls:sys_enter_shutdown,syscalls:sys_enter_close,syscalls:sys_enter_accept4,syscalls:sys_enter_connect,syscalls:sys_enter_socket,syscalls:sys_enter_getsockname,syscalls:sys_enter_getpeername,syscalls:sys_enter_epoll_create1,syscalls:sys_enter_eventfd2,syscalls:sys_enter_pipe2,syscalls:sys_enter_fcntl,syscalls:sys_enter_write,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_futex,syscalls:sys_enter_recvfrom,syscalls:sys_enter_splice",
			"--", "sleep", secs)
		m.perf.Stderr = m.out
		m.perf.Start()
	}
	return m
}

// stop returns proxy CPU seconds and the syscall counts.
func (m *meter) stop() (float64, map[string]float64, time.Duration) {
	el := time.Since(m.t)
	cpu := float64(cpuTicks()-m.t0) / 100
	counts := map[string]float64{}
	if m.perf != nil {
		m.perf.Wait()
		for _, l := range strings.Split(m.out.String(), "\n") {
			f := strings.Split(l, ",")
			if len(f) > 3 {
				v, err := strconv.ParseFloat(f[0], 64)
				if err == nil {
					name := f[2]
					name = strings.TrimPrefix(name, "syscalls:sys_enter_")
					counts[name] = v
				}
			}
		}
	}
	return cpu, counts, el
}

func fmtCounts(c map[string]float64, per float64) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		if c[k] > 0 {
			fmt.Fprintf(&b, " %s=%.2f", k, c[k]/per)
		}
	}
	return b.String()
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[int(float64(len(d)-1)*p)]
}

func echo() {
	conns := make([]net.Conn, *n)
	for i := range conns {
		conns[i] = dial('e')
	}
	var count atomic.Int64
	var stop atomic.Bool
	var measuring atomic.Bool
	var mu sync.Mutex
	var rtts []time.Duration
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := make([]byte, *size)
			got := make([]byte, *size)
			var mine []time.Duration
			for !stop.Load() {
				t := time.Now()
				c.Write(msg)
				if _, err := io.ReadFull(c, got); err != nil {
					break
				}
				if measuring.Load() {
					count.Add(1)
					if len(mine) < 100000 {
						mine = append(mine, time.Since(t))
					}
				}
			}
			mu.Lock()
			rtts = append(rtts, mine...)
			mu.Unlock()
		}()
	}
	time.Sleep(500 * time.Millisecond)
	measuring.Store(true)
	m := startMeter()
	time.Sleep(*window)
	measuring.Store(false)
	k := count.Load()
	cpu, counts, el := m.stop()
	stop.Store(true)
	for _, c := range conns {
		c.SetDeadline(time.Now())
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	fmt.Printf("echo n=%d size=%d msgs=%d msgs/s=%.0f cpu=%.2fs msgs/cpu-s=%.0f p50=%v p99=%v sys/msg=%.2f%s\n",
		*n, *size, k, float64(k)/el.Seconds(), cpu, float64(k)/cpu, pct(rtts, .5), pct(rtts, .99), counts["raw_syscalls:sys_enter"]/float64(k), fmtCounts(counts, float64(k)))
}

func bulk(dir string) {
	m0 := map[string]byte{"up": 'u', "down": 'd', "both": 'b'}[dir]
	c := dial(m0)
	var moved atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	if dir == "up" || dir == "both" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for !stop.Load() {
				k, err := c.Write(buf)
				moved.Add(int64(k))
				if err != nil {
					return
				}
			}
		}()
	}
	if dir == "down" || dir == "both" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for !stop.Load() {
				k, err := c.Read(buf)
				moved.Add(int64(k))
				if err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	b0 := moved.Load()
	m := startMeter()
	time.Sleep(*window)
	b := moved.Load() - b0
	cpu, counts, el := m.stop()
	stop.Store(true)
	c.SetDeadline(time.Now())
	wg.Wait()
	c.Close()
	mb := float64(b) / 1e6
	fmt.Printf("bulk %s MB=%.0f MB/s=%.0f cpu=%.2fs MB/cpu-s=%.0f sys/MB=%.1f%s\n", dir, mb, mb/el.Seconds(), cpu, mb/cpu, counts["raw_syscalls:sys_enter"]/mb, fmtCounts(counts, mb))
}

func mixed() {
	var moved atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bulkConns []net.Conn
	for range 4 {
		c := dial('b')
		bulkConns = append(bulkConns, c)
		for _, up := range []bool{true, false} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 256<<10)
				for !stop.Load() {
					var k int
					var err error
					if up {
						k, err = c.Write(buf)
					} else {
						k, err = c.Read(buf)
					}
					moved.Add(int64(k))
					if err != nil {
						return
					}
				}
			}()
		}
	}
	var measuring atomic.Bool
	var mu sync.Mutex
	var rtts []time.Duration
	var echoConns []net.Conn
	for range 200 {
		echoConns = append(echoConns, dial('e'))
	}
	for _, c := range echoConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := make([]byte, *size)
			got := make([]byte, *size)
			var mine []time.Duration
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for !stop.Load() {
				<-tick.C
				t := time.Now()
				c.Write(msg)
				if _, err := io.ReadFull(c, got); err != nil {
					break
				}
				if measuring.Load() {
					mine = append(mine, time.Since(t))
				}
			}
			mu.Lock()
			rtts = append(rtts, mine...)
			mu.Unlock()
		}()
	}
	time.Sleep(500 * time.Millisecond)
	b0 := moved.Load()
	measuring.Store(true)
	m := startMeter()
	time.Sleep(*window)
	measuring.Store(false)
	b := moved.Load() - b0
	cpu, _, el := m.stop()
	stop.Store(true)
	for _, c := range append(bulkConns, echoConns...) {
		c.SetDeadline(time.Now())
	}
	wg.Wait()
	for _, c := range append(bulkConns, echoConns...) {
		c.Close()
	}
	fmt.Printf("mixed bulk MB/s(both dirs, sum)=%.0f cpu=%.2fs echo msgs=%d p50=%v p99=%v max=%v\n", float64(b)/1e6/el.Seconds(), cpu, len(rtts), pct(rtts, .5), pct(rtts, .99), pct(rtts, 1))
}

// bulkBG pushes bulk both ways through 4 tunnels for window+1s (the
// background of the mixed scenario, in its own process).
func bulkBG() {
	var moved atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	var conns []net.Conn
	for range 4 {
		c := dial('b')
		conns = append(conns, c)
		for _, up := range []bool{true, false} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 256<<10)
				for !stop.Load() {
					var k int
					var err error
					if up {
						k, err = c.Write(buf)
					} else {
						k, err = c.Read(buf)
					}
					moved.Add(int64(k))
					if err != nil {
						return
					}
				}
			}()
		}
	}
	time.Sleep(500 * time.Millisecond)
	b0 := moved.Load()
	t0 := time.Now()
	time.Sleep(*window)
	b := moved.Load() - b0
	el := time.Since(t0)
	stop.Store(true)
	for _, c := range conns {
		c.SetDeadline(time.Now())
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	fmt.Printf("bulkbg MB/s each way=%.0f\n", float64(b)/2e6/el.Seconds())
}

// paced: 200 echo tunnels sending 20 messages/s each.
func paced() {
	var stop, measuring atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	var rtts []time.Duration
	var conns []net.Conn
	for range 200 {
		conns = append(conns, dial('e'))
	}
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := make([]byte, *size)
			got := make([]byte, *size)
			var mine []time.Duration
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for !stop.Load() {
				<-tick.C
				t := time.Now()
				c.Write(msg)
				if _, err := io.ReadFull(c, got); err != nil {
					break
				}
				if measuring.Load() {
					mine = append(mine, time.Since(t))
				}
			}
			mu.Lock()
			rtts = append(rtts, mine...)
			mu.Unlock()
		}()
	}
	time.Sleep(700 * time.Millisecond)
	measuring.Store(true)
	m := startMeter()
	time.Sleep(*window - 400*time.Millisecond)
	measuring.Store(false)
	cpu, _, _ := m.stop()
	stop.Store(true)
	for _, c := range conns {
		c.SetDeadline(time.Now().Add(time.Second))
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	fmt.Printf("paced echo msgs=%d p50=%v p99=%v max=%v proxycpu=%.2fs\n", len(rtts), pct(rtts, .5), pct(rtts, .99), pct(rtts, 1), cpu)
}

// churn: 32 workers open a tunnel, echo 64 B once, close.
func churn() {
	var count atomic.Int64
	var stop, measuring atomic.Bool
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := make([]byte, 64)
			for !stop.Load() {
				c := dial('e')
				c.Write(msg)
				io.ReadFull(c, msg)
				c.Close()
				if measuring.Load() {
					count.Add(1)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	measuring.Store(true)
	m := startMeter()
	time.Sleep(*window)
	measuring.Store(false)
	k := count.Load()
	cpu, counts, el := m.stop()
	stop.Store(true)
	wg.Wait()
	fmt.Printf("churn tunnels=%d /s=%.0f cpu=%.2fs tunnels/cpu-s=%.0f sys/tunnel=%.1f%s\n", k, float64(k)/el.Seconds(), cpu, float64(k)/cpu, counts["raw_syscalls:sys_enter"]/float64(k), fmtCounts(counts, float64(k)))
}
