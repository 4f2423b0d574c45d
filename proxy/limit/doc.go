// Package limit bounds tunnels: a Limiter hands out slots under a global
// limit and per-user, per-client-IP and per-host limits at once, queueing
// in arrival order, and a Gate bounds requests still being set up. Usage
// snapshots feed the pool metrics.
package limit
