package server

import (
	"context"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/acubroker/acubroker/broker"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// Size limits of request fields, in bytes.
const (
	maxConnectionLength = 63
	maxRequestIDLength  = 128
	// maxMessageSize bounds a whole request message.
	maxMessageSize = 64 << 10
)

// validateUnary rejects malformed requests with INVALID_ARGUMENT before they
// reach the broker, naming the field, the value and the fix. Bounds that
// depend on a connection's settings (the lease TTL maximum) are the
// broker's to check.
func validateUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := validateRequest(req); err != nil {
		return nil, withDetails(codes.InvalidArgument, err)
	}
	return handler(ctx, req)
}

func validateRequest(req any) *broker.Error {
	switch r := req.(type) {
	case *acubrokerv1.AcquireSessionRequest:
		return firstError(
			validateConnection(r.GetConnection()),
			validateDuration("lease_ttl", r.GetLeaseTtl()),
			validateText("request_id", r.GetRequestId(), maxRequestIDLength),
		)
	case *acubrokerv1.RenewLeaseRequest:
		return firstError(validateLeaseID(r.GetLeaseId()), validateDuration("lease_ttl", r.GetLeaseTtl()))
	case *acubrokerv1.ReleaseSessionRequest:
		return firstError(validateLeaseID(r.GetLeaseId()), validateReason(r.GetReason()))
	case *acubrokerv1.SignOutRequest:
		return validateLeaseID(r.GetLeaseId())
	}
	return nil
}

func firstError(errs ...*broker.Error) *broker.Error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func invalid(field, format string, args ...any) *broker.Error {
	return &broker.Error{
		Reason:  broker.ReasonInvalidArgument,
		Field:   field,
		Message: fmt.Sprintf("invalid %s: ", field) + fmt.Sprintf(format, args...),
	}
}

func validateConnection(name string) *broker.Error {
	if name == "" {
		return invalid("connection", "the connection name is empty; set it to a connection configured on the broker")
	}
	return validateText("connection", name, maxConnectionLength)
}

func validateText(field, value string, maxLength int) *broker.Error {
	switch {
	case len(value) > maxLength:
		return invalid(field, "it is %d bytes long; use at most %d", len(value), maxLength)
	case !utf8.ValidString(value):
		return invalid(field, "it is not valid UTF-8")
	}
	if i := strings.IndexFunc(value, unicode.IsControl); i >= 0 {
		return invalid(field, "it contains a control character at byte %d; use printable text", i)
	}
	return nil
}

func validateLeaseID(id string) *broker.Error {
	if id == "" {
		return invalid("lease_id", "the lease id is empty; pass the lease_id that AcquireSession returned")
	}
	if len(id) > 64 {
		return invalid("lease_id", "it is %d bytes long, but lease ids are UUIDs; pass the lease_id that AcquireSession returned", len(id))
	}
	if _, err := uuid.Parse(id); err != nil {
		return invalid("lease_id", "%q is not a UUID; pass the lease_id that AcquireSession returned", id)
	}
	return nil
}

func validateDuration(field string, d *durationpb.Duration) *broker.Error {
	if d == nil {
		return nil
	}
	if err := d.CheckValid(); err != nil {
		return invalid(field, "%v", err)
	}
	if d.AsDuration() < 0 {
		return invalid(field, "%s is negative; use a positive duration, or leave it unset for the connection's default",
			d.AsDuration())
	}
	return nil
}

func validateReason(r acubrokerv1.ReleaseReason) *broker.Error {
	if _, ok := acubrokerv1.ReleaseReason_name[int32(r)]; !ok {
		return invalid("reason", "%d is not a ReleaseReason; use RELEASE_REASON_DONE or RELEASE_REASON_TOKEN_REJECTED", r)
	}
	return nil
}
