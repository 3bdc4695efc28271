package broker

import (
	"context"
	"time"
)

// GrantClaimWithin bounds how long a seat granted to a waiter stays held
// before the waiter picks it up. A waiter whose replica died meanwhile holds
// the seat no longer than this.
const GrantClaimWithin = 2 * time.Second

// SeatState is the state of one seat of a connection's budget.
type SeatState string

// Seat states; the package documentation draws how they follow each other.
const (
	SeatEmpty      SeatState = "empty"
	SeatSigningIn  SeatState = "signing_in"
	SeatIdle       SeatState = "idle"
	SeatLeased     SeatState = "leased"
	SeatSigningOut SeatState = "signing_out"
)

// LeaseState is the state of a lease record.
type LeaseState string

// Lease states. Every state but LeaseActive is final.
const (
	LeaseActive    LeaseState = "active"
	LeaseReleased  LeaseState = "released"
	LeaseRetired   LeaseState = "retired"
	LeaseSignedOut LeaseState = "signed_out"
	LeaseExpired   LeaseState = "expired"
	LeaseRevoked   LeaseState = "revoked"
	LeaseFailed    LeaseState = "failed"
)

// Seat is a snapshot of one seat row.
type Seat struct {
	Connection string
	Slot       int
	State      SeatState
	// Holder is the lease holder's identity; only SeatByLease sets it.
	Holder           string
	SessionID        string
	SessionOpenedAt  time.Time
	LastUsedAt       time.Time
	TokenExpireAt    time.Time
	Credentials      []byte // sealed SessionCredentials; nil when the seat has no session
	CredentialsKeyID string
	HasRefreshToken  bool
	LeaseID          string
	LeaseAcquiredAt  time.Time
	LeaseExpireAt    time.Time
	ReclaimAt        time.Time
	SignOutAttempts  int
	// TokenStale is set when a lease expired: its holder may still use the
	// access token, so the next holder gets a new one.
	TokenStale bool
}

// SeatSummary is a connection's seats counted by state.
type SeatSummary struct {
	States map[SeatState]int
	// SignInsBlockedUntil is when sign-ins may resume after a login-limit
	// refusal; zero when they are allowed.
	SignInsBlockedUntil time.Time
	// Paused is true while an operator has paused the connection.
	Paused bool
}

// LeaseRecord is a lease as the store remembers it, also after it ends.
type LeaseRecord struct {
	LeaseID    string
	Connection string
	Slot       int
	SessionID  string
	Holder     string
	RequestID  string
	State      LeaseState
	CreatedAt  time.Time
	EndedAt    time.Time
}

// ConnectionBudget is a connection's name and seat budget.
type ConnectionBudget struct {
	Name        string
	MaxSessions int
}

// AcquireSeatParams are the inputs of Store.AcquireSeat.
type AcquireSeatParams struct {
	Connection string
	LeaseID    string
	Holder     string
	RequestID  string
	LeaseTTL   time.Duration
	// SignInReclaimAt is when a seat claimed for a sign-in may be freed if
	// the sign-in's outcome is never recorded.
	SignInReclaimAt time.Time
	// Quota caps the holder's active leases plus queued acquires on the
	// connection; zero means no cap.
	Quota int
	// NoWait returns ErrNotFound instead of queueing.
	NoWait bool
	// MaxQueue caps the connection's queue; zero means no cap.
	MaxQueue int
	// WaitExpireAt is when a queued acquire is taken for dead unless its
	// replica extends it.
	WaitExpireAt time.Time
	Now          time.Time
}

// CompleteSignInParams are the inputs of Store.CompleteSignIn.
type CompleteSignInParams struct {
	LeaseID          string
	SessionID        string
	Credentials      []byte
	CredentialsKeyID string
	HasRefreshToken  bool
	TokenExpireAt    time.Time
	LeaseTTL         time.Duration
	Now              time.Time
}

// UpdateCredentialsParams are the inputs of Store.UpdateCredentials.
type UpdateCredentialsParams struct {
	LeaseID          string
	Credentials      []byte
	CredentialsKeyID string
	HasRefreshToken  bool
	TokenExpireAt    time.Time
	Now              time.Time
}

// EndLeaseParams are the inputs of Store.ReleaseLease and Store.BeginSignOut.
type EndLeaseParams struct {
	LeaseID string
	// Holder, with CheckHolder set, makes ReleaseLease match only a lease
	// of that holder.
	Holder      string
	CheckHolder bool
	// State is the lease's final state: LeaseReleased for a release to the
	// pool; LeaseRetired or LeaseSignedOut for a sign-out.
	State LeaseState
	// SignOutReason is recorded on the seat by BeginSignOut.
	SignOutReason string
	// ReclaimAt is when a session being signed out has certainly ended at
	// Acumatica even if the sign-out is never confirmed.
	ReclaimAt time.Time
	Now       time.Time
}

// Store persists seats, leases and waiters. Every method is atomic. Methods
// that free a seat hand it to the oldest waiter of its connection in the same
// transaction and notify listeners.
//
// Errors: ErrNotFound and ErrLeaseLost as documented per method;
// ErrStoreUnavailable (wrapped) when the database cannot be reached; other
// errors are unexpected.
type Store interface {
	// SyncConnections creates or resizes each connection's seats to its
	// budget. Seats above a smaller budget are marked retired: they take no
	// new session and are deleted once empty.
	SyncConnections(ctx context.Context, budgets []ConnectionBudget) error

	// AcquireSeat leases an idle seat, else claims an empty one for a
	// sign-in (state signing_in), and records the lease. When no seat is
	// free, or callers already wait for the connection, it queues the
	// caller instead, so that no caller overtakes the queue. It then
	// returns a nil seat and the caller's 1-based position in the queue,
	// and a seat granted later carries params.LeaseID.
	//
	// Errors: ErrNotFound when no seat is free and params.NoWait is set;
	// an *Error with ReasonCallerQuota or ReasonQueueFull when a cap is
	// reached.
	AcquireSeat(ctx context.Context, params AcquireSeatParams) (*Seat, int, error)

	// Dequeue removes a waiter that gives up. It returns false when the
	// waiter is gone because a seat was granted to it meanwhile.
	Dequeue(ctx context.Context, leaseID string) (bool, error)

	// Dispatch grants free seats of a connection to its oldest live
	// waiters (expire_at after now) and returns how many it granted. A
	// granted lease lasts GrantClaimWithin, or its TTL if shorter, until
	// its waiter picks it up and renews it.
	Dispatch(ctx context.Context, connection string, now time.Time) (int, error)

	// ExtendWaiters moves the expiry of the waiters with these lease ids,
	// the heartbeat of a replica's waiters.
	ExtendWaiters(ctx context.Context, leaseIDs []string, expireAt time.Time) error

	// SeatByLease returns the seat a lease holds, or ErrNotFound.
	SeatByLease(ctx context.Context, leaseID string) (*Seat, error)

	// LeaseByID returns a lease record, or ErrNotFound.
	LeaseByID(ctx context.Context, leaseID string) (*LeaseRecord, error)

	// LeaseByRequestID returns the lease that an acquire with this
	// request_id created, or ErrNotFound.
	LeaseByRequestID(ctx context.Context, connection, holder, requestID string) (*LeaseRecord, error)

	// BeginSignIn sets reclaim_at on a signing_in seat held by the lease
	// and clears its old session, before a sign-in request is sent. It
	// also moves a leased seat back to signing_in, to replace its session.
	// ErrLeaseLost when the lease no longer holds the seat.
	BeginSignIn(ctx context.Context, leaseID string, reclaimAt, now time.Time) (*Seat, error)

	// CompleteSignIn records a new session on the lease's signing_in seat
	// and makes it leased. ErrLeaseLost when the seat was reclaimed.
	CompleteSignIn(ctx context.Context, params CompleteSignInParams) (*Seat, error)

	// FailSignIn ends the lease as failed. With outcomeUnknown false the
	// seat becomes empty; with true it stays signing_in, counted, until
	// its reclaim_at.
	FailSignIn(ctx context.Context, leaseID string, outcomeUnknown bool, now time.Time) error

	// UpdateCredentials stores refreshed credentials of a leased session.
	// ErrLeaseLost when the lease no longer holds the seat.
	UpdateCredentials(ctx context.Context, params UpdateCredentialsParams) (*Seat, error)

	// RenewLease sets a live lease's expiry to now+ttl. ErrLeaseLost when
	// the lease does not hold a seat or has expired.
	RenewLease(ctx context.Context, leaseID string, ttl time.Duration, now time.Time) (*Seat, error)

	// ReleaseLease ends a live lease and puts its seat back to idle (or
	// hands it to a waiter). ErrLeaseLost as for RenewLease.
	ReleaseLease(ctx context.Context, params EndLeaseParams) (*Seat, error)

	// BeginSignOut ends a live lease and moves its seat to signing_out,
	// due now. It returns the seat with its credentials. ErrLeaseLost as
	// for RenewLease.
	BeginSignOut(ctx context.Context, params EndLeaseParams) (*Seat, error)

	// FinishSignOut empties a signing_out seat whose session is sessionID.
	FinishSignOut(ctx context.Context, connection string, slot int, sessionID string, now time.Time) error

	// RetrySignOutAt schedules the next attempt of a pending sign-out.
	RetrySignOutAt(ctx context.Context, connection string, slot int, sessionID string, next time.Time) error

	// ClaimDueSignOuts returns up to limit signing_out seats whose next
	// attempt is due and pushes their next attempt to now+lockFor, so that
	// other replicas leave them alone meanwhile.
	ClaimDueSignOuts(ctx context.Context, now time.Time, lockFor time.Duration, limit int) ([]Seat, error)

	// ReclaimExpired ends leases past their expiry (their seats go back to
	// idle, marked TokenStale), frees seats past their reclaim_at and idle
	// seats of sessions without a refresh token past their token expiry
	// plus grace, and drops waiters past their expiry. It returns how many
	// rows it changed.
	ReclaimExpired(ctx context.Context, now time.Time, grace time.Duration) (int, error)

	// BackOffSignIns starts or doubles the connection's sign-in backoff
	// (between initial and max) after a login-limit refusal, and returns
	// when the next probe may sign in. While it lasts, empty seats are
	// neither claimed nor granted.
	BackOffSignIns(ctx context.Context, connection string, initial, max time.Duration, now time.Time) (time.Time, error)

	// ClaimProbes returns the connections whose backoff interval has
	// ended and pushes each one's end forward by its backoff, so that
	// across all replicas exactly one caller gets each connection per
	// interval: that caller may try one probe sign-in.
	ClaimProbes(ctx context.Context, now time.Time) ([]string, error)

	// ClaimProbeSeat claims an empty seat for a probe sign-in, or returns
	// ErrNotFound.
	ClaimProbeSeat(ctx context.Context, params AcquireSeatParams) (*Seat, error)

	// EndSignInBackoff allows sign-ins again.
	EndSignInBackoff(ctx context.Context, connection string) error

	// SeatSummary counts the connection's seats by state, for error
	// messages that explain why no seat was free.
	SeatSummary(ctx context.Context, connection string) (SeatSummary, error)

	// OpenSessions counts the connection's seats with an open session
	// (idle or leased).
	OpenSessions(ctx context.Context, connection string) (int, error)

	// SignOutIdle moves idle seats of a connection unused since before
	// idleSince to signing_out, with reclaim_at at their last use plus
	// idleTimeout.
	SignOutIdle(ctx context.Context, connection string, idleSince time.Time, idleTimeout time.Duration, now time.Time) (int, error)

	// DispatchAll runs Dispatch for every connection with waiters.
	DispatchAll(ctx context.Context, now time.Time) (int, error)

	// PruneLeases deletes lease records that ended before before.
	PruneLeases(ctx context.Context, before time.Time) (int, error)

	// Listen calls onNotify with a connection name whenever a seat of that
	// connection is freed or granted, on any replica, until ctx ends or the
	// notification connection fails.
	Listen(ctx context.Context, ready func(), onNotify func(connection string)) error
}
