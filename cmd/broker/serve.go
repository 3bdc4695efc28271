package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/acubroker/acubroker/config"
)

func serveCommand(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		logs            logFlags
		configPath      = fs.String("config", envOr("BROKER_CONFIG", ""), "path of the YAML config file with the connections (env BROKER_CONFIG); required")
		listen          = fs.String("listen", envOr("BROKER_LISTEN", "127.0.0.1:50051"), "gRPC listen address (env BROKER_LISTEN)")
		databaseURL     = fs.String("database-url", envOr("BROKER_DATABASE_URL", ""), "PostgreSQL URL (env BROKER_DATABASE_URL); required")
		shutdownTimeout = fs.Duration("shutdown-timeout", 15*time.Second, "how long in-flight calls may run after SIGTERM")
		shutdownDelay   = fs.String("shutdown-delay", envOr("BROKER_SHUTDOWN_DELAY", "0s"),
			"how long health reports NOT_SERVING after SIGTERM before the server stops accepting calls, "+
				"so that load balancers notice (env BROKER_SHUTDOWN_DELAY)")
		metricsListen = fs.String("metrics-listen", envOrUnset("BROKER_METRICS_LISTEN", "127.0.0.1:9090"),
			"HTTP listen address of /metrics, /healthz and /readyz; empty disables it (env BROKER_METRICS_LISTEN)")
	)
	var tlsFiles tlsFlags
	tlsFiles.register(fs)
	logs.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	delay, err := time.ParseDuration(*shutdownDelay)
	if err != nil || delay < 0 {
		return fmt.Errorf("invalid -shutdown-delay %q: use a duration such as 5s, or 0s for none", *shutdownDelay)
	}
	if *configPath == "" {
		return fmt.Errorf("no config file: set -config or BROKER_CONFIG (see config/example.yaml)")
	}
	file, warnings, err := config.Load(*configPath, os.LookupEnv)
	if err != nil {
		return fmt.Errorf("config %s: %w", *configPath, err)
	}
	for _, w := range warnings {
		logger.Warn("config", "warning", w)
	}
	sec, err := newSecurity(tlsFiles, file, logger)
	if err != nil {
		return err
	}
	// serveBroker checks again and logs a warning. This first check fails
	// before the database is touched.
	if err := sec.checkListener(*listen, nil); err != nil {
		return err
	}
	tr, err := setupTracing(ctx, os.LookupEnv, logger.With("component", "tracing"))
	if err != nil {
		return err
	}
	defer tr.flush(logger)
	conns, err := brokerConnections(file, tr.httpClient())
	if err != nil {
		return err
	}
	if err := checkListenAddress(*listen); err != nil {
		return err
	}
	pool, err := openPool(ctx, *databaseURL, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := migrate(ctx, pool, logger); err != nil {
		return err
	}
	return serveBroker(ctx, serveOptions{
		listen:          *listen,
		pool:            pool,
		connections:     conns,
		logger:          logger,
		shutdownTimeout: *shutdownTimeout,
		shutdownDelay:   delay,
		metricsListen:   *metricsListen,
		tracing:         tr,
		security:        sec,
	})
}

func migrateCommand(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var logs logFlags
	databaseURL := fs.String("database-url", envOr("BROKER_DATABASE_URL", ""), "PostgreSQL URL (env BROKER_DATABASE_URL); required")
	logs.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	pool, err := openPool(ctx, *databaseURL, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	return migrate(ctx, pool, logger)
}
