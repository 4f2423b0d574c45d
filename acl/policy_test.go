package acl

import (
	"net/netip"
	"strings"
	"testing"
)

// Public addresses used as resolved addresses; nothing is dialed.
const (
	pub4  = "93.184.215.14"
	pub4b = "8.8.8.8"
	pub6  = "2606:4700::1111"
)

type decideCase struct {
	name   string
	cfg    Config
	opts   Options
	target string  // authority for ParseTarget
	ip     string  // dialed address; "" means the target's own address (or none)
	who    Subject // zero: anonymous
	byName bool    // use DecideName instead of Decide

	allow  bool
	rule   string
	reason string // must appear in Decision.Reason
}

func (tc decideCase) run(t *testing.T) {
	t.Helper()
	p, err := Compile(tc.cfg, tc.opts)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	tg, err := ParseTarget(tc.target)
	if err != nil {
		t.Fatalf("ParseTarget(%q): %v", tc.target, err)
	}
	var d Decision
	var ip netip.Addr
	switch {
	case tc.byName:
		d = p.DecideName(tg, tc.who)
	default:
		if tc.ip != "" {
			ip = netip.MustParseAddr(tc.ip)
		}
		d = p.Decide(tg, ip, tc.who)
	}
	if d.Allow != tc.allow || d.Rule != tc.rule || !strings.Contains(d.Reason, tc.reason) {
		t.Errorf("Decide(%v, %v, %+v) = %+v; want Allow %v, Rule %q, Reason containing %q",
			tg, ip, tc.who, d, tc.allow, tc.rule, tc.reason)
	}
}

func rules(specs ...RuleSpec) Config { return Config{Rules: specs} }

func TestDecideRules(t *testing.T) {
	orderDeny := rules(deny("api.example.com"), allow("*.example.com:443"))
	orderAllow := rules(allow("api.example.com"), deny(".example.com"))
	ports := rules(allow("a.example:443"), allow("b.example:80,443"), allow("c.example:8000-9000,22"))
	scoped := rules(
		RuleSpec{Action: "allow", Target: "admin.example:443", Users: []string{"alice"}, Groups: []string{"ops"}},
		RuleSpec{Action: "deny", Target: "*:443", Groups: []string{"interns"}},
	)
	for _, tc := range []decideCase{
		{name: "first match deny", cfg: orderDeny, target: "api.example.com:443", ip: pub4,
			rule: "deny api.example.com", reason: "host api.example.com matched api.example.com"},
		{name: "first match falls through", cfg: orderDeny, target: "www.example.com:443", ip: pub4,
			allow: true, rule: "allow *.example.com:443", reason: "host www.example.com matched *.example.com:443"},
		{name: "order reversed", cfg: orderAllow, target: "api.example.com:443", ip: pub4,
			allow: true, rule: "allow api.example.com"},
		{name: "order reversed other host", cfg: orderAllow, target: "x.api.example.com:443", ip: pub4,
			rule: "deny .example.com"},

		{name: "exact does not match subdomain", cfg: rules(allow("api.example.com")), target: "x.api.example.com:443", ip: pub4,
			rule: RuleDefault, reason: "the default denies"},
		{name: "subdomain pattern one level", cfg: rules(allow("*.example.com")), target: "a.example.com:443", ip: pub4,
			allow: true, rule: "allow *.example.com"},
		{name: "subdomain pattern any depth", cfg: rules(allow("*.example.com")), target: "a.b.c.example.com:8443", ip: pub4,
			allow: true, rule: "allow *.example.com"},
		{name: "subdomain pattern not apex", cfg: rules(allow("*.example.com")), target: "example.com:443", ip: pub4,
			rule: RuleDefault},
		{name: "subdomain pattern not suffix", cfg: rules(allow("*.example.com")), target: "badexample.com:443", ip: pub4,
			rule: RuleDefault},
		{name: "domain pattern apex", cfg: rules(allow(".example.com")), target: "example.com:443", ip: pub4,
			allow: true, rule: "allow .example.com"},
		{name: "domain pattern subdomain", cfg: rules(allow(".example.com")), target: "a.b.example.com:443", ip: pub4,
			allow: true, rule: "allow .example.com"},
		{name: "domain pattern not suffix", cfg: rules(allow(".example.com")), target: "badexample.com:443", ip: pub4,
			rule: RuleDefault},
		{name: "any host on port", cfg: rules(allow("*:8443")), target: "whatever.example:8443", ip: pub4,
			allow: true, rule: "allow *:8443"},
		{name: "any host other port", cfg: rules(allow("*:8443")), target: "whatever.example:8444", ip: pub4,
			rule: RuleDefault},
		{name: "any host matches ip literal", cfg: rules(deny("*:25")), target: pub4 + ":25",
			rule: "deny *:25"},
		{name: "name rule does not match ip literal", cfg: rules(allow("example.com:8443")), target: pub4 + ":8443",
			rule: RuleDefault},
		{name: "cidr matches resolved name", cfg: rules(allow("8.8.8.0/24:853")), target: "dns.google:853", ip: pub4b,
			allow: true, rule: "allow 8.8.8.0/24:853", reason: "dns.google resolved to 8.8.8.8, which is in 8.8.8.0/24 (port 853 in 853)"},
		{name: "cidr matches ip literal", cfg: rules(deny("8.8.8.0/24")), target: "8.8.8.8:443",
			rule: "deny 8.8.8.0/24", reason: "8.8.8.8 is in 8.8.8.0/24"},
		{name: "cidr other address", cfg: rules(deny("8.8.8.0/24")), target: "dns.google:443", ip: "8.8.4.4",
			allow: true, rule: RuleDefault},
		{name: "ipv6 cidr", cfg: rules(allow("[2606:4700::/32]:8443")), target: "one.one.one.one:8443", ip: pub6,
			allow: true, rule: "allow [2606:4700::/32]:8443"},
		{name: "ipv4-mapped dialed address matches ipv4 rule", cfg: rules(deny("8.8.8.8")), target: "dns.google:443", ip: "::ffff:8.8.8.8",
			rule: "deny 8.8.8.8", reason: "resolved to 8.8.8.8, which matched 8.8.8.8"},

		{name: "single port", cfg: ports, target: "a.example:443", ip: pub4, allow: true, rule: "allow a.example:443"},
		{name: "single port miss", cfg: ports, target: "a.example:80", ip: pub4, rule: RuleDefault},
		{name: "port list", cfg: ports, target: "b.example:80", ip: pub4, allow: true, rule: "allow b.example:80,443"},
		{name: "port list miss", cfg: ports, target: "b.example:8080", ip: pub4, rule: RuleDefault},
		{name: "range low", cfg: ports, target: "c.example:8000", ip: pub4, allow: true, rule: "allow c.example:8000-9000,22"},
		{name: "range high", cfg: ports, target: "c.example:9000", ip: pub4, allow: true, rule: "allow c.example:8000-9000,22"},
		{name: "range below", cfg: ports, target: "c.example:7999", ip: pub4, rule: RuleDefault},
		{name: "range above", cfg: ports, target: "c.example:9001", ip: pub4, rule: RuleDefault},
		{name: "range list entry", cfg: ports, target: "c.example:22", ip: pub4, allow: true, rule: "allow c.example:8000-9000,22"},

		{name: "user listed", cfg: scoped, target: "admin.example:443", ip: pub4, who: Subject{User: "alice"},
			allow: true, rule: "allow admin.example:443", reason: "for user alice"},
		{name: "group listed", cfg: scoped, target: "admin.example:443", ip: pub4, who: Subject{User: "bob", Groups: []string{"dev", "ops"}},
			allow: true, rule: "allow admin.example:443", reason: "for group ops"},
		{name: "user not listed", cfg: scoped, target: "admin.example:443", ip: pub4, who: Subject{User: "bob", Groups: []string{"dev"}},
			rule: RuleDefault},
		{name: "anonymous", cfg: scoped, target: "admin.example:443", ip: pub4,
			rule: RuleDefault},
		{name: "group deny", cfg: scoped, target: "example.com:443", ip: pub4, who: Subject{User: "carol", Groups: []string{"interns"}},
			rule: "deny *:443", reason: "for group interns"},
		{name: "user named like a group", cfg: scoped, target: "admin.example:443", ip: pub4, who: Subject{User: "ops"},
			rule: RuleDefault},
	} {
		t.Run(tc.name, tc.run)
	}
}

func TestDecideDefaults(t *testing.T) {
	web := Config{Default: "web"}
	denyAll := Config{Default: "deny"}
	blocklist := rules(deny("*.ads.example"))
	allowlist := rules(deny("*.ads.example"), allow("api.example:8443"))
	for _, tc := range []decideCase{
		{name: "web 443", cfg: web, target: "example.com:443", ip: pub4, allow: true, rule: RuleDefault, reason: "web default allows port 443"},
		{name: "web 80", cfg: web, target: "example.com:80", ip: pub6, allow: true, rule: RuleDefault},
		{name: "web 22", cfg: web, target: "example.com:22", ip: pub4, rule: RuleDefault, reason: "only ports 80 and 443, not 22"},
		{name: "web non-public", cfg: web, target: "db.example:443", ip: "10.0.0.5", rule: RuleNonPublic,
			reason: "db.example resolved to 10.0.0.5, which is RFC 1918 private"},
		{name: "web with allow rule", cfg: Config{Default: "web", Rules: []RuleSpec{allow("api.example:8443")}},
			target: "example.com:443", ip: pub4, allow: true, rule: RuleDefault},
		{name: "deny", cfg: denyAll, target: "example.com:443", ip: pub4, rule: RuleDefault, reason: "the default denies"},
		{name: "auto without rules is web", cfg: Config{}, target: "example.com:443", ip: pub4, allow: true, rule: RuleDefault},
		{name: "auto without rules port 22", cfg: Config{}, target: "example.com:22", ip: pub4, rule: RuleDefault},
		{name: "auto blocklist allows the rest", cfg: blocklist, target: "example.com:443", ip: pub4, allow: true, rule: RuleDefault},
		{name: "auto blocklist denies match", cfg: blocklist, target: "x.ads.example:443", ip: pub4, rule: "deny *.ads.example"},
		{name: "auto allowlist denies the rest", cfg: allowlist, target: "example.com:443", ip: pub4, rule: RuleDefault, reason: "the default denies"},
		{name: "auto allowlist allows match", cfg: allowlist, target: "api.example:8443", ip: pub4, allow: true, rule: "allow api.example:8443"},
	} {
		t.Run(tc.name, tc.run)
	}
	for cfg, want := range map[*Config]string{&web: "web", &denyAll: "deny", &blocklist: "web", &allowlist: "deny"} {
		p, err := Compile(*cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Default(); got != want {
			t.Errorf("Compile(%+v).Default() = %q; want %q", *cfg, got, want)
		}
	}
}

// nonPublicCases are addresses the built-in deny covers, with a word of why.
var nonPublicCases = []struct{ ip, why string }{
	{"0.0.0.0", "this network"}, {"0.1.2.3", "this network"},
	{"10.0.0.1", "RFC 1918"}, {"10.255.255.255", "RFC 1918"},
	{"100.64.0.1", "CGNAT"}, {"100.127.255.254", "CGNAT"},
	{"127.0.0.1", "loopback"}, {"127.0.0.2", "loopback"}, {"127.255.255.255", "loopback"},
	{"169.254.169.254", "cloud metadata"}, {"169.254.0.1", "link-local"},
	{"172.16.0.1", "RFC 1918"}, {"172.31.255.255", "RFC 1918"},
	{"192.0.0.8", "IETF protocol"}, {"192.0.2.1", "TEST-NET-1"}, {"192.88.99.1", "6to4 relay"},
	{"192.168.1.1", "RFC 1918"}, {"198.18.0.1", "benchmarking"}, {"198.19.255.255", "benchmarking"},
	{"198.51.100.7", "TEST-NET-2"}, {"203.0.113.9", "TEST-NET-3"},
	{"224.0.0.1", "multicast"}, {"239.255.255.250", "multicast"},
	{"240.0.0.1", "reserved"}, {"255.255.255.254", "reserved"}, {"255.255.255.255", "broadcast"},
	{"::ffff:127.0.0.1", "loopback"}, {"::ffff:169.254.169.254", "cloud metadata"}, {"::ffff:10.1.2.3", "RFC 1918"},
	{"::", "unspecified"}, {"::1", "loopback"}, {"::7f00:1", "IPv4-compatible"},
	{"::ffff:0:7f00:1", "SIIT"}, {"64:ff9b::7f00:1", "NAT64"}, {"64:ff9b:1::1", "NAT64"},
	{"100::1", "discard"}, {"2001::1", "Teredo"}, {"2001:2::1", "benchmarking"}, {"2001:10::1", "IETF protocol"},
	{"2001:db8::1", "documentation"}, {"2002:7f00:1::1", "6to4"}, {"3fff::1", "documentation"},
	{"5f00::1", "SRv6"}, {"fc00::1", "ULA"}, {"fd00:ec2::254", "ULA"}, {"fe80::1", "link-local"},
	{"fec0::1", "site-local"}, {"ff02::1", "multicast"}, {"4000::1", "reserved"}, {"1::1", "reserved"},
}

func TestIsPublic(t *testing.T) {
	for _, tc := range nonPublicCases {
		public, why := IsPublic(netip.MustParseAddr(tc.ip))
		if public || !strings.Contains(why, tc.why) {
			t.Errorf("IsPublic(%s) = %v, %q; want false, %q", tc.ip, public, why, tc.why)
		}
	}
	for _, ip := range []string{pub4, pub4b, "1.1.1.1", "100.63.255.255", "100.128.0.0", "172.32.0.1", "192.0.1.1",
		"223.255.255.255", "169.253.0.1", pub6, "2001:4860:4860::8888", "2a00:1450::1", "2001:200::1", "3ffe::1", "::ffff:8.8.8.8"} {
		if public, why := IsPublic(netip.MustParseAddr(ip)); !public {
			t.Errorf("IsPublic(%s) = false, %q; want true", ip, why)
		}
	}
	if public, _ := IsPublic(netip.Addr{}); public {
		t.Error("IsPublic(invalid) = true; want false")
	}
}

func TestDecideNonPublic(t *testing.T) {
	for _, tc := range nonPublicCases {
		// Both as an IP-literal target and as a name resolved to it, under
		// the most permissive rules that cannot override the deny.
		cfg := Config{Default: "web", Rules: []RuleSpec{allow("*:443"), allow(".example.com")}}
		decideCase{name: tc.ip, cfg: cfg, target: "app.example.com:443", ip: tc.ip,
			rule: RuleNonPublic, reason: tc.why}.run(t)
		lit := netip.MustParseAddr(tc.ip).Unmap()
		host := lit.String()
		if lit.Is6() {
			host = "[" + host + "]"
		}
		decideCase{name: tc.ip, cfg: cfg, target: host + ":443",
			rule: RuleNonPublic, reason: tc.why}.run(t)
	}
}
