package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/brokertest"
)

func acquire(t *testing.T, client acubrokerv1.SessionServiceClient) *acubrokerv1.AcquireSessionResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	if err != nil {
		t.Fatalf("AcquireSession: %v", err)
	}
	return resp
}

func release(t *testing.T, client acubrokerv1.SessionServiceClient, leaseID string) {
	t.Helper()
	_, err := client.ReleaseSession(context.Background(), &acubrokerv1.ReleaseSessionRequest{LeaseId: leaseID})
	if err != nil {
		t.Fatalf("ReleaseSession(%s): %v", leaseID, err)
	}
}

// errorReason returns the ErrorInfo reason of a status error.
func errorReason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func TestAcquireReleaseReusesWarmSession(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})

	first := acquire(t, env.Client)
	if first.GetCredentials().GetAccessToken() == "" {
		t.Fatal("first acquire returned no access token")
	}
	if got, want := first.GetCredentials().GetBaseUrl(), env.Emulator.URL; got != want {
		t.Errorf("base_url = %q, want %q", got, want)
	}
	release(t, env.Client, first.GetLease().GetLeaseId())

	second := acquire(t, env.Client)
	if second.GetLease().GetLeaseId() == first.GetLease().GetLeaseId() {
		t.Error("second acquire reused the first lease id")
	}
	if got, want := second.GetLease().GetSessionId(), first.GetLease().GetSessionId(); got != want {
		t.Errorf("second acquire's session = %s, want the warm session %s", got, want)
	}
	release(t, env.Client, second.GetLease().GetLeaseId())

	stats := env.Emulator.Emulator.Stats()
	if stats.SignIns != 1 {
		t.Errorf("emulator sign-ins = %d, want 1", stats.SignIns)
	}
	if stats.OpenSessions != 1 {
		t.Errorf("emulator open sessions = %d, want 1", stats.OpenSessions)
	}
}

func TestConcurrentCallersStayWithinSeats(t *testing.T) {
	t.Parallel()
	const (
		seats   = 3
		callers = 20
		cycles  = 300
	)
	env := brokertest.Start(t, brokertest.Options{Seats: seats})

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []error
		next     = make(chan struct{}, cycles)
	)
	for range cycles {
		next <- struct{}{}
	}
	close(next)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				resp, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
				if err == nil {
					_, err = env.Client.ReleaseSession(ctx, &acubrokerv1.ReleaseSessionRequest{LeaseId: resp.GetLease().GetLeaseId()})
				}
				cancel()
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d cycles failed; first: %v", len(failures), cycles, failures[0])
	}
	stats := env.Emulator.Emulator.Stats()
	if stats.PeakSessions > seats {
		t.Errorf("emulator peak open sessions = %d, want at most %d", stats.PeakSessions, seats)
	}
	if refused := sum(stats.RefusedSignIns); refused != 0 {
		t.Errorf("emulator refused %d sign-ins (%v), want 0", refused, stats.RefusedSignIns)
	}
	if stats.SignIns != seats {
		t.Errorf("emulator sign-ins = %d, want exactly %d", stats.SignIns, seats)
	}
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func TestRefreshKeepsSessionAndSeat(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{
		Seats: 2,
		// Keep the session open at the emulator across the advanced hour.
		Emulator: func(c *emulator.Config) { c.IdleTimeout = 2 * time.Hour },
	})
	emu := env.Emulator.Emulator

	first := acquire(t, env.Client)
	release(t, env.Client, first.GetLease().GetLeaseId())
	before := emu.Sessions()
	if len(before) != 1 {
		t.Fatalf("emulator sessions after the first acquire = %d, want 1", len(before))
	}

	emu.Advance(time.Hour + time.Minute)
	second := acquire(t, env.Client)
	defer release(t, env.Client, second.GetLease().GetLeaseId())

	if second.GetCredentials().GetAccessToken() == first.GetCredentials().GetAccessToken() {
		t.Error("acquire after the token lifetime returned the expired access token")
	}
	if got, want := second.GetLease().GetSessionId(), first.GetLease().GetSessionId(); got != want {
		t.Errorf("broker session after refresh = %s, want %s", got, want)
	}
	after := emu.Sessions()
	if len(after) != 1 || after[0].ID != before[0].ID {
		t.Errorf("emulator sessions after refresh = %+v, want the one session %s", after, before[0].ID)
	}
	stats := emu.Stats()
	if stats.Refreshes != 1 {
		t.Errorf("emulator refreshes = %d, want 1", stats.Refreshes)
	}
	if stats.SignIns != 1 {
		t.Errorf("emulator sign-ins = %d, want 1", stats.SignIns)
	}
	if stats.PeakSessions != 1 {
		t.Errorf("emulator peak sessions = %d, want 1", stats.PeakSessions)
	}
	expire := second.GetCredentials().GetTokenExpireTime().AsTime()
	if !expire.After(emu.Now().Add(50 * time.Minute)) {
		t.Errorf("refreshed token expires at %s, want about an hour after %s", expire, emu.Now())
	}
}

func TestSignOutFreesSeat(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	emu := env.Emulator.Emulator

	first := acquire(t, env.Client)
	resp, err := env.Client.SignOut(context.Background(), &acubrokerv1.SignOutRequest{LeaseId: first.GetLease().GetLeaseId()})
	if err != nil {
		t.Fatalf("SignOut: %v", err)
	}
	if !resp.GetConfirmed() {
		t.Error("SignOut confirmed = false, want true")
	}
	if open := emu.Stats().OpenSessions; open != 0 {
		t.Errorf("emulator open sessions after sign-out = %d, want 0", open)
	}

	second := acquire(t, env.Client)
	defer release(t, env.Client, second.GetLease().GetLeaseId())
	if second.GetLease().GetSessionId() == first.GetLease().GetSessionId() {
		t.Error("acquire after sign-out reused the signed-out session")
	}
	stats := emu.Stats()
	if stats.SignIns != 2 {
		t.Errorf("emulator sign-ins = %d, want 2", stats.SignIns)
	}
	if stats.SignOuts != 1 {
		t.Errorf("emulator sign-outs = %d, want 1", stats.SignOuts)
	}
	if stats.OpenSessions != 1 {
		t.Errorf("emulator open sessions = %d, want 1", stats.OpenSessions)
	}
}

func TestTokenRejectedRetiresSession(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	emu := env.Emulator.Emulator

	first := acquire(t, env.Client)
	resp, err := env.Client.ReleaseSession(context.Background(), &acubrokerv1.ReleaseSessionRequest{
		LeaseId: first.GetLease().GetLeaseId(),
		Reason:  acubrokerv1.ReleaseReason_RELEASE_REASON_TOKEN_REJECTED,
	})
	if err != nil {
		t.Fatalf("ReleaseSession: %v", err)
	}
	if resp.GetSessionKept() {
		t.Error("session_kept = true after a rejected token, want false")
	}
	if stats := emu.Stats(); stats.SignOuts != 1 || stats.OpenSessions != 0 {
		t.Errorf("emulator sign-outs = %d, open = %d; want 1 and 0", stats.SignOuts, stats.OpenSessions)
	}
	second := acquire(t, env.Client)
	defer release(t, env.Client, second.GetLease().GetLeaseId())
	if second.GetLease().GetSessionId() == first.GetLease().GetSessionId() {
		t.Error("acquire after a rejected token reused the retired session")
	}
}

func TestAPIScopeSeatReclaimedAtTokenExpiry(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{
		Seats:    1,
		Scopes:   []string{"api"},
		Emulator: func(c *emulator.Config) { c.IdleTimeout = 2 * time.Hour },
	})
	emu := env.Emulator.Emulator

	first := acquire(t, env.Client)
	release(t, env.Client, first.GetLease().GetLeaseId())
	emu.Advance(50 * time.Minute)
	warm := acquire(t, env.Client)
	release(t, env.Client, warm.GetLease().GetLeaseId())
	if warm.GetLease().GetSessionId() != first.GetLease().GetSessionId() {
		t.Errorf("acquire within the token lifetime got session %s, want the warm %s",
			warm.GetLease().GetSessionId(), first.GetLease().GetSessionId())
	}
	if got := seatStates(t, env); got != "idle" {
		t.Errorf("seat states within the token lifetime = %q, want %q (still counted)", got, "idle")
	}

	emu.Advance(11 * time.Minute)
	waitFor(t, "the seat to be reclaimed", func() bool { return seatStates(t, env) == "empty" })
	if open := emu.Stats().OpenSessions; open != 0 {
		t.Errorf("emulator open sessions after the token lifetime = %d, want 0", open)
	}

	third := acquire(t, env.Client)
	defer release(t, env.Client, third.GetLease().GetLeaseId())
	if third.GetLease().GetSessionId() == first.GetLease().GetSessionId() {
		t.Error("acquire after the token lifetime reused the expired session")
	}
	stats := emu.Stats()
	if stats.SignIns != 2 {
		t.Errorf("emulator sign-ins = %d, want 2", stats.SignIns)
	}
	if stats.PeakSessions != 1 {
		t.Errorf("emulator peak sessions = %d, want 1", stats.PeakSessions)
	}
}

func TestWaiterGetsReleasedSeat(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})

	held := acquire(t, env.Client)
	got := make(chan *acubrokerv1.AcquireSessionResponse, 1)
	go func() {
		resp, err := env.Client.AcquireSession(context.Background(),
			&acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
		if err != nil {
			t.Errorf("waiting AcquireSession: %v", err)
		}
		got <- resp
	}()
	waitFor(t, "the caller to queue", func() bool { return count(t, env, "SELECT count(*) FROM waiters") == 1 })
	release(t, env.Client, held.GetLease().GetLeaseId())

	select {
	case resp := <-got:
		if resp.GetLease().GetSessionId() != held.GetLease().GetSessionId() {
			t.Errorf("waiter got session %s, want the released %s", resp.GetLease().GetSessionId(), held.GetLease().GetSessionId())
		}
		release(t, env.Client, resp.GetLease().GetLeaseId())
	case <-time.After(10 * time.Second):
		t.Fatal("waiter did not get the released seat within 10s")
	}
	if stats := env.Emulator.Emulator.Stats(); stats.SignIns != 1 {
		t.Errorf("emulator sign-ins = %d, want 1", stats.SignIns)
	}
}

func TestMaxWaitEndsWithNoSeat(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{
		Seats:      1,
		Connection: func(c *broker.Connection) { c.MaxWait = 300 * time.Millisecond },
	})
	held := acquire(t, env.Client)
	defer release(t, env.Client, held.GetLease().GetLeaseId())

	_, err := env.Client.AcquireSession(context.Background(),
		&acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	if code := status.Code(err); code != codes.ResourceExhausted {
		t.Fatalf("AcquireSession code = %s, want ResourceExhausted (err %v)", code, err)
	}
	if reason := errorReason(err); reason != "NO_SEAT_AVAILABLE" {
		t.Errorf("reason = %q, want NO_SEAT_AVAILABLE", reason)
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "seats: 1 leased") {
		t.Errorf("message %q does not say what holds the seats", msg)
	}
	if delay := retryDelay(err); delay <= 0 {
		t.Errorf("retry delay = %s, want a positive RetryInfo", delay)
	}
	if n := count(t, env, "SELECT count(*) FROM waiters"); n != 0 {
		t.Errorf("waiters left after giving up = %d, want 0", n)
	}
}

func TestDeadlineEndsWaitCleanly(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	held := acquire(t, env.Client)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	if code := status.Code(err); code != codes.DeadlineExceeded {
		t.Fatalf("AcquireSession code = %s, want DeadlineExceeded (err %v)", code, err)
	}
	waitFor(t, "the waiter to leave the queue", func() bool { return count(t, env, "SELECT count(*) FROM waiters") == 0 })

	// The seat is not lost: after the release the next caller gets it.
	release(t, env.Client, held.GetLease().GetLeaseId())
	next := acquire(t, env.Client)
	release(t, env.Client, next.GetLease().GetLeaseId())
}

func TestRequestIDReturnsSameLease(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	req := &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName, RequestId: "job-42"}

	first, err := env.Client.AcquireSession(context.Background(), req)
	if err != nil {
		t.Fatalf("AcquireSession: %v", err)
	}
	retry, err := env.Client.AcquireSession(context.Background(), req)
	if err != nil {
		t.Fatalf("retried AcquireSession: %v", err)
	}
	if retry.GetLease().GetLeaseId() != first.GetLease().GetLeaseId() {
		t.Errorf("retry lease = %s, want %s", retry.GetLease().GetLeaseId(), first.GetLease().GetLeaseId())
	}
	if stats := env.Emulator.Emulator.Stats(); stats.SignIns != 1 {
		t.Errorf("emulator sign-ins = %d, want 1", stats.SignIns)
	}
	release(t, env.Client, first.GetLease().GetLeaseId())

	_, err = env.Client.AcquireSession(context.Background(), req)
	if code := status.Code(err); code != codes.AlreadyExists {
		t.Errorf("acquire with a used request_id: code = %s, want AlreadyExists (err %v)", code, err)
	}
	if reason := errorReason(err); reason != "REQUEST_ID_REUSED" {
		t.Errorf("reason = %q, want REQUEST_ID_REUSED", reason)
	}
}

func TestRenewExtendsLease(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	emu := env.Emulator.Emulator
	resp := acquire(t, env.Client)
	leaseID := resp.GetLease().GetLeaseId()
	ttl := 2 * time.Minute

	for range 3 {
		emu.Advance(ttl - 10*time.Second)
		renewed, err := env.Client.RenewLease(context.Background(), &acubrokerv1.RenewLeaseRequest{
			LeaseId: leaseID, LeaseTtl: durationpb.New(ttl),
		})
		if err != nil {
			t.Fatalf("RenewLease: %v", err)
		}
		want := emu.Now().Add(ttl)
		if got := renewed.GetLease().GetExpireTime().AsTime(); got.Sub(want).Abs() > time.Second {
			t.Errorf("renewed expire_time = %s, want %s", got, want)
		}
	}
	release(t, env.Client, leaseID)
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	emu := env.Emulator.Emulator
	ctx := context.Background()

	released := acquire(t, env.Client)
	release(t, env.Client, released.GetLease().GetLeaseId())
	signedOut := acquire(t, env.Client)
	if _, err := env.Client.SignOut(ctx, &acubrokerv1.SignOutRequest{LeaseId: signedOut.GetLease().GetLeaseId()}); err != nil {
		t.Fatalf("SignOut: %v", err)
	}
	expired, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{
		Connection: brokertest.ConnectionName, LeaseTtl: durationpb.New(5 * time.Second),
	})
	if err != nil {
		t.Fatalf("AcquireSession: %v", err)
	}
	emu.Advance(10 * time.Second)
	waitFor(t, "the expired lease to be reclaimed", func() bool {
		return count(t, env, "SELECT count(*) FROM leases WHERE state = 'expired'") == 1
	})

	unknownLease := "7d4f1c2e-3b5a-4c6d-8e9f-0a1b2c3d4e5f"
	tests := []struct {
		name       string
		call       func() error
		wantCode   codes.Code
		wantReason string
	}{
		{"unknown connection", func() error {
			_, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: "nope"})
			return err
		}, codes.NotFound, "CONNECTION_NOT_FOUND"},
		{"empty connection", func() error {
			_, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"negative lease_ttl", func() error {
			_, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{
				Connection: brokertest.ConnectionName, LeaseTtl: durationpb.New(-time.Second),
			})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"lease_ttl over the maximum", func() error {
			_, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{
				Connection: brokertest.ConnectionName, LeaseTtl: durationpb.New(24 * time.Hour),
			})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"request_id too long", func() error {
			_, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{
				Connection: brokertest.ConnectionName, RequestId: string(make([]byte, 200)),
			})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"control character in request_id", func() error {
			_, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{
				Connection: brokertest.ConnectionName, RequestId: "job\x00-1",
			})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"malformed lease_id", func() error {
			_, err := env.Client.RenewLease(ctx, &acubrokerv1.RenewLeaseRequest{LeaseId: "not-a-lease"})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"empty lease_id", func() error {
			_, err := env.Client.ReleaseSession(ctx, &acubrokerv1.ReleaseSessionRequest{})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"unknown lease_id", func() error {
			_, err := env.Client.RenewLease(ctx, &acubrokerv1.RenewLeaseRequest{LeaseId: unknownLease})
			return err
		}, codes.NotFound, "LEASE_NOT_FOUND"},
		{"expired lease", func() error {
			_, err := env.Client.RenewLease(ctx, &acubrokerv1.RenewLeaseRequest{LeaseId: expired.GetLease().GetLeaseId()})
			return err
		}, codes.FailedPrecondition, "LEASE_EXPIRED"},
		{"release twice", func() error {
			_, err := env.Client.ReleaseSession(ctx, &acubrokerv1.ReleaseSessionRequest{LeaseId: released.GetLease().GetLeaseId()})
			return err
		}, codes.FailedPrecondition, "LEASE_RELEASED"},
		{"sign-out of a released lease", func() error {
			_, err := env.Client.SignOut(ctx, &acubrokerv1.SignOutRequest{LeaseId: released.GetLease().GetLeaseId()})
			return err
		}, codes.FailedPrecondition, "LEASE_RELEASED"},
		{"renew of a signed-out lease", func() error {
			_, err := env.Client.RenewLease(ctx, &acubrokerv1.RenewLeaseRequest{LeaseId: signedOut.GetLease().GetLeaseId()})
			return err
		}, codes.FailedPrecondition, "LEASE_SIGNED_OUT"},
		{"undefined release reason", func() error {
			_, err := env.Client.ReleaseSession(ctx, &acubrokerv1.ReleaseSessionRequest{
				LeaseId: unknownLease, Reason: acubrokerv1.ReleaseReason(99),
			})
			return err
		}, codes.InvalidArgument, "INVALID_ARGUMENT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if code := status.Code(err); code != tt.wantCode {
				t.Errorf("code = %s, want %s (err %v)", code, tt.wantCode, err)
			}
			if reason := errorReason(err); reason != tt.wantReason {
				t.Errorf("reason = %q, want %q", reason, tt.wantReason)
			}
			if msg := status.Convert(err).Message(); msg == "" {
				t.Error("status message is empty")
			}
		})
	}
}

func retryDelay(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.RetryInfo); ok {
			return info.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// seatStates returns the states of the environment's seats, comma-separated
// in slot order.
func seatStates(t *testing.T, env *brokertest.Env) string {
	t.Helper()
	var states string
	err := env.Pool.QueryRow(context.Background(),
		"SELECT string_agg(state, ',' ORDER BY slot) FROM seats").Scan(&states)
	if err != nil {
		t.Fatalf("query seat states: %v", err)
	}
	return states
}

func count(t *testing.T, env *brokertest.Env, query string) int {
	t.Helper()
	var n int
	if err := env.Pool.QueryRow(context.Background(), query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// waitFor polls cond every 20ms for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var _ = fmt.Sprint
var _ = errors.New
