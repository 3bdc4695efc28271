package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acubroker/acubroker/emulator"
)

// HandoffResult is the outcome of the hand-off scenario: a release on one
// replica while the only waiter waits on another.
type HandoffResult struct {
	Mode string `json:"mode"`
	// Handoff runs from just before the release call on replica A to the
	// return of the waiter's acquire on replica B.
	Handoff Latency `json:"handoff"`
	// Release is the release call on replica A alone.
	Release Latency `json:"release"`
	// Notify is a raw LISTEN/NOTIFY round trip on the same server: from
	// just before an autocommit pg_notify to the listener's receipt.
	Notify Latency `json:"notify"`
	// NotifyInTx is the same round trip when the notification rides a
	// transaction that also updates one row, as a release does. It is
	// measured only when the benchmark owns the server.
	NotifyInTx *Latency `json:"notify_in_tx,omitempty"`
	// P99OverNotifyMs is the hand-off's p99 minus the raw NOTIFY's p99.
	P99OverNotifyMs float64 `json:"p99_over_notify_ms"`
	// Statements and Waits are the brokers' database's statements per
	// hand-off and its backends' wait events, when Config.Diagnose is set.
	Statements []StatementStat `json:"statements,omitempty"`
	Waits      []WaitEvent     `json:"waits,omitempty"`
	Errors     int             `json:"errors"`
	FirstError string          `json:"first_error,omitempty"`
	Load       LoadRange       `json:"load_average"`
}

// Hand-off timing. queuedSettle lets a waiter that has just joined the
// queue finish its first look for a seat and block on its notification
// channel, so that the hand-off measured is the notified one.
const (
	queuedSettle  = 10 * time.Millisecond
	queuedTimeout = 10 * time.Second
	notifyChannel = "brokerbench_notify"
)

// runHandoff runs the hand-off scenario and the raw NOTIFY round trips.
func (r *runner) runHandoff(ctx context.Context) (*HandoffResult, error) {
	res := &HandoffResult{Load: LoadRange{Start: readLoadAverage()}}
	var d *deployment
	var err error
	if r.cfg.External != nil {
		d, err = r.external()
	} else {
		emu := emulator.DefaultConfig()
		emu.Seats = 1
		d, err = r.deploy(ctx, deploySpec{
			Name:     "handoff",
			Conns:    []connSpec{{Name: "erp", Seats: 1, MaxWait: 30 * time.Second}},
			Replicas: 2,
			Emulator: emu,
		})
	}
	if err != nil {
		return nil, err
	}
	defer r.closeDeployment(d)
	res.Mode = d.mode

	r.log.Info("hand-off", "handoffs", r.cfg.Handoff.Handoffs)
	stmts, err := r.startStatements(ctx, d)
	if err != nil {
		return nil, err
	}
	var s samples
	handoffs, err := r.handoffs(ctx, d, &s)
	if err != nil {
		return nil, err
	}
	if stmts != nil {
		res.Waits = stmts.waits()
		if res.Statements, err = stmts.collect(ctx, len(handoffs)); err != nil {
			return nil, err
		}
	}
	res.Handoff, res.Release = summarize(handoffs), summarize(s.release)
	res.Errors, res.FirstError = s.errors, s.firstErr

	if err := r.measureNotify(ctx, d, res); err != nil {
		return nil, err
	}
	res.P99OverNotifyMs = round3(res.Handoff.P99Ms - res.Notify.P99Ms)
	res.Load.End = readLoadAverage()
	return res, nil
}

// queuedAcquire is the outcome of an acquire that waited.
type queuedAcquire struct {
	leaseID string
	at      time.Time
	err     error
}

// handoffs times the hand-offs. Replica 0 (A) releases and replica 1 (B)
// waits. The lease that B gets is the one A releases next, since any
// replica serves any lease.
func (r *runner) handoffs(ctx context.Context, d *deployment, s *samples) ([]time.Duration, error) {
	a, b := d.client(0), d.client(1)
	lease, err := acquire(ctx, a, d.connection)
	if err != nil {
		return nil, fmt.Errorf("hand-off: first lease: %w", err)
	}
	db, err := pgx.Connect(ctx, d.databaseURL)
	if err != nil {
		return nil, fmt.Errorf("hand-off: connect to the brokers' database: %w", err)
	}
	defer db.Close(context.WithoutCancel(ctx))

	var handoffs []time.Duration
	for range r.cfg.Handoff.Handoffs {
		got := make(chan queuedAcquire, 1)
		go func() {
			id, err := acquire(ctx, b, d.connection)
			got <- queuedAcquire{leaseID: id, at: time.Now(), err: err}
		}()
		if err := waitQueued(ctx, db, d.connection, got); err != nil {
			return handoffs, errors.Join(err, release(ctx, a, lease))
		}
		time.Sleep(queuedSettle)

		start := time.Now()
		relErr := release(ctx, a, lease)
		released := time.Since(start)
		next := <-got
		switch {
		case relErr != nil:
			s.fail(relErr)
		case next.err != nil:
			s.fail(next.err)
		default:
			s.add(nil, []time.Duration{released})
			handoffs = append(handoffs, next.at.Sub(start))
		}
		if next.err != nil {
			return handoffs, fmt.Errorf("hand-off: the waiter on replica B got no lease: %w", next.err)
		}
		lease = next.leaseID
	}
	return handoffs, release(ctx, a, lease)
}

// waitQueued polls the waiters table until connection has a waiter. It
// fails when the acquire in got returns first, since the seat it waits for
// is held.
func waitQueued(ctx context.Context, db *pgx.Conn, connection string, got <-chan queuedAcquire) error {
	deadline := time.Now().Add(queuedTimeout)
	for {
		var n int
		if err := db.QueryRow(ctx, "SELECT count(*) FROM waiters WHERE connection = $1 "+benchmarkTag, connection).Scan(&n); err != nil {
			return fmt.Errorf("hand-off: count waiters: %w", err)
		}
		if n > 0 {
			return nil
		}
		select {
		case q := <-got:
			if q.err != nil {
				return fmt.Errorf("hand-off: the acquire on replica B failed before it queued: %w", q.err)
			}
			return fmt.Errorf("hand-off: the acquire on replica B got lease %s without queueing, "+
				"so the connection has more than one free seat", q.leaseID)
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hand-off: no waiter of %s appeared within %s", connection, queuedTimeout)
		}
	}
}

// measureNotify times raw NOTIFY round trips on the deployment's server.
func (r *runner) measureNotify(ctx context.Context, d *deployment, res *HandoffResult) error {
	url := d.databaseURL
	withTx := r.cfg.External == nil
	if withTx {
		db, err := r.pg.createDatabase(ctx, "notify", false)
		if err != nil {
			return err
		}
		url = r.pg.url(db)
	}
	n := r.cfg.Handoff.Notifies
	raw, err := notifyRoundTrips(ctx, url, n, false)
	if err != nil {
		return err
	}
	res.Notify = summarize(raw)
	if withTx {
		inTx, err := notifyRoundTrips(ctx, url, n, true)
		if err != nil {
			return err
		}
		l := summarize(inTx)
		res.NotifyInTx = &l
	}
	return nil
}

// notifyWarmup round trips are not timed.
const notifyWarmup = 20

// notifyRoundTrips sends n notifications one after another from one
// connection and times each until another connection, which listens,
// receives it. With inTx each notification rides a transaction that
// updates one row.
func notifyRoundTrips(ctx context.Context, url string, n int, inTx bool) ([]time.Duration, error) {
	listener, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("notify: connect the listener: %w", err)
	}
	defer listener.Close(context.WithoutCancel(ctx))
	sender, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("notify: connect the sender: %w", err)
	}
	defer sender.Close(context.WithoutCancel(ctx))
	if _, err := listener.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return nil, fmt.Errorf("notify: listen: %w", err)
	}
	if inTx {
		if _, err := sender.Exec(ctx, `CREATE TABLE IF NOT EXISTS brokerbench_notify (id integer PRIMARY KEY, v bigint NOT NULL);
			INSERT INTO brokerbench_notify VALUES (1, 0) ON CONFLICT DO NOTHING`); err != nil {
			return nil, fmt.Errorf("notify: create table: %w", err)
		}
	}

	type arrival struct {
		payload string
		at      time.Time
		err     error
	}
	listenCtx, stopListening := context.WithCancel(ctx)
	arrivals := make(chan arrival)
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		for {
			note, err := listener.WaitForNotification(listenCtx)
			a := arrival{err: err}
			if err == nil {
				a = arrival{payload: note.Payload, at: time.Now()}
			}
			select {
			case arrivals <- a:
			case <-listenCtx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	// The listener's connection is closed only after its goroutine ends.
	defer func() {
		stopListening()
		<-listening
	}()

	var out []time.Duration
	for i := range n + notifyWarmup {
		payload := strconv.Itoa(i)
		start := time.Now()
		if err := sendNotify(ctx, sender, payload, inTx); err != nil {
			return nil, err
		}
		var a arrival
		select {
		case a = <-arrivals:
		case <-time.After(5 * time.Second):
			return nil, fmt.Errorf("notify: notification %s not received within 5s", payload)
		}
		if a.err != nil {
			return nil, fmt.Errorf("notify: wait for notification: %w", a.err)
		}
		if a.payload != payload {
			return nil, fmt.Errorf("notify: received payload %q, expected %q", a.payload, payload)
		}
		if i >= notifyWarmup {
			out = append(out, a.at.Sub(start))
		}
	}
	return out, nil
}

func sendNotify(ctx context.Context, conn *pgx.Conn, payload string, inTx bool) error {
	if !inTx {
		if _, err := conn.Exec(ctx, "SELECT pg_notify($1, $2)", notifyChannel, payload); err != nil {
			return fmt.Errorf("notify: send: %w", err)
		}
		return nil
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE brokerbench_notify SET v = v + 1 WHERE id = 1"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", notifyChannel, payload)
		return err
	})
	if err != nil {
		return fmt.Errorf("notify: send in a transaction: %w", err)
	}
	return nil
}
