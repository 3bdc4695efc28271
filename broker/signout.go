package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/acubroker/acubroker/acumatica"
)

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
