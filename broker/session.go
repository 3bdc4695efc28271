package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/acubroker/acubroker/acumatica"
)

// ERP is one connection's client for Acumatica's identity and sign-out
// endpoints. *acumatica.Client implements it.
type ERP interface {
	SiteURL() string
	PasswordGrant(ctx context.Context) (*acumatica.Token, error)
	Refresh(ctx context.Context, refreshToken string) (*acumatica.Token, error)
	SignOut(ctx context.Context, s acumatica.SessionCredentials) error
	Revoke(ctx context.Context, token, tokenTypeHint string) error
}

// SessionCredentials are the secrets of one session, stored sealed.
type SessionCredentials struct {
	AccessToken  string             `json:"access_token"`
	TokenType    string             `json:"token_type"`
	RefreshToken string             `json:"refresh_token,omitempty"`
	Cookies      []acumatica.Cookie `json:"cookies,omitempty"`
}

// LogValue keeps secrets out of logs.
func (SessionCredentials) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// String keeps secrets out of formatted output.
func (SessionCredentials) String() string { return "[redacted]" }

// Sealer encrypts session credentials at rest. The session id is bound to
// the ciphertext, so a value copied to another seat does not open.
type Sealer interface {
	Seal(sessionID string, plaintext []byte) (ciphertext []byte, keyID string, err error)
	Open(sessionID string, ciphertext []byte, keyID string) ([]byte, error)
}

// PlainSealer stores credentials unencrypted, under key id "".
type PlainSealer struct{}

// Seal returns plaintext as it is.
func (PlainSealer) Seal(_ string, plaintext []byte) ([]byte, string, error) {
	return plaintext, "", nil
}

// Open returns ciphertext as it is; it rejects values sealed under a key.
func (PlainSealer) Open(_ string, ciphertext []byte, keyID string) ([]byte, error) {
	if keyID != "" {
		return nil, fmt.Errorf("credentials sealed with key %q, but no keys are configured", keyID)
	}
	return ciphertext, nil
}

func (b *Broker) sealCredentials(sessionID string, c SessionCredentials) ([]byte, string, error) {
	plain, err := json.Marshal(c)
	if err != nil {
		return nil, "", err
	}
	return b.sealer.Seal(sessionID, plain)
}

func (b *Broker) openCredentials(seat *Seat) (SessionCredentials, error) {
	var c SessionCredentials
	plain, err := b.sealer.Open(seat.SessionID, seat.Credentials, seat.CredentialsKeyID)
	if err != nil {
		return c, fmt.Errorf("open credentials of session %s: %w", seat.SessionID, err)
	}
	if err := json.Unmarshal(plain, &c); err != nil {
		return c, fmt.Errorf("decode credentials of session %s: %w", seat.SessionID, err)
	}
	return c, nil
}

func credentialsFromToken(tok *acumatica.Token, previousRefresh string) SessionCredentials {
	refresh := tok.RefreshToken
	if refresh == "" {
		refresh = previousRefresh
	}
	tokenType := tok.TokenType
	if tokenType == "" {
		tokenType = "Bearer"
	}
	return SessionCredentials{AccessToken: tok.AccessToken, TokenType: tokenType, RefreshToken: refresh}
}

// erpError turns an error from the ERP into a broker *Error. The message
// names the connection and the operation; the cause is kept for logs.
func erpError(conn *Connection, op string, err error) *Error {
	var apiErr *acumatica.Error
	var retryAfter time.Duration
	if errors.As(err, &apiErr) {
		retryAfter = apiErr.RetryAfter
	}
	meta := map[string]string{"connection": conn.Name}
	switch {
	case errors.Is(err, acumatica.ErrLoginLimit):
		return &Error{
			Reason: ReasonLoginLimit, Cause: err, Metadata: meta, RetryAfter: orDefault(retryAfter, 30*time.Second),
			Message: fmt.Sprintf("Acumatica refused the %s for connection %q: the API login limit is reached "+
				"(sessions opened outside the broker may hold seats); retry later or lower max_sessions", op, conn.Name),
		}
	case errors.Is(err, acumatica.ErrInvalidCredentials), errors.Is(err, acumatica.ErrInvalidGrant):
		return &Error{
			Reason: ReasonCredentials, Cause: err, Metadata: meta,
			Message: fmt.Sprintf("Acumatica rejected the credentials of connection %q during the %s; "+
				"check its client id, client secret, user name and password", conn.Name, op),
		}
	case errors.Is(err, acumatica.ErrThrottled):
		return &Error{
			Reason: ReasonThrottled, Cause: err, Metadata: meta, RetryAfter: orDefault(retryAfter, time.Second),
			Message: fmt.Sprintf("Acumatica throttled the %s for connection %q; retry after the given delay", op, conn.Name),
		}
	case errors.Is(err, acumatica.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return &Error{
			Reason: ReasonERPUnavailable, Cause: err, Metadata: meta, RetryAfter: orDefault(retryAfter, time.Second),
			Message: fmt.Sprintf("Acumatica did not answer the %s for connection %q; retry shortly", op, conn.Name),
		}
	default:
		return &Error{
			Reason: ReasonERPUnexpected, Cause: err, Metadata: meta,
			Message: fmt.Sprintf("Acumatica returned an unexpected response to the %s for connection %q", op, conn.Name),
		}
	}
}

func outcomeUnknown(err error) bool {
	var apiErr *acumatica.Error
	if errors.As(err, &apiErr) {
		return apiErr.OutcomeUnknown
	}
	// An error that is not Acumatica's (a cancelled context mid-request)
	// may have left a session open.
	return true
}

func orDefault(d, fallback time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return fallback
}
