package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/acubroker/acubroker/broker"
)

// seatStates are the states reported for every connection, so that a state
// with no seats reads 0 instead of missing.
var seatStates = []broker.SeatState{
	broker.SeatEmpty, broker.SeatSigningIn, broker.SeatIdle, broker.SeatLeased, broker.SeatSigningOut,
}

// seatCollector reads the seat, waiter and sign-out gauges from Postgres at
// each scrape.
type seatCollector struct {
	pool    *pgxpool.Pool
	timeout time.Duration
	clock   broker.Clock
	logger  *slog.Logger

	seats           *prometheus.Desc
	budget          *prometheus.Desc
	waiters         *prometheus.Desc
	oldestWaiter    *prometheus.Desc
	pendingSignOuts *prometheus.Desc
	signOutAttempts *prometheus.Desc
	up              *prometheus.Desc
	duration        *prometheus.Desc

	// mu protects failures, the number of scrapes in a row that could not
	// read Postgres, so that a failure is logged when it starts and when it
	// ends rather than at every scrape.
	mu       sync.Mutex
	failures int
}

func newSeatCollector(pool *pgxpool.Pool, timeout time.Duration, clock broker.Clock, logger *slog.Logger) *seatCollector {
	conn := []string{"connection"}
	return &seatCollector{
		pool:    pool,
		timeout: timeout,
		clock:   clock,
		logger:  logger,
		seats: prometheus.NewDesc("acubroker_seats",
			"Seats of each connection by state, read from Postgres (the same on every replica).",
			[]string{"connection", "state"}, nil),
		budget: prometheus.NewDesc("acubroker_seat_budget",
			"The connection's max_sessions, read from Postgres.", conn, nil),
		waiters: prometheus.NewDesc("acubroker_waiters",
			"Acquires queued for a seat, on all replicas, read from Postgres.", conn, nil),
		oldestWaiter: prometheus.NewDesc("acubroker_oldest_waiter_age_seconds",
			"How long the oldest queued acquire has waited; 0 when none waits.", conn, nil),
		pendingSignOuts: prometheus.NewDesc("acubroker_pending_sign_outs",
			"Seats in state signing_out: sign-outs that Acumatica has not confirmed yet.", conn, nil),
		signOutAttempts: prometheus.NewDesc("acubroker_pending_sign_out_attempts_max",
			"The most failed attempts of any pending sign-out; 0 when none failed.", conn, nil),
		up: prometheus.NewDesc("acubroker_store_up",
			"1 when this scrape read the seat gauges from Postgres, 0 when it failed.", nil, nil),
		duration: prometheus.NewDesc("acubroker_store_scrape_duration_seconds",
			"How long reading the seat gauges from Postgres took.", nil, nil),
	}
}

func (c *seatCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.seats, c.budget, c.waiters, c.oldestWaiter,
		c.pendingSignOuts, c.signOutAttempts, c.up, c.duration} {
		ch <- d
	}
}

// seatSnapshot holds the values of one scrape, by connection.
type seatSnapshot struct {
	budgets         map[string]int
	seats           map[string]map[broker.SeatState]int
	waiters         map[string]int
	oldestWaiter    map[string]time.Duration
	pendingSignOuts map[string]int
	signOutAttempts map[string]int
}

func (c *seatCollector) Collect(ch chan<- prometheus.Metric) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	snap, err := c.read(ctx)
	ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, time.Since(start).Seconds())
	c.record(err)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)

	for name, budget := range snap.budgets {
		ch <- prometheus.MustNewConstMetric(c.budget, prometheus.GaugeValue, float64(budget), name)
		for _, state := range seatStates {
			n := snap.seats[name][state]
			ch <- prometheus.MustNewConstMetric(c.seats, prometheus.GaugeValue, float64(n), name, string(state))
		}
		ch <- prometheus.MustNewConstMetric(c.waiters, prometheus.GaugeValue, float64(snap.waiters[name]), name)
		ch <- prometheus.MustNewConstMetric(c.oldestWaiter, prometheus.GaugeValue, snap.oldestWaiter[name].Seconds(), name)
		ch <- prometheus.MustNewConstMetric(c.pendingSignOuts, prometheus.GaugeValue, float64(snap.pendingSignOuts[name]), name)
		ch <- prometheus.MustNewConstMetric(c.signOutAttempts, prometheus.GaugeValue, float64(snap.signOutAttempts[name]), name)
	}
}

// read runs the collector's queries in one round trip.
func (c *seatCollector) read(ctx context.Context) (*seatSnapshot, error) {
	now := c.clock.Now()
	snap := &seatSnapshot{
		budgets:         map[string]int{},
		seats:           map[string]map[broker.SeatState]int{},
		waiters:         map[string]int{},
		oldestWaiter:    map[string]time.Duration{},
		pendingSignOuts: map[string]int{},
		signOutAttempts: map[string]int{},
	}
	batch := &pgx.Batch{}
	batch.Queue(budgetsQuery).Query(func(rows pgx.Rows) error {
		var name string
		var budget int
		_, err := pgx.ForEachRow(rows, []any{&name, &budget}, func() error {
			snap.budgets[name] = budget
			return nil
		})
		return err
	})
	batch.Queue(seatCountsQuery).Query(func(rows pgx.Rows) error {
		var name, state string
		var n int
		_, err := pgx.ForEachRow(rows, []any{&name, &state, &n}, func() error {
			if snap.seats[name] == nil {
				snap.seats[name] = map[broker.SeatState]int{}
			}
			snap.seats[name][broker.SeatState(state)] = n
			return nil
		})
		return err
	})
	batch.Queue(waitersQuery, now).Query(func(rows pgx.Rows) error {
		var name string
		var n int
		var oldest time.Time
		_, err := pgx.ForEachRow(rows, []any{&name, &n, &oldest}, func() error {
			snap.waiters[name] = n
			snap.oldestWaiter[name] = max(now.Sub(oldest), 0)
			return nil
		})
		return err
	})
	batch.Queue(pendingSignOutsQuery).Query(func(rows pgx.Rows) error {
		var name string
		var n, attempts int
		_, err := pgx.ForEachRow(rows, []any{&name, &n, &attempts}, func() error {
			snap.pendingSignOuts[name] = n
			snap.signOutAttempts[name] = attempts
			return nil
		})
		return err
	})
	if err := c.pool.SendBatch(ctx, batch).Close(); err != nil {
		return nil, fmt.Errorf("read seat gauges: %w", err)
	}
	return snap, nil
}

// record logs the first failed scrape of a run of failures and the scrape
// that ends it.
func (c *seatCollector) record(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err != nil && c.failures == 0:
		c.failures++
		c.logger.Warn("reading seat gauges from Postgres failed; acubroker_store_up is 0 until a scrape succeeds",
			"timeout", c.timeout.String(), "err", err)
	case err != nil:
		c.failures++
	case c.failures > 0:
		c.logger.Info("reading seat gauges from Postgres works again", "failed_scrapes", c.failures)
		c.failures = 0
	}
}
