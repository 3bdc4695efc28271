// Command broker runs acubroker, the gRPC broker of Acumatica API sessions.
//
// Usage:
//
//	broker serve   [flags]   serve SessionService with the connections of a config file
//	broker migrate [flags]   apply the database migrations and exit
//	broker rotate-keys [flags]   re-encrypt the stored session tokens under the active key
//	broker demo    [flags]   start a local PostgreSQL, the Acumatica emulator and the broker
//
// Run "broker COMMAND -h" for the flags of a command. Every flag has an
// environment variable fallback, named in its help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `broker runs acubroker, the gRPC broker of Acumatica API sessions.

Usage:
  broker serve   [flags]   serve SessionService with the connections of a config file
  broker migrate [flags]   apply the database migrations and exit
  broker rotate-keys [flags]   re-encrypt the stored session tokens under the active key
  broker demo    [flags]   start a local PostgreSQL, the Acumatica emulator and the broker

Run "broker COMMAND -h" for the flags of a command.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch args[0] {
	case "serve":
		err = serveCommand(ctx, args[1:], stderr)
	case "migrate":
		err = migrateCommand(ctx, args[1:], stderr)
	case "demo":
		err = demoCommand(ctx, args[1:], stdout, stderr)
	case "rotate-keys":
		err = rotateKeysCommand(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "broker: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "broker %s: %v\n", args[0], err)
		return 1
	}
}

// errUsage marks a flag error that the flag package already printed.
var errUsage = errors.New("usage error")

// envOr returns the environment variable name's value, or fallback.
func envOr(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return fallback
}
