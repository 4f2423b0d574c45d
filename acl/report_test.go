package acl

import (
	"net/netip"
	"strings"
	"testing"
)

func TestDecideReport(t *testing.T) {
	report := func(target string) RuleSpec { return RuleSpec{Action: "report", Target: target} }
	wsOnly := func(target string) RuleSpec { return RuleSpec{Action: "allow", Target: target, WebSocketOnly: true} }
	reportMode := func(c Config) Config { c.Mode = ModeReport; return c }
	for _, tc := range []struct {
		name   string
		cfg    Config
		target string
		ip     string
		want   string // Decision.Result()
		rule   string
		reason string
		wsOnly bool
	}{
		{name: "report rule then allow", cfg: rules(report("*.example.com:443"), allow("*:443")),
			target: "a.example.com:443", ip: pub4, want: "would_deny", rule: "report *.example.com:443", reason: "reported, not enforced: host a.example.com matched *:443"},
		{name: "report rule then default web", cfg: rules(report("a.example.com")),
			target: "a.example.com:443", ip: pub4, want: "would_deny", rule: "report a.example.com", reason: "web default allows port 443"},
		{name: "report rule does not open the default deny", cfg: Config{Default: "deny", Rules: []RuleSpec{report("a.example.com")}},
			target: "a.example.com:443", ip: pub4, want: "deny", rule: RuleDefault},
		{name: "report rule does not open a later deny", cfg: rules(report("a.example.com"), deny("*:443")),
			target: "a.example.com:443", ip: pub4, want: "deny", rule: "deny *:443"},
		{name: "report rule not matching", cfg: rules(report("b.example.com"), allow("*:443")),
			target: "a.example.com:443", ip: pub4, want: "allow", rule: "allow *:443"},
		{name: "report rule to non-public", cfg: rules(report("db.internal")),
			target: "db.internal:443", ip: "10.0.0.5", want: "deny", rule: RuleNonPublic},

		{name: "report mode deny rule", cfg: reportMode(rules(deny("a.example.com"), allow("*:443"))),
			target: "a.example.com:443", ip: pub4, want: "would_deny", rule: "deny a.example.com"},
		{name: "report mode default deny", cfg: reportMode(Config{Default: "deny"}),
			target: "a.example.com:443", ip: pub4, want: "would_deny", rule: RuleDefault, reason: "report mode"},
		{name: "report mode web default port", cfg: reportMode(Config{}),
			target: "a.example.com:22", ip: pub4, want: "would_deny", rule: RuleDefault, reason: "not 22"},
		{name: "report mode first deny is named", cfg: reportMode(rules(deny("a.example.com"), deny("*:443"))),
			target: "a.example.com:443", ip: pub4, want: "would_deny", rule: "deny a.example.com"},
		{name: "report mode allow", cfg: reportMode(rules(allow("*:443"))),
			target: "a.example.com:443", ip: pub4, want: "allow", rule: "allow *:443"},
		{name: "report mode keeps non-public", cfg: reportMode(rules(deny("db.internal"))),
			target: "db.internal:443", ip: "10.0.0.5", want: "deny", rule: RuleNonPublic},
		{name: "report mode keeps non-public after wildcard", cfg: reportMode(rules(allow("*.internal:443"))),
			target: "db.internal:443", ip: "10.0.0.5", want: "deny", rule: RuleNonPublic},
		{name: "report mode keeps loopback literal", cfg: reportMode(Config{}),
			target: "127.0.0.1:443", want: "deny", rule: RuleNonPublic},
		{name: "report mode deny then rule naming the address", cfg: reportMode(rules(deny("*.internal"), allow("10.0.0.0/8"))),
			target: "db.internal:443", ip: "10.0.0.5", want: "would_deny", rule: "deny *.internal", reason: "allowed because this rule names the address"},

		{name: "websocket_only carried", cfg: rules(wsOnly("*.example.com:443")),
			target: "a.example.com:443", ip: pub4, want: "allow", rule: "allow *.example.com:443", wsOnly: true},
		{name: "websocket_only carried through a report", cfg: rules(report("a.example.com"), wsOnly("*.example.com:443")),
			target: "a.example.com:443", ip: pub4, want: "would_deny", rule: "report a.example.com", wsOnly: true},
		{name: "websocket_only not on other rules", cfg: rules(wsOnly("*.example.com:443"), allow("*:443")),
			target: "a.other.com:443", ip: pub4, want: "allow", rule: "allow *:443"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compile(tc.cfg, Options{})
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			tg, err := ParseTarget(tc.target)
			if err != nil {
				t.Fatalf("ParseTarget(%q): %v", tc.target, err)
			}
			ip, _ := tg.Addr()
			if tc.ip != "" {
				ip = netip.MustParseAddr(tc.ip)
			}
			d := p.Decide(tg, ip, Subject{})
			if d.Result() != tc.want || d.Rule != tc.rule || !strings.Contains(d.Reason, tc.reason) || d.WebSocketOnly != tc.wsOnly {
				t.Errorf("Decide(%v, %v) = %s %+v; want %s by %q, reason containing %q, WebSocketOnly %v",
					tg, ip, d.Result(), d, tc.want, tc.rule, tc.reason, tc.wsOnly)
			}
			if d.Report && !d.Allow {
				t.Errorf("Decide = %+v: a report lets the tunnel go on, so Allow must be set", d)
			}
		})
	}
}

// TestSelfInReportMode: the loop protection is never only reported.
func TestSelfInReportMode(t *testing.T) {
	self := netip.MustParseAddr("127.0.0.1")
	p, err := Compile(Config{Mode: ModeReport, Rules: []RuleSpec{allow("127.0.0.1")}}, Options{SelfAddrs: []netip.AddrPort{netip.AddrPortFrom(self, 3128)}})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	tg, _ := ParseTarget("127.0.0.1:3128")
	if d := p.Decide(tg, self, Subject{}); d.Allow || d.Rule != RuleSelf {
		t.Errorf("Decide(self) in report mode = %+v; want a deny by %q", d, RuleSelf)
	}
}

func TestCompileReportErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Mode: "audit"}, `mode "audit": write "enforce" or "report"`},
		{Config{Rules: []RuleSpec{{Action: "deny", Target: "a.example", WebSocketOnly: true}}}, "websocket_only applies to the tunnels an allow rule lets through; remove it from this deny rule"},
		{Config{Rules: []RuleSpec{{Action: "Report", Target: "a.example"}}}, `write "report"`},
	} {
		if _, err := Compile(tc.cfg, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Compile(%+v) error = %v; want one containing %q", tc.cfg, err, tc.want)
		}
	}
	p, err := Compile(Config{Mode: ModeReport, Rules: []RuleSpec{{Action: "report", Target: "a.example"}, {Action: "deny", Target: "a.example"}}}, Options{})
	if err != nil {
		t.Fatalf("Compile(report and deny of the same target): %v; want nil, they differ", err)
	}
	if p.Mode() != ModeReport || p.Rules()[0].Name != "report a.example" {
		t.Errorf("Mode() = %q, first rule %q; want report, \"report a.example\"", p.Mode(), p.Rules()[0].Name)
	}
}
