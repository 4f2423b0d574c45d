package auth

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tg123/go-htpasswd"
)

// countingMatcher wraps a matcher, counting calls; if gate is non-nil each
// call waits for it to close first.
type countingMatcher struct {
	inner htpasswd.EncodedPasswd
	calls atomic.Int32
	gate  chan struct{}
}

func (m *countingMatcher) MatchesPassword(pw string) bool {
	m.calls.Add(1)
	if m.gate != nil {
		<-m.gate
	}
	return m.inner.MatchesPassword(pw)
}

// countCalls replaces user's matcher (and the dummy, if dummy) in a's
// current state with a countingMatcher and returns it.
func countCalls(t *testing.T, a *Authenticator, user string, dummy bool) *countingMatcher {
	t.Helper()
	u := a.state.Load().users
	m := &countingMatcher{inner: u.byName[user]}
	if m.inner == nil {
		t.Fatalf("no user %q", user)
	}
	u.byName[user] = m
	if dummy {
		u.dummy = m
	}
	return m
}

func TestCheck(t *testing.T) {
	a, _ := newTestAuth(t, newFakeClock(), Options{Throttle: ThrottleConfig{Disabled: true}},
		htpasswdEntry(t, "alice", "wonderland", "-B", "-C", "4"),
		htpasswdEntry(t, "bob", "builder", "-m"))
	m := countCalls(t, a, "alice", true)
	tests := []struct {
		name   string
		header string
		want   Result
		hashes int32 // calls of alice's (and the dummy) matcher
	}{
		{"ok", basic("alice", "wonderland"), Result{Status: StatusOK, User: "alice"}, 1},
		{"ok cached", basic("alice", "wonderland"), Result{Status: StatusOK, User: "alice"}, 0},
		{"ok lowercase scheme", "basic " + b64("alice:wonderland"), Result{Status: StatusOK, User: "alice"}, 0},
		{"other user", basic("bob", "builder"), Result{Status: StatusOK, User: "bob"}, 0},
		{"wrong password", basic("alice", "Wonderland"), Result{Status: StatusInvalid, User: "alice"}, 1},
		{"wrong password again", basic("alice", "Wonderland"), Result{Status: StatusInvalid, User: "alice"}, 1},
		{"other user's password", basic("alice", "builder"), Result{Status: StatusInvalid, User: "alice"}, 1},
		{"empty password", basic("alice", ""), Result{Status: StatusInvalid, User: "alice"}, 0},
		{"unknown user runs dummy", basic("mallory", "wonderland"), Result{Status: StatusInvalid, User: UnknownUser}, 1},
		{"unknown user empty password", basic("mallory", ""), Result{Status: StatusInvalid, User: UnknownUser}, 0},
		{"user name case matters", basic("Alice", "wonderland"), Result{Status: StatusInvalid, User: UnknownUser}, 1},
		{"missing", "", Result{Status: StatusMissing, User: UnknownUser}, 0},
		{"blank", "  ", Result{Status: StatusMissing, User: UnknownUser}, 0},
		{"bearer", "Bearer abc", Result{Status: StatusInvalid, User: UnknownUser}, 0},
		{"bad base64", "Basic !!", Result{Status: StatusInvalid, User: UnknownUser}, 0},
		{"no colon", "Basic " + b64("alice"), Result{Status: StatusInvalid, User: UnknownUser}, 0},
		{"oversized", basic("alice", strings.Repeat("x", MaxHeaderLen)), Result{Status: StatusInvalid, User: UnknownUser}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := m.calls.Load()
			if got := a.Check(testClient, tt.header); got != tt.want {
				t.Errorf("Check(%s) = %+v; want %+v", tt.name, got, tt.want)
			}
			if got := m.calls.Load() - before; got != tt.hashes {
				t.Errorf("Check(%s) computed %d hashes; want %d", tt.name, got, tt.hashes)
			}
		})
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{StatusOK: "ok", StatusMissing: "missing",
		StatusInvalid: "invalid", StatusThrottled: "throttled", 42: "Status(42)"} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q; want %q", int(s), got, want)
		}
	}
	if (Result{}).Status != StatusInvalid {
		t.Error("zero Result does not deny")
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "htpasswd", "alice:"+okBcrypt+"\n")
	tests := []struct {
		name, htpasswd, groups string
		opts                   Options
		want                   string
	}{
		{"no path", "", "", Options{}, "no htpasswd file"},
		{"missing file", filepath.Join(dir, "nope"), "", Options{}, "no such file"},
		{"missing groups", good, filepath.Join(dir, "nope"), Options{}, "load groups"},
		{"negative throttle", good, "", Options{Throttle: ThrottleConfig{MaxFailures: -1}}, "must not be negative"},
		{"bad option group", good, "", Options{Groups: map[string][]string{"a b": {"alice"}}}, "groups option"},
		{"bad option member", good, "", Options{Groups: map[string][]string{"ops": {""}}}, "groups option"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.htpasswd, tt.groups, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New() error = %v; want %q", err, tt.want)
			}
		})
	}
}

func TestReloadBadFileKeepsOldUsers(t *testing.T) {
	dir := t.TempDir()
	goodUsers := htpasswdEntry(t, "alice", "pw1", "-B", "-C", "4") + "\n"
	path := writeFile(t, dir, "htpasswd", goodUsers)
	groups := writeFile(t, dir, "groups", "ops: alice\n")
	a, err := New(path, groups, Options{})
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct{ file, content, want string }{
		{path, htpasswdEntry(t, "bob", "pw2", "-m") + "\ncarol:Pl4inSecret\n", path + ":2: user \"carol\": plaintext"},
		{path, "# all users removed\n", "no users"},
		{groups, "ops: alice\nbroken line\n", groups + ":2: malformed"},
	}
	for _, b := range bad {
		writeFile(t, dir, "htpasswd", goodUsers)
		writeFile(t, dir, "groups", "ops: alice\n")
		writeFile(t, dir, filepath.Base(b.file), b.content)
		err := a.Reload()
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("Reload() = %v; want error containing %q", err, b.want)
		} else if strings.Contains(err.Error(), "Pl4inSecret") {
			t.Errorf("Reload() error %q leaks a password", err)
		}
		if r := a.Check(testClient, basic("alice", "pw1")); r.Status != StatusOK {
			t.Errorf("after failed reload, Check(alice) = %+v; want OK", r)
		}
		if got := a.Groups("alice"); len(got) != 1 || got[0] != "ops" {
			t.Errorf("after failed reload, Groups(alice) = %v; want [ops]", got)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err == nil || a.Users() != 1 {
		t.Errorf("Reload of a removed file = %v, Users() = %d; want error and 1 user", err, a.Users())
	}
}

// TestReloadDropsCache changes alice's password with the real htpasswd tool:
// the old password must stop working at the Reload, though it was cached.
func TestReloadDropsCache(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "htpasswd", htpasswdEntry(t, "alice", "old-pw", "-B", "-C", "4")+"\n")
	a, err := New(path, "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r := a.Check(testClient, basic("alice", "old-pw")); r.Status != StatusOK {
		t.Fatalf("Check(old) = %+v; want OK", r)
	}
	if n := a.state.Load().cache.len(); n != 1 {
		t.Fatalf("cache holds %d entries; want 1", n)
	}
	writeFile(t, dir, "htpasswd", htpasswdEntry(t, "alice", "new-pw", "-B", "-C", "4")+"\n")
	if r := a.Check(testClient, basic("alice", "old-pw")); r.Status != StatusOK {
		t.Errorf("before Reload, Check(old) = %+v; want OK", r)
	}
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if r := a.Check(testClient, basic("alice", "old-pw")); r.Status != StatusInvalid {
		t.Errorf("after Reload, Check(old) = %+v; want Invalid", r)
	}
	if r := a.Check(testClient, basic("alice", "new-pw")); r.Status != StatusOK {
		t.Errorf("after Reload, Check(new) = %+v; want OK", r)
	}
}

func TestCheckThrottledAddr(t *testing.T) {
	clock := newFakeClock()
	a, _ := newTestAuth(t, clock, Options{Throttle: ThrottleConfig{MaxFailures: 3, Window: time.Minute, Block: 5 * time.Minute}},
		"alice:"+okBcrypt)
	m := countCalls(t, a, "alice", false)
	attacker, other := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.8")
	for i := range 100 {
		if r := a.Check(other, basic("alice", okPass)); r.Status != StatusOK {
			t.Fatalf("success #%d = %+v; successes must never throttle", i, r)
		}
	}
	want := []Status{StatusInvalid, StatusInvalid, StatusThrottled}
	for i, w := range want {
		if r := a.Check(attacker, basic("alice", fmt.Sprint("guess", i))); r.Status != w {
			t.Fatalf("failure #%d = %+v; want %v", i+1, r, w)
		}
	}
	before := m.calls.Load()
	r := a.Check(attacker, basic("alice", okPass))
	if want := (Result{Status: StatusThrottled, User: "alice", RetryAfter: 5 * time.Minute}); r != want {
		t.Errorf("right password from blocked address = %+v; want %+v", r, want)
	}
	if m.calls.Load() != before {
		t.Error("a blocked address got its password verified")
	}
	// A client says who it is only after a 407: a blocked address must
	// still get it, or no trusted user there could ever log in.
	if r := a.Check(attacker, ""); r.Status != StatusMissing {
		t.Errorf("no header from blocked address = %+v; want Missing", r)
	}
	if r := a.Check(other, basic("alice", okPass)); r.Status != StatusOK {
		t.Errorf("other address = %+v; want OK", r)
	}
	clock.Advance(4*time.Minute + 30*time.Second)
	if r := a.Check(attacker, basic("alice", okPass)); r.Status != StatusThrottled || r.RetryAfter != 30*time.Second {
		t.Errorf("30s before release = %+v; want Throttled, RetryAfter 30s", r)
	}
	clock.Advance(30 * time.Second)
	if r := a.Check(attacker, basic("alice", okPass)); r.Status != StatusOK {
		t.Errorf("after Block = %+v; want OK", r)
	}
}

// TestCheckPerUserBlock simulates guessing one user's password from many
// addresses, for a known and an unknown user name.
func TestCheckPerUserBlock(t *testing.T) {
	for _, user := range []string{"alice", "zed"} {
		t.Run(user, func(t *testing.T) {
			clock := newFakeClock()
			a, _ := newTestAuth(t, clock, Options{Throttle: ThrottleConfig{MaxFailures: 3, Block: time.Minute}},
				"alice:"+okBcrypt)
			m := countCalls(t, a, "alice", true)
			home := netip.MustParseAddr("2001:db8:1::1")
			if user == "alice" {
				if r := a.Check(home, basic(user, okPass)); r.Status != StatusOK {
					t.Fatalf("Check from home = %+v; want OK", r)
				}
			}
			want := []Status{StatusInvalid, StatusInvalid, StatusThrottled, StatusThrottled}
			for i, w := range want {
				bot := netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
				if r := a.Check(bot, basic(user, "guess")); r.Status != w {
					t.Fatalf("guess #%d from a new address = %+v; want %v", i+1, r, w)
				}
			}
			before := m.calls.Load()
			newcomer := netip.MustParseAddr("203.0.113.200")
			if r := a.Check(newcomer, basic(user, okPass)); r.Status != StatusThrottled || r.RetryAfter != time.Minute {
				t.Errorf("right password from a new address = %+v; want Throttled for 1m", r)
			}
			if m.calls.Load() != before {
				t.Error("a blocked user's password was verified for an untrusted address")
			}
			if user == "alice" {
				if r := a.Check(home, basic(user, okPass)); r.Status != StatusOK {
					t.Errorf("right password from trusted home = %+v; want OK", r)
				}
				if r := a.Check(home, basic(user, "typo")); r.Status != StatusInvalid {
					t.Errorf("typo from trusted home = %+v; want Invalid", r)
				}
			}
			clock.Advance(time.Minute)
			wantAfter := StatusOK
			if user == "zed" {
				wantAfter = StatusInvalid
			}
			if r := a.Check(newcomer, basic(user, okPass)); r.Status != wantAfter {
				t.Errorf("after Block = %+v; want %v", r, wantAfter)
			}
		})
	}
}

func TestNilAuthenticatorDenies(t *testing.T) {
	var a *Authenticator
	if r := a.Check(testClient, basic("alice", okPass)); r != (Result{Status: StatusInvalid, User: UnknownUser}) {
		t.Errorf("nil Check = %+v; want Invalid", r)
	}
	if a.Users() != 0 || a.Groups("alice") != nil || a.Reload() == nil {
		t.Error("nil Authenticator: want 0 users, no groups, Reload error")
	}
}
