package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
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
	// TokenRejected retires the session: Acumatica returned 401 for its token.
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
	_, err := b.endWithSignOut(ctx, p.LeaseID, p.Holder, LeaseRetired, "token rejected")
	return false, err
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
	return b.endWithSignOut(ctx, p.LeaseID, p.Holder, LeaseSignedOut, "caller sign-out")
}

// endWithSignOut ends a live lease of holder in state and signs its session
// out, for reason. It returns whether Acumatica confirmed the sign-out.
func (b *Broker) endWithSignOut(ctx context.Context, leaseID, holder string, state LeaseState, reason string) (bool, error) {
	conn, seat, err := b.leaseConnection(ctx, leaseID, holder)
	if err != nil {
		return false, err
	}
	now := b.clock.Now()
	acquiredAt := seat.LeaseAcquiredAt
	seat, err = b.store.BeginSignOut(ctx, EndLeaseParams{
		LeaseID:       leaseID,
		State:         state,
		SignOutReason: reason,
		ReclaimAt:     b.reclaimAt(conn, seat, now),
		Now:           now,
	})
	if err != nil {
		return false, b.leaseStoreError(ctx, leaseID, err)
	}
	b.observer.LeaseEnded(conn.Name, state, now.Sub(acquiredAt))
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
