package broker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/acubroker/acubroker/acumatica"
)

// Limits and defaults of the admin methods.
const (
	// DefaultPageSize is the page size of ListSessions and ListAuditEvents
	// when the caller sets none.
	DefaultPageSize = 50
	// MaxPageSize is the largest page size; larger requests are cut to it.
	MaxPageSize = 500
	// MaxAdminReasonLength bounds, in bytes, the reason an operator gives.
	MaxAdminReasonLength = 256
	// DefaultDrainWait is how long a drain waits for lease holders when the
	// caller does not say.
	DefaultDrainWait = time.Minute
	// MaxDrainWait bounds DrainParams.WaitTimeout.
	MaxDrainWait = time.Hour

	// maxPageTokenLength bounds a page token before it is decoded. Tokens
	// the broker issues are about 150 bytes.
	maxPageTokenLength = 512
	// maxFilterLength bounds a connection name given as a filter.
	maxFilterLength = 63
	// forcedSignOutParallel bounds the sign-out requests one forced
	// sign-out sends at once.
	forcedSignOutParallel = 8
	// forcedSignOutClaim is how long a forced sign-out owns its first
	// attempt before the maintenance loop of any replica may retry it.
	forcedSignOutClaim = time.Minute
	// pausedRetryAfter is the RetryInfo delay of CONNECTION_PAUSED.
	pausedRetryAfter = 5 * time.Second
)

// AuditAction is what an audit event records.
type AuditAction string

// Audit actions.
const (
	AuditPauseConnection  AuditAction = "pause_connection"
	AuditResumeConnection AuditAction = "resume_connection"
	AuditDrainConnection  AuditAction = "drain_connection"
	AuditForceSignOut     AuditAction = "force_sign_out"
	// AuditSignOutFailed is the first failed attempt of a sign-out that
	// was not forced by an operator: a caller's sign-out, a retired or idle
	// session. Later attempts of the same sign-out are only logged.
	AuditSignOutFailed AuditAction = "sign_out_failed"
)

// AuditOutcome is whether an audited action succeeded.
type AuditOutcome string

// Audit outcomes. A sign-out that Acumatica did not confirm is a failure.
const (
	AuditSucceeded AuditOutcome = "succeeded"
	AuditFailed    AuditOutcome = "failed"
)

// AuditEvent is one recorded admin action or failed sign-out.
type AuditEvent struct {
	ID   int64
	Time time.Time
	// Actor is the caller identity of the admin call; empty for events the
	// broker records by itself.
	Actor      string
	Action     AuditAction
	Connection string
	SessionID  string
	Outcome    AuditOutcome
	Detail     string
}

// ConnectionStats is a connection's row and seat figures in the store,
// shared by every replica.
type ConnectionStats struct {
	Name        string
	MaxSessions int
	Leased      int
	Idle        int
	SigningIn   int
	SigningOut  int
	Empty       int
	// ActiveLeases counts the seats held by a live lease: the leased seats
	// and the seats signing in for a lease.
	ActiveLeases int
	// Waiters counts the callers queued for a seat, and OldestWaitSince is
	// when the oldest of them queued (zero when none).
	Waiters         int
	OldestWaitSince time.Time
	Paused          bool
	PausedAt        time.Time
	PausedBy        string
	PauseReason     string
}

// SessionInfo is an open session as an operator sees it: no credentials.
type SessionInfo struct {
	SessionID  string
	Connection string
	Slot       int
	// State is SeatIdle, SeatLeased or SeatSigningOut.
	State SeatState
	// Holder, LeaseID and the lease times are set while State is
	// SeatLeased.
	Holder          string
	LeaseID         string
	LeaseAcquiredAt time.Time
	LeaseExpireAt   time.Time
	OpenedAt        time.Time
	LastUsedAt      time.Time
	TokenExpireAt   time.Time
	HasRefreshToken bool
	SignOutReason   string
	SignOutAttempts int
}

// SessionsQuery are the inputs of AdminStore.Sessions.
type SessionsQuery struct {
	// Connection and State filter the sessions; empty matches all.
	Connection string
	State      SeatState
	// The page starts after the session (AfterConnection, AfterSessionID)
	// in (connection, session id) order; both empty for the first page.
	AfterConnection string
	AfterSessionID  string
	Limit           int
}

// AuditEventsQuery are the inputs of AdminStore.AuditEvents.
type AuditEventsQuery struct {
	// Connection and Action filter the events; empty matches all.
	Connection string
	Action     AuditAction
	// BeforeID starts the page below this event id; zero for the newest.
	BeforeID int64
	Limit    int
}

// SetPausedParams are the inputs of AdminStore.SetPaused.
type SetPausedParams struct {
	Connection string
	Paused     bool
	// By and Reason are recorded on a pause and cleared on a resume.
	By     string
	Reason string
	Now    time.Time
}

// ForcedSignOutParams are the inputs of AdminStore.BeginForcedSignOut.
type ForcedSignOutParams struct {
	Connection string
	// SessionID limits the sign-out to one session; empty takes every
	// open session of the connection.
	SessionID string
	// IdleTimeout is the connection's Acumatica idle timeout, from which
	// the seats' reclaim_at is computed as in Broker.SignOut.
	IdleTimeout time.Duration
	// NextAttemptAt is when the maintenance loop may retry the sign-out if
	// the caller never records its outcome.
	NextAttemptAt time.Time
	Now           time.Time
}

// ForcedSeat is a seat moved to signing_out by a forced sign-out.
type ForcedSeat struct {
	Seat
	PreviousState SeatState
	// RevokedLeaseID and RevokedHolder identify the lease that held the
	// seat; both are empty when the seat was not leased.
	RevokedLeaseID string
	RevokedHolder  string
}

// AdminStore is what the admin methods need from the store beyond Store.
// store.Store implements it; a Broker whose Config.Store does not returns
// an internal error from every admin method.
type AdminStore interface {
	// ConnectionStats returns the figures of each named connection that
	// has a row in the store, sorted by name. now decides which waiters
	// have given up.
	ConnectionStats(ctx context.Context, names []string, now time.Time) ([]ConnectionStats, error)

	// Sessions returns up to Limit open sessions (idle, leased or
	// signing_out) in (connection, session id) order.
	Sessions(ctx context.Context, q SessionsQuery) ([]SessionInfo, error)

	// SessionByID returns the open session with this id, or ErrNotFound.
	SessionByID(ctx context.Context, sessionID string) (*SessionInfo, error)

	// SetPaused pauses or resumes a connection and reports whether its
	// state changed. ErrNotFound when the connection has no row.
	SetPaused(ctx context.Context, p SetPausedParams) (bool, error)

	// BeginForcedSignOut moves the targeted leased, idle and signing_out
	// seats to signing_out, revokes their leases, and returns them with
	// their credentials, in slot order. Their next sign-out attempt is
	// NextAttemptAt, so that the maintenance loop leaves them to the caller.
	BeginForcedSignOut(ctx context.Context, p ForcedSignOutParams) ([]ForcedSeat, error)

	// RecordAuditEvent stores an event; its ID is assigned by the store.
	RecordAuditEvent(ctx context.Context, e AuditEvent) error

	// AuditEvents returns up to Limit events, newest first.
	AuditEvents(ctx context.Context, q AuditEventsQuery) ([]AuditEvent, error)
}

// PausedError returns the error of an acquire on a paused connection. The
// store returns it from ClaimSeat.
func PausedError(connection string) *Error {
	return &Error{
		Reason: ReasonConnectionPaused,
		Message: fmt.Sprintf("connection %q is paused by an operator and grants no new lease; "+
			"retry later, or ask an operator to resume it", connection),
		RetryAfter: pausedRetryAfter,
		Metadata:   map[string]string{"connection": connection},
	}
}

// adminState is the Broker's support for its admin methods.
type adminState struct {
	// store is nil when Config.Store does not implement AdminStore.
	store AdminStore
	// counters has one entry per configured connection. The map is never
	// written after New; its values are updated atomically.
	counters map[string]*connectionCounters
	// since is when the counters started, by the broker's clock.
	since time.Time
}

// initAdmin sets up the admin support. It wraps the broker's observer so
// that the counters see every Acumatica request; New calls it after the
// connections and the observer are set.
func (b *Broker) initAdmin(store Store) {
	b.admin.store, _ = store.(AdminStore)
	b.admin.since = b.clock.Now()
	b.admin.counters = make(map[string]*connectionCounters, len(b.connections))
	for name := range b.connections {
		b.admin.counters[name] = &connectionCounters{}
	}
	b.observer = countingObserver{next: b.observer, counters: b.admin.counters}
}

func (b *Broker) adminStore() (AdminStore, error) {
	if b.admin.store == nil {
		return nil, errors.New("broker: the configured Store does not implement broker.AdminStore, so admin calls are unavailable")
	}
	return b.admin.store, nil
}

// ConnectionCounters are one replica's counts of a connection's Acumatica
// requests since Since.
type ConnectionCounters struct {
	Since            time.Time
	SignIns          int64
	SignInFailures   int64
	Refreshes        int64
	RefreshFailures  int64
	SignOuts         int64
	SignOutFailures  int64
	LoginLimitErrors int64
}

type connectionCounters struct {
	signIns, signInFailures    atomic.Int64
	refreshes, refreshFailures atomic.Int64
	signOuts, signOutFailures  atomic.Int64
	loginLimitErrors           atomic.Int64
}

func (c *connectionCounters) snapshot(since time.Time) ConnectionCounters {
	return ConnectionCounters{
		Since:            since,
		SignIns:          c.signIns.Load(),
		SignInFailures:   c.signInFailures.Load(),
		Refreshes:        c.refreshes.Load(),
		RefreshFailures:  c.refreshFailures.Load(),
		SignOuts:         c.signOuts.Load(),
		SignOutFailures:  c.signOutFailures.Load(),
		LoginLimitErrors: c.loginLimitErrors.Load(),
	}
}

// countingObserver counts Acumatica requests per connection for the admin
// figures, then passes every event on to next.
type countingObserver struct {
	next     Observer
	counters map[string]*connectionCounters
}

func (o countingObserver) Acquired(connection string, waited time.Duration, err error) {
	o.next.Acquired(connection, waited, err)
}

func (o countingObserver) LeaseEnded(connection string, state LeaseState, held time.Duration) {
	o.next.LeaseEnded(connection, state, held)
}

func (o countingObserver) SignedIn(connection string, took time.Duration, err error) {
	if c := o.counters[connection]; c != nil {
		countResult(err, &c.signIns, &c.signInFailures)
		if isLoginLimit(err) {
			c.loginLimitErrors.Add(1)
		}
	}
	o.next.SignedIn(connection, took, err)
}

func (o countingObserver) Refreshed(connection string, took time.Duration, err error) {
	if c := o.counters[connection]; c != nil {
		countResult(err, &c.refreshes, &c.refreshFailures)
		if isLoginLimit(err) {
			c.loginLimitErrors.Add(1)
		}
	}
	o.next.Refreshed(connection, took, err)
}

func (o countingObserver) SignedOut(connection string, took time.Duration, err error) {
	if c := o.counters[connection]; c != nil {
		countResult(err, &c.signOuts, &c.signOutFailures)
	}
	o.next.SignedOut(connection, took, err)
}

func countResult(err error, ok, failed *atomic.Int64) {
	if err != nil {
		failed.Add(1)
		return
	}
	ok.Add(1)
}

func isLoginLimit(err error) bool {
	return errors.Is(err, acumatica.ErrLoginLimit) || errors.Is(err, ErrLoginLimit)
}

// ConnectionStatus is a configured connection with its budget, its seat
// figures from the store and this replica's counters.
type ConnectionStatus struct {
	ConnectionStats
	DefaultLeaseTTL time.Duration
	MaxLeaseTTL     time.Duration
	MaxWait         time.Duration
	// OldestWait is how long the oldest waiter has waited by the broker's
	// clock; zero when nobody waits.
	OldestWait time.Duration
	Counters   ConnectionCounters
}

// ListConnections returns every configured connection, sorted by name.
//
// Errors: ErrStoreUnavailable.
func (b *Broker) ListConnections(ctx context.Context) ([]ConnectionStatus, error) {
	names := b.Connections()
	slices.Sort(names)
	return b.connectionStatuses(ctx, names)
}

// GetConnection returns one configured connection.
//
// Errors: ErrInvalidArgument, ErrConnectionNotFound, ErrStoreUnavailable.
func (b *Broker) GetConnection(ctx context.Context, name string) (*ConnectionStatus, error) {
	conn, err := b.connection(name)
	if err != nil {
		return nil, err
	}
	list, err := b.connectionStatuses(ctx, []string{conn.Name})
	if err != nil {
		return nil, err
	}
	return &list[0], nil
}

func (b *Broker) connectionStatuses(ctx context.Context, names []string) ([]ConnectionStatus, error) {
	st, err := b.adminStore()
	if err != nil {
		return nil, err
	}
	now := b.clock.Now()
	stats, err := st.ConnectionStats(ctx, names, now)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]ConnectionStats, len(stats))
	for _, s := range stats {
		byName[s.Name] = s
	}
	out := make([]ConnectionStatus, 0, len(names))
	for _, name := range names {
		conn := b.connections[name]
		s, ok := byName[name]
		if !ok {
			// Start has not created the connection's seats yet.
			s = ConnectionStats{Name: name, MaxSessions: conn.MaxSessions}
		}
		status := ConnectionStatus{
			ConnectionStats: s,
			DefaultLeaseTTL: conn.DefaultLeaseTTL,
			MaxLeaseTTL:     conn.MaxLeaseTTL,
			MaxWait:         conn.MaxWait,
			Counters:        b.admin.counters[name].snapshot(b.admin.since),
		}
		if !s.OldestWaitSince.IsZero() {
			status.OldestWait = max(now.Sub(s.OldestWaitSince), 0)
		}
		out = append(out, status)
	}
	return out, nil
}

// ListSessionsParams are the inputs of ListSessions.
type ListSessionsParams struct {
	// Connection and State filter the sessions; empty matches all. State
	// is SeatIdle, SeatLeased or SeatSigningOut.
	Connection string
	State      SeatState
	// PageSize is the most sessions to return: zero for DefaultPageSize,
	// cut to MaxPageSize.
	PageSize int
	// PageToken is the NextPageToken of the previous page; empty for the
	// first page.
	PageToken string
}

// SessionPage is one page of ListSessions.
type SessionPage struct {
	Sessions []SessionInfo
	// NextPageToken is empty after the last page.
	NextPageToken string
}

// ListSessions returns one page of open sessions in (connection, session
// id) order. Pages are keyset-paginated: a session present during the whole
// walk appears exactly once, whatever changes meanwhile.
//
// Errors: ErrInvalidArgument (naming page_size, page_token, state or
// connection), ErrConnectionNotFound, ErrStoreUnavailable.
func (b *Broker) ListSessions(ctx context.Context, p ListSessionsParams) (*SessionPage, error) {
	st, err := b.adminStore()
	if err != nil {
		return nil, err
	}
	if p.Connection != "" {
		if _, err := b.connection(p.Connection); err != nil {
			return nil, err
		}
	}
	switch p.State {
	case "", SeatIdle, SeatLeased, SeatSigningOut:
	default:
		return nil, invalidArgument("state", "%q is not a session state; use idle, leased or signing_out", p.State)
	}
	limit, err := pageSize(p.PageSize)
	if err != nil {
		return nil, err
	}
	cursor := pageCursor{Kind: cursorSessions, Connection: p.Connection, State: string(p.State)}
	if p.PageToken != "" {
		if cursor, err = decodePageToken(p.PageToken, cursor); err != nil {
			return nil, err
		}
	}
	rows, err := st.Sessions(ctx, SessionsQuery{
		Connection:      p.Connection,
		State:           p.State,
		AfterConnection: cursor.AfterConnection,
		AfterSessionID:  cursor.AfterSessionID,
		Limit:           limit + 1,
	})
	if err != nil {
		return nil, err
	}
	page := &SessionPage{Sessions: rows}
	if len(rows) > limit {
		page.Sessions = rows[:limit]
		last := rows[limit-1]
		cursor.AfterConnection, cursor.AfterSessionID = last.Connection, last.SessionID
		page.NextPageToken = encodePageToken(cursor)
	}
	return page, nil
}

// GetSession returns an open session.
//
// Errors: ErrInvalidArgument, ErrSessionNotFound, ErrStoreUnavailable.
func (b *Broker) GetSession(ctx context.Context, sessionID string) (*SessionInfo, error) {
	st, err := b.adminStore()
	if err != nil {
		return nil, err
	}
	id, err := parseSessionID(sessionID)
	if err != nil {
		return nil, err
	}
	info, err := st.SessionByID(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, sessionNotFound(id)
	}
	return info, err
}

func parseSessionID(sessionID string) (string, error) {
	if sessionID == "" {
		return "", invalidArgument("session_id", "the session id is empty; pass a session_id that ListSessions returned")
	}
	id, err := uuid.Parse(sessionID)
	if err != nil || len(sessionID) > 64 {
		return "", invalidArgument("session_id", "%q is not a UUID; pass a session_id that ListSessions returned", sessionID)
	}
	return id.String(), nil
}

func sessionNotFound(sessionID string) *Error {
	return &Error{
		Reason: ReasonSessionNotFound,
		Message: fmt.Sprintf("session %s not found: no seat holds it, because it was signed out "+
			"or the id is wrong; list the open sessions with ListSessions", sessionID),
		Metadata: map[string]string{"session_id": sessionID},
	}
}

// ForceSignOutParams are the inputs of ForceSignOut. Set exactly one of
// SessionID and Connection.
type ForceSignOutParams struct {
	// SessionID signs out one session.
	SessionID string
	// Connection signs out every open session of a connection.
	Connection string
	// Actor is the caller identity, recorded in the audit events.
	Actor string
	// Reason is the operator's note, recorded in the audit events.
	Reason string
}

// SignOutResult reports the forced sign-out of one session.
type SignOutResult struct {
	SessionID      string
	Connection     string
	PreviousState  SeatState
	RevokedLeaseID string
	Holder         string
	// Confirmed is true when Acumatica confirmed the sign-out and the seat
	// is free. Otherwise Error says why, and the seat stays counted while
	// the maintenance loop retries the sign-out.
	Confirmed bool
	Error     string
}

// ForceSignOut signs out one session, or every open session of a
// connection, at Acumatica, whether or not a caller holds it. The leases of
// leased sessions are revoked, so their holders' next renew, release or
// sign-out fails with ErrLeaseRevoked. Each session gets an audit event.
// Seats still signing in have no session yet and are left alone.
//
// Errors: ErrInvalidArgument, ErrSessionNotFound, ErrConnectionNotFound,
// ErrStoreUnavailable. A sign-out that Acumatica does not confirm is not an
// error: its result says so.
func (b *Broker) ForceSignOut(ctx context.Context, p ForceSignOutParams) ([]SignOutResult, error) {
	if _, err := b.adminStore(); err != nil {
		return nil, err
	}
	if err := validateAdminReason(p.Reason); err != nil {
		return nil, err
	}
	event := AuditEvent{Actor: p.Actor, Action: AuditForceSignOut, Connection: p.Connection}
	var conn *Connection
	var err error
	switch {
	case p.SessionID != "" && p.Connection != "":
		return nil, invalidArgument("session_id", "both session_id and connection are set; set session_id to sign out "+
			"one session, or connection to sign out every session of a connection")
	case p.SessionID != "":
		event.SessionID = p.SessionID
		var info *SessionInfo
		if info, err = b.GetSession(ctx, p.SessionID); err == nil {
			event.Connection, event.SessionID = info.Connection, info.SessionID
			conn, err = b.connection(info.Connection)
		}
	case p.Connection != "":
		conn, err = b.connection(p.Connection)
	default:
		return nil, invalidArgument("session_id", "neither session_id nor connection is set; set session_id to sign out "+
			"one session, or connection to sign out every session of a connection")
	}
	if err != nil {
		b.recordFailure(ctx, event, p.Reason, err)
		return nil, err
	}

	results, err := b.forceSignOut(ctx, conn, event.SessionID)
	if err != nil {
		b.recordFailure(ctx, event, p.Reason, err)
		return nil, err
	}
	b.recordSignOuts(ctx, p.Actor, p.Reason, results)
	if event.SessionID != "" && len(results) == 0 {
		// The session was signed out between the look-up and the claim.
		return nil, sessionNotFound(event.SessionID)
	}
	return results, nil
}

// forceSignOut signs out the session sessionID of conn, or every open
// session of conn when sessionID is empty. It runs to the end even when ctx
// is cancelled: the seats are already committed to signing_out.
func (b *Broker) forceSignOut(ctx context.Context, conn *Connection, sessionID string) ([]SignOutResult, error) {
	bg := context.WithoutCancel(ctx)
	now := b.clock.Now()
	seats, err := b.admin.store.BeginForcedSignOut(bg, ForcedSignOutParams{
		Connection:    conn.Name,
		SessionID:     sessionID,
		IdleTimeout:   conn.IdleTimeout,
		NextAttemptAt: now.Add(forcedSignOutClaim),
		Now:           now,
	})
	if err != nil {
		return nil, err
	}
	for i := range seats {
		if s := &seats[i]; s.RevokedLeaseID != "" {
			b.observer.LeaseEnded(conn.Name, LeaseRevoked, now.Sub(s.LeaseAcquiredAt))
			b.logger.InfoContext(ctx, "revoked a lease for a forced sign-out", "connection", conn.Name,
				"session_id", s.SessionID, "lease_id", s.RevokedLeaseID, "holder", s.RevokedHolder)
		}
	}

	results := make([]SignOutResult, len(seats))
	slots := make(chan struct{}, forcedSignOutParallel)
	var wg sync.WaitGroup
	for i := range seats {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			results[i] = b.signOutForced(bg, conn, &seats[i])
		})
	}
	wg.Wait()
	return results, nil
}

// signOutForced signs out a seat that BeginForcedSignOut moved to
// signing_out, the same way as every other sign-out (signOutSeat), and
// reports the outcome.
func (b *Broker) signOutForced(ctx context.Context, conn *Connection, seat *ForcedSeat) SignOutResult {
	res := SignOutResult{
		SessionID:      seat.SessionID,
		Connection:     seat.Connection,
		PreviousState:  seat.PreviousState,
		RevokedLeaseID: seat.RevokedLeaseID,
		Holder:         seat.RevokedHolder,
	}
	failure := &forcedSignOutFailure{}
	if b.signOutSeat(context.WithValue(ctx, forcedSignOutKey{}, failure), conn, &seat.Seat) {
		b.logger.InfoContext(ctx, "signed out by an operator", "connection", conn.Name, "session_id", seat.SessionID)
		res.Confirmed = true
		return res
	}
	if failure.err != nil {
		res.Error = fmt.Sprintf("Acumatica did not confirm the sign-out (%s); the broker retries it in the background",
			erpError(conn, "sign-out", failure.err).Reason)
	} else {
		res.Error = "the sign-out is not confirmed; the broker retries it in the background and logs the cause"
	}
	return res
}

// forcedSignOutKey marks the context of a forced sign-out. Its value, a
// *forcedSignOutFailure, receives the error of a failed attempt, which the
// forced sign-out reports in its result and audit event instead of a
// separate AuditSignOutFailed event.
type forcedSignOutKey struct{}

type forcedSignOutFailure struct{ err error }

// PauseParams are the inputs of PauseConnection.
type PauseParams struct {
	Connection string
	// Actor is the caller identity, recorded with the pause.
	Actor string
	// Reason is the operator's note, recorded with the pause.
	Reason string
}

// PauseConnection stops a connection from granting leases on every replica:
// the store's claim and dispatch skip paused connections, and an acquire
// fails with ErrConnectionPaused. Leases already held continue. Pausing a
// paused connection keeps the first pause's time, actor and reason.
//
// Errors: ErrInvalidArgument, ErrConnectionNotFound, ErrStoreUnavailable.
func (b *Broker) PauseConnection(ctx context.Context, p PauseParams) (*ConnectionStatus, error) {
	if err := validateAdminReason(p.Reason); err != nil {
		return nil, err
	}
	return b.setPaused(ctx, AuditPauseConnection, SetPausedParams{
		Connection: p.Connection, Paused: true, By: p.Actor, Reason: p.Reason,
	})
}

// ResumeParams are the inputs of ResumeConnection.
type ResumeParams struct {
	Connection string
	// Actor is the caller identity, recorded in the audit event.
	Actor string
}

// ResumeConnection lets a paused connection grant leases again, and grants
// free seats to its waiters at once.
//
// Errors: ErrInvalidArgument, ErrConnectionNotFound, ErrStoreUnavailable.
func (b *Broker) ResumeConnection(ctx context.Context, p ResumeParams) (*ConnectionStatus, error) {
	status, err := b.setPaused(ctx, AuditResumeConnection, SetPausedParams{
		Connection: p.Connection, Paused: false, By: p.Actor,
	})
	if err != nil {
		return nil, err
	}
	if _, err := b.store.Dispatch(ctx, p.Connection, b.clock.Now()); err != nil {
		b.logger.WarnContext(ctx, "granting seats to waiters after a resume failed; the maintenance loop retries",
			"connection", p.Connection, "err", err)
	}
	return status, nil
}

func (b *Broker) setPaused(ctx context.Context, action AuditAction, p SetPausedParams) (*ConnectionStatus, error) {
	st, err := b.adminStore()
	if err != nil {
		return nil, err
	}
	conn, err := b.connection(p.Connection)
	if err != nil {
		return nil, err
	}
	event := AuditEvent{Actor: p.By, Action: action, Connection: conn.Name}
	p.Now = b.clock.Now()
	changed, err := st.SetPaused(ctx, p)
	if errors.Is(err, ErrNotFound) {
		err = &Error{
			Reason:   ReasonConnectionNotFound,
			Message:  fmt.Sprintf("connection %q has no row in the database yet; retry once the broker has started", conn.Name),
			Metadata: map[string]string{"connection": conn.Name},
		}
	}
	if err != nil {
		b.recordFailure(ctx, event, p.Reason, err)
		return nil, err
	}
	var detail []string
	if p.Reason != "" {
		detail = append(detail, "reason: "+p.Reason)
	}
	if !changed {
		detail = append(detail, "no change: the connection was already in this state")
	}
	event.Outcome, event.Detail = AuditSucceeded, strings.Join(detail, "; ")
	b.recordAudit(ctx, event)
	b.logger.InfoContext(ctx, string(action), "connection", conn.Name, "actor", p.By, "changed", changed)
	return b.GetConnection(ctx, conn.Name)
}

// DrainParams are the inputs of DrainConnection.
type DrainParams struct {
	Connection string
	// WaitTimeout is how long to wait for lease holders to release, from
	// zero (revoke at once) to MaxDrainWait.
	WaitTimeout time.Duration
	// Actor is the caller identity, recorded with the pause and the audit
	// events.
	Actor string
	// Reason is the operator's note.
	Reason string
}

// DrainResult reports a drain.
type DrainResult struct {
	// Connection is the connection after the drain, paused.
	Connection ConnectionStatus
	// LeasesAtStart counts the live leases when the drain began.
	LeasesAtStart int
	// WaitTimeoutReached is true when leases were still held at the end of
	// the wait and were revoked.
	WaitTimeoutReached bool
	Waited             time.Duration
	// SignOuts has one result per session signed out.
	SignOuts []SignOutResult
}

// DrainConnection pauses a connection, waits up to p.WaitTimeout for its
// lease holders to release, then signs out every open session of the
// connection, revoking the leases still held. Sign-ins in flight at that
// point are waited for (up to the sign-in timeout) and their sessions
// signed out too. The connection stays paused.
//
// When ctx ends during the wait, the drain stops waiting and still signs the
// sessions out.
//
// Errors: ErrInvalidArgument, ErrConnectionNotFound, ErrStoreUnavailable.
func (b *Broker) DrainConnection(ctx context.Context, p DrainParams) (*DrainResult, error) {
	if p.WaitTimeout < 0 || p.WaitTimeout > MaxDrainWait {
		return nil, invalidArgument("wait_timeout", "%s is outside 0s to %s; use a duration in that range", p.WaitTimeout, MaxDrainWait)
	}
	if err := validateAdminReason(p.Reason); err != nil {
		return nil, err
	}
	pauseReason := "drain"
	if p.Reason != "" {
		pauseReason = "drain: " + p.Reason
	}
	status, err := b.setPaused(ctx, AuditPauseConnection, SetPausedParams{
		Connection: p.Connection, Paused: true, By: p.Actor, Reason: pauseReason,
	})
	if err != nil {
		return nil, err
	}
	conn := b.connections[status.Name]
	bg := context.WithoutCancel(ctx)
	event := AuditEvent{Actor: p.Actor, Action: AuditDrainConnection, Connection: conn.Name}

	start := time.Now()
	atStart, left, err := b.waitForHolders(ctx, conn, p.WaitTimeout)
	if err != nil {
		b.recordFailure(ctx, event, p.Reason, err)
		return nil, err
	}
	res := &DrainResult{LeasesAtStart: atStart, WaitTimeoutReached: left > 0, Waited: time.Since(start)}
	if res.SignOuts, err = b.drainSignOut(bg, conn); err != nil {
		b.recordFailure(ctx, event, p.Reason, err)
		return nil, err
	}
	b.recordSignOuts(bg, p.Actor, p.Reason, res.SignOuts)

	final, err := b.GetConnection(bg, conn.Name)
	if err != nil {
		return nil, err
	}
	res.Connection = *final
	event.Outcome, event.Detail = drainSummary(res, p.Reason)
	b.recordAudit(bg, event)
	b.logger.InfoContext(ctx, "drained a connection", "connection", conn.Name, "actor", p.Actor,
		"leases_at_start", atStart, "wait_timeout_reached", res.WaitTimeoutReached, "sessions", len(res.SignOuts))
	return res, nil
}

// waitForHolders waits until no lease of conn is live, or until timeout
// passes or ctx ends. It returns the live leases at the start and at the
// end. The store's notifications wake it when a seat is freed; it also
// polls, in case a notification is lost.
func (b *Broker) waitForHolders(ctx context.Context, conn *Connection, timeout time.Duration) (atStart, left int, err error) {
	b.wake.register(conn.Name)
	defer b.wake.unregister(conn.Name)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(b.pollInterval)
	defer poll.Stop()

	bg := context.WithoutCancel(ctx)
	for first := true; ; first = false {
		woken := b.wake.wait(conn.Name)
		stats, err := b.connectionStats(bg, conn.Name)
		if err != nil {
			return atStart, 0, err
		}
		if first {
			atStart = stats.ActiveLeases
		}
		if stats.ActiveLeases == 0 {
			return atStart, 0, nil
		}
		select {
		case <-woken:
		case <-poll.C:
		case <-deadline.C:
			return atStart, stats.ActiveLeases, nil
		case <-ctx.Done():
			return atStart, stats.ActiveLeases, nil
		}
	}
}

// drainSignOut signs out every session of conn. A sign-in that was in flight
// when the sign-outs began opens a leased session afterwards; it is waited
// for, up to the sign-in timeout, and signed out in a second pass whose
// results replace the first pass's for the same sessions.
func (b *Broker) drainSignOut(ctx context.Context, conn *Connection) ([]SignOutResult, error) {
	results, err := b.forceSignOut(ctx, conn, "")
	if err != nil {
		return nil, err
	}
	stats, err := b.connectionStats(ctx, conn.Name)
	if err != nil || stats.ActiveLeases == 0 {
		return results, err
	}
	if _, _, err := b.waitForHolders(ctx, conn, b.signInTimeout); err != nil {
		return results, err
	}
	more, err := b.forceSignOut(ctx, conn, "")
	if err != nil {
		return results, err
	}
	for _, r := range more {
		i := slices.IndexFunc(results, func(old SignOutResult) bool { return old.SessionID == r.SessionID })
		if i >= 0 {
			results[i] = r
		} else {
			results = append(results, r)
		}
	}
	return results, nil
}

func (b *Broker) connectionStats(ctx context.Context, name string) (ConnectionStats, error) {
	stats, err := b.admin.store.ConnectionStats(ctx, []string{name}, b.clock.Now())
	if err != nil {
		return ConnectionStats{}, err
	}
	if len(stats) == 0 {
		return ConnectionStats{Name: name}, nil
	}
	return stats[0], nil
}

func drainSummary(res *DrainResult, reason string) (AuditOutcome, string) {
	confirmed, revoked := 0, 0
	for _, r := range res.SignOuts {
		if r.Confirmed {
			confirmed++
		}
		if r.RevokedLeaseID != "" {
			revoked++
		}
	}
	detail := fmt.Sprintf("%d leases at start; waited %s; %d leases revoked; %d sessions signed out, %d confirmed, %d pending",
		res.LeasesAtStart, res.Waited.Round(time.Millisecond), revoked, len(res.SignOuts), confirmed, len(res.SignOuts)-confirmed)
	if reason != "" {
		detail += "; reason: " + reason
	}
	if confirmed < len(res.SignOuts) {
		return AuditFailed, detail
	}
	return AuditSucceeded, detail
}

// ListAuditEventsParams are the inputs of ListAuditEvents.
type ListAuditEventsParams struct {
	// Connection and Action filter the events; empty matches all.
	Connection string
	Action     AuditAction
	// PageSize and PageToken work as in ListSessionsParams.
	PageSize  int
	PageToken string
}

// AuditPage is one page of ListAuditEvents.
type AuditPage struct {
	Events []AuditEvent
	// NextPageToken is empty after the last page.
	NextPageToken string
}

// ListAuditEvents returns one page of audit events, newest first. Events of
// connections no longer configured are included.
//
// Errors: ErrInvalidArgument (naming page_size, page_token, action or
// connection), ErrStoreUnavailable.
func (b *Broker) ListAuditEvents(ctx context.Context, p ListAuditEventsParams) (*AuditPage, error) {
	st, err := b.adminStore()
	if err != nil {
		return nil, err
	}
	if len(p.Connection) > maxFilterLength {
		return nil, invalidArgument("connection", "it is %d bytes long; connection names have at most %d", len(p.Connection), maxFilterLength)
	}
	switch p.Action {
	case "", AuditPauseConnection, AuditResumeConnection, AuditDrainConnection, AuditForceSignOut, AuditSignOutFailed:
	default:
		return nil, invalidArgument("action", "%q is not an audit action", p.Action)
	}
	limit, err := pageSize(p.PageSize)
	if err != nil {
		return nil, err
	}
	cursor := pageCursor{Kind: cursorAudit, Connection: p.Connection, Action: string(p.Action)}
	if p.PageToken != "" {
		if cursor, err = decodePageToken(p.PageToken, cursor); err != nil {
			return nil, err
		}
	}
	events, err := st.AuditEvents(ctx, AuditEventsQuery{
		Connection: p.Connection,
		Action:     p.Action,
		BeforeID:   cursor.BeforeID,
		Limit:      limit + 1,
	})
	if err != nil {
		return nil, err
	}
	page := &AuditPage{Events: events}
	if len(events) > limit {
		page.Events = events[:limit]
		cursor.BeforeID = events[limit-1].ID
		page.NextPageToken = encodePageToken(cursor)
	}
	return page, nil
}

// recordSignOutFailure records the first failed attempt of a sign-out that
// an operator did not force; a forced sign-out gets the error through its
// context instead. Later attempts of the same sign-out are only
// logged, so a long Acumatica outage adds one event per session.
func (b *Broker) recordSignOutFailure(ctx context.Context, conn *Connection, seat *Seat, err error) {
	if failure, ok := ctx.Value(forcedSignOutKey{}).(*forcedSignOutFailure); ok {
		failure.err = err
		return
	}
	if seat.SignOutAttempts > 0 || b.admin.store == nil {
		return
	}
	b.recordAudit(ctx, AuditEvent{
		Action:     AuditSignOutFailed,
		Connection: conn.Name,
		SessionID:  seat.SessionID,
		Outcome:    AuditFailed,
		Detail: fmt.Sprintf("Acumatica did not confirm the sign-out (%s); the broker retries it until it is "+
			"confirmed or the session has certainly ended at %s", erpError(conn, "sign-out", err).Reason,
			seat.ReclaimAt.UTC().Format(time.RFC3339)),
	})
}

func (b *Broker) recordSignOuts(ctx context.Context, actor, reason string, results []SignOutResult) {
	for _, r := range results {
		var detail []string
		if reason != "" {
			detail = append(detail, "reason: "+reason)
		}
		detail = append(detail, "previous state "+string(r.PreviousState))
		if r.RevokedLeaseID != "" {
			detail = append(detail, fmt.Sprintf("revoked lease %s of holder %q", r.RevokedLeaseID, r.Holder))
		}
		outcome := AuditSucceeded
		if !r.Confirmed {
			outcome = AuditFailed
			detail = append(detail, r.Error)
		}
		b.recordAudit(ctx, AuditEvent{
			Actor:      actor,
			Action:     AuditForceSignOut,
			Connection: r.Connection,
			SessionID:  r.SessionID,
			Outcome:    outcome,
			Detail:     strings.Join(detail, "; "),
		})
	}
}

// recordFailure records an admin action that failed with err. Only the
// error's caller-safe message is stored.
func (b *Broker) recordFailure(ctx context.Context, event AuditEvent, reason string, err error) {
	msg := "internal error; the broker logged the details"
	var be *Error
	if errors.As(err, &be) {
		msg = be.Message
	}
	if reason != "" {
		msg = "reason: " + reason + "; " + msg
	}
	event.Outcome, event.Detail = AuditFailed, msg
	b.recordAudit(ctx, event)
}

// recordAudit stores an audit event. A failure to store it is logged, not
// returned: the action it records has already happened.
func (b *Broker) recordAudit(ctx context.Context, event AuditEvent) {
	event.Time = b.clock.Now()
	if err := b.admin.store.RecordAuditEvent(context.WithoutCancel(ctx), event); err != nil {
		b.logger.ErrorContext(ctx, "recording an audit event failed", "action", event.Action,
			"connection", event.Connection, "session_id", event.SessionID, "outcome", event.Outcome, "err", err)
	}
}

func validateAdminReason(reason string) error {
	if len(reason) > MaxAdminReasonLength {
		return invalidArgument("reason", "it is %d bytes long; use at most %d", len(reason), MaxAdminReasonLength)
	}
	return nil
}

func pageSize(n int) (int, error) {
	switch {
	case n < 0:
		return 0, invalidArgument("page_size", "%d is negative; use 1 to %d, or 0 for %d", n, MaxPageSize, DefaultPageSize)
	case n == 0:
		return DefaultPageSize, nil
	}
	return min(n, MaxPageSize), nil
}

// Kinds of page cursors, so that a token of one list is rejected by another.
const (
	cursorSessions = "sessions"
	cursorAudit    = "audit"
)

// pageCursor is the decoded form of a page token: the list and filters of
// the request that issued it, and the position after its last row. A token
// is the cursor as JSON, base64url-encoded; it is opaque to callers.
type pageCursor struct {
	Kind       string `json:"k"`
	Connection string `json:"c,omitempty"`
	State      string `json:"s,omitempty"`
	Action     string `json:"a,omitempty"`
	// AfterConnection and AfterSessionID are the last session of the
	// previous page; BeforeID is the last audit event's id.
	AfterConnection string `json:"ac,omitempty"`
	AfterSessionID  string `json:"as,omitempty"`
	BeforeID        int64  `json:"b,omitempty"`
}

func encodePageToken(c pageCursor) string {
	data, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("broker: encode page cursor: %v", err)) // only strings and an int64
	}
	return base64.RawURLEncoding.EncodeToString(data)
}

// decodePageToken decodes token and checks that it was issued for the same
// list and filters as want, and that its position is well formed.
func decodePageToken(token string, want pageCursor) (pageCursor, error) {
	notIssued := invalidArgument("page_token", "it is not a token that the broker issued; pass next_page_token "+
		"unchanged, or leave page_token empty for the first page")
	if len(token) > maxPageTokenLength {
		return want, notIssued
	}
	data, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return want, notIssued
	}
	var c pageCursor
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || dec.More() {
		return want, notIssued
	}
	if c.Kind != want.Kind {
		return want, notIssued
	}
	if c.Connection != want.Connection || c.State != want.State || c.Action != want.Action {
		return want, invalidArgument("page_token", "it was issued for other filters (connection %q, state %q, action %q); "+
			"repeat the filters of the request that returned it, or leave page_token empty to start over",
			c.Connection, c.State, c.Action)
	}
	switch c.Kind {
	case cursorSessions:
		if _, err := uuid.Parse(c.AfterSessionID); err != nil || c.AfterConnection == "" ||
			len(c.AfterConnection) > maxFilterLength || c.BeforeID != 0 {
			return want, notIssued
		}
	case cursorAudit:
		if c.BeforeID <= 0 || c.AfterConnection != "" || c.AfterSessionID != "" {
			return want, notIssued
		}
	}
	return c, nil
}
