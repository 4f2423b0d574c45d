package proxy

import "github.com/wsegress/wsegress/proxy/relay"

// Log keys: users' log pipelines parse these, so they are fixed names.
const (
	keyAddr      = "addr"
	keyClient    = "client"
	keyUser      = "user"
	keyAuth      = "auth" // how the user was authenticated: cert, basic or none
	keyTLS       = "tls"
	keyMethod    = "method"
	keyTarget    = "target"
	keyDialed    = "dialed"
	keyStatus    = "status"
	keyResult    = "result"
	keyRule      = "rule"
	keyReason    = "reason"
	keyBytesUp   = "bytes_up"
	keyBytesDown = "bytes_down"
	keyDuration  = "duration"
	keyEnd       = "end"
	keyErr       = "err"
	keyTunnels   = "tunnels"
	keyStack     = "stack"
)

// End reasons of the server's own, beside the relay's (see relay.EndReason):
// they name how a request ended that never reached the relay.
const (
	// endTargetRefused: the target answered an upgrade with a status other
	// than 101; its answer was passed back and the connection closed.
	endTargetRefused relay.EndReason = "target_refused_upgrade"
	// endResponseSent: a plain-HTTP request got its response.
	endResponseSent relay.EndReason = "response_sent"
)
