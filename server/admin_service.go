package server

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/acubroker/acubroker/broker"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// maxAdminReasonLength bounds the reason field of admin requests, in bytes.
const maxAdminReasonLength = broker.MaxAdminReasonLength

// adminService implements acubroker.v1.AdminService over a broker.
type adminService struct {
	acubrokerv1.UnimplementedAdminServiceServer
	broker *broker.Broker
	logger *slog.Logger
}

func (s *adminService) ListConnections(ctx context.Context, _ *acubrokerv1.ListConnectionsRequest) (*acubrokerv1.ListConnectionsResponse, error) {
	list, err := s.broker.ListConnections(ctx)
	if err != nil {
		return nil, statusError(ctx, s.logger, "ListConnections", err)
	}
	resp := &acubrokerv1.ListConnectionsResponse{Connections: make([]*acubrokerv1.Connection, 0, len(list))}
	for i := range list {
		resp.Connections = append(resp.Connections, connectionProto(&list[i]))
	}
	return resp, nil
}

func (s *adminService) GetConnection(ctx context.Context, req *acubrokerv1.GetConnectionRequest) (*acubrokerv1.GetConnectionResponse, error) {
	if err := validateConnection(req.GetConnection()); err != nil {
		return nil, withDetails(codes.InvalidArgument, err)
	}
	c, err := s.broker.GetConnection(ctx, req.GetConnection())
	if err != nil {
		return nil, statusError(ctx, s.logger, "GetConnection", err)
	}
	return &acubrokerv1.GetConnectionResponse{Connection: connectionProto(c)}, nil
}

func (s *adminService) ListSessions(ctx context.Context, req *acubrokerv1.ListSessionsRequest) (*acubrokerv1.ListSessionsResponse, error) {
	state, verr := seatState(req.GetState())
	if verr == nil {
		verr = validateText("connection", req.GetConnection(), maxConnectionLength)
	}
	if verr != nil {
		return nil, withDetails(codes.InvalidArgument, verr)
	}
	page, err := s.broker.ListSessions(ctx, broker.ListSessionsParams{
		Connection: req.GetConnection(),
		State:      state,
		PageSize:   int(req.GetPageSize()),
		PageToken:  req.GetPageToken(),
	})
	if err != nil {
		return nil, statusError(ctx, s.logger, "ListSessions", err)
	}
	resp := &acubrokerv1.ListSessionsResponse{
		Sessions:      make([]*acubrokerv1.Session, 0, len(page.Sessions)),
		NextPageToken: page.NextPageToken,
	}
	for i := range page.Sessions {
		resp.Sessions = append(resp.Sessions, sessionProto(&page.Sessions[i]))
	}
	return resp, nil
}

func (s *adminService) GetSession(ctx context.Context, req *acubrokerv1.GetSessionRequest) (*acubrokerv1.GetSessionResponse, error) {
	info, err := s.broker.GetSession(ctx, req.GetSessionId())
	if err != nil {
		return nil, statusError(ctx, s.logger, "GetSession", err)
	}
	return &acubrokerv1.GetSessionResponse{Session: sessionProto(info)}, nil
}

func (s *adminService) ForceSignOut(ctx context.Context, req *acubrokerv1.ForceSignOutRequest) (*acubrokerv1.ForceSignOutResponse, error) {
	verr := validateText("reason", req.GetReason(), maxAdminReasonLength)
	if verr == nil && req.GetConnection() != "" {
		verr = validateConnection(req.GetConnection())
	}
	if verr != nil {
		return nil, withDetails(codes.InvalidArgument, verr)
	}
	results, err := s.broker.ForceSignOut(ctx, broker.ForceSignOutParams{
		SessionID:  req.GetSessionId(),
		Connection: req.GetConnection(),
		Actor:      callerIdentity(ctx),
		Reason:     req.GetReason(),
	})
	if err != nil {
		return nil, statusError(ctx, s.logger, "ForceSignOut", err)
	}
	return &acubrokerv1.ForceSignOutResponse{Results: signOutResultsProto(results)}, nil
}

func (s *adminService) PauseConnection(ctx context.Context, req *acubrokerv1.PauseConnectionRequest) (*acubrokerv1.PauseConnectionResponse, error) {
	if err := firstError(
		validateConnection(req.GetConnection()),
		validateText("reason", req.GetReason(), maxAdminReasonLength),
	); err != nil {
		return nil, withDetails(codes.InvalidArgument, err)
	}
	c, err := s.broker.PauseConnection(ctx, broker.PauseParams{
		Connection: req.GetConnection(),
		Actor:      callerIdentity(ctx),
		Reason:     req.GetReason(),
	})
	if err != nil {
		return nil, statusError(ctx, s.logger, "PauseConnection", err)
	}
	return &acubrokerv1.PauseConnectionResponse{Connection: connectionProto(c)}, nil
}

func (s *adminService) ResumeConnection(ctx context.Context, req *acubrokerv1.ResumeConnectionRequest) (*acubrokerv1.ResumeConnectionResponse, error) {
	if err := validateConnection(req.GetConnection()); err != nil {
		return nil, withDetails(codes.InvalidArgument, err)
	}
	c, err := s.broker.ResumeConnection(ctx, broker.ResumeParams{
		Connection: req.GetConnection(),
		Actor:      callerIdentity(ctx),
	})
	if err != nil {
		return nil, statusError(ctx, s.logger, "ResumeConnection", err)
	}
	return &acubrokerv1.ResumeConnectionResponse{Connection: connectionProto(c)}, nil
}

func (s *adminService) DrainConnection(ctx context.Context, req *acubrokerv1.DrainConnectionRequest) (*acubrokerv1.DrainConnectionResponse, error) {
	if err := firstError(
		validateConnection(req.GetConnection()),
		validateDuration("wait_timeout", req.GetWaitTimeout()),
		validateText("reason", req.GetReason(), maxAdminReasonLength),
	); err != nil {
		return nil, withDetails(codes.InvalidArgument, err)
	}
	wait := broker.DefaultDrainWait
	if req.GetWaitTimeout() != nil {
		wait = req.GetWaitTimeout().AsDuration()
	}
	res, err := s.broker.DrainConnection(ctx, broker.DrainParams{
		Connection:  req.GetConnection(),
		WaitTimeout: wait,
		Actor:       callerIdentity(ctx),
		Reason:      req.GetReason(),
	})
	if err != nil {
		return nil, statusError(ctx, s.logger, "DrainConnection", err)
	}
	resp := &acubrokerv1.DrainConnectionResponse{
		Connection:         connectionProto(&res.Connection),
		LeasesAtStart:      int32(res.LeasesAtStart),
		WaitTimeoutReached: res.WaitTimeoutReached,
		Waited:             durationpb.New(res.Waited),
		SignOuts:           signOutResultsProto(res.SignOuts),
	}
	for _, r := range res.SignOuts {
		if r.Confirmed {
			resp.SessionsClosed++
		} else {
			resp.SessionsPending++
		}
	}
	return resp, nil
}

func (s *adminService) ListAuditEvents(ctx context.Context, req *acubrokerv1.ListAuditEventsRequest) (*acubrokerv1.ListAuditEventsResponse, error) {
	action, verr := auditAction(req.GetAction())
	if verr == nil {
		verr = validateText("connection", req.GetConnection(), maxConnectionLength)
	}
	if verr != nil {
		return nil, withDetails(codes.InvalidArgument, verr)
	}
	page, err := s.broker.ListAuditEvents(ctx, broker.ListAuditEventsParams{
		Connection: req.GetConnection(),
		Action:     action,
		PageSize:   int(req.GetPageSize()),
		PageToken:  req.GetPageToken(),
	})
	if err != nil {
		return nil, statusError(ctx, s.logger, "ListAuditEvents", err)
	}
	resp := &acubrokerv1.ListAuditEventsResponse{
		Events:        make([]*acubrokerv1.AuditEvent, 0, len(page.Events)),
		NextPageToken: page.NextPageToken,
	}
	for i := range page.Events {
		resp.Events = append(resp.Events, auditEventProto(&page.Events[i]))
	}
	return resp, nil
}

var sessionStates = map[acubrokerv1.SessionState]broker.SeatState{
	acubrokerv1.SessionState_SESSION_STATE_UNSPECIFIED: "",
	acubrokerv1.SessionState_SESSION_STATE_IDLE:        broker.SeatIdle,
	acubrokerv1.SessionState_SESSION_STATE_LEASED:      broker.SeatLeased,
	acubrokerv1.SessionState_SESSION_STATE_SIGNING_OUT: broker.SeatSigningOut,
}

func seatState(s acubrokerv1.SessionState) (broker.SeatState, *broker.Error) {
	state, ok := sessionStates[s]
	if !ok {
		return "", invalid("state", "%d is not a SessionState; use SESSION_STATE_IDLE, SESSION_STATE_LEASED "+
			"or SESSION_STATE_SIGNING_OUT, or leave it unset for every state", s)
	}
	return state, nil
}

func sessionStateProto(state broker.SeatState) acubrokerv1.SessionState {
	for s, seat := range sessionStates {
		if seat == state && seat != "" {
			return s
		}
	}
	return acubrokerv1.SessionState_SESSION_STATE_UNSPECIFIED
}

var auditActions = map[acubrokerv1.AuditAction]broker.AuditAction{
	acubrokerv1.AuditAction_AUDIT_ACTION_UNSPECIFIED:       "",
	acubrokerv1.AuditAction_AUDIT_ACTION_PAUSE_CONNECTION:  broker.AuditPauseConnection,
	acubrokerv1.AuditAction_AUDIT_ACTION_RESUME_CONNECTION: broker.AuditResumeConnection,
	acubrokerv1.AuditAction_AUDIT_ACTION_DRAIN_CONNECTION:  broker.AuditDrainConnection,
	acubrokerv1.AuditAction_AUDIT_ACTION_FORCE_SIGN_OUT:    broker.AuditForceSignOut,
	acubrokerv1.AuditAction_AUDIT_ACTION_SIGN_OUT_FAILED:   broker.AuditSignOutFailed,
}

func auditAction(a acubrokerv1.AuditAction) (broker.AuditAction, *broker.Error) {
	action, ok := auditActions[a]
	if !ok {
		return "", invalid("action", "%d is not an AuditAction; leave it unset for every action", a)
	}
	return action, nil
}

func auditActionProto(action broker.AuditAction) acubrokerv1.AuditAction {
	for a, name := range auditActions {
		if name == action && name != "" {
			return a
		}
	}
	return acubrokerv1.AuditAction_AUDIT_ACTION_UNSPECIFIED
}

func connectionProto(c *broker.ConnectionStatus) *acubrokerv1.Connection {
	pb := &acubrokerv1.Connection{
		Name:            c.Name,
		MaxSessions:     int32(c.MaxSessions),
		DefaultLeaseTtl: durationpb.New(c.DefaultLeaseTTL),
		MaxLeaseTtl:     durationpb.New(c.MaxLeaseTTL),
		MaxWait:         durationpb.New(c.MaxWait),
		Seats: &acubrokerv1.SeatCounts{
			Open:       int32(c.Leased + c.Idle),
			Leased:     int32(c.Leased),
			Idle:       int32(c.Idle),
			SigningIn:  int32(c.SigningIn),
			SigningOut: int32(c.SigningOut),
			Empty:      int32(c.Empty),
		},
		Waiters:     int32(c.Waiters),
		Paused:      c.Paused,
		PauseTime:   timestampOrNil(c.PausedAt),
		PausedBy:    c.PausedBy,
		PauseReason: c.PauseReason,
		Counters: &acubrokerv1.ConnectionCounters{
			StartTime:        timestampOrNil(c.Counters.Since),
			SignIns:          c.Counters.SignIns,
			SignInFailures:   c.Counters.SignInFailures,
			Refreshes:        c.Counters.Refreshes,
			RefreshFailures:  c.Counters.RefreshFailures,
			SignOuts:         c.Counters.SignOuts,
			SignOutFailures:  c.Counters.SignOutFailures,
			LoginLimitErrors: c.Counters.LoginLimitErrors,
		},
	}
	if c.Waiters > 0 {
		pb.OldestWait = durationpb.New(c.OldestWait)
	}
	return pb
}

func sessionProto(s *broker.SessionInfo) *acubrokerv1.Session {
	return &acubrokerv1.Session{
		SessionId:        s.SessionID,
		Connection:       s.Connection,
		Slot:             int32(s.Slot),
		State:            sessionStateProto(s.State),
		Holder:           s.Holder,
		LeaseId:          s.LeaseID,
		LeaseAcquireTime: timestampOrNil(s.LeaseAcquiredAt),
		LeaseExpireTime:  timestampOrNil(s.LeaseExpireAt),
		CreateTime:       timestampOrNil(s.OpenedAt),
		LastUseTime:      timestampOrNil(s.LastUsedAt),
		TokenExpireTime:  timestampOrNil(s.TokenExpireAt),
		HasRefreshToken:  s.HasRefreshToken,
		SignOutReason:    s.SignOutReason,
		SignOutAttempts:  int32(s.SignOutAttempts),
	}
}

func signOutResultsProto(results []broker.SignOutResult) []*acubrokerv1.SignOutResult {
	out := make([]*acubrokerv1.SignOutResult, 0, len(results))
	for _, r := range results {
		out = append(out, &acubrokerv1.SignOutResult{
			SessionId:      r.SessionID,
			Connection:     r.Connection,
			PreviousState:  sessionStateProto(r.PreviousState),
			RevokedLeaseId: r.RevokedLeaseID,
			Holder:         r.Holder,
			Confirmed:      r.Confirmed,
			Error:          r.Error,
		})
	}
	return out
}

func auditEventProto(e *broker.AuditEvent) *acubrokerv1.AuditEvent {
	outcome := acubrokerv1.AuditOutcome_AUDIT_OUTCOME_UNSPECIFIED
	switch e.Outcome {
	case broker.AuditSucceeded:
		outcome = acubrokerv1.AuditOutcome_AUDIT_OUTCOME_SUCCEEDED
	case broker.AuditFailed:
		outcome = acubrokerv1.AuditOutcome_AUDIT_OUTCOME_FAILED
	}
	return &acubrokerv1.AuditEvent{
		Id:         e.ID,
		Time:       timestampOrNil(e.Time),
		Actor:      e.Actor,
		Action:     auditActionProto(e.Action),
		Connection: e.Connection,
		SessionId:  e.SessionID,
		Outcome:    outcome,
		Detail:     e.Detail,
	}
}

// timestampOrNil leaves a zero time unset instead of sending 0001-01-01.
func timestampOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
