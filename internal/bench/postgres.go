package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/acubroker/acubroker/internal/pgcluster"
	"github.com/acubroker/acubroker/store"
)

// postgres is the server the benchmark's databases live on: a throwaway
// cluster it started, or a server given by an admin URL.
type postgres struct {
	admin   *url.URL
	cluster *pgcluster.Cluster
	log     *slog.Logger
	// created lists the databases to drop when a given server is used.
	created []string
}

// startPostgres starts a throwaway cluster, or uses cfg.AdminURL.
func startPostgres(ctx context.Context, cfg *Config, log *slog.Logger) (*postgres, error) {
	p := &postgres{log: log}
	if cfg.AdminURL != "" {
		u, err := url.Parse(cfg.AdminURL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			// The URL may hold a password, so it is not shown.
			return nil, errors.New("invalid admin URL: use postgres://USER[:PASSWORD]@127.0.0.1:PORT/DATABASE")
		}
		if err := checkLoopbackURL("admin database", cfg.AdminURL); err != nil {
			return nil, err
		}
		p.admin = u
		return p, nil
	}

	log.Info("starting a throwaway PostgreSQL cluster")
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Logger: log.With("component", "pgcluster")})
	if err != nil {
		return nil, fmt.Errorf("start a PostgreSQL cluster: %w", err)
	}
	p.cluster = cluster
	p.admin, _ = url.Parse(cluster.URL("postgres"))
	if err := p.configure(ctx, cfg); err != nil {
		return nil, errors.Join(err, p.close())
	}
	return p, nil
}

// configure applies cfg.Durable and cfg.Diagnose to the cluster with
// ALTER SYSTEM, whose postgresql.auto.conf overrides the settings file
// that pgcluster writes.
func (p *postgres) configure(ctx context.Context, cfg *Config) error {
	conn, err := pgx.Connect(ctx, p.admin.String())
	if err != nil {
		return fmt.Errorf("connect to the cluster: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	fsync := "off"
	if cfg.Durable {
		fsync = "on"
	}
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET fsync = "+fsync); err != nil {
		return fmt.Errorf("set fsync: %w", err)
	}
	if !cfg.Diagnose {
		if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			return fmt.Errorf("reload the configuration: %w", err)
		}
		return p.waitSetting(ctx, "fsync", fsync)
	}
	// shared_preload_libraries takes effect only at server start.
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"); err != nil {
		return fmt.Errorf("load pg_stat_statements: %w", err)
	}
	if err := p.cluster.Restart(ctx); err != nil {
		return fmt.Errorf("restart the cluster to load pg_stat_statements: %w", err)
	}
	return p.waitSetting(ctx, "fsync", fsync)
}

// waitSetting waits until a new session reads value for the setting,
// because a reload reaches the server a moment after pg_reload_conf
// returns.
func (p *postgres) waitSetting(ctx context.Context, name, value string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, p.admin.String())
		if err != nil {
			return fmt.Errorf("connect to the cluster: %w", err)
		}
		var got string
		err = conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got)
		_ = conn.Close(ctx)
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if got == value {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is %s 10s after it was set to %s", name, got, value)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// url returns the URL of database name on the server.
func (p *postgres) url(name string) string {
	u := *p.admin
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// brokerURL returns the URL that brokers use for database name, with
// pool_max_conns when poolMaxConns is positive.
func (p *postgres) brokerURL(name string, poolMaxConns int) string {
	u, _ := url.Parse(p.url(name))
	if poolMaxConns > 0 {
		q := u.Query()
		q.Set("pool_max_conns", strconv.Itoa(poolMaxConns))
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// createDatabase creates a database whose name starts with prefix and
// returns its name. With migrate it applies the broker's migrations.
func (p *postgres) createDatabase(ctx context.Context, prefix string, migrate bool) (string, error) {
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return "", fmt.Errorf("generate a database name: %w", err)
	}
	name := "brokerbench_" + prefix + "_" + hex.EncodeToString(suffix)
	conn, err := pgx.Connect(ctx, p.admin.String())
	if err != nil {
		return "", fmt.Errorf("connect to create database %s: %w", name, err)
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	_ = conn.Close(ctx)
	if err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	p.created = append(p.created, name)
	if !migrate {
		return name, nil
	}
	pool, err := pgxpool.New(ctx, p.url(name))
	if err != nil {
		return "", fmt.Errorf("connect to database %s: %w", name, err)
	}
	defer pool.Close()
	if _, err := store.ApplyMigrations(ctx, pool); err != nil {
		return "", fmt.Errorf("migrate database %s: %w", name, err)
	}
	return name, nil
}

// close drops the databases it created on a given server, or removes the
// cluster it started.
func (p *postgres) close() error {
	if p.cluster != nil {
		p.log.Info("removing the PostgreSQL cluster")
		return p.cluster.Remove()
	}
	if len(p.created) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.admin.String())
	if err != nil {
		return fmt.Errorf("connect to drop the benchmark databases: %w", err)
	}
	defer conn.Close(ctx)
	var errs []error
	for _, name := range p.created {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			errs = append(errs, fmt.Errorf("drop database %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
