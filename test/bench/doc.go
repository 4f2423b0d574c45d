// Command bench measures what a CONNECT proxy costs a WebSocket workload:
// idle tunnels (fds and RSS each), the CONNECT path (tunnels per proxy CPU
// second, setup latency), bulk bytes through one tunnel, and small-message
// echo on held tunnels, for wsegress, Squid, tinyproxy, a naive goproxy relay
// and a direct connection, all on loopback. See issue 7 for the targets.
package main
