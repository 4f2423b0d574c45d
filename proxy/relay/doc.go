// Package relay copies bytes verbatim between the two connections of a
// tunnel, in both directions, with half-close, an idle timeout and
// cancellation, until both directions end. It knows nothing of HTTP.
//
// On Linux a tunnel holds no goroutine of its own (its directions park in
// an epoll loop per CPU, which moves small frames itself) and bulk moves
// with splice(2) on a goroutine; elsewhere, and for
// conns that hide their socket, two goroutines copy through pooled buffers
// with the same semantics.
package relay
