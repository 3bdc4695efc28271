package metrics_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"

	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/brokertest"
	"github.com/acubroker/acubroker/metrics"
	"github.com/acubroker/acubroker/server"
)

const conn = brokertest.ConnectionName

// startWithMetrics starts a brokertest environment whose broker and gRPC
// server feed a Metrics, and serves its /metrics over HTTP on 127.0.0.1.
func startWithMetrics(t *testing.T, opts brokertest.Options) (*brokertest.Env, *metrics.Metrics, string) {
	t.Helper()
	var m *metrics.Metrics
	opts.Observer = func(env *brokertest.Env) broker.Observer {
		m = metrics.New(metrics.Config{
			Pool:        env.Pool,
			Connections: []string{conn},
			Clock:       env.Emulator.Emulator,
			Logger:      brokertest.Logger(t),
		})
		return m
	}
	opts.Server = func(c *server.Config) {
		c.UnaryInterceptors = []grpc.UnaryServerInterceptor{m.UnaryServerInterceptor()}
		c.StreamInterceptors = []grpc.StreamServerInterceptor{m.StreamServerInterceptor()}
	}
	env := brokertest.Start(t, opts)
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	return env, m, srv.URL + "/metrics"
}

func acquire(t *testing.T, env *brokertest.Env) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: conn})
	if err != nil {
		t.Fatalf("AcquireSession: %v", err)
	}
	return resp.GetLease().GetLeaseId()
}

func release(t *testing.T, env *brokertest.Env, leaseID string) {
	t.Helper()
	if _, err := env.Client.ReleaseSession(context.Background(), &acubrokerv1.ReleaseSessionRequest{LeaseId: leaseID}); err != nil {
		t.Fatalf("ReleaseSession(%s): %v", leaseID, err)
	}
}

// check compares a counter or gauge with want.
func check(t *testing.T, fams families, name string, labels map[string]string, want float64) {
	t.Helper()
	if got := fams.value(t, name, labels); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// checkCount compares a histogram's sample count with want.
func checkCount(t *testing.T, fams families, name string, labels map[string]string, want int) {
	t.Helper()
	if got, _ := fams.histogram(t, name, labels); got != want {
		t.Errorf("%s%v sample count = %d, want %d", name, labels, got, want)
	}
}

func TestScrapeAfterAcquiresReleasesAndSignOut(t *testing.T) {
	t.Parallel()
	env, _, url := startWithMetrics(t, brokertest.Options{Seats: 3})

	leases := []string{acquire(t, env), acquire(t, env), acquire(t, env)}
	release(t, env, leases[0])
	release(t, env, leases[1])
	resp, err := env.Client.SignOut(context.Background(), &acubrokerv1.SignOutRequest{LeaseId: leases[2]})
	if err != nil {
		t.Fatalf("SignOut: %v", err)
	}
	if !resp.GetConfirmed() {
		t.Fatal("SignOut was not confirmed by the emulator")
	}

	fams := scrape(t, url)
	c := map[string]string{"connection": conn}

	check(t, fams, "acubroker_acquires_total", map[string]string{"connection": conn, "outcome": "ok"}, 3)
	checkCount(t, fams, "acubroker_acquire_wait_seconds", c, 3)
	checkCount(t, fams, "acubroker_lease_hold_seconds", map[string]string{"connection": conn, "state": "released"}, 2)
	checkCount(t, fams, "acubroker_lease_hold_seconds", map[string]string{"connection": conn, "state": "signed_out"}, 1)
	check(t, fams, "acubroker_erp_requests_total", map[string]string{"connection": conn, "endpoint": "sign_in", "outcome": "ok"}, 3)
	check(t, fams, "acubroker_erp_requests_total", map[string]string{"connection": conn, "endpoint": "sign_out", "outcome": "ok"}, 1)
	check(t, fams, "acubroker_erp_requests_total", map[string]string{"connection": conn, "endpoint": "refresh", "outcome": "ok"}, 0)
	check(t, fams, "acubroker_erp_requests_total", map[string]string{"connection": conn, "endpoint": "sign_in", "outcome": "login_limit"}, 0)
	checkCount(t, fams, "acubroker_erp_request_duration_seconds", map[string]string{"connection": conn, "endpoint": "sign_in"}, 3)
	checkCount(t, fams, "acubroker_erp_request_duration_seconds", map[string]string{"connection": conn, "endpoint": "sign_out"}, 1)

	wantSeats := map[string]float64{"empty": 1, "signing_in": 0, "idle": 2, "leased": 0, "signing_out": 0}
	for state, want := range wantSeats {
		check(t, fams, "acubroker_seats", map[string]string{"connection": conn, "state": state}, want)
	}
	check(t, fams, "acubroker_seat_budget", c, 3)
	check(t, fams, "acubroker_waiters", c, 0)
	check(t, fams, "acubroker_oldest_waiter_age_seconds", c, 0)
	check(t, fams, "acubroker_pending_sign_outs", c, 0)
	check(t, fams, "acubroker_store_up", nil, 1)

	method := func(name string) map[string]string {
		return map[string]string{"grpc_service": "acubroker.v1.SessionService", "grpc_method": name, "grpc_code": "OK"}
	}
	check(t, fams, "grpc_server_handled_total", method("AcquireSession"), 3)
	check(t, fams, "grpc_server_handled_total", method("ReleaseSession"), 2)
	check(t, fams, "grpc_server_handled_total", method("SignOut"), 1)
	checkCount(t, fams, "grpc_server_handling_seconds",
		map[string]string{"grpc_service": "acubroker.v1.SessionService", "grpc_method": "AcquireSession"}, 3)

	// The emulator agrees with the seat gauges: two warm sessions.
	if got := env.Emulator.Emulator.Stats().OpenSessions; got != 2 {
		t.Errorf("emulator open sessions = %d, want 2", got)
	}
}

func TestScrapeShowsWaiters(t *testing.T) {
	t.Parallel()
	env, _, url := startWithMetrics(t, brokertest.Options{Seats: 1})
	heldLease := acquire(t, env)

	waited := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		resp, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: conn})
		if err != nil {
			t.Errorf("queued AcquireSession: %v", err)
			waited <- ""
			return
		}
		waited <- resp.GetLease().GetLeaseId()
	}()

	c := map[string]string{"connection": conn}
	deadline := time.Now().Add(10 * time.Second)
	var fams families
	for {
		fams = scrape(t, url)
		if fams.value(t, "acubroker_waiters", c) == 1 && fams.value(t, "acubroker_oldest_waiter_age_seconds", c) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiters = %v, oldest age = %v; want 1 waiter with an age above 0",
				fams.value(t, "acubroker_waiters", c), fams.value(t, "acubroker_oldest_waiter_age_seconds", c))
		}
		time.Sleep(50 * time.Millisecond)
	}
	check(t, fams, "acubroker_seats", map[string]string{"connection": conn, "state": "leased"}, 1)

	release(t, env, heldLease)
	second := <-waited
	if second == "" {
		t.FailNow()
	}

	fams = scrape(t, url)
	check(t, fams, "acubroker_waiters", c, 0)
	check(t, fams, "acubroker_seats", map[string]string{"connection": conn, "state": "leased"}, 1)
	check(t, fams, "acubroker_acquires_total", map[string]string{"connection": conn, "outcome": "ok"}, 2)
	count, sum := fams.histogram(t, "acubroker_acquire_wait_seconds", c)
	if count != 2 {
		t.Errorf("acquire wait sample count = %d, want 2", count)
	}
	if sum <= 0 {
		t.Errorf("acquire wait sum = %v, want above 0: the second acquire waited", sum)
	}
	check(t, fams, "acubroker_erp_requests_total", map[string]string{"connection": conn, "endpoint": "sign_in", "outcome": "ok"}, 1)
}

func TestScrapeShowsPendingSignOuts(t *testing.T) {
	t.Parallel()
	env, _, url := startWithMetrics(t, brokertest.Options{Seats: 2})
	lease := acquire(t, env)
	env.Emulator.Emulator.InjectFault(emulator.Fault{Endpoint: emulator.EndpointLogout, Status: 503})

	resp, err := env.Client.SignOut(context.Background(), &acubrokerv1.SignOutRequest{LeaseId: lease})
	if err != nil {
		t.Fatalf("SignOut: %v", err)
	}
	if resp.GetConfirmed() {
		t.Fatal("SignOut was confirmed although the emulator answers 503")
	}

	fams := scrape(t, url)
	c := map[string]string{"connection": conn}
	check(t, fams, "acubroker_pending_sign_outs", c, 1)
	check(t, fams, "acubroker_seats", map[string]string{"connection": conn, "state": "signing_out"}, 1)
	check(t, fams, "acubroker_erp_requests_total", map[string]string{"connection": conn, "endpoint": "sign_out", "outcome": "unavailable"}, 1)
	if got := fams.value(t, "acubroker_pending_sign_out_attempts_max", c); got < 1 {
		t.Errorf("acubroker_pending_sign_out_attempts_max = %v, want at least 1", got)
	}

	env.Emulator.Emulator.ClearFaults()
	deadline := time.Now().Add(15 * time.Second)
	for {
		fams = scrape(t, url)
		if fams.value(t, "acubroker_pending_sign_outs", c) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending sign-outs = %v 15s after the emulator recovered, want 0",
				fams.value(t, "acubroker_pending_sign_outs", c))
		}
		time.Sleep(100 * time.Millisecond)
	}
	check(t, fams, "acubroker_seats", map[string]string{"connection": conn, "state": "empty"}, 2)
	if got := env.Emulator.Emulator.Stats().OpenSessions; got != 0 {
		t.Errorf("emulator open sessions = %d, want 0", got)
	}
}

func TestScrapeSurvivesUnreachableDatabase(t *testing.T) {
	t.Parallel()
	// Port 1 on the loopback has no listener, so connecting fails at once.
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatalf("pgxpool.New: %v", err)
	}
	t.Cleanup(pool.Close)
	m := metrics.New(metrics.Config{Pool: pool, Connections: []string{conn}, QueryTimeout: time.Second})
	m.Acquired(conn, 0, nil)
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)

	fams := scrape(t, srv.URL+"/metrics")
	check(t, fams, "acubroker_store_up", nil, 0)
	if _, ok := fams["acubroker_seats"]; ok {
		t.Error("acubroker_seats is present although the database is unreachable")
	}
	check(t, fams, "acubroker_acquires_total", map[string]string{"connection": conn, "outcome": "ok"}, 1)
}
