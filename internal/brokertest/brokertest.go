// Package brokertest starts a complete broker for tests: the Acumatica
// emulator over real HTTP, a fresh migrated PostgreSQL database, the broker
// and its gRPC server on 127.0.0.1, and a client connection to it.
package brokertest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/acubroker/acubroker/acumatica"
	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/testdb"
	"github.com/acubroker/acubroker/server"
	"github.com/acubroker/acubroker/store"
)

// ConnectionName is the name of the environment's one connection.
const ConnectionName = "erp"

// Options configure Start. Zero values take the documented defaults.
type Options struct {
	// Seats is the emulated licence's API user limit and the connection's
	// max_sessions. Default 2.
	Seats int
	// Scopes requested at sign-in. Default api and offline_access.
	Scopes []string
	// Emulator adjusts the emulator's config before it starts.
	Emulator func(*emulator.Config)
	// Connection adjusts the broker's connection before the broker starts.
	Connection func(*broker.Connection)
	// Observer, when set, is called once the database is ready and returns
	// the observer of every broker the environment starts. Default: none.
	Observer func(*Env) broker.Observer
	// Server adjusts each gRPC server's config before the server starts.
	Server func(*server.Config)
}

// Env is a running broker and everything around it. Start stops it all
// when the test ends.
type Env struct {
	Emulator    *emulator.Server
	DatabaseURL string
	Pool        *pgxpool.Pool
	Broker      *broker.Broker
	Addr        string
	Client      acubrokerv1.SessionServiceClient
	Conn        *grpc.ClientConn

	connection broker.Connection
	opts       Options
	observer   broker.Observer
}

// Start starts an environment.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	if opts.Seats == 0 {
		opts.Seats = 2
	}
	emuCfg := emulator.DefaultConfig()
	emuCfg.Seats = opts.Seats
	if opts.Emulator != nil {
		opts.Emulator(&emuCfg)
	}
	emu, err := emulator.Start(emuCfg)
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() { _ = emu.Close() })

	env := &Env{Emulator: emu, DatabaseURL: testdb.New(t), opts: opts}
	env.Pool = NewPool(t, env.DatabaseURL)
	env.connection = broker.Connection{
		Name:          ConnectionName,
		MaxSessions:   opts.Seats,
		MaxWait:       10 * time.Second,
		OfflineAccess: true,
		ERP:           NewERP(t, emu.URL, opts.Scopes, emu.Emulator.Now),
	}
	if opts.Scopes != nil {
		env.connection.OfflineAccess = false
		for _, s := range opts.Scopes {
			if s == "offline_access" {
				env.connection.OfflineAccess = true
			}
		}
	}
	if opts.Connection != nil {
		opts.Connection(&env.connection)
	}
	if opts.Observer != nil {
		env.observer = opts.Observer(env)
	}
	env.Broker, env.Addr = env.StartReplica(t)
	env.Conn = Dial(t, env.Addr)
	env.Client = acubrokerv1.NewSessionServiceClient(env.Conn)
	return env
}

// StartReplica starts another broker and gRPC server on the environment's
// database, emulator and connection, and returns it with its address.
func (e *Env) StartReplica(t testing.TB) (*broker.Broker, string) {
	t.Helper()
	b, err := broker.New(broker.Config{
		Store:               store.New(e.Pool),
		Connections:         []broker.Connection{e.connection},
		Clock:               e.Emulator.Emulator,
		Logger:              Logger(t),
		PollInterval:        200 * time.Millisecond,
		MaintenanceInterval: 100 * time.Millisecond,
		Observer:            e.observer,
	})
	if err != nil {
		t.Fatalf("new broker: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(b.Stop)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srvCfg := server.Config{Broker: b, Logger: Logger(t)}
	if e.opts.Server != nil {
		e.opts.Server(&srvCfg)
	}
	srv := server.New(srvCfg)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return b, lis.Addr().String()
}

// Connection returns the connection the brokers serve.
func (e *Env) Connection() broker.Connection { return e.connection }

// NewPool opens a pool on url, closed when the test ends.
func NewPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatalf("open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// NewERP returns an Acumatica client for the emulator at url with the demo
// credentials.
func NewERP(t testing.TB, url string, scopes []string, now func() time.Time) *acumatica.Client {
	t.Helper()
	client, err := acumatica.New(acumatica.Config{
		SiteURL:      url,
		ClientID:     emulator.DemoClientID,
		ClientSecret: emulator.DemoClientSecret,
		Username:     emulator.DemoUser,
		Password:     emulator.DemoPassword,
		Scopes:       scopes,
		Now:          now,
		HTTPClient:   &httpClientWithTimeout,
	})
	if err != nil {
		t.Fatalf("new Acumatica client: %v", err)
	}
	return client
}

// Dial connects a gRPC client to addr, closed when the test ends.
func Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Logger returns a logger that writes to the test log when
// BROKER_TEST_LOG is set, and discards otherwise.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("BROKER_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// NewDatabase returns the URL of a fresh migrated database, dropped when the
// test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return testdb.New(t)
}
