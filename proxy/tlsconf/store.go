package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultPollInterval is how often Run looks at the files when
// Options.PollInterval is zero.
const DefaultPollInterval = 5 * time.Second

// Options configures a Store. CertFile and KeyFile are required.
type Options struct {
	// CertFile and KeyFile are the PEM server certificate (leaf first, then
	// intermediates) and its private key: --tls-cert and --tls-key.
	CertFile, KeyFile string
	// ClientCAFile, if non-empty, is a PEM bundle of the CAs that issue
	// client certificates (--tls-client-ca). If empty, no client
	// certificate is asked for.
	ClientCAFile string
	// RequireClientCert makes a verified client certificate mandatory
	// (tls.RequireAndVerifyClientCert). If false, a certificate is asked
	// for and verified when given (tls.VerifyClientCertIfGiven), so clients
	// without one can still use Basic auth. The proxy sets it when
	// ClientCAFile is set and no other authentication (--htpasswd) is.
	// Ignored without ClientCAFile.
	RequireClientCert bool
	// PollInterval is how often Run checks the files for changes. 0 means
	// DefaultPollInterval.
	PollInterval time.Duration
	// Logger, if non-nil, gets one line per reload (success or failure).
	// If nil, nothing is logged.
	Logger *slog.Logger
	// OnReload, if non-nil, is called after every reload attempt made by
	// Reload or by a poll that saw a change, with its error (nil on
	// success), e.g. to count failures in a metric. It must not block.
	OnReload func(err error)
}

// Validate reports every problem with o, each naming its flag.
func (o Options) Validate() error {
	var errs []error
	if o.CertFile == "" {
		errs = append(errs, errors.New("--tls-cert is required for TLS"))
	}
	if o.KeyFile == "" {
		errs = append(errs, errors.New("--tls-key is required for TLS"))
	}
	if o.PollInterval < 0 {
		errs = append(errs, fmt.Errorf("tls poll interval %v: must not be negative", o.PollInterval))
	}
	return errors.Join(errs...)
}

// A Store holds the current certificate, key and client CAs and replaces
// them, all together or not at all, when the files change. Handshakes read
// the current set without locking. A Store is safe for concurrent use.
type Store struct {
	opts Options
	base *tls.Config // protocol settings shared by every snapshot; never mutated after New

	reloadMu sync.Mutex // serialises Reload and Poll; guards stamps
	stamps   [3]stamp   // of the files last attempted (cert, key, client CA)

	cur atomic.Pointer[material]
}

// material is one immutable, consistent snapshot of the files.
type material struct {
	cert *tls.Certificate
	// config is the complete per-handshake config (base plus ClientCAs),
	// returned by GetConfigForClient; nil without client certificates.
	config *tls.Config
}

// stamp identifies one version of a file without reading it. os.Stat
// follows symlinks, so a swapped symlink (certbot's live/ directory,
// Kubernetes' ..data) shows as a new inode too.
type stamp struct {
	mtime int64 // UnixNano: comparable with ==, unlike time.Time
	size  int64
	ino   uint64
	err   string // a missing file is a state too, so its return is a change
}

func statFile(name string) stamp {
	if name == "" {
		return stamp{}
	}
	fi, err := os.Stat(name)
	if err != nil {
		return stamp{err: err.Error()}
	}
	return stamp{mtime: fi.ModTime().UnixNano(), size: fi.Size(), ino: inode(fi)}
}

// New loads the files once and returns a Store serving them. A file that
// cannot be read or a certificate that does not match its key is an error:
// the proxy does not start without a working certificate. Call Run to pick
// up changes to the files.
func New(opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	s := &Store{opts: opts}
	s.base = &tls.Config{
		// TLS 1.0 and 1.1 are deprecated (RFC 8996); every client in the
		// matrix speaks 1.2 or 1.3.
		MinVersion: tls.VersionTLS12,
		// http/1.1 only, never h2. A client that negotiated h2 would send
		// CONNECT as an HTTP/2 stream, and a WebSocket through it would
		// need RFC 8441 extended CONNECT, which clients do not use towards
		// forward proxies; the proxy's CONNECT path hijacks an HTTP/1.1
		// connection. Offering h2 would also break Go's net/http, which
		// writes an HTTP/1.1 CONNECT whatever ALPN chose.
		NextProtos: []string{"http/1.1"},
		// Session tickets stay on (the zero value): resumption skips the
		// certificate and key exchange work on reconnects. Go rotates the
		// ticket keys itself; a restart starts new ones.
		SessionTicketsDisabled: false,
		GetCertificate:         s.GetCertificate,
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if err := s.reloadLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate returns the current server certificate. It is the
// tls.Config.GetCertificate hook; it never fails once New succeeded.
func (s *Store) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cur.Load().cert, nil
}

// Certificate returns the current server certificate (its Leaf is set).
func (s *Store) Certificate() *tls.Certificate {
	return s.cur.Load().cert
}

// Reload re-reads the files now, whether or not they changed (the proxy
// calls it on SIGHUP). On error the previous certificate, key and client
// CAs stay in use; the error is returned, logged and passed to OnReload.
func (s *Store) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	return s.report(s.reloadLocked())
}

// Poll checks the files' modification time, size and inode and reloads if
// any changed since the last attempt. It reports whether it reloaded and
// the reload's error. A failed attempt is not retried until a file changes
// again, so a bad pair is reported once, not at every tick; a half-written
// pair (new certificate, old key) is fixed by the next poll after the key
// is written. Run calls Poll on every tick; tests call it directly.
func (s *Store) Poll() (reloaded bool, err error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.currentStamps() == s.stamps {
		return false, nil
	}
	return true, s.report(s.reloadLocked())
}

// Run polls the files every Options.PollInterval until ctx is done. It
// blocks; the caller owns the goroutine.
//
// Polling rather than fsnotify: it needs no new dependency, it sees
// atomic renames and symlink swaps (which replace the watched inode and
// break an inotify watch on the file), it works on network and container
// filesystems where inotify events do not arrive, and a certificate
// renewal can wait a few seconds.
func (s *Store) Run(ctx context.Context) {
	d := s.opts.PollInterval
	if d == 0 {
		d = DefaultPollInterval
	}
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Poll() // reported through Logger and OnReload
		}
	}
}

func (s *Store) currentStamps() [3]stamp {
	return [3]stamp{
		statFile(s.opts.CertFile),
		statFile(s.opts.KeyFile),
		statFile(s.opts.ClientCAFile),
	}
}

// reloadLocked reads all files and swaps in the new material if every part
// is good. The stamps are taken before reading, so a write racing the read
// shows as a change at the next poll rather than being missed.
func (s *Store) reloadLocked() error {
	s.stamps = s.currentStamps()
	m, err := s.load()
	if err != nil {
		return err
	}
	s.cur.Store(m)
	return nil
}

func (s *Store) load() (*material, error) {
	cert, err := tls.LoadX509KeyPair(s.opts.CertFile, s.opts.KeyFile)
	if err != nil {
		// The error names the files or says the key does not match;
		// it never holds key material.
		return nil, fmt.Errorf("load --tls-cert %s / --tls-key %s: %w", s.opts.CertFile, s.opts.KeyFile, err)
	}
	if cert.Leaf == nil { // set by Go 1.23+; parse for older behaviour (GODEBUG x509keypairleaf=0)
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse --tls-cert %s: %w", s.opts.CertFile, err)
		}
	}
	m := &material{cert: &cert}
	if s.opts.ClientCAFile == "" {
		return m, nil
	}
	pem, err := os.ReadFile(s.opts.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("read --tls-client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("read --tls-client-ca %s: no PEM certificate in it", s.opts.ClientCAFile)
	}
	c := s.base.Clone()
	c.ClientCAs = pool
	c.ClientAuth = s.clientAuth()
	m.config = c
	return m, nil
}

// report logs a reload's outcome and passes it to OnReload; it returns err.
func (s *Store) report(err error) error {
	if l := s.opts.Logger; l != nil {
		if err != nil {
			l.Error("tls reload failed; keeping the previous certificate", "err", err)
		} else {
			leaf := s.cur.Load().cert.Leaf
			l.Info("tls reloaded", "subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
		}
	}
	if s.opts.OnReload != nil {
		s.opts.OnReload(err)
	}
	return err
}
