package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/acubroker/acubroker/acumatica"
)

// ensureFresh returns the grant of a leased seat, refreshing the access
// token first when it expires within the connection's RefreshBefore.
func (b *Broker) ensureFresh(ctx context.Context, conn *Connection, seat *Seat) (*Grant, error) {
	creds, err := b.openCredentials(seat)
	if err != nil {
		return nil, b.retireUnreadable(ctx, conn, seat, err)
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
// first. The seat is reused only once Acumatica confirms, so the open
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

// retireUnreadable retires a leased seat whose stored credentials cannot be
// opened, for example because the key that sealed them is no longer
// configured. Without its token the session cannot be signed out, so the
// seat stays counted until Acumatica has certainly ended the session, and a
// new session is then signed in on it.
func (b *Broker) retireUnreadable(ctx context.Context, conn *Connection, seat *Seat, cause error) error {
	b.logger.ErrorContext(ctx, "cannot open a session's stored credentials; retiring the session",
		"connection", conn.Name, "session_id", seat.SessionID, "key_id", seat.CredentialsKeyID, "err", cause)
	now := b.clock.Now()
	_, err := b.store.BeginSignOut(context.WithoutCancel(ctx), EndLeaseParams{
		LeaseID:       seat.LeaseID,
		State:         LeaseFailed,
		SignOutReason: "credentials cannot be opened",
		ReclaimAt:     b.reclaimAt(conn, seat, now),
		Now:           now,
	})
	if err != nil && !errors.Is(err, ErrLeaseLost) {
		b.logger.ErrorContext(ctx, "retiring a session with unreadable credentials failed", "session_id", seat.SessionID, "err", err)
	}
	return &Error{
		Reason:     ReasonERPUnavailable,
		RetryAfter: time.Second,
		Metadata:   map[string]string{"connection": conn.Name},
		Message: fmt.Sprintf("a session of connection %q was stored under encryption key %q, which this broker "+
			"does not have; the session was retired, so retry; an operator should check the encryption keys",
			conn.Name, seat.CredentialsKeyID),
		Cause: cause,
	}
}
