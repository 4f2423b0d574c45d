// Package listen wraps the proxy's net.Listener: it honours PROXY protocol
// headers (v1 and v2) from trusted balancers only, and caps client
// connections, in all and per client, from the moment of accept. The caps
// live in a Caps, which several Listeners can share so that they hold for
// all of them. It knows nothing of HTTP; the proxy serves the conns it
// returns.
package listen
