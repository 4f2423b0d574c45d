package tlsconf

import (
	"context"
	"crypto/tls"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// serverCN dials addr and returns the CN of the certificate it served.
func serverCN(t *testing.T, addr string, results <-chan handshake, root *ca) string {
	t.Helper()
	cs, err := dial(addr, &tls.Config{RootCAs: root.pool()})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if h := result(t, results); h.err != nil {
		t.Fatalf("server handshake: %v", h.err)
	}
	return cs.PeerCertificates[0].Subject.CommonName
}

func TestNewRejectsBadFiles(t *testing.T) {
	root := newCA(t, "root")
	good := root.server(t, "server-1")
	other := root.server(t, "server-2")
	for name, tc := range map[string]struct {
		edit func(f *files)
		want string
	}{
		"no cert flag":        {func(f *files) { f.cert = "" }, "--tls-cert is required"},
		"missing key file":    {func(f *files) { f.key += ".missing" }, "--tls-key"},
		"key of another cert": {func(f *files) { replaceFile(t, f.key, other.keyPEM) }, "private key does not match"},
		"cert is not PEM":     {func(f *files) { replaceFile(t, f.cert, []byte("garbage")) }, "--tls-cert"},
		"client CA not PEM": {func(f *files) {
			f.clientCA = f.cert + ".ca"
			replaceFile(t, f.clientCA, []byte("garbage"))
		}, "--tls-client-ca"},
	} {
		t.Run(name, func(t *testing.T) {
			f := writeFiles(t, good, nil)
			tc.edit(&f)
			_, err := New(f.options())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New() error = %v; want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("New() error shows key material: %v", err)
			}
		})
	}
}

func TestReloadOnRename(t *testing.T) {
	root := newCA(t, "root")
	f := writeFiles(t, root.server(t, "server-1"), nil)
	s, err := New(f.options())
	if err != nil {
		t.Fatal(err)
	}
	addr, results := startServer(t, s.ServerConfig(), UserCN)
	if got := serverCN(t, addr, results, root); got != "server-1" {
		t.Fatalf("served %q; want server-1", got)
	}

	if reloaded, err := s.Poll(); reloaded || err != nil {
		t.Fatalf("Poll() with no change = %v, %v; want false, nil", reloaded, err)
	}

	next := root.server(t, "server-2")
	replaceFile(t, f.cert, next.certPEM)
	replaceFile(t, f.key, next.keyPEM)
	if reloaded, err := s.Poll(); !reloaded || err != nil {
		t.Fatalf("Poll() after rename = %v, %v; want true, nil", reloaded, err)
	}
	if got := serverCN(t, addr, results, root); got != "server-2" {
		t.Fatalf("after reload served %q; want server-2", got)
	}

	// A new file renamed into place with the same size and modification
	// time is still a change: its inode differs.
	fi, err := os.Stat(f.cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.cert+".same", next.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(f.cert+".same", fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(f.cert+".same", f.cert); err != nil {
		t.Fatal(err)
	}
	if reloaded, err := s.Poll(); !reloaded || err != nil {
		t.Fatalf("Poll() after renaming an identical file over = %v, %v; want true, nil (new inode)", reloaded, err)
	}
}

// A pair being replaced one file at a time is bad in between: the old pair
// stays until the new one is whole. Garbage and missing files likewise.
func TestBadFilesKeepOldCert(t *testing.T) {
	root := newCA(t, "root")
	first := root.server(t, "server-1")
	f := writeFiles(t, first, nil)
	var (
		mu      sync.Mutex
		reports []error
	)
	opts := f.options()
	opts.OnReload = func(err error) {
		mu.Lock()
		defer mu.Unlock()
		reports = append(reports, err)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	addr, results := startServer(t, s.ServerConfig(), UserCN)

	next := root.server(t, "server-2")
	steps := []struct {
		name    string
		change  func()
		wantErr bool
		wantCN  string
	}{
		{"new cert, old key", func() { replaceFile(t, f.cert, next.certPEM) }, true, "server-1"},
		{"no change after a failure", func() {}, false, "server-1"},
		{"new key too", func() { replaceFile(t, f.key, next.keyPEM) }, false, "server-2"},
		{"garbage cert", func() { replaceFile(t, f.cert, []byte("-----BEGIN CERTIFICATE-----\nhalf")) }, true, "server-2"},
		{"cert removed", func() { os.Remove(f.cert) }, true, "server-2"},
		{"cert back", func() { replaceFile(t, f.cert, next.certPEM) }, false, "server-2"},
	}
	for _, st := range steps {
		mu.Lock()
		before := len(reports)
		mu.Unlock()
		st.change()
		reloaded, err := s.Poll()
		if (err != nil) != st.wantErr {
			t.Fatalf("%s: Poll() error = %v; want error %v", st.name, err, st.wantErr)
		}
		mu.Lock()
		n := len(reports) - before
		mu.Unlock()
		if wantN := map[bool]int{true: 1, false: 0}[reloaded]; n != wantN {
			t.Errorf("%s: OnReload called %d times; want %d", st.name, n, wantN)
		}
		if got := serverCN(t, addr, results, root); got != st.wantCN {
			t.Fatalf("%s: served %q; want %q", st.name, got, st.wantCN)
		}
		if got := s.Certificate().Leaf.Subject.CommonName; got != st.wantCN {
			t.Errorf("%s: Certificate() CN = %q; want %q", st.name, got, st.wantCN)
		}
	}

	// Reload re-reads whether or not a file changed.
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload() of a good pair = %v", err)
	}
	replaceFile(t, f.key, first.keyPEM)
	if err := s.Reload(); err == nil {
		t.Fatal("Reload() with mismatched key = nil; want an error")
	}
	mu.Lock()
	last := reports[len(reports)-1]
	mu.Unlock()
	if last == nil {
		t.Error("OnReload got nil for a failed Reload")
	}
	if got := serverCN(t, addr, results, root); got != "server-2" {
		t.Fatalf("after failed Reload served %q; want server-2", got)
	}
}

// Run polls on its ticker: a renewal is picked up without a call, and Run
// returns when its context ends.
func TestRunPicksUpRenewal(t *testing.T) {
	root := newCA(t, "root")
	f := writeFiles(t, root.server(t, "server-1"), nil)
	opts := f.options()
	opts.PollInterval = 10 * time.Millisecond
	ok := make(chan struct{}, 100)
	opts.OnReload = func(err error) {
		if err == nil {
			select {
			case ok <- struct{}{}:
			default:
			}
		}
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	next := root.server(t, "server-2")
	replaceFile(t, f.cert, next.certPEM)
	replaceFile(t, f.key, next.keyPEM)
	eventually(t, 10*time.Second, "Run reloads the renewed certificate", func() bool {
		return s.Certificate().Leaf.Subject.CommonName == "server-2"
	})
	select {
	case <-ok:
	case <-time.After(10 * time.Second):
		t.Fatal("OnReload(nil) not called after a successful poll")
	}

	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestOptionsValidateReportsAll(t *testing.T) {
	err := Options{PollInterval: -1}.Validate()
	for _, want := range []string{"--tls-cert", "--tls-key", "poll interval"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want it to mention %q", err, want)
		}
	}
}
