package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/cloudflare/tableflip"
	"github.com/coreos/go-systemd/v22/activation"
)

// handover is set by main: the real process takes its listening sockets
// through tableflip, so that SIGUSR2 can hand them to a new process.
// Tests that run serve in-process leave it off, since tableflip allows a
// single Upgrader per process.
var handover bool

// The roles of listening sockets, and the LISTEN_FDNAMES that pick them.
const (
	roleProxy   = "proxy"   // --listen
	roleTLS     = "tls"     // --tls-listen
	roleMetrics = "metrics" // --metrics-listen
)

// sockets hands serve its listening sockets. In order of preference they
// come from the process wsegress took over from (SIGUSR2), from systemd
// socket activation (LISTEN_FDS), or are bound anew; either way they are
// registered with the Upgrader, so the next handover passes them on.
type sockets struct {
	log *slog.Logger
	upg *tableflip.Upgrader // nil: no handover
	// activated are systemd's sockets by role; nil without LISTEN_FDS.
	activated map[string][]net.Listener
}

// openSockets reads systemd's sockets (and removes LISTEN_* from the
// environment, so a process started later does not take them for its
// own) and, when handover is on, starts the Upgrader.
// addrs are the configured addresses by role, which unnamed sockets are
// matched against.
func openSockets(log *slog.Logger, addrs map[string]string, pidFile string) (*sockets, error) {
	s := &sockets{log: log}
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, fmt.Errorf("systemd sockets (LISTEN_FDS): %w", err)
	}
	if len(named) > 0 {
		s.activated, err = activatedRoles(named, addrs)
		if err != nil {
			return nil, err
		}
	}
	if handover {
		s.upg, err = tableflip.New(tableflip.Options{PIDFile: pidFile})
		if err != nil {
			log.Warn("SIGUSR2 handover not available", "err", err)
			s.upg = nil
		}
	}
	return s, nil
}

// activatedRoles sorts systemd's sockets into roles. A socket named
// "proxy", "tls" or "metrics" (FileDescriptorName= in the socket unit)
// takes that role; any other is the metrics or TLS socket if its address
// is --metrics-listen or --tls-listen, else a proxy socket. So a single
// unnamed socket is the proxy's, and several ListenStream= lines (IPv4 and
// IPv6, say) are all served.
func activatedRoles(named map[string][]net.Listener, addrs map[string]string) (map[string][]net.Listener, error) {
	byAddr := make(map[netip.AddrPort]string)
	for _, role := range []string{roleMetrics, roleTLS} {
		if ap, err := netip.ParseAddrPort(addrs[role]); err == nil {
			byAddr[ap] = role
		}
	}
	roles := make(map[string][]net.Listener)
	var errs []error
	for name, lns := range named {
		for _, ln := range lns {
			if _, ok := ln.(*net.TCPListener); !ok {
				errs = append(errs, fmt.Errorf("systemd socket %q (%s): not a TCP listening socket; use ListenStream= with Accept=no", name, ln.Addr()))
				ln.Close()
				continue
			}
			role := roleProxy
			ap, _ := netip.ParseAddrPort(ln.Addr().String())
			switch {
			case name == roleProxy || name == roleTLS || name == roleMetrics:
				role = name
			case byAddr[ap] != "":
				role = byAddr[ap]
			}
			roles[role] = append(roles[role], ln)
		}
	}
	return roles, errors.Join(errs...)
}

// listen returns the listeners for role: the ones inherited from the
// previous process, else systemd's, else one bound on addr ("" binds
// none). New and systemd listeners are registered with the Upgrader under
// role#i, which is how the next process finds them.
func (s *sockets) listen(role, addr string) ([]net.Listener, error) {
	if s.upg != nil {
		var lns []net.Listener
		for i := 0; ; i++ {
			ln, err := s.upg.Listener("tcp", key(role, i))
			if err != nil {
				return nil, fmt.Errorf("inherited %s socket: %w", role, err)
			}
			if ln == nil {
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) > 0 {
			s.log.Info("took over listening socket", "role", role, "count", len(lns))
			return lns, nil
		}
	}
	lns := s.activated[role]
	if len(lns) > 0 {
		if addr != "" {
			s.log.Info("using systemd's sockets; the configured address is ignored", "role", role, "addr", addr)
		}
	} else if addr != "" {
		// Keep-alive off per accepted socket: the proxy switches it on for
		// tunnels old enough to need it (proxy.Config.KeepAlive).
		lc := net.ListenConfig{KeepAlive: -1}
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		lns = []net.Listener{ln}
	}
	if s.upg != nil {
		for i, ln := range lns {
			if err := s.upg.AddListener("tcp", key(role, i), ln.(*net.TCPListener)); err != nil {
				return nil, fmt.Errorf("register %s socket for handover: %w", role, err)
			}
		}
	}
	return lns, nil
}

func key(role string, i int) string { return fmt.Sprintf("%s#%d", role, i) }

// ready tells the process wsegress took over from, if any, that it now
// serves: the old process then stops accepting and drains. It reports
// whether there was one.
func (s *sockets) ready() (tookOver bool, err error) {
	if s.upg == nil {
		return false, nil
	}
	return s.upg.HasParent(), s.upg.Ready()
}

// upgrade starts a new process of the same binary with the same
// arguments and environment and hands it the sockets. It returns once the
// new process is ready, or failed, or timed out (a minute).
func (s *sockets) upgrade() error {
	if s.upg == nil {
		return errors.New("handover not available")
	}
	return s.upg.Upgrade()
}

// handedOver is closed once a new process took the sockets over: this one
// must then stop accepting and drain. Never closed without handover.
func (s *sockets) handedOver() <-chan struct{} {
	if s.upg == nil {
		return nil
	}
	return s.upg.Exit()
}

// stop refuses further handovers; serve calls it when it stops for good.
func (s *sockets) stop() {
	if s.upg != nil {
		s.upg.Stop()
	}
}
