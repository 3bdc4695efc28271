package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/internal/brokertest"
	"github.com/acubroker/acubroker/internal/testdb"
	"github.com/acubroker/acubroker/store"
)

// The store's hot paths, each against a real database (run with
// BROKER_TEST_DATABASE_URL set, as `make test` does), for example:
//
//	go run ./internal/tools/withpg -- go test -run '^$' -bench . -count 6 ./store
//
// Each iteration's setup runs with the timer stopped, so ns/op is the one
// call named by the benchmark.

const benchConnection = "erp"

// benchClock is a synthetic clock for the store's @now parameters. Each
// iteration moves it on, so leases of earlier iterations never overlap.
type benchClock struct{ now time.Time }

func (c *benchClock) next() time.Time {
	c.now = c.now.Add(10 * time.Second)
	return c.now
}

// idleStore returns a store on a fresh database with one connection of
// seats seats, each holding an idle session.
func idleStore(b *testing.B, seats int) (*store.Store, *benchClock) {
	b.Helper()
	ctx := context.Background()
	s := store.New(brokertest.NewPool(b, testdb.New(b)))
	if err := s.SyncConnections(ctx, []broker.ConnectionBudget{{Name: benchConnection, MaxSessions: seats}}); err != nil {
		b.Fatalf("sync connections: %v", err)
	}

	clk := &benchClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	now := clk.next()
	// Every seat is signed in before any is released, so that each
	// acquire takes an empty seat.
	leases := make([]string, seats)
	for i := range leases {
		leases[i] = uuid.NewString()
		seat := acquireSeat(b, s, leases[i], time.Minute, now)
		if seat.State != broker.SeatSigningIn {
			b.Fatalf("seat %d is %s after its first acquire, expected %s", seat.Slot, seat.State, broker.SeatSigningIn)
		}
		_, err := s.CompleteSignIn(ctx, broker.CompleteSignInParams{
			LeaseID:         leases[i],
			SessionID:       uuid.NewString(),
			Credentials:     []byte(`{"access_token":"benchmark"}`),
			HasRefreshToken: true,
			TokenExpireAt:   now.Add(time.Hour),
			LeaseTTL:        time.Minute,
			Now:             now,
		})
		if err != nil {
			b.Fatalf("complete sign-in: %v", err)
		}
	}

	for _, id := range leases {
		releaseLease(b, s, id, now)
	}
	return s, clk
}

// acquireSeat takes a free seat or fails the benchmark.
func acquireSeat(b *testing.B, s *store.Store, leaseID string, ttl time.Duration, now time.Time) *broker.Seat {
	b.Helper()
	seat, _, err := s.AcquireSeat(context.Background(), acquireParams(leaseID, ttl, now))
	if err != nil {
		b.Fatalf("acquire a seat: %v", err)
	}
	if seat == nil {
		b.Fatal("acquire a seat: queued, expected a free seat")
	}
	return seat
}

func acquireParams(leaseID string, ttl time.Duration, now time.Time) broker.AcquireSeatParams {
	return broker.AcquireSeatParams{
		Connection:      benchConnection,
		LeaseID:         leaseID,
		LeaseTTL:        ttl,
		SignInReclaimAt: now.Add(time.Hour),
		WaitExpireAt:    now.Add(time.Hour),
		Now:             now,
	}
}

func releaseLease(b *testing.B, s *store.Store, leaseID string, now time.Time) {
	b.Helper()
	_, err := s.ReleaseLease(context.Background(), broker.EndLeaseParams{LeaseID: leaseID, State: broker.LeaseReleased, Now: now})
	if err != nil {
		b.Fatalf("release lease %s: %v", leaseID, err)
	}
}

// BenchmarkAcquireSeat times the acquire fast path: one autocommit
// statement that leases the warmest idle seat and records the lease.
func BenchmarkAcquireSeat(b *testing.B) {
	s, clk := idleStore(b, 1)
	b.ResetTimer()
	for range b.N {
		now := clk.next()
		lease := uuid.NewString()
		seat := acquireSeat(b, s, lease, time.Minute, now)
		b.StopTimer()
		if seat.State != broker.SeatLeased {
			b.Fatalf("seat is %s after the acquire, expected %s", seat.State, broker.SeatLeased)
		}
		releaseLease(b, s, lease, now)
		b.StartTimer()
	}
	reportRate(b, "acquires/s")
}

// BenchmarkReleaseLease times a release with no waiter: the seat goes back
// to idle, the lease ends and the waiter queue is checked, in one
// transaction.
func BenchmarkReleaseLease(b *testing.B) {
	s, clk := idleStore(b, 1)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		now := clk.next()
		lease := uuid.NewString()
		acquireSeat(b, s, lease, time.Minute, now)
		b.StartTimer()
		releaseLease(b, s, lease, now)
	}
	reportRate(b, "releases/s")
}

// BenchmarkDispatch times Dispatch granting a free seat to the one waiter.
// The seat is freed by its lease's expiry, which leaves the waiter queued,
// as when a holder's replica dies.
func BenchmarkDispatch(b *testing.B) {
	ctx := context.Background()
	s, clk := idleStore(b, 1)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		now := clk.next()
		holder, waiter := uuid.NewString(), uuid.NewString()
		acquireSeat(b, s, holder, time.Second, now)
		seat, position, err := s.AcquireSeat(ctx, acquireParams(waiter, time.Minute, now))
		if err != nil || seat != nil || position != 1 {
			b.Fatalf("second acquire: seat %v, position %d, error %v; expected to queue first", seat, position, err)
		}
		later := now.Add(2 * time.Second)
		if _, err := s.ReclaimExpired(ctx, later, time.Second); err != nil {
			b.Fatalf("expire the holder's lease: %v", err)
		}
		b.StartTimer()
		granted, err := s.Dispatch(ctx, benchConnection, later)
		b.StopTimer()
		if err != nil || granted != 1 {
			b.Fatalf("dispatch granted %d seats (error %v), expected 1", granted, err)
		}
		releaseLease(b, s, waiter, later)
		b.StartTimer()
	}
	reportRate(b, "dispatches/s")
}

// reportRate adds the calls per second of the timed part.
func reportRate(b *testing.B, unit string) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, unit)
	}
}
