package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/brokertest"
	"github.com/acubroker/acubroker/server"
)

// brokerctl runs the command in-process against env and returns its exit
// code and output.
func brokerctl(t *testing.T, env *brokertest.Env, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(append([]string{"-addr", env.Addr}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// mustRun runs brokerctl and fails the test unless it exits with 0.
func mustRun(t *testing.T, env *brokertest.Env, args ...string) string {
	t.Helper()
	code, stdout, stderr := brokerctl(t, env, args...)
	if code != exitOK {
		t.Fatalf("brokerctl %s: exit %d, stderr:\n%s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

// tableRows splits table output into rows of fields, header first.
func tableRows(out string) [][]string {
	var rows [][]string
	for line := range strings.Lines(out) {
		if strings.TrimSpace(line) != "" {
			rows = append(rows, strings.Fields(line))
		}
	}
	return rows
}

func decodeJSON(t *testing.T, out string, m proto.Message) {
	t.Helper()
	if err := protojson.Unmarshal([]byte(out), m); err != nil {
		t.Fatalf("output is not a %T in protobuf JSON: %v\n%s", m, err, out)
	}
}

func acquire(t *testing.T, env *brokertest.Env) *acubrokerv1.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	if err != nil {
		t.Fatalf("AcquireSession: %v", err)
	}
	return resp.GetLease()
}

func release(t *testing.T, env *brokertest.Env, lease *acubrokerv1.Lease) {
	t.Helper()
	if _, err := env.Client.ReleaseSession(context.Background(), &acubrokerv1.ReleaseSessionRequest{LeaseId: lease.GetLeaseId()}); err != nil {
		t.Fatalf("ReleaseSession: %v", err)
	}
}

func TestConnectionsCommand(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 3})
	held := acquire(t, env)
	defer release(t, env, held)
	release(t, env, acquire(t, env))

	rows := tableRows(mustRun(t, env, "connections"))
	if len(rows) != 2 {
		t.Fatalf("connections table has %d rows, want a header and one connection: %v", len(rows), rows)
	}
	header := strings.Join(rows[0], " ")
	if want := "CONNECTION PAUSED MAX OPEN LEASED IDLE SIGNING-IN SIGNING-OUT EMPTY WAITERS OLDEST-WAIT SIGN-INS REFRESHES SIGN-OUTS LOGIN-LIMIT"; header != want {
		t.Errorf("header = %q, want %q", header, want)
	}
	if got, want := strings.Join(rows[1], " "), "erp no 3 2 1 1 0 0 1 0 - 2 0 0 0"; got != want {
		t.Errorf("row = %q, want %q", got, want)
	}

	var list acubrokerv1.ListConnectionsResponse
	decodeJSON(t, mustRun(t, env, "connections", "-o", "json"), &list)
	if len(list.GetConnections()) != 1 || list.GetConnections()[0].GetSeats().GetLeased() != 1 {
		t.Errorf("connections JSON = %v, want one connection with one leased seat", &list)
	}

	detail := mustRun(t, env, "connections", brokertest.ConnectionName)
	for _, want := range []string{"Connection:", "Paused:", "no", "2 open (1 leased, 1 idle), 0 signing in, 0 signing out, 1 empty", "2 ok, 0 failed"} {
		if !strings.Contains(detail, want) {
			t.Errorf("connection detail lacks %q:\n%s", want, detail)
		}
	}

	code, _, stderr := brokerctl(t, env, "connections", "nope")
	if code != exitFailed {
		t.Errorf("connections nope: exit %d, want %d", code, exitFailed)
	}
	for _, want := range []string{`connection "nope"`, "NOT_FOUND", "CONNECTION_NOT_FOUND"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, stderr)
		}
	}
}

func TestSessionsCommand(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 3})
	held := acquire(t, env)
	defer release(t, env, held)
	idle := acquire(t, env)
	release(t, env, idle)

	rows := tableRows(mustRun(t, env, "sessions"))
	if len(rows) != 3 {
		t.Fatalf("sessions table has %d rows, want a header and 2 sessions: %v", len(rows), rows)
	}
	if got, want := strings.Join(rows[0], " "), "SESSION CONNECTION SLOT STATE HOLDER LEASE LEASE-EXPIRES LAST-USED TOKEN-EXPIRES"; got != want {
		t.Errorf("header = %q, want %q", got, want)
	}
	states := map[string]string{}
	for _, row := range rows[1:] {
		states[row[0]] = row[3] + " " + row[5]
	}
	if got, want := states[held.GetSessionId()], "leased "+held.GetLeaseId(); got != want {
		t.Errorf("held session row = %q, want %q", got, want)
	}
	if got, want := states[idle.GetSessionId()], "idle -"; got != want {
		t.Errorf("idle session row = %q, want %q", got, want)
	}

	var list acubrokerv1.ListSessionsResponse
	decodeJSON(t, mustRun(t, env, "sessions", "-state", "leased", "-o", "json"), &list)
	if len(list.GetSessions()) != 1 || list.GetSessions()[0].GetSessionId() != held.GetSessionId() {
		t.Errorf("leased sessions JSON = %v, want only session %s", &list, held.GetSessionId())
	}

	// -limit walks pages of the requested size and stops.
	code, stdout, stderr := brokerctl(t, env, "sessions", "-limit", "1")
	if code != exitOK || len(tableRows(stdout)) != 2 || !strings.Contains(stderr, "more sessions exist") {
		t.Errorf("sessions -limit 1: exit %d, rows %d, stderr %q; want 0, 2, a note", code, len(tableRows(stdout)), stderr)
	}

	detail := mustRun(t, env, "sessions", held.GetSessionId())
	for _, want := range []string{held.GetSessionId(), held.GetLeaseId(), "leased", "Refresh token:"} {
		if !strings.Contains(detail, want) {
			t.Errorf("session detail lacks %q:\n%s", want, detail)
		}
	}

	code, _, stderr = brokerctl(t, env, "sessions", "-state", "gone")
	if code != exitUsage || !strings.Contains(stderr, `invalid -state "gone"`) {
		t.Errorf("sessions -state gone: exit %d, stderr %q; want %d and the invalid value", code, stderr, exitUsage)
	}
}

func TestSignOutCommand(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	emu := env.Emulator.Emulator
	held := acquire(t, env)

	rows := tableRows(mustRun(t, env, "sign-out", held.GetSessionId(), "-reason", "stuck"))
	if len(rows) != 2 {
		t.Fatalf("sign-out table = %v, want a header and one row", rows)
	}
	if got, want := strings.Join(rows[1], " "), held.GetSessionId()+" erp leased "+held.GetLeaseId()+" - yes -"; got != want {
		t.Errorf("row = %q, want %q", got, want)
	}
	if open := emu.Stats().OpenSessions; open != 0 {
		t.Errorf("emulator open sessions = %d, want 0", open)
	}

	// A sign-out that Acumatica does not confirm exits with 3.
	release(t, env, acquire(t, env))
	emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointLogout, Status: 503, Count: 1})
	code, stdout, stderr := brokerctl(t, env, "sign-out", "-connection", brokertest.ConnectionName, "-o", "json")
	if code != exitUnconfirmed {
		t.Errorf("unconfirmed sign-out: exit %d, want %d (stderr %s)", code, exitUnconfirmed, stderr)
	}
	var resp acubrokerv1.ForceSignOutResponse
	decodeJSON(t, stdout, &resp)
	if len(resp.GetResults()) != 1 || resp.GetResults()[0].GetConfirmed() || resp.GetResults()[0].GetError() == "" {
		t.Errorf("sign-out JSON = %v, want one unconfirmed result with an error", &resp)
	}

	code, _, stderr = brokerctl(t, env, "sign-out", held.GetSessionId())
	if code != exitFailed || !strings.Contains(stderr, "SESSION_NOT_FOUND") {
		t.Errorf("second sign-out: exit %d, stderr %q; want %d and SESSION_NOT_FOUND", code, stderr, exitFailed)
	}
	code, _, _ = brokerctl(t, env, "sign-out", held.GetSessionId(), "-connection", brokertest.ConnectionName)
	if code != exitUsage {
		t.Errorf("sign-out with both targets: exit %d, want %d", code, exitUsage)
	}
}

func TestPauseResumeDrainAuditCommands(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	held := acquire(t, env)

	out := mustRun(t, env, "pause", brokertest.ConnectionName, "-reason", "upgrade")
	if !strings.Contains(out, `Paused connection "erp"`) || !strings.Contains(out, "reason: upgrade") {
		t.Errorf("pause output lacks the confirmation or the reason:\n%s", out)
	}
	_, err := env.Client.AcquireSession(context.Background(), &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	if err == nil || !strings.Contains(err.Error(), "paused") {
		t.Errorf("AcquireSession while paused: %v, want a paused error", err)
	}
	if rows := tableRows(mustRun(t, env, "connections")); len(rows) != 2 || rows[1][1] != "yes" {
		t.Errorf("connections while paused = %v, want PAUSED yes", rows)
	}

	var resumed acubrokerv1.ResumeConnectionResponse
	decodeJSON(t, mustRun(t, env, "resume", brokertest.ConnectionName, "-o", "json"), &resumed)
	if resumed.GetConnection().GetPaused() {
		t.Error("resume JSON shows the connection paused")
	}

	out = mustRun(t, env, "drain", brokertest.ConnectionName, "-wait", "200ms")
	for _, want := range []string{`Drained connection "erp"`, "Leases at start:", "wait timeout reached", held.GetLeaseId()} {
		if !strings.Contains(out, want) {
			t.Errorf("drain output lacks %q:\n%s", want, out)
		}
	}
	_, err = env.Client.RenewLease(context.Background(), &acubrokerv1.RenewLeaseRequest{LeaseId: held.GetLeaseId()})
	if err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("RenewLease after the drain: %v, want a revoked error", err)
	}

	rows := tableRows(mustRun(t, env, "audit"))
	if got, want := strings.Join(rows[0], " "), "ID TIME ACTOR ACTION CONNECTION SESSION OUTCOME DETAIL"; got != want {
		t.Errorf("audit header = %q, want %q", got, want)
	}
	var actions []string
	for _, row := range rows[1:] {
		actions = append(actions, row[3])
	}
	if got, want := strings.Join(actions, " "), "drain_connection force_sign_out pause_connection resume_connection pause_connection"; got != want {
		t.Errorf("audit actions = %q, want %q", got, want)
	}

	var events acubrokerv1.ListAuditEventsResponse
	decodeJSON(t, mustRun(t, env, "audit", "-action", "pause_connection", "-limit", "1", "-o", "json"), &events)
	if len(events.GetEvents()) != 1 || events.GetEvents()[0].GetAction() != acubrokerv1.AuditAction_AUDIT_ACTION_PAUSE_CONNECTION {
		t.Errorf("audit JSON = %v, want one pause event", &events)
	}
	if events.GetNextPageToken() == "" {
		t.Error("audit -limit 1 JSON has no next_page_token although two pause events exist")
	}

	code, _, stderr := brokerctl(t, env, "audit", "-action", "reboot")
	if code != exitUsage || !strings.Contains(stderr, "force_sign_out") {
		t.Errorf("audit -action reboot: exit %d, stderr %q; want %d and the valid actions", code, stderr, exitUsage)
	}
}

func TestUnreachableBroker(t *testing.T) {
	t.Parallel()
	// A port that was just free: nothing listens on it.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()

	var stdout, stderr bytes.Buffer
	code := run([]string{"connections", "-addr", addr, "-timeout", "5s"}, &stdout, &stderr)
	if code != exitFailed {
		t.Errorf("exit %d, want %d", code, exitFailed)
	}
	for _, want := range []string{"cannot reach the broker at " + addr, "BROKERCTL_ADDR", "-tls"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q: %s", want, stderr.String())
		}
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout = %q, want nothing", stdout.String())
	}
}

func TestAddressFromEnvironment(t *testing.T) {
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	t.Setenv("BROKERCTL_ADDR", env.Addr)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"connections"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d with BROKERCTL_ADDR set, stderr: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), brokertest.ConnectionName) {
		t.Errorf("stdout lacks the connection: %s", stdout.String())
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"no command", nil, exitUsage},
		{"unknown command", []string{"reboot"}, exitUsage},
		{"help", []string{"help"}, exitOK},
		{"pause without name", []string{"pause"}, exitUsage},
		{"bad output", []string{"connections", "-o", "yaml"}, exitUsage},
		{"unknown flag", []string{"sessions", "-color"}, exitUsage},
		{"command help", []string{"drain", "-h"}, exitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := run(tt.args, &stdout, &stderr); got != tt.want {
				t.Errorf("exit %d, want %d (stderr %s)", got, tt.want, stderr.String())
			}
		})
	}
}

func TestAPIKeyAuthentication(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	const adminKey, clientKey = "ops-key-0123456789", "billing-key-0123456789"
	srv := server.New(server.Config{Broker: env.Broker, Callers: []server.Caller{
		{Name: "ops", APIKeySHA256: [][sha256.Size]byte{sha256.Sum256([]byte(adminKey))}, Roles: []server.Role{server.RoleAdmin}},
		{Name: "billing", APIKeySHA256: [][sha256.Size]byte{sha256.Sum256([]byte(clientKey))}, Roles: []server.Role{server.RoleClient}},
	}})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	addr := lis.Addr().String()
	keyFile := func(key string) string {
		path := filepath.Join(t.TempDir(), "key")
		if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"no key", nil, exitFailed, "BROKERCTL_API_KEY"},
		{"client key", []string{"-api-key-file", keyFile(clientKey)}, exitFailed, "admin role"},
		{"admin key", []string{"-api-key-file", keyFile(adminKey)}, exitOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"-addr", addr}, tt.args...)
			args = append(args, "pause", brokertest.ConnectionName)
			if code := run(args, &stdout, &stderr); code != tt.wantCode {
				t.Errorf("exit %d, want %d (stderr %s)", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tt.wantStderr)
			}
		})
	}

	// The audit event names the authenticated caller.
	var events acubrokerv1.ListAuditEventsResponse
	decodeJSON(t, mustRun(t, env, "audit", "-o", "json"), &events)
	if len(events.GetEvents()) != 1 || events.GetEvents()[0].GetActor() != "ops" {
		t.Errorf("audit events = %v, want one pause by ops", &events)
	}
}
