// Command wsegress is an HTTP CONNECT forward proxy for outbound WebSocket
// clients. main only wires signals to run; run builds the command line.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsegress:", err)
		os.Exit(1)
	}
}
