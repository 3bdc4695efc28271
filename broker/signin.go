package broker

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/acubroker/acubroker/acumatica"
)

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
// abandonLease gives back the seat of a lease whose acquire failed, when the
// lease still holds it leased. A lease that already lost its seat, or whose
// seat is signing in or out, is left as it is.
func (b *Broker) abandonLease(ctx context.Context, leaseID string) {
	_, err := b.store.ReleaseLease(context.WithoutCancel(ctx),
		EndLeaseParams{LeaseID: leaseID, State: LeaseFailed, Now: b.clock.Now()})
	if err != nil && !errors.Is(err, ErrLeaseLost) {
		b.logger.WarnContext(ctx, "giving back the seat of a failed acquire failed; it is reclaimed when its lease expires",
			"lease_id", leaseID, "err", err)
	}
}

func (b *Broker) releaseAbandoned(ctx context.Context, leaseID string) {
	_, err := b.store.ReleaseLease(ctx, EndLeaseParams{LeaseID: leaseID, State: LeaseReleased, Now: b.clock.Now()})
	if err != nil {
		b.logger.WarnContext(ctx, "releasing an abandoned lease failed; it expires by itself", "lease_id", leaseID, "err", err)
	}
}
