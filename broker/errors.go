package broker

import (
	"errors"
	"fmt"
	"time"
)

// Reason is a stable, machine-readable error cause. Package server sends it
// as the reason of a google.rpc.ErrorInfo and picks the gRPC code from it.
type Reason string

// Reasons returned by the broker.
const (
	ReasonInvalidArgument    Reason = "INVALID_ARGUMENT"
	ReasonConnectionNotFound Reason = "CONNECTION_NOT_FOUND"
	ReasonLeaseNotFound      Reason = "LEASE_NOT_FOUND"
	ReasonLeaseExpired       Reason = "LEASE_EXPIRED"
	ReasonLeaseReleased      Reason = "LEASE_RELEASED"
	ReasonLeaseSignedOut     Reason = "LEASE_SIGNED_OUT"
	ReasonLeaseRevoked       Reason = "LEASE_REVOKED"
	ReasonSessionNotFound    Reason = "SESSION_NOT_FOUND"
	ReasonConnectionPaused   Reason = "CONNECTION_PAUSED"
	ReasonRequestIDReused    Reason = "REQUEST_ID_REUSED"
	ReasonAcquireInProgress  Reason = "ACQUIRE_IN_PROGRESS"
	ReasonLeaseNotOwned      Reason = "LEASE_NOT_OWNED"
	ReasonCallerQuota        Reason = "CALLER_QUOTA"
	ReasonQueueFull          Reason = "QUEUE_FULL"
	ReasonNoSeatAvailable    Reason = "NO_SEAT_AVAILABLE"
	ReasonLoginLimit         Reason = "ERP_LOGIN_LIMIT"
	ReasonCredentials        Reason = "ERP_CREDENTIALS_REJECTED"
	ReasonThrottled          Reason = "ERP_THROTTLED"
	ReasonERPUnavailable     Reason = "ERP_UNAVAILABLE"
	ReasonERPUnexpected      Reason = "ERP_UNEXPECTED_RESPONSE"
	ReasonStoreUnavailable   Reason = "STORE_UNAVAILABLE"
)

// Error is a failure the broker reports to its callers. Message is safe to
// show to a caller: it never contains a token, password or SQL. Cause, when
// set, is for logs only.
type Error struct {
	Reason  Reason
	Message string
	// Field names the request field at fault, for ReasonInvalidArgument.
	Field string
	// RetryAfter is how long a caller should wait before retrying; zero when
	// a retry does not help.
	RetryAfter time.Duration
	// Metadata holds ids that help a caller or an operator (lease_id,
	// connection); never a secret.
	Metadata map[string]string
	Cause    error
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// Is reports whether target is an *Error with the same reason, so that
// errors.Is(err, ErrLeaseExpired) matches any lease-expired error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason
}

// Sentinels for errors.Is. Each matches every *Error with its reason.
var (
	ErrInvalidArgument    = &Error{Reason: ReasonInvalidArgument, Message: "invalid argument"}
	ErrConnectionNotFound = &Error{Reason: ReasonConnectionNotFound, Message: "connection not found"}
	ErrLeaseNotFound      = &Error{Reason: ReasonLeaseNotFound, Message: "lease not found"}
	ErrLeaseExpired       = &Error{Reason: ReasonLeaseExpired, Message: "lease expired"}
	ErrLeaseReleased      = &Error{Reason: ReasonLeaseReleased, Message: "lease released"}
	ErrLeaseSignedOut     = &Error{Reason: ReasonLeaseSignedOut, Message: "lease signed out"}
	ErrLeaseRevoked       = &Error{Reason: ReasonLeaseRevoked, Message: "lease revoked"}
	ErrSessionNotFound    = &Error{Reason: ReasonSessionNotFound, Message: "session not found"}
	ErrConnectionPaused   = &Error{Reason: ReasonConnectionPaused, Message: "connection paused"}
	ErrRequestIDReused    = &Error{Reason: ReasonRequestIDReused, Message: "request_id reused"}
	ErrLeaseNotOwned      = &Error{Reason: ReasonLeaseNotOwned, Message: "lease belongs to another caller"}
	ErrCallerQuota        = &Error{Reason: ReasonCallerQuota, Message: "caller quota reached"}
	ErrQueueFull          = &Error{Reason: ReasonQueueFull, Message: "queue full"}
	ErrNoSeatAvailable    = &Error{Reason: ReasonNoSeatAvailable, Message: "no seat available"}
	ErrLoginLimit         = &Error{Reason: ReasonLoginLimit, Message: "Acumatica login limit reached"}
	ErrCredentials        = &Error{Reason: ReasonCredentials, Message: "Acumatica rejected the credentials"}
	ErrThrottled          = &Error{Reason: ReasonThrottled, Message: "Acumatica throttled the request"}
	ErrERPUnavailable     = &Error{Reason: ReasonERPUnavailable, Message: "Acumatica unavailable"}
	ErrERPUnexpected      = &Error{Reason: ReasonERPUnexpected, Message: "unexpected response from Acumatica"}
	ErrStoreUnavailable   = &Error{Reason: ReasonStoreUnavailable, Message: "store unavailable"}
)

// ErrNotFound is returned by a Store when the row asked for does not exist.
var ErrNotFound = errors.New("not found")

// ErrLeaseLost is returned by a Store when a lease-scoped change finds the
// lease no longer holding its seat (it expired, was reclaimed or revoked).
var ErrLeaseLost = errors.New("lease no longer holds its seat")

func invalidArgument(field, format string, args ...any) *Error {
	return &Error{
		Reason:  ReasonInvalidArgument,
		Field:   field,
		Message: fmt.Sprintf("invalid %s: ", field) + fmt.Sprintf(format, args...),
	}
}

func leaseError(reason Reason, leaseID, format string, args ...any) *Error {
	return &Error{
		Reason:   reason,
		Message:  fmt.Sprintf(format, args...),
		Metadata: map[string]string{"lease_id": leaseID},
	}
}
