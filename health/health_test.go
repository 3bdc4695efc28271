package health_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/acubroker/acubroker/health"
	"github.com/acubroker/acubroker/internal/pgcluster"
	"github.com/acubroker/acubroker/store"
)

const sessionService = "acubroker.v1.SessionService"

// startCluster starts a PostgreSQL cluster of the test's own, removed when
// the test ends.
func startCluster(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Remove(); err != nil {
			t.Errorf("remove PostgreSQL cluster: %v", err)
		}
	})
	return c
}

func newPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("parse pool config: %v", err)
	}
	cfg.ConnConfig.ConnectTimeout = time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// serveHealth serves a gRPC health service on 127.0.0.1 and returns it
// with a client.
func serveHealth(t *testing.T) (*grpchealth.Server, healthpb.HealthClient) {
	t.Helper()
	hs := grpchealth.NewServer()
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial health server: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return hs, healthpb.NewHealthClient(conn)
}

// grpcStatus returns the status a client reads for service.
func grpcStatus(t *testing.T, client healthpb.HealthClient, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health Check(%q): %v", service, err)
	}
	return resp.GetStatus()
}

// waitStatus polls until both services report want, for at most 15s.
func waitStatus(t *testing.T, client healthpb.HealthClient, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		whole, service := grpcStatus(t, client, ""), grpcStatus(t, client, sessionService)
		if whole == want && service == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health status: server %s, %s %s; want both %s", whole, sessionService, service, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readyz returns the status code and body of the readiness handler.
func readyz(t *testing.T, c *health.Checker) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	c.ReadinessHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestCheckerFollowsPostgres(t *testing.T) {
	t.Parallel()
	cluster := startCluster(t)
	pool := newPool(t, cluster.URL("postgres"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}

	hs, client := serveHealth(t)
	checker, err := health.NewChecker(health.Config{
		Pool:     pool,
		Status:   hs,
		Services: []string{"", sessionService},
		Interval: 100 * time.Millisecond,
		Timeout:  time.Second,
	})
	if err != nil {
		t.Fatalf("NewChecker: %v", err)
	}
	if got := grpcStatus(t, client, sessionService); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("status before the first check = %s, want NOT_SERVING", got)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { checker.Run(runCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done })

	waitStatus(t, client, healthpb.HealthCheckResponse_SERVING)
	if code, body := readyz(t, checker); code != http.StatusOK {
		t.Errorf("readyz while Postgres runs = %d %q, want 200", code, body)
	}

	if err := cluster.Stop(); err != nil {
		t.Fatalf("stop PostgreSQL: %v", err)
	}
	waitStatus(t, client, healthpb.HealthCheckResponse_NOT_SERVING)
	code, body := readyz(t, checker)
	if code != http.StatusServiceUnavailable {
		t.Errorf("readyz while Postgres is down = %d, want 503", code)
	}
	if !strings.Contains(body, "Postgres is unreachable") {
		t.Errorf("readyz body = %q, want it to say Postgres is unreachable", body)
	}

	if err := cluster.Restart(ctx); err != nil {
		t.Fatalf("restart PostgreSQL: %v", err)
	}
	waitStatus(t, client, healthpb.HealthCheckResponse_SERVING)
	if code, body := readyz(t, checker); code != http.StatusOK {
		t.Errorf("readyz after Postgres returned = %d %q, want 200", code, body)
	}

	checker.Shutdown()
	if err := checker.Check(ctx); err != nil {
		t.Fatalf("Check after Shutdown: %v", err)
	}
	if got := grpcStatus(t, client, ""); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("status after Shutdown and a passing check = %s, want NOT_SERVING", got)
	}
	if code, _ := readyz(t, checker); code != http.StatusServiceUnavailable {
		t.Errorf("readyz after Shutdown = %d, want 503", code)
	}
}

func TestCheckerRequiresCurrentSchema(t *testing.T) {
	t.Parallel()
	cluster := startCluster(t)
	pool := newPool(t, cluster.URL("postgres"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	hs, client := serveHealth(t)
	checker, err := health.NewChecker(health.Config{Pool: pool, Status: hs, Services: []string{"", sessionService}})
	if err != nil {
		t.Fatalf("NewChecker: %v", err)
	}
	if err := checker.Check(ctx); err == nil {
		t.Fatal("Check on an unmigrated database passed, want an error")
	}
	if got := grpcStatus(t, client, ""); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("status on an unmigrated database = %s, want NOT_SERVING", got)
	}

	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if err := checker.Check(ctx); err != nil {
		t.Fatalf("Check after migrating: %v", err)
	}
	if got := grpcStatus(t, client, sessionService); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("status after migrating = %s, want SERVING", got)
	}

	ahead, err := health.NewChecker(health.Config{Pool: pool, WantVersion: store.LatestVersion() + 1})
	if err != nil {
		t.Fatalf("NewChecker: %v", err)
	}
	err = ahead.Check(ctx)
	if err == nil || !strings.Contains(err.Error(), "run broker migrate") {
		t.Errorf("Check with a newer binary = %v, want an error that says to run broker migrate", err)
	}
	if code, body := readyz(t, ahead); code != http.StatusServiceUnavailable || !strings.Contains(body, "schema version") {
		t.Errorf("readyz with an old schema = %d %q, want 503 naming the schema version", code, body)
	}
}

func TestLivenessHandlerAnswersOK(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(health.LivenessHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status = %d, want 200", resp.StatusCode)
	}
	if string(body) != "ok\n" {
		t.Errorf("body = %q, want %q", body, "ok\n")
	}
}

func TestNewCheckerRequiresPool(t *testing.T) {
	t.Parallel()
	if _, err := health.NewChecker(health.Config{}); err == nil {
		t.Error("NewChecker without a pool returned no error")
	}
}
