package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/auth"
	"github.com/wsegress/wsegress/proxy/tlsconf"
)

// passwdCommand adds or updates a user. The password comes from the
// terminal (asked twice) or from standard input, never from a flag, which
// would show in ps and shell history.
func passwdCommand(stdin io.Reader, stdout, stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "passwd",
		Usage:     "add or update a user in an htpasswd file (bcrypt); the password is read from the terminal or stdin",
		ArgsUsage: "FILE USER",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "cost", Value: auth.DefaultCost, Usage: "bcrypt cost (4-17)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return cli.Exit("usage: wsegress passwd FILE USER", 2)
			}
			file, user := c.Args().Get(0), c.Args().Get(1)
			if err := auth.CheckUserName(user); err != nil {
				return cli.Exit(err, 2)
			}
			pw, err := readPassword(stdin, stderr)
			if err != nil {
				return cli.Exit(err, 1)
			}
			if err := auth.SetPassword(file, user, pw, c.Int("cost")); err != nil {
				return cli.Exit(err, 1)
			}
			fmt.Fprintf(stdout, "password for %q set in %s\n", user, file)
			return nil
		},
	}
}

// readPassword asks twice on a terminal, or reads one line from a pipe.
func readPassword(stdin io.Reader, prompt io.Writer) ([]byte, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(prompt, "Password: ")
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		fmt.Fprint(prompt, "Again: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		if !bytes.Equal(a, b) {
			return nil, errors.New("passwords differ")
		}
		return a, nil
	}
	line, err := bufio.NewReader(stdin).ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read password from stdin: %w", err)
	}
	line = bytes.TrimRight(line, "\r\n")
	if len(line) == 0 {
		return nil, errors.New("empty password")
	}
	return line, nil
}

// check validates everything serve would load, without listening.
func check(c *cli.Context, stdout io.Writer) error {
	cfg, err := buildConfig(c)
	if err != nil {
		return cli.Exit(err, 1)
	}
	pol, err := acl.Compile(cfg.ACL, acl.Options{})
	if err != nil {
		return cli.Exit(err, 1)
	}
	users := 0
	if cfg.Htpasswd != "" {
		a, err := auth.New(cfg.Htpasswd, cfg.Groups, cfg.Auth)
		if err != nil {
			return cli.Exit(err, 1)
		}
		users = a.Users()
	}
	if cfg.TLSCert != "" {
		// Loads the certificate, key and client CAs as serve would.
		if _, err := tlsconf.New(tlsconf.Options{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, ClientCAFile: cfg.TLSClientCA}); err != nil {
			return cli.Exit(err, 1)
		}
	}
	fmt.Fprintf(stdout, "ok: %d rules, %d users, listen %s\n", len(pol.Rules()), users, cfg.Listen)
	return nil
}

// explain prints the decision for host:port for every address it
// resolves to, exactly as the proxy would decide it.
func explain(c *cli.Context, stdout io.Writer) error {
	if c.NArg() != 1 {
		return cli.Exit("usage: wsegress explain [--user U] host:port", 2)
	}
	cfg, err := buildConfig(c)
	if err != nil {
		return cli.Exit(err, 1)
	}
	t, err := acl.ParseTarget(c.Args().First())
	if err != nil {
		return cli.Exit(err, 1)
	}
	pol, err := acl.Compile(cfg.ACL, acl.Options{})
	if err != nil {
		return cli.Exit(err, 1)
	}
	who := acl.Subject{User: c.String("user")}
	if who.User != "" && cfg.Htpasswd != "" {
		a, err := auth.New(cfg.Htpasswd, cfg.Groups, cfg.Auth)
		if err != nil {
			return cli.Exit(err, 1)
		}
		who.Groups = a.Groups(who.User)
	}
	fmt.Fprintf(stdout, "target %s, user %q, groups [%s]\n", t, who.User, strings.Join(who.Groups, " "))
	if cfg.Upstream != nil {
		d := pol.DecideName(t, who)
		fmt.Fprintf(stdout, "via upstream (names only): %s by %q: %s\n", verdict(d), d.Rule, d.Reason)
		return nil
	}
	var addrs []netip.Addr
	if ip, ok := t.Addr(); ok {
		addrs = []netip.Addr{ip}
	} else {
		ctx, cancel := context.WithTimeout(c.Context, 5*time.Second)
		defer cancel()
		addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", t.Host)
		if err != nil {
			return cli.Exit(fmt.Errorf("resolve %s: %w", t.Host, err), 1)
		}
	}
	for _, ip := range addrs {
		d := pol.Decide(t, ip.Unmap(), who)
		fmt.Fprintf(stdout, "%s: %s by %q: %s\n", ip.Unmap(), verdict(d), d.Rule, d.Reason)
	}
	return nil
}

// verdict is "allow", "deny" or "would_deny" (a reported deny: the tunnel
// goes on), with a note when the allowing rule has websocket_only.
func verdict(d acl.Decision) string {
	if d.WebSocketOnly {
		return d.Result() + " (websocket_only)"
	}
	return d.Result()
}
