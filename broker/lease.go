package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/acubroker/acubroker/acumatica"
)

// RenewParams are the inputs of Renew.
type RenewParams struct {
	LeaseID string
	// LeaseTTL is the new length counted from now; zero takes the
	// connection's default.
	LeaseTTL time.Duration
	Holder   string
}

// ReleaseParams are the inputs of Release.
type ReleaseParams struct {
	LeaseID string
	// TokenRejected retires the session: Acumatica answered 401 to its token.
	TokenRejected bool
	Holder        string
}

// SignOutParams are the inputs of SignOut.
type SignOutParams struct {
	LeaseID string
	Holder  string
}

// Renew extends a live lease and refreshes its access token when it is near
// expiry.
//
// Errors: ErrInvalidArgument, ErrLeaseNotFound, ErrLeaseExpired,
// ErrLeaseReleased, ErrLeaseSignedOut, ErrLeaseRevoked, the ERP errors of a
// refresh, ErrStoreUnavailable.
func (b *Broker) Renew(ctx context.Context, p RenewParams) (*Grant, error) {
	conn, _, err := b.leaseConnection(ctx, p.LeaseID, p.Holder)
	if err != nil {
		return nil, err
	}
	ttl, err := leaseTTL(conn, p.LeaseTTL)
	if err != nil {
		return nil, err
	}
	seat, err := b.store.RenewLease(ctx, p.LeaseID, ttl, b.clock.Now())
	if err != nil {
		return nil, b.leaseStoreError(ctx, p.LeaseID, err)
	}
	return b.ensureFresh(ctx, conn, seat)
}

// Release ends a lease. The session goes back to the pool, open, unless
// TokenRejected is set: then it is signed out and its seat freed. It
// returns whether the session was kept.
//
// Errors: as for Renew, without the ERP errors.
func (b *Broker) Release(ctx context.Context, p ReleaseParams) (bool, error) {
	if !p.TokenRejected {
		if err := b.release(ctx, p); err != nil {
			return false, err
		}
		return true, nil
	}
	conn, seat, err := b.leaseConnection(ctx, p.LeaseID, p.Holder)
	if err != nil {
		return false, err
	}
	now := b.clock.Now()
	acquiredAt := seat.LeaseAcquiredAt
	seat, err = b.store.BeginSignOut(ctx, EndLeaseParams{
		LeaseID:       p.LeaseID,
		State:         LeaseRetired,
		SignOutReason: "token rejected",
		ReclaimAt:     b.reclaimAt(conn, seat, now),
		Now:           now,
	})
	if err != nil {
		return false, b.leaseStoreError(ctx, p.LeaseID, err)
	}
	b.observer.LeaseEnded(conn.Name, LeaseRetired, now.Sub(acquiredAt))
	b.signOutSeat(ctx, conn, seat)
	return false, nil
}

// release returns a lease's session to the pool in one store call, the hot
// path of every cycle: the holder and expiry checks run in the same
// statement, and only a failed release looks up why.
func (b *Broker) release(ctx context.Context, p ReleaseParams) error {
	if err := validateLeaseID(p.LeaseID); err != nil {
		return err
	}
	now := b.clock.Now()
	seat, err := b.store.ReleaseLease(ctx, EndLeaseParams{
		LeaseID:     p.LeaseID,
		State:       LeaseReleased,
		Holder:      p.Holder,
		CheckHolder: true,
		Now:         now,
	})
	if err != nil {
		if errors.Is(err, ErrLeaseLost) {
			return b.leaseGoneFor(ctx, p.LeaseID, p.Holder)
		}
		return err
	}
	b.observer.LeaseEnded(seat.Connection, LeaseReleased, now.Sub(seat.LeaseAcquiredAt))
	return nil
}

// SignOut ends a lease and signs its session out at Acumatica. It returns
// whether Acumatica confirmed; when it did not, the seat stays counted and
// the sign-out is retried in the background.
//
// Errors: as for Release.
func (b *Broker) SignOut(ctx context.Context, p SignOutParams) (bool, error) {
	conn, seat, err := b.leaseConnection(ctx, p.LeaseID, p.Holder)
	if err != nil {
		return false, err
	}
	now := b.clock.Now()
	acquiredAt := seat.LeaseAcquiredAt
	seat, err = b.store.BeginSignOut(ctx, EndLeaseParams{
		LeaseID:       p.LeaseID,
		State:         LeaseSignedOut,
		SignOutReason: "caller sign-out",
		ReclaimAt:     b.reclaimAt(conn, seat, now),
		Now:           now,
	})
	if err != nil {
		return false, b.leaseStoreError(ctx, p.LeaseID, err)
	}
	b.observer.LeaseEnded(conn.Name, LeaseSignedOut, now.Sub(acquiredAt))
	return b.signOutSeat(ctx, conn, seat), nil
}

// leaseConnection returns the seat a live lease of holder holds, and its
// connection.
func (b *Broker) leaseConnection(ctx context.Context, leaseID, holder string) (*Connection, *Seat, error) {
	if err := validateLeaseID(leaseID); err != nil {
		return nil, nil, err
	}
	seat, err := b.store.SeatByLease(ctx, leaseID)
	if err != nil {
		return nil, nil, b.leaseStoreError(ctx, leaseID, err)
	}
	if seat.Holder != holder {
		return nil, nil, leaseError(ReasonLeaseNotOwned, leaseID,
			"lease %s belongs to another caller; only the caller that acquired a lease may renew, release or sign it out", leaseID)
	}
	conn, ok := b.connections[seat.Connection]
	if !ok {
		return nil, nil, &Error{
			Reason:   ReasonConnectionNotFound,
			Message:  fmt.Sprintf("lease %s belongs to connection %q, which this broker does not configure", leaseID, seat.Connection),
			Metadata: map[string]string{"lease_id": leaseID, "connection": seat.Connection},
		}
	}
	if !b.clock.Now().Before(seat.LeaseExpireAt) {
		return nil, nil, leaseError(ReasonLeaseExpired, leaseID,
			"lease %s expired at %s; acquire a new session", leaseID, seat.LeaseExpireAt.UTC().Format(time.RFC3339))
	}
	return conn, seat, nil
}

func validateLeaseID(leaseID string) error {
	if leaseID == "" {
		return invalidArgument("lease_id", "the lease id is empty; pass the lease_id that AcquireSession returned")
	}
	if _, err := uuid.Parse(leaseID); err != nil {
		return invalidArgument("lease_id", "%q is not a lease id; pass the lease_id that AcquireSession returned", leaseID)
	}
	return nil
}

// leaseGoneFor is leaseGone for a call by holder: a lease of another holder
// is reported as not owned, whatever its state.
func (b *Broker) leaseGoneFor(ctx context.Context, leaseID, holder string) error {
	rec, err := b.store.LeaseByID(ctx, leaseID)
	if err == nil && rec.Holder != holder {
		return leaseError(ReasonLeaseNotOwned, leaseID,
			"lease %s belongs to another caller; only the caller that acquired a lease may renew, release or sign it out", leaseID)
	}
	return b.leaseGone(ctx, leaseID)
}

// leaseStoreError explains why a lease-scoped store call found no live lease.
func (b *Broker) leaseStoreError(ctx context.Context, leaseID string, err error) error {
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrLeaseLost) {
		return b.leaseGone(ctx, leaseID)
	}
	return err
}

func (b *Broker) leaseGone(ctx context.Context, leaseID string) error {
	rec, err := b.store.LeaseByID(ctx, leaseID)
	if errors.Is(err, ErrNotFound) {
		return leaseError(ReasonLeaseNotFound, leaseID,
			"lease %s not found: it never existed or ended long ago; acquire a new session", leaseID)
	}
	if err != nil {
		return err
	}
	switch rec.State {
	case LeaseReleased:
		return leaseError(ReasonLeaseReleased, leaseID, "lease %s was already released; acquire a new session", leaseID)
	case LeaseRetired, LeaseSignedOut:
		return leaseError(ReasonLeaseSignedOut, leaseID, "lease %s was already signed out; acquire a new session", leaseID)
	case LeaseRevoked:
		return leaseError(ReasonLeaseRevoked, leaseID,
			"lease %s was revoked by an administrator and its session signed out; acquire a new session", leaseID)
	default:
		return leaseError(ReasonLeaseExpired, leaseID,
			"lease %s expired before it was renewed and its seat was reclaimed; acquire a new session", leaseID)
	}
}

// reclaimAt is when a session that is being signed out has certainly ended
// at Acumatica: at its token's expiry without a refresh token, else after
// Acumatica's idle timeout counted from now (its holder may have used it
// until now).
func (b *Broker) reclaimAt(conn *Connection, seat *Seat, now time.Time) time.Time {
	if !seat.HasRefreshToken && !seat.TokenExpireAt.IsZero() {
		return seat.TokenExpireAt.Add(conn.grace())
	}
	return now.Add(conn.IdleTimeout + conn.grace())
}

// signIn signs in for a seat the lease holds in state signing_in and
// records the new session. The sign-in is not cut short when the caller
// goes away: a request cut off mid-flight leaves an unknown outcome, which
// would hold the seat until Acumatica's idle timeout.
func (b *Broker) signIn(ctx context.Context, conn *Connection, seat *Seat, ttl time.Duration) (*Grant, error) {
	bg := context.WithoutCancel(ctx)
	now := b.clock.Now()
	leaseID := seat.LeaseID
	if seat.ReclaimAt.IsZero() {
		var err error
		seat, err = b.store.BeginSignIn(bg, leaseID, now.Add(b.sessionEndsAfter(conn)), now)
		if err != nil {
			return nil, b.leaseStoreError(bg, leaseID, err)
		}
	}
	if ttl == 0 {
		ttl = conn.DefaultLeaseTTL
	}

	signCtx, cancel := context.WithTimeout(bg, conn.RequestTimeout)
	start := time.Now()
	tok, err := conn.ERP.PasswordGrant(signCtx)
	b.observer.SignedIn(conn.Name, time.Since(start), err)
	cancel()
	if err != nil {
		unknown := outcomeUnknown(err)
		var retryAt time.Time
		if errors.Is(err, acumatica.ErrLoginLimit) {
			// Back off before the seat is freed, so that it is not handed
			// to a waiter who would only try again.
			var berr error
			retryAt, berr = b.store.BackOffSignIns(bg, conn.Name, conn.LoginLimitBackoff, conn.LoginLimitMaxBackoff, b.clock.Now())
			if berr != nil {
				b.logger.ErrorContext(ctx, "recording the sign-in backoff failed", "connection", conn.Name, "err", berr)
			}
		}
		if ferr := b.store.FailSignIn(bg, leaseID, unknown, b.clock.Now()); ferr != nil {
			b.logger.ErrorContext(ctx, "recording a failed sign-in failed", "connection", conn.Name, "lease_id", leaseID, "err", ferr)
		}
		b.logger.WarnContext(ctx, "sign-in failed", "connection", conn.Name, "lease_id", leaseID,
			"outcome_unknown", unknown, "err", err)
		e := erpError(conn, "sign-in", err)
		if wait := retryAt.Sub(b.clock.Now()); wait > 0 {
			e.RetryAfter = wait
		}
		return nil, e
	}

	sessionID := uuid.NewString()
	creds := credentialsFromToken(tok, "")
	sealed, keyID, err := b.sealCredentials(sessionID, creds)
	if err == nil {
		seat, err = b.store.CompleteSignIn(bg, CompleteSignInParams{
			LeaseID:          leaseID,
			SessionID:        sessionID,
			Credentials:      sealed,
			CredentialsKeyID: keyID,
			HasRefreshToken:  creds.RefreshToken != "",
			TokenExpireAt:    tok.Expiry,
			LeaseTTL:         ttl,
			Now:              b.clock.Now(),
		})
	}
	if err != nil {
		// The session is open but not recorded: close it now rather than
		// leave it to Acumatica's idle timeout.
		b.signOutUnrecorded(bg, conn, creds)
		return nil, b.leaseStoreError(bg, leaseID, err)
	}
	b.logger.InfoContext(ctx, "signed in", "connection", conn.Name, "session_id", sessionID, "lease_id", leaseID)
	if ctx.Err() != nil {
		b.releaseAbandoned(bg, leaseID)
		return nil, ctx.Err()
	}
	return b.grant(conn, seat, creds, false), nil
}

func (b *Broker) signOutUnrecorded(ctx context.Context, conn *Connection, creds SessionCredentials) {
	if err := b.erpSignOut(ctx, conn, creds); err != nil {
		b.logger.ErrorContext(ctx, "signing out an unrecorded session failed; its seat stays counted until reclaimed",
			"connection", conn.Name, "err", err)
	}
}

// releaseAbandoned puts back a lease whose caller left before it was granted.
func (b *Broker) releaseAbandoned(ctx context.Context, leaseID string) {
	_, err := b.store.ReleaseLease(ctx, EndLeaseParams{LeaseID: leaseID, State: LeaseReleased, Now: b.clock.Now()})
	if err != nil {
		b.logger.WarnContext(ctx, "releasing an abandoned lease failed; it expires by itself", "lease_id", leaseID, "err", err)
	}
}

// ensureFresh returns the grant of a leased seat, refreshing the access
// token first when it expires within the connection's RefreshBefore.
func (b *Broker) ensureFresh(ctx context.Context, conn *Connection, seat *Seat) (*Grant, error) {
	creds, err := b.openCredentials(seat)
	if err != nil {
		return nil, err
	}
	now := b.clock.Now()
	if seat.TokenStale {
		return b.rotateStale(ctx, conn, seat, creds)
	}
	if seat.TokenExpireAt.Sub(now) > conn.RefreshBefore {
		return b.grant(conn, seat, creds, false), nil
	}
	if !seat.HasRefreshToken {
		return b.replaceSession(ctx, conn, seat, creds)
	}
	return b.refresh(ctx, conn, seat, creds)
}

// rotateStale gives a new holder a session whose previous holder's lease
// expired: the previous holder may be slow or cut off rather than gone, so
// its access token is replaced and revoked before the session is handed
// out. A session without a refresh token is replaced by a new one.
func (b *Broker) rotateStale(ctx context.Context, conn *Connection, seat *Seat, creds SessionCredentials) (*Grant, error) {
	if !seat.HasRefreshToken {
		return b.replaceSession(ctx, conn, seat, creds)
	}
	grant, err := b.refresh(ctx, conn, seat, creds)
	if err != nil {
		return nil, err
	}
	if grant.Credentials.AccessToken == creds.AccessToken {
		// The refresh failed but the token still works: it cannot go to
		// a new holder while the old one may still use it.
		b.releaseAbandoned(context.WithoutCancel(ctx), seat.LeaseID)
		return nil, &Error{
			Reason:     ReasonERPUnavailable,
			Message:    fmt.Sprintf("Acumatica did not refresh a reclaimed session of connection %q; retry shortly", conn.Name),
			RetryAfter: time.Second,
			Metadata:   map[string]string{"connection": conn.Name},
		}
	}
	b.revoke(ctx, conn, creds.AccessToken)
	return grant, nil
}

// revoke revokes an access token that no holder may use any more. Failure
// is logged, not returned: the session itself is already in order.
func (b *Broker) revoke(ctx context.Context, conn *Connection, accessToken string) {
	revokeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), conn.RequestTimeout)
	defer cancel()
	if err := conn.ERP.Revoke(revokeCtx, accessToken, "access_token"); err != nil {
		b.logger.WarnContext(ctx, "revoking a replaced access token failed; it stays valid until it expires",
			"connection", conn.Name, "err", err)
	}
}

// refresh refreshes the access token of a leased seat.
func (b *Broker) refresh(ctx context.Context, conn *Connection, seat *Seat, creds SessionCredentials) (*Grant, error) {
	now := b.clock.Now()

	bg := context.WithoutCancel(ctx)
	refreshCtx, cancel := context.WithTimeout(bg, conn.RequestTimeout)
	start := time.Now()
	tok, err := conn.ERP.Refresh(refreshCtx, creds.RefreshToken)
	b.observer.Refreshed(conn.Name, time.Since(start), err)
	cancel()
	if errors.Is(err, acumatica.ErrInvalidGrant) {
		b.logger.WarnContext(ctx, "refresh token rejected; replacing the session", "connection", conn.Name, "lease_id", seat.LeaseID,
			"session_id", seat.SessionID, "err", err)
		return b.replaceSession(ctx, conn, seat, creds)
	}
	if err != nil {
		if seat.TokenExpireAt.After(now) {
			// The current token still works; refresh at the next renew.
			b.logger.WarnContext(ctx, "refresh failed; handing out the current token", "connection", conn.Name, "lease_id", seat.LeaseID,
				"session_id", seat.SessionID, "err", err)
			return b.grant(conn, seat, creds, false), nil
		}
		b.releaseAbandoned(bg, seat.LeaseID)
		return nil, erpError(conn, "refresh", err)
	}

	leaseID := seat.LeaseID
	fresh := credentialsFromToken(tok, creds.RefreshToken)
	fresh.Cookies = creds.Cookies
	sealed, keyID, err := b.sealCredentials(seat.SessionID, fresh)
	if err != nil {
		return nil, err
	}
	// The rotated refresh token is committed before the new access token
	// leaves the broker: the old refresh token no longer works.
	seat, err = b.store.UpdateCredentials(bg, UpdateCredentialsParams{
		LeaseID:          seat.LeaseID,
		Credentials:      sealed,
		CredentialsKeyID: keyID,
		HasRefreshToken:  fresh.RefreshToken != "",
		TokenExpireAt:    tok.Expiry,
		Now:              b.clock.Now(),
	})
	if err != nil {
		return nil, b.leaseStoreError(bg, leaseID, err)
	}
	b.logger.InfoContext(ctx, "refreshed access token", "connection", conn.Name, "session_id", seat.SessionID,
		"lease_id", leaseID)
	return b.grant(conn, seat, fresh, true), nil
}

// replaceSession gives a leased seat a new session when its own cannot be
// refreshed. A session that may still be open at Acumatica is signed out
// first; the seat is reused only once Acumatica confirms, so the open
// sessions never outnumber the seats. When the session cannot be signed out
// (its access token expired and its refresh token was rejected), the seat
// stays counted until Acumatica's idle timeout has certainly ended it.
func (b *Broker) replaceSession(ctx context.Context, conn *Connection, seat *Seat, creds SessionCredentials) (*Grant, error) {
	bg := context.WithoutCancel(ctx)
	now := b.clock.Now()
	apiOnlyExpired := !seat.HasRefreshToken && seat.TokenExpireAt.Add(conn.grace()).Before(now)
	if !apiOnlyExpired {
		err := errors.New("the access token has expired and cannot be refreshed")
		if seat.TokenExpireAt.After(now) {
			err = b.erpSignOut(bg, conn, creds)
		}
		if err != nil {
			_, serr := b.store.BeginSignOut(bg, EndLeaseParams{
				LeaseID:       seat.LeaseID,
				State:         LeaseFailed,
				SignOutReason: "session cannot be refreshed",
				ReclaimAt:     now.Add(conn.IdleTimeout + conn.grace()),
				Now:           now,
			})
			if serr != nil {
				b.logger.ErrorContext(ctx, "recording a pending sign-out failed", "connection", conn.Name,
					"session_id", seat.SessionID, "lease_id", seat.LeaseID, "err", serr)
			}
			return nil, erpError(conn, "sign-out of a session that cannot be refreshed", err)
		}
		b.revoke(bg, conn, creds.AccessToken)
	}
	leaseID := seat.LeaseID
	remaining := max(seat.LeaseExpireAt.Sub(now), time.Second)
	seat, err := b.store.BeginSignIn(bg, leaseID, now.Add(b.sessionEndsAfter(conn)), now)
	if err != nil {
		return nil, b.leaseStoreError(bg, leaseID, err)
	}
	return b.signIn(ctx, conn, seat, remaining)
}

// signOutSeat signs out the session of a signing_out seat and frees the
// seat when Acumatica confirms. Otherwise it schedules a retry and returns
// false.
func (b *Broker) signOutSeat(ctx context.Context, conn *Connection, seat *Seat) bool {
	bg := context.WithoutCancel(ctx)
	creds, err := b.openCredentials(seat)
	if err != nil {
		b.logger.ErrorContext(ctx, "cannot read credentials to sign out; the seat is freed at its reclaim time",
			"connection", conn.Name, "session_id", seat.SessionID, "err", err)
		return false
	}
	creds, err = b.usableForSignOut(bg, conn, seat, creds)
	if err == nil {
		err = b.erpSignOut(bg, conn, creds)
	}
	now := b.clock.Now()
	if err != nil {
		next := now.Add(signOutBackoff(seat.SignOutAttempts))
		if hopeless(err) && seat.ReclaimAt.After(now) {
			// No retry can sign this session out: wait until it has
			// certainly ended, and free the seat then.
			next = seat.ReclaimAt
		}
		if rerr := b.store.RetrySignOutAt(bg, seat.Connection, seat.Slot, seat.SessionID, next); rerr != nil {
			b.logger.ErrorContext(ctx, "scheduling a sign-out retry failed", "connection", conn.Name,
				"session_id", seat.SessionID, "err", rerr)
		}
		b.logger.WarnContext(ctx, "sign-out failed; will retry", "connection", conn.Name, "session_id", seat.SessionID,
			"attempt", seat.SignOutAttempts+1, "retry_at", next, "err", err)
		b.recordSignOutFailure(ctx, conn, seat, err)
		return false
	}
	if err := b.store.FinishSignOut(bg, seat.Connection, seat.Slot, seat.SessionID, now); err != nil {
		b.logger.ErrorContext(ctx, "recording a sign-out failed; it is retried", "connection", conn.Name,
			"session_id", seat.SessionID, "err", err)
		return false
	}
	b.logger.InfoContext(ctx, "signed out", "connection", conn.Name, "session_id", seat.SessionID)
	// Acumatica leaves the bearer valid after a sign-out, and using it
	// again would open a session outside the budget.
	b.revoke(bg, conn, creds.AccessToken)
	return true
}

// hopeless reports whether a sign-out failed in a way that retrying with the
// same credentials cannot fix: Acumatica rejected the access token (expired
// or revoked), or the refresh token needed for a fresh one.
func hopeless(err error) bool {
	return errors.Is(err, acumatica.ErrTokenRejected) || errors.Is(err, acumatica.ErrInvalidGrant)
}

// usableForSignOut returns credentials that can sign the session out. An
// expired access token gets 401 at the sign-out endpoint even while its
// grant's session is open, so it is refreshed first.
func (b *Broker) usableForSignOut(ctx context.Context, conn *Connection, seat *Seat, creds SessionCredentials) (SessionCredentials, error) {
	if seat.TokenExpireAt.After(b.clock.Now()) || creds.RefreshToken == "" {
		return creds, nil
	}
	refreshCtx, cancel := context.WithTimeout(ctx, conn.RequestTimeout)
	defer cancel()
	start := time.Now()
	tok, err := conn.ERP.Refresh(refreshCtx, creds.RefreshToken)
	b.observer.Refreshed(conn.Name, time.Since(start), err)
	if err != nil {
		return creds, fmt.Errorf("refresh an expired token before signing out: %w", err)
	}
	fresh := credentialsFromToken(tok, creds.RefreshToken)
	fresh.Cookies = creds.Cookies
	return fresh, nil
}

// erpSignOut sends one sign-out request to Acumatica.
func (b *Broker) erpSignOut(ctx context.Context, conn *Connection, creds SessionCredentials) error {
	signCtx, cancel := context.WithTimeout(ctx, conn.RequestTimeout)
	defer cancel()
	start := time.Now()
	err := conn.ERP.SignOut(signCtx, acumatica.SessionCredentials{AccessToken: creds.AccessToken, Cookies: creds.Cookies})
	b.observer.SignedOut(conn.Name, time.Since(start), err)
	return err
}

// signOutBackoff is the delay before sign-out attempt n+1: 1s doubling up
// to one minute.
func signOutBackoff(attempts int) time.Duration {
	d := time.Second << min(attempts, 6)
	return min(d, time.Minute)
}
