package pgcluster_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acubroker/acubroker/internal/pgcluster"
)

// startCluster starts a cluster and removes it when the test ends.
func startCluster(t *testing.T, opts pgcluster.Options) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Remove(); err != nil {
			t.Errorf("Remove: %v", err)
		}
	})
	return c
}

// connect opens a connection to database on c, closed when the test ends.
func connect(t *testing.T, c *pgcluster.Cluster, database string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL(database))
	if err != nil {
		t.Fatalf("connect to %s: %v", c.URL(database), err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func countRows(t *testing.T, c *pgcluster.Cluster) int {
	t.Helper()
	conn := connect(t, c, "postgres")
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM kept").Scan(&n); err != nil {
		t.Fatalf("count rows in kept: %v", err)
	}
	return n
}

func TestStartAcceptsConnections(t *testing.T) {
	t.Parallel()
	c := startCluster(t, pgcluster.Options{})
	conn := connect(t, c, "postgres")

	var user, listen, encoding string
	var port int
	err := conn.QueryRow(context.Background(),
		"SELECT current_user, current_setting('listen_addresses'), current_setting('port')::int, "+
			"pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'postgres'").
		Scan(&user, &listen, &port, &encoding)
	if err != nil {
		t.Fatalf("query settings: %v", err)
	}
	if user != pgcluster.SuperUser {
		t.Errorf("current_user = %q, want %q", user, pgcluster.SuperUser)
	}
	if listen != "127.0.0.1" {
		t.Errorf("listen_addresses = %q, want 127.0.0.1", listen)
	}
	if port != c.Port() {
		t.Errorf("port = %d, want %d", port, c.Port())
	}
	if encoding != "UTF8" {
		t.Errorf("encoding = %q, want UTF8", encoding)
	}

	var socketDir string
	if err := conn.QueryRow(context.Background(), "SHOW unix_socket_directories").Scan(&socketDir); err != nil {
		t.Fatalf("show unix_socket_directories: %v", err)
	}
	if want := `"` + filepath.Join(c.Dir(), "run") + `"`; socketDir != want {
		t.Errorf("unix_socket_directories = %q, want %q", socketDir, want)
	}
}

func TestURL(t *testing.T) {
	t.Parallel()
	c := startCluster(t, pgcluster.Options{})

	want := "postgres://postgres@127.0.0.1:" + strconv.Itoa(c.Port()) + "/app?sslmode=disable"
	if got := c.URL("app"); got != want {
		t.Errorf("URL(app) = %q, want %q", got, want)
	}
	if _, err := url.Parse(c.URL("app")); err != nil {
		t.Errorf("URL(app) does not parse: %v", err)
	}

	mustExec(t, connect(t, c, "postgres"), "CREATE DATABASE app")
	var name string
	if err := connect(t, c, "app").QueryRow(context.Background(), "SELECT current_database()").Scan(&name); err != nil {
		t.Fatalf("query current_database: %v", err)
	}
	if name != "app" {
		t.Errorf("current_database() = %q, want app", name)
	}

	// The port of a running cluster is taken, so a second cluster on it must fail to start.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	second, err := pgcluster.Start(ctx, pgcluster.Options{Port: c.Port()})
	if err == nil {
		_ = second.Remove()
		t.Fatalf("Start on taken port %d succeeded, want an error", c.Port())
	}
	// The error carries the tail of the server log, which names the cause.
	if !strings.Contains(err.Error(), "could not bind") {
		t.Errorf("Start on a taken port: error %q does not contain %q", err, "could not bind")
	}
}

func TestRestartKillAndRemove(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = c.Remove() })
	port := c.Port()
	conn := connect(t, c, "postgres")
	mustExec(t, conn, "CREATE TABLE kept (n int); INSERT INTO kept SELECT generate_series(1, 100)")

	// Restart keeps the port and the data, and ends open connections.
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if c.Port() != port {
		t.Errorf("port after Restart = %d, want %d", c.Port(), port)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Error("a connection opened before Restart still works, want it closed by the stop")
	}
	if n := countRows(t, c); n != 100 {
		t.Errorf("rows after Restart = %d, want 100", n)
	}

	// Kill stops the server without a checkpoint, and Restart recovers the data.
	if err := c.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	assertServerDown(t, c, "Kill")
	if err := c.Kill(); err != nil {
		t.Errorf("second Kill: %v, want nil for a stopped cluster", err)
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("Restart after Kill: %v", err)
	}
	if n := countRows(t, c); n != 100 {
		t.Errorf("rows after crash recovery = %d, want 100", n)
	}

	// Remove stops the server and deletes the temporary directory that Start created.
	dir := c.Dir()
	if err := c.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat %s after Remove: %v, want not exist", dir, err)
	}
	assertServerDown(t, c, "Remove")
}

// assertServerDown fails the test when c still accepts connections after the named operation.
func assertServerDown(t *testing.T, c *pgcluster.Cluster, operation string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, c.URL("postgres")); err == nil {
		_ = conn.Close(ctx)
		t.Errorf("connect after %s succeeded, want the server down", operation)
	}
}

func TestStopAfterServerExited(t *testing.T) {
	t.Parallel()
	c := startCluster(t, pgcluster.Options{})

	// SIGQUIT makes the postmaster shut down at once, as a crash would, behind pgcluster's back.
	pidFile, err := os.ReadFile(filepath.Join(c.Dir(), "data", "postmaster.pid"))
	if err != nil {
		t.Fatalf("read postmaster.pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	if err != nil {
		t.Fatalf("parse postmaster.pid: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
		t.Fatalf("send SIGQUIT to postmaster %d: %v", pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("postmaster %d still runs 10s after SIGQUIT", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := c.Stop(); err != nil {
		t.Errorf("Stop after the server exited: %v, want nil", err)
	}
	dir := c.Dir()
	if err := c.Remove(); err != nil {
		t.Fatalf("Remove after the server exited: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat %s after Remove: %v, want not exist", dir, err)
	}
}

func TestStartReusesDir(t *testing.T) {
	t.Parallel()
	// A directory of its own under os.TempDir(), because postgres may run as another OS user that
	// cannot enter t.TempDir().
	parent, err := os.MkdirTemp("", "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "cluster")

	first := startCluster(t, pgcluster.Options{Dir: dir})
	if first.Dir() != dir {
		t.Errorf("Dir() = %q, want %q", first.Dir(), dir)
	}
	mustExec(t, connect(t, first, "postgres"), "CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)")
	if err := first.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := first.Stop(); err != nil {
		t.Errorf("second Stop: %v, want nil for a stopped cluster", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Fatalf("data directory after Stop: %v", err)
	}

	// A second Start on the same directory skips initdb and keeps the data.
	second := startCluster(t, pgcluster.Options{Dir: dir})
	if n := countRows(t, second); n != 1 {
		t.Errorf("rows in the reused cluster = %d, want 1", n)
	}

	// The first cluster created the directory, so its Remove deletes it.
	if err := second.Stop(); err != nil {
		t.Fatalf("Stop the second cluster: %v", err)
	}
	if err := first.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat %s after Remove: %v, want not exist", dir, err)
	}
}

func TestStartRejectsUnreachableDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root runs postgres as another OS user")
	}
	t.Parallel()
	// t.TempDir() is mode 0700 and owned by root, so the postgres OS user cannot enter it.
	dir := filepath.Join(t.TempDir(), "cluster")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir})
	if err == nil {
		_ = c.Remove()
		t.Fatalf("Start in %s succeeded, want an error", dir)
	}
	if !strings.Contains(err.Error(), "cannot enter directory") {
		t.Errorf("Start error = %q, want it to contain %q", err, "cannot enter directory")
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat %s after the failed Start: %v, want not exist", dir, err)
	}
}

func TestBinDirFromEnv(t *testing.T) {
	dir, err := pgcluster.BinDir()
	if err != nil {
		t.Fatalf("BinDir: %v", err)
	}
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("BinDir() = %s, which lacks %s: %v", dir, name, err)
		}
	}

	t.Setenv("PG_BINDIR", dir)
	if got, err := pgcluster.BinDir(); err != nil || got != dir {
		t.Errorf("BinDir with PG_BINDIR=%s = %q, %v; want %q, nil", dir, got, err, dir)
	}

	empty := t.TempDir()
	t.Setenv("PG_BINDIR", empty)
	_, err = pgcluster.BinDir()
	if err == nil {
		t.Fatalf("BinDir with PG_BINDIR=%s (empty) succeeded, want an error", empty)
	}
	want := fmt.Sprintf("PG_BINDIR=%s does not contain initdb, pg_ctl, postgres", empty)
	if got := err.Error(); len(got) < len(want) || got[:len(want)] != want {
		t.Errorf("BinDir error = %q, want it to start with %q", got, want)
	}
}
