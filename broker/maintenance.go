package broker

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
)

// Maintenance settings. They bound the work of one pass so that a backlog
// is worked off over several passes instead of in one long transaction.
const (
	signOutBatch   = 16
	signOutLockFor = time.Minute
	leaseRetention = time.Hour
	pruneEvery     = time.Minute
)

// maintain runs maintenance passes until ctx ends. Every replica runs them;
// each step is a single atomic store call, safe to run on several replicas
// at once.
func (b *Broker) maintain(ctx context.Context) {
	ticker := time.NewTicker(b.maintInterval)
	defer ticker.Stop()
	var lastPrune time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		b.MaintainOnce(ctx)
		if now := b.clock.Now(); now.Sub(lastPrune) >= pruneEvery {
			lastPrune = now
			if _, err := b.store.PruneLeases(ctx, now.Add(-leaseRetention)); err != nil && ctx.Err() == nil {
				b.logger.WarnContext(ctx, "pruning ended leases failed", "err", err)
			}
		}
	}
}

// MaintainOnce runs one maintenance pass: it reclaims expired leases and
// seats whose sessions have certainly ended, signs out idle sessions when
// configured, retries pending sign-outs, and grants free seats to waiters.
// The background loop calls it every MaintenanceInterval; tests call it to
// step time.
func (b *Broker) MaintainOnce(ctx context.Context) {
	now := b.clock.Now()
	if n, err := b.store.ReclaimExpired(ctx, now, b.grace); err != nil {
		b.logMaintenanceError(ctx, "reclaiming expired leases and seats", err)
	} else if n > 0 {
		b.logger.InfoContext(ctx, "reclaimed expired leases and seats", "count", n)
	}

	for _, conn := range b.connections {
		if conn.IdleSignOutAfter <= 0 {
			continue
		}
		n, err := b.store.SignOutIdle(ctx, conn.Name, now.Add(-conn.IdleSignOutAfter), conn.IdleTimeout, now)
		if err != nil {
			b.logMaintenanceError(ctx, "signing out idle sessions", err)
		} else if n > 0 {
			b.logger.InfoContext(ctx, "signing out idle sessions", "connection", conn.Name, "count", n)
		}
	}

	b.retrySignOuts(ctx, now)
	b.probeSignIns(ctx, now)

	if _, err := b.store.DispatchAll(ctx, now); err != nil {
		b.logMaintenanceError(ctx, "granting free seats to waiters", err)
	}
}

func (b *Broker) retrySignOuts(ctx context.Context, now time.Time) {
	seats, err := b.store.ClaimDueSignOuts(ctx, now, signOutLockFor, signOutBatch)
	if err != nil {
		b.logMaintenanceError(ctx, "claiming pending sign-outs", err)
		return
	}
	for i := range seats {
		conn, ok := b.connections[seats[i].Connection]
		if !ok {
			// Another replica configures this connection; leave the seat
			// to it. Its claim lapses after signOutLockFor.
			continue
		}
		b.signOutSeat(ctx, conn, &seats[i])
	}
}

// probeHolder is the holder of the leases of probe sign-ins.
const probeHolder = "acubroker/probe"

// probeSignIns tries one sign-in for each connection whose login-limit
// backoff has ended and whose probe this replica claimed.
func (b *Broker) probeSignIns(ctx context.Context, now time.Time) {
	names, err := b.store.ClaimProbes(ctx, now)
	if err != nil {
		b.logMaintenanceError(ctx, "claiming sign-in probes", err)
		return
	}
	for _, name := range names {
		if conn, ok := b.connections[name]; ok {
			b.probe(ctx, conn)
		}
	}
}

// probe signs in once for a connection whose sign-ins back off. On success
// the backoff ends and the new session goes to the oldest waiter; on
// another login-limit refusal signIn doubles the backoff.
func (b *Broker) probe(ctx context.Context, conn *Connection) {
	now := b.clock.Now()
	seat, err := b.store.ClaimProbeSeat(ctx, AcquireSeatParams{
		Connection:      conn.Name,
		LeaseID:         uuid.NewString(),
		Holder:          probeHolder,
		LeaseTTL:        conn.DefaultLeaseTTL,
		SignInReclaimAt: now.Add(b.sessionEndsAfter(conn)),
		Now:             now,
	})
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			b.logMaintenanceError(ctx, "claiming a seat for a sign-in probe", err)
		}
		return
	}
	grant, err := b.signIn(ctx, conn, seat, conn.DefaultLeaseTTL)
	if err != nil {
		b.logger.InfoContext(ctx, "sign-in probe failed; sign-ins keep backing off", "connection", conn.Name, "err", err)
		return
	}
	if err := b.store.EndSignInBackoff(ctx, conn.Name); err != nil {
		b.logMaintenanceError(ctx, "ending the sign-in backoff", err)
	}
	b.logger.InfoContext(ctx, "sign-in probe succeeded; sign-ins resume", "connection", conn.Name)
	b.releaseAbandoned(ctx, grant.Lease.ID)
}

func (b *Broker) logMaintenanceError(ctx context.Context, step string, err error) {
	if ctx.Err() != nil {
		return
	}
	b.logger.WarnContext(ctx, "maintenance step failed; retrying at the next pass", "step", step, "err", err)
}
