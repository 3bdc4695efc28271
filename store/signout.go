package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acubroker/acubroker/broker"
)

// BeginSignOut implements broker.Store.
func (s *Store) BeginSignOut(ctx context.Context, p broker.EndLeaseParams) (*broker.Seat, error) {
	var seat *broker.Seat
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		args := pgx.NamedArgs{
			"lease_id":        p.LeaseID,
			"state":           string(p.State),
			"reason":          p.SignOutReason,
			"reclaim_at":      p.ReclaimAt,
			"next_attempt_at": p.Now.Add(signOutClaim),
			"now":             p.Now,
		}
		rows, _ := tx.Query(ctx, beginSignOut, args)
		var err error
		if seat, err = collectSeat(rows); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, endLease, args)
		return err
	})
	return leaseSeatResult(seat, interpret(err))
}

// signOutClaim is how long the replica that begins a sign-out owns its
// first attempt before other replicas may retry it.
const signOutClaim = time.Minute

// FinishSignOut implements broker.Store.
func (s *Store) FinishSignOut(ctx context.Context, connection string, slot int, sessionID string, now time.Time) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, finishSignOut, pgx.NamedArgs{
			"connection": connection, "slot": slot, "session_id": sessionID, "now": now,
		})
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		return handOff(ctx, tx, connection, now)
	})
	return interpret(err)
}

// RetrySignOutAt implements broker.Store.
func (s *Store) RetrySignOutAt(ctx context.Context, connection string, slot int, sessionID string, next time.Time) error {
	_, err := s.pool.Exec(ctx, retrySignOut, pgx.NamedArgs{
		"connection": connection, "slot": slot, "session_id": sessionID, "next_attempt_at": next,
	})
	return interpret(err)
}

// ClaimDueSignOuts implements broker.Store.
func (s *Store) ClaimDueSignOuts(ctx context.Context, now time.Time, lockFor time.Duration, limit int) ([]broker.Seat, error) {
	rows, _ := s.pool.Query(ctx, claimDueSignOuts, pgx.NamedArgs{"now": now, "lock_for": lockFor, "limit": limit})
	seats, err := pgx.CollectRows(rows, scanSeat)
	return seats, interpret(err)
}
