package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"

	"github.com/acubroker/acubroker/acumatica"
	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/config"
	"github.com/acubroker/acubroker/emulator"
	"github.com/acubroker/acubroker/metrics"
	"github.com/acubroker/acubroker/server"
	"github.com/acubroker/acubroker/store"
)

// startInProcess starts replica i of spec in this process, wired as
// `broker serve` wires it (metrics observer and interceptors, a text log
// at the configured level), without its HTTP listener, health checker and
// tracing.
func (r *runner) startInProcess(ctx context.Context, spec deploySpec, databaseURL string, emu *emulator.Server,
	i int) (*replica, error) {
	logPath := filepath.Join(r.logDir, fmt.Sprintf("%s-broker%d.log", spec.Name, i))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create the broker log: %w", err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(r.cfg.BrokerLogLevel)); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("invalid broker log level %q: use debug, info, warn or error", r.cfg.BrokerLogLevel)
	}
	logger := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: level}))

	poolCfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		_ = logFile.Close()
		return nil, errors.New("invalid broker database URL")
	}
	poolCfg.ConnConfig.ConnectTimeout = 10 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("open the broker's database pool: %w", err)
	}
	cleanup := func() { pool.Close(); _ = logFile.Close() }

	var clk broker.Clock
	if spec.EmulatorClock {
		clk = emu.Emulator
	}
	conns, err := brokerConnections(spec.Conns, emu.URL, clk)
	if err != nil {
		cleanup()
		return nil, err
	}
	names := make([]string, len(conns))
	for j, c := range conns {
		names[j] = c.Name
	}
	m := metrics.New(metrics.Config{Pool: pool, Connections: names, Clock: clk, Logger: logger})
	b, err := broker.New(broker.Config{
		Store:       store.New(pool),
		Connections: conns,
		Clock:       clk,
		Logger:      logger.With("component", "broker"),
		Observer:    m,
	})
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("new broker: %w", err)
	}
	if err := b.Start(ctx); err != nil {
		cleanup()
		return nil, fmt.Errorf("start broker: %w", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Stop()
		cleanup()
		return nil, fmt.Errorf("listen on 127.0.0.1: %w", err)
	}
	srv := server.New(server.Config{
		Broker:             b,
		Logger:             logger.With("component", "grpc"),
		UnaryInterceptors:  []grpc.UnaryServerInterceptor{m.UnaryServerInterceptor()},
		StreamInterceptors: []grpc.StreamServerInterceptor{m.StreamServerInterceptor()},
	})
	m.InitializeGRPC(srv.GRPC())
	go func() { _ = srv.Serve(lis) }()
	stop := func() error {
		srv.Stop()
		b.Stop()
		cleanup()
		return nil
	}
	r.log.Info("in-process broker serving", "scenario", spec.Name, "address", lis.Addr().String(), "log", logPath)
	return &replica{addr: lis.Addr().String(), stop: stop}, nil
}

// brokerConnections returns broker connections to the site at siteURL
// with the defaults of the config file, each with its own Acumatica client
// that reads clk, or the system clock when clk is nil.
func brokerConnections(specs []connSpec, siteURL string, clk broker.Clock) ([]broker.Connection, error) {
	var now func() time.Time
	if clk != nil {
		now = clk.Now
	}
	conns := make([]broker.Connection, 0, len(specs))
	for _, c := range specs {
		erp, err := acumatica.New(acumatica.Config{
			SiteURL:      siteURL,
			ClientID:     emulator.DemoClientID,
			ClientSecret: emulator.DemoClientSecret,
			Username:     emulator.DemoUser,
			Password:     emulator.DemoPassword,
			Scopes:       config.DefaultScopes,
			Now:          now,
		})
		if err != nil {
			return nil, fmt.Errorf("connection %q: %w", c.Name, err)
		}
		conns = append(conns, broker.Connection{
			Name:                 c.Name,
			MaxSessions:          c.Seats,
			DefaultLeaseTTL:      config.DefaultLeaseTTL,
			MaxLeaseTTL:          config.DefaultMaxLeaseTTL,
			MaxWait:              c.MaxWait,
			IdleTimeout:          config.DefaultIdleTimeout,
			TokenLifetime:        config.DefaultTokenLifetime,
			RefreshBefore:        config.DefaultRefreshBefore,
			RequestTimeout:       config.DefaultRequestTimeout,
			LoginLimitBackoff:    config.DefaultLoginLimitBackoff,
			LoginLimitMaxBackoff: config.DefaultLoginLimitMaxBackoff,
			OfflineAccess:        true,
			ERP:                  erp,
		})
	}
	return conns, nil
}
