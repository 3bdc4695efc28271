package server

import (
	"context"
	"log/slog"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/acubroker/acubroker/broker"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// sessionService implements acubroker.v1.SessionService over a broker.
type sessionService struct {
	acubrokerv1.UnimplementedSessionServiceServer
	broker *broker.Broker
	logger *slog.Logger
}

func (s *sessionService) AcquireSession(ctx context.Context, req *acubrokerv1.AcquireSessionRequest) (*acubrokerv1.AcquireSessionResponse, error) {
	grant, err := s.broker.Acquire(ctx, broker.AcquireParams{
		Connection: req.GetConnection(),
		LeaseTTL:   req.GetLeaseTtl().AsDuration(),
		RequestID:  req.GetRequestId(),
		Holder:     callerIdentity(ctx),
	})
	if err != nil {
		return nil, statusError(ctx, s.logger, "AcquireSession", err)
	}
	return &acubrokerv1.AcquireSessionResponse{
		Lease:       leaseProto(grant.Lease),
		Credentials: credentialsProto(grant.Credentials),
	}, nil
}

func (s *sessionService) RenewLease(ctx context.Context, req *acubrokerv1.RenewLeaseRequest) (*acubrokerv1.RenewLeaseResponse, error) {
	grant, err := s.broker.Renew(ctx, broker.RenewParams{
		LeaseID:  req.GetLeaseId(),
		LeaseTTL: req.GetLeaseTtl().AsDuration(),
		Holder:   callerIdentity(ctx),
	})
	if err != nil {
		return nil, statusError(ctx, s.logger, "RenewLease", err)
	}
	return &acubrokerv1.RenewLeaseResponse{
		Lease:                leaseProto(grant.Lease),
		Credentials:          credentialsProto(grant.Credentials),
		CredentialsRefreshed: grant.Refreshed,
	}, nil
}

func (s *sessionService) ReleaseSession(ctx context.Context, req *acubrokerv1.ReleaseSessionRequest) (*acubrokerv1.ReleaseSessionResponse, error) {
	kept, err := s.broker.Release(ctx, broker.ReleaseParams{
		LeaseID:       req.GetLeaseId(),
		TokenRejected: req.GetReason() == acubrokerv1.ReleaseReason_RELEASE_REASON_TOKEN_REJECTED,
		Holder:        callerIdentity(ctx),
	})
	if err != nil {
		return nil, statusError(ctx, s.logger, "ReleaseSession", err)
	}
	return &acubrokerv1.ReleaseSessionResponse{SessionKept: kept}, nil
}

func (s *sessionService) SignOut(ctx context.Context, req *acubrokerv1.SignOutRequest) (*acubrokerv1.SignOutResponse, error) {
	confirmed, err := s.broker.SignOut(ctx, broker.SignOutParams{LeaseID: req.GetLeaseId(), Holder: callerIdentity(ctx)})
	if err != nil {
		return nil, statusError(ctx, s.logger, "SignOut", err)
	}
	return &acubrokerv1.SignOutResponse{Confirmed: confirmed}, nil
}

// callerIdentity names the caller that leases are scoped to: the caller
// that the authentication interceptor let in. Without authentication every
// caller shares the empty identity.
func callerIdentity(ctx context.Context) string {
	name, _ := CallerFromContext(ctx)
	return name
}

func leaseProto(l broker.Lease) *acubrokerv1.Lease {
	return &acubrokerv1.Lease{
		LeaseId:    l.ID,
		SessionId:  l.SessionID,
		Connection: l.Connection,
		ExpireTime: timestamppb.New(l.ExpireAt),
	}
}

func credentialsProto(c broker.Credentials) *acubrokerv1.Credentials {
	cookies := make([]*acubrokerv1.Cookie, 0, len(c.Cookies))
	for _, ck := range c.Cookies {
		cookies = append(cookies, &acubrokerv1.Cookie{Name: ck.Name, Value: ck.Value})
	}
	return &acubrokerv1.Credentials{
		AccessToken:     c.AccessToken,
		TokenType:       c.TokenType,
		TokenExpireTime: timestamppb.New(c.ExpireAt),
		BaseUrl:         c.BaseURL,
		Cookies:         cookies,
	}
}
