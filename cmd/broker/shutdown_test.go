package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/brokertest"
	"github.com/acubroker/acubroker/internal/testdb"
	"github.com/acubroker/acubroker/store"
)

// buildBroker builds ./cmd/broker into a temporary directory and returns
// the binary's path.
func buildBroker(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH, so the broker binary cannot be built: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "broker")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command(goTool, append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// processLog collects the JSON log lines of a broker process.
type processLog struct {
	mu    sync.Mutex
	lines []map[string]any
	raw   strings.Builder
	added chan struct{}
}

func readLog(r io.Reader) *processLog {
	l := &processLog{added: make(chan struct{}, 1)}
	go func() {
		scanner := bufio.NewScanner(r)
		scanner.Buffer(make([]byte, 1<<16), 1<<20)
		for scanner.Scan() {
			line := scanner.Text()
			var entry map[string]any
			_ = json.Unmarshal([]byte(line), &entry)
			l.mu.Lock()
			l.raw.WriteString(line + "\n")
			if entry != nil {
				l.lines = append(l.lines, entry)
			}
			l.mu.Unlock()
			select {
			case l.added <- struct{}{}:
			default:
			}
		}
	}()
	return l
}

// find returns the first entry whose msg is msg.
func (l *processLog) find(msg string) map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.lines {
		if e["msg"] == msg {
			return e
		}
	}
	return nil
}

func (l *processLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

// waitFor waits up to 30s for a log entry with message msg.
func (l *processLog) waitFor(t *testing.T, msg string) map[string]any {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if e := l.find(msg); e != nil {
			return e
		}
		select {
		case <-l.added:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no log entry %q within 30s; the log so far:\n%s", msg, l.text())
		}
	}
}

// writeConfig writes a config file with one connection to the emulator at
// siteURL and returns its path.
func writeConfig(t *testing.T, siteURL string, seats int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "broker.yaml")
	body := fmt.Sprintf(`connections:
  - name: erp
    site_url: %s
    client_id: %q
    client_secret_env: ACUBROKER_TEST_CLIENT_SECRET
    username: %s
    password_env: ACUBROKER_TEST_PASSWORD
    max_sessions: %d
    max_wait: 30s
`, siteURL, emulator.DemoClientID, emulator.DemoUser, seats)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatalf("write config: %v", err)
	}
	return path
}

// processEnv returns the test's environment without OTEL_ variables, so
// that the broker exports no traces, plus the connection's secrets.
func processEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") && !strings.HasPrefix(kv, "BROKER_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"ACUBROKER_TEST_CLIENT_SECRET="+emulator.DemoClientSecret,
		"ACUBROKER_TEST_PASSWORD="+emulator.DemoPassword,
	)
}

// seatStates returns the number of seats in each state.
func seatStates(t *testing.T, env *brokertest.Env) map[string]int {
	t.Helper()
	rows, err := env.Pool.Query(context.Background(), "SELECT state, count(*) FROM seats GROUP BY state")
	if err != nil {
		t.Fatalf("count seats: %v", err)
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
		t.Fatalf("count seats: %v", err)
	}
	return states
}

func countWaiters(t *testing.T, env *brokertest.Env) int {
	t.Helper()
	var n int
	if err := env.Pool.QueryRow(context.Background(), "SELECT count(*) FROM waiters").Scan(&n); err != nil {
		t.Fatalf("count waiters: %v", err)
	}
	return n
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func TestServeStopsCleanlyOnSIGTERM(t *testing.T) {
	t.Parallel()
	bin := buildBroker(t)
	emu, err := emulator.Start(func() emulator.Config { c := emulator.DefaultConfig(); c.Seats = 1; return c }())
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	dbURL := testdb.New(t)
	env := &brokertest.Env{Emulator: emu, DatabaseURL: dbURL, Pool: brokertest.NewPool(t, dbURL)}

	cmd := exec.Command(bin, "serve",
		"-config", writeConfig(t, emu.URL, 1),
		"-database-url", dbURL,
		"-listen", "127.0.0.1:0",
		"-metrics-listen", "127.0.0.1:0",
		"-shutdown-delay", "1s",
		"-shutdown-timeout", "1s",
		"-log-format", "json",
	)
	cmd.Env = processEnv()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatalf("stderr pipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start broker: %v", err)
	}
	exited := make(chan error, 1)
	logs := readLog(stderr)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})

	addr, _ := logs.waitFor(t, "broker serving")["address"].(string)
	metricsAddr, _ := logs.waitFor(t, "metrics listener serving")["address"].(string)
	conn := brokertest.Dial(t, addr)
	client := acubrokerv1.NewSessionServiceClient(conn)
	healthClient := healthpb.NewHealthClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	heldLease, err := client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: "erp"})
	if err != nil {
		t.Fatalf("first AcquireSession: %v", err)
	}
	if got := httpStatus(t, "http://"+metricsAddr+"/readyz"); got != http.StatusOK {
		t.Fatalf("/readyz before SIGTERM = %d, want 200", got)
	}

	queued := make(chan error, 1)
	go func() {
		_, err := client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: "erp"})
		queued <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); countWaiters(t, env) != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second acquire did not queue within 10s")
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("send SIGTERM: %v", err)
	}

	// During the shutdown delay, health reports NOT_SERVING on both probes.
	for deadline := time.Now().Add(900 * time.Millisecond); ; time.Sleep(20 * time.Millisecond) {
		resp, err := healthClient.Check(ctx, &healthpb.HealthCheckRequest{Service: "acubroker.v1.SessionService"})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gRPC health after SIGTERM: %v, %v; want NOT_SERVING", resp.GetStatus(), err)
		}
	}
	if got := httpStatus(t, "http://"+metricsAddr+"/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz after SIGTERM = %d, want 503", got)
	}

	select {
	case err := <-queued:
		st := status.Convert(err)
		if st.Code() != codes.Unavailable && st.Code() != codes.Canceled {
			t.Errorf("queued acquire at shutdown: code %s (%q), want UNAVAILABLE or CANCELLED", st.Code(), st.Message())
		}
		if !strings.Contains(st.Message(), "shutting down") {
			t.Errorf("queued acquire at shutdown: message %q, want it to say the replica is shutting down", st.Message())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the queued acquire did not return within 15s of SIGTERM")
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("broker exit: %v, want status 0; log:\n%s", err, logs.text())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the broker did not exit within 15s of SIGTERM")
	}

	if os.Getenv("BROKER_TEST_LOG") != "" {
		t.Logf("broker log:\n%s", logs.text())
	}

	// No seat is lost: the waiter left the queue, the lease still holds
	// its seat, and the emulator has exactly the sessions the seats hold.
	if n := countWaiters(t, env); n != 0 {
		t.Errorf("waiters after shutdown = %d, want 0", n)
	}
	states := seatStates(t, env)
	if states["leased"] != 1 {
		t.Errorf("seats after shutdown = %v, want the one seat leased", states)
	}
	withSession := states["leased"] + states["idle"] + states["signing_out"]
	if open := emu.Emulator.Stats().OpenSessions; open != withSession {
		t.Errorf("emulator open sessions = %d, seats with a session = %d; want them equal", open, withSession)
	}

	for _, msg := range []string{
		"shutting down: reporting NOT_SERVING",
		"in-flight calls did not finish within the shutdown timeout; cancelling them",
		"broker stopped; its leases and sessions stay in the database for the other replicas",
	} {
		if logs.find(msg) == nil {
			t.Errorf("the log has no entry %q", msg)
		}
	}
	for _, secret := range []string{emulator.DemoPassword, emulator.DemoClientSecret, heldLease.GetCredentials().GetAccessToken()} {
		if strings.Contains(logs.text(), secret) {
			t.Errorf("the log contains a secret (%d bytes long)", len(secret))
		}
	}

	// Another replica serves the lease that survived the shutdown.
	erp := brokertest.NewERP(t, emu.URL, nil, nil)
	other, err := broker.New(broker.Config{
		Store:       store.New(env.Pool),
		Connections: []broker.Connection{{Name: "erp", MaxSessions: 1, OfflineAccess: true, ERP: erp}},
	})
	if err != nil {
		t.Fatalf("new broker: %v", err)
	}
	if err := other.Start(ctx); err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(other.Stop)
	sessionKept, err := other.Release(ctx, broker.ReleaseParams{LeaseID: heldLease.GetLease().GetLeaseId()})
	if err != nil {
		t.Fatalf("release the surviving lease on another replica: %v", err)
	}
	if !sessionKept {
		t.Error("the released session was not kept warm")
	}
}

func TestDrainerConvertsOnlyShutdownCancellation(t *testing.T) {
	t.Parallel()
	handler := func(ctx context.Context, _ any) (any, error) {
		<-ctx.Done()
		return nil, status.Error(codes.Canceled, "the call was cancelled")
	}

	d := newDrainer()
	callerCtx, cancelCaller := context.WithCancel(context.Background())
	cancelCaller()
	_, err := d.unary(callerCtx, nil, nil, handler)
	if got := status.Code(err); got != codes.Canceled {
		t.Errorf("call cancelled by its caller: code %s, want CANCELLED", got)
	}

	done := make(chan error, 1)
	go func() {
		_, err := d.unary(context.Background(), nil, nil, handler)
		done <- err
	}()
	for d.inFlight.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	d.endCalls()
	select {
	case err := <-done:
		st := status.Convert(err)
		if st.Code() != codes.Unavailable {
			t.Errorf("call cancelled by shutdown: code %s, want UNAVAILABLE", st.Code())
		}
		if st.Message() != shuttingDownMessage {
			t.Errorf("call cancelled by shutdown: message %q, want %q", st.Message(), shuttingDownMessage)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call did not return within 5s of endCalls")
	}
	if n := d.inFlight.Load(); n != 0 {
		t.Errorf("in-flight calls after both returned = %d, want 0", n)
	}
}
