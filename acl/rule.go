package acl

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Action is what a rule does when it matches.
type Action int

// The zero Action is Deny, so a forgotten field fails closed.
const (
	Deny Action = iota
	Allow
	// Report marks what a deny rule would deny without denying it: a
	// matching report rule is noted in the Decision (Report, Rule) and the
	// rules after it decide, so adding one never changes what passes.
	Report
)

// String returns "allow", "deny" or "report", the spelling of
// RuleSpec.Action.
func (a Action) String() string {
	switch a {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	case Report:
		return "report"
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// ParseAction parses "allow", "deny" or "report".
func ParseAction(s string) (Action, error) {
	switch s {
	case "allow":
		return Allow, nil
	case "deny":
		return Deny, nil
	case "report":
		return Report, nil
	}
	if l := strings.ToLower(strings.TrimSpace(s)); l == "allow" || l == "deny" || l == "report" {
		return Deny, fmt.Errorf("unknown action %q; write %q", s, l)
	}
	return Deny, fmt.Errorf("unknown action %q; write \"allow\", \"deny\" or \"report\"", s)
}

// RuleSpec is the written form of a rule, as in the YAML config file and the
// --allow/--deny flags (which set only Action and Target).
type RuleSpec struct {
	// Name labels the rule in decisions, logs and metrics. Empty means
	// "<action> <target>", e.g. "allow *.example.com:443". Names are unique
	// within a Config.
	Name string `yaml:"name"`
	// Action is "allow", "deny" or "report" (see Report).
	Action string `yaml:"action"`
	// Target is a host pattern or an IP/CIDR, optionally followed by
	// :ports (a port, a list and/or ranges: ":443", ":80,443",
	// ":8000-9000"); no ports means any port. Host patterns:
	// "api.example.com" (exactly that host), "*.example.com" (strict
	// subdomains, any depth), ".example.com" (the domain and its
	// subdomains), "*" (any host; needs ports). Addresses: "127.0.0.1",
	// "203.0.113.0/24", "[2001:db8::/32]:443" (IPv6 in brackets). Hosts
	// are written in canonical form: lowercase, punycode, no trailing dot.
	// Address rules match the dialed address, also of a name that
	// resolved to it. Only an allow rule with an address, a CIDR or an
	// exact host name reaches a non-public address (see IsPublic); a
	// wildcard or domain rule could be pointed anywhere by whoever controls
	// a subdomain's DNS, so it only reaches public addresses.
	Target string `yaml:"target"`
	// Users, if non-empty, scopes the rule to these user names.
	Users []string `yaml:"users"`
	// Groups, if non-empty, scopes the rule to members of these groups. With
	// both Users and Groups empty the rule applies to everyone, including
	// anonymous clients; otherwise to a listed user or a member of a
	// listed group.
	Groups []string `yaml:"groups"`
	// WebSocketOnly, on an allow rule, requires the tunnels it allows to
	// carry a WebSocket handshake or a TLS ClientHello naming the target
	// (see Decision.WebSocketOnly). Only allow rules may set it.
	WebSocketOnly bool `yaml:"websocket_only"`
}

// hostKind is the kind of a rule's host part.
type hostKind int

const (
	hostAny    hostKind = iota // "*"
	hostExact                  // "api.example.com"
	hostSub                    // "*.example.com": strict subdomains
	hostDomain                 // ".example.com": the domain and its subdomains
	hostIP                     // "10.0.0.0/8", "127.0.0.1": matches the dialed address
)

type portRange struct{ lo, hi uint16 }

// rule is a compiled RuleSpec.
type rule struct {
	name      string
	target    string
	action    Action
	kind      hostKind
	host      string       // hostExact: the name; hostSub, hostDomain: the domain
	suffix    string       // hostSub, hostDomain: "." + host
	prefix    netip.Prefix // hostIP
	ports     []portRange  // nil: any port
	portsText string       // the ports as written, for reasons
	users     []string
	groups    []string
	wsOnly    bool
}

// compileRule compiles one spec; it returns every problem found.
func compileRule(s RuleSpec) (*rule, []string) {
	var probs []string
	r := &rule{target: s.Target, users: slices.Clone(s.Users), groups: slices.Clone(s.Groups), wsOnly: s.WebSocketOnly}
	a, err := ParseAction(s.Action)
	if err != nil {
		probs = append(probs, err.Error())
	}
	r.action = a
	if s.WebSocketOnly && err == nil && a != Allow {
		probs = append(probs, fmt.Sprintf("websocket_only applies to the tunnels an allow rule lets through; remove it from this %s rule", a))
	}
	if msg := r.parseTarget(s.Target); msg != "" {
		probs = append(probs, msg)
	}
	for _, u := range s.Users {
		if strings.TrimSpace(u) == "" {
			probs = append(probs, "empty user name in users; remove it")
		}
	}
	for _, g := range s.Groups {
		if strings.TrimSpace(g) == "" {
			probs = append(probs, "empty group name in groups; remove it")
		}
	}
	r.name = s.Name
	switch {
	case s.Name == "":
		r.name = r.action.String() + " " + s.Target
	case strings.TrimSpace(s.Name) == "":
		probs = append(probs, "name is blank; remove it to use the default or give a real name")
	}
	return r, probs
}

// parseTarget fills the host and port parts of r from a rule target and
// returns a message suggesting the fix when the target is not acceptable.
func (r *rule) parseTarget(t string) string {
	switch {
	case t == "":
		return `empty target; write a host pattern or an address, e.g. "*.example.com:443" or "203.0.113.0/24"`
	case strings.TrimSpace(t) != t || strings.ContainsAny(t, " \t\r\n"):
		return fmt.Sprintf("spaces in target; write %q", strings.Join(strings.Fields(t), ""))
	case strings.Contains(t, "://"):
		_, rest, _ := strings.Cut(t, "://")
		rest, _, _ = strings.Cut(rest, "/")
		return fmt.Sprintf("a rule names a host, not a URL; write %q", rest)
	case strings.Contains(t, "@"):
		return "userinfo (user@) is not part of a rule target; users go in users:"
	}
	host, ports := t, ""
	if t[0] == '[' {
		end := strings.IndexByte(t, ']')
		if end < 0 {
			return "missing ']' after the IPv6 address"
		}
		host, ports = t[1:end], t[end+1:]
		if ports != "" && ports[0] != ':' {
			return fmt.Sprintf("unexpected %q after ']'; ports follow a colon, e.g. [2001:db8::/32]:443", ports)
		}
		if msg := r.parseIP(host, true); msg != "" {
			return msg
		}
	} else {
		switch strings.Count(t, ":") {
		case 0:
		case 1:
			i := strings.IndexByte(t, ':')
			host, ports = t[:i], t[i:]
		default:
			if _, err := netip.ParsePrefix(t); err == nil || isIPv6(t) {
				return fmt.Sprintf("an IPv6 address goes in brackets; write %q (ports after it: %q)", "["+t+"]", "["+t+"]:443")
			}
			return `too many colons; IPv6 goes in brackets, e.g. "[2001:db8::/32]:443"`
		}
		if msg := r.parseHost(host); msg != "" {
			return msg
		}
	}
	if ports != "" {
		r.portsText = ports[1:]
		if msg := r.parsePorts(ports[1:]); msg != "" {
			return msg
		}
	}
	if r.kind == hostAny && r.ports == nil {
		return `a lone "*" matches everything; write a port rule such as "*:443" (or "*:1-65535" for every port), or set default: deny`
	}
	return ""
}

func isIPv6(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6()
}

// parseHost parses an unbracketed host pattern, IPv4 address or CIDR.
func (r *rule) parseHost(h string) string {
	switch {
	case h == "":
		return `empty host; write a host pattern or an address before the ports, e.g. "*:443"`
	case h == "*":
		r.kind = hostAny
		return ""
	case strings.Contains(h, "/"):
		return r.parseIP(h, false)
	}
	if cidr, ok := starOctets(h); ok {
		return fmt.Sprintf("%q is not a host pattern; for addresses write a CIDR such as %q", h, cidr)
	}
	name := h
	switch {
	case strings.HasPrefix(h, "*."):
		r.kind, name = hostSub, h[2:]
	case strings.HasPrefix(h, ".") && !strings.HasPrefix(h, ".."):
		r.kind, name = hostDomain, h[1:]
	default:
		r.kind = hostExact
	}
	if strings.Contains(name, "*") {
		return wildcardAdvice(h)
	}
	c, herr := canonicalHost(name)
	switch {
	case herr != nil && herr.legacy.IsValid():
		return fmt.Sprintf("%q is a non-canonical IPv4 address; write %q", h, herr.legacy.String())
	case herr != nil:
		return fmt.Sprintf("host %q: %s", h, herr.msg)
	case c != name:
		return fmt.Sprintf("host %q is not in canonical form; write %q", h, h[:len(h)-len(name)]+c)
	}
	if a, err := netip.ParseAddr(c); err == nil {
		if r.kind != hostExact {
			return fmt.Sprintf("%q mixes a wildcard with an address; write a CIDR such as %q", h, netip.PrefixFrom(a, a.BitLen()))
		}
		r.kind, r.prefix = hostIP, netip.PrefixFrom(a, a.BitLen())
		return ""
	}
	r.host, r.suffix = c, "."+c
	return ""
}

// wildcardAdvice explains where '*' may go in a host pattern.
func wildcardAdvice(h string) string {
	first, rest, _ := strings.Cut(h, ".")
	switch {
	case strings.HasPrefix(first, "*") && !strings.Contains(h[1:], "*") && strings.Trim(h[1:], ".-") != "":
		d := strings.TrimLeft(h[1:], ".-")
		return fmt.Sprintf(`"*" must be a whole label; write "*.%s" for the subdomains of %s, or ".%s" for %s and its subdomains`, d, d, d, d)
	case strings.Contains(first, "*") && rest != "" && !strings.Contains(rest, "*"):
		return fmt.Sprintf(`a wildcard cannot be part of a label; write "*.%s" to match every subdomain of %s, or list the hosts`, rest, rest)
	}
	return `"*" is allowed only as the whole first label, as in "*.example.com"; list the hosts instead`
}

// starOctets recognises "10.1.*" or "10.1.*.*" and returns the CIDR meant.
func starOctets(h string) (string, bool) {
	parts := strings.Split(h, ".")
	k := slices.Index(parts, "*")
	if k < 1 || len(parts) > 4 {
		return "", false
	}
	var b [4]byte
	for i, p := range parts {
		if i >= k {
			if p != "*" {
				return "", false
			}
			continue
		}
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 || v > 255 || strconv.Itoa(v) != p {
			return "", false
		}
		b[i] = byte(v)
	}
	return netip.PrefixFrom(netip.AddrFrom4(b), 8*k).String(), true
}

// parseIP parses an address or CIDR rule host (the text between brackets
// when bracketed).
func (r *rule) parseIP(h string, bracketed bool) string {
	if strings.Contains(h, "%") {
		return "IPv6 zones are not allowed in rules"
	}
	var p netip.Prefix
	if strings.Contains(h, "/") {
		var err error
		if p, err = netip.ParsePrefix(h); err != nil {
			return fmt.Sprintf(`bad CIDR %q; write an address and a prefix length, e.g. "10.0.0.0/8" or "[2001:db8::/32]"`, h)
		}
	} else {
		a, err := netip.ParseAddr(h)
		if err != nil || a.Zone() != "" {
			return fmt.Sprintf("bad IPv6 address %q", h)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	a, slash := p.Addr(), strings.Contains(h, "/")
	plain := a.String() // canonical text as written in the rule, without brackets
	if slash {
		plain = p.String()
	}
	switch {
	case bracketed && a.Is4():
		return fmt.Sprintf("an IPv4 address is written without brackets; write %q", plain)
	case a.Is4In6() && p.Bits() >= 96:
		return fmt.Sprintf("%q is IPv4-mapped; write the IPv4 form %q", h, ruleAddr(netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked(), slash))
	case p.Bits() == 0:
		return fmt.Sprintf(`%q matches every address and would lift the built-in deny of non-public addresses; name the ranges you need (e.g. "10.0.0.0/8"), or write "*:443" for every public host`, h)
	case p.Masked() != p:
		return fmt.Sprintf("CIDR %q has host bits set; write %q for the network, or %q for the single address",
			h, ruleAddr(p.Masked(), true), ruleAddr(netip.PrefixFrom(a, a.BitLen()), false))
	case plain != h:
		return fmt.Sprintf("%q is not in canonical form; write %q", h, ruleAddr(p, slash))
	}
	r.kind, r.prefix = hostIP, p
	return ""
}

// ruleAddr is how p is written in a rule target: canonical, with the prefix
// length if slash, IPv6 in brackets.
func ruleAddr(p netip.Prefix, slash bool) string {
	t := p.Addr().String()
	if slash {
		t = p.String()
	}
	if p.Addr().Is6() {
		t = "[" + t + "]"
	}
	return t
}

// parsePorts parses a port list such as "443", "80,443" or "8000-9000,443".
func (r *rule) parsePorts(s string) string {
	switch s {
	case "":
		return `empty port list after ':'; remove the ':' to match any port`
	case "*":
		return `"*" is not a port; remove ":*" to match any port`
	}
	for _, e := range strings.Split(s, ",") {
		if e == "" {
			return fmt.Sprintf("empty entry in port list %q; remove the extra comma", s)
		}
		lo, hi, isRange := strings.Cut(e, "-")
		a, msg := parsePort(lo)
		if msg != "" {
			return msg
		}
		b := a
		if isRange {
			if b, msg = parsePort(hi); msg != "" {
				return msg
			}
			if b < a {
				return fmt.Sprintf("port range %q is reversed; write %q", e, hi+"-"+lo)
			}
		}
		r.ports = append(r.ports, portRange{a, b})
	}
	return ""
}
