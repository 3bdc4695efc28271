package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

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
	// is free. Otherwise Error gives the reason, and the seat stays counted
	// while the maintenance loop retries the sign-out.
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
// error, because its result reports it.
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
	switch {
	case len(results) == 0 && event.SessionID != "":
		// The session was signed out between the look-up and the claim.
		err := sessionNotFound(event.SessionID)
		b.recordFailure(ctx, event, p.Reason, err)
		return nil, err
	case len(results) == 0:
		event.Outcome, event.Detail = AuditSucceeded, "no open session to sign out"
		if p.Reason != "" {
			event.Detail = "reason: " + p.Reason + "; " + event.Detail
		}
		b.recordAudit(ctx, event)
	}
	b.recordSignOuts(ctx, p.Actor, p.Reason, results)
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
	event := AuditEvent{Actor: p.By, Action: action, Connection: p.Connection}
	conn, err := b.connection(p.Connection)
	if err != nil {
		b.recordFailure(ctx, event, p.Reason, err)
		return nil, err
	}

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
	msg := "resumed a connection"
	if p.Paused {
		msg = "paused a connection"
	}
	b.logger.InfoContext(ctx, msg, "connection", conn.Name, "actor", p.By, "changed", changed)
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
// end.
func (b *Broker) waitForHolders(ctx context.Context, conn *Connection, timeout time.Duration) (atStart, left int, err error) {
	return b.waitUntilNone(ctx, conn, timeout, func(s ConnectionStats) int { return s.ActiveLeases })
}

// waitUntilNone polls conn's figures until count returns zero, or until
// timeout passes or ctx ends. It returns the first and the last count. It
// polls the store because a drain is rare, and polling keeps it apart from
// the waiters' notification machinery.
func (b *Broker) waitUntilNone(ctx context.Context, conn *Connection, timeout time.Duration,
	count func(ConnectionStats) int) (first, last int, err error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(drainPollInterval)
	defer poll.Stop()

	bg := context.WithoutCancel(ctx)
	for i := 0; ; i++ {
		stats, err := b.connectionStats(bg, conn.Name)
		if err != nil {
			return first, 0, err
		}
		last = count(stats)
		if i == 0 {
			first = last
		}
		if last == 0 {
			return first, 0, nil
		}
		select {
		case <-poll.C:
		case <-deadline.C:
			return first, last, nil
		case <-ctx.Done():
			return first, last, nil
		}
	}
}

// drainSignOut signs out every session of conn. A sign-in that was in flight
// when the sign-outs began opens a leased session afterwards. drainSignOut
// waits for it, up to the sign-in timeout, and signs it out in a second
// pass. The second pass's results replace the first's for the same sessions.
func (b *Broker) drainSignOut(ctx context.Context, conn *Connection) ([]SignOutResult, error) {
	results, err := b.forceSignOut(ctx, conn, "")
	if err != nil {
		return nil, err
	}
	stats, err := b.connectionStats(ctx, conn.Name)
	if err != nil || stats.ActiveLeases == 0 {
		return results, err
	}
	signingIn := func(s ConnectionStats) int { return s.ActiveLeases - s.Leased }
	if _, _, err := b.waitUntilNone(ctx, conn, b.signInTimeout, signingIn); err != nil {
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

func validateAdminReason(reason string) error {
	if len(reason) > MaxAdminReasonLength {
		return invalidArgument("reason", "it is %d bytes long; use at most %d", len(reason), MaxAdminReasonLength)
	}
	return nil
}
