package broker_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/emulator"
	"github.com/acubroker/acubroker/internal/brokertest"
	"github.com/acubroker/acubroker/internal/testdb"
	"github.com/acubroker/acubroker/store"
)

// BenchmarkAcquireRelease times Broker.Acquire and Broker.Release of a warm
// session, without gRPC, against the Postgres store and the emulator. Each
// sub-benchmark runs its callers concurrently on a connection with a seat
// per caller, so no caller waits. Run it with a database, for example:
//
//	go run ./internal/tools/withpg -- go test -run '^$' -bench AcquireRelease -count 6 ./broker
func BenchmarkAcquireRelease(b *testing.B) {
	for _, callers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			brk := benchBroker(b, callers)
			ctx := context.Background()
			var left atomic.Int64
			left.Store(int64(b.N))
			var failed atomic.Pointer[error]
			var wg sync.WaitGroup
			b.ResetTimer()
			for range callers {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						if err := cycle(ctx, brk); err != nil {
							failed.CompareAndSwap(nil, &err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			if err := failed.Load(); err != nil {
				b.Fatal(*err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
		})
	}
}

func cycle(ctx context.Context, brk *broker.Broker) error {
	grant, err := brk.Acquire(ctx, broker.AcquireParams{Connection: brokertest.ConnectionName})
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	kept, err := brk.Release(ctx, broker.ReleaseParams{LeaseID: grant.Lease.ID})
	if err != nil {
		return fmt.Errorf("release lease %s: %w", grant.Lease.ID, err)
	}
	if !kept {
		return fmt.Errorf("release of lease %s did not keep the session", grant.Lease.ID)
	}
	return nil
}

// benchBroker starts a broker with seats seats, all signed in, on a fresh
// database and an emulator of the same licence size.
func benchBroker(b *testing.B, seats int) *broker.Broker {
	b.Helper()
	emuCfg := emulator.DefaultConfig()
	emuCfg.Seats = seats
	emu, err := emulator.Start(emuCfg)
	if err != nil {
		b.Fatalf("start emulator: %v", err)
	}
	b.Cleanup(func() { _ = emu.Close() })
	brk, err := broker.New(broker.Config{
		Store: store.New(brokertest.NewPool(b, testdb.New(b))),
		Connections: []broker.Connection{{
			Name:          brokertest.ConnectionName,
			MaxSessions:   seats,
			MaxWait:       10 * time.Second,
			OfflineAccess: true,
			ERP:           brokertest.NewERP(b, emu.URL, nil, emu.Emulator.Now),
		}},
		Clock: emu.Emulator,
	})
	if err != nil {
		b.Fatalf("new broker: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := brk.Start(ctx); err != nil {
		b.Fatalf("start broker: %v", err)
	}
	b.Cleanup(brk.Stop)

	// Sign every seat in: hold as many leases as there are seats, then
	// release them.
	leases := make([]string, seats)
	for i := range leases {
		grant, err := brk.Acquire(ctx, broker.AcquireParams{Connection: brokertest.ConnectionName})
		if err != nil {
			b.Fatalf("sign in seat %d: %v", i, err)
		}
		leases[i] = grant.Lease.ID
	}
	for _, id := range leases {
		if _, err := brk.Release(ctx, broker.ReleaseParams{LeaseID: id}); err != nil {
			b.Fatalf("release lease %s: %v", id, err)
		}
	}
	if signIns := emu.Emulator.Stats().SignIns; signIns != int64(seats) {
		b.Fatalf("emulator counted %d sign-ins for %d seats", signIns, seats)
	}
	return brk
}
