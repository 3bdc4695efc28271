package client_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/client"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/brokertest"
	"github.com/acubroker/acubroker/server"
)

func TestRenewalKeepsLeaseAlive(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	c, rec := newRecordedClient(t, env)

	lease, err := c.Acquire(testContext(t), connection, client.WithLeaseTTL(ttl))
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	firstExpire := lease.ExpireTime()

	// Real time: the emulator's clock, which the broker judges expiry by,
	// follows it unless a test advances it.
	time.Sleep(3*ttl + 500*time.Millisecond)

	if err := lease.Err(); err != nil {
		t.Fatalf("lease ended after 3 TTLs: %v", err)
	}
	if got := leaseState(t, env, lease.ID()); got != "active" {
		t.Errorf("lease state after 3 TTLs = %q, want active", got)
	}
	if got, min := lease.ExpireTime(), firstExpire.Add(2*ttl); got.Before(min) {
		t.Errorf("expire time after 3 TTLs = %s, want at least %s", got, min)
	}
	if renewals := len(rec.of("RenewLease")); renewals < 3 {
		t.Errorf("renewals in 3 TTLs = %d, want at least 3", renewals)
	}
	for _, call := range rec.of("RenewLease") {
		req := call.req.(*acubrokerv1.RenewLeaseRequest)
		if got := req.GetLeaseTtl().AsDuration(); got != ttl {
			t.Errorf("renewal asked for TTL %s, want %s", got, ttl)
		}
	}

	if err := lease.Release(testContext(t)); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if got := leaseState(t, env, lease.ID()); got != "released" {
		t.Errorf("lease state after Release = %q, want released", got)
	}
	select {
	case <-lease.Done():
	default:
		t.Error("Done is not closed after Release")
	}
	if err := lease.Err(); !errors.Is(err, client.ErrLeaseEnded) {
		t.Errorf("Err after Release = %v, want ErrLeaseEnded", err)
	}
}

func TestLeaseEndsOnce(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	c, rec := newRecordedClient(t, env)
	ctx := testContext(t)

	released, err := c.Acquire(ctx, connection)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if err := released.Release(ctx); err != nil {
		t.Fatalf("first Release: %v", err)
	}
	if err := released.Release(ctx); err != nil {
		t.Errorf("second Release: %v, want nil", err)
	}
	if err := released.SignOut(ctx); err != nil {
		t.Errorf("SignOut after Release: %v, want nil", err)
	}
	if n := len(rec.of("ReleaseSession")); n != 1 {
		t.Errorf("ReleaseSession calls = %d, want 1", n)
	}
	if n := len(rec.of("SignOut")); n != 0 {
		t.Errorf("SignOut calls after Release = %d, want 0", n)
	}

	signedOut, err := c.Acquire(ctx, connection)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if err := signedOut.SignOut(ctx); err != nil {
		t.Fatalf("SignOut: %v", err)
	}
	if err := signedOut.Release(ctx); err != nil {
		t.Errorf("Release after SignOut: %v, want nil", err)
	}
	if got := leaseState(t, env, signedOut.ID()); got != "signed_out" {
		t.Errorf("lease state = %q, want signed_out", got)
	}
	if n := len(rec.of("SignOut")); n != 1 {
		t.Errorf("SignOut calls = %d, want 1", n)
	}
	if n := len(rec.of("ReleaseSession")); n != 1 {
		t.Errorf("ReleaseSession calls after SignOut = %d, want still 1", n)
	}
	if open := env.Emulator.Emulator.Stats().OpenSessions; open != 0 {
		t.Errorf("emulator open sessions after SignOut = %d, want 0", open)
	}
}

func TestClientCloseReleasesLeases(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	c := newClient(t, env)
	ctx := testContext(t)

	var leases []*client.Lease
	for range 2 {
		lease, err := c.Acquire(ctx, connection)
		if err != nil {
			t.Fatalf("Acquire: %v", err)
		}
		leases = append(leases, lease)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, lease := range leases {
		if got := leaseState(t, env, lease.ID()); got != "released" {
			t.Errorf("lease %s state after Close = %q, want released", lease.ID(), got)
		}
		if err := lease.Err(); !errors.Is(err, client.ErrLeaseEnded) {
			t.Errorf("lease %s Err after Close = %v, want ErrLeaseEnded", lease.ID(), err)
		}
	}
	if _, err := c.Acquire(ctx, connection); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Acquire after Close returned %v, want ErrClosed", err)
	}
}

func TestAcquireRetriesUntilSeatFree(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{
		Seats:      1,
		Connection: func(c *broker.Connection) { c.MaxWait = 300 * time.Millisecond },
	})
	c, rec := newRecordedClient(t, env, client.WithMaxAttempts(20))
	ctx := testContext(t)

	first, err := c.Acquire(ctx, connection)
	if err != nil {
		t.Fatalf("first Acquire: %v", err)
	}
	type result struct {
		lease *client.Lease
		err   error
	}
	second := make(chan result, 1)
	go func() {
		lease, err := c.Acquire(ctx, connection)
		second <- result{lease, err}
	}()

	waitFor(t, "the second Acquire to get NO_SEAT_AVAILABLE", func() bool {
		return len(rec.of("AcquireSession")) >= 2
	})
	if err := first.Release(ctx); err != nil {
		t.Fatalf("release the first lease: %v", err)
	}
	got := <-second
	if got.err != nil {
		t.Fatalf("second Acquire: %v", got.err)
	}
	defer func() { _ = got.lease.Release(ctx) }()
	if got.lease.SessionID() != first.SessionID() {
		t.Errorf("second lease's session = %s, want the released warm session %s", got.lease.SessionID(), first.SessionID())
	}

	attempts := rec.of("AcquireSession")[1:]
	if len(attempts) < 2 {
		t.Fatalf("second Acquire made %d attempts, want at least 2", len(attempts))
	}
	requestID := acquireRequest(attempts[0]).GetRequestId()
	if requestID == "" {
		t.Error("the second Acquire sent no request_id")
	}
	for i, a := range attempts {
		if got := acquireRequest(a).GetRequestId(); got != requestID {
			t.Errorf("attempt %d request_id = %q, want %q as in the first attempt", i+1, got, requestID)
		}
		last := i == len(attempts)-1
		if last {
			if a.err != nil {
				t.Errorf("last attempt failed: %v", a.err)
			}
			continue
		}
		if status.Code(a.err) != codes.ResourceExhausted || client.Reason(a.err) != client.ReasonNoSeatAvailable {
			t.Errorf("attempt %d = %s %q, want RESOURCE_EXHAUSTED %s", i+1, codeOf(a.err), client.Reason(a.err),
				client.ReasonNoSeatAvailable)
		}
		if client.RetryDelay(a.err) <= 0 {
			t.Errorf("attempt %d carried no RetryInfo delay", i+1)
		}
	}
}

func TestAcquireRetryAfterLostResponseKeepsOneSeat(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	var grantedID string
	dropFirst := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		resp, ok := reply.(*acubrokerv1.AcquireSessionResponse)
		if err == nil && ok && grantedID == "" {
			grantedID = resp.GetLease().GetLeaseId()
			return status.Error(codes.Unavailable, "test: the response was lost")
		}
		return err
	}
	c := newClient(t, env,
		client.WithBackoff(10*time.Millisecond, 50*time.Millisecond),
		client.WithDialOptions(grpc.WithChainUnaryInterceptor(dropFirst)))

	lease, err := c.Acquire(testContext(t), connection)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if grantedID == "" {
		t.Fatal("the first attempt was not granted, so no response was dropped")
	}
	if lease.ID() != grantedID {
		t.Errorf("lease after the retry = %s, want %s, the one the lost response carried", lease.ID(), grantedID)
	}
	if seats := seatStates(t, env); seats["leased"] != 1 {
		t.Errorf("seats = %v, want exactly 1 leased", seats)
	}
	if signIns := env.Emulator.Emulator.Stats().SignIns; signIns != 1 {
		t.Errorf("emulator sign-ins = %d, want 1", signIns)
	}
}

func TestAcquireDoesNotRetryNotFound(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	c, rec := newRecordedClient(t, env)

	_, err := c.Acquire(testContext(t), "no-such-connection")
	if status.Code(err) != codes.NotFound {
		t.Errorf("Acquire of an unknown connection = %s (%v), want NOT_FOUND", codeOf(err), err)
	}
	if got := client.Reason(err); got != "CONNECTION_NOT_FOUND" {
		t.Errorf("Reason = %q, want CONNECTION_NOT_FOUND", got)
	}
	if n := len(rec.of("AcquireSession")); n != 1 {
		t.Errorf("AcquireSession calls = %d, want 1", n)
	}
}

func TestAPIKeyAuthenticatesCaller(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{
		Seats: 1,
		Server: func(c *server.Config) {
			c.Callers = []server.Caller{{
				Name:         "billing",
				APIKeySHA256: [][sha256.Size]byte{sha256.Sum256([]byte("good-key"))},
				Roles:        []server.Role{server.RoleClient},
			}}
		},
	})
	ctx := testContext(t)

	good := newClient(t, env, client.WithAPIKey("good-key"))
	lease, err := good.Acquire(ctx, connection)
	if err != nil {
		t.Fatalf("Acquire with the caller's API key: %v", err)
	}
	var holder string
	err = env.Pool.QueryRow(ctx, `SELECT holder FROM leases WHERE lease_id = $1`, lease.ID()).Scan(&holder)
	if err != nil {
		t.Fatalf("read the lease's holder: %v", err)
	}
	if holder != "billing" {
		t.Errorf("lease holder = %q, want billing, the caller the API key names", holder)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatalf("Release with the caller's API key: %v", err)
	}

	bad, rec := newRecordedClient(t, env, client.WithAPIKey("wrong-key"))
	_, err = bad.Acquire(ctx, connection)
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("Acquire with a wrong API key = %s (%v), want UNAUTHENTICATED", codeOf(err), err)
	}
	if got := client.Reason(err); got != "API_KEY_INVALID" {
		t.Errorf("Reason = %q, want API_KEY_INVALID", got)
	}
	if strings.Contains(err.Error(), "wrong-key") {
		t.Errorf("Acquire's error %q contains the API key", err)
	}
	if n := len(rec.of("AcquireSession")); n != 1 {
		t.Errorf("AcquireSession calls with a wrong API key = %d, want 1, not retried", n)
	}
}
