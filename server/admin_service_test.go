package server_test

import (
	"context"
	"slices"
	"strings"
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

func adminClient(env *brokertest.Env) acubrokerv1.AdminServiceClient {
	return acubrokerv1.NewAdminServiceClient(env.Conn)
}

func getConnection(t *testing.T, admin acubrokerv1.AdminServiceClient) *acubrokerv1.Connection {
	t.Helper()
	resp, err := admin.GetConnection(context.Background(), &acubrokerv1.GetConnectionRequest{Connection: brokertest.ConnectionName})
	if err != nil {
		t.Fatalf("GetConnection: %v", err)
	}
	return resp.GetConnection()
}

// badRequestField returns the field of the first BadRequest violation of a
// status error.
func badRequestField(err error) string {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

func wantStatus(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("code = %s, want %s (err %v)", got, code, err)
	}
	if got := errorReason(err); got != reason {
		t.Errorf("reason = %q, want %q", got, reason)
	}
}

func TestConnectionFigures(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 3})
	admin := adminClient(env)

	held := acquire(t, env.Client)
	defer release(t, env.Client, held.GetLease().GetLeaseId())
	pooled := acquire(t, env.Client)
	release(t, env.Client, pooled.GetLease().GetLeaseId())

	resp, err := admin.ListConnections(context.Background(), &acubrokerv1.ListConnectionsRequest{})
	if err != nil {
		t.Fatalf("ListConnections: %v", err)
	}
	if len(resp.GetConnections()) != 1 {
		t.Fatalf("ListConnections returned %d connections, want 1", len(resp.GetConnections()))
	}
	c := resp.GetConnections()[0]
	if c.GetName() != brokertest.ConnectionName {
		t.Errorf("name = %q, want %q", c.GetName(), brokertest.ConnectionName)
	}
	if c.GetMaxSessions() != 3 {
		t.Errorf("max_sessions = %d, want 3", c.GetMaxSessions())
	}
	seats := c.GetSeats()
	for _, f := range []struct {
		name      string
		got, want int32
	}{
		{"open", seats.GetOpen(), 2},
		{"leased", seats.GetLeased(), 1},
		{"idle", seats.GetIdle(), 1},
		{"signing_in", seats.GetSigningIn(), 0},
		{"signing_out", seats.GetSigningOut(), 0},
		{"empty", seats.GetEmpty(), 1},
	} {
		if f.got != f.want {
			t.Errorf("seats.%s = %d, want %d", f.name, f.got, f.want)
		}
	}
	if c.GetWaiters() != 0 || c.GetOldestWait() != nil {
		t.Errorf("waiters = %d, oldest_wait = %v; want 0 and unset", c.GetWaiters(), c.GetOldestWait())
	}
	if c.GetPaused() {
		t.Error("paused = true, want false")
	}
	if got := c.GetCounters().GetSignIns(); got != 2 {
		t.Errorf("counters.sign_ins = %d, want 2", got)
	}
	if c.GetCounters().GetStartTime() == nil {
		t.Error("counters.start_time is unset")
	}
	if got, want := c.GetMaxWait().AsDuration(), 10*time.Second; got != want {
		t.Errorf("max_wait = %s, want %s", got, want)
	}

	// A caller queued behind the full connection shows as a waiter.
	third := acquire(t, env.Client)
	defer release(t, env.Client, third.GetLease().GetLeaseId())
	fourth := acquire(t, env.Client)
	waiter := make(chan error, 1)
	go func() {
		resp, err := env.Client.AcquireSession(context.Background(),
			&acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
		if err == nil {
			release(t, env.Client, resp.GetLease().GetLeaseId())
		}
		waiter <- err
	}()
	waitFor(t, "the caller to queue", func() bool { return getConnection(t, admin).GetWaiters() == 1 })
	if got := getConnection(t, admin).GetOldestWait(); got == nil {
		t.Error("oldest_wait is unset while a caller waits")
	}
	release(t, env.Client, fourth.GetLease().GetLeaseId())
	if err := <-waiter; err != nil {
		t.Errorf("waiting AcquireSession: %v", err)
	}

	_, err = admin.GetConnection(context.Background(), &acubrokerv1.GetConnectionRequest{Connection: "nope"})
	wantStatus(t, err, codes.NotFound, "CONNECTION_NOT_FOUND")
	_, err = admin.GetConnection(context.Background(), &acubrokerv1.GetConnectionRequest{})
	wantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
}

func TestLoginLimitCounted(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{
		Seats: 1,
		// The broker believes it has two seats; the licence has one.
		Connection: func(c *broker.Connection) {
			c.MaxSessions = 2
			c.MaxWait = 0
		},
	})
	admin := adminClient(env)
	held := acquire(t, env.Client)
	defer release(t, env.Client, held.GetLease().GetLeaseId())

	_, err := env.Client.AcquireSession(context.Background(),
		&acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	if err == nil {
		t.Fatal("second AcquireSession succeeded beyond the licence's one seat")
	}
	counters := getConnection(t, admin).GetCounters()
	if counters.GetLoginLimitErrors() != 1 {
		t.Errorf("login_limit_errors = %d, want 1", counters.GetLoginLimitErrors())
	}
	if counters.GetSignInFailures() != 1 {
		t.Errorf("sign_in_failures = %d, want 1", counters.GetSignInFailures())
	}
	if counters.GetSignIns() != 1 {
		t.Errorf("sign_ins = %d, want 1", counters.GetSignIns())
	}
}

func TestListSessionsPages(t *testing.T) {
	t.Parallel()
	const sessions = 5
	env := brokertest.Start(t, brokertest.Options{Seats: sessions})
	admin := adminClient(env)

	want := map[string]string{} // session id -> lease id, "" when idle
	var held []*acubrokerv1.AcquireSessionResponse
	for range sessions {
		held = append(held, acquire(t, env.Client))
	}
	for i, resp := range held {
		if i < 2 {
			release(t, env.Client, resp.GetLease().GetLeaseId())
			want[resp.GetLease().GetSessionId()] = ""
			continue
		}
		want[resp.GetLease().GetSessionId()] = resp.GetLease().GetLeaseId()
		defer release(t, env.Client, resp.GetLease().GetLeaseId())
	}

	var (
		seen  []string
		token string
		pages int
	)
	for {
		resp, err := admin.ListSessions(context.Background(), &acubrokerv1.ListSessionsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatalf("ListSessions page %d: %v", pages+1, err)
		}
		pages++
		if n := len(resp.GetSessions()); n > 2 {
			t.Errorf("page %d has %d sessions, want at most 2", pages, n)
		}
		for _, s := range resp.GetSessions() {
			seen = append(seen, s.GetSessionId())
			leaseID, ok := want[s.GetSessionId()]
			if !ok {
				t.Errorf("unexpected session %s", s.GetSessionId())
				continue
			}
			if s.GetLeaseId() != leaseID {
				t.Errorf("session %s lease_id = %q, want %q", s.GetSessionId(), s.GetLeaseId(), leaseID)
			}
			wantState := acubrokerv1.SessionState_SESSION_STATE_LEASED
			if leaseID == "" {
				wantState = acubrokerv1.SessionState_SESSION_STATE_IDLE
			}
			if s.GetState() != wantState {
				t.Errorf("session %s state = %s, want %s", s.GetSessionId(), s.GetState(), wantState)
			}
			if (leaseID != "") != (s.GetLeaseExpireTime() != nil) {
				t.Errorf("session %s lease_expire_time = %v with lease %q", s.GetSessionId(), s.GetLeaseExpireTime(), leaseID)
			}
			if (leaseID != "") != (s.GetLeaseAcquireTime() != nil) {
				t.Errorf("session %s lease_acquire_time = %v with lease %q", s.GetSessionId(), s.GetLeaseAcquireTime(), leaseID)
			}
			if s.GetCreateTime() == nil || s.GetTokenExpireTime() == nil || s.GetLastUseTime() == nil {
				t.Errorf("session %s lacks create, token expire or last use time: %v", s.GetSessionId(), s)
			}
		}
		token = resp.GetNextPageToken()
		if token == "" {
			break
		}
		if pages > sessions {
			t.Fatalf("more than %d pages; the token does not advance", sessions)
		}
	}
	if pages != 3 {
		t.Errorf("pages = %d, want 3", pages)
	}
	if len(seen) != sessions {
		t.Errorf("sessions listed = %d, want %d: %v", len(seen), sessions, seen)
	}
	if !slices.IsSorted(seen) {
		t.Errorf("sessions not in id order: %v", seen)
	}
	if len(slices.Compact(slices.Clone(seen))) != len(seen) {
		t.Errorf("sessions listed twice: %v", seen)
	}

	leased, err := admin.ListSessions(context.Background(), &acubrokerv1.ListSessionsRequest{
		State: acubrokerv1.SessionState_SESSION_STATE_LEASED,
	})
	if err != nil {
		t.Fatalf("ListSessions(leased): %v", err)
	}
	if n := len(leased.GetSessions()); n != 3 {
		t.Errorf("leased sessions = %d, want 3", n)
	}
	other, err := admin.ListSessions(context.Background(), &acubrokerv1.ListSessionsRequest{Connection: "nope"})
	wantStatus(t, err, codes.NotFound, "CONNECTION_NOT_FOUND")
	if other != nil {
		t.Errorf("ListSessions of an unknown connection returned %v", other)
	}
}

func TestListSessionsRejectsBadPageToken(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 3})
	admin := adminClient(env)
	for range 3 {
		resp := acquire(t, env.Client)
		defer release(t, env.Client, resp.GetLease().GetLeaseId())
	}
	first, err := admin.ListSessions(context.Background(), &acubrokerv1.ListSessionsRequest{PageSize: 1})
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	if first.GetNextPageToken() == "" {
		t.Fatal("first page of 3 sessions has no next_page_token")
	}
	auditPage, err := admin.ListAuditEvents(context.Background(), &acubrokerv1.ListAuditEventsRequest{})
	if err != nil {
		t.Fatalf("ListAuditEvents: %v", err)
	}
	_ = auditPage

	tests := []struct {
		name      string
		req       *acubrokerv1.ListSessionsRequest
		wantField string
	}{
		{"garbage token", &acubrokerv1.ListSessionsRequest{PageToken: "not-a-token!"}, "page_token"},
		{"truncated token", &acubrokerv1.ListSessionsRequest{PageToken: first.GetNextPageToken()[:10]}, "page_token"},
		{"other state filter", &acubrokerv1.ListSessionsRequest{
			PageToken: first.GetNextPageToken(), State: acubrokerv1.SessionState_SESSION_STATE_IDLE,
		}, "page_token"},
		{"other connection filter", &acubrokerv1.ListSessionsRequest{
			PageToken: first.GetNextPageToken(), Connection: brokertest.ConnectionName,
		}, "page_token"},
		{"overlong token", &acubrokerv1.ListSessionsRequest{PageToken: strings.Repeat("A", 2000)}, "page_token"},
		{"negative page size", &acubrokerv1.ListSessionsRequest{PageSize: -1}, "page_size"},
		{"undefined state", &acubrokerv1.ListSessionsRequest{State: acubrokerv1.SessionState(42)}, "state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := admin.ListSessions(context.Background(), tt.req)
			wantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
			if got := badRequestField(err); got != tt.wantField {
				t.Errorf("BadRequest field = %q, want %q", got, tt.wantField)
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tt.wantField) {
				t.Errorf("message %q does not name %s", msg, tt.wantField)
			}
		})
	}
}

func TestGetSession(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	admin := adminClient(env)
	held := acquire(t, env.Client)
	defer release(t, env.Client, held.GetLease().GetLeaseId())

	resp, err := admin.GetSession(context.Background(), &acubrokerv1.GetSessionRequest{SessionId: held.GetLease().GetSessionId()})
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	s := resp.GetSession()
	if s.GetLeaseId() != held.GetLease().GetLeaseId() {
		t.Errorf("lease_id = %q, want %q", s.GetLeaseId(), held.GetLease().GetLeaseId())
	}
	if s.GetState() != acubrokerv1.SessionState_SESSION_STATE_LEASED {
		t.Errorf("state = %s, want LEASED", s.GetState())
	}
	if !s.GetLeaseExpireTime().AsTime().Equal(held.GetLease().GetExpireTime().AsTime()) {
		t.Errorf("lease_expire_time = %s, want %s", s.GetLeaseExpireTime().AsTime(), held.GetLease().GetExpireTime().AsTime())
	}
	if !s.GetTokenExpireTime().AsTime().Equal(held.GetCredentials().GetTokenExpireTime().AsTime()) {
		t.Errorf("token_expire_time = %s, want %s", s.GetTokenExpireTime().AsTime(), held.GetCredentials().GetTokenExpireTime().AsTime())
	}
	if !s.GetHasRefreshToken() {
		t.Error("has_refresh_token = false with offline_access")
	}
	if strings.Contains(resp.String(), held.GetCredentials().GetAccessToken()) {
		t.Error("GetSession response contains the access token")
	}

	_, err = admin.GetSession(context.Background(), &acubrokerv1.GetSessionRequest{SessionId: "7d4f1c2e-3b5a-4c6d-8e9f-0a1b2c3d4e5f"})
	wantStatus(t, err, codes.NotFound, "SESSION_NOT_FOUND")
	_, err = admin.GetSession(context.Background(), &acubrokerv1.GetSessionRequest{SessionId: "nope"})
	wantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
	if got := badRequestField(err); got != "session_id" {
		t.Errorf("BadRequest field = %q, want session_id", got)
	}
}

func TestForceSignOutRevokesLease(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	admin := adminClient(env)
	emu := env.Emulator.Emulator
	held := acquire(t, env.Client)
	if open := emu.Stats().OpenSessions; open != 1 {
		t.Fatalf("emulator open sessions = %d, want 1", open)
	}

	resp, err := admin.ForceSignOut(context.Background(), &acubrokerv1.ForceSignOutRequest{
		Target: &acubrokerv1.ForceSignOutRequest_SessionId{SessionId: held.GetLease().GetSessionId()},
		Reason: "runaway job",
	})
	if err != nil {
		t.Fatalf("ForceSignOut: %v", err)
	}
	if len(resp.GetResults()) != 1 {
		t.Fatalf("results = %v, want one", resp.GetResults())
	}
	r := resp.GetResults()[0]
	if !r.GetConfirmed() || r.GetError() != "" {
		t.Errorf("confirmed = %t, error = %q; want true and empty", r.GetConfirmed(), r.GetError())
	}
	if r.GetRevokedLeaseId() != held.GetLease().GetLeaseId() {
		t.Errorf("revoked_lease_id = %q, want %q", r.GetRevokedLeaseId(), held.GetLease().GetLeaseId())
	}
	if r.GetPreviousState() != acubrokerv1.SessionState_SESSION_STATE_LEASED {
		t.Errorf("previous_state = %s, want LEASED", r.GetPreviousState())
	}
	if open := emu.Stats().OpenSessions; open != 0 {
		t.Errorf("emulator open sessions after the forced sign-out = %d, want 0", open)
	}

	_, err = env.Client.RenewLease(context.Background(), &acubrokerv1.RenewLeaseRequest{LeaseId: held.GetLease().GetLeaseId()})
	wantStatus(t, err, codes.FailedPrecondition, "LEASE_REVOKED")
	_, err = env.Client.ReleaseSession(context.Background(), &acubrokerv1.ReleaseSessionRequest{LeaseId: held.GetLease().GetLeaseId()})
	wantStatus(t, err, codes.FailedPrecondition, "LEASE_REVOKED")
	_, err = admin.GetSession(context.Background(), &acubrokerv1.GetSessionRequest{SessionId: held.GetLease().GetSessionId()})
	wantStatus(t, err, codes.NotFound, "SESSION_NOT_FOUND")
	if got := getConnection(t, admin).GetSeats().GetEmpty(); got != 2 {
		t.Errorf("empty seats after the forced sign-out = %d, want 2", got)
	}

	events := listAudit(t, admin, &acubrokerv1.ListAuditEventsRequest{})
	if len(events) != 1 {
		t.Fatalf("audit events = %v, want one", events)
	}
	e := events[0]
	if e.GetAction() != acubrokerv1.AuditAction_AUDIT_ACTION_FORCE_SIGN_OUT ||
		e.GetOutcome() != acubrokerv1.AuditOutcome_AUDIT_OUTCOME_SUCCEEDED ||
		e.GetSessionId() != held.GetLease().GetSessionId() || e.GetConnection() != brokertest.ConnectionName {
		t.Errorf("audit event = %v, want a succeeded force sign-out of session %s", e, held.GetLease().GetSessionId())
	}
	for _, part := range []string{"runaway job", held.GetLease().GetLeaseId()} {
		if !strings.Contains(e.GetDetail(), part) {
			t.Errorf("audit detail %q lacks %q", e.GetDetail(), part)
		}
	}

	_, err = admin.ForceSignOut(context.Background(), &acubrokerv1.ForceSignOutRequest{
		Target: &acubrokerv1.ForceSignOutRequest_SessionId{SessionId: held.GetLease().GetSessionId()},
	})
	wantStatus(t, err, codes.NotFound, "SESSION_NOT_FOUND")
	_, err = admin.ForceSignOut(context.Background(), &acubrokerv1.ForceSignOutRequest{})
	wantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
}

func TestForceSignOutConnection(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 3})
	admin := adminClient(env)
	emu := env.Emulator.Emulator
	leases := []*acubrokerv1.AcquireSessionResponse{acquire(t, env.Client), acquire(t, env.Client), acquire(t, env.Client)}
	release(t, env.Client, leases[0].GetLease().GetLeaseId())
	release(t, env.Client, leases[1].GetLease().GetLeaseId())

	resp, err := admin.ForceSignOut(context.Background(), &acubrokerv1.ForceSignOutRequest{
		Target: &acubrokerv1.ForceSignOutRequest_Connection{Connection: brokertest.ConnectionName},
	})
	if err != nil {
		t.Fatalf("ForceSignOut: %v", err)
	}
	if len(resp.GetResults()) != 3 {
		t.Fatalf("results = %d, want 3: %v", len(resp.GetResults()), resp.GetResults())
	}
	revoked := 0
	for _, r := range resp.GetResults() {
		if !r.GetConfirmed() {
			t.Errorf("session %s not confirmed: %s", r.GetSessionId(), r.GetError())
		}
		if r.GetRevokedLeaseId() != "" {
			revoked++
			if r.GetRevokedLeaseId() != leases[2].GetLease().GetLeaseId() {
				t.Errorf("revoked lease %s, want %s", r.GetRevokedLeaseId(), leases[2].GetLease().GetLeaseId())
			}
		}
	}
	if revoked != 1 {
		t.Errorf("revoked leases = %d, want 1", revoked)
	}
	if open := emu.Stats().OpenSessions; open != 0 {
		t.Errorf("emulator open sessions = %d, want 0", open)
	}
	if n := len(listAudit(t, admin, &acubrokerv1.ListAuditEventsRequest{})); n != 3 {
		t.Errorf("audit events = %d, want one per session (3)", n)
	}

	// The connection still works: the next caller signs in anew.
	next := acquire(t, env.Client)
	release(t, env.Client, next.GetLease().GetLeaseId())
}

func TestForceSignOutUnconfirmed(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	admin := adminClient(env)
	emu := env.Emulator.Emulator
	held := acquire(t, env.Client)
	sessionID := held.GetLease().GetSessionId()

	emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointLogout, Status: 503, Count: 1})
	resp, err := admin.ForceSignOut(context.Background(), &acubrokerv1.ForceSignOutRequest{
		Target: &acubrokerv1.ForceSignOutRequest_SessionId{SessionId: sessionID},
	})
	if err != nil {
		t.Fatalf("ForceSignOut: %v", err)
	}
	r := resp.GetResults()[0]
	if r.GetConfirmed() {
		t.Fatal("confirmed = true although Acumatica answered 503")
	}
	if !strings.Contains(r.GetError(), "ERP_UNAVAILABLE") {
		t.Errorf("error = %q, want it to name ERP_UNAVAILABLE", r.GetError())
	}
	events := listAudit(t, admin, &acubrokerv1.ListAuditEventsRequest{})
	if len(events) != 1 || events[0].GetOutcome() != acubrokerv1.AuditOutcome_AUDIT_OUTCOME_FAILED ||
		events[0].GetAction() != acubrokerv1.AuditAction_AUDIT_ACTION_FORCE_SIGN_OUT {
		t.Errorf("audit events = %v, want one failed force sign-out", events)
	}
	_, err = env.Client.RenewLease(context.Background(), &acubrokerv1.RenewLeaseRequest{LeaseId: held.GetLease().GetLeaseId()})
	wantStatus(t, err, codes.FailedPrecondition, "LEASE_REVOKED")

	// The maintenance loop retries after the backoff and frees the seat.
	waitFor(t, "the retried sign-out", func() bool { return getConnection(t, admin).GetSeats().GetEmpty() == 1 })
	if open := emu.Stats().OpenSessions; open != 0 {
		t.Errorf("emulator open sessions after the retry = %d, want 0", open)
	}
}

func TestFailedSignOutAudited(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	admin := adminClient(env)
	held := acquire(t, env.Client)

	env.Emulator.Emulator.InjectFault(emulator.Fault{Endpoint: emulator.EndpointLogout, Status: 503, Count: 1})
	resp, err := env.Client.SignOut(context.Background(), &acubrokerv1.SignOutRequest{LeaseId: held.GetLease().GetLeaseId()})
	if err != nil {
		t.Fatalf("SignOut: %v", err)
	}
	if resp.GetConfirmed() {
		t.Fatal("SignOut confirmed although Acumatica answered 503")
	}
	events := listAudit(t, admin, &acubrokerv1.ListAuditEventsRequest{
		Action: acubrokerv1.AuditAction_AUDIT_ACTION_SIGN_OUT_FAILED,
	})
	if len(events) != 1 {
		t.Fatalf("sign-out failure events = %v, want one", events)
	}
	e := events[0]
	if e.GetSessionId() != held.GetLease().GetSessionId() || e.GetOutcome() != acubrokerv1.AuditOutcome_AUDIT_OUTCOME_FAILED {
		t.Errorf("event = %v, want a failed sign-out of session %s", e, held.GetLease().GetSessionId())
	}
	if !strings.Contains(e.GetDetail(), "ERP_UNAVAILABLE") {
		t.Errorf("detail = %q, want it to name ERP_UNAVAILABLE", e.GetDetail())
	}
}

func TestPauseAndResume(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	admin := adminClient(env)
	ctx := context.Background()

	held := acquire(t, env.Client)
	waiter := make(chan *acubrokerv1.AcquireSessionResponse, 1)
	go func() {
		resp, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
		if err != nil {
			t.Errorf("waiting AcquireSession: %v", err)
		}
		waiter <- resp
	}()
	waitFor(t, "the caller to queue", func() bool { return getConnection(t, admin).GetWaiters() == 1 })

	paused, err := admin.PauseConnection(ctx, &acubrokerv1.PauseConnectionRequest{
		Connection: brokertest.ConnectionName, Reason: "ERP upgrade",
	})
	if err != nil {
		t.Fatalf("PauseConnection: %v", err)
	}
	c := paused.GetConnection()
	if !c.GetPaused() || c.GetPauseReason() != "ERP upgrade" || c.GetPauseTime() == nil {
		t.Errorf("paused connection: paused %t, reason %q, time %v; want true, %q, set",
			c.GetPaused(), c.GetPauseReason(), c.GetPauseTime(), "ERP upgrade")
	}

	// New callers are refused, on every replica.
	_, err = env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	wantStatus(t, err, codes.Unavailable, "CONNECTION_PAUSED")
	if delay := retryDelay(err); delay <= 0 {
		t.Errorf("retry delay = %s, want a positive RetryInfo", delay)
	}
	_, replicaAddr := env.StartReplica(t)
	replica := acubrokerv1.NewSessionServiceClient(brokertest.Dial(t, replicaAddr))
	_, err = replica.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	wantStatus(t, err, codes.Unavailable, "CONNECTION_PAUSED")

	// The lease held continues; its release does not go to the waiter.
	if _, err := env.Client.RenewLease(ctx, &acubrokerv1.RenewLeaseRequest{LeaseId: held.GetLease().GetLeaseId()}); err != nil {
		t.Errorf("RenewLease while paused: %v", err)
	}
	release(t, env.Client, held.GetLease().GetLeaseId())
	time.Sleep(300 * time.Millisecond)
	if got := getConnection(t, admin); got.GetSeats().GetIdle() != 1 || got.GetWaiters() != 1 {
		t.Errorf("while paused: idle = %d, waiters = %d; want 1 and 1", got.GetSeats().GetIdle(), got.GetWaiters())
	}

	// A second pause changes nothing.
	again, err := admin.PauseConnection(ctx, &acubrokerv1.PauseConnectionRequest{Connection: brokertest.ConnectionName})
	if err != nil {
		t.Fatalf("second PauseConnection: %v", err)
	}
	if got := again.GetConnection().GetPauseReason(); got != "ERP upgrade" {
		t.Errorf("pause_reason after a second pause = %q, want the first pause's", got)
	}

	resumed, err := admin.ResumeConnection(ctx, &acubrokerv1.ResumeConnectionRequest{Connection: brokertest.ConnectionName})
	if err != nil {
		t.Fatalf("ResumeConnection: %v", err)
	}
	if c := resumed.GetConnection(); c.GetPaused() || c.GetPauseTime() != nil || c.GetPauseReason() != "" {
		t.Errorf("resumed connection: paused %t, time %v, reason %q; want false, unset, empty",
			c.GetPaused(), c.GetPauseTime(), c.GetPauseReason())
	}
	select {
	case resp := <-waiter:
		if resp.GetLease().GetSessionId() != held.GetLease().GetSessionId() {
			t.Errorf("waiter got session %s, want the warm %s", resp.GetLease().GetSessionId(), held.GetLease().GetSessionId())
		}
		release(t, env.Client, resp.GetLease().GetLeaseId())
	case <-time.After(5 * time.Second):
		t.Fatal("waiter got no seat within 5s of the resume")
	}

	actions := []acubrokerv1.AuditAction{}
	for _, e := range listAudit(t, admin, &acubrokerv1.ListAuditEventsRequest{}) {
		actions = append(actions, e.GetAction())
	}
	wantActions := []acubrokerv1.AuditAction{
		acubrokerv1.AuditAction_AUDIT_ACTION_RESUME_CONNECTION,
		acubrokerv1.AuditAction_AUDIT_ACTION_PAUSE_CONNECTION,
		acubrokerv1.AuditAction_AUDIT_ACTION_PAUSE_CONNECTION,
	}
	if !slices.Equal(actions, wantActions) {
		t.Errorf("audit actions = %v, want %v", actions, wantActions)
	}

	_, err = admin.PauseConnection(ctx, &acubrokerv1.PauseConnectionRequest{Connection: "nope"})
	wantStatus(t, err, codes.NotFound, "CONNECTION_NOT_FOUND")
	failed := listAudit(t, admin, &acubrokerv1.ListAuditEventsRequest{Connection: "nope"})
	if len(failed) != 1 || failed[0].GetOutcome() != acubrokerv1.AuditOutcome_AUDIT_OUTCOME_FAILED {
		t.Errorf("audit events of the unknown connection = %v, want one failed pause", failed)
	}
	_, err = admin.PauseConnection(ctx, &acubrokerv1.PauseConnectionRequest{
		Connection: brokertest.ConnectionName, Reason: strings.Repeat("x", 300),
	})
	wantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
	if n := len(listAudit(t, admin, &acubrokerv1.ListAuditEventsRequest{})); n != 4 {
		t.Errorf("audit events = %d, want 4: an invalid request is not recorded", n)
	}
}

func TestDrainWaitsThenRevokes(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 3})
	admin := adminClient(env)
	emu := env.Emulator.Emulator
	ctx := context.Background()

	late := acquire(t, env.Client)  // released inside the wait
	never := acquire(t, env.Client) // held past the wait
	pooled := acquire(t, env.Client)
	release(t, env.Client, pooled.GetLease().GetLeaseId())

	released := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, err := env.Client.ReleaseSession(ctx, &acubrokerv1.ReleaseSessionRequest{LeaseId: late.GetLease().GetLeaseId()})
		released <- err
	}()
	const wait = 2 * time.Second
	resp, err := admin.DrainConnection(ctx, &acubrokerv1.DrainConnectionRequest{
		Connection: brokertest.ConnectionName, WaitTimeout: durationpb.New(wait), Reason: "licence change",
	})
	if err != nil {
		t.Fatalf("DrainConnection: %v", err)
	}
	if err := <-released; err != nil {
		t.Errorf("late ReleaseSession during the drain: %v", err)
	}
	if resp.GetLeasesAtStart() != 2 {
		t.Errorf("leases_at_start = %d, want 2", resp.GetLeasesAtStart())
	}
	if !resp.GetWaitTimeoutReached() {
		t.Error("wait_timeout_reached = false, want true")
	}
	if got := resp.GetWaited().AsDuration(); got < wait {
		t.Errorf("waited = %s, want at least %s", got, wait)
	}
	if resp.GetSessionsClosed() != 3 || resp.GetSessionsPending() != 0 {
		t.Errorf("sessions closed = %d, pending = %d; want 3 and 0", resp.GetSessionsClosed(), resp.GetSessionsPending())
	}
	byLease := map[string]*acubrokerv1.SignOutResult{}
	for _, r := range resp.GetSignOuts() {
		byLease[r.GetRevokedLeaseId()] = r
	}
	if r := byLease[never.GetLease().GetLeaseId()]; r == nil || r.GetSessionId() != never.GetLease().GetSessionId() {
		t.Errorf("sign-outs = %v, want the held lease %s revoked", resp.GetSignOuts(), never.GetLease().GetLeaseId())
	}
	if r := byLease[late.GetLease().GetLeaseId()]; r != nil {
		t.Errorf("the lease released inside the wait was revoked: %v", r)
	}
	if !resp.GetConnection().GetPaused() {
		t.Error("connection not paused after the drain")
	}
	if open := emu.Stats().OpenSessions; open != 0 {
		t.Errorf("emulator open sessions after the drain = %d, want 0", open)
	}

	_, err = env.Client.RenewLease(ctx, &acubrokerv1.RenewLeaseRequest{LeaseId: never.GetLease().GetLeaseId()})
	wantStatus(t, err, codes.FailedPrecondition, "LEASE_REVOKED")
	_, err = env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	wantStatus(t, err, codes.Unavailable, "CONNECTION_PAUSED")

	drains := listAudit(t, admin, &acubrokerv1.ListAuditEventsRequest{
		Action: acubrokerv1.AuditAction_AUDIT_ACTION_DRAIN_CONNECTION,
	})
	if len(drains) != 1 || !strings.Contains(drains[0].GetDetail(), "licence change") {
		t.Errorf("drain audit events = %v, want one with the reason", drains)
	}
}

func TestDrainEndsWhenHoldersRelease(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	admin := adminClient(env)
	ctx := context.Background()
	held := acquire(t, env.Client)

	go func() {
		time.Sleep(200 * time.Millisecond)
		release(t, env.Client, held.GetLease().GetLeaseId())
	}()
	start := time.Now()
	resp, err := admin.DrainConnection(ctx, &acubrokerv1.DrainConnectionRequest{
		Connection: brokertest.ConnectionName, WaitTimeout: durationpb.New(20 * time.Second),
	})
	if err != nil {
		t.Fatalf("DrainConnection: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("drain took %s although the holder released after 200ms", took)
	}
	if resp.GetWaitTimeoutReached() {
		t.Error("wait_timeout_reached = true, want false")
	}
	if len(resp.GetSignOuts()) != 1 || resp.GetSignOuts()[0].GetRevokedLeaseId() != "" || resp.GetSessionsClosed() != 1 {
		t.Errorf("sign-outs = %v, want the released session closed without a revoked lease", resp.GetSignOuts())
	}

	_, err = admin.DrainConnection(ctx, &acubrokerv1.DrainConnectionRequest{
		Connection: brokertest.ConnectionName, WaitTimeout: durationpb.New(2 * time.Hour),
	})
	wantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
	if got := badRequestField(err); got != "wait_timeout" {
		t.Errorf("BadRequest field = %q, want wait_timeout", got)
	}
}

func TestListAuditEventsPages(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	admin := adminClient(env)
	ctx := context.Background()
	for range 3 {
		if _, err := admin.PauseConnection(ctx, &acubrokerv1.PauseConnectionRequest{Connection: brokertest.ConnectionName}); err != nil {
			t.Fatalf("PauseConnection: %v", err)
		}
		if _, err := admin.ResumeConnection(ctx, &acubrokerv1.ResumeConnectionRequest{Connection: brokertest.ConnectionName}); err != nil {
			t.Fatalf("ResumeConnection: %v", err)
		}
	}

	var (
		ids   []int64
		token string
		pages int
	)
	for {
		resp, err := admin.ListAuditEvents(ctx, &acubrokerv1.ListAuditEventsRequest{PageSize: 4, PageToken: token})
		if err != nil {
			t.Fatalf("ListAuditEvents page %d: %v", pages+1, err)
		}
		pages++
		for _, e := range resp.GetEvents() {
			ids = append(ids, e.GetId())
			if e.GetTime() == nil || e.GetOutcome() != acubrokerv1.AuditOutcome_AUDIT_OUTCOME_SUCCEEDED {
				t.Errorf("event %d: time %v, outcome %s; want set and SUCCEEDED", e.GetId(), e.GetTime(), e.GetOutcome())
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
		if pages > 6 {
			t.Fatal("more than 6 pages; the token does not advance")
		}
	}
	if pages != 2 || len(ids) != 6 {
		t.Errorf("pages = %d, events = %d; want 2 and 6", pages, len(ids))
	}
	if !slices.IsSortedFunc(ids, func(a, b int64) int { return int(b - a) }) || len(slices.Compact(slices.Clone(ids))) != len(ids) {
		t.Errorf("event ids = %v, want strictly decreasing", ids)
	}

	first, err := admin.ListAuditEvents(ctx, &acubrokerv1.ListAuditEventsRequest{
		PageSize: 1, Action: acubrokerv1.AuditAction_AUDIT_ACTION_PAUSE_CONNECTION,
	})
	if err != nil {
		t.Fatalf("ListAuditEvents(pause): %v", err)
	}
	if e := first.GetEvents(); len(e) != 1 || e[0].GetAction() != acubrokerv1.AuditAction_AUDIT_ACTION_PAUSE_CONNECTION {
		t.Errorf("filtered page = %v, want one pause event", e)
	}
	_, err = admin.ListAuditEvents(ctx, &acubrokerv1.ListAuditEventsRequest{PageToken: first.GetNextPageToken()})
	wantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
	if got := badRequestField(err); got != "page_token" {
		t.Errorf("BadRequest field = %q, want page_token", got)
	}
	sessionsPage, err := admin.ListSessions(ctx, &acubrokerv1.ListSessionsRequest{PageToken: first.GetNextPageToken()})
	wantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
	if sessionsPage != nil {
		t.Errorf("ListSessions with an audit token returned %v", sessionsPage)
	}
}

// listAudit returns the first page (up to 500) of audit events.
func listAudit(t *testing.T, admin acubrokerv1.AdminServiceClient, req *acubrokerv1.ListAuditEventsRequest) []*acubrokerv1.AuditEvent {
	t.Helper()
	req.PageSize = 500
	resp, err := admin.ListAuditEvents(context.Background(), req)
	if err != nil {
		t.Fatalf("ListAuditEvents: %v", err)
	}
	return resp.GetEvents()
}

func TestDrainWaitsForSignInInFlight(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	admin := adminClient(env)
	emu := env.Emulator.Emulator
	ctx := context.Background()

	emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointToken, Latency: time.Second, Count: 1})
	acquired := make(chan *acubrokerv1.AcquireSessionResponse, 1)
	go func() {
		resp, err := env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
		if err != nil {
			t.Errorf("AcquireSession during the drain: %v", err)
		}
		acquired <- resp
	}()
	waitFor(t, "the sign-in to start", func() bool { return getConnection(t, admin).GetSeats().GetSigningIn() == 1 })

	resp, err := admin.DrainConnection(ctx, &acubrokerv1.DrainConnectionRequest{
		Connection: brokertest.ConnectionName, WaitTimeout: durationpb.New(0),
	})
	if err != nil {
		t.Fatalf("DrainConnection: %v", err)
	}
	lease := (<-acquired).GetLease()
	if len(resp.GetSignOuts()) != 1 {
		t.Fatalf("sign-outs = %v, want the session of the sign-in in flight", resp.GetSignOuts())
	}
	r := resp.GetSignOuts()[0]
	if r.GetSessionId() != lease.GetSessionId() || r.GetRevokedLeaseId() != lease.GetLeaseId() || !r.GetConfirmed() {
		t.Errorf("sign-out = %v, want session %s with lease %s revoked and confirmed", r, lease.GetSessionId(), lease.GetLeaseId())
	}
	if open := emu.Stats().OpenSessions; open != 0 {
		t.Errorf("emulator open sessions after the drain = %d, want 0", open)
	}
	_, err = env.Client.RenewLease(ctx, &acubrokerv1.RenewLeaseRequest{LeaseId: lease.GetLeaseId()})
	wantStatus(t, err, codes.FailedPrecondition, "LEASE_REVOKED")
}
