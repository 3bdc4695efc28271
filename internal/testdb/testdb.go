// Package testdb gives each test a fresh PostgreSQL database migrated to the latest schema.
//
// BROKER_TEST_DATABASE_URL names an admin connection to a server where tests may create
// databases. `make test` sets it to a throwaway cluster (see internal/tools/withpg).
//
// Migrating a database for every test would be slow, so the first [New] in a process makes sure a
// template database exists for the current migrations, and every test database is a copy of it:
//
//   - The template is named acubroker_tpl_ followed by a hash of the migration files, so a change
//     to any migration gets a new template.
//   - The template is created while a session-level advisory lock is held, so test binaries of
//     different packages, which `go test` runs in parallel processes, never build it at once.
//   - A template is marked with datistemplate only after its migrations succeed, and it accepts no
//     connections, which CREATE DATABASE ... TEMPLATE requires. A template left unmarked by a
//     crashed process is dropped and built again.
//
// NOTE: templates of earlier migration versions stay on the server, and a change to store.Migrate
// that leaves the migration files alone keeps the old template. On a long-lived server, drop the
// acubroker_tpl_* databases after such changes.
package testdb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/acubroker/acubroker/migrations"
	"github.com/acubroker/acubroker/store"
)

// URLEnv names the variable that holds the admin URL.
const URLEnv = "BROKER_TEST_DATABASE_URL"

// missingURLMessage is the t.Fatal message when URLEnv is not set.
const missingURLMessage = "BROKER_TEST_DATABASE_URL is not set: run `make test`, which starts a " +
	"throwaway PostgreSQL cluster, or point it at a server where tests may create databases"

const (
	// templatePrefix starts the name of every template database.
	templatePrefix = "acubroker_tpl_"

	// templateLockKey is the pg_advisory_lock key that serializes template creation on a server.
	templateLockKey int64 = 0x616375_74706c // "acu" "tpl"

	// setupTimeout bounds template creation, which runs every migration, and each create or drop.
	setupTimeout = 2 * time.Minute
)

// migrateFunc applies the migrations to the database that pool connects to.
type migrateFunc func(ctx context.Context, pool *pgxpool.Pool) error

// templates caches, per admin URL, the template that this process has made sure of.
var templates sync.Map // admin URL -> *templateOnce

type templateOnce struct {
	once sync.Once
	name string
	err  error
}

// New returns the URL of a new database, migrated to the latest schema, that is dropped (with
// FORCE, which ends open connections) when the test and its subtests finish. It calls t.Fatal
// when BROKER_TEST_DATABASE_URL is not set or the database cannot be created.
func New(t testing.TB) string {
	t.Helper()
	adminURL := os.Getenv(URLEnv)
	if adminURL == "" {
		t.Fatal(missingURLMessage)
		return ""
	}
	admin, err := parseAdminURL(adminURL)
	if err != nil {
		t.Fatal(err)
		return ""
	}

	entry, _ := templates.LoadOrStore(adminURL, &templateOnce{})
	tpl := entry.(*templateOnce)
	tpl.once.Do(func() {
		name, err := templateName(migrations.FS)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
			defer cancel()
			err = ensureTemplate(ctx, adminURL, name, store.Migrate)
		}
		tpl.name, tpl.err = name, err
	})
	if tpl.err != nil {
		t.Fatalf("prepare the template database on %s: %v", admin.Redacted(), tpl.err)
		return ""
	}

	name, err := createFromTemplate(adminURL, tpl.name)
	if err != nil {
		t.Fatalf("create a test database on %s: %v", admin.Redacted(), err)
		return ""
	}
	t.Cleanup(func() {
		if err := dropTestDatabase(adminURL, name); err != nil {
			t.Errorf("drop test database %s on %s: %v", name, admin.Redacted(), err)
		}
	})
	return databaseURL(admin, name)
}

// parseAdminURL parses the admin URL, which must be in URL form so that the database name can be
// replaced.
func parseAdminURL(adminURL string) (*url.URL, error) {
	u, err := url.Parse(adminURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		// The value may hold a password, so it is not shown.
		return nil, fmt.Errorf("%s is not a postgres:// URL; write it as "+
			"postgres://USER[:PASSWORD]@HOST:PORT/DATABASE?sslmode=disable", URLEnv)
	}
	return u, nil
}

// databaseURL returns admin with the database replaced by name.
func databaseURL(admin *url.URL, name string) string {
	u := *admin
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// templateName returns the template database name for the *.sql files in fsys: templatePrefix and
// the first 16 hex digits of a SHA-256 over their names and contents.
func templateName(fsys fs.FS) (string, error) {
	files, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return "", fmt.Errorf("list migration files: %w", err)
	}
	if len(files) == 0 {
		return "", fmt.Errorf("no *.sql migration files found in the embedded migrations")
	}
	sort.Strings(files)
	h := sha256.New()
	for _, file := range files {
		data, err := fs.ReadFile(fsys, file)
		if err != nil {
			return "", fmt.Errorf("read migration %s: %w", file, err)
		}
		// Length prefixes keep the boundaries unambiguous.
		fmt.Fprintf(h, "%d:%s%d:", len(path.Base(file)), path.Base(file), len(data))
		h.Write(data)
	}
	return templatePrefix + hex.EncodeToString(h.Sum(nil))[:16], nil
}

// ensureTemplate makes sure that the template database name exists on the server at adminURL,
// creating it with migrate when it is missing or was left unfinished. It holds an advisory lock
// while it checks and creates, so concurrent callers in any process build a template only once.
func ensureTemplate(ctx context.Context, adminURL, name string, migrate migrateFunc) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())

	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", templateLockKey); err != nil {
		return fmt.Errorf("take the template lock: %w", err)
	}
	// Closing the connection also releases the lock, so an error here needs no handling.
	defer func() { _, _ = conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", templateLockKey) }()

	var isTemplate bool
	err = conn.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", name).Scan(&isTemplate)
	switch {
	case err == nil && isTemplate:
		return nil
	case err == nil:
		// A process died while it migrated this template, so build it again.
		if err := dropDatabase(ctx, conn, name); err != nil {
			return err
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("look up template %s: %w", name, err)
	}
	return buildTemplate(ctx, conn, adminURL, name, migrate)
}

// buildTemplate creates database name, migrates it and marks it as a template that accepts no
// connections.
func buildTemplate(ctx context.Context, conn *pgx.Conn, adminURL, name string, migrate migrateFunc) error {
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create template %s: %w", name, err)
	}

	admin, err := parseAdminURL(adminURL)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, databaseURL(admin, name))
	if err != nil {
		return fmt.Errorf("connect to template %s: %w", name, err)
	}
	err = migrate(ctx, pool)
	pool.Close()
	if err != nil {
		return fmt.Errorf("migrate template %s: %w", name, err)
	}

	sql := "ALTER DATABASE " + pgx.Identifier{name}.Sanitize() + " WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("mark %s as a template: %w", name, err)
	}
	return nil
}

// createFromTemplate creates a database named t_ and 16 random hex digits as a copy of template
// and returns its name.
func createFromTemplate(adminURL, template string) (string, error) {
	suffix := make([]byte, 8)
	if _, err := rand.Read(suffix); err != nil {
		return "", fmt.Errorf("generate a database name: %w", err)
	}
	name := "t_" + hex.EncodeToString(suffix)

	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())

	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize() + " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	if _, err := conn.Exec(ctx, sql); err != nil {
		return "", fmt.Errorf("create database %s from template %s: %w", name, template, err)
	}
	return name, nil
}

// dropTestDatabase drops database name, ending its open connections. A missing database is not an error.
func dropTestDatabase(adminURL, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	return dropDatabase(ctx, conn, name)
}

// dropDatabase drops database name with FORCE, clearing its template mark first because
// PostgreSQL refuses to drop a template.
func dropDatabase(ctx context.Context, conn *pgx.Conn, name string) error {
	ident := pgx.Identifier{name}.Sanitize()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", name, err)
	}
	if !exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident+" WITH IS_TEMPLATE false"); err != nil {
		return fmt.Errorf("clear the template mark of %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}
