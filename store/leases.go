package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acubroker/acubroker/broker"
)

// SeatByLease implements broker.Store.
func (s *Store) SeatByLease(ctx context.Context, leaseID string) (*broker.Seat, error) {
	rows, _ := s.pool.Query(ctx, seatByLease, pgx.NamedArgs{"lease_id": leaseID})
	seat, err := pgx.CollectExactlyOneRow(rows, func(row pgx.CollectableRow) (broker.Seat, error) {
		return scanSeatWith(row, new(string))
	})
	if err != nil {
		return nil, interpret(err)
	}
	return &seat, nil
}

// LeaseByID implements broker.Store.
func (s *Store) LeaseByID(ctx context.Context, leaseID string) (*broker.LeaseRecord, error) {
	rows, _ := s.pool.Query(ctx, leaseByID, pgx.NamedArgs{"lease_id": leaseID})
	return collectLease(rows)
}

// LeaseByRequestID implements broker.Store.
func (s *Store) LeaseByRequestID(ctx context.Context, connection, holder, requestID string) (*broker.LeaseRecord, error) {
	rows, _ := s.pool.Query(ctx, leaseByRequestID, pgx.NamedArgs{
		"connection": connection,
		"holder":     holder,
		"request_id": requestID,
	})
	return collectLease(rows)
}

// BeginSignIn implements broker.Store.
func (s *Store) BeginSignIn(ctx context.Context, leaseID string, reclaimAt, now time.Time) (*broker.Seat, error) {
	rows, _ := s.pool.Query(ctx, beginSignIn, pgx.NamedArgs{"lease_id": leaseID, "reclaim_at": reclaimAt, "now": now})
	return leaseSeatResult(collectSeat(rows))
}

// CompleteSignIn implements broker.Store.
func (s *Store) CompleteSignIn(ctx context.Context, p broker.CompleteSignInParams) (*broker.Seat, error) {
	rows, _ := s.pool.Query(ctx, completeSignIn, pgx.NamedArgs{
		"lease_id":           p.LeaseID,
		"session_id":         p.SessionID,
		"credentials":        p.Credentials,
		"credentials_key_id": p.CredentialsKeyID,
		"has_refresh_token":  p.HasRefreshToken,
		"token_expire_at":    p.TokenExpireAt,
		"lease_ttl":          p.LeaseTTL,
		"now":                p.Now,
	})
	return leaseSeatResult(collectSeat(rows))
}

// FailSignIn implements broker.Store.
func (s *Store) FailSignIn(ctx context.Context, leaseID string, outcomeUnknown bool, now time.Time) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		args := pgx.NamedArgs{"lease_id": leaseID, "now": now, "state": string(broker.LeaseFailed)}
		if _, err := tx.Exec(ctx, endLease, args); err != nil {
			return err
		}
		if outcomeUnknown {
			_, err := tx.Exec(ctx, abandonSignIn, args)
			return err
		}
		rows, _ := tx.Query(ctx, failSignIn, args)
		connection, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[string])
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		return handOff(ctx, tx, connection, now)
	})
	return interpret(err)
}

// handOff grants a freed seat to the oldest waiter in the transaction that
// freed it, and wakes the replicas' waiters whether or not it did.
func handOff(ctx context.Context, tx pgx.Tx, connection string, now time.Time) error {
	if _, err := dispatch(ctx, tx, connection, now); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, notifyConnection, pgx.NamedArgs{"connection": connection})
	return err
}

// UpdateCredentials implements broker.Store.
func (s *Store) UpdateCredentials(ctx context.Context, p broker.UpdateCredentialsParams) (*broker.Seat, error) {
	rows, _ := s.pool.Query(ctx, updateCredentials, pgx.NamedArgs{
		"lease_id":           p.LeaseID,
		"credentials":        p.Credentials,
		"credentials_key_id": p.CredentialsKeyID,
		"has_refresh_token":  p.HasRefreshToken,
		"token_expire_at":    p.TokenExpireAt,
		"now":                p.Now,
	})
	return leaseSeatResult(collectSeat(rows))
}

// RenewLease implements broker.Store.
func (s *Store) RenewLease(ctx context.Context, leaseID string, ttl time.Duration, now time.Time) (*broker.Seat, error) {
	rows, _ := s.pool.Query(ctx, renewLease, pgx.NamedArgs{"lease_id": leaseID, "lease_ttl": ttl, "now": now})
	return leaseSeatResult(collectSeat(rows))
}

// ReleaseLease implements broker.Store. The release and the hand-off to
// the oldest waiter go to the server as one batch: one round trip, run in
// one implicit transaction.
func (s *Store) ReleaseLease(ctx context.Context, p broker.EndLeaseParams) (*broker.Seat, error) {
	args := pgx.NamedArgs{
		"lease_id":     p.LeaseID,
		"state":        string(p.State),
		"holder":       p.Holder,
		"check_holder": p.CheckHolder,
		"claim_within": broker.GrantClaimWithin,
		"now":          p.Now,
	}
	batch := &pgx.Batch{}
	batch.Queue(releaseLease, args)
	batch.Queue(dispatchAfterRelease, args)
	results := s.pool.SendBatch(ctx, batch)
	rows, _ := results.Query()
	seat, err := collectSeat(rows)
	if err == nil {
		_, err = results.Exec()
	}
	if cerr := results.Close(); err == nil {
		err = cerr
	}
	return leaseSeatResult(seat, interpret(err))
}
