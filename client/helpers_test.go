package client_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/acubroker/acubroker/client"
	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/brokertest"
)

const connection = brokertest.ConnectionName

// testContext returns a context that ends with the test or after 20s.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// call is one broker call as a client interceptor saw it.
type call struct {
	method string // the RPC name, such as "AcquireSession"
	req    proto.Message
	err    error
}

// recorder records every call of a client.
type recorder struct {
	mu    sync.Mutex
	calls []call
}

func (r *recorder) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call{method: method[strings.LastIndex(method, "/")+1:], req: req.(proto.Message), err: err})
	return err
}

// of returns the recorded calls of one RPC.
func (r *recorder) of(method string) []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []call
	for _, c := range r.calls {
		if c.method == method {
			out = append(out, c)
		}
	}
	return out
}

// newClient dials the environment's broker with opts, and closes the
// client when the test ends.
func newClient(t *testing.T, env *brokertest.Env, opts ...client.Option) *client.Client {
	t.Helper()
	opts = append([]client.Option{client.WithInsecure(), client.WithLogger(brokertest.Logger(t))}, opts...)
	c, err := client.Dial(env.Addr, opts...)
	if err != nil {
		t.Fatalf("Dial(%s): %v", env.Addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newRecordedClient is newClient with a recorder of every call.
func newRecordedClient(t *testing.T, env *brokertest.Env, opts ...client.Option) (*client.Client, *recorder) {
	t.Helper()
	rec := &recorder{}
	opts = append(opts, client.WithDialOptions(grpc.WithChainUnaryInterceptor(rec.intercept)))
	return newClient(t, env, opts...), rec
}

// leaseState returns the state of a lease in the broker's leases table.
func leaseState(t *testing.T, env *brokertest.Env, leaseID string) string {
	t.Helper()
	var state string
	err := env.Pool.QueryRow(context.Background(), `SELECT state FROM leases WHERE lease_id = $1`, leaseID).Scan(&state)
	if err != nil {
		t.Fatalf("read the state of lease %s: %v", leaseID, err)
	}
	return state
}

// seatStates counts the connection's seats by state.
func seatStates(t *testing.T, env *brokertest.Env) map[string]int {
	t.Helper()
	rows, err := env.Pool.Query(context.Background(),
		`SELECT state, count(*) FROM seats WHERE connection = $1 GROUP BY state`, connection)
	if err != nil {
		t.Fatalf("count seats by state: %v", err)
	}
	defer rows.Close()
	states := map[string]int{}
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			t.Fatalf("scan seat count: %v", err)
		}
		states[state] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("count seats by state: %v", err)
	}
	return states
}

// waitFor polls cond until it is true or 5s have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 5s waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// revoke revokes an access token at the emulator. Data calls with it then
// return 401, while its session stays open.
func revoke(t *testing.T, env *brokertest.Env, token string) {
	t.Helper()
	form := url.Values{
		"token":         {token},
		"client_id":     {emulator.DemoClientID},
		"client_secret": {emulator.DemoClientSecret},
	}
	resp, err := http.PostForm(env.Emulator.URL+emulator.PathRevocation, form)
	if err != nil {
		t.Fatalf("revoke the access token: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke the access token: status %d, want 200", resp.StatusCode)
	}
}

// customersURL is the emulator's Customer list.
func customersURL(env *brokertest.Env) string { return env.Emulator.URL + emulator.PathCustomers }

// acquireRequest returns the request of a recorded AcquireSession call.
func acquireRequest(c call) *acubrokerv1.AcquireSessionRequest {
	return c.req.(*acubrokerv1.AcquireSessionRequest)
}

// codeOf returns the gRPC code name of a call's error, "OK" for none.
func codeOf(err error) string {
	return status.Code(err).String()
}
