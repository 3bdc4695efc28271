// Package pgcluster runs a throwaway PostgreSQL cluster from the machine's server binaries, for
// tests, the withpg tool and the broker's demo mode.
//
// A cluster listens on 127.0.0.1 only and trusts every local connection, so it must never hold
// data that matters. Its directory contains:
//
//	data/          the data directory, created by initdb on the first start
//	run/           unix_socket_directories
//	postgres.log   the server log, whose tail is added to start errors
//
// fsync is off: data survives a crash of the server processes (see [Cluster.Kill]) but not a crash
// of the machine.
//
// When the process runs as root, initdb and postgres run as the OS user "postgres" (which the
// Debian package postgresql creates), because both refuse to run as root. Start fails with a clear
// error when that user does not exist.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// SuperUser is the database superuser of every cluster, and the user in [Cluster.URL].
const SuperUser = "postgres"

const (
	// defaultTimeout bounds start and stop when the context has no deadline, and Stop and Kill,
	// which take no context.
	defaultTimeout = 60 * time.Second

	// portAttempts is how many free ports Start tries when Options.Port is 0, because another
	// process can take a free port between the check and the server's bind.
	portAttempts = 3

	// maxSocketPathLength is the longest unix socket path that Linux accepts (sun_path is 108
	// bytes, including the terminating NUL).
	maxSocketPathLength = 107
)

// Options configures [Start].
type Options struct {
	// Dir is the cluster's directory, created if missing. The package doc shows its layout.
	// When data/ already contains a cluster, Start reuses it, so its data survives across runs.
	// Empty means a new directory under os.TempDir().
	// [Cluster.Remove] deletes only what Start created: the whole directory when Dir was empty.
	Dir string

	// Port is the TCP port on 127.0.0.1. Zero picks a free port.
	Port int

	// Logger receives the start and stop events. Nil discards them.
	Logger *slog.Logger
}

// Cluster is a PostgreSQL server started by [Start]. Its methods are safe for concurrent use.
type Cluster struct {
	binDir    string
	dir       string
	dataDir   string
	socketDir string
	logFile   string
	port      int
	owner     *osUser // nil when the server runs as the current user
	logger    *slog.Logger

	// created lists the paths that Start created, in creation order, for Remove.
	created []string

	// mu serializes start and stop, and guards running.
	mu      sync.Mutex
	running bool
}

// Start creates the cluster directory, runs initdb when the data directory is new, starts the
// server with pg_ctl and returns once the server accepts connections. On error, Start stops the
// server and deletes what it created.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	binDir, err := BinDir()
	if err != nil {
		return nil, err
	}
	owner, err := lookupServerUser()
	if err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{binDir: binDir, owner: owner, logger: logger}

	if err := c.prepare(ctx, opts.Dir); err != nil {
		return nil, errors.Join(err, c.removeCreated())
	}

	if opts.Port != 0 {
		c.port = opts.Port
		err = c.start(ctx)
	} else {
		err = c.startOnFreePort(ctx)
	}
	if err != nil {
		return nil, errors.Join(err, c.removeCreated())
	}
	return c, nil
}

// URL returns the URL of database on this cluster, connecting as [SuperUser] over TCP without
// TLS or a password.
func (c *Cluster) URL(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(SuperUser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port that the server listens on at 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// Dir returns the cluster directory.
func (c *Cluster) Dir() string { return c.dir }

// Stop shuts the server down with pg_ctl's fast mode, which rolls back open transactions and
// closes connections. The data stays on disk. Stopping a stopped cluster does nothing.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stop("fast")
}

// Kill shuts the server down with pg_ctl's immediate mode, which ends the server processes without
// a checkpoint, as a crash would. The next start runs crash recovery. Killing a stopped cluster
// does nothing.
func (c *Cluster) Kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stop("immediate")
}

// Restart stops the server if it runs, then starts it again on the same port and data. It also
// brings a cluster back after Stop or Kill.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.stop("fast"); err != nil {
		return err
	}
	return c.startLocked(ctx)
}

// Remove stops the server, falling back to immediate mode when a fast stop fails, and deletes what
// Start created. The cluster cannot be used afterwards.
func (c *Cluster) Remove() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	stopErr := c.stop("fast")
	if stopErr != nil {
		if err := c.stop("immediate"); err != nil {
			return errors.Join(stopErr, err)
		}
	}
	return c.removeCreated()
}

// start starts the server on c.port.
func (c *Cluster) start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startLocked(ctx)
}

// startOnFreePort starts the server on a free port, trying another one when the chosen port was
// taken before the server could bind it.
func (c *Cluster) startOnFreePort(ctx context.Context) error {
	var err error
	for attempt := 1; attempt <= portAttempts; attempt++ {
		c.port, err = freePort()
		if err != nil {
			return err
		}
		err = c.start(ctx)
		if err == nil || !strings.Contains(err.Error(), "could not bind") {
			return err
		}
		c.logger.Warn("postgres port was taken, trying another", "port", c.port, "attempt", attempt)
	}
	return err
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	return port, nil
}

// startLocked writes the per-start settings, runs pg_ctl start and waits for a connection to
// succeed. The caller holds c.mu.
func (c *Cluster) startLocked(ctx context.Context) error {
	if c.running {
		return nil
	}
	if err := c.writeSettings(); err != nil {
		return err
	}

	timeout := timeoutFrom(ctx)
	out, err := c.command(ctx, "pg_ctl", "start", "--silent", "--wait",
		"--timeout", strconv.Itoa(int(timeout.Seconds())),
		"--pgdata", c.dataDir, "--log", c.logFile).CombinedOutput()
	if err != nil {
		// pg_ctl may give up while the postmaster still starts, so make sure it is gone.
		_ = c.command(context.Background(), "pg_ctl", "stop", "--silent", "--mode", "immediate",
			"--pgdata", c.dataDir).Run()
		return fmt.Errorf("start postgres on 127.0.0.1:%d in %s: %w: %s\nserver log %s ends with:\n%s",
			c.port, c.dir, err, strings.TrimSpace(string(out)), c.logFile, c.logTail())
	}
	c.running = true

	if err := c.waitReady(ctx); err != nil {
		if stopErr := c.stop("immediate"); stopErr != nil {
			return errors.Join(err, stopErr)
		}
		return err
	}
	c.logger.Info("postgres cluster started", "port", c.port, "dir", c.dir)
	return nil
}

// waitReady connects until the server accepts a connection. pg_ctl --wait already waits for the
// postmaster to report "ready", so this normally succeeds on the first try.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, timeoutFrom(ctx))
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for postgres on 127.0.0.1:%d to accept connections: %w", c.port, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop runs pg_ctl stop in the given shutdown mode. The caller holds c.mu.
func (c *Cluster) stop(mode string) error {
	if !c.running {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultTimeout)
	defer cancel()
	out, err := c.command(ctx, "pg_ctl", "stop", "--silent", "--wait", "--mode", mode,
		"--timeout", strconv.Itoa(int(defaultTimeout.Seconds())), "--pgdata", c.dataDir).CombinedOutput()
	if err != nil && c.serverGone(ctx) {
		// The server stopped by other means, such as a crash or a kill from outside.
		c.running = false
		c.logger.Warn("postgres cluster was already stopped", "port", c.port, "dir", c.dir)
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop postgres on 127.0.0.1:%d in %s (mode %s): %w: %s",
			c.port, c.dir, mode, err, strings.TrimSpace(string(out)))
	}
	c.running = false
	c.logger.Info("postgres cluster stopped", "port", c.port, "dir", c.dir, "mode", mode)
	return nil
}

// serverGone reports whether pg_ctl status finds no server running in the data directory.
func (c *Cluster) serverGone(ctx context.Context) bool {
	err := c.command(ctx, "pg_ctl", "status", "--pgdata", c.dataDir).Run()
	var exitErr *exec.ExitError
	// pg_ctl status exits with 3 when no server runs, and with 4 when the data directory is gone.
	return errors.As(err, &exitErr) && (exitErr.ExitCode() == 3 || exitErr.ExitCode() == 4)
}

// removeCreated deletes the paths that Start created, newest first.
func (c *Cluster) removeCreated() error {
	var errs []error
	for i := len(c.created) - 1; i >= 0; i-- {
		if err := os.RemoveAll(c.created[i]); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", c.created[i], err))
		}
	}
	c.created = nil
	return errors.Join(errs...)
}

// command returns a command that runs one of the server binaries as the server user, in the
// cluster directory, without the caller's PG* environment variables, which would otherwise
// override settings such as the port.
func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Dir = c.dir
	cmd.SysProcAttr = c.owner.sysProcAttr()
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}

// logTail returns the last lines of the server log, for start errors.
func (c *Cluster) logTail() string {
	data, err := os.ReadFile(c.logFile)
	if err != nil {
		return fmt.Sprintf("(cannot read the server log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	const maxLines = 20
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "\n")
}

// timeoutFrom returns the time left before the context's deadline, or defaultTimeout when it has
// none. The result is at least one second, the smallest pg_ctl --timeout.
func timeoutFrom(ctx context.Context) time.Duration {
	deadline, ok := ctx.Deadline()
	if !ok {
		return defaultTimeout
	}
	return max(time.Until(deadline).Truncate(time.Second), time.Second)
}
