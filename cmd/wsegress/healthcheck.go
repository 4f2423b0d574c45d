package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/urfave/cli/v2"
)

// healthcheckCommand probes a health endpoint and exits 0 on a 2xx answer,
// 1 otherwise. It exists for container images without curl or wget
// (Dockerfile HEALTHCHECK runs "wsegress healthcheck").
func healthcheckCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "healthcheck",
		Usage:     "GET a health URL (default /healthz of the metrics listener); exit 0 on 2xx, else 1",
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "url", Value: "http://127.0.0.1:9090/healthz", Usage: "URL to GET", EnvVars: env("healthcheck-url")},
			&cli.DurationFlag{Name: "timeout", Value: 3 * time.Second, Usage: "bound on the whole request"},
		},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			return healthcheck(c.Context, c.String("url"), c.Duration("timeout"), stdout)
		},
	}
}

func healthcheck(ctx context.Context, rawURL string, timeout time.Duration, stdout io.Writer) error {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return cli.Exit(fmt.Sprintf("--url %q: give an http:// or https:// URL", rawURL), 2)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return cli.Exit(fmt.Sprintf("--url %q: %v", rawURL, err), 2)
	}
	// No proxy from the environment: the check is of this process.
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return cli.Exit(fmt.Sprintf("unhealthy: %v", err), 1)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return cli.Exit(fmt.Sprintf("unhealthy: %s: %s %q", u.Redacted(), resp.Status, body), 1)
	}
	fmt.Fprintf(stdout, "healthy: %s: %s\n", u.Redacted(), resp.Status)
	return nil
}
