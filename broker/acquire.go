package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/acubroker/acubroker/acumatica"
)

// maxRequestIDLength bounds AcquireParams.RequestID.
const maxRequestIDLength = 128

// AcquireParams are the inputs of Acquire.
type AcquireParams struct {
	Connection string
	// LeaseTTL is the lease's length; zero takes the connection's default.
	LeaseTTL time.Duration
	// RequestID makes a retried acquire return the same lease.
	RequestID string
	// Holder identifies the caller; leases are scoped to it.
	Holder string
}

// Lease identifies one caller's hold on one session.
type Lease struct {
	ID         string
	SessionID  string
	Connection string
	ExpireAt   time.Time
}

// Credentials is the access token, cookies and site URL that a lease
// holder sends to Acumatica.
type Credentials struct {
	AccessToken string
	TokenType   string
	ExpireAt    time.Time
	BaseURL     string
	Cookies     []acumatica.Cookie
}

// Grant is a lease with its session's credentials.
type Grant struct {
	Lease       Lease
	Credentials Credentials
	// Refreshed is true when the access token was refreshed by this call.
	Refreshed bool
}

// Acquire leases a session of a connection: a warm one from the pool when
// there is one, else a new sign-in on a free seat, else the first seat freed
// while it waits. It waits at most the connection's MaxWait, and no longer
// than ctx allows.
//
// Errors: ErrInvalidArgument, ErrConnectionNotFound, ErrNoSeatAvailable
// when the wait ends without a seat, ErrRequestIDReused, the ERP errors of a
// sign-in or refresh (ErrLoginLimit, ErrCredentials, ErrThrottled,
// ErrERPUnavailable, ErrERPUnexpected), ErrStoreUnavailable, and ctx's error.
func (b *Broker) Acquire(ctx context.Context, p AcquireParams) (*Grant, error) {
	var waited time.Duration
	grant, err := b.acquire(ctx, p, &waited)
	b.observer.Acquired(p.Connection, waited, err)
	return grant, err
}

// maxLoginLimitRetries bounds how often one acquire goes back to the queue
// after its sign-in met the login limit.
const maxLoginLimitRetries = 3

func (b *Broker) acquire(ctx context.Context, p AcquireParams, waited *time.Duration) (*Grant, error) {
	// One maximum wait covers the whole acquire, retries included.
	var waitUntil time.Time
	if conn, ok := b.connections[p.Connection]; ok {
		waitUntil = time.Now().Add(conn.MaxWait)
	}
	for attempt := 0; ; attempt++ {
		grant, err := b.acquireOnce(ctx, p, waited, waitUntil)
		if !errors.Is(err, ErrLoginLimit) || attempt == maxLoginLimitRetries || ctx.Err() != nil {
			return grant, err
		}
		// Sign-ins now back off; wait for a session that is already open
		// instead, when there is one.
		open, oerr := b.store.OpenSessions(ctx, p.Connection)
		if oerr != nil || open == 0 {
			return nil, err
		}
	}
}

func (b *Broker) acquireOnce(ctx context.Context, p AcquireParams, waited *time.Duration, waitUntil time.Time) (*Grant, error) {
	conn, err := b.connection(p.Connection)
	if err != nil {
		return nil, err
	}
	ttl, err := leaseTTL(conn, p.LeaseTTL)
	if err != nil {
		return nil, err
	}
	if len(p.RequestID) > maxRequestIDLength {
		return nil, invalidArgument("request_id", "it is %d bytes long; use at most %d", len(p.RequestID), maxRequestIDLength)
	}
	if p.RequestID != "" {
		grant, found, err := b.acquireExisting(ctx, conn, p)
		if found || err != nil {
			return grant, err
		}
	}

	now := b.clock.Now()
	leaseID := uuid.NewString()
	quota := 0
	if b.quota != nil {
		quota = b.quota(p.Holder, conn.Name)
	}
	b.wake.register(conn.Name, leaseID)
	defer b.wake.unregister(conn.Name, leaseID)
	seat, _, err := b.store.AcquireSeat(ctx, AcquireSeatParams{
		Connection:      conn.Name,
		LeaseID:         leaseID,
		Holder:          p.Holder,
		RequestID:       p.RequestID,
		LeaseTTL:        ttl,
		SignInReclaimAt: now.Add(b.sessionEndsAfter(conn)),
		Quota:           quota,
		NoWait:          !time.Now().Before(waitUntil),
		MaxQueue:        conn.MaxQueue,
		WaitExpireAt:    now.Add(min(waitBound(ctx, time.Until(waitUntil)), waiterLiveness)),
		Now:             now,
	})
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, b.noSeat(ctx, conn)
	case err != nil:
		return nil, withConnection(err, conn.Name)
	case seat == nil:
		start := time.Now()
		seat, err = b.wait(ctx, conn, leaseID, ttl, waitUntil)
		*waited += time.Since(start)
		if err != nil {
			return nil, err
		}
	}
	grant, err := b.prepare(ctx, conn, seat, ttl)
	if err != nil {
		// Whatever failed, the caller never gets this lease: give its seat
		// back rather than hold it until the lease expires.
		b.abandonLease(ctx, seat.LeaseID)
	}
	return grant, err
}

// acquireExisting returns the live lease that an earlier acquire with the
// same request_id created.
func (b *Broker) acquireExisting(ctx context.Context, conn *Connection, p AcquireParams) (*Grant, bool, error) {
	rec, err := b.store.LeaseByRequestID(ctx, conn.Name, p.Holder, p.RequestID)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	if rec.State != LeaseActive {
		return nil, true, &Error{
			Reason: ReasonRequestIDReused,
			Message: fmt.Sprintf("request_id %q was used for lease %s, which is %s; send a new request_id",
				p.RequestID, rec.LeaseID, rec.State),
			Metadata: map[string]string{"lease_id": rec.LeaseID, "request_id": p.RequestID},
		}
	}
	seat, err := b.store.SeatByLease(ctx, rec.LeaseID)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, true, b.leaseGone(ctx, rec.LeaseID)
		}
		return nil, true, err
	}
	if seat.State == SeatSigningIn {
		return nil, true, &Error{
			Reason:     ReasonAcquireInProgress,
			Message:    fmt.Sprintf("the acquire with request_id %q is still signing in; retry shortly", p.RequestID),
			RetryAfter: time.Second,
			Metadata:   map[string]string{"lease_id": rec.LeaseID, "request_id": p.RequestID},
		}
	}
	grant, err := b.ensureFresh(ctx, conn, seat)
	return grant, true, err
}

func leaseTTL(conn *Connection, requested time.Duration) (time.Duration, error) {
	switch {
	case requested == 0:
		return conn.DefaultLeaseTTL, nil
	case requested < 0:
		return 0, invalidArgument("lease_ttl", "%s is negative; use a positive duration up to %s, or leave it unset for %s",
			requested, conn.MaxLeaseTTL, conn.DefaultLeaseTTL)
	case requested < time.Second:
		return 0, invalidArgument("lease_ttl", "%s is shorter than 1s; use at least 1s", requested)
	case requested > conn.MaxLeaseTTL:
		return 0, invalidArgument("lease_ttl", "%s exceeds the maximum of %s for connection %q; renew the lease instead",
			requested, conn.MaxLeaseTTL, conn.Name)
	}
	return requested, nil
}

// sessionEndsAfter is how long after its last use a session certainly has
// ended at Acumatica: its token lifetime without a refresh token, else
// Acumatica's idle timeout, plus the grace for requests in flight.
func (b *Broker) sessionEndsAfter(conn *Connection) time.Duration {
	if !conn.OfflineAccess {
		return conn.TokenLifetime + conn.grace()
	}
	return conn.IdleTimeout + conn.grace()
}

// waitBound is how long an acquire may wait: the connection's maximum wait,
// or less when ctx ends sooner.
func waitBound(ctx context.Context, maxWait time.Duration) time.Duration {
	if d, ok := ctx.Deadline(); ok && time.Until(d) < maxWait {
		return max(time.Until(d), 0)
	}
	return maxWait
}

// withConnection adds the connection's name to a cap error's metadata.
func withConnection(err error, connection string) error {
	var be *Error
	if errors.As(err, &be) && be.Metadata != nil {
		be.Metadata["connection"] = connection
	}
	return err
}

// Waiter heartbeats. A replica extends its waiters' rows every
// waiterHeartbeat. A row not extended for waiterLiveness belongs to a replica
// that died or stalls, so it gets no seat until it is extended again.
const (
	waiterHeartbeat = 250 * time.Millisecond
	waiterLiveness  = 3 * time.Second
)

// claimGrant extends a lease granted to a waiter, which lasts only
// GrantClaimWithin, to the TTL its acquire asked for. A seat granted for a
// sign-in gets its TTL when the sign-in completes.
func (b *Broker) claimGrant(ctx context.Context, seat *Seat, ttl time.Duration) (*Seat, error) {
	if seat.State != SeatLeased {
		return seat, nil
	}
	renewed, err := b.store.RenewLease(ctx, seat.LeaseID, ttl, b.clock.Now())
	if errors.Is(err, ErrLeaseLost) {
		return nil, &Error{
			Reason: ReasonNoSeatAvailable,
			Message: fmt.Sprintf("the seat granted to this acquire was not picked up within %s, so it went to "+
				"the next caller (this replica may be overloaded); retry", GrantClaimWithin),
			RetryAfter: time.Second,
			Metadata:   map[string]string{"connection": seat.Connection, "lease_id": seat.LeaseID},
		}
	}
	if err != nil {
		return nil, err
	}
	return renewed, nil
}

// wait waits for a seat to be granted to the queued lease leaseID.
func (b *Broker) wait(ctx context.Context, conn *Connection, leaseID string, ttl time.Duration, waitUntil time.Time) (*Seat, error) {
	waitCtx, cancel := context.WithDeadline(ctx, waitUntil)
	defer cancel()

	poll := time.NewTicker(b.pollInterval)
	defer poll.Stop()
	// A release that ran while this waiter was joining the queue did not
	// see it, and sent no notification. Extra grant passes shortly after
	// joining find such a seat long before the next poll.
	recheck := time.NewTimer(recheckAfter[0])
	defer recheck.Stop()
	rechecks := 1
	dispatch := true
	for {
		woken := b.wake.wait(conn.Name)
		if dispatch {
			if _, err := b.store.Dispatch(waitCtx, conn.Name, b.clock.Now()); err != nil && waitCtx.Err() == nil {
				b.logger.WarnContext(ctx, "dispatch failed; retrying at the next poll", "connection", conn.Name,
					"lease_id", leaseID, "err", err)
			}
		}
		seat, err := b.store.SeatByLease(waitCtx, leaseID)
		if err == nil {
			return b.claimGrant(ctx, seat, ttl)
		}
		if !errors.Is(err, ErrNotFound) && waitCtx.Err() == nil {
			return nil, errors.Join(err, b.giveUp(ctx, leaseID))
		}
		select {
		case <-woken:
			dispatch = false
		case <-poll.C:
			dispatch = true
		case <-recheck.C:
			dispatch = true
			if rechecks < len(recheckAfter) {
				recheck.Reset(recheckAfter[rechecks] - recheckAfter[rechecks-1])
				rechecks++
			}
		case <-waitCtx.Done():
			if err := b.giveUp(ctx, leaseID); err != nil {
				return nil, err
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, b.noSeat(ctx, conn)
		}
	}
}

// recheckAfter are the times after joining the queue at which a waiter runs
// an extra grant pass; see wait.
var recheckAfter = []time.Duration{5 * time.Millisecond, 25 * time.Millisecond, 100 * time.Millisecond}

// giveUp leaves the queue. A seat granted meanwhile goes back at once.
func (b *Broker) giveUp(ctx context.Context, leaseID string) error {
	ctx = context.WithoutCancel(ctx)
	removed, err := b.store.Dequeue(ctx, leaseID)
	if err != nil || removed {
		return err
	}
	seat, err := b.store.SeatByLease(ctx, leaseID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	now := b.clock.Now()
	if seat.State == SeatSigningIn {
		return b.store.FailSignIn(ctx, leaseID, false, now)
	}
	_, err = b.store.ReleaseLease(ctx, EndLeaseParams{LeaseID: leaseID, State: LeaseReleased, Now: now})
	return err
}

// noSeat explains why an acquire found no seat within the connection's
// maximum wait, from the seats' states: a caller seeing every seat "in use"
// while the broker holds fewer sessions needs to know what holds them.
func (b *Broker) noSeat(ctx context.Context, conn *Connection) *Error {
	meta := map[string]string{"connection": conn.Name}
	summary, err := b.store.SeatSummary(context.WithoutCancel(ctx), conn.Name)
	if err != nil {
		return &Error{
			Reason: ReasonNoSeatAvailable, RetryAfter: time.Second, Metadata: meta,
			Message: fmt.Sprintf("no seat of connection %q became free within the maximum wait of %s; retry later",
				conn.Name, conn.MaxWait),
		}
	}
	if summary.Paused {
		return PausedError(conn.Name)
	}
	if wait := summary.SignInsBlockedUntil.Sub(b.clock.Now()); wait > 0 {
		meta["sign_ins_blocked_until"] = summary.SignInsBlockedUntil.UTC().Format(time.RFC3339)
		return &Error{
			Reason: ReasonLoginLimit, RetryAfter: wait, Metadata: meta,
			Message: fmt.Sprintf("no open session of connection %q became free within the maximum wait of %s, and "+
				"sign-ins are paused until %s because Acumatica refused one for its API login limit "+
				"(sessions opened outside the broker hold seats); retry after that",
				conn.Name, conn.MaxWait, meta["sign_ins_blocked_until"]),
		}
	}
	var parts []string
	for _, state := range []SeatState{SeatLeased, SeatIdle, SeatSigningIn, SeatSigningOut, SeatEmpty} {
		if n := summary.States[state]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, strings.ReplaceAll(string(state), "_", " ")))
			meta["seats_"+string(state)] = fmt.Sprint(n)
		}
	}
	msg := fmt.Sprintf("no seat of connection %q became free within the maximum wait of %s (seats: %s)",
		conn.Name, conn.MaxWait, strings.Join(parts, ", "))
	if summary.States[SeatSigningIn] > 0 || summary.States[SeatSigningOut] > 0 {
		msg += "; a seat signing in or out whose outcome Acumatica has not confirmed stays counted " +
			"until the session has certainly ended there"
	}
	return &Error{Reason: ReasonNoSeatAvailable, RetryAfter: time.Second, Metadata: meta, Message: msg + "; retry later"}
}

// prepare turns a seat held by a new lease into a grant: it signs in when
// the seat has no session yet, and refreshes a token near expiry.
func (b *Broker) prepare(ctx context.Context, conn *Connection, seat *Seat, ttl time.Duration) (*Grant, error) {
	if seat.State == SeatSigningIn {
		return b.signIn(ctx, conn, seat, ttl)
	}
	return b.ensureFresh(ctx, conn, seat)
}

func (b *Broker) grant(conn *Connection, seat *Seat, creds SessionCredentials, refreshed bool) *Grant {
	return &Grant{
		Lease: Lease{
			ID:         seat.LeaseID,
			SessionID:  seat.SessionID,
			Connection: seat.Connection,
			ExpireAt:   seat.LeaseExpireAt,
		},
		Credentials: Credentials{
			AccessToken: creds.AccessToken,
			TokenType:   creds.TokenType,
			ExpireAt:    seat.TokenExpireAt,
			BaseURL:     conn.ERP.SiteURL(),
			Cookies:     creds.Cookies,
		},
		Refreshed: refreshed,
	}
}
