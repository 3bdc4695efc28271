package acumatica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
)

// Cookie is a cookie of an Acumatica session, such as ASP.NET_SessionId or
// .ASPXAUTH. Its value is a secret.
type Cookie struct {
	Name  string
	Value string
}

// SessionCredentials identify the session that SignOut closes. Both fields
// are secrets: String, GoString and LogValue leave them out.
type SessionCredentials struct {
	// AccessToken is the session's latest access token, sent as a bearer
	// token. It may be empty for a cookie session.
	AccessToken string
	// Cookies are the session cookies. A session opened with the
	// api:concurrent_access scope or by a cookie sign-in is identified by
	// them.
	Cookies []Cookie
}

// String describes the credentials without their secrets.
func (s SessionCredentials) String() string {
	names := make([]string, len(s.Cookies))
	for i, cookie := range s.Cookies {
		names[i] = cookie.Name
	}
	return fmt.Sprintf("acumatica.SessionCredentials{AccessToken: %s, Cookies: %q}", redactedMark(s.AccessToken), names)
}

// GoString is String, so that %#v cannot leak the secrets either.
func (s SessionCredentials) GoString() string { return s.String() }

// LogValue logs the credentials without their secrets.
func (s SessionCredentials) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Bool("has_access_token", s.AccessToken != ""),
		slog.Int("cookies", len(s.Cookies)),
	)
}

// SignOut closes the session identified by s, which frees its API seat. It
// sends POST to the logout URL with the bearer token and the cookies,
// Content-Length: 0 and no body. Without that header IIS responds with 411
// and the session stays open.
//
// SignOut returns nil for 204 and 200. A 401 gives ErrTokenRejected:
// Acumatica no longer accepts the token, but that does not prove the session
// closed. An access token that has expired or was revoked also gets 401,
// while the session of its grant (scope offline_access) may stay open until
// the idle timeout. Sign out with the latest access token before it expires.
//
// Signing out does not invalidate the access token. Acumatica opens a new
// session if the same token is used again, so callers must discard it.
func (c *Client) SignOut(ctx context.Context, s SessionCredentials) error {
	if s.AccessToken == "" && len(s.Cookies) == 0 {
		return errors.New("acumatica: sign-out: the session credentials have no access token and no cookies; pass the session's latest access token")
	}
	for i, cookie := range s.Cookies {
		if cookie.Name == "" {
			return fmt.Errorf("acumatica: sign-out: session cookie %d has no name; pass the cookies as Acumatica set them", i)
		}
	}

	ctx, ex := c.requestContext(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.logoutURL, http.NoBody)
	if err != nil {
		return fmt.Errorf("acumatica: sign-out: building the request for %s: %w", c.logoutURL, err)
	}
	// With http.NoBody, net/http sends "Content-Length: 0" on a POST.
	req.ContentLength = 0
	req.Header.Set("Accept", "application/json")
	if s.AccessToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.AccessToken)
	}
	for _, cookie := range s.Cookies {
		req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	}

	secrets := make([]string, 0, 1+len(s.Cookies))
	secrets = append(secrets, s.AccessToken)
	for _, cookie := range s.Cookies {
		secrets = append(secrets, cookie.Value)
	}
	return c.send(OpSignOut, c.logoutURL, req, ex, secrets...)
}

// Revoke revokes token at the revocation endpoint (RFC 7009).
// tokenTypeHint is "access_token", "refresh_token" or empty. Revoking a
// refresh token ends its grant, so it can no longer be refreshed.
//
// Revoking does not close the session: its API seat stays taken until the
// session signs out or times out. Call SignOut first.
func (c *Client) Revoke(ctx context.Context, token, tokenTypeHint string) error {
	if token == "" {
		return errors.New("acumatica: revocation: the token is empty; pass the access or refresh token to revoke")
	}
	form := url.Values{
		"token":         {token},
		"client_id":     {c.clientID},
		"client_secret": {c.clientSecret},
	}
	if tokenTypeHint != "" {
		form.Set("token_type_hint", tokenTypeHint)
	}

	ctx, ex := c.requestContext(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.revocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("acumatica: revocation: building the request for %s: %w", c.revocationURL, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	return c.send(OpRevocation, c.revocationURL, req, ex, token)
}

// send sends req once and classifies the response. It returns nil when
// Classify does. secrets are removed from Detail in addition to the client
// secret and the password.
func (c *Client) send(op, endpoint string, req *http.Request, ex *exchange, secrets ...string) error {
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return c.transportError(op, endpoint, ex, err)
	}
	body, err := readBody(resp)
	if err != nil && classify(op, resp.StatusCode, resp.Header, nil, c.now) != nil {
		// The status reports a failure, but without the body the response
		// cannot be classified further. A success status needs no body.
		return &Error{
			Op:         op,
			Kind:       ErrUnavailable,
			URL:        endpoint,
			StatusCode: resp.StatusCode,
			Err:        err,
		}
	}
	secrets = append(secrets, c.clientSecret, c.password)
	if e := classify(op, resp.StatusCode, resp.Header, body, c.now, secrets...); e != nil {
		e.URL = endpoint
		return e
	}
	return nil
}
