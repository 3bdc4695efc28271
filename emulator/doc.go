// Package emulator imitates the parts of MYOB Acumatica that decide how many
// web-service API sessions are open. These are the identity server's token
// and revocation endpoints, cookie sign-in and sign-out under /entity/auth,
// and a small contract-based data endpoint that needs a live session.
//
// The emulator counts sessions against the licence limit "Maximum Number of
// Web Services API Users" (Config.Seats) the way Acumatica opens and closes
// them:
//
//   - scope "api" alone opens one session per access token, closed when that
//     token expires;
//   - scope "api offline_access" opens one session per grant at the password
//     grant, and access tokens from the grant's refresh tokens reuse it;
//   - scope "api:concurrent_access" keeps sessions in cookies: a bearer
//     request without the ASP.NET_SessionId cookie opens a new session and
//     sets the cookie, and a request with the cookie reuses that session;
//   - POST /entity/auth/login opens one session per sign-in.
//
// A session closes on sign-out, after the idle timeout, at token expiry (scope
// "api" alone) or on RestartApplication. Revoking a token closes nothing. All
// expiry is decided against the emulator's clock, lazily on each request and
// each introspection call, so Advance takes effect at once.
//
// Start runs the emulator on 127.0.0.1 with a random port for tests. The
// control API under /_emulator/ reads statistics and sessions, changes
// limits, advances the clock and injects faults over HTTP.
package emulator
