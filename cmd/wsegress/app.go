package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/wsegress/wsegress/proxy"
)

// version is set at build time with -ldflags "-X main.version=..."; when
// empty, the module version from the build info is used.
var version = ""

// run is the whole program as a function of its arguments and streams, so
// tests can drive real flags.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	app := &cli.App{
		Name:      "wsegress",
		Usage:     "HTTP CONNECT forward proxy for outbound WebSocket clients",
		Writer:    stdout,
		ErrWriter: stderr,
		// Port lists in rules ("host:80,443") contain commas, so repeated
		// flags and env vars separate rules with ";" instead.
		SliceFlagSeparator: ";",
		// Errors go back to main, which alone prints and exits (cli's
		// default handler calls os.Exit from inside run).
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			{
				Name:  "serve",
				Usage: "run the proxy",
				Flags: serveFlags(),
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return serve(c, stderr)
				},
			},
			passwdCommand(stdin, stdout, stderr),
			healthcheckCommand(stdout),
			{
				Name:  "check",
				Usage: "validate flags, config file and users without starting the proxy",
				Flags: serveFlags(),
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return check(c, stdout)
				},
				ArgsUsage: " ",
			},
			{
				Name:      "explain",
				Usage:     "print which ACL rule decides host:port and why (resolves names, dials nothing)",
				ArgsUsage: "host:port",
				Flags: append(serveFlags(),
					&cli.StringFlag{Name: "user", Usage: "decide for this user (and the groups it belongs to)"}),
				Action: func(c *cli.Context) error { return explain(c, stdout) },
			},
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					fmt.Fprintln(stdout, "wsegress", versionString())
					return nil
				},
			},
		},
	}
	return app.RunContext(ctx, args)
}

// noArgs refuses stray arguments: urfave/cli stops parsing flags at the
// first one, so "serve x --htpasswd f" would silently run without auth.
func noArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("unexpected argument %q: flags go before arguments, and %s takes none", c.Args().First(), c.Command.Name), 2)
	}
	return nil
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// newLogger builds the slog logger the flags ask for.
func newLogger(c *cli.Context, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", c.String("log-level"))
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.String("log-format") {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: use text or json", c.String("log-format"))
	}
}

// serve runs the proxy until SIGINT/SIGTERM, reloading on SIGHUP and
// handing its sockets to a new process on SIGUSR2.
func serve(c *cli.Context, stderr io.Writer) error {
	// Catch SIGHUP and SIGUSR2 before anything else: their default action
	// would kill the process during a slow start.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)

	log, err := newLogger(c, stderr)
	if err != nil {
		return cli.Exit(err, 2)
	}
	cfg, err := buildConfig(c)
	if err != nil {
		return cli.Exit(err, 2)
	}
	if upstreamPasswordInArgs(c) {
		log.Warn("--upstream carries a password on the command line, where any local user can read it (ps); " +
			"pass the URL in $WSEGRESS_UPSTREAM or --upstream-file instead")
	}
	srv, err := proxy.New(cfg, log)
	if err != nil {
		return cli.Exit(err, 2)
	}

	addrs := map[string]string{roleProxy: cfg.Listen, roleTLS: cfg.TLSListen, roleMetrics: cfg.MetricsListen}
	socks, err := openSockets(log, addrs, c.String("pid-file"))
	if err != nil {
		return cli.Exit(err, 2)
	}
	defer socks.stop()
	serveFn := map[string]func(net.Listener) error{roleProxy: srv.Serve, roleTLS: srv.ServeTLS, roleMetrics: srv.ServeMetrics}
	lns := make(map[string][]net.Listener)
	for _, role := range []string{roleProxy, roleTLS, roleMetrics} {
		l, err := socks.listen(role, addrs[role])
		if err != nil {
			for _, ls := range lns {
				for _, ln := range ls {
					ln.Close()
				}
			}
			return err
		}
		lns[role] = l
	}
	errc := make(chan error, len(lns[roleProxy])+len(lns[roleTLS])+len(lns[roleMetrics]))
	for _, role := range []string{roleMetrics, roleTLS, roleProxy} {
		for _, ln := range lns[role] {
			go func() { errc <- serveFn[role](ln) }()
		}
	}
	if tookOver, err := socks.ready(); err != nil {
		log.Error("handover: could not tell the previous process", "err", err)
	} else if tookOver {
		srv.RecordHandover(true)
		log.Info("took over from the previous process", "pid", os.Getpid())
	}

	for {
		select {
		case <-c.Context.Done():
			socks.stop()
			ctx, cancel := context.WithTimeout(context.Background(), c.Duration("drain-timeout"))
			err := srv.Shutdown(ctx)
			cancel()
			if err != nil {
				log.Warn("drain timeout: closed remaining tunnels", "err", err)
			}
			log.Info("stopped")
			return nil
		case <-socks.handedOver():
			// The new process is ready and accepts on the same sockets:
			// stop accepting, keep the tunnels until they end or the
			// drain timeout, then exit.
			ctx, cancel := context.WithTimeout(context.Background(), c.Duration("drain-timeout"))
			err := srv.Handover(ctx)
			cancel()
			if err != nil {
				log.Warn("drain timeout: closed remaining tunnels", "err", err)
			}
			log.Info("stopped after handover")
			return nil
		case err := <-errc:
			if errors.Is(err, http.ErrServerClosed) {
				continue
			}
			return err
		case <-usr2:
			log.Info("SIGUSR2: starting a new process to hand the sockets to")
			go func() {
				if err := socks.upgrade(); err != nil {
					srv.RecordHandover(false)
					log.Error("handover failed; this process keeps serving", "err", err)
				}
			}()
		case <-hup:
			newCfg, err := buildConfig(c)
			if err == nil {
				err = srv.Reload(newCfg)
			}
			if err != nil {
				log.Error("reload failed; keeping the previous configuration", "err", err)
				continue
			}
			log.Info("reloaded", "tunnels", srv.OpenTunnels())
		}
	}
}
