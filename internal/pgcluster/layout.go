package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// settingsFile holds the settings that Start writes before every server start. postgresql.conf
// includes it, so the port can change between starts of a reused data directory.
const settingsFile = "pgcluster.conf"

// includeLine is appended to postgresql.conf once.
const includeLine = "include '" + settingsFile + "'"

// prepare creates the cluster directory and its layout, and runs initdb when the data directory
// holds no cluster yet. Each path it creates is recorded in c.created.
func (c *Cluster) prepare(ctx context.Context, dir string) error {
	if err := c.makeClusterDir(dir); err != nil {
		return err
	}
	if err := c.owner.checkTraversable(c.dir); err != nil {
		return err
	}
	c.dataDir = filepath.Join(c.dir, "data")
	c.socketDir = filepath.Join(c.dir, "run")
	c.logFile = filepath.Join(c.dir, "postgres.log")
	if err := c.checkPaths(); err != nil {
		return err
	}

	if err := c.makeOwnedDir(c.socketDir); err != nil {
		return err
	}
	if err := c.makeOwnedFile(c.logFile); err != nil {
		return err
	}

	if _, err := os.Stat(filepath.Join(c.dataDir, "PG_VERSION")); errors.Is(err, fs.ErrNotExist) {
		if err := c.makeOwnedDir(c.dataDir); err != nil {
			return err
		}
		if err := c.initdb(ctx); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("check for an existing cluster in %s: %w", c.dataDir, err)
	}
	return c.includeSettings()
}

// makeClusterDir sets c.dir, creating it when it is missing.
func (c *Cluster) makeClusterDir(dir string) error {
	if dir == "" {
		created, err := os.MkdirTemp("", "acubroker-pg-")
		if err != nil {
			return fmt.Errorf("create a cluster directory under %s: %w", os.TempDir(), err)
		}
		c.created = append(c.created, created)
		c.dir = created
		return c.owner.chown(created)
	}

	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("resolve cluster directory %s: %w", dir, err)
	}
	c.dir = abs
	if _, err := os.Stat(abs); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("check cluster directory %s: %w", abs, err)
	}

	// Record the highest missing ancestor, so Remove deletes every directory that Start made.
	highest := abs
	for parent := filepath.Dir(highest); parent != highest; parent = filepath.Dir(highest) {
		if _, err := os.Stat(parent); err == nil {
			break
		}
		highest = parent
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("create cluster directory %s: %w", abs, err)
	}
	c.created = append(c.created, highest)
	if err := os.Chmod(abs, 0o700); err != nil {
		return fmt.Errorf("set the mode of cluster directory %s: %w", abs, err)
	}
	return c.owner.chown(abs)
}

// checkPaths rejects cluster directories that the server settings and pg_ctl's shell command line
// cannot carry, and socket paths that are too long for Linux.
func (c *Cluster) checkPaths() error {
	if i := strings.IndexAny(c.dir, "\"'\\$`,\n\r\t"); i >= 0 {
		return fmt.Errorf("cluster directory %q contains %q, which pg_ctl and postgresql.conf cannot "+
			"quote: choose a directory without quotes, backslashes, $, backticks, commas or control characters",
			c.dir, c.dir[i])
	}
	socket := filepath.Join(c.socketDir, ".s.PGSQL.65535")
	if len(socket) > maxSocketPathLength {
		return fmt.Errorf("cluster directory %s is too long: its socket path would have %d bytes and "+
			"Linux allows %d; choose a shorter directory", c.dir, len(socket), maxSocketPathLength)
	}
	return nil
}

// makeOwnedDir creates dir with mode 0700 for the server user, unless it exists.
func (c *Cluster) makeOwnedDir(dir string) error {
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	c.created = append(c.created, dir)
	return c.owner.chown(dir)
}

// makeOwnedFile creates an empty file with mode 0600 for the server user, unless it exists.
func (c *Cluster) makeOwnedFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	c.created = append(c.created, path)
	if err := f.Close(); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return c.owner.chown(path)
}

// initdb creates a new cluster in c.dataDir.
func (c *Cluster) initdb(ctx context.Context) error {
	out, err := c.command(ctx, "initdb",
		"--pgdata", c.dataDir,
		"--auth", "trust",
		"--encoding", "UTF8",
		"--locale", "C.UTF-8",
		"--username", SuperUser,
		"--no-sync", // the cluster is throwaway, so skip the fsync of every new file
	).CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb in %s: %w\n%s", c.dataDir, err, strings.TrimSpace(string(out)))
	}
	c.logger.Debug("postgres cluster initialized", "dir", c.dir)
	return nil
}

// includeSettings appends includeLine to postgresql.conf unless it is there.
func (c *Cluster) includeSettings() error {
	path := filepath.Join(c.dataDir, "postgresql.conf")
	conf, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	for line := range bytes.SplitSeq(conf, []byte("\n")) {
		if string(bytes.TrimSpace(line)) == includeLine {
			return nil
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	_, err = fmt.Fprintf(f, "\n# Added by pgcluster: settings rewritten before every start.\n%s\n", includeLine)
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("append to %s: %w", path, err)
	}
	return nil
}

// writeSettings writes settingsFile for the next start.
func (c *Cluster) writeSettings() error {
	settings := strings.Join([]string{
		"# Written by pgcluster before every start; edits are lost.",
		"listen_addresses = '127.0.0.1'",
		"port = " + strconv.Itoa(c.port),
		// checkPaths rejects directories with quotes, so double quotes inside single quotes are
		// enough for paths with spaces.
		"unix_socket_directories = '\"" + c.socketDir + "\"'",
		// Room for several test packages, each with its own connection pools, running at once.
		"max_connections = 200",
		// Throwaway data: skip flushes to disk. A server crash loses nothing, a machine crash may.
		"fsync = off",
		"",
	}, "\n")
	path := filepath.Join(c.dataDir, settingsFile)
	if err := os.WriteFile(path, []byte(settings), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return c.owner.chown(path)
}
