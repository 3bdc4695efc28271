package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"

	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/brokertest"
)

func acquire(t *testing.T, client acubrokerv1.SessionServiceClient, ttl ...time.Duration) *acubrokerv1.AcquireSessionResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName}
	if len(ttl) > 0 {
		req.LeaseTtl = durationProto(ttl[0])
	}
	resp, err := client.AcquireSession(ctx, req)
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

func errorInfo(err error) *errdetails.ErrorInfo {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return &errdetails.ErrorInfo{}
}

func retryDelay(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.RetryInfo); ok {
			return info.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

func count(t *testing.T, env *brokertest.Env, query string, args ...any) int {
	t.Helper()
	var n int
	if err := env.Pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func seatStates(t *testing.T, env *brokertest.Env) string {
	t.Helper()
	var states string
	err := env.Pool.QueryRow(context.Background(), "SELECT string_agg(state, ',' ORDER BY slot) FROM seats").Scan(&states)
	if err != nil {
		t.Fatalf("query seat states: %v", err)
	}
	return states
}

// waitFor polls cond every 20ms for up to 15s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// customerStatus calls the emulator's data endpoint with a token and
// returns the HTTP status.
func customerStatus(t *testing.T, baseURL, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, baseURL+"/entity/Default/24.200.001/Customer", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET Customer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
