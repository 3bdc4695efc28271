package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/acubroker/acubroker/acumatica"
	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/brokertest"
)

func TestWaitersServedInArrivalOrderAcrossReplicas(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	_, addrB := env.StartReplica(t)
	clients := []acubrokerv1.SessionServiceClient{
		env.Client,
		acubrokerv1.NewSessionServiceClient(brokertest.Dial(t, addrB)),
	}

	held := acquire(t, env.Client)
	const waiters = 6
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	for i := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := clients[i%2]
			resp, err := client.AcquireSession(context.Background(),
				&acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
			if err != nil {
				t.Errorf("waiter %d: AcquireSession: %v", i, err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			if _, err := client.ReleaseSession(context.Background(),
				&acubrokerv1.ReleaseSessionRequest{LeaseId: resp.GetLease().GetLeaseId()}); err != nil {
				t.Errorf("waiter %d: ReleaseSession: %v", i, err)
			}
		}()
		waitFor(t, fmt.Sprintf("waiter %d to queue", i), func() bool {
			return count(t, env, "SELECT count(*) FROM waiters") == i+1
		})
	}
	release(t, env.Client, held.GetLease().GetLeaseId())
	wg.Wait()

	if fmt.Sprint(order) != fmt.Sprint([]int{0, 1, 2, 3, 4, 5}) {
		t.Errorf("waiters served in order %v, want arrival order [0 1 2 3 4 5]", order)
	}
	if stats := env.Emulator.Emulator.Stats(); stats.SignIns != 1 {
		t.Errorf("emulator sign-ins = %d, want 1", stats.SignIns)
	}
}

// TestNoWaiterWaitsWhileSeatFree runs alone: it measures timing and needs
// the machine's cores for its callers.
func TestNoWaiterWaitsWhileSeatFree(t *testing.T) {
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	_, addrB := env.StartReplica(t)
	clients := []acubrokerv1.SessionServiceClient{
		env.Client,
		acubrokerv1.NewSessionServiceClient(brokertest.Dial(t, addrB)),
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var cycles atomic.Int64
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := clients[i%2]
			for ctx.Err() == nil {
				resp, err := client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
				if err != nil {
					continue
				}
				time.Sleep(5 * time.Millisecond)
				_, _ = client.ReleaseSession(context.Background(), &acubrokerv1.ReleaseSessionRequest{LeaseId: resp.GetLease().GetLeaseId()})
				cycles.Add(1)
			}
		}()
	}

	// Sample the store: a waiter queued while a seat is idle or empty
	// must be served within moments, not after a poll interval.
	const query = `SELECT (SELECT count(*) FROM waiters) > 0
		AND (SELECT count(*) FROM seats WHERE state IN ('idle', 'empty')) > 0`
	var overlapStart time.Time
	longest := time.Duration(0)
	for ctx.Err() == nil {
		var both bool
		if err := env.Pool.QueryRow(context.Background(), query).Scan(&both); err != nil {
			break
		}
		now := time.Now()
		switch {
		case both && overlapStart.IsZero():
			overlapStart = now
		case both:
			longest = max(longest, now.Sub(overlapStart))
		default:
			overlapStart = time.Time{}
		}
		time.Sleep(2 * time.Millisecond)
	}
	wg.Wait()
	t.Logf("cycles %d, longest time a waiter coexisted with a free seat %s", cycles.Load(), longest)
	if cycles.Load() < 20 {
		t.Errorf("only %d cycles ran; the test did not exercise contention", cycles.Load())
	}
	if longest > 150*time.Millisecond {
		t.Errorf("a waiter waited %s while a seat was free, want under 150ms (poll interval 200ms)", longest)
	}
}

func TestZombieHolderTokenRejectedAfterReclaim(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	emu := env.Emulator.Emulator

	zombie := acquire(t, env.Client, 5*time.Second)
	oldToken := zombie.GetCredentials().GetAccessToken()
	if got := customerStatus(t, env.Emulator.URL, oldToken); got != 200 {
		t.Fatalf("data call with the holder's token = %d, want 200", got)
	}

	emu.Advance(6 * time.Second)
	waitFor(t, "the expired lease to be reclaimed", func() bool {
		return count(t, env, "SELECT count(*) FROM leases WHERE state = 'expired'") == 1
	})
	next := acquire(t, env.Client)
	defer release(t, env.Client, next.GetLease().GetLeaseId())

	if next.GetLease().GetSessionId() != zombie.GetLease().GetSessionId() {
		t.Errorf("next holder's session = %s, want the reclaimed %s", next.GetLease().GetSessionId(), zombie.GetLease().GetSessionId())
	}
	if next.GetCredentials().GetAccessToken() == oldToken {
		t.Fatal("next holder got the zombie holder's access token")
	}
	if got := customerStatus(t, env.Emulator.URL, oldToken); got != 401 {
		t.Errorf("data call with the zombie's token after reclaim = %d, want 401", got)
	}
	if got := customerStatus(t, env.Emulator.URL, next.GetCredentials().GetAccessToken()); got != 200 {
		t.Errorf("data call with the next holder's token = %d, want 200", got)
	}
	_, err := env.Client.RenewLease(context.Background(), &acubrokerv1.RenewLeaseRequest{LeaseId: zombie.GetLease().GetLeaseId()})
	if reason := errorInfo(err).GetReason(); reason != "LEASE_EXPIRED" {
		t.Errorf("zombie's renew reason = %q, want LEASE_EXPIRED (err %v)", reason, err)
	}
	stats := emu.Stats()
	if stats.SignIns != 1 || stats.Refreshes != 1 || stats.Revocations != 1 {
		t.Errorf("emulator sign-ins, refreshes, revocations = %d, %d, %d; want 1, 1, 1",
			stats.SignIns, stats.Refreshes, stats.Revocations)
	}
	if stats.PeakSessions != 1 {
		t.Errorf("emulator peak sessions = %d, want 1", stats.PeakSessions)
	}
}

func TestSignOutRetriedThroughOutage(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	emu := env.Emulator.Emulator

	held := acquire(t, env.Client)
	emu.InjectFault(emulator.Fault{Endpoint: "logout", Status: 503, Count: 3})
	resp, err := env.Client.SignOut(context.Background(), &acubrokerv1.SignOutRequest{LeaseId: held.GetLease().GetLeaseId()})
	if err != nil {
		t.Fatalf("SignOut: %v", err)
	}
	if resp.GetConfirmed() {
		t.Fatal("SignOut confirmed = true during an outage, want false")
	}
	if got := seatStates(t, env); got != "signing_out" {
		t.Errorf("seat state during the outage = %q, want signing_out (still counted)", got)
	}
	if open := emu.Stats().OpenSessions; open != 1 {
		t.Errorf("emulator open sessions during the outage = %d, want 1", open)
	}

	// The first retry is claimed for a minute, then retries back off:
	// step the broker's clock (the emulator's) past each.
	for range 8 {
		if seatStates(t, env) == "empty" {
			break
		}
		emu.Advance(65 * time.Second)
		time.Sleep(300 * time.Millisecond)
	}
	waitFor(t, "the retried sign-out to free the seat", func() bool { return seatStates(t, env) == "empty" })
	stats := emu.Stats()
	if stats.OpenSessions != 0 {
		t.Errorf("emulator open sessions after the outage = %d, want 0", stats.OpenSessions)
	}
	if stats.SignOuts != 1 {
		t.Errorf("emulator sign-outs = %d, want 1", stats.SignOuts)
	}
	if left := len(emu.Faults()); left != 0 {
		t.Errorf("faults left = %d, want 0: the sign-out was retried fewer than 3 times", left)
	}
}

// crashingERP performs real sign-ins, but while crash is set it reports an
// unknown outcome, as a broker that died between Acumatica's token response
// and its own commit would leave things.
type crashingERP struct {
	*acumatica.Client
	crash atomic.Bool
}

func (e *crashingERP) PasswordGrant(ctx context.Context) (*acumatica.Token, error) {
	tok, err := e.Client.PasswordGrant(ctx)
	if err == nil && e.crash.Load() {
		return nil, &acumatica.Error{Op: acumatica.OpPasswordGrant, Kind: acumatica.ErrUnavailable, OutcomeUnknown: true}
	}
	return tok, err
}

func TestCrashBetweenTokenAndCommitKeepsSeatCounted(t *testing.T) {
	t.Parallel()
	var erp *crashingERP
	env := brokertest.Start(t, brokertest.Options{
		Seats: 1,
		Connection: func(c *broker.Connection) {
			erp = &crashingERP{Client: c.ERP.(*acumatica.Client)}
			erp.crash.Store(true)
			c.ERP = erp
			c.MaxWait = 200 * time.Millisecond
		},
	})
	emu := env.Emulator.Emulator

	_, err := env.Client.AcquireSession(context.Background(), &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	if code := status.Code(err); code != codes.Unavailable {
		t.Fatalf("acquire whose sign-in outcome is unknown: code = %s, want Unavailable (err %v)", code, err)
	}
	erp.crash.Store(false)
	if got := seatStates(t, env); got != "signing_in" {
		t.Errorf("seat state = %q, want signing_in: the unrecorded session must stay counted", got)
	}
	if open := emu.Stats().OpenSessions; open != 1 {
		t.Errorf("emulator open sessions = %d, want 1 (the unrecorded session)", open)
	}
	_, err = env.Client.AcquireSession(context.Background(), &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	if reason := errorInfo(err).GetReason(); reason != "NO_SEAT_AVAILABLE" {
		t.Errorf("acquire while the seat is held by an unrecorded sign-in: reason %q, want NO_SEAT_AVAILABLE (err %v)", reason, err)
	}

	// Acumatica ends the session after its idle timeout; the broker frees
	// the seat only after that (plus its grace), never before.
	emu.Advance(10 * time.Minute)
	time.Sleep(300 * time.Millisecond)
	if got := seatStates(t, env); got != "signing_in" {
		t.Errorf("seat state at the idle timeout, inside the grace = %q, want signing_in", got)
	}
	emu.Advance(time.Minute)
	waitFor(t, "the seat to be reclaimed", func() bool { return seatStates(t, env) == "empty" })

	next := acquire(t, env.Client)
	release(t, env.Client, next.GetLease().GetLeaseId())
	stats := emu.Stats()
	if stats.PeakSessions != 1 {
		t.Errorf("emulator peak sessions = %d, want 1", stats.PeakSessions)
	}
	if refused := sum(stats.RefusedSignIns); refused != 0 {
		t.Errorf("emulator refused %d sign-ins, want 0", refused)
	}
	if stats.SignIns != 2 {
		t.Errorf("emulator sign-ins = %d, want 2", stats.SignIns)
	}
}

func TestLoginLimitProbesWithBackoff(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{
		Seats: 2,
		Connection: func(c *broker.Connection) {
			c.LoginLimitBackoff = 10 * time.Second
			c.LoginLimitMaxBackoff = 40 * time.Second
			c.MaxWait = 300 * time.Millisecond
		},
	})
	// Two more replicas compete for the probes.
	env.StartReplica(t)
	env.StartReplica(t)
	emu := env.Emulator.Emulator

	// A tool outside the broker holds one of the licence's two seats.
	outside := brokertest.NewERP(t, env.Emulator.URL, nil, emu.Now)
	outsideToken, err := outside.PasswordGrant(context.Background())
	if err != nil {
		t.Fatalf("outside sign-in: %v", err)
	}

	first := acquire(t, env.Client)
	start := time.Now()
	_, err = env.Client.AcquireSession(context.Background(), &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	if reason := errorInfo(err).GetReason(); reason != "NO_SEAT_AVAILABLE" && reason != "ERP_LOGIN_LIMIT" {
		t.Fatalf("second acquire: reason %q, want ERP_LOGIN_LIMIT or NO_SEAT_AVAILABLE (err %v)", reason, err)
	}
	// Going back to the queue after the refusal shares the one max_wait.
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("second acquire took %s, want about the max_wait of 300ms", took)
	}
	refused := func() int64 { return emu.Stats().RefusedSignIns["login_limit"] }
	if got := refused(); got != 1 {
		t.Fatalf("refused sign-ins after the first refusal = %d, want 1", got)
	}

	// While sign-ins back off, a released session still serves the queue.
	release(t, env.Client, first.GetLease().GetLeaseId())
	again := acquire(t, env.Client)
	release(t, env.Client, again.GetLease().GetLeaseId())
	if got := refused(); got != 1 {
		t.Errorf("refused sign-ins while backing off = %d, want 1: no sign-in may be tried", got)
	}

	// One probe per interval across the three replicas, doubling: probes
	// at +10s, +30s (10+20) and +70s (30+40).
	wantAfter := []struct {
		advance time.Duration
		refused int64
	}{
		{5 * time.Second, 1}, {5 * time.Second, 2}, {10 * time.Second, 2}, {10 * time.Second, 3},
		{20 * time.Second, 3}, {20 * time.Second, 4},
	}
	for i, step := range wantAfter {
		before := refused()
		emu.Advance(step.advance)
		if step.refused > before {
			waitFor(t, fmt.Sprintf("step %d: probe %d", i, step.refused), func() bool { return refused() >= step.refused })
		}
		// Give the three replicas' maintenance passes time to probe again,
		// which they must not.
		time.Sleep(500 * time.Millisecond)
		if got := refused(); got != step.refused {
			t.Fatalf("step %d: refused sign-ins = %d, want %d", i, got, step.refused)
		}
	}

	// The outside tool signs out; the next probe succeeds and sign-ins
	// resume.
	if err := outside.SignOut(context.Background(), acumatica.SessionCredentials{AccessToken: outsideToken.AccessToken}); err != nil {
		t.Fatalf("outside sign-out: %v", err)
	}
	emu.Advance(40 * time.Second)
	waitFor(t, "the probe to open a second session", func() bool { return emu.Stats().OpenSessions == 2 })
	// The probe ends the backoff just after its sign-in succeeds.
	waitFor(t, "sign-ins to resume", func() bool {
		return count(t, env, "SELECT count(*) FROM connections WHERE signin_backoff > interval '0'") == 0
	})
	a := acquire(t, env.Client)
	b := acquire(t, env.Client)
	release(t, env.Client, a.GetLease().GetLeaseId())
	release(t, env.Client, b.GetLease().GetLeaseId())
	stats := emu.Stats()
	if stats.PeakSessions != 2 {
		t.Errorf("emulator peak sessions = %d, want 2", stats.PeakSessions)
	}
	if got := refused(); got != 4 {
		t.Errorf("refused sign-ins at the end = %d, want 4", got)
	}
}

func TestThrottlingKeepsSessions(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{
		Seats:    2,
		Emulator: func(c *emulator.Config) { c.IdleTimeout = 3 * time.Hour },
	})
	emu := env.Emulator.Emulator
	first := acquire(t, env.Client)
	release(t, env.Client, first.GetLease().GetLeaseId())

	emu.InjectFault(emulator.Fault{Endpoint: "token", Status: 429, Body: "Too many requests"})
	emu.Advance(time.Hour + time.Minute)
	for i := range 10 {
		_, err := env.Client.AcquireSession(context.Background(), &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
		if code := status.Code(err); code != codes.ResourceExhausted {
			t.Fatalf("acquire %d during a 429 storm: code = %s, want ResourceExhausted (err %v)", i, code, err)
		}
		if reason := errorInfo(err).GetReason(); reason != "ERP_THROTTLED" {
			t.Errorf("acquire %d: reason %q, want ERP_THROTTLED", i, reason)
		}
		if delay := retryDelay(err); delay <= 0 {
			t.Errorf("acquire %d: retry delay = %s, want positive", i, delay)
		}
	}
	stats := emu.Stats()
	if stats.SignOuts != 0 {
		t.Errorf("emulator sign-outs during the storm = %d, want 0", stats.SignOuts)
	}
	if stats.OpenSessions != 1 {
		t.Errorf("emulator open sessions during the storm = %d, want 1", stats.OpenSessions)
	}

	emu.ClearFaults()
	after := acquire(t, env.Client)
	release(t, env.Client, after.GetLease().GetLeaseId())
	if after.GetLease().GetSessionId() != first.GetLease().GetSessionId() {
		t.Errorf("session after the storm = %s, want the kept %s", after.GetLease().GetSessionId(), first.GetLease().GetSessionId())
	}
	if stats := emu.Stats(); stats.SignIns != 1 || stats.SignOuts != 0 {
		t.Errorf("emulator sign-ins, sign-outs = %d, %d; want 1, 0", stats.SignIns, stats.SignOuts)
	}
}

func TestRequestIDRetryAfterFailedSignIn(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	emu := env.Emulator.Emulator
	req := &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName, RequestId: "job-43"}

	emu.InjectFault(emulator.Fault{Endpoint: "token", Status: 503, Body: "Service Unavailable", Count: 1})
	_, err := env.Client.AcquireSession(context.Background(), req)
	if reason := errorInfo(err).GetReason(); reason != "ERP_UNAVAILABLE" {
		t.Fatalf("acquire during the outage: reason %q, want ERP_UNAVAILABLE (err %v)", reason, err)
	}
	if delay := retryDelay(err); delay <= 0 {
		t.Errorf("retry delay = %s, want positive", delay)
	}

	// A retry with the same request_id, as the RetryInfo suggests, succeeds.
	resp, err := env.Client.AcquireSession(context.Background(), req)
	if err != nil {
		t.Fatalf("retried acquire with the same request_id: %v", err)
	}
	again, err := env.Client.AcquireSession(context.Background(), req)
	if err != nil {
		t.Fatalf("second retry: %v", err)
	}
	if again.GetLease().GetLeaseId() != resp.GetLease().GetLeaseId() {
		t.Errorf("second retry's lease = %s, want the granted %s", again.GetLease().GetLeaseId(), resp.GetLease().GetLeaseId())
	}
	release(t, env.Client, resp.GetLease().GetLeaseId())
	if stats := emu.Stats(); stats.SignIns != 1 || stats.OpenSessions != 1 {
		t.Errorf("emulator sign-ins, open sessions = %d, %d; want 1, 1", stats.SignIns, stats.OpenSessions)
	}
}

func TestPausedConnectionEndsWaitWithReason(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{
		Seats:      1,
		Connection: func(c *broker.Connection) { c.MaxWait = 700 * time.Millisecond },
	})
	held := acquire(t, env.Client)
	defer release(t, env.Client, held.GetLease().GetLeaseId())

	done := make(chan error, 1)
	go func() {
		_, err := env.Client.AcquireSession(context.Background(), &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
		done <- err
	}()
	waitFor(t, "the caller to queue", func() bool { return count(t, env, "SELECT count(*) FROM waiters") == 1 })
	if _, err := env.Broker.PauseConnection(context.Background(), broker.PauseParams{
		Connection: brokertest.ConnectionName, Actor: "test", Reason: "maintenance",
	}); err != nil {
		t.Fatalf("PauseConnection: %v", err)
	}
	err := <-done
	if reason := errorInfo(err).GetReason(); reason != "CONNECTION_PAUSED" {
		t.Errorf("queued acquire on a paused connection: reason %q, want CONNECTION_PAUSED (err %v)", reason, err)
	}
}

func TestQueueCapFailsFast(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{
		Seats:      1,
		Connection: func(c *broker.Connection) { c.MaxQueue = 2 },
	})
	held := acquire(t, env.Client)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
		}()
		waitFor(t, fmt.Sprintf("waiter %d to queue", i), func() bool { return count(t, env, "SELECT count(*) FROM waiters") == i+1 })
	}

	start := time.Now()
	_, err := env.Client.AcquireSession(context.Background(), &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	if code := status.Code(err); code != codes.ResourceExhausted {
		t.Fatalf("acquire over the queue cap: code = %s, want ResourceExhausted (err %v)", code, err)
	}
	info := errorInfo(err)
	if info.GetReason() != "QUEUE_FULL" {
		t.Errorf("reason = %q, want QUEUE_FULL", info.GetReason())
	}
	if pos := info.GetMetadata()["queue_position"]; pos != "3" {
		t.Errorf("queue_position = %q, want 3", pos)
	}
	if retryDelay(err) <= 0 {
		t.Error("no RetryInfo on QUEUE_FULL")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("QUEUE_FULL took %s, want a fast failure", took)
	}
	cancel()
	wg.Wait()
	release(t, env.Client, held.GetLease().GetLeaseId())
}
