// Package proxy is the wsegress server: it accepts HTTP proxy requests,
// authenticates and authorises them, dials the target (directly or through
// an upstream proxy), and relays bytes verbatim for CONNECT tunnels and
// WebSocket upgrades. Plain HTTP requests are forwarded through goproxy.
package proxy
