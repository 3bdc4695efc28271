// Package health decides whether a broker replica can serve calls, and
// reports it through the standard gRPC health service and over HTTP for
// Kubernetes probes.
//
// A [Checker] pings Postgres and compares the schema version with the
// migrations compiled into the binary every few seconds. The replica is
// SERVING only while both checks pass; after [Checker.Shutdown] it stays
// NOT_SERVING for good.
//
// Liveness and readiness differ on purpose. /healthz returns 200 while the
// process runs, so that Kubernetes does not restart a replica only because
// Postgres is down, which a restart would not fix. /readyz returns 200 only
// while the replica is SERVING.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/acubroker/acubroker/store"
)

// Defaults of Config.
const (
	DefaultInterval = 5 * time.Second
	DefaultTimeout  = 2 * time.Second
)

// StatusSetter receives serving status changes. *health.Server of
// google.golang.org/grpc/health implements it.
type StatusSetter interface {
	SetServingStatus(service string, status healthpb.HealthCheckResponse_ServingStatus)
}

// Config configures NewChecker. Zero values take the documented defaults.
type Config struct {
	// Pool is the database to check. Required.
	Pool *pgxpool.Pool
	// Status receives the status of every service in Services. Nil reports
	// the status only through Serving and the HTTP handlers.
	Status StatusSetter
	// Services are the gRPC service names whose status is set; "" is the
	// server as a whole. Default: only "".
	Services []string
	// Interval is the time between checks. Default DefaultInterval.
	Interval time.Duration
	// Timeout bounds one check. Default DefaultTimeout.
	Timeout time.Duration
	// WantVersion is the schema version the binary needs. Default
	// store.LatestVersion().
	WantVersion int
	// Logger receives status changes. Default: discard.
	Logger *slog.Logger
}

// Checker checks Postgres and sets the serving status. Its methods are safe
// for concurrent use.
type Checker struct {
	pool        *pgxpool.Pool
	status      StatusSetter
	services    []string
	interval    time.Duration
	timeout     time.Duration
	wantVersion int
	logger      *slog.Logger

	// mu protects the fields below.
	mu       sync.Mutex
	serving  bool
	checked  bool   // a check has completed
	reason   string // the cause of NOT_SERVING; "" while serving
	shutdown bool
}

// NewChecker returns a Checker that reports NOT_SERVING until its first
// check passes.
func NewChecker(cfg Config) (*Checker, error) {
	if cfg.Pool == nil {
		return nil, errors.New("health: Config.Pool is required")
	}
	c := &Checker{
		pool:        cfg.Pool,
		status:      cfg.Status,
		services:    cfg.Services,
		interval:    cfg.Interval,
		timeout:     cfg.Timeout,
		wantVersion: cfg.WantVersion,
		logger:      cfg.Logger,
		reason:      "not checked yet",
	}
	if len(c.services) == 0 {
		c.services = []string{""}
	}
	if c.interval <= 0 {
		c.interval = DefaultInterval
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.wantVersion == 0 {
		c.wantVersion = store.LatestVersion()
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	c.setStatus(healthpb.HealthCheckResponse_NOT_SERVING)
	return c, nil
}

// Run checks every Interval until ctx ends. Call Check before Run to set
// the status at once.
func (c *Checker) Run(ctx context.Context) {
	ticker := time.NewTicker(c.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		_ = c.Check(ctx)
	}
}

// Check runs one check, updates the status and returns why the replica
// cannot serve, or nil. A check cut short by ctx changes nothing.
func (c *Checker) Check(ctx context.Context) error {
	checkCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	reason, err := c.probe(checkCtx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	c.update(reason, err)
	if reason == "" {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", reason, err)
	}
	return errors.New(reason)
}

// probe returns a short reason for an operator when the replica cannot
// serve, with the underlying error for the log.
func (c *Checker) probe(ctx context.Context) (string, error) {
	if err := c.pool.Ping(ctx); err != nil {
		return "Postgres is unreachable", err
	}
	version, err := store.SchemaVersion(ctx, c.pool)
	if err != nil {
		return "reading the schema version failed", err
	}
	if version != c.wantVersion {
		return fmt.Sprintf("schema version is %d but this binary needs %d; run broker migrate with the matching binary",
			version, c.wantVersion), nil
	}
	return "", nil
}

// update records a check's result, sets the status when it changed and
// logs the change.
func (c *Checker) update(reason string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shutdown {
		return
	}
	serving := reason == ""
	changed := !c.checked || serving != c.serving || reason != c.reason
	c.checked, c.serving, c.reason = true, serving, reason
	if !changed {
		return
	}
	if serving {
		c.setStatus(healthpb.HealthCheckResponse_SERVING)
		c.logger.Info("health: SERVING: Postgres is reachable and the schema is current", "schema_version", c.wantVersion)
		return
	}
	c.setStatus(healthpb.HealthCheckResponse_NOT_SERVING)
	c.logger.Warn("health: NOT_SERVING; checking again", "reason", reason, "retry_in", c.interval.String(), "err", err)
}

// Shutdown reports NOT_SERVING from now on, whatever later checks find.
func (c *Checker) Shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shutdown {
		return
	}
	c.shutdown, c.serving, c.reason = true, false, "shutting down"
	c.setStatus(healthpb.HealthCheckResponse_NOT_SERVING)
}

// Serving reports whether the last check passed and Shutdown was not
// called, with the reason when it did not.
func (c *Checker) Serving() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.serving, c.reason
}

// setStatus sets the status of every service. The caller holds mu, or owns
// c exclusively.
func (c *Checker) setStatus(status healthpb.HealthCheckResponse_ServingStatus) {
	if c.status == nil {
		return
	}
	for _, service := range c.services {
		c.status.SetServingStatus(service, status)
	}
}

// LivenessHandler returns 200 while the process runs: the /healthz probe.
func LivenessHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
}

// ReadinessHandler returns 200 while the replica is SERVING, and otherwise
// 503 with the reason: the /readyz probe. The reason names no host, user or
// password.
func (c *Checker) ReadinessHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		serving, reason := c.Serving()
		if !serving {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %s\n", reason)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
}
