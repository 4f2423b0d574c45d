package acl

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func allow(target string) RuleSpec { return RuleSpec{Action: "allow", Target: target} }
func deny(target string) RuleSpec  { return RuleSpec{Action: "deny", Target: target} }

// compileOK are rule targets Compile accepts.
var compileOK = []string{
	"*.example.com:443", ".example.com", "api.example.com:80,443", "api.example.com",
	"203.0.113.0/24:8000-9000", "[2001:db8::/32]:443", "127.0.0.1:9000", "127.0.0.1/32",
	"[::1]:9000", "[::1/128]", "*:443", "*:1-65535", "*:80,443,8000-9000", "localhost:9000",
	"_acme.example.com", "xn--bcher-kva.example", "10.0.0.0/8", "*.com:443", "example.com:8000-8000",
}

func TestCompileAccepts(t *testing.T) {
	for _, target := range compileOK {
		t.Run(target, func(t *testing.T) {
			if _, err := Compile(Config{Rules: []RuleSpec{allow(target)}}, Options{}); err != nil {
				t.Errorf("Compile(allow %q) error = %v; want nil", target, err)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		opts Options
		want []string // each must appear in the error
	}{
		{name: "lone star", cfg: Config{Rules: []RuleSpec{allow("*")}},
			want: []string{`rule 1 "*": a lone "*" matches everything; write a port rule such as "*:443"`}},
		{name: "mid-label wildcard", cfg: Config{Rules: []RuleSpec{allow("api.*.com")}},
			want: []string{`only as the whole first label`}},
		{name: "star glued to label", cfg: Config{Rules: []RuleSpec{allow("*foo.com")}},
			want: []string{`write "*.foo.com" for the subdomains of foo.com, or ".foo.com"`}},
		{name: "star inside label", cfg: Config{Rules: []RuleSpec{allow("api-*.example.com:443")}},
			want: []string{`cannot be part of a label; write "*.example.com"`}},
		{name: "star not first", cfg: Config{Rules: []RuleSpec{allow("example.*")}},
			want: []string{`only as the whole first label`}},
		{name: "two stars", cfg: Config{Rules: []RuleSpec{allow("*.*.example.com")}},
			want: []string{`only as the whole first label`}},
		{name: "star octets", cfg: Config{Rules: []RuleSpec{allow("10.1.*.*")}},
			want: []string{`write a CIDR such as "10.1.0.0/16"`}},
		{name: "wildcard address", cfg: Config{Rules: []RuleSpec{allow("*.10.0.0.1")}},
			want: []string{`mixes a wildcard with an address`}},
		{name: "host bits", cfg: Config{Rules: []RuleSpec{allow("203.0.113.9/24")}},
			want: []string{`has host bits set; write "203.0.113.0/24" for the network, or "203.0.113.9" for the single address`}},
		{name: "host bits ipv6", cfg: Config{Rules: []RuleSpec{allow("[2001:db8::1/32]:443")}},
			want: []string{`write "[2001:db8::/32]" for the network`}},
		{name: "bad prefix length", cfg: Config{Rules: []RuleSpec{allow("10.0.0.0/33")}},
			want: []string{`bad CIDR "10.0.0.0/33"`}},
		{name: "slash zero", cfg: Config{Rules: []RuleSpec{allow("0.0.0.0/0")}},
			want: []string{`matches every address`}},
		{name: "ipv6 without brackets", cfg: Config{Rules: []RuleSpec{allow("2001:db8::/32")}},
			want: []string{`write "[2001:db8::/32]"`}},
		{name: "ipv4 in brackets", cfg: Config{Rules: []RuleSpec{allow("[10.0.0.1]:443")}},
			want: []string{`without brackets; write "10.0.0.1"`}},
		{name: "ipv4-mapped", cfg: Config{Rules: []RuleSpec{allow("[::ffff:10.0.0.0/104]")}},
			want: []string{`write the IPv4 form "10.0.0.0/8"`}},
		{name: "ipv6 not canonical", cfg: Config{Rules: []RuleSpec{allow("[2001:DB8::1]:443")}},
			want: []string{`write "[2001:db8::1]"`}},
		{name: "ipv6 zone", cfg: Config{Rules: []RuleSpec{allow("[fe80::1%eth0]")}},
			want: []string{`zones`}},
		{name: "port 0", cfg: Config{Rules: []RuleSpec{allow("example.com:0")}},
			want: []string{`port 0 is not a destination port`}},
		{name: "port too big", cfg: Config{Rules: []RuleSpec{allow("example.com:65536")}},
			want: []string{`out of range 1-65535`}},
		{name: "reversed range", cfg: Config{Rules: []RuleSpec{allow("example.com:9000-8000")}},
			want: []string{`port range "9000-8000" is reversed; write "8000-9000"`}},
		{name: "empty port entry", cfg: Config{Rules: []RuleSpec{allow("example.com:80,,443")}},
			want: []string{`empty entry in port list`}},
		{name: "empty port list", cfg: Config{Rules: []RuleSpec{allow("example.com:")}},
			want: []string{`remove the ':' to match any port`}},
		{name: "star port", cfg: Config{Rules: []RuleSpec{allow("example.com:*")}},
			want: []string{`remove ":*"`}},
		{name: "port leading zero", cfg: Config{Rules: []RuleSpec{allow("example.com:0443")}},
			want: []string{`write 443`}},
		{name: "port name", cfg: Config{Rules: []RuleSpec{allow("example.com:https")}},
			want: []string{`not a decimal number`}},
		{name: "empty target", cfg: Config{Rules: []RuleSpec{allow("")}},
			want: []string{`empty target; write`}},
		{name: "empty host", cfg: Config{Rules: []RuleSpec{allow(":443")}},
			want: []string{`empty host; write`}},
		{name: "upper case", cfg: Config{Rules: []RuleSpec{allow("Example.COM")}},
			want: []string{`write "example.com"`}},
		{name: "upper case wildcard", cfg: Config{Rules: []RuleSpec{allow("*.Example.com:443")}},
			want: []string{`write "*.example.com"`}},
		{name: "upper case domain", cfg: Config{Rules: []RuleSpec{allow(".Example.com")}},
			want: []string{`write ".example.com"`}},
		{name: "unicode", cfg: Config{Rules: []RuleSpec{allow("bücher.example")}},
			want: []string{`write "xn--bcher-kva.example"`}},
		{name: "trailing dot", cfg: Config{Rules: []RuleSpec{allow("example.com.")}},
			want: []string{`write "example.com"`}},
		{name: "short ipv4", cfg: Config{Rules: []RuleSpec{allow("127.1:9000")}},
			want: []string{`non-canonical IPv4 address; write "127.0.0.1"`}},
		{name: "hex ipv4", cfg: Config{Rules: []RuleSpec{allow("0x7f000001")}},
			want: []string{`write "127.0.0.1"`}},
		{name: "numeric label", cfg: Config{Rules: []RuleSpec{allow("foo.123")}},
			want: []string{`numeric label`}},
		{name: "empty label", cfg: Config{Rules: []RuleSpec{allow("a..example.com")}},
			want: []string{`empty label`}},
		{name: "double dot domain", cfg: Config{Rules: []RuleSpec{allow("..example.com")}},
			want: []string{`empty label`}},
		{name: "bad character", cfg: Config{Rules: []RuleSpec{allow("exa!mple.com")}},
			want: []string{`invalid character '!'`}},
		{name: "spaces", cfg: Config{Rules: []RuleSpec{allow(" example.com:443")}},
			want: []string{`spaces in target; write "example.com:443"`}},
		{name: "url", cfg: Config{Rules: []RuleSpec{allow("https://example.com/x")}},
			want: []string{`not a URL; write "example.com"`}},
		{name: "userinfo", cfg: Config{Rules: []RuleSpec{allow("user:secret@example.com")}},
			want: []string{`users go in users:`}},
		{name: "action case", cfg: Config{Rules: []RuleSpec{{Action: "Allow", Target: "example.com"}}},
			want: []string{`unknown action "Allow"; write "allow"`}},
		{name: "action unknown", cfg: Config{Rules: []RuleSpec{{Action: "permit", Target: "example.com"}}},
			want: []string{`unknown action "permit"; write "allow", "deny" or "report"`}},
		{name: "action empty", cfg: Config{Rules: []RuleSpec{{Target: "example.com"}}},
			want: []string{`unknown action ""`}},
		{name: "empty user", cfg: Config{Rules: []RuleSpec{{Action: "allow", Target: "example.com", Users: []string{"alice", ""}}}},
			want: []string{`empty user name`}},
		{name: "empty group", cfg: Config{Rules: []RuleSpec{{Action: "allow", Target: "example.com", Groups: []string{" "}}}},
			want: []string{`empty group name`}},
		{name: "blank name", cfg: Config{Rules: []RuleSpec{{Name: "  ", Action: "allow", Target: "example.com"}}},
			want: []string{`name is blank`}},
		{name: "unknown default", cfg: Config{Default: "allow"},
			want: []string{`default "allow": write "web"`}},
		{name: "duplicate rule", cfg: Config{Rules: []RuleSpec{allow("example.com"), deny("a.example"), allow("example.com")}},
			want: []string{`rule 3 "example.com": same as rule 1, so it can never match`}},
		{name: "duplicate scoped rule", cfg: Config{Rules: []RuleSpec{
			{Action: "allow", Target: "example.com", Users: []string{"b", "a"}},
			{Action: "allow", Target: "example.com", Users: []string{"a", "b"}}}},
			want: []string{`same as rule 1`}},
		{name: "duplicate name", cfg: Config{Rules: []RuleSpec{
			{Name: "web", Action: "allow", Target: "a.example"}, {Name: "web", Action: "allow", Target: "b.example"}}},
			want: []string{`name "web" is already used by rule 1`}},
		{name: "self port 0", opts: Options{SelfAddrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}},
			want: []string{`pass the listener's actual address`}},
		{name: "all problems at once", cfg: Config{Default: "nope", Rules: []RuleSpec{allow("*"), deny("api.*.com"), allow("10.0.0.1/8")}},
			want: []string{`default "nope"`, `rule 1 "*"`, `rule 2 "api.*.com"`, `rule 3 "10.0.0.1/8"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compile(tc.cfg, tc.opts)
			if err == nil {
				t.Fatalf("Compile(%+v) = %v, nil; want error", tc.cfg, p)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Compile(%+v) error = %q; want it to contain %q", tc.cfg, err, w)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("Compile error %q repeats a password", err)
			}
		})
	}
}

func TestRules(t *testing.T) {
	cfg := Config{Rules: []RuleSpec{
		{Action: "allow", Target: "*.example.com:443", Users: []string{"alice"}},
		{Name: "no ads", Action: "deny", Target: ".ads.example.com"},
	}}
	p, err := Compile(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []RuleSpec{
		{Name: "allow *.example.com:443", Action: "allow", Target: "*.example.com:443", Users: []string{"alice"}},
		{Name: "no ads", Action: "deny", Target: ".ads.example.com"},
	}
	got := p.Rules()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Rules() = %+v; want %+v", got, want)
	}
	got[0].Users[0] = "mallory"
	cfg.Rules[0].Users[0] = "mallory"
	if again := p.Rules(); !reflect.DeepEqual(again, want) {
		t.Errorf("Rules() after modifying the result and the Config = %+v; want %+v", again, want)
	}
	if d := p.Decide(Target{"a.example.com", 443}, netip.MustParseAddr("93.184.215.14"), Subject{User: "mallory"}); d.Allow {
		t.Errorf("Decide for mallory = %+v; want deny (policy must not alias the Config)", d)
	}
}

func TestAction(t *testing.T) {
	for _, a := range []Action{Allow, Deny} {
		got, err := ParseAction(a.String())
		if err != nil || got != a {
			t.Errorf("ParseAction(%q) = %v, %v; want %v", a.String(), got, err, a)
		}
	}
	if got := Action(7).String(); got != "Action(7)" {
		t.Errorf("Action(7).String() = %q", got)
	}
	var zero Action
	if zero != Deny {
		t.Errorf("zero Action = %v; want deny", zero)
	}
}
