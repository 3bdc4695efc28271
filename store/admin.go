package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acubroker/acubroker/broker"
)

var _ broker.AdminStore = (*Store)(nil)

// pausedError returns broker.PausedError when connection is paused, and nil
// when it is not or does not exist. AcquireSeat calls it after a claim found
// no seat, because a paused connection's claim never finds one.
func pausedError(ctx context.Context, q querier, connection string) error {
	rows, _ := q.Query(ctx, connectionPaused, pgx.NamedArgs{"connection": connection})
	paused, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[bool])
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return interpret(err)
	case paused:
		return broker.PausedError(connection)
	}
	return nil
}

// ConnectionStats implements broker.AdminStore.
func (s *Store) ConnectionStats(ctx context.Context, names []string, now time.Time) ([]broker.ConnectionStats, error) {
	rows, _ := s.pool.Query(ctx, connectionStats, pgx.NamedArgs{"names": names, "now": now})
	stats, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (broker.ConnectionStats, error) {
		var (
			c                  broker.ConnectionStats
			pausedAt, waitedAt *time.Time
		)
		err := row.Scan(&c.Name, &c.MaxSessions, &c.Paused, &pausedAt, &c.PausedBy, &c.PauseReason,
			&c.Leased, &c.Idle, &c.SigningIn, &c.SigningOut, &c.Empty, &c.ActiveLeases, &c.Waiters, &waitedAt)
		c.PausedAt = deref(pausedAt)
		c.OldestWaitSince = deref(waitedAt)
		return c, err
	})
	return stats, interpret(err)
}

// Sessions implements broker.AdminStore.
func (s *Store) Sessions(ctx context.Context, q broker.SessionsQuery) ([]broker.SessionInfo, error) {
	afterSession := q.AfterSessionID
	if afterSession == "" {
		afterSession = "00000000-0000-0000-0000-000000000000"
	}
	rows, _ := s.pool.Query(ctx, sessions, pgx.NamedArgs{
		"connection":       q.Connection,
		"state":            string(q.State),
		"after_connection": q.AfterConnection,
		"after_session_id": afterSession,
		"limit":            q.Limit,
	})
	list, err := pgx.CollectRows(rows, scanSession)
	return list, interpret(err)
}

// SessionByID implements broker.AdminStore.
func (s *Store) SessionByID(ctx context.Context, sessionID string) (*broker.SessionInfo, error) {
	rows, _ := s.pool.Query(ctx, sessionByID, pgx.NamedArgs{"session_id": sessionID})
	info, err := pgx.CollectExactlyOneRow(rows, scanSession)
	if err != nil {
		return nil, interpret(err)
	}
	return &info, nil
}

func scanSession(row pgx.CollectableRow) (broker.SessionInfo, error) {
	var (
		info                                            broker.SessionInfo
		state                                           string
		acquired, expire, opened, lastUsed, tokenExpire *time.Time
	)
	err := row.Scan(&info.Connection, &info.Slot, &state, &info.SessionID, &info.Holder, &info.LeaseID,
		&acquired, &expire, &opened, &lastUsed, &tokenExpire, &info.HasRefreshToken, &info.SignOutReason,
		&info.SignOutAttempts)
	info.State = broker.SeatState(state)
	info.LeaseAcquiredAt = deref(acquired)
	info.LeaseExpireAt = deref(expire)
	info.OpenedAt = deref(opened)
	info.LastUsedAt = deref(lastUsed)
	info.TokenExpireAt = deref(tokenExpire)
	return info, err
}

// SetPaused implements broker.AdminStore.
func (s *Store) SetPaused(ctx context.Context, p broker.SetPausedParams) (bool, error) {
	rows, _ := s.pool.Query(ctx, setPaused, pgx.NamedArgs{
		"connection":   p.Connection,
		"paused":       p.Paused,
		"paused_by":    p.By,
		"pause_reason": p.Reason,
		"now":          p.Now,
	})
	changed, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[bool])
	return changed, interpret(err)
}

// BeginForcedSignOut implements broker.AdminStore.
func (s *Store) BeginForcedSignOut(ctx context.Context, p broker.ForcedSignOutParams) ([]broker.ForcedSeat, error) {
	rows, _ := s.pool.Query(ctx, beginForcedSignOut, pgx.NamedArgs{
		"connection":      p.Connection,
		"session_id":      p.SessionID,
		"idle_timeout":    p.IdleTimeout,
		"next_attempt_at": p.NextAttemptAt,
		"now":             p.Now,
	})
	seats, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (broker.ForcedSeat, error) {
		var (
			forced broker.ForcedSeat
			state  string
			err    error
		)
		forced.Seat, err = scanSeatWith(row, &state, &forced.RevokedLeaseID, &forced.RevokedHolder)
		forced.PreviousState = broker.SeatState(state)
		return forced, err
	})
	return seats, interpret(err)
}

// RecordAuditEvent implements broker.AdminStore.
func (s *Store) RecordAuditEvent(ctx context.Context, e broker.AuditEvent) error {
	_, err := s.pool.Exec(ctx, insertAuditEvent, pgx.NamedArgs{
		"occurred_at": e.Time,
		"actor":       e.Actor,
		"action":      string(e.Action),
		"connection":  e.Connection,
		"session_id":  e.SessionID,
		"outcome":     string(e.Outcome),
		"detail":      e.Detail,
	})
	return interpret(err)
}

// AuditEvents implements broker.AdminStore.
func (s *Store) AuditEvents(ctx context.Context, q broker.AuditEventsQuery) ([]broker.AuditEvent, error) {
	rows, _ := s.pool.Query(ctx, auditEvents, pgx.NamedArgs{
		"connection": q.Connection,
		"action":     string(q.Action),
		"before_id":  q.BeforeID,
		"limit":      q.Limit,
	})
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (broker.AuditEvent, error) {
		var (
			e               broker.AuditEvent
			action, outcome string
		)
		err := row.Scan(&e.ID, &e.Time, &e.Actor, &action, &e.Connection, &e.SessionID, &outcome, &e.Detail)
		e.Action = broker.AuditAction(action)
		e.Outcome = broker.AuditOutcome(outcome)
		return e, err
	})
	return events, interpret(err)
}
