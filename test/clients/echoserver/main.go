package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: echoserver certs|serve|tap|compare [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "certs":
		err = runCerts(os.Args[2:])
	case "serve":
		err = runServe(os.Args[2:])
	case "tap":
		err = runTap(os.Args[2:])
	case "compare":
		err = runCompare(os.Args[2:], os.Stdout)
	default:
		err = fmt.Errorf("unknown subcommand %q (want certs, serve, tap or compare)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "echoserver:", err)
		os.Exit(1)
	}
}
