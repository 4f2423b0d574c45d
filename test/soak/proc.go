package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat: 100 on
// every Linux architecture.
const clockTicks = 100

// raiseNoFile lifts the soft RLIMIT_NOFILE to the hard limit. Setting it
// explicitly also stops the Go runtime from restoring the old soft limit
// for children, so the proxy starts with the same limit (and derives its
// default --max-tunnels from it).
func raiseNoFile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("get RLIMIT_NOFILE: %w", err)
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("set RLIMIT_NOFILE to %d: %w", l.Max, err)
	}
	return l.Cur, nil
}

// buildWsegress builds ./cmd/wsegress of the module this command runs in.
func buildWsegress(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		return "", errors.New("not inside the wsegress module: run from the repository or pass -wsegress")
	}
	bin := filepath.Join(dir, "wsegress")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/wsegress")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/wsegress: %w\n%s", err, b)
	}
	return bin, nil
}

// writeHtpasswd writes one bcrypt entry per user with a random password,
// with Apache's htpasswd when installed, else x/crypto/bcrypt, and returns
// the passwords.
func writeHtpasswd(path string, users []string, cost int) (map[string]string, error) {
	pw := map[string]string{}
	var lines []string
	tool, _ := exec.LookPath("htpasswd")
	for _, u := range users {
		var raw [12]byte
		_, _ = rand.Read(raw[:])
		pw[u] = hex.EncodeToString(raw[:])
		var line string
		if tool != "" {
			cmd := exec.Command(tool, "-niB", "-C", strconv.Itoa(cost), u)
			cmd.Stdin = strings.NewReader(pw[u] + "\n")
			out, err := cmd.Output()
			if err != nil {
				return nil, fmt.Errorf("htpasswd -niB for %s: %w", u, err)
			}
			line = strings.TrimSpace(string(out))
		} else {
			h, err := bcrypt.GenerateFromPassword([]byte(pw[u]), cost)
			if err != nil {
				return nil, fmt.Errorf("bcrypt for %s: %w", u, err)
			}
			line = u + ":" + string(h)
		}
		lines = append(lines, line)
	}
	return pw, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// proxyProc is one running wsegress started by this program.
type proxyProc struct {
	cmd           *exec.Cmd
	addr, metrics string
	done          chan struct{} // closed when the process has exited

	mu   sync.Mutex // guards tail
	tail []string   // last stderr lines, for error reports
}

// startProxy runs "wsegress serve" with the default settings plus what the
// soak needs: the htpasswd file, the targets allowed, a metrics listener,
// and free loopback ports. It waits until the proxy accepts.
func startProxy(bin, htpasswd string, allow []string) (*proxyProc, error) {
	lp, err := freePort()
	if err != nil {
		return nil, err
	}
	mp, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &proxyProc{addr: lp, metrics: mp, done: make(chan struct{})}
	args := []string{"serve", "--listen", lp, "--metrics-listen", mp, "--htpasswd", htpasswd}
	for _, a := range allow {
		args = append(args, "--allow", a)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start wsegress: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			if len(p.tail) == 10 {
				p.tail = p.tail[1:]
			}
			p.tail = append(p.tail, sc.Text())
			p.mu.Unlock()
		}
		_ = p.cmd.Wait()
		close(p.done)
	}()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-p.done:
			return nil, fmt.Errorf("wsegress exited at start: %s", p.stderrTail())
		default:
		}
		c1, err1 := net.DialTimeout("tcp", lp, time.Second)
		c2, err2 := net.DialTimeout("tcp", mp, time.Second)
		for _, c := range []net.Conn{c1, c2} {
			if c != nil {
				c.Close()
			}
		}
		if err1 == nil && err2 == nil {
			return p, nil
		}
	}
	p.stop()
	return nil, fmt.Errorf("wsegress not accepting after 15s: %s", p.stderrTail())
}

func (p *proxyProc) stderrTail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, " | ")
}

// stop ends the proxy by its PID: SIGTERM, then SIGKILL after a second (the
// default drain timeout is 30 s; nothing here needs a clean drain).
func (p *proxyProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// cpu is the proxy's utime+stime in seconds.
func (p *proxyProc) cpu() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may contain spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return float64(ut+st) / clockTicks
}

// fds is the number of descriptors the proxy holds, -1 if unknown.
func (p *proxyProc) fds() int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// freePort asks the kernel for an unused loopback port. Another process
// could take it before the proxy binds; the start-up check then fails
// loudly.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// sleepCtx waits d or until ctx is done; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
