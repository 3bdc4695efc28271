// Package acumatica is the broker's client for the identity and sign-out
// endpoints of MYOB Acumatica. It signs in with the OAuth 2.0 password grant,
// refreshes tokens, signs sessions out, revokes tokens and classifies every
// failure into one of a few error kinds.
//
// # Sessions and seats
//
// Each successful PasswordGrant opens an Acumatica session, and each open
// session takes one seat of the licence's "Maximum Number of Web Services
// API Users" and of the user's maximum number of concurrent logins. With the
// default scopes "api offline_access", tokens obtained through Refresh stay
// in the session of the original grant, so a grant costs one seat however
// often it is refreshed. A seat is freed only when the session signs out
// (SignOut), stays idle past the site's session timeout, or, with the "api"
// scope alone, when its access token expires. Revoke does not free a seat.
//
// A sign-in on a full licence fails with ErrLoginLimit. Acumatica reports
// that in several shapes: a 500 error envelope whose exceptionMessage is
// "API Login Limit", an OAuth invalid_grant with that text in its
// description, or a redirect to /Frames/Error.aspx about concurrent API
// logins. Classify recognises the text wherever it appears.
//
// # Errors
//
// Every failed request returns an *Error whose Kind is one of ErrLoginLimit,
// ErrInvalidCredentials, ErrInvalidGrant, ErrThrottled, ErrUnavailable and
// ErrUnexpected, so callers branch with errors.Is. OutcomeUnknown marks
// requests that may have reached Acumatica although no response was read.
// After a password grant this means a session may be open that the caller
// holds no token for. Errors from a Client never contain the password, the
// client secret, or the tokens and cookie values sent in the request, and
// token-like strings in responses are removed as well.
//
// # Retries
//
// The Client sends each request once. It does not retry, follow redirects
// or cache tokens, because a repeated sign-in can take a second seat and a
// repeated refresh spends a one-time refresh token. Retry policy belongs to
// the caller.
package acumatica
