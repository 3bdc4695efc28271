package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	// request sets no wait.
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
	// drainPollInterval is how often a drain checks whether the lease
	// holders have released.
	drainPollInterval = 100 * time.Millisecond
	// pausedRetryAfter is the RetryInfo delay of CONNECTION_PAUSED.
	pausedRetryAfter = 5 * time.Second
)

// AuditAction is the kind of action an audit event records.
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

// AdminStore is the part of the store that only the admin methods use.
// store.Store implements it. A Broker whose Config.Store does not returns an
// internal error from every admin method.
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
// store returns it from AcquireSeat.
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
	// clock; zero when no caller waits.
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
	// PageSize is the maximum number of sessions to return: zero for
	// DefaultPageSize, cut to MaxPageSize.
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
