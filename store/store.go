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

// AcquireSeat implements broker.Store. Without a quota the claim is one
// autocommit statement, the fast path of every acquire; with a quota the
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

// querier is what pgxpool.Pool and pgx.Tx have in common.
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

// Listen implements broker.Store. It holds one connection of its own,
// outside the pool, for as long as it runs.
func (s *Store) Listen(ctx context.Context, ready func(), onNotify func(connection string)) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return interpret(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return interpret(err)
	}
	ready()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return interpret(err)
		}
		onNotify(n.Payload)
	}
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
