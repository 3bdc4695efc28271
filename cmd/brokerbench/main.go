// Command brokerbench benchmarks the broker: throughput against the
// Postgres ceiling, waits under contention, hand-offs across replicas,
// sign-ins over many acquires, and latency and memory with many
// connections. It prints a table and writes OUT/results.json.
//
// Usage:
//
//	go run ./cmd/brokerbench [flags]
//
// By default it starts a throwaway PostgreSQL cluster, an in-process
// Acumatica emulator and `broker serve` processes, all on 127.0.0.1, and
// runs every scenario in about five minutes on a 2-core machine. -quick
// runs every scenario scaled down to a few seconds. docs/benchmarks.md
// describes the scenarios and the latest figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/acubroker/acubroker/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "brokerbench:", err)
		os.Exit(1)
	}
}

// errUsage reports invalid flags, which the flag set has already printed.
var errUsage = errors.New("invalid flags")

// hiddenFlags are left out of the usage text.
var hiddenFlags = map[string]bool{"cpuprofile": true}

// options are the flags that are not fields of bench.Config.
type options struct {
	quick   bool
	timeout time.Duration
	ext     bench.External
}

// run parses args, runs the benchmark, prints the table to stdout and
// writes the results file.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, opts, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil)).With("component", "brokerbench")
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()

	res, runErr := bench.Run(ctx, cfg)
	if res == nil {
		return runErr
	}
	path := filepath.Join(cfg.OutDir, "results.json")
	if err := bench.WriteJSON(path, res); err != nil {
		return errors.Join(runErr, err)
	}
	if err := bench.WriteTable(stdout, res); err != nil {
		return errors.Join(runErr, err)
	}
	fmt.Fprintf(stdout, "\nwrote %s\n", path)
	return runErr
}

// parseArgs returns the configuration that args select. Flags start from
// bench.DefaultConfig, or from bench.QuickConfig with -quick; flags given
// explicitly override either.
func parseArgs(args []string, stderr io.Writer) (bench.Config, options, error) {
	cfg := bench.DefaultConfig()
	var opts options
	fs := newFlagSet(&cfg, &opts, stderr)
	if err := fs.Parse(args); err != nil {
		return cfg, opts, usageError(err)
	}
	if opts.quick {
		cfg = bench.QuickConfig()
		fs = newFlagSet(&cfg, &opts, stderr)
		if err := fs.Parse(args); err != nil {
			return cfg, opts, usageError(err)
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return cfg, opts, errUsage
	}
	if len(opts.ext.Addrs) > 0 {
		ext := opts.ext
		cfg.External = &ext
	}
	return cfg, opts, nil
}

func usageError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return errUsage
}

// newFlagSet binds the flags to cfg and opts, with their current values as
// defaults.
func newFlagSet(cfg *bench.Config, opts *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("brokerbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(fs) }

	fs.BoolVar(&opts.quick, "quick", false, "run every scenario scaled down to a few seconds, to check that the benchmark works")
	fs.DurationVar(&opts.timeout, "timeout", 9*time.Minute, "stop the run after this long")
	fs.Var((*stringList)(&cfg.Scenarios), "scenarios", "comma-separated scenarios to run: "+
		strings.Join(bench.AllScenarios, ", "))
	fs.StringVar((*string)(&cfg.Mode), "mode", string(cfg.Mode),
		"how to run the brokers: process (broker serve processes) or inprocess")
	fs.StringVar(&cfg.OutDir, "out", cfg.OutDir, "directory of results.json and the broker logs")
	fs.StringVar(&cfg.BrokerBinary, "broker", cfg.BrokerBinary, "broker executable for -mode process; empty builds ./cmd/broker")
	fs.StringVar(&cfg.BrokerLogLevel, "broker-log-level", cfg.BrokerLogLevel, "log level of the brokers: debug, info, warn or error")
	fs.IntVar(&cfg.PoolMaxConns, "pool-max-conns", cfg.PoolMaxConns,
		"pool_max_conns of the brokers' database pools; 0 keeps pgxpool's default, max(4, CPUs)")
	fs.StringVar(&cfg.AdminURL, "admin-url", cfg.AdminURL, "PostgreSQL superuser URL of a server on 127.0.0.1 where "+
		"the benchmark may create and drop databases; empty starts a throwaway cluster")
	fs.BoolVar(&cfg.Durable, "durable", cfg.Durable, "turn fsync on in the cluster the benchmark starts, as in production")
	fs.BoolVar(&cfg.Diagnose, "diagnose", cfg.Diagnose, "explain the throughput figures: time the ceiling with a "+
		"NOTIFY per release too, and report the broker database's statements and wait events")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", cfg.CPUProfile, "write a CPU profile of the throughput scenario's "+
		"broker phases to this file; needs -mode inprocess")

	fs.Var((*intList)(&cfg.Throughput.Callers), "callers", "comma-separated caller counts of the throughput scenario")
	fs.DurationVar(&cfg.Throughput.Duration, "level-duration", cfg.Throughput.Duration,
		"length of each caller count in each round of the throughput and ceiling scenarios")
	fs.IntVar(&cfg.Throughput.Rounds, "rounds", cfg.Throughput.Rounds, "rounds of the throughput and ceiling scenarios")

	fs.IntVar(&cfg.Contention.Callers, "contention-callers", cfg.Contention.Callers, "callers of the contention scenario")
	fs.IntVar(&cfg.Contention.Seats, "contention-seats", cfg.Contention.Seats, "seats of the contention scenario")
	fs.DurationVar(&cfg.Contention.Hold, "hold", cfg.Contention.Hold, "how long each contention caller holds a lease")
	fs.IntVar(&cfg.Contention.Cycles, "contention-cycles", cfg.Contention.Cycles, "leases each contention caller takes")
	fs.IntVar(&cfg.Contention.Replicas, "contention-replicas", cfg.Contention.Replicas,
		"brokers the contention callers are spread over")

	fs.IntVar(&cfg.Handoff.Handoffs, "handoffs", cfg.Handoff.Handoffs, "hand-offs across replicas to time")
	fs.IntVar(&cfg.Handoff.Notifies, "notifies", cfg.Handoff.Notifies, "raw LISTEN/NOTIFY round trips to time")

	fs.IntVar(&cfg.Reuse.Acquires, "reuse-acquires", cfg.Reuse.Acquires, "acquires of the seat reuse scenario")
	fs.IntVar(&cfg.Reuse.Seats, "reuse-seats", cfg.Reuse.Seats, "seats (and callers) of the seat reuse scenario")
	fs.IntVar(&cfg.Reuse.AdvanceEvery, "reuse-advance-every", cfg.Reuse.AdvanceEvery,
		"acquires between two moves of the emulator's clock")
	fs.DurationVar(&cfg.Reuse.Advance, "reuse-advance", cfg.Reuse.Advance, "how far each move takes the emulator's clock")

	fs.IntVar(&cfg.Scale.Connections, "scale-connections", cfg.Scale.Connections, "connections of the large scale deployment")
	fs.IntVar(&cfg.Scale.Seats, "scale-seats", cfg.Scale.Seats, "seats of each scale connection")
	fs.IntVar(&cfg.Scale.Callers, "scale-callers", cfg.Scale.Callers, "callers of the scale scenario")
	fs.IntVar(&cfg.Scale.Acquires, "scale-acquires", cfg.Scale.Acquires, "acquires timed per scale deployment")

	fs.Var((*stringList)(&opts.ext.Addrs), "addrs", "comma-separated addresses of running brokers on 127.0.0.1 to "+
		"benchmark instead of starting them (throughput, ceiling, contention and handoff only)")
	fs.StringVar(&opts.ext.Connection, "connection", "", "with -addrs: the connection to acquire")
	fs.StringVar(&opts.ext.DatabaseURL, "database-url", "", "with -addrs: the brokers' PostgreSQL URL")
	fs.StringVar(&opts.ext.EmulatorURL, "emulator-url", "", "with -addrs: the emulator's base URL")
	return fs
}

func usage(fs *flag.FlagSet) {
	out := fs.Output()
	fmt.Fprint(out, "Usage: brokerbench [flags]\n\n"+
		"Benchmarks the broker on 127.0.0.1 and prints a table; writes OUT/results.json.\n\nFlags:\n")
	fs.VisitAll(func(f *flag.Flag) {
		if hiddenFlags[f.Name] {
			return
		}
		name, help := flag.UnquoteUsage(f)
		fmt.Fprintf(out, "  -%s %s\n    \t%s", f.Name, name, help)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
			fmt.Fprintf(out, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(out)
	})
}

// stringList is a comma-separated flag value.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// intList is a comma-separated flag value of integers.
type intList []int

func (l *intList) String() string {
	parts := make([]string, len(*l))
	for i, n := range *l {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

func (l *intList) Set(v string) error {
	*l = nil
	for _, s := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		*l = append(*l, n)
	}
	return nil
}
