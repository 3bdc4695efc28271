package broker

import (
	"context"
	"time"
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
	if n, err := b.store.ReclaimExpired(ctx, now); err != nil {
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

func (b *Broker) logMaintenanceError(ctx context.Context, step string, err error) {
	if ctx.Err() != nil {
		return
	}
	b.logger.WarnContext(ctx, "maintenance step failed; retrying at the next pass", "step", step, "err", err)
}
