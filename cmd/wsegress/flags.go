package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"go.yaml.in/yaml/v3"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/auth"
	"github.com/wsegress/wsegress/proxy"
	"github.com/wsegress/wsegress/proxy/listen"
)

// env names the environment variable of a flag: WSEGRESS_<FLAG>.
func env(flag string) []string {
	return []string{"WSEGRESS_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}

// serveFlags are the settings of the proxy, shared by serve, check and
// explain so all three read the same configuration.
func serveFlags() []cli.Flag {
	str := func(name, value, usage string) cli.Flag {
		return &cli.StringFlag{Name: name, Value: value, Usage: usage, EnvVars: env(name)}
	}
	dur := func(name string, value time.Duration, usage string) cli.Flag {
		return &cli.DurationFlag{Name: name, Value: value, Usage: usage, EnvVars: env(name)}
	}
	num := func(name string, value int, usage string) cli.Flag {
		return &cli.IntFlag{Name: name, Value: value, Usage: usage, EnvVars: env(name)}
	}
	boolean := func(name, usage string) cli.Flag {
		return &cli.BoolFlag{Name: name, Usage: usage, EnvVars: env(name)}
	}
	list := func(name, usage string) cli.Flag {
		return &cli.StringSliceFlag{Name: name, Usage: usage, EnvVars: env(name)}
	}
	return []cli.Flag{
		str("listen", "127.0.0.1:3128", "address to listen on"),
		str("config", "", "YAML config file (ACL rules, groups, per-user limits)"),
		dur("dial-timeout", 10*time.Second, "bound on resolving and connecting to a target"),
		dur("idle-timeout", 0, "close a tunnel after this long with no byte in either direction (0: never)"),
		dur("write-timeout", 15*time.Minute, "close a tunnel whose destination accepted no byte for this long while bytes waited for it"),
		dur("header-timeout", 10*time.Second, "bound on reading request headers, and on a client connection's idle time between requests"),
		dur("body-timeout", 30*time.Second, "close a forwarded plain-HTTP request whose body sends no byte for this long (408)"),
		dur("response-header-timeout", time.Minute, "bound on a target's response headers to a forwarded plain-HTTP request (504)"),
		dur("drain-timeout", 30*time.Second, "on SIGINT/SIGTERM, or in the old process after a SIGUSR2 handover, how long open tunnels may finish before they are closed"),
		dur("max-tunnel-lifetime", 0, "close every tunnel cleanly after this long, ±10% jitter, so a fleet rebalances (0: never)"),
		str("pid-file", "", "write the PID here once ready, and again after each SIGUSR2 handover (for systemd's PIDFile=)"),
		num("max-header-bytes", 32<<10, "largest request header accepted (larger: 431)"),
		str("upstream", "", "parent proxy for all targets: socks5://[user:pass@]host:port or http://[user:pass@]host:port; "+
			"a password given here shows in ps: pass it in $WSEGRESS_UPSTREAM or --upstream-file instead"),
		str("upstream-file", "", "read the --upstream URL (with its password) from this file"),
		str("log-format", "text", "text or json"),
		str("log-level", "info", "debug, info, warn or error"),

		str("htpasswd", "", "turn on Basic proxy auth with this htpasswd file (bcrypt, apr1, SHA-crypt, {SHA})"),
		str("groups", "", "groups file: lines 'group: user1 user2'"),
		str("realm", "wsegress", "realm in Proxy-Authenticate"),
		boolean("no-auth", "allow listening on a non-loopback address without authentication"),
		boolean("allow-plaintext-passwords", "accept plaintext entries in the htpasswd file"),
		dur("auth-cache-ttl", 5*time.Minute, "how long a verified user:password is remembered (negative: off)"),
		num("auth-max-failures", 10, "failed logins per client IP or user within --auth-failure-window before it is refused with 429"),
		dur("auth-failure-window", time.Minute, "window for --auth-max-failures"),
		dur("auth-block", 5*time.Minute, "how long a client or user over --auth-max-failures is refused"),
		boolean("no-auth-throttle", "turn off the failed-login throttle"),
		num("auth-max-concurrent", runtime.NumCPU(), "password hashes computed at once; a login that waits over 1s for one gets 503 (cached logins never wait)"),
		num("max-auth-retries", 3, "407 answers on one client connection before it is closed"),

		list("allow", "allow rule, repeatable: host, *.domain, .domain, IP or CIDR, with optional :ports (e.g. '*.example.com:443')"),
		list("deny", "deny rule, repeatable (checked before --allow rules)"),
		str("default", "", "when no rule matches: web (ports 80,443 to public addresses) or deny; empty: web without allow rules, deny with"),
		str("acl-mode", "", "enforce, or report: every deny of a rule or the default is logged as would_deny and the tunnel goes on (built-in denies stay); empty: the config file's acl.mode, else enforce"),

		boolean("websocket-only", "tunnels must start with a WebSocket handshake or a TLS ClientHello naming the CONNECT target; absolute-form requests must be WebSocket upgrades"),
		boolean("sni-check", "a tunnel that starts with TLS must name the CONNECT host in its SNI (domain fronting); other tunnels pass"),
		boolean("allow-missing-sni", "with --websocket-only or --sni-check, let a ClientHello without SNI (or with ECH) through"),
		str("inspect-mode", "", "enforce, or report: a tunnel --websocket-only, websocket_only or --sni-check would close is logged as would_deny and goes on; empty: the config file's inspect.mode, else enforce"),

		num("max-tunnels", proxy.DefaultMaxTunnels(), "tunnels open at once (default derived from the open-file limit)"),
		num("max-tunnels-per-user", 0, "tunnels per authenticated user (0: no limit)"),
		num("max-tunnels-per-ip", 0, "tunnels per client IP (0: no limit)"),
		num("max-tunnels-per-host", 0, "tunnels per destination host (0: no limit)"),
		num("max-pending", 0, "requests between accept and their 200 (0: no limit)"),
		num("max-conns", 0, "client connections open at once, from accept (0: derived from the open-file limit and --max-tunnels; -1: no cap)"),
		num("max-conns-per-ip", 0, "client connections per client IPv4 address or IPv6 /64 (0: half of --max-conns; -1: no cap)"),
		list("proxy-protocol-from", "honour (and require) a PROXY protocol v1/v2 header from these balancers: CIDR or IP, repeatable or comma-separated"),
		dur("queue-timeout", 0, "how long a request waits for a free slot before 503 (0: no waiting)"),

		str("tls-cert", "", "PEM certificate chain (leaf first) for TLS to the proxy; with --tls-key, TLS on --listen (or on --tls-listen); re-read on SIGHUP and when it changes"),
		str("tls-key", "", "PEM private key of --tls-cert"),
		str("tls-listen", "", "address of a TLS listener beside a plain --listen (needs --tls-cert and --tls-key)"),
		str("tls-client-ca", "", "PEM CAs that issue client certificates: ask for one and verify it; its user is authenticated before Basic (required without --htpasswd)"),
		str("tls-client-user", "cn", "what names a client certificate's user: cn, san-email or san-uri"),
		str("pac-proxy", "", "serve GET /proxy.pac (proxy and metrics listeners) naming this host:port, the name clients use for the proxy"),
		list("pac-direct", "host, *.domain, .domain, IP or CIDR the PAC file sends DIRECT, repeatable (needs --pac-proxy)"),

		str("metrics-listen", "", "serve Prometheus /metrics, /healthz and /readyz on this address"),
		boolean("ready-when-full", "keep /readyz green while the tunnel pool is full"),
	}
}

// fileConfig is the YAML config file. Flags override its scalar settings;
// its rules come after the rules given as flags.
type fileConfig struct {
	ACL     acl.Config `yaml:"acl"`
	Inspect struct {
		WebSocketOnly   *bool  `yaml:"websocket_only"`
		SNICheck        *bool  `yaml:"sni_check"`
		AllowMissingSNI *bool  `yaml:"allow_missing_sni"`
		Mode            string `yaml:"mode"`
	} `yaml:"inspect"`
	Groups map[string][]string `yaml:"groups"`
	Limits struct {
		MaxTunnels        *int           `yaml:"max_tunnels"`
		MaxTunnelsPerUser *int           `yaml:"max_tunnels_per_user"`
		MaxTunnelsPerIP   *int           `yaml:"max_tunnels_per_ip"`
		MaxTunnelsPerHost *int           `yaml:"max_tunnels_per_host"`
		Users             map[string]int `yaml:"users"`
		Groups            map[string]int `yaml:"groups"`
	} `yaml:"limits"`
	// PAC is the PAC file (GET /proxy.pac); --pac-proxy overrides proxy,
	// --pac-direct entries come before the file's.
	PAC struct {
		Proxy  string   `yaml:"proxy"`
		Direct []string `yaml:"direct"`
	} `yaml:"pac"`
}

// loadFile reads and strictly decodes the YAML config (unknown keys are
// errors: a typo must not silently weaken a policy).
func loadFile(path string) (fileConfig, error) {
	var fc fileConfig
	if path == "" {
		return fc, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fc, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return fc, fmt.Errorf("config %s: %w", path, err)
	}
	return fc, nil
}

// buildConfig turns flags, environment and config file into a
// proxy.Config. It reports every problem it finds at once.
func buildConfig(c *cli.Context) (proxy.Config, error) {
	var errs []error
	fc, err := loadFile(c.String("config"))
	if err != nil {
		return proxy.Config{}, err
	}
	cfg := proxy.Config{
		Listen:            c.String("listen"),
		DialTimeout:       c.Duration("dial-timeout"),
		IdleTimeout:       c.Duration("idle-timeout"),
		MaxTunnelLifetime: c.Duration("max-tunnel-lifetime"),
		WriteTimeout:      c.Duration("write-timeout"),
		HeaderTimeout:     c.Duration("header-timeout"),
		MaxHeaderBytes:    c.Int("max-header-bytes"),
		Htpasswd:          c.String("htpasswd"),
		Groups:            c.String("groups"),
		Realm:             c.String("realm"),
		NoAuth:            c.Bool("no-auth"),
		MaxAuthRetries:    c.Int("max-auth-retries"),
		Auth: auth.Options{
			AllowPlaintext: c.Bool("allow-plaintext-passwords"),
			CacheTTL:       c.Duration("auth-cache-ttl"),
			MaxConcurrent:  c.Int("auth-max-concurrent"),
			Groups:         fc.Groups,
			Throttle: auth.ThrottleConfig{
				Disabled:    c.Bool("no-auth-throttle"),
				MaxFailures: c.Int("auth-max-failures"),
				Window:      c.Duration("auth-failure-window"),
				Block:       c.Duration("auth-block"),
			},
		},
		TLSCert:               c.String("tls-cert"),
		TLSKey:                c.String("tls-key"),
		TLSListen:             c.String("tls-listen"),
		TLSClientCA:           c.String("tls-client-ca"),
		TLSClientUser:         c.String("tls-client-user"),
		PACProxy:              fc.PAC.Proxy,
		PACDirect:             append(c.StringSlice("pac-direct"), fc.PAC.Direct...),
		MaxPending:            c.Int("max-pending"),
		MaxConns:              c.Int("max-conns"),
		MaxConnsPerIP:         c.Int("max-conns-per-ip"),
		BodyTimeout:           c.Duration("body-timeout"),
		ResponseHeaderTimeout: c.Duration("response-header-timeout"),
		QueueTimeout:          c.Duration("queue-timeout"),
		MetricsListen:         c.String("metrics-listen"),
		ReadyWhenFull:         c.Bool("ready-when-full"),
	}
	var from []string
	for _, v := range c.StringSlice("proxy-protocol-from") {
		from = append(from, strings.Split(v, ",")...) // the app separates slices with ";"
	}
	if p, err := listen.ParseProxyFrom(from); err != nil {
		errs = append(errs, err)
	} else {
		cfg.ProxyProtocolFrom = p
	}
	if u, err := upstreamURL(c); err != nil {
		errs = append(errs, err)
	} else if u != "" {
		pu, err := url.Parse(u)
		if err != nil {
			// url.Error text may quote part of the password: say nothing of it.
			errs = append(errs, errors.New("--upstream: not a valid URL; percent-encode reserved characters (/ # ? @ :) in user:pass"))
		} else {
			cfg.Upstream = pu
		}
	}

	// ACL: --deny flags, then --allow flags, then the file's rules.
	// Denies first, so a deny given on the command line always wins.
	cfg.ACL.Default, cfg.ACL.Mode = fc.ACL.Default, fc.ACL.Mode
	if m := c.String("acl-mode"); m != "" {
		cfg.ACL.Mode = m
	}
	if d := c.String("default"); d != "" {
		cfg.ACL.Default = d
	}
	for _, r := range c.StringSlice("deny") {
		cfg.ACL.Rules = append(cfg.ACL.Rules, acl.RuleSpec{Action: "deny", Target: r})
	}
	for _, r := range c.StringSlice("allow") {
		cfg.ACL.Rules = append(cfg.ACL.Rules, acl.RuleSpec{Action: "allow", Target: r})
	}
	cfg.ACL.Rules = append(cfg.ACL.Rules, fc.ACL.Rules...)

	cfg.Inspect = proxy.Inspect{
		WebSocketOnly:   pickBool(c, "websocket-only", fc.Inspect.WebSocketOnly),
		SNICheck:        pickBool(c, "sni-check", fc.Inspect.SNICheck),
		AllowMissingSNI: pickBool(c, "allow-missing-sni", fc.Inspect.AllowMissingSNI),
		Mode:            fc.Inspect.Mode,
	}
	if m := c.String("inspect-mode"); m != "" {
		cfg.Inspect.Mode = m
	}

	cfg.Limits = proxy.Limits{
		Global:  pick(c, "max-tunnels", fc.Limits.MaxTunnels),
		PerUser: pick(c, "max-tunnels-per-user", fc.Limits.MaxTunnelsPerUser),
		PerIP:   pick(c, "max-tunnels-per-ip", fc.Limits.MaxTunnelsPerIP),
		PerHost: pick(c, "max-tunnels-per-host", fc.Limits.MaxTunnelsPerHost),
		Users:   fc.Limits.Users,
		Groups:  fc.Limits.Groups,
	}
	if p := c.String("pac-proxy"); p != "" {
		cfg.PACProxy = p
	}
	if len(fc.Groups) > 0 && cfg.Htpasswd == "" && cfg.TLSClientCA == "" {
		errs = append(errs, errors.New("config: groups need --htpasswd or --tls-client-ca (groups are of authenticated users)"))
	}
	if c.IsSet("tls-client-user") && cfg.TLSClientCA == "" {
		errs = append(errs, errors.New("--tls-client-user needs --tls-client-ca: it names the user of a client certificate"))
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, err
	}
	cfg = cfg.Defaults()
	return cfg, cfg.Validate()
}

// upstreamURL is the --upstream URL, from the flag (or its environment
// variable) or read from --upstream-file; "" means none.
func upstreamURL(c *cli.Context) (string, error) {
	u, file := c.String("upstream"), c.String("upstream-file")
	if file == "" {
		return u, nil
	}
	if u != "" {
		return "", errors.New("--upstream and --upstream-file both set: give one")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--upstream-file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// upstreamPasswordInArgs reports whether --upstream was given on the
// command line (not through $WSEGRESS_UPSTREAM) with a password, which
// every local user can then read with ps.
func upstreamPasswordInArgs(c *cli.Context) bool {
	u := c.String("upstream")
	if u == "" || !c.IsSet("upstream") || os.Getenv(env("upstream")[0]) == u {
		return false
	}
	pu, err := url.Parse(u)
	if err != nil {
		return false
	}
	_, ok := pu.User.Password()
	return ok
}

// pick is a flag's value when set on the command line or environment,
// else the file's value when present, else the flag's default.
func pick(c *cli.Context, flag string, file *int) int {
	if !c.IsSet(flag) && file != nil {
		return *file
	}
	return c.Int(flag)
}

// pickBool is pick for a boolean flag.
func pickBool(c *cli.Context, flag string, file *bool) bool {
	if !c.IsSet(flag) && file != nil {
		return *file
	}
	return c.Bool(flag)
}
