package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy/limit"
)

// Sentinel errors of the request path. Every refusal wraps one of them (or
// an error the standard library classifies, such as a dial timeout), and
// statusFor maps them to an HTTP status in one place.
var (
	// errBadRequest marks malformed proxy requests (400).
	errBadRequest = errors.New("bad request")
	// errMethod marks methods the proxy does not serve (501).
	errMethod = errors.New("method not implemented")
	// errNotProxy marks origin-form requests sent to the proxy itself (400).
	errNotProxy = errors.New("not a proxy request")
	// errAuthRequired marks missing or wrong proxy credentials (407).
	errAuthRequired = errors.New("proxy authentication required")
	// errThrottled marks a client refused after too many failed logins
	// (429); a *throttledError carries how long to wait.
	errThrottled = errors.New("too many failed authentication attempts")
	// errDenied marks a destination the ACL refuses (403).
	errDenied = errors.New("destination denied")
	// errBusy marks a request refused because too many handshakes are in
	// progress (--max-pending) (503).
	errBusy = errors.New("too many pending requests")
	// errAuthBusy marks a request whose credentials could not be checked
	// because too many password hashes were running (--auth-max-concurrent)
	// (503).
	errAuthBusy = errors.New("too many password verifications in progress")
	// errShuttingDown marks a request that arrived while draining (503).
	errShuttingDown = errors.New("proxy shutting down")
	// errBodyTimeout marks a forwarded request whose body stalled for
	// --body-timeout (408).
	errBodyTimeout = errors.New("request body stalled")
	// errUpstream marks a target that answered an upgrade with garbage (502).
	errUpstream = errors.New("bad response from target")
	// errNotWebSocket marks an absolute-form request refused by
	// --websocket-only or a websocket_only rule (403, result not_websocket).
	errNotWebSocket = errors.New("not a WebSocket request")
)

// statusFor maps a request-path error to the status the client gets.
// Classification uses errors.Is/As only, so wrapping never breaks it.
func statusFor(err error) int {
	var dnsErr *net.DNSError
	var le *limit.Error
	switch {
	case errors.Is(err, errBadRequest), errors.Is(err, errNotProxy), errors.Is(err, acl.ErrBadTarget):
		return http.StatusBadRequest
	case errors.Is(err, errMethod):
		return http.StatusNotImplemented
	case errors.Is(err, errBodyTimeout):
		return http.StatusRequestTimeout
	case errors.Is(err, errAuthRequired):
		return http.StatusProxyAuthRequired
	case errors.Is(err, errThrottled):
		return http.StatusTooManyRequests
	case errors.Is(err, errDenied), errors.Is(err, errNotWebSocket):
		return http.StatusForbidden
	case errors.As(err, &le), errors.Is(err, limit.ErrExceeded), errors.Is(err, errBusy), errors.Is(err, errAuthBusy), errors.Is(err, errShuttingDown):
		return http.StatusServiceUnavailable
	case errors.As(err, &dnsErr):
		if dnsErr.IsTimeout {
			return http.StatusGatewayTimeout
		}
		return http.StatusBadGateway
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT), isTimeout(err):
		return http.StatusGatewayTimeout
	default:
		return http.StatusBadGateway
	}
}

// throttledError refuses a client after too many failed logins; it
// wraps errThrottled and says when to come back (Retry-After).
type throttledError struct {
	retryAfter time.Duration
}

func (e *throttledError) Error() string { return errThrottled.Error() }
func (e *throttledError) Unwrap() error { return errThrottled }

// wait is the time to announce in Retry-After; a nil e says nothing.
func (e *throttledError) wait() time.Duration {
	if e == nil {
		return 0
	}
	return e.retryAfter
}

// result is the outcome of a proxy request: the label values of
// wsegress_tunnels_total and the result key of log lines. The names are
// promises to dashboards: add, never rename.
type result uint8

const (
	resultOK result = iota
	resultDenied
	resultAuthFailed
	resultLimited
	resultDialError
	resultTimeout
	resultBadRequest
	resultError
	// resultNotWebSocket: a tunnel or request refused by --websocket-only,
	// a websocket_only rule or --sni-check (issue 15).
	resultNotWebSocket
	// resultWouldDeny: the ACL (report rule, --acl-mode report) or the
	// first-bytes check (--inspect-mode report) would have refused it; it
	// went on.
	resultWouldDeny
	numResults
)

var resultNames = [numResults]string{"ok", "denied", "auth_failed", "limited", "dial_error", "timeout", "bad_request", "error",
	"not_websocket", "would_deny"}

func (r result) String() string { return resultNames[r] }

// resultOf names the outcome of a request refused with status for err.
func resultOf(status int, err error) result {
	if errors.Is(err, errNotWebSocket) {
		return resultNotWebSocket
	}
	return resultFor(status)
}

// resultFor names the outcome of a refused request for metrics and logs.
func resultFor(status int) result {
	switch status {
	case http.StatusBadRequest, http.StatusNotImplemented, http.StatusRequestHeaderFieldsTooLarge:
		return resultBadRequest
	case http.StatusProxyAuthRequired, http.StatusTooManyRequests:
		return resultAuthFailed
	case http.StatusForbidden:
		return resultDenied
	case http.StatusServiceUnavailable:
		return resultLimited
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return resultTimeout
	case http.StatusBadGateway:
		return resultDialError
	default:
		return resultError
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// publicText is the short body sent with an error status. It never
// includes internal details such as resolver or dial error strings.
func publicText(status int, err error) string {
	switch status {
	case http.StatusBadRequest:
		var msg string
		if errors.Is(err, acl.ErrBadTarget) || errors.Is(err, errBadRequest) || errors.Is(err, errNotProxy) {
			msg = err.Error()
		}
		if msg == "" {
			return "bad request\n"
		}
		return "bad request: " + msg + "\n"
	case http.StatusForbidden:
		if errors.Is(err, errNotWebSocket) {
			return "only WebSocket requests naming their target are allowed by proxy policy\n"
		}
		return "destination denied by proxy policy\n"
	case http.StatusProxyAuthRequired:
		return "proxy authentication required\n"
	case http.StatusTooManyRequests:
		return "too many failed authentication attempts; try again later\n"
	case http.StatusServiceUnavailable:
		var le *limit.Error
		if errors.As(err, &le) {
			return "proxy busy: " + le.Kind.String() + " tunnel limit reached\n"
		}
		if errors.Is(err, errBusy) {
			return "proxy busy: pending limit reached\n"
		}
		if errors.Is(err, errShuttingDown) {
			return "proxy shutting down\n"
		}
		if errors.Is(err, errAuthBusy) {
			return "proxy busy: too many logins being checked; try again shortly\n"
		}
		return "proxy busy\n"
	case http.StatusBadGateway:
		return "cannot reach destination\n"
	case http.StatusGatewayTimeout:
		return "destination did not answer in time\n"
	case http.StatusNotImplemented:
		return "method not implemented by this proxy\n"
	case http.StatusRequestTimeout:
		return "request body stalled\n"
	default:
		return http.StatusText(status) + "\n"
	}
}
