package auth

import (
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is an injectable clock that only moves when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// needTool returns the path of an external tool, skipping the test if it is
// missing, unless CI is set, where a missing tool is a failure.
func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found (install apache2-utils): %v", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return p
}

// htpasswdEntry runs the real htpasswd tool in -n mode and returns the
// "user:hash" line it prints. args are the hash options (e.g. "-B", "-C", "4").
func htpasswdEntry(t testing.TB, user, pass string, args ...string) string {
	t.Helper()
	bin := needTool(t, "htpasswd")
	argv := append([]string{"-nb"}, args...)
	argv = append(argv, user, pass)
	out, err := exec.Command(bin, argv...).Output()
	if err != nil {
		t.Fatalf("htpasswd %v: %v", args, err)
	}
	line := strings.TrimSpace(string(out))
	if !strings.HasPrefix(line, user+":") {
		t.Fatalf("htpasswd %v printed %q; want a line for %s", args, line, user)
	}
	return line
}

// htpasswdVerify reports whether the real `htpasswd -v` accepts pass for
// user: exit status 0 means correct, 3 a wrong password; anything else
// (such as 6, user not found) fails the test.
func htpasswdVerify(t testing.TB, file, user, pass string) bool {
	t.Helper()
	bin := needTool(t, "htpasswd")
	out, err := exec.Command(bin, "-vb", file, user, pass).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true
	case errors.As(err, &ee) && ee.ExitCode() == 3:
		return false
	}
	t.Fatalf("htpasswd -v %s: %v: %s", user, err, out)
	return false
}

// writeFile writes content to name in dir and returns its path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// basic builds a Proxy-Authorization value.
func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// newTestAuth builds an Authenticator for a file holding lines, on clock c.
func newTestAuth(t testing.TB, c *fakeClock, opts Options, lines ...string) (*Authenticator, string) {
	t.Helper()
	path := writeFile(t, t.TempDir(), "htpasswd", strings.Join(lines, "\n")+"\n")
	opts.Now = c.Now
	a, err := New(path, "", opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a, path
}
