package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"

	"github.com/acubroker/acubroker/acumatica"
	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/config"
	"github.com/acubroker/acubroker/metrics"
	"github.com/acubroker/acubroker/server"
	"github.com/acubroker/acubroker/store"
)

// logFlags are the logging flags every command shares.
type logFlags struct {
	format string
	level  string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.format, "log-format", envOr("BROKER_LOG_FORMAT", "text"),
		"log format: text or json (env BROKER_LOG_FORMAT)")
	fs.StringVar(&l.level, "log-level", envOr("BROKER_LOG_LEVEL", "info"),
		"minimum log level: debug, info, warn or error (env BROKER_LOG_LEVEL)")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("invalid -log-level %q: use debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid -log-format %q: use text or json", l.format)
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return errUsage
	}
	return nil
}

// openPool connects to the database and logs where, without the password.
func openPool(ctx context.Context, databaseURL string, logger *slog.Logger) (*pgxpool.Pool, error) {
	if databaseURL == "" {
		return nil, errors.New("no database: set -database-url or BROKER_DATABASE_URL " +
			"(for example postgres://user@127.0.0.1:5432/acubroker)")
	}
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		// pgx redacts the password from parse errors only on a best-effort
		// basis, so the error itself is not shown.
		return nil, errors.New("invalid database URL: use postgres://user:password@host:port/database?sslmode=MODE")
	}
	cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database %s at %s:%d as %s: %w",
			cfg.ConnConfig.Database, cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.User, err)
	}
	logger.Info("connected to database", "host", cfg.ConnConfig.Host, "port", cfg.ConnConfig.Port,
		"database", cfg.ConnConfig.Database, "user", cfg.ConnConfig.User)
	return pool, nil
}

// migrate applies pending migrations and logs them.
func migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	applied, err := store.ApplyMigrations(ctx, pool)
	if err != nil {
		return err
	}
	if len(applied) > 0 {
		logger.Info("applied migrations", "versions", applied)
	}
	logger.Info("schema is current", "version", store.LatestVersion())
	return nil
}

// brokerConnections turns config connections into broker connections, each
// with its own Acumatica client. The clients send requests with httpClient;
// nil takes the acumatica package's default.
func brokerConnections(file *config.File, httpClient *http.Client) ([]broker.Connection, error) {
	conns := make([]broker.Connection, 0, len(file.Connections))
	for _, c := range file.Connections {
		client, err := acumatica.New(acumatica.Config{
			SiteURL:       c.SiteURL,
			TokenURL:      c.TokenURL,
			LogoutURL:     c.LogoutURL,
			RevocationURL: c.RevocationURL,
			ClientID:      c.ClientID,
			ClientSecret:  c.ClientSecret,
			Username:      c.Username,
			Password:      c.Password,
			Scopes:        c.Scopes,
			TokenLifetime: c.TokenLifetime,
			HTTPClient:    httpClient,
		})
		if err != nil {
			return nil, fmt.Errorf("connection %q: %w", c.Name, err)
		}
		conns = append(conns, broker.Connection{
			Name:                 c.Name,
			MaxSessions:          c.MaxSessions,
			DefaultLeaseTTL:      c.DefaultLeaseTTL,
			MaxLeaseTTL:          c.MaxLeaseTTL,
			MaxWait:              c.MaxWait,
			IdleTimeout:          c.IdleTimeout,
			TokenLifetime:        c.TokenLifetime,
			RefreshBefore:        c.RefreshBefore,
			IdleSignOutAfter:     c.IdleSignOutAfter,
			RequestTimeout:       c.RequestTimeout,
			LoginLimitBackoff:    c.LoginLimitBackoff,
			LoginLimitMaxBackoff: c.LoginLimitMaxBackoff,
			MaxQueue:             c.MaxQueue,
			OfflineAccess:        c.OfflineAccess,
			ERP:                  client,
		})
	}
	return conns, nil
}

// serveOptions are the inputs of serveBroker.
type serveOptions struct {
	listen      string
	pool        *pgxpool.Pool
	connections []broker.Connection
	logger      *slog.Logger
	// ready, when set, is called with the listener's address once the
	// broker accepts calls.
	ready func(addr string)
	// shutdownTimeout bounds the wait for in-flight calls at shutdown.
	shutdownTimeout time.Duration
	// shutdownDelay is how long health reports NOT_SERVING before the
	// server stops accepting calls, so that load balancers notice first.
	shutdownDelay time.Duration
	// metricsListen is the address of /metrics, /healthz and /readyz; empty
	// disables that listener.
	metricsListen string
	// tracing traces gRPC calls; nil traces nothing.
	tracing *tracing
	// security is the TLS, caller authentication and credential encryption.
	// The zero value allows a loopback listener only.
	security security
}

// serveBroker runs the broker, its gRPC server, the health checker and the
// metrics listener until ctx ends, then stops gracefully (see gracefulStop).
// Leases and sessions stay in the database for the other replicas.
func serveBroker(ctx context.Context, opts serveOptions) error {
	if err := opts.security.checkListener(opts.listen, opts.logger); err != nil {
		return err
	}
	m := metrics.New(metrics.Config{
		Pool:        opts.pool,
		Connections: connectionNames(opts.connections),
		Logger:      opts.logger.With("component", "metrics"),
	})
	b, err := broker.New(broker.Config{
		Store:       store.New(opts.pool),
		Connections: opts.connections,
		Logger:      opts.logger.With("component", "broker"),
		Observer:    m,
		Sealer:      opts.security.sealer,
		Quota:       opts.security.quota(),
	})
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer func() {
		b.Stop()
		opts.logger.Info("broker stopped; its leases and sessions stay in the database for the other replicas")
	}()

	drain := newDrainer()
	srv := server.New(server.Config{
		Broker:             b,
		Logger:             opts.logger.With("component", "grpc"),
		UnaryInterceptors:  []grpc.UnaryServerInterceptor{m.UnaryServerInterceptor()},
		StreamInterceptors: []grpc.StreamServerInterceptor{m.StreamServerInterceptor()},
		ServerOptions:      append(opts.tracing.serverOptions(), drain.serverOptions()...),
		Callers:            opts.security.callers,
		ClientCAs:          opts.security.clientCAs,
		TLS:                opts.security.tls,
	})
	m.InitializeGRPC(srv.GRPC())
	checker, stopChecker, err := startHealthChecker(ctx, opts.pool, srv, opts.logger.With("component", "health"))
	if err != nil {
		return err
	}
	defer stopChecker()
	if opts.metricsListen != "" {
		obs, err := startObservabilityServer(opts.metricsListen, m, checker, opts.logger.With("component", "metrics"))
		if err != nil {
			return err
		}
		defer obs.stop(5 * time.Second)
	}

	lis, err := net.Listen("tcp", opts.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", opts.listen, err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	names := make([]string, 0, len(opts.connections))
	for _, c := range opts.connections {
		names = append(names, fmt.Sprintf("%s (%d seats)", c.Name, c.MaxSessions))
	}
	opts.logger.Info("broker serving", "address", lis.Addr().String(), "connections", strings.Join(names, ", "))
	if opts.ready != nil {
		opts.ready(lis.Addr().String())
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("gRPC server stopped: %w", err)
	case <-ctx.Done():
	}
	gracefulStop(srv, drain, checker, opts.shutdownDelay, opts.shutdownTimeout, opts.logger)
	return nil
}

// checkListenAddress fails early, before the database and the migrations,
// when the gRPC address is invalid or taken. The broker binds it again
// later; the port may be taken in between, which serveBroker reports.
func checkListenAddress(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w; choose another address with -listen or BROKER_LISTEN", addr, err)
	}
	return lis.Close()
}
