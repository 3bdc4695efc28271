package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/acubroker/acubroker/store"
)

// adminURL returns BROKER_TEST_DATABASE_URL, failing the test the way New does when it is unset.
func adminURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv(URLEnv)
	if u == "" {
		t.Fatal(missingURLMessage)
	}
	return u
}

// connect opens a connection that is closed when the test ends.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// databaseExists reports whether the server at adminURL has database name.
func databaseExists(t *testing.T, admin, name string) bool {
	t.Helper()
	var exists bool
	err := connect(t, admin).QueryRow(context.Background(),
		"SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	if err != nil {
		t.Fatalf("look up database %s: %v", name, err)
	}
	return exists
}

// columns lists "table.column type" for every column outside the system schemas, sorted.
func columns(t *testing.T, url string) []string {
	t.Helper()
	rows, err := connect(t, url).Query(context.Background(), `
		SELECT table_schema || '.' || table_name || '.' || column_name || ' ' || data_type
		FROM information_schema.columns
		WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
		ORDER BY 1`)
	if err != nil {
		t.Fatalf("list columns: %v", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("list columns: %v", err)
	}
	return list
}

// randomName returns prefix followed by 12 random hex digits.
func randomName(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// fatalRecorder is a testing.TB whose Fatal records the message and ends the goroutine, as the
// real Fatal does, so New's failure path can be observed.
type fatalRecorder struct {
	testing.TB
	message string
}

func (r *fatalRecorder) Fatal(args ...any) {
	r.message = fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.message = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runNew calls New with a fatalRecorder and returns the Fatal message, or "" when New returned.
func runNew(t *testing.T) string {
	t.Helper()
	recorder := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		New(recorder)
	}()
	<-done
	return recorder.message
}

func TestNewWithoutURL(t *testing.T) {
	t.Setenv(URLEnv, "")
	if got := runNew(t); got != missingURLMessage {
		t.Errorf("New without %s: Fatal message = %q, want %q", URLEnv, got, missingURLMessage)
	}
}

func TestNewRejectsKeywordDSN(t *testing.T) {
	t.Setenv(URLEnv, "host=127.0.0.1 user=postgres password=hunter2")
	got := runNew(t)
	if !strings.Contains(got, "is not a postgres:// URL") {
		t.Errorf("New with a keyword DSN: Fatal message = %q, want it to say the value is not a URL", got)
	}
	if strings.Contains(got, "hunter2") {
		t.Errorf("New with a keyword DSN: Fatal message %q shows the password", got)
	}
}

func TestNewMatchesMigratedSchema(t *testing.T) {
	t.Parallel()
	admin := adminURL(t)
	url := New(t)

	var current string
	if err := connect(t, url).QueryRow(context.Background(), "SELECT current_database()").Scan(&current); err != nil {
		t.Fatalf("query current_database: %v", err)
	}
	if !strings.HasPrefix(current, "t_") || len(current) != len("t_")+16 {
		t.Errorf("current_database() = %q, want t_ and 16 hex digits", current)
	}

	// A database migrated directly by store.Migrate must have the same columns as the copy.
	direct := randomName(t, "t_direct_")
	mustExec(t, connect(t, admin), "CREATE DATABASE "+direct)
	t.Cleanup(func() {
		if err := dropTestDatabase(admin, direct); err != nil {
			t.Errorf("drop %s: %v", direct, err)
		}
	})
	parsed, err := parseAdminURL(admin)
	if err != nil {
		t.Fatal(err)
	}
	directURL := databaseURL(parsed, direct)
	pool, err := pgxpool.New(context.Background(), directURL)
	if err != nil {
		t.Fatalf("connect to %s: %v", direct, err)
	}
	err = store.Migrate(context.Background(), pool)
	pool.Close()
	if err != nil {
		t.Fatalf("store.Migrate on %s: %v", direct, err)
	}

	want := columns(t, directURL)
	got := columns(t, url)
	if len(want) == 0 {
		t.Fatal("store.Migrate created no columns, want the broker's tables")
	}
	if !slices.Equal(got, want) {
		t.Errorf("columns of the New database differ from a migrated one:\ngot  %v\nwant %v", got, want)
	}
}

func TestNewDropsDatabasesAtCleanup(t *testing.T) {
	t.Parallel()
	admin := adminURL(t)
	var first, second string

	t.Run("Use", func(t *testing.T) {
		// heldConn stays open while New's cleanup drops its database. Cleanups run last-registered
		// first, so this check, registered before New, runs after the drop.
		var heldConn *pgx.Conn
		t.Cleanup(func() {
			if heldConn == nil {
				return
			}
			defer heldConn.Close(context.Background())
			if err := heldConn.Ping(context.Background()); err == nil {
				t.Error("a connection to a dropped database still works, want it ended by DROP ... WITH (FORCE)")
			}
		})

		firstURL := New(t)
		secondURL := New(t)
		if firstURL == secondURL {
			t.Fatalf("two New calls returned the same URL %s", firstURL)
		}
		first = databaseName(t, firstURL)
		second = databaseName(t, secondURL)

		var err error
		heldConn, err = pgx.Connect(context.Background(), secondURL)
		if err != nil {
			t.Fatalf("connect to %s: %v", second, err)
		}

		// A table in one database must not show in the other.
		mustExec(t, connect(t, firstURL), "CREATE TABLE only_in_first (n int)")
		var exists bool
		err = connect(t, secondURL).QueryRow(context.Background(),
			"SELECT EXISTS (SELECT FROM pg_class WHERE relname = 'only_in_first')").Scan(&exists)
		if err != nil {
			t.Fatal(err)
		}
		if exists {
			t.Error("a table created in the first database shows in the second")
		}
	})

	for _, name := range []string{first, second} {
		if databaseExists(t, admin, name) {
			t.Errorf("database %s exists after its test ended, want it dropped", name)
		}
	}
}

// databaseName returns the database in url.
func databaseName(t *testing.T, url string) string {
	t.Helper()
	config, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return config.Database
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// templateStatus returns datistemplate and datallowconn of database name.
func templateStatus(t *testing.T, admin, name string) (isTemplate, allowConn bool) {
	t.Helper()
	err := connect(t, admin).QueryRow(context.Background(),
		"SELECT datistemplate, datallowconn FROM pg_database WHERE datname = $1", name).Scan(&isTemplate, &allowConn)
	if err != nil {
		t.Fatalf("look up template %s: %v", name, err)
	}
	return isTemplate, allowConn
}

// testTemplate returns a template name of its own for this test, dropped when the test ends.
func testTemplate(t *testing.T, admin string) string {
	t.Helper()
	name := randomName(t, templatePrefix+"test_")
	t.Cleanup(func() {
		if err := dropTestDatabase(admin, name); err != nil {
			t.Errorf("drop template %s: %v", name, err)
		}
	})
	return name
}

// countingMigrate returns a migrate function that creates table marker and counts its calls.
func countingMigrate(calls *atomic.Int32) migrateFunc {
	return func(ctx context.Context, pool *pgxpool.Pool) error {
		calls.Add(1)
		// Widen the window in which a second builder would race.
		time.Sleep(200 * time.Millisecond)
		_, err := pool.Exec(ctx, "CREATE TABLE marker (n int)")
		return err
	}
}

func TestEnsureTemplateBuildsOnce(t *testing.T) {
	t.Parallel()
	admin := adminURL(t)
	name := testTemplate(t, admin)

	var calls atomic.Int32
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			errs[i] = ensureTemplate(ctx, admin, name, countingMigrate(&calls))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("ensureTemplate call %d: %v", i, err)
		}
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("migrate ran %d times for 4 concurrent callers, want 1", got)
	}

	isTemplate, allowConn := templateStatus(t, admin, name)
	if !isTemplate {
		t.Error("datistemplate = false, want true")
	}
	if allowConn {
		t.Error("datallowconn = true, want false")
	}

	copyName, err := createFromTemplate(admin, name)
	if err != nil {
		t.Fatalf("createFromTemplate: %v", err)
	}
	t.Cleanup(func() { _ = dropTestDatabase(admin, copyName) })
	parsed, _ := parseAdminURL(admin)
	if got := columns(t, databaseURL(parsed, copyName)); !slices.Equal(got, []string{"public.marker.n integer"}) {
		t.Errorf("columns of the copy = %v, want [public.marker.n integer]", got)
	}
}

func TestEnsureTemplateRebuildsUnfinished(t *testing.T) {
	t.Parallel()
	admin := adminURL(t)
	name := testTemplate(t, admin)

	// A database with the template's name but no template mark is what a crash mid-migration leaves.
	mustExec(t, connect(t, admin), "CREATE DATABASE "+name)
	var calls atomic.Int32
	if err := ensureTemplate(context.Background(), admin, name, countingMigrate(&calls)); err != nil {
		t.Fatalf("ensureTemplate: %v", err)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("migrate ran %d times, want 1 to rebuild the unfinished template", got)
	}
	if isTemplate, _ := templateStatus(t, admin, name); !isTemplate {
		t.Error("datistemplate = false after the rebuild, want true")
	}

	// Once marked, the template is reused.
	if err := ensureTemplate(context.Background(), admin, name, countingMigrate(&calls)); err != nil {
		t.Fatalf("second ensureTemplate: %v", err)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("migrate ran %d times after a second ensureTemplate, want still 1", got)
	}
}

func TestEnsureTemplateMigrateError(t *testing.T) {
	t.Parallel()
	admin := adminURL(t)
	name := testTemplate(t, admin)

	failing := func(context.Context, *pgxpool.Pool) error { return errors.New("bad migration") }
	err := ensureTemplate(context.Background(), admin, name, failing)
	if err == nil || !strings.Contains(err.Error(), "bad migration") || !strings.Contains(err.Error(), name) {
		t.Fatalf("ensureTemplate with a failing migration: error %v, want one naming %s and the cause", err, name)
	}
	if isTemplate, _ := templateStatus(t, admin, name); isTemplate {
		t.Error("datistemplate = true after a failed migration, want false")
	}
}

func TestTemplateName(t *testing.T) {
	base := fstest.MapFS{
		"001_a.up.sql": {Data: []byte("CREATE TABLE a (n int);")},
		"002_b.up.sql": {Data: []byte("CREATE TABLE b (n int);")},
	}
	name, err := templateName(base)
	if err != nil {
		t.Fatalf("templateName: %v", err)
	}
	if !strings.HasPrefix(name, templatePrefix) || len(name) != len(templatePrefix)+16 {
		t.Errorf("templateName = %q, want %s and 16 hex digits", name, templatePrefix)
	}
	if len(name) > 63 {
		t.Errorf("templateName = %q has %d bytes, more than PostgreSQL's 63", name, len(name))
	}

	tests := []struct {
		name     string
		fsys     fstest.MapFS
		wantSame bool
	}{
		{"SameFiles", fstest.MapFS{
			"001_a.up.sql": {Data: []byte("CREATE TABLE a (n int);")},
			"002_b.up.sql": {Data: []byte("CREATE TABLE b (n int);")},
		}, true},
		{"IgnoresOtherFiles", fstest.MapFS{
			"001_a.up.sql": {Data: []byte("CREATE TABLE a (n int);")},
			"002_b.up.sql": {Data: []byte("CREATE TABLE b (n int);")},
			"README.md":    {Data: []byte("notes")},
		}, true},
		{"ChangedContent", fstest.MapFS{
			"001_a.up.sql": {Data: []byte("CREATE TABLE a (n bigint);")},
			"002_b.up.sql": {Data: []byte("CREATE TABLE b (n int);")},
		}, false},
		{"RenamedFile", fstest.MapFS{
			"001_a.up.sql":  {Data: []byte("CREATE TABLE a (n int);")},
			"002_bb.up.sql": {Data: []byte("CREATE TABLE b (n int);")},
		}, false},
		{"AddedFile", fstest.MapFS{
			"001_a.up.sql": {Data: []byte("CREATE TABLE a (n int);")},
			"002_b.up.sql": {Data: []byte("CREATE TABLE b (n int);")},
			"003_c.up.sql": {Data: []byte("")},
		}, false},
		{"ContentMovedAcrossBoundary", fstest.MapFS{
			"001_a.up.sql": {Data: []byte("CREATE TABLE a (n int);CREATE")},
			"002_b.up.sql": {Data: []byte(" TABLE b (n int);")},
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := templateName(tt.fsys)
			if err != nil {
				t.Fatalf("templateName: %v", err)
			}
			if same := got == name; same != tt.wantSame {
				t.Errorf("templateName = %q, base %q: same = %v, want %v", got, name, same, tt.wantSame)
			}
		})
	}

	if _, err := templateName(fstest.MapFS{"README.md": {Data: []byte("x")}}); err == nil {
		t.Error("templateName without *.sql files succeeded, want an error")
	}
}
