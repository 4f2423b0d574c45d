package acl

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// match reports whether r applies to target t, dialed address ip (invalid
// when unknown: IP rules then never match) and subject who.
func (r *rule) match(t Target, ip netip.Addr, who Subject) bool {
	if !r.matchPort(t.Port) || !r.matchHost(t, ip) {
		return false
	}
	ok, _ := r.matchSubject(who)
	return ok
}

func (r *rule) matchHost(t Target, ip netip.Addr) bool {
	switch r.kind {
	case hostAny:
		return true
	case hostExact:
		return t.Host == r.host
	case hostSub:
		return len(t.Host) > len(r.suffix) && strings.HasSuffix(t.Host, r.suffix)
	case hostDomain:
		return t.Host == r.host || strings.HasSuffix(t.Host, r.suffix)
	case hostIP:
		return ip.IsValid() && r.prefix.Contains(ip)
	}
	return false
}

func (r *rule) matchPort(port uint16) bool {
	if r.ports == nil {
		return true
	}
	for _, pr := range r.ports {
		if pr.lo <= port && port <= pr.hi {
			return true
		}
	}
	return false
}

// matchSubject reports whether the rule applies to who and, for a scoped
// rule, through what ("user alice", "group ops").
func (r *rule) matchSubject(who Subject) (bool, string) {
	if len(r.users) == 0 && len(r.groups) == 0 {
		return true, ""
	}
	if who.User != "" && slices.Contains(r.users, who.User) {
		return true, "user " + who.User
	}
	for _, g := range who.Groups {
		if g != "" && slices.Contains(r.groups, g) {
			return true, "group " + g
		}
	}
	return false, ""
}

// reason says why r matched, e.g. "host api.example.com matched
// *.example.com:443" or "203.0.113.9 is in 203.0.113.0/24".
func (r *rule) reason(t Target, ip netip.Addr, who Subject) string {
	var s string
	switch {
	case r.kind != hostIP:
		s = fmt.Sprintf("host %s matched %s", t.Host, r.target)
	default:
		subject := ip.String()
		if t.Host != subject {
			subject = fmt.Sprintf("%s resolved to %s, which", t.Host, ip)
		}
		if r.prefix.IsSingleIP() {
			s = fmt.Sprintf("%s matched %s", subject, r.target)
			break
		}
		s = fmt.Sprintf("%s is in %s", subject, r.prefix)
		if r.ports != nil {
			s += fmt.Sprintf(" (port %d in %s)", t.Port, r.portsText)
		}
	}
	if _, via := r.matchSubject(who); via != "" {
		s += " for " + via
	}
	return s
}

// identity is equal for two rules that match exactly the same requests the
// same way as written (same action, target, users and groups).
func (r *rule) identity() string {
	users, groups := slices.Clone(r.users), slices.Clone(r.groups)
	slices.Sort(users)
	slices.Sort(groups)
	return fmt.Sprintf("%v\x00%s\x00%q\x00%q", r.action, r.target, users, groups)
}
