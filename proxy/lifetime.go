package proxy

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/wsegress/wsegress/proxy/relay"
)

// endLifetime is the end reason of a tunnel closed because it reached
// Config.MaxTunnelLifetime.
const endLifetime relay.EndReason = "lifetime"

// errLifetime is the cause the relay's context is canceled with when a
// tunnel reaches its lifetime.
var errLifetime = errors.New("max tunnel lifetime reached")

// tunnelContext is the context a tunnel's relay runs under: the server's,
// canceled with errLifetime once the tunnel has lived its jittered
// lifetime. The relay then closes both conns: with nothing left unread
// that is a FIN each way. stop releases the timer; call it when the relay
// is done. Without a lifetime it allocates nothing.
func (s *Server) tunnelContext() (ctx context.Context, stop func()) {
	d := s.state.Load().cfg.MaxTunnelLifetime
	if d <= 0 {
		return s.baseCtx, func() {}
	}
	ctx, cancel := context.WithCancelCause(s.baseCtx)
	timer := time.AfterFunc(jitter(d), func() { cancel(errLifetime) })
	return ctx, func() {
		timer.Stop()
		cancel(nil)
	}
}

// jitter returns d give or take up to 10%, uniformly, so tunnels opened
// together (after a deploy, say) do not all reconnect in the same second.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}

// lifetimeEnd turns the relay's report of a lifetime cancel into end
// reason "lifetime": a planned, clean close, not an error.
func lifetimeEnd(res relay.Result) relay.Result {
	if res.Reason == relay.EndCanceled && errors.Is(res.Err, errLifetime) {
		res.Reason, res.Err = endLifetime, nil
	}
	return res
}
