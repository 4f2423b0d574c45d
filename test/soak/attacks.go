package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// tally counts what attackers got, by kind ("407", "closed", ...).
type tally struct {
	mu sync.Mutex // guards m
	m  map[string]int
}

func (t *tally) add(kind string) {
	t.mu.Lock()
	if t.m == nil {
		t.m = map[string]int{}
	}
	t.m[kind]++
	t.mu.Unlock()
}

// String lists the counts, largest first: "407×995, closed×5".
func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return countList(t.m)
}

func countList(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// outcome names a CONNECT exchange's result for the tally.
func outcome(code int, err error) string {
	if err != nil {
		return errKind(err)
	}
	return strconv.Itoa(code)
}

// waitClosed blocks until the proxy closes c ("closed") or ctx ends
// ("held"); c is closed either way.
func waitClosed(ctx context.Context, c *conn) string {
	done := make(chan struct{})
	go func() {
		_ = c.SetDeadline(time.Time{})
		_, _ = io.Copy(io.Discard, c.br)
		close(done)
	}()
	select {
	case <-done:
		c.Close()
		return "closed"
	case <-ctx.Done():
		c.Close()
		<-done
		return "held"
	}
}

// parallel runs f(i) for i in [0, n) with at most width at once, stopping
// early when ctx ends, and waits for all.
func parallel(ctx context.Context, n, width int, f func(i int)) {
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}()
	}
	wg.Wait()
}

// attackStale: one client on the good clients' address retries one wrong
// password for another user, one connection per attempt, 20 a second.
func attackStale(ctx context.Context, r *phaseRun) {
	auth := basic(userStale, "stale-"+r.e.pw[userStale])
	for sleepCtx(ctx, 50*time.Millisecond) {
		c, err := dialFrom(ctx, goodAddr, r.p.addr, 0)
		if err != nil {
			if ctx.Err() == nil {
				r.att.add("dial " + errKind(err))
			}
			continue
		}
		c.deadline(5 * time.Second)
		code, err := c.connect(r.e.echo, auth)
		if ctx.Err() == nil {
			r.att.add(outcome(code, err))
		}
		c.Close()
	}
}

// attackBurst: -burst connections from -addrs addresses are opened first,
// then all send a distinct wrong password for the good user at once. It
// waits for every answer up to twice the phase duration.
func attackBurst(ctx context.Context, r *phaseRun) {
	o := r.e.o
	conns := make([]*conn, o.burst)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	parallel(dctx, o.burst, 100, func(i int) {
		c, err := dialFrom(dctx, attackAddr(i, o.addrs), r.p.addr, 0)
		if err != nil {
			if ctx.Err() == nil {
				r.att.add("dial " + errKind(err))
			}
			return
		}
		conns[i] = c
	})
	cancel()
	start := make(chan struct{})
	var wg sync.WaitGroup
	wait := 2 * o.phase
	for i, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			<-start
			c.deadline(wait)
			code, err := c.connect(r.e.echo, basic(userGood, fmt.Sprintf("wrong-%d-%s", i, r.e.pw[userGood])))
			r.att.add(outcome(code, err))
		}()
	}
	open := 0
	for _, c := range conns {
		if c != nil {
			open++
		}
	}
	r.note("burst released with %d connections open", open)
	close(start)
	t0 := time.Now()
	wg.Wait()
	r.note("last burst answer after %.1f s", time.Since(t0).Seconds())
}

// attackStalled: -stalled tunnels (from -addrs addresses, as a valid user)
// to the stream target whose client never reads; held until the phase
// ends.
func attackStalled(ctx context.Context, r *phaseRun) {
	o := r.e.o
	auth := basic(userStream, r.e.pw[userStream])
	var mu sync.Mutex
	var held []*conn
	parallel(ctx, o.stalled, 32, func(i int) {
		c, err := dialFrom(ctx, attackAddr(i, o.addrs), r.p.addr, 4096)
		if err != nil {
			if ctx.Err() == nil {
				r.att.add("dial " + errKind(err))
			}
			return
		}
		c.deadline(10 * time.Second)
		code, err := c.connect(r.e.stream, auth)
		if err == nil && code == 200 {
			err = c.upgrade(r.e.stream)
		}
		if err != nil || code != 200 {
			r.att.add(outcome(code, err))
			c.Close()
			return
		}
		r.att.add("200")
		mu.Lock()
		held = append(held, c)
		mu.Unlock()
	})
	<-ctx.Done()
	r.stalledN = len(held)
	for _, c := range held {
		c.Close()
	}
}

// attackSlow: -slow connections that send a CONNECT line one byte every
// 3 s, and -slow that get a 407 (no credentials) and then stay silent.
func attackSlow(ctx context.Context, r *phaseRun) {
	o := r.e.o
	line := "CONNECT " + r.e.echo + " HTTP/1.1\r\n"
	var wg sync.WaitGroup
	parallel(ctx, 2*o.slow, 64, func(i int) {
		c, err := dialFrom(ctx, attackAddr(i, o.addrs), r.p.addr, 0)
		if err != nil {
			if ctx.Err() == nil {
				r.att.add("dial " + errKind(err))
			}
			return
		}
		wg.Add(1)
		if i%2 == 0 {
			go func() {
				defer wg.Done()
				r.att.add("slow " + slowLoris(ctx, c, line))
			}()
			return
		}
		go func() {
			defer wg.Done()
			c.deadline(10 * time.Second)
			code, err := c.connect(r.e.echo, "")
			if err != nil || code != 407 {
				r.att.add("idle " + outcome(code, err))
				c.Close()
				return
			}
			r.att.add("407")
			r.att.add("idle-after-407 " + waitClosed(ctx, c))
		}()
	})
	wg.Wait()
}

// slowLoris sends line one byte every 3 s until the proxy answers or
// closes, or ctx ends.
func slowLoris(ctx context.Context, c *conn, line string) string {
	defer c.Close()
	res := make(chan string, 1)
	go func() {
		_ = c.SetReadDeadline(time.Time{})
		code, _, err := c.readResponse()
		res <- outcome(code, err)
	}()
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	for i := 0; ; {
		if i < len(line) {
			_, _ = c.Write([]byte{line[i]})
			i++
		}
		select {
		case got := <-res:
			return got
		case <-ctx.Done():
			c.Close()
			<-res
			return "held"
		case <-tick.C:
		}
	}
}

// attackMetrics: -metrics-conns connections to the metrics listener, each
// sends one GET /healthz and then stays silent. A fresh /healthz from the
// good address once a second shows whether scrapes still work.
func attackMetrics(ctx context.Context, r *phaseRun) {
	o := r.e.o
	probe := &tally{}
	go func() {
		for sleepCtx(ctx, time.Second) {
			probe.add("probe " + healthz(ctx, r.p.metrics))
		}
	}()
	var wg sync.WaitGroup
	parallel(ctx, o.metricsConns, 64, func(i int) {
		c, err := dialFrom(ctx, attackAddr(i, o.addrs), r.p.metrics, 0)
		if err != nil {
			if ctx.Err() == nil {
				r.att.add("dial " + errKind(err))
			}
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.deadline(10 * time.Second)
			code, n, err := get(c, "/healthz")
			if err == nil {
				_, err = io.CopyN(io.Discard, c.br, n)
			}
			if err != nil {
				r.att.add(outcome(code, err))
				c.Close()
				return
			}
			r.att.add(strconv.Itoa(code))
			r.att.add("then " + waitClosed(ctx, c))
		}()
	})
	wg.Wait()
	r.note("fresh /healthz once a second during the attack: %s", probe)
}

func get(c *conn, path string) (int, int64, error) {
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: soak\r\n\r\n"); err != nil {
		return 0, 0, err
	}
	return c.readResponse()
}

// healthz does one GET /healthz on a new connection from the good address.
func healthz(ctx context.Context, addr string) string {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := dialFrom(dctx, goodAddr, addr, 0)
	if err != nil {
		return errKind(err)
	}
	defer c.Close()
	c.deadline(2 * time.Second)
	code, _, err := get(c, "/healthz")
	return outcome(code, err)
}

// attackGuess: distinct passwords for another user from the good
// clients' address, 10 a second, one connection each. Once a second a
// user who never logged in from there tries the right password.
func attackGuess(ctx context.Context, r *phaseRun) {
	probe := &tally{}
	go func() {
		auth := basic(userNew, r.e.pw[userNew])
		for sleepCtx(ctx, time.Second) {
			probe.add(connectOnce(ctx, r, auth))
		}
	}()
	for i := 0; sleepCtx(ctx, 100*time.Millisecond); i++ {
		got := connectOnce(ctx, r, basic(userGuessed, fmt.Sprintf("guess-%d", i)))
		if ctx.Err() == nil {
			r.att.add(got)
		}
	}
	r.note("a user new to the guessing address (right password) got: %s", probe)
}

// connectOnce makes one CONNECT from the good address and closes.
func connectOnce(ctx context.Context, r *phaseRun, auth string) string {
	c, err := dialFrom(ctx, goodAddr, r.p.addr, 0)
	if err != nil {
		return "dial " + errKind(err)
	}
	defer c.Close()
	c.deadline(5 * time.Second)
	return outcome(c.connect(r.e.echo, auth))
}

// authCounters scrapes the proxy's /metrics for its auth failure counters
// ("wsegress_auth_failures_total invalid=…"); "" if not available. Each
// "invalid" is one verification that ran (a hash, for bcrypt entries).
func authCounters(addr string) string {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil || resp.StatusCode != 200 {
		return ""
	}
	const name = "wsegress_auth_failures_total"
	var parts []string
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		_, rest, _ := strings.Cut(line, `reason="`)
		reason, _, _ := strings.Cut(rest, `"`)
		f := strings.Fields(line)
		parts = append(parts, reason+"="+f[len(f)-1])
	}
	if len(parts) == 0 {
		return ""
	}
	return name + " " + strings.Join(parts, " ")
}
