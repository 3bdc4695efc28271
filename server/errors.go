package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/acubroker/acubroker/broker"
)

// errorDomain is the domain of every google.rpc.ErrorInfo the broker sends.
const errorDomain = "acubroker"

// reasonCodes maps each broker reason to its gRPC code. A reason missing here
// is a bug and is sent as INTERNAL.
var reasonCodes = map[broker.Reason]codes.Code{
	broker.ReasonInvalidArgument:    codes.InvalidArgument,
	broker.ReasonConnectionNotFound: codes.NotFound,
	broker.ReasonLeaseNotFound:      codes.NotFound,
	broker.ReasonLeaseExpired:       codes.FailedPrecondition,
	broker.ReasonLeaseReleased:      codes.FailedPrecondition,
	broker.ReasonLeaseSignedOut:     codes.FailedPrecondition,
	broker.ReasonLeaseRevoked:       codes.FailedPrecondition,
	broker.ReasonSessionNotFound:    codes.NotFound,
	broker.ReasonConnectionPaused:   codes.Unavailable,
	broker.ReasonRequestIDReused:    codes.AlreadyExists,
	broker.ReasonAcquireInProgress:  codes.Aborted,
	broker.ReasonLeaseNotOwned:      codes.PermissionDenied,
	broker.ReasonCallerQuota:        codes.ResourceExhausted,
	broker.ReasonQueueFull:          codes.ResourceExhausted,
	broker.ReasonNoSeatAvailable:    codes.ResourceExhausted,
	broker.ReasonLoginLimit:         codes.ResourceExhausted,
	broker.ReasonCredentials:        codes.FailedPrecondition,
	broker.ReasonThrottled:          codes.ResourceExhausted,
	broker.ReasonERPUnavailable:     codes.Unavailable,
	broker.ReasonERPUnexpected:      codes.Unavailable,
	broker.ReasonStoreUnavailable:   codes.Unavailable,
}

// statusError turns an error from the broker into a gRPC status error. A
// broker *Error keeps its message and gains an ErrorInfo, plus a RetryInfo
// or BadRequest where they apply. Context errors keep their codes. Anything
// else is logged here and sent as a generic INTERNAL.
func statusError(ctx context.Context, logger *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "the call was cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "the call's deadline passed before a session was ready")
	}
	var be *broker.Error
	if !errors.As(err, &be) {
		logger.ErrorContext(ctx, "unexpected error", "method", method, "err", err)
		return status.Error(codes.Internal, "internal error; the broker logged the details")
	}
	code, ok := reasonCodes[be.Reason]
	if !ok {
		logger.ErrorContext(ctx, "error reason has no gRPC code", "method", method, "reason", be.Reason, "err", err)
		code = codes.Internal
	}
	if be.Cause != nil && code == codes.Unavailable {
		logger.WarnContext(ctx, "call failed", "method", method, "reason", be.Reason, "err", be.Cause)
	}
	return withDetails(code, be)
}

func withDetails(code codes.Code, be *broker.Error) error {
	st := status.New(code, be.Message)
	details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: string(be.Reason), Domain: errorDomain, Metadata: be.Metadata}}
	if be.RetryAfter > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(be.RetryAfter)})
	}
	if be.Field != "" {
		details = append(details, &errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: be.Field, Description: be.Message}},
		})
	}
	withDetails, err := st.WithDetails(details...)
	if err != nil {
		return st.Err()
	}
	return withDetails.Err()
}
