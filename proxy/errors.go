package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"syscall"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy/limit"
)

// Sentinel errors of the request path. Every refusal wraps one of them (or
// an error the standard library classifies, such as a dial timeout), and
// statusFor maps them to an HTTP status in one place.
var (
	// ErrBadRequest marks malformed proxy requests (400).
	ErrBadRequest = errors.New("bad request")
	// ErrMethod marks methods the proxy does not serve (501).
	ErrMethod = errors.New("method not implemented")
	// ErrNotProxy marks origin-form requests sent to the proxy itself (400).
	ErrNotProxy = errors.New("not a proxy request")
	// ErrAuthRequired marks missing or wrong proxy credentials (407).
	ErrAuthRequired = errors.New("proxy authentication required")
	// ErrThrottled marks a client refused after too many failed logins (429).
	ErrThrottled = errors.New("too many failed authentication attempts")
	// ErrDenied marks a destination the ACL refuses (403).
	ErrDenied = errors.New("destination denied")
	// ErrBusy marks a request refused because too many handshakes are in
	// progress (--max-pending) (503).
	ErrBusy = errors.New("too many pending requests")
	// ErrShuttingDown marks a request that arrived while draining (503).
	ErrShuttingDown = errors.New("proxy shutting down")
	// ErrUpstream marks a target that answered an upgrade with garbage (502).
	ErrUpstream = errors.New("bad response from target")
)

// statusFor maps a request-path error to the status the client gets.
// Classification uses errors.Is/As only, so wrapping never breaks it.
func statusFor(err error) int {
	var dnsErr *net.DNSError
	var le *limit.Error
	switch {
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrNotProxy), errors.Is(err, acl.ErrBadTarget):
		return http.StatusBadRequest
	case errors.Is(err, ErrMethod):
		return http.StatusNotImplemented
	case errors.Is(err, ErrAuthRequired):
		return http.StatusProxyAuthRequired
	case errors.Is(err, ErrThrottled):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrDenied):
		return http.StatusForbidden
	case errors.As(err, &le), errors.Is(err, limit.ErrExceeded), errors.Is(err, ErrBusy), errors.Is(err, ErrShuttingDown):
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

// resultFor names the outcome of a refused request for metrics and logs.
func resultFor(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusNotImplemented, http.StatusRequestHeaderFieldsTooLarge:
		return resultBadRequest
	case http.StatusProxyAuthRequired, http.StatusTooManyRequests:
		return resultAuthFailed
	case http.StatusForbidden:
		return resultDenied
	case http.StatusServiceUnavailable:
		return resultLimited
	case http.StatusGatewayTimeout:
		return resultTimeout
	case http.StatusBadGateway:
		return resultDialError
	default:
		return resultError
	}
}

// Results, the label values of wsegress_tunnels_total.
const (
	resultOK         = "ok"
	resultDenied     = "denied"
	resultAuthFailed = "auth_failed"
	resultLimited    = "limited"
	resultDialError  = "dial_error"
	resultTimeout    = "timeout"
	resultBadRequest = "bad_request"
	resultError      = "error"
)

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
		if errors.Is(err, acl.ErrBadTarget) || errors.Is(err, ErrBadRequest) || errors.Is(err, ErrNotProxy) {
			msg = err.Error()
		}
		if msg == "" {
			return "bad request\n"
		}
		return "bad request: " + msg + "\n"
	case http.StatusForbidden:
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
		if errors.Is(err, ErrBusy) {
			return "proxy busy: pending limit reached\n"
		}
		if errors.Is(err, ErrShuttingDown) {
			return "proxy shutting down\n"
		}
		return "proxy busy\n"
	case http.StatusBadGateway:
		return "cannot reach destination\n"
	case http.StatusGatewayTimeout:
		return "destination did not answer in time\n"
	case http.StatusNotImplemented:
		return "method not implemented by this proxy\n"
	default:
		return http.StatusText(status) + "\n"
	}
}
