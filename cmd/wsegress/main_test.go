package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wsegress/wsegress/auth"
)

// runCLI runs the command line with args and returns its output and error.
func runCLI(t *testing.T, ctx context.Context, stdin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(ctx, append([]string{"wsegress"}, args...), strings.NewReader(stdin), &out, &out)
	return out.String(), err
}

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "wsegress.yaml")
	os.WriteFile(cfg, []byte("acl:\n  rules:\n    - action: allow\n      target: \"*.example.com:443\"\nlimits:\n  max_tunnels_per_ip: 3\n"), 0o600)
	report := filepath.Join(dir, "report.yaml")
	os.WriteFile(report, []byte("acl:\n  rules:\n    - name: trial\n      action: report\n      target: 203.0.113.7\n    - name: ws\n      action: allow\n      target: 203.0.113.0/24:443\n      websocket_only: true\n"), 0o600)
	upFile := filepath.Join(dir, "upstream")
	os.WriteFile(upFile, []byte("http://bob:pa%2Fss@127.0.0.1:3128\n"), 0o600)
	inspectFile := filepath.Join(dir, "inspect.yaml")
	os.WriteFile(inspectFile, []byte("inspect:\n  websocket_only: true\n  mode: report\n"), 0o600)
	badInspect := filepath.Join(dir, "bad-inspect.yaml")
	os.WriteFile(badInspect, []byte("inspect:\n  mode: audit\n"), 0o600)
	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("acl:\n  rulez: []\n"), 0o600)
	ctx := context.Background()

	cases := []struct {
		name    string
		args    []string
		wantOut string // substring of the output
		wantErr string // substring of the error; "" = success
		code    int    // exit code the error carries
	}{
		{"version", []string{"version"}, "wsegress ", "", 0},
		{"check default", []string{"check"}, "ok: 0 rules", "", 0},
		{"check config", []string{"check", "--config", cfg}, "ok: 1 rules", "", 0},
		{"check unknown yaml key", []string{"check", "--config", typo}, "", "rulez", 1},
		{"check bad rules, all reported", []string{"check", "--allow", "*", "--deny", "10.1.2.3/16"}, "", "10.1.0.0/16", 1},
		{"serve stray argument", []string{"serve", "extra", "--htpasswd", "x"}, "", `unexpected argument "extra"`, 2},
		{"serve open proxy refused", []string{"serve", "--listen", "0.0.0.0:0"}, "", "--no-auth", 2},
		{"upstream password not echoed", []string{"check", "--upstream", "http://bob:pa/ss@127.0.0.1:3128"}, "", "percent-encode", 1},
		{"upstream from a file", []string{"explain", "--upstream-file", upFile, "example.com:443"}, "via upstream", "", 0},
		{"upstream and upstream file", []string{"check", "--upstream", "http://127.0.0.1:1", "--upstream-file", upFile}, "", "give one", 1},
		{"upstream file missing", []string{"check", "--upstream-file", filepath.Join(dir, "nope")}, "", "--upstream-file", 1},
		{"explain loopback denied", []string{"explain", "127.0.0.1:443"}, "deny by \"builtin:non-public\"", "", 0},
		{"explain named loopback allowed", []string{"explain", "--allow", "127.0.0.1:9000", "127.0.0.1:9000"}, "allow by", "", 0},
		{"explain bad target", []string{"explain", "127.1:443"}, "", "non-canonical", 1},
		{"explain report rule", []string{"explain", "--config", report, "203.0.113.7:443"}, `would_deny (websocket_only) by "trial"`, "", 0},
		{"explain websocket_only", []string{"explain", "--config", report, "203.0.113.8:443"}, `allow (websocket_only) by "ws"`, "", 0},
		{"explain report mode", []string{"explain", "--acl-mode", "report", "--deny", "203.0.113.9", "--allow", "203.0.113.0/24", "203.0.113.9:443"}, `would_deny by "deny 203.0.113.9"`, "", 0},
		{"explain report mode keeps built-in", []string{"explain", "--acl-mode", "report", "127.0.0.1:443"}, `deny by "builtin:non-public"`, "", 0},
		{"check bad acl mode", []string{"check", "--acl-mode", "audit"}, "", `write "enforce" or "report"`, 1},
		{"tls cert without key", []string{"check", "--tls-cert", "c.pem"}, "", "--tls-cert needs --tls-key", 1},
		{"tls key without cert", []string{"check", "--tls-key", "k.pem"}, "", "--tls-key needs --tls-cert", 1},
		{"tls listen without cert", []string{"check", "--tls-listen", "127.0.0.1:3129"}, "", "--tls-listen needs --tls-cert", 1},
		{"client ca without tls", []string{"check", "--tls-client-ca", "ca.pem"}, "", "--tls-client-ca needs --tls-cert", 1},
		{"client user without ca", []string{"check", "--tls-client-user", "san-email"}, "", "--tls-client-user needs --tls-client-ca", 1},
		{"client user bad", []string{"check", "--tls-cert", "c", "--tls-key", "k", "--tls-client-ca", "ca", "--tls-client-user", "dn"}, "", "use cn, san-email or san-uri", 1},
		{"tls listen open refused", []string{"check", "--tls-cert", "c", "--tls-key", "k", "--tls-listen", "0.0.0.0:3129"}, "", "tls-listen \"0.0.0.0:3129\" is not a loopback address", 1},
		{"tls cert file missing", []string{"check", "--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"}, "", "c.pem", 1},
		{"pac direct without proxy", []string{"check", "--pac-direct", "10.0.0.0/8"}, "", "--pac-direct needs --pac-proxy", 1},
		{"pac bad direct", []string{"check", "--pac-proxy", "proxy.example.com:3128", "--pac-direct", "10.0.0.1/8"}, "", `write "10.0.0.0/8"`, 1},
		{"pac proxy with scheme", []string{"check", "--pac-proxy", "https://proxy.example.com:3129"}, "", "without a scheme", 1},
		{"check proxy protocol sources", []string{"check", "--no-auth", "--proxy-protocol-from", "10.0.0.0/8,192.0.2.1", "--proxy-protocol-from", "2001:db8::/32"}, "PROXY protocol from 10.0.0.0/8, 192.0.2.1/32, 2001:db8::/32", "", 0},
		{"check proxy protocol needs auth", []string{"check", "--proxy-protocol-from", "10.0.0.0/8"}, "", "refusing to run an open proxy", 1},
		{"check bad proxy protocol source", []string{"check", "--proxy-protocol-from", "10.0.0.1/8"}, "", "host bits", 1},
		{"check conn caps derived", []string{"check", "--max-tunnels", "100"}, "max-conns-per-ip ", "", 0},
		{"check conn caps off", []string{"check", "--max-conns", "-1", "--max-conns-per-ip", "7"}, "max-conns unlimited, max-conns-per-ip 7", "", 0},
		{"check inspect flags", []string{"check", "--websocket-only", "--sni-check", "--allow-missing-sni", "--inspect-mode", "report"}, "first bytes: websocket-only, missing SNI allowed (report)", "", 0},
		{"check sni-check alone", []string{"check", "--sni-check"}, "first bytes: sni-check (enforce)", "", 0},
		{"check inspect from file", []string{"check", "--config", inspectFile}, "first bytes: websocket-only (report)", "", 0},
		{"check inspect flag over file", []string{"check", "--config", inspectFile, "--inspect-mode", "enforce", "--websocket-only=false", "--sni-check"}, "first bytes: sni-check (enforce)", "", 0},
		{"check bad inspect mode", []string{"check", "--inspect-mode", "audit"}, "", `--inspect-mode "audit"`, 1},
		{"check bad inspect mode in file", []string{"check", "--config", badInspect}, "", `--inspect-mode "audit"`, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCLI(t, ctx, "", tc.args...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("run %v: %v\n%s", tc.args, err, out)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("run %v: err = %v; want one containing %q", tc.args, err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "pa/ss") {
					t.Errorf("error echoes the upstream password: %v", err)
				}
				if ec, ok := err.(cli.ExitCoder); ok && ec.ExitCode() != tc.code {
					t.Errorf("exit code = %d; want %d", ec.ExitCode(), tc.code)
				}
			}
			if !strings.Contains(out, tc.wantOut) {
				t.Errorf("output %q; want it to contain %q", out, tc.wantOut)
			}
		})
	}
}

// TestPasswd adds a user from stdin and checks the password with auth.
func TestPasswd(t *testing.T) {
	file := filepath.Join(t.TempDir(), "htpasswd")
	if _, err := runCLI(t, context.Background(), "s3cret\n", "passwd", "--cost", "4", file, "alice"); err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(file, "", auth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Users() != 1 {
		t.Fatalf("users = %d; want 1", a.Users())
	}
	if _, err := runCLI(t, context.Background(), "\n", "passwd", file, "bob"); err == nil {
		t.Error("an empty password was accepted")
	}
}

// TestServeStopsOnCancel: serve listens, logs the address, and drains and
// returns nil when its context ends (SIGINT/SIGTERM in main).
func TestServeStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"wsegress", "serve", "--listen", "127.0.0.1:0", "--drain-timeout", "1s"}, strings.NewReader(""), &out, &out)
	}()
	eventually(t, 10*time.Second, "the listening line", func() bool { return strings.Contains(out.String(), "msg=listening") })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v; want nil after a drain", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(out.String(), "msg=stopped") {
		t.Errorf("no stopped line: %s", out.String())
	}
}

// TestUpstreamPasswordWarning: a password in --upstream on the command
// line is warned about at start (without the password); the same URL in
// $WSEGRESS_UPSTREAM is not.
func TestUpstreamPasswordWarning(t *testing.T) {
	const up = "http://bob:s3cret@127.0.0.1:1"
	for _, tc := range []struct {
		name     string
		args     []string
		env      string
		wantWarn bool
	}{
		{"flag with password", []string{"--upstream", up}, "", true},
		{"flag without password", []string{"--upstream", "http://127.0.0.1:1"}, "", false},
		{"environment", nil, up, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("WSEGRESS_UPSTREAM", tc.env)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var out syncBuffer
			done := make(chan error, 1)
			args := append([]string{"wsegress", "serve", "--listen", "127.0.0.1:0", "--drain-timeout", "1s"}, tc.args...)
			go func() { done <- run(ctx, args, strings.NewReader(""), &out, &out) }()
			eventually(t, 10*time.Second, "the listening line", func() bool { return strings.Contains(out.String(), "msg=listening") })
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("serve: %v", err)
			}
			log := out.String()
			if got := strings.Contains(log, "carries a password"); got != tc.wantWarn {
				t.Errorf("warning logged = %v; want %v:\n%s", got, tc.wantWarn, log)
			}
			if strings.Contains(log, "s3cret") {
				t.Errorf("the log shows the password:\n%s", log)
			}
		})
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
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

// TestProxyProtocolFromEnv: $WSEGRESS_PROXY_PROTOCOL_FROM takes several
// sources separated by commas (or by ";", as every list variable does).
func TestProxyProtocolFromEnv(t *testing.T) {
	t.Setenv("WSEGRESS_PROXY_PROTOCOL_FROM", "10.0.0.0/8, 192.0.2.1;2001:db8::/32")
	out, err := runCLI(t, context.Background(), "", "check", "--no-auth")
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	if want := "PROXY protocol from 10.0.0.0/8, 192.0.2.1/32, 2001:db8::/32"; !strings.Contains(out, want) {
		t.Errorf("output %q; want it to contain %q", out, want)
	}
}
