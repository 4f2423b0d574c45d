package acl

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Rule names of decisions not made by a configured rule. They are stable, for
// metrics labels and log queries.
const (
	RuleDefault   = "default"            // no rule matched: Config.Default decided
	RuleNonPublic = "builtin:non-public" // the address is not public and no rule may reach it
	RuleSelf      = "builtin:self"       // the address is the proxy's own listener (a loop)
)

// Config is the written policy.
type Config struct {
	// Default decides when no rule matches. "web" allows ports 80 and 443
	// to public addresses; "deny" denies. Empty means "web" if no rule is
	// an allow rule (so --deny rules carve holes in the web default: a
	// blocklist) and "deny" as soon as one rule allows (an allowlist).
	// Either way non-public addresses are denied unless a rule names them.
	Default string `yaml:"default"`
	// Rules are tried in order; the first allow or deny rule that matches
	// decides (a report rule is noted and passed over).
	Rules []RuleSpec `yaml:"rules"`
	// Mode is "enforce" (empty means enforce) or "report" (--acl-mode
	// report): every deny of a rule or of the default becomes a report, as
	// if the rule's action were report, and the tunnel goes on. The
	// built-in denies (non-public addresses, the proxy's own listeners) are
	// enforced in both modes: a report mode that let tunnels reach private
	// ranges or loop into the proxy would make trying a rule set a hole.
	Mode string `yaml:"mode"`
}

// The values of Config.Mode.
const (
	ModeEnforce = "enforce"
	ModeReport  = "report"
)

// Options are facts about the running proxy, not part of the written policy.
type Options struct {
	// SelfAddrs are the proxy's own listening addresses (ln.Addr(), with
	// the real port). A tunnel to one of them would loop, so it is always
	// denied; no rule overrides that. An unspecified address (0.0.0.0 or
	// ::) stands for every loopback address, the unspecified address and
	// LocalAddrs, with that port.
	SelfAddrs []netip.AddrPort
	// LocalAddrs are the host's interface addresses (see LocalAddrs), used
	// only with an unspecified SelfAddrs entry. If nil, only loopback and
	// unspecified destinations count as self for such an entry.
	LocalAddrs []netip.Addr
}

// Policy is a compiled Config. It is immutable and safe for concurrent use;
// reloading means compiling a new Policy.
type Policy struct {
	rules   []*rule
	specs   []RuleSpec // as written, with Name filled in
	web     bool       // the effective default is "web"
	report  bool       // Config.Mode is report
	self    []netip.AddrPort
	selfAny []uint16 // ports of unspecified self addresses
	local   []netip.Addr
}

// Compile validates cfg and opts and compiles them into a Policy. It reports
// every problem at once (errors.Join), each naming the rule and suggesting a
// fix. Besides malformed rules it rejects two rules that are identical (the
// second could never match) and two rules with the same name (names label
// decisions and metrics, so they must tell rules apart).
func Compile(cfg Config, opts Options) (*Policy, error) {
	var errs []error
	p := &Policy{}
	switch cfg.Default {
	case "", "web", "deny":
	default:
		errs = append(errs, fmt.Errorf(`default %q: write "web" (ports 80 and 443 to public addresses), "deny", or leave it empty`, cfg.Default))
	}
	switch cfg.Mode {
	case "", ModeEnforce:
	case ModeReport:
		p.report = true
	default:
		errs = append(errs, fmt.Errorf(`mode %q: write "enforce" or "report"`, cfg.Mode))
	}
	names := make(map[string]int)
	same := make(map[string]int)
	allows := false
	for i, s := range cfg.Rules {
		label := fmt.Sprintf("rule %d %q", i+1, redact(s.Target))
		r, probs := compileRule(s)
		for _, m := range probs {
			errs = append(errs, fmt.Errorf("%s: %s", label, m))
		}
		if len(probs) > 0 {
			continue
		}
		if j, ok := same[r.identity()]; ok {
			errs = append(errs, fmt.Errorf("%s: same as rule %d, so it can never match; remove it", label, j))
			continue
		}
		same[r.identity()] = i + 1
		if j, ok := names[r.name]; ok {
			errs = append(errs, fmt.Errorf("%s: name %q is already used by rule %d; give each rule its own name", label, r.name, j))
			continue
		}
		names[r.name] = i + 1
		allows = allows || r.action == Allow
		p.rules = append(p.rules, r)
		spec := s
		spec.Name = r.name
		spec.Users, spec.Groups = slices.Clone(s.Users), slices.Clone(s.Groups)
		p.specs = append(p.specs, spec)
	}
	for _, a := range opts.SelfAddrs {
		switch {
		case !a.IsValid():
			errs = append(errs, fmt.Errorf("self address %v is not valid", a))
		case a.Port() == 0:
			errs = append(errs, fmt.Errorf("self address %v has port 0; pass the listener's actual address (ln.Addr())", a))
		case a.Addr().IsUnspecified():
			p.selfAny = append(p.selfAny, a.Port())
		default:
			p.self = append(p.self, netip.AddrPortFrom(a.Addr().Unmap().WithZone(""), a.Port()))
		}
	}
	for _, a := range opts.LocalAddrs {
		p.local = append(p.local, a.Unmap().WithZone(""))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	p.web = cfg.Default == "web" || cfg.Default == "" && !allows
	return p, nil
}

// Rules returns the rules as written, in order, with Name filled in with the
// default name where it was empty. The caller may modify the result.
func (p *Policy) Rules() []RuleSpec {
	out := slices.Clone(p.specs)
	for i := range out {
		out[i].Users, out[i].Groups = slices.Clone(out[i].Users), slices.Clone(out[i].Groups)
	}
	return out
}

// Default returns the effective default, "web" or "deny" (see
// Config.Default).
func (p *Policy) Default() string {
	if p.web {
		return "web"
	}
	return "deny"
}

// Mode returns the effective mode, ModeEnforce or ModeReport.
func (p *Policy) Mode() string {
	if p.report {
		return ModeReport
	}
	return ModeEnforce
}

// Subject is who asks for the tunnel. The zero value is an anonymous client,
// which only rules without users and groups apply to.
type Subject struct {
	User   string
	Groups []string
}

// Decision is the outcome of Decide.
type Decision struct {
	// Allow reports whether the tunnel may go on.
	Allow bool
	// Report is set, with Allow, when the policy would deny the tunnel but
	// the deny is only reported: a report rule matched, or Config.Mode is
	// report. Rule then names the first rule that would deny (or
	// RuleDefault), and the proxy logs and counts result="would_deny".
	Report bool
	// Rule is the name of the deciding rule, or RuleDefault, RuleNonPublic
	// or RuleSelf; for a Report, the rule that would deny.
	Rule string
	// Reason is a sentence for logs and `wsegress explain`.
	Reason string
	// WebSocketOnly is set when the allow rule that lets the tunnel go on
	// has websocket_only: the proxy must inspect its first bytes.
	WebSocketOnly bool
}

// Result is "allow", "deny" or "would_deny", the spelling of logs and of
// `wsegress explain`.
func (d Decision) Result() string {
	switch {
	case d.Report:
		return "would_deny"
	case d.Allow:
		return "allow"
	}
	return "deny"
}

// Decide decides whether the proxy may connect to ip on behalf of who, where
// t is the requested target (a name or an IP literal) and ip the address that
// would be dialed: the address of an IP-literal target, or one address a name
// resolved to. Rules are tried in order and the first match decides, then the
// default. ip is checked before that: the proxy's own listeners are denied,
// and a non-public ip (see IsPublic) is reached only through an allow rule
// that names it, by address or CIDR, or by the exact host name t.Host;
// wildcard and domain rules and the default never reach it. An invalid ip is
// denied unless t is an IP literal, whose address is then used. A report
// rule, and in report mode any deny rule or deny of the default, turns a
// deny into Allow with Report set; the built-in denies stay denies.
//
// Decide is pure: no DNS, no I/O, no logging.
func (p *Policy) Decide(t Target, ip netip.Addr, who Subject) Decision {
	if p == nil {
		return Decision{Rule: RuleDefault, Reason: "no policy is configured"}
	}
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() {
		a, ok := t.Addr()
		if !ok {
			return Decision{Rule: RuleNonPublic, Reason: fmt.Sprintf("no address to check for %s", t.Host)}
		}
		ip = a
	}
	if p.isSelf(ip, t.Port) {
		return Decision{Rule: RuleSelf, Reason: fmt.Sprintf(
			"%s is this proxy's own listening address; a tunnel to it would loop", netip.AddrPortFrom(ip, t.Port))}
	}
	public, why := IsPublic(ip)
	return p.decide(t, ip, public, why, who)
}

// DecideName decides when the address is not known, because an upstream
// proxy resolves the name: only host-name rules and the default apply, IP and
// CIDR rules never match a name, and the built-in deny of non-public
// addresses cannot be applied, except to "localhost" and names under
// ".localhost", which always mean loopback (RFC 6761). That is a documented
// limit of running behind an upstream proxy. For an IP-literal target
// DecideName equals Decide(t, addr, who).
func (p *Policy) DecideName(t Target, who Subject) Decision {
	if a, ok := t.Addr(); ok {
		return p.Decide(t, a, who)
	}
	if p == nil {
		return Decision{Rule: RuleDefault, Reason: "no policy is configured"}
	}
	public, why := true, ""
	if t.Host == "localhost" || strings.HasSuffix(t.Host, ".localhost") {
		public, why = false, "loopback (RFC 6761 localhost)"
	}
	return p.decide(t, netip.Addr{}, public, why, who)
}

// decide runs the rules and the default; ip is invalid when unknown.
func (p *Policy) decide(t Target, ip netip.Addr, public bool, why string, who Subject) Decision {
	var wild *rule   // first wildcard allow that matched but cannot reach a non-public ip
	var would string // reason of the first reported deny, if any
	var wouldRule string
	pass := func(d Decision) Decision {
		if wouldRule == "" {
			return d
		}
		return Decision{Allow: true, Report: true, Rule: wouldRule, WebSocketOnly: d.WebSocketOnly,
			Reason: fmt.Sprintf("%s; reported, not enforced: %s", would, d.Reason)}
	}
	for _, r := range p.rules {
		if !r.match(t, ip, who) {
			continue
		}
		switch {
		case r.action == Report || r.action == Deny && p.report:
			if wouldRule == "" {
				wouldRule, would = r.name, r.reason(t, ip, who)
			}
			continue
		case r.action == Deny:
			return Decision{Rule: r.name, Reason: r.reason(t, ip, who)}
		case public:
			return pass(Decision{Allow: true, Rule: r.name, Reason: r.reason(t, ip, who), WebSocketOnly: r.wsOnly})
		case r.kind == hostIP:
			return pass(Decision{Allow: true, Rule: r.name, WebSocketOnly: r.wsOnly, Reason: fmt.Sprintf(
				"%s; %s is %s, allowed because this rule names the address", r.reason(t, ip, who), ip, why)})
		case r.kind == hostExact:
			return pass(Decision{Allow: true, Rule: r.name, WebSocketOnly: r.wsOnly, Reason: fmt.Sprintf(
				"%s; %s, allowed because this rule names the exact host", r.reason(t, ip, who), what(t, ip, why))})
		}
		if wild == nil {
			wild = r
		}
	}
	if !public {
		reason := what(t, ip, why) + "; only an allow rule naming this address or an exact host name may reach it"
		if wild != nil {
			reason += fmt.Sprintf(" (rule %q matched, but a wildcard or domain rule cannot)", wild.name)
		}
		return Decision{Rule: RuleNonPublic, Reason: reason}
	}
	unchecked := ""
	if !ip.IsValid() {
		unchecked = " (address not checked: resolved upstream)"
	}
	var d Decision
	switch {
	case !p.web:
		d = Decision{Rule: RuleDefault, Reason: "no rule matched; the default denies"}
	case t.Port == 80 || t.Port == 443:
		return pass(Decision{Allow: true, Rule: RuleDefault, Reason: fmt.Sprintf(
			"no rule matched; the web default allows port %d to public addresses%s", t.Port, unchecked)})
	default:
		d = Decision{Rule: RuleDefault, Reason: fmt.Sprintf(
			"no rule matched; the web default allows only ports 80 and 443, not %d", t.Port)}
	}
	if !p.report {
		return d
	}
	if wouldRule == "" {
		wouldRule, would = d.Rule, d.Reason
	}
	return Decision{Allow: true, Report: true, Rule: wouldRule, Reason: would + "; reported, not enforced: the ACL is in report mode"}
}

// what describes the destination: "127.0.0.1 is loopback" or
// "db.example resolved to 10.0.0.5, which is RFC 1918 private".
func what(t Target, ip netip.Addr, why string) string {
	switch {
	case !ip.IsValid():
		return fmt.Sprintf("%s is %s", t.Host, why)
	case t.Host == ip.String():
		return fmt.Sprintf("%s is %s", ip, why)
	}
	return fmt.Sprintf("%s resolved to %s, which is %s", t.Host, ip, why)
}
