package proxy

// Log keys: users' log pipelines parse these, so they are fixed names.
const (
	keyAddr      = "addr"
	keyClient    = "client"
	keyUser      = "user"
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
)
