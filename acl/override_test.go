package acl

import (
	"net/netip"
	"testing"
)

func TestDecideOverrides(t *testing.T) {
	cidr := rules(allow("10.1.0.0/16:443"))
	single := rules(allow("127.0.0.1:9000"))
	exact := rules(allow("localhost:9000"), allow("intranet.corp.example:443"))
	wild := Config{Default: "web", Rules: []RuleSpec{allow("*.corp.example:443"), allow(".corp.example"), allow("*:443")}}
	wildThenCIDR := rules(allow("*.corp.example:443"), allow("10.0.0.0/8:443"))
	denyFirst := rules(deny("10.1.2.0/24"), allow("10.0.0.0/8"))
	docs := rules(allow("203.0.113.0/24"))
	for _, tc := range []decideCase{
		{name: "cidr allow ip literal", cfg: cidr, target: "10.1.2.3:443",
			allow: true, rule: "allow 10.1.0.0/16:443", reason: "10.1.2.3 is RFC 1918 private, allowed because this rule names the address"},
		{name: "cidr allow resolved name", cfg: cidr, target: "db.corp.example:443", ip: "10.1.2.3",
			allow: true, rule: "allow 10.1.0.0/16:443", reason: "db.corp.example resolved to 10.1.2.3, which is in 10.1.0.0/16"},
		{name: "cidr allow other port", cfg: cidr, target: "10.1.2.3:80",
			rule: RuleNonPublic, reason: "only an allow rule naming this address or an exact host name may reach it"},
		{name: "cidr allow outside", cfg: cidr, target: "10.2.0.1:443", rule: RuleNonPublic},
		{name: "cidr allow mapped", cfg: cidr, target: "[::ffff:10.1.2.3]:443", allow: true, rule: "allow 10.1.0.0/16:443"},
		{name: "single address", cfg: single, target: "127.0.0.1:9000",
			allow: true, rule: "allow 127.0.0.1:9000", reason: "127.0.0.1 matched 127.0.0.1:9000; 127.0.0.1 is loopback, allowed"},
		{name: "single address other port", cfg: single, target: "127.0.0.1:9001", rule: RuleNonPublic,
			reason: "127.0.0.1 is loopback; only an allow rule naming this address or an exact host name may reach it"},
		{name: "single address other loopback", cfg: single, target: "127.0.0.2:9000", rule: RuleNonPublic},
		{name: "exact localhost", cfg: exact, target: "localhost:9000", ip: "127.0.0.1",
			allow: true, rule: "allow localhost:9000", reason: "localhost resolved to 127.0.0.1, which is loopback, allowed because this rule names the exact host"},
		{name: "exact localhost ipv6", cfg: exact, target: "localhost:9000", ip: "::1", allow: true, rule: "allow localhost:9000"},
		{name: "exact localhost other port", cfg: exact, target: "localhost:9001", ip: "127.0.0.1", rule: RuleNonPublic},
		{name: "exact intranet", cfg: exact, target: "intranet.corp.example:443", ip: "10.0.0.5",
			allow: true, rule: "allow intranet.corp.example:443"},
		{name: "exact does not cover address literal", cfg: exact, target: "127.0.0.1:9000", rule: RuleNonPublic},
		{name: "wildcard does not override", cfg: wild, target: "x.corp.example:443", ip: "10.0.0.5", rule: RuleNonPublic,
			reason: `(rule "allow *.corp.example:443" matched, but a wildcard or domain rule cannot)`},
		{name: "domain does not override", cfg: wild, target: "corp.example:443", ip: "10.0.0.5", rule: RuleNonPublic,
			reason: `rule "allow .corp.example" matched`},
		{name: "any host does not override", cfg: wild, target: "evil.example:443", ip: "169.254.169.254", rule: RuleNonPublic,
			reason: `cloud metadata`},
		{name: "any host does not override literal", cfg: wild, target: "127.0.0.1:443", rule: RuleNonPublic},
		{name: "wildcard allows public", cfg: wild, target: "x.corp.example:443", ip: pub4, allow: true, rule: "allow *.corp.example:443"},
		{name: "default does not override", cfg: Config{Default: "web"}, target: "example.com:443", ip: "192.168.0.1", rule: RuleNonPublic},
		{name: "later cidr rule overrides after wildcard", cfg: wildThenCIDR, target: "x.corp.example:443", ip: "10.1.1.1",
			allow: true, rule: "allow 10.0.0.0/8:443"},
		{name: "deny before override", cfg: denyFirst, target: "10.1.2.3:443", rule: "deny 10.1.2.0/24"},
		{name: "override after deny", cfg: denyFirst, target: "10.1.3.3:443", allow: true, rule: "allow 10.0.0.0/8"},
		{name: "documentation range allowed by cidr", cfg: docs, target: "203.0.113.9:443",
			allow: true, rule: "allow 203.0.113.0/24", reason: "203.0.113.9 is in 203.0.113.0/24"},
		{name: "documentation range denied by default", cfg: Config{}, target: "198.51.100.1:443", rule: RuleNonPublic, reason: "TEST-NET-2"},
		{name: "ipv6 ula cidr", cfg: rules(allow("[fd00::/8]:443")), target: "[fd12::1]:443", allow: true, rule: "allow [fd00::/8]:443"},
		{name: "ipv6 loopback", cfg: rules(allow("[::1]:9000")), target: "[::1]:9000", allow: true, rule: "allow [::1]:9000"},
	} {
		t.Run(tc.name, tc.run)
	}
}

func TestDecideSelf(t *testing.T) {
	self := Options{SelfAddrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8080"), netip.MustParseAddrPort("[::1]:8081")}}
	anyV4 := Options{SelfAddrs: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:3128")}, LocalAddrs: []netip.Addr{netip.MustParseAddr("10.0.0.7")}}
	anyV6 := Options{SelfAddrs: []netip.AddrPort{netip.MustParseAddrPort("[::]:3128")}, LocalAddrs: []netip.Addr{netip.MustParseAddr(pub4)}}
	open := rules(allow("127.0.0.0/8"), allow("[::1]"), allow("10.0.0.0/8"), allow("0.0.0.0/8"), allow("[::/128]"), allow("*:1-65535"), allow("localhost"))
	for _, tc := range []decideCase{
		{name: "own address", cfg: open, opts: self, target: "127.0.0.1:8080",
			rule: RuleSelf, reason: "127.0.0.1:8080 is this proxy's own listening address"},
		{name: "own address by name", cfg: open, opts: self, target: "localhost:8080", ip: "127.0.0.1", rule: RuleSelf},
		{name: "own address mapped", cfg: open, opts: self, target: "[::ffff:127.0.0.1]:8080", rule: RuleSelf},
		{name: "own ipv6 address", cfg: open, opts: self, target: "[::1]:8081", rule: RuleSelf},
		{name: "unspecified reaches listener", cfg: open, opts: self, target: "0.0.0.0:8080", rule: RuleSelf},
		{name: "other port", cfg: open, opts: self, target: "127.0.0.1:8081", allow: true, rule: "allow 127.0.0.0/8"},
		{name: "other loopback", cfg: open, opts: self, target: "127.0.0.2:8080", allow: true, rule: "allow 127.0.0.0/8"},
		{name: "no rule overrides self", cfg: rules(allow("127.0.0.1:8080")), opts: self, target: "127.0.0.1:8080", rule: RuleSelf},

		{name: "any v4 loopback", cfg: open, opts: anyV4, target: "127.0.0.5:3128", rule: RuleSelf},
		{name: "any v4 ipv6 loopback", cfg: open, opts: anyV4, target: "[::1]:3128", rule: RuleSelf},
		{name: "any v4 unspecified", cfg: open, opts: anyV4, target: "0.0.0.0:3128", rule: RuleSelf},
		{name: "any v4 unspecified v6", cfg: open, opts: anyV4, target: "[::]:3128", rule: RuleSelf},
		{name: "any v4 local address", cfg: open, opts: anyV4, target: "10.0.0.7:3128", rule: RuleSelf},
		{name: "any v4 local address by name", cfg: open, opts: anyV4, target: "proxy.corp.example:3128", ip: "10.0.0.7", rule: RuleSelf},
		{name: "any v4 other address", cfg: open, opts: anyV4, target: "10.0.0.8:3128", allow: true, rule: "allow 10.0.0.0/8"},
		{name: "any v4 other port", cfg: open, opts: anyV4, target: "127.0.0.5:3129", allow: true, rule: "allow 127.0.0.0/8"},
		{name: "any v6 public local address", cfg: open, opts: anyV6, target: pub4 + ":3128", rule: RuleSelf},
		{name: "any v6 loopback", cfg: open, opts: anyV6, target: "127.0.0.1:3128", rule: RuleSelf},
	} {
		t.Run(tc.name, tc.run)
	}
}

func TestDecideName(t *testing.T) {
	cfg := rules(allow("*.example.com:443"), deny("8.8.8.0/24"), allow("localhost:9000"), allow("10.0.0.0/8"))
	for _, tc := range []decideCase{
		{name: "name rule", cfg: cfg, target: "a.example.com:443", byName: true, allow: true, rule: "allow *.example.com:443"},
		{name: "ip rules never match a name", cfg: rules(deny("8.8.8.0/24")), target: "dns.google:443", byName: true,
			allow: true, rule: RuleDefault, reason: "(address not checked: resolved upstream)"},
		{name: "default deny", cfg: cfg, target: "dns.google:443", byName: true, rule: RuleDefault},
		{name: "ip literal equals Decide", cfg: cfg, target: "8.8.8.8:443", byName: true, rule: "deny 8.8.8.0/24"},
		{name: "ip literal non-public", cfg: Config{}, target: "127.0.0.1:443", byName: true, rule: RuleNonPublic},
		{name: "ip literal cidr override", cfg: cfg, target: "10.9.9.9:22", byName: true, allow: true, rule: "allow 10.0.0.0/8"},
		{name: "localhost is loopback", cfg: Config{}, target: "localhost:80", byName: true, rule: RuleNonPublic, reason: "RFC 6761"},
		{name: "localhost subdomain", cfg: rules(allow("*:443")), target: "a.localhost:443", byName: true, rule: RuleNonPublic,
			reason: `rule "allow *:443" matched`},
		{name: "localhost exact allow", cfg: cfg, target: "localhost:9000", byName: true, allow: true, rule: "allow localhost:9000"},
	} {
		t.Run(tc.name, tc.run)
	}
}

func TestDecideFailsClosed(t *testing.T) {
	p, err := Compile(Config{Default: "web"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Decide(Target{"example.com", 443}, netip.Addr{}, Subject{}); d.Allow || d.Rule != RuleNonPublic {
		t.Errorf("Decide(name, invalid ip) = %+v; want deny %q", d, RuleNonPublic)
	}
	if d := p.Decide(Target{"127.0.0.1", 443}, netip.Addr{}, Subject{}); d.Allow || d.Rule != RuleNonPublic {
		t.Errorf("Decide(127.0.0.1, invalid ip) = %+v; want deny %q", d, RuleNonPublic)
	}
	var nilPolicy *Policy
	if d := nilPolicy.Decide(Target{"example.com", 443}, netip.MustParseAddr(pub4), Subject{}); d.Allow {
		t.Errorf("nil Policy Decide = %+v; want deny", d)
	}
	if d := nilPolicy.DecideName(Target{"example.com", 443}, Subject{}); d.Allow {
		t.Errorf("nil Policy DecideName = %+v; want deny", d)
	}
}
