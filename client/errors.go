package client

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reasons of the broker's google.rpc.ErrorInfo details that the client acts
// on. Reason returns them, and the other reasons the broker sends, as plain
// strings.
const (
	ReasonLeaseExpired    = "LEASE_EXPIRED"
	ReasonLeaseRevoked    = "LEASE_REVOKED"
	ReasonLeaseReleased   = "LEASE_RELEASED"
	ReasonLeaseSignedOut  = "LEASE_SIGNED_OUT"
	ReasonLeaseNotFound   = "LEASE_NOT_FOUND"
	ReasonNoSeatAvailable = "NO_SEAT_AVAILABLE"
	ReasonRequestIDReused = "REQUEST_ID_REUSED"
)

var (
	// ErrTokenRejected marks an error as "Acumatica answered 401 to the
	// session's token". When the function passed to Client.Do returns an
	// error that wraps it, Do releases the lease with reason
	// RELEASE_REASON_TOKEN_REJECTED, so that the broker signs the session out
	// instead of handing it to the next caller.
	ErrTokenRejected = errors.New("client: Acumatica rejected the session's access token")

	// ErrLeaseLost matches, with errors.Is, every *LeaseLostError.
	ErrLeaseLost = errors.New("client: lease lost")

	// ErrLeaseEnded is Lease.Err after the holder released the lease or
	// signed it out.
	ErrLeaseEnded = errors.New("client: the lease was released or signed out by its holder")

	// ErrClosed is returned by calls on a closed Client, Transport or
	// TokenSource.
	ErrClosed = errors.New("client: closed")
)

// LeaseLostError reports that a lease ended without its holder releasing
// it. Either a renewal returned FAILED_PRECONDITION (LEASE_EXPIRED,
// LEASE_REVOKED, LEASE_RELEASED, LEASE_SIGNED_OUT) or NOT_FOUND, or the
// lease's expire time passed on the client's clock before a renewal
// succeeded. Its session may already belong to another caller, so its token
// must no longer be used.
type LeaseLostError struct {
	LeaseID    string
	Connection string
	// Reason is the broker's ErrorInfo reason, or LEASE_EXPIRED when the
	// client's clock passed the expire time.
	Reason string
	// ExpireTime is the last expire time the broker granted.
	ExpireTime time.Time
	// Err is the broker's status error, or the last renewal error when the
	// expire time passed first.
	Err error
	// local is true when the client's clock, not the broker, ended the lease.
	local bool
}

func (e *LeaseLostError) Error() string {
	if e.local {
		return fmt.Sprintf("lease %s on connection %q lost (%s): it expired at %s before a renewal succeeded "+
			"(last renewal error: %v); acquire a new lease",
			e.LeaseID, e.Connection, e.Reason, e.ExpireTime.UTC().Format(time.RFC3339), e.Err)
	}
	return fmt.Sprintf("lease %s on connection %q lost (%s): %s",
		e.LeaseID, e.Connection, e.Reason, status.Convert(e.Err).Message())
}

// Unwrap returns the broker's status error or the last renewal error.
func (e *LeaseLostError) Unwrap() error { return e.Err }

// Is reports whether target is ErrLeaseLost.
func (e *LeaseLostError) Is(target error) bool { return target == ErrLeaseLost }

// Reason returns the reason of the google.rpc.ErrorInfo that err carries,
// such as "NO_SEAT_AVAILABLE" or "LEASE_EXPIRED", or "" when it carries
// none. It looks through wrapped errors, and for a *LeaseLostError returns
// its Reason.
func Reason(err error) string {
	var lost *LeaseLostError
	if errors.As(err, &lost) {
		return lost.Reason
	}
	if info := errorInfo(err); info != nil {
		return info.GetReason()
	}
	return ""
}

// RetryDelay returns the delay of the google.rpc.RetryInfo that err
// carries, or 0 when it carries none.
func RetryDelay(err error) time.Duration {
	st, ok := grpcStatus(err)
	if !ok {
		return 0
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.RetryInfo); ok {
			return info.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

func errorInfo(err error) *errdetails.ErrorInfo {
	st, ok := grpcStatus(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

// grpcStatus returns the status that err or an error it wraps carries.
func grpcStatus(err error) (*status.Status, bool) {
	if err == nil {
		return nil, false
	}
	return status.FromError(err)
}

// code returns the gRPC code of err, or codes.Unknown when it carries none.
func code(err error) codes.Code {
	st, ok := grpcStatus(err)
	if !ok {
		return codes.Unknown
	}
	return st.Code()
}

// leaseGone reports whether err is the broker's response that a lease no
// longer holds its seat.
func leaseGone(err error) bool {
	switch code(err) {
	case codes.NotFound:
		return true
	case codes.FailedPrecondition:
		switch Reason(err) {
		case ReasonLeaseExpired, ReasonLeaseRevoked, ReasonLeaseReleased, ReasonLeaseSignedOut:
			return true
		}
	}
	return false
}
