// Package store implements broker.Store on PostgreSQL with pgx v5.
//
// Every method is one statement or one short transaction. Seat rows are
// claimed with FOR UPDATE SKIP LOCKED, so replicas never block one another
// on a seat, and the seat budget holds because a session can only live in a
// seat row. A change that frees or grants a seat sends a notification on the
// acubroker_seats channel, delivered to listeners when it commits.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/acubroker/acubroker/broker"
)

// Store is a broker.Store backed by a pgx connection pool.
type Store struct {
	pool *pgxpool.Pool
}

var _ broker.Store = (*Store)(nil)

// New returns a Store on pool. The schema must be current; see Migrate.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// SyncConnections implements broker.Store.
func (s *Store) SyncConnections(ctx context.Context, budgets []broker.ConnectionBudget) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		for _, b := range budgets {
			args := pgx.NamedArgs{"name": b.Name, "max_sessions": b.MaxSessions}
			batch.Queue(upsertConnection, args)
			batch.Queue(createSeats, args)
			batch.Queue(retireSeats, args)
		}
		batch.Queue(deleteRetiredSeats)
		return tx.SendBatch(ctx, batch).Close()
	})
	return interpret(err)
}

func collectSeat(rows pgx.Rows) (*broker.Seat, error) {
	seat, err := pgx.CollectExactlyOneRow(rows, scanSeat)
	if err != nil {
		return nil, interpret(err)
	}
	return &seat, nil
}

// leaseSeatResult turns "no row" from a lease-scoped update into
// broker.ErrLeaseLost.
func leaseSeatResult(seat *broker.Seat, err error) (*broker.Seat, error) {
	if errors.Is(err, broker.ErrNotFound) {
		return nil, broker.ErrLeaseLost
	}
	return seat, err
}

func scanSeat(row pgx.CollectableRow) (broker.Seat, error) {
	return scanSeatWith(row)
}

// scanSeatWith scans seatColumns, then the extra columns into extra; a
// *string extra receives the lease holder.
func scanSeatWith(row pgx.CollectableRow, extra ...any) (broker.Seat, error) {
	var (
		seat                                                               broker.Seat
		state                                                              string
		opened, lastUsed, tokenExpire, leaseAcquired, leaseExpire, reclaim *time.Time
	)
	dest := []any{&seat.Connection, &seat.Slot, &state, &seat.SessionID, &opened, &lastUsed, &tokenExpire,
		&seat.Credentials, &seat.CredentialsKeyID, &seat.HasRefreshToken, &seat.LeaseID, &leaseAcquired, &leaseExpire,
		&reclaim, &seat.SignOutAttempts, &seat.TokenStale}
	err := row.Scan(append(dest, extra...)...)
	if len(extra) == 1 {
		if holder, ok := extra[0].(*string); ok {
			seat.Holder = *holder
		}
	}
	seat.State = broker.SeatState(state)
	seat.SessionOpenedAt = deref(opened)
	seat.LastUsedAt = deref(lastUsed)
	seat.TokenExpireAt = deref(tokenExpire)
	seat.LeaseAcquiredAt = deref(leaseAcquired)
	seat.LeaseExpireAt = deref(leaseExpire)
	seat.ReclaimAt = deref(reclaim)
	return seat, err
}

func collectLease(rows pgx.Rows) (*broker.LeaseRecord, error) {
	rec, err := pgx.CollectExactlyOneRow(rows, func(row pgx.CollectableRow) (broker.LeaseRecord, error) {
		var (
			rec   broker.LeaseRecord
			state string
			ended *time.Time
		)
		err := row.Scan(&rec.LeaseID, &rec.Connection, &rec.Slot, &rec.SessionID, &rec.Holder, &rec.RequestID,
			&state, &rec.CreatedAt, &ended)
		rec.State = broker.LeaseState(state)
		rec.EndedAt = deref(ended)
		return rec, err
	})
	if err != nil {
		return nil, interpret(err)
	}
	return &rec, nil
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// interpret translates pgx errors into the broker's: no rows becomes
// broker.ErrNotFound, and a database that cannot be reached becomes
// broker.ErrStoreUnavailable. Every other error passes through.
func interpret(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return broker.ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505" && pgErr.ConstraintName == "leases_request_id_key",
			pgErr.Code == "23505" && pgErr.ConstraintName == "waiters_request_id_key":
			return &broker.Error{
				Reason:     broker.ReasonAcquireInProgress,
				Message:    "another acquire with this request_id is in progress; retry shortly",
				RetryAfter: time.Second,
				Cause:      err,
			}
		case len(pgErr.Code) == 5 && (pgErr.Code[:2] == "08" || pgErr.Code[:2] == "57"):
			return unavailable(err)
		}
		return fmt.Errorf("database error %s: %w", pgErr.Code, err)
	}
	if unreachable(err) {
		return unavailable(err)
	}
	return err
}

// unreachable reports whether err means the server could not be reached or
// the connection was lost: a refused dial, a reset, a timeout, a closed pool.
func unreachable(err error) bool {
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	if errors.As(err, &connectErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "closed pool") || strings.Contains(msg, "conn closed")
}

func unavailable(err error) error {
	return &broker.Error{
		Reason:     broker.ReasonStoreUnavailable,
		Message:    "the broker's database cannot be reached; retry shortly",
		RetryAfter: time.Second,
		Cause:      err,
	}
}
