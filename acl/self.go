package acl

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// isSelf reports whether dialing ip:port would reach this proxy.
func (p *Policy) isSelf(ip netip.Addr, port uint16) bool {
	for _, s := range p.self {
		// Linux delivers a connection to 0.0.0.0 or :: to a local listener.
		if s.Port() == port && (s.Addr() == ip || ip.IsUnspecified()) {
			return true
		}
	}
	for _, sp := range p.selfAny {
		if sp == port && (ip.IsLoopback() || ip.IsUnspecified() || slices.Contains(p.local, ip)) {
			return true
		}
	}
	return false
}

// LocalAddrs returns the addresses of the host's network interfaces, to fill
// Options.LocalAddrs when the proxy listens on an unspecified address. Unlike
// the rest of the package it does I/O, once, at start-up or reload.
func LocalAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip, ok := netip.AddrFromSlice(n.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}
