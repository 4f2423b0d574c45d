// Package relay copies bytes verbatim between the two connections of a
// tunnel, in both directions, with half-close, an idle timeout and
// cancellation, until both directions end. It knows nothing of HTTP.
//
// On Linux an idle tunnel holds no goroutine (its directions park in an
// epoll set) and bulk transfers move with splice(2); elsewhere, and for
// conns that hide their socket, two goroutines copy through pooled buffers
// with the same semantics.
package relay
