package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// callTimeout bounds each acquire and release; an acquire may wait for a
// seat up to the connection's max_wait of 30 seconds.
const callTimeout = time.Minute

// acquire acquires a lease of connection and returns its id.
func acquire(ctx context.Context, c acubrokerv1.SessionServiceClient, connection string) (string, error) {
	resp, err := acquireSession(ctx, c, connection)
	return resp.GetLease().GetLeaseId(), err
}

// acquireSession acquires a lease of connection.
func acquireSession(ctx context.Context, c acubrokerv1.SessionServiceClient, connection string) (
	*acubrokerv1.AcquireSessionResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := c.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: connection})
	if err != nil {
		return nil, fmt.Errorf("acquire a session of %s: %w", connection, err)
	}
	return resp, nil
}

// release releases a lease.
func release(ctx context.Context, c acubrokerv1.SessionServiceClient, leaseID string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if _, err := c.ReleaseSession(ctx, &acubrokerv1.ReleaseSessionRequest{LeaseId: leaseID}); err != nil {
		return fmt.Errorf("release lease %s: %w", leaseID, err)
	}
	return nil
}

// samples collects the timings of many callers.
type samples struct {
	mu       sync.Mutex
	acquire  []time.Duration
	release  []time.Duration
	errors   int
	firstErr string
}

func (s *samples) add(acq, rel []time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acquire = append(s.acquire, acq...)
	s.release = append(s.release, rel...)
}

func (s *samples) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errors++
	if s.firstErr == "" {
		s.firstErr = err.Error()
	}
}

// errorPause is how long a caller waits after a failed call, so that a
// broken broker does not turn the loop into a busy spin.
const errorPause = 20 * time.Millisecond

// cycleSpec is the work of one loop cycle besides acquire and release.
type cycleSpec struct {
	// pick returns the connection to acquire.
	pick func() string
	// hold is how long the lease is held.
	hold time.Duration
	// use, when set, runs while the lease is held; an error counts as a
	// failed cycle, but the lease is still released.
	use func(context.Context, *acubrokerv1.AcquireSessionResponse) error
}

// fixed returns a cycleSpec that acquires connection and holds the lease
// for hold.
func fixed(connection string, hold time.Duration) cycleSpec {
	return cycleSpec{pick: func() string { return connection }, hold: hold}
}

// loop runs acquire, hold and release on c until stop returns true,
// records the latencies in s, and returns the completed cycles.
func loop(ctx context.Context, c acubrokerv1.SessionServiceClient, spec cycleSpec, stop func(done int) bool,
	s *samples) int {
	var acq, rel []time.Duration
	done := 0
	for !stop(done) && ctx.Err() == nil {
		start := time.Now()
		resp, err := acquireSession(ctx, c, spec.pick())
		if err != nil {
			s.fail(err)
			time.Sleep(errorPause)
			continue
		}
		acq = append(acq, time.Since(start))
		leaseID := resp.GetLease().GetLeaseId()
		if spec.hold > 0 {
			time.Sleep(spec.hold)
		}
		if spec.use != nil {
			if err := spec.use(ctx, resp); err != nil {
				s.fail(err)
			}
		}
		start = time.Now()
		if err := release(ctx, c, leaseID); err != nil {
			s.fail(err)
			time.Sleep(errorPause)
			continue
		}
		rel = append(rel, time.Since(start))
		done++
	}
	s.add(acq, rel)
	return done
}

// holdAll acquires n leases of connection at once, then releases them,
// so that n seats hold signed-in sessions.
func holdAll(ctx context.Context, c acubrokerv1.SessionServiceClient, connection string, n int) error {
	leases := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { leases[i], errs[i] = acquire(ctx, c, connection) })
	}
	wg.Wait()
	for i, id := range leases {
		if id != "" {
			if err := release(ctx, c, id); err != nil && errs[i] == nil {
				errs[i] = err
			}
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
