// Command withpg runs a command with a throwaway PostgreSQL cluster.
//
// Usage:
//
//	go run ./internal/tools/withpg -- CMD [ARG...]
//
// withpg starts a cluster with pgcluster, runs CMD with BROKER_TEST_DATABASE_URL set to the URL of
// the cluster's postgres database, and stops and removes the cluster when CMD exits. It forwards
// SIGINT and SIGTERM to CMD and exits with CMD's exit code (128 plus the signal number when a
// signal ended CMD). `go run` itself exits with 1 whenever the program fails, so scripts that
// need the exact code build withpg first. When BROKER_TEST_DATABASE_URL is already set, withpg
// runs CMD without a cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/acubroker/acubroker/internal/pgcluster"
)

// databaseURLEnv names the variable that internal/testdb reads.
const databaseURLEnv = "BROKER_TEST_DATABASE_URL"

// exitSetupFailed is the exit code when withpg fails before or after CMD runs.
const exitSetupFailed = 2

func main() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: withpg [-- ] CMD [ARG...]\n\n"+
			"Runs CMD with %s set to the postgres database of a throwaway PostgreSQL\n"+
			"cluster on 127.0.0.1, then removes the cluster. When %s is already set,\n"+
			"runs CMD without a cluster. Exits with CMD's exit code.\n", databaseURLEnv, databaseURLEnv)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(exitSetupFailed)
	}
	os.Exit(run(flag.Args()))
}

// run runs args under a cluster and returns the exit code for withpg.
func run(args []string) int {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "withpg")

	// Catch the signals before the cluster starts, so Ctrl-C during startup still removes it.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)

	if os.Getenv(databaseURLEnv) != "" {
		return runCommand(logger, args, os.Environ(), signals)
	}

	cluster, code := startCluster(logger, signals)
	if cluster == nil {
		return code
	}

	env := append(os.Environ(), databaseURLEnv+"="+cluster.URL("postgres"))
	code = runCommand(logger, args, env, signals)
	if !removeCluster(logger, cluster) && code == 0 {
		code = exitSetupFailed
	}
	return code
}

// startCluster starts a cluster. A signal during startup cancels it: startCluster then returns a
// nil cluster and the shell's exit code for that signal.
func startCluster(logger *slog.Logger, signals <-chan os.Signal) (*pgcluster.Cluster, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	type result struct {
		cluster *pgcluster.Cluster
		err     error
	}
	started := make(chan result, 1)
	go func() {
		cluster, err := pgcluster.Start(ctx, pgcluster.Options{Logger: logger})
		started <- result{cluster, err}
	}()

	select {
	case r := <-started:
		if r.err != nil {
			logger.Error("start the PostgreSQL cluster", "err", r.err)
			return nil, exitSetupFailed
		}
		return r.cluster, 0
	case sig := <-signals:
		logger.Warn("signal received while the cluster starts; stopping", "signal", sig)
		cancel()
		// Start removes what it made when it fails, so only a finished start needs a Remove.
		if r := <-started; r.err == nil {
			removeCluster(logger, r.cluster)
		}
		return nil, 128 + signalNumber(sig)
	}
}

// signalNumber returns the number of sig, or 0 for a signal that is not a syscall.Signal.
func signalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return 0
}

// runCommand runs args with env, forwarding the signals that arrive on signals, and returns its
// exit code.
func runCommand(logger *slog.Logger, args, env []string, signals <-chan os.Signal) int {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdin = os.Stdin
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		logger.Error("start the command", "command", args[0], "err", err)
		return exitSetupFailed
	}

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-signals:
			logger.Info("forwarding signal to the command", "signal", sig, "pid", cmd.Process.Pid)
			if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
				logger.Warn("forward signal", "signal", sig, "pid", cmd.Process.Pid, "err", err)
			}
		case err := <-done:
			return exitCode(logger, args[0], err)
		}
	}
}

// exitCode converts the result of cmd.Wait into an exit code, using the shell's 128+N for a
// command ended by signal N.
func exitCode(logger *slog.Logger, name string, err error) int {
	if err == nil {
		return 0
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		logger.Error("wait for the command", "command", name, "err", err)
		return exitSetupFailed
	}
	if status, ok := exitErr.Sys().(syscall.WaitStatus); ok && status.Signaled() {
		return 128 + int(status.Signal())
	}
	return exitErr.ExitCode()
}

// removeCluster stops and deletes the cluster and reports whether that worked.
func removeCluster(logger *slog.Logger, cluster *pgcluster.Cluster) bool {
	if err := cluster.Remove(); err != nil {
		logger.Error("remove the PostgreSQL cluster", "dir", cluster.Dir(), "err", err)
		return false
	}
	return true
}
