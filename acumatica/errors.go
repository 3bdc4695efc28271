package acumatica

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Operation names used in Error.Op and accepted by Classify.
const (
	OpPasswordGrant = "password grant"
	OpRefresh       = "refresh"
	OpSignOut       = "sign-out"
	OpRevocation    = "revocation"
)

// Error kinds. Every *Error carries exactly one of them in Kind, and
// errors.Is(err, kind) reports it.
var (
	// ErrLoginLimit means Acumatica rejected a sign-in because the licence's
	// "Maximum Number of Web Services API Users" or the user's maximum number
	// of concurrent API logins is reached. A seat frees up only when a session
	// signs out, times out or its access token expires.
	ErrLoginLimit = errors.New("acumatica: API login limit reached")

	// ErrInvalidCredentials means the client ID, client secret, username or
	// password was rejected, or the account is locked or may not sign in.
	// Retrying with the same credentials does not help.
	ErrInvalidCredentials = errors.New("acumatica: invalid credentials")

	// ErrInvalidGrant means the token endpoint rejected a refresh token
	// because it was already used, expired or was revoked. The session that
	// belonged to the grant cannot be refreshed again.
	ErrInvalidGrant = errors.New("acumatica: refresh token rejected")

	// ErrThrottled means Acumatica declined the request with 429 and the
	// response did not mention a login limit.
	ErrThrottled = errors.New("acumatica: request throttled")

	// ErrUnavailable means no usable response arrived: a network error, a
	// timeout, or a 5xx response without a recognised message.
	ErrUnavailable = errors.New("acumatica: service unavailable")

	// ErrTokenRejected means Acumatica returned 401 to a sign-out: it no
	// longer accepts the access token because the token expired or was
	// revoked, or the session ended. The session cannot be signed out with
	// this token, and it may stay open until Acumatica's idle timeout.
	ErrTokenRejected = errors.New("acumatica: access token rejected at sign-out")

	// ErrUnexpected covers every other failure, such as an unexpected status
	// or a success response that is not a valid token.
	ErrUnexpected = errors.New("acumatica: unexpected response")
)

// Error describes a failed call to Acumatica. An *Error from a Client never
// contains the password, the client secret, or a token or cookie value sent
// in the request. Classify on its own removes only token-like strings.
type Error struct {
	// Op is the operation that failed: OpPasswordGrant, OpRefresh, OpSignOut
	// or OpRevocation.
	Op string
	// Kind is one of the sentinel errors ErrLoginLimit, ErrInvalidCredentials,
	// ErrInvalidGrant, ErrThrottled, ErrUnavailable and ErrUnexpected.
	Kind error
	// URL is the endpoint that was called, when the error came from a Client.
	URL string
	// StatusCode is the HTTP status of the response, or 0 when no response
	// was read.
	StatusCode int
	// RetryAfter is the delay from the Retry-After header (seconds or an
	// HTTP date), or 0 when the header is absent or invalid.
	RetryAfter time.Duration
	// OutcomeUnknown reports that the request may have reached Acumatica but
	// no usable response was read, for example after a timeout or a dropped
	// connection. After a sign-in this means a session may have been opened.
	OutcomeUnknown bool
	// Detail is a short text taken from the response (error,
	// error_description, exceptionMessage or an error page message), at most
	// 200 bytes, with known secrets and token-like strings removed.
	Detail string
	// Err is the transport error, such as a timeout, when no response was
	// read. It is nil otherwise.
	Err error
}

// Error returns a one-line description: the operation, the kind, the status,
// the detail and what to do next.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("acumatica: ")
	b.WriteString(e.Op)
	if e.URL != "" {
		fmt.Fprintf(&b, " at %s", e.URL)
	}

	b.WriteString(" failed: ")
	if e.Kind != nil {
		b.WriteString(strings.TrimPrefix(e.Kind.Error(), "acumatica: "))
	} else {
		b.WriteString("unknown error")
	}

	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.StatusCode)
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}

	if e.OutcomeUnknown {
		b.WriteString("; the request may have reached Acumatica")
		switch e.Op {
		case OpPasswordGrant:
			b.WriteString(", so a session may have been opened")
		case OpRefresh:
			b.WriteString(", so the refresh token may have been used up")
		}
	}
	if hint := e.hint(); hint != "" {
		b.WriteString("; ")
		b.WriteString(hint)
	}
	return b.String()
}

// hint returns the next step for the caller, or "" when there is none.
func (e *Error) hint() string {
	switch e.Kind {
	case ErrLoginLimit:
		return "sign out sessions that are no longer used or wait for idle sessions to time out, then retry"
	case ErrInvalidCredentials:
		return "check the client ID, client secret, username and password, and whether the user is locked out"
	case ErrInvalidGrant:
		return "sign out the old session and start a new password grant"
	case ErrTokenRejected:
		return "the session cannot be signed out with this token; count its seat until the session has timed out"
	case ErrThrottled:
		if e.RetryAfter > 0 {
			return fmt.Sprintf("retry after %s", e.RetryAfter)
		}
		return "retry later"
	case ErrUnavailable:
		if e.RetryAfter > 0 {
			return fmt.Sprintf("retry after %s", e.RetryAfter)
		}
		return "retry later"
	}
	return ""
}

// Unwrap returns Kind and, when set, the transport error, so that
// errors.Is(err, ErrLoginLimit) and errors.Is(err, context.DeadlineExceeded)
// both work.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}
