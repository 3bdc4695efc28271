package acumatica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/oauth2"
)

// The grants go through golang.org/x/oauth2 (checked against v0.38.0), which
// falls short for Acumatica in four places that this package makes up for:
//   - It computes Expiry with time.Now after the response arrives, so
//     newToken recomputes it from ExpiresIn and Config.Now.
//   - It copies the old refresh token into a refresh response that has none
//     (see the NOTE in Refresh).
//   - It reports a failed body read, or a 2xx response that is not a token,
//     as a plain error without the status. The exchange recorded by
//     recordingTransport supplies the status and the connection state.
//   - RetrieveError.Error includes the raw response body, so that text is
//     never shown. Classify builds the message instead.
//
// oauth2 does not retry when the auth style is fixed to AuthStyleInParams,
// and each Refresh builds a new TokenSource, so no token is cached between
// calls and none hides a rotated refresh token.

// Token is the result of a password grant or a refresh. AccessToken and
// RefreshToken are secrets: String, GoString and LogValue leave them out.
type Token struct {
	// AccessToken is the bearer token for API calls and for SignOut.
	AccessToken string
	// TokenType is the token type, "Bearer" when the response omits it.
	TokenType string
	// RefreshToken is the token for the next Refresh. It is empty when the
	// server issued none, for example when offline_access was not requested
	// or the connected application is set to issue no refresh tokens.
	RefreshToken string
	// Scope is the granted scope, empty when the response omits it.
	Scope string
	// Expiry is when the access token expires: the time the request was sent
	// plus expires_in, or plus Config.TokenLifetime when expires_in is
	// missing.
	Expiry time.Time
}

// String describes the token without its secrets.
func (t Token) String() string {
	return fmt.Sprintf("acumatica.Token{TokenType: %q, Scope: %q, Expiry: %s, AccessToken: %s, RefreshToken: %s}",
		t.TokenType, t.Scope, t.Expiry.Format(time.RFC3339), redactedMark(t.AccessToken), redactedMark(t.RefreshToken))
}

// GoString is String, so that %#v cannot leak the tokens either.
func (t Token) GoString() string { return t.String() }

// LogValue logs the token without its secrets.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("token_type", t.TokenType),
		slog.String("scope", t.Scope),
		slog.Time("expiry", t.Expiry),
		slog.Bool("has_refresh_token", t.RefreshToken != ""),
	)
}

// PasswordGrant signs in with the resource owner password credentials grant
// and returns the new token. Each successful call opens an Acumatica
// session, which takes an API seat until it is signed out, times out or its
// grant expires.
//
// PasswordGrant sends the request once and never retries. When the returned
// *Error has OutcomeUnknown set, a session may have been opened without the
// caller receiving its token.
func (c *Client) PasswordGrant(ctx context.Context) (*Token, error) {
	sentAt := c.now()
	ctx, ex := c.requestContext(ctx)
	tok, err := c.oauth.PasswordCredentialsToken(ctx, c.username, c.password)
	if err != nil {
		return nil, c.tokenError(OpPasswordGrant, ex, err)
	}
	return c.newToken(tok, sentAt), nil
}

// Refresh exchanges refreshToken for a new token in the same Acumatica
// session. Acumatica rotates refresh tokens: the returned RefreshToken
// replaces refreshToken, which must not be used again. A refresh token that
// was already used, has expired or was revoked gives ErrInvalidGrant.
//
// Refresh sends the request once and never retries, so two concurrent calls
// with the same refresh token race and one of them fails. Callers that share
// a grant must serialize its refreshes.
func (c *Client) Refresh(ctx context.Context, refreshToken string) (*Token, error) {
	if refreshToken == "" {
		return nil, errors.New("acumatica: refresh: the refresh token is empty; start a new password grant instead")
	}
	sentAt := c.now()
	ctx, ex := c.requestContext(ctx)
	// oauth2's TokenSource returns a valid token without a request. A token
	// with no access token is never valid, so the request is always sent.
	source := c.oauth.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken})
	tok, err := source.Token()
	if err != nil {
		return nil, c.tokenError(OpRefresh, ex, err, refreshToken)
	}
	// NOTE: when a refresh response has no refresh_token, oauth2 copies the
	// old one into the result, as RFC 6749 section 6 allows. Acumatica
	// documents that it always issues a new one, so this only matters for a
	// server that does not rotate.
	return c.newToken(tok, sentAt), nil
}

// newToken converts an oauth2 token. oauth2 computes Expiry from time.Now
// after the response, so the expiry is recomputed from expires_in and the
// client's clock at the time the request was sent.
func (c *Client) newToken(tok *oauth2.Token, sentAt time.Time) *Token {
	lifetime := c.tokenLifetime
	if tok.ExpiresIn > 0 {
		lifetime = time.Duration(tok.ExpiresIn) * time.Second
	}
	t := &Token{
		AccessToken:  tok.AccessToken,
		TokenType:    tok.Type(),
		RefreshToken: tok.RefreshToken,
		Expiry:       sentAt.Add(lifetime),
	}
	if scope, ok := tok.Extra("scope").(string); ok {
		t.Scope = scope
	}
	return t
}

// tokenError converts an error from oauth2 into an *Error. extraSecrets are
// removed from Detail in addition to the client secret and the password.
func (c *Client) tokenError(op string, ex *exchange, err error, extraSecrets ...string) *Error {
	_, status, header, bodyErr := ex.snapshot()

	var e *Error
	var retrieveErr *oauth2.RetrieveError
	switch {
	case errors.As(err, &retrieveErr) && retrieveErr.Response != nil:
		// A non-2xx response, or a 2xx response with an OAuth error code.
		resp := retrieveErr.Response
		secrets := append(extraSecrets, c.clientSecret, c.password)
		e = classifyFailure(op, resp.StatusCode, resp.Header, retrieveErr.Body, c.now, secrets...)
	case bodyErr != nil:
		// The headers arrived but the body broke off. oauth2 reports this as
		// a plain error without the status. After a 2xx the server has
		// already granted the token.
		e = &Error{
			Op:             op,
			Kind:           ErrUnavailable,
			StatusCode:     status,
			RetryAfter:     parseRetryAfter(header.Get("Retry-After"), c.now),
			OutcomeUnknown: status >= 200 && status < 300,
			Err:            bodyErr,
		}
	case status != 0:
		// oauth2 returns a plain error for a 2xx response that is not valid
		// JSON or has no access_token. The server may have granted a token
		// that the caller cannot read.
		e = &Error{
			Op:             op,
			Kind:           ErrUnexpected,
			StatusCode:     status,
			OutcomeUnknown: true,
			Detail:         "the token response is not valid JSON or has no access_token",
		}
	default:
		e = c.transportError(op, c.tokenURL, ex, err)
	}
	e.URL = c.tokenURL
	return e
}
