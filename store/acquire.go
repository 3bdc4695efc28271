package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/acubroker/acubroker/broker"
)

// AcquireSeat implements broker.Store. Without a quota the claim is one
// autocommit statement, the fast path of every acquire. With a quota, the
// count, claim and enqueue run in one transaction under a per-holder lock.
func (s *Store) AcquireSeat(ctx context.Context, p broker.AcquireSeatParams) (*broker.Seat, int, error) {
	args := pgx.NamedArgs{
		"connection": p.Connection,
		"lease_id":   p.LeaseID,
		"holder":     p.Holder,
		"request_id": p.RequestID,
		"lease_ttl":  p.LeaseTTL,
		"reclaim_at": p.SignInReclaimAt,
		"max_queue":  p.MaxQueue,
		"expire_at":  p.WaitExpireAt,
		"now":        p.Now,
	}
	if p.Quota == 0 {
		return claimOrEnqueue(ctx, s.pool, p, args)
	}
	var (
		seat     *broker.Seat
		position int
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockHolder, args); err != nil {
			return err
		}
		var held int
		if err := tx.QueryRow(ctx, holderLeases, args).Scan(&held); err != nil {
			return err
		}
		if held >= p.Quota {
			return quotaError(p, held)
		}
		var err error
		seat, position, err = claimOrEnqueue(ctx, tx, p, args)
		return err
	})
	return seat, position, interpret(err)
}

func claimOrEnqueue(ctx context.Context, q querier, p broker.AcquireSeatParams, args pgx.NamedArgs) (*broker.Seat, int, error) {
	rows, _ := q.Query(ctx, claimSeat, args)
	seat, err := collectSeat(rows)
	if errors.Is(err, broker.ErrNotFound) {
		if perr := pausedError(ctx, q, p.Connection); perr != nil {
			return nil, 0, perr
		}
	}
	if !errors.Is(err, broker.ErrNotFound) || p.NoWait {
		return seat, 0, err
	}
	var (
		position int
		queued   bool
	)
	if err := q.QueryRow(ctx, enqueue, args).Scan(&position, &queued); err != nil {
		return nil, 0, interpret(err)
	}
	if !queued {
		return nil, position, &broker.Error{
			Reason: broker.ReasonQueueFull,
			Message: fmt.Sprintf("%d callers already wait for a seat of connection %q, the most it queues; retry later",
				position-1, p.Connection),
			RetryAfter: time.Second,
			Metadata:   map[string]string{"connection": p.Connection, "queue_position": fmt.Sprint(position)},
		}
	}
	return nil, position, nil
}

func quotaError(p broker.AcquireSeatParams, held int) error {
	return &broker.Error{
		Reason: broker.ReasonCallerQuota,
		Message: fmt.Sprintf("caller %q already holds or waits for %d leases of connection %q, its quota; "+
			"release a lease first", p.Holder, held, p.Connection),
		RetryAfter: time.Second,
		Metadata:   map[string]string{"connection": p.Connection},
	}
}

// Dequeue implements broker.Store.
func (s *Store) Dequeue(ctx context.Context, leaseID string) (bool, error) {
	tag, err := s.pool.Exec(ctx, dequeue, pgx.NamedArgs{"lease_id": leaseID})
	if err != nil {
		return false, interpret(err)
	}
	return tag.RowsAffected() > 0, nil
}

// Dispatch implements broker.Store.
func (s *Store) Dispatch(ctx context.Context, connection string, now time.Time) (int, error) {
	return dispatch(ctx, s.pool, connection, now)
}

// querier is the query interface that pgxpool.Pool and pgx.Tx share.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// dispatch grants free seats to waiters until either runs out.
func dispatch(ctx context.Context, q querier, connection string, now time.Time) (int, error) {
	granted := 0
	for {
		tag, err := q.Exec(ctx, dispatchOne, pgx.NamedArgs{
			"connection": connection, "now": now, "claim_within": broker.GrantClaimWithin,
		})
		if err != nil {
			return granted, interpret(err)
		}
		if tag.RowsAffected() == 0 {
			return granted, nil
		}
		granted++
	}
}

// ExtendWaiters implements broker.Store.
func (s *Store) ExtendWaiters(ctx context.Context, leaseIDs []string, expireAt time.Time) error {
	if len(leaseIDs) == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx, extendWaiters, pgx.NamedArgs{"lease_ids": leaseIDs, "expire_at": expireAt})
	return interpret(err)
}

// DispatchAll implements broker.Store.
func (s *Store) DispatchAll(ctx context.Context, now time.Time) (int, error) {
	rows, _ := s.pool.Query(ctx, waitingConnections)
	connections, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, interpret(err)
	}
	total := 0
	for _, c := range connections {
		n, err := s.Dispatch(ctx, c, now)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
