package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/acubroker/acubroker/broker"
)

// ReclaimExpired implements broker.Store.
func (s *Store) ReclaimExpired(ctx context.Context, now time.Time, grace time.Duration) (int, error) {
	args := pgx.NamedArgs{"now": now, "grace": grace}
	total := 0
	for _, sql := range []string{expireLeases, reclaimSeats} {
		rows, _ := s.pool.Query(ctx, sql, args)
		notified, err := pgx.CollectRows(rows, func(pgx.CollectableRow) (struct{}, error) { return struct{}{}, nil })
		if err != nil {
			return total, interpret(err)
		}
		total += len(notified)
	}
	for _, sql := range []string{expireWaiters, deleteRetiredSeats} {
		tag, err := s.pool.Exec(ctx, sql, args)
		if err != nil {
			return total, interpret(err)
		}
		total += int(tag.RowsAffected())
	}
	return total, nil
}

// SignOutIdle implements broker.Store.
func (s *Store) SignOutIdle(ctx context.Context, connection string, idleSince time.Time, idleTimeout time.Duration, now time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, signOutIdle, pgx.NamedArgs{
		"connection": connection, "idle_since": idleSince, "idle_timeout": idleTimeout, "now": now,
	})
	if err != nil {
		return 0, interpret(err)
	}
	return int(tag.RowsAffected()), nil
}

// PruneLeases implements broker.Store.
func (s *Store) PruneLeases(ctx context.Context, before time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, pruneLeases, pgx.NamedArgs{"before": before})
	if err != nil {
		return 0, interpret(err)
	}
	return int(tag.RowsAffected()), nil
}

// BackOffSignIns implements broker.Store.
func (s *Store) BackOffSignIns(ctx context.Context, connection string, initial, max time.Duration, now time.Time) (time.Time, error) {
	var until time.Time
	err := s.pool.QueryRow(ctx, backOffSignIns, pgx.NamedArgs{
		"connection": connection, "initial": initial, "max": max, "now": now,
	}).Scan(&until)
	return until, interpret(err)
}

// ClaimProbes implements broker.Store.
func (s *Store) ClaimProbes(ctx context.Context, now time.Time) ([]string, error) {
	rows, _ := s.pool.Query(ctx, claimProbes, pgx.NamedArgs{"now": now})
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return names, interpret(err)
}

// ClaimProbeSeat implements broker.Store.
func (s *Store) ClaimProbeSeat(ctx context.Context, p broker.AcquireSeatParams) (*broker.Seat, error) {
	rows, _ := s.pool.Query(ctx, claimProbeSeat, pgx.NamedArgs{
		"connection": p.Connection,
		"lease_id":   p.LeaseID,
		"holder":     p.Holder,
		"lease_ttl":  p.LeaseTTL,
		"reclaim_at": p.SignInReclaimAt,
		"now":        p.Now,
	})
	return collectSeat(rows)
}

// EndSignInBackoff implements broker.Store.
func (s *Store) EndSignInBackoff(ctx context.Context, connection string) error {
	_, err := s.pool.Exec(ctx, endSignInBackoff, pgx.NamedArgs{"connection": connection})
	return interpret(err)
}

// OpenSessions implements broker.Store.
func (s *Store) OpenSessions(ctx context.Context, connection string) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, openSessions, pgx.NamedArgs{"connection": connection}).Scan(&n)
	return n, interpret(err)
}

// SeatSummary implements broker.Store.
func (s *Store) SeatSummary(ctx context.Context, connection string) (broker.SeatSummary, error) {
	summary := broker.SeatSummary{States: map[broker.SeatState]int{}}
	rows, _ := s.pool.Query(ctx, seatSummary, pgx.NamedArgs{"connection": connection})
	defer rows.Close()
	for rows.Next() {
		var (
			state      string
			n          int
			until      pgtype.Timestamptz
			backingOff bool
		)
		if err := rows.Scan(&state, &n, &until, &backingOff, &summary.Paused); err != nil {
			return summary, interpret(err)
		}
		summary.States[broker.SeatState(state)] = n
		if backingOff && until.InfinityModifier == pgtype.Finite {
			summary.SignInsBlockedUntil = until.Time
		}
	}
	return summary, interpret(rows.Err())
}
