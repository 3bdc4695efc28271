// Package client is the Go client of the acubroker SessionService. Services
// use it instead of the generated stubs: it renews leases, retries what is
// safe to retry, and releases every lease it acquires.
//
// The common path is one call:
//
//	err := c.Do(ctx, "erp", func(ctx context.Context, s *client.Lease) error {
//		httpClient := &http.Client{Transport: s.Transport(nil)}
//		// ... requests to s.Credentials().BaseURL ...
//	})
//
// Code that sends HTTP requests without a function scope uses
// Client.Transport, and code built on golang.org/x/oauth2 uses
// Client.TokenSource.
//
// # Lease life cycle
//
// A lease is one caller's exclusive use of one open Acumatica session,
// which occupies one of the connection's licence seats:
//
//  1. Acquire. Client.Acquire requests a session from the broker, which
//     hands out a warm session from its pool, signs in on a free seat, or
//     queues the caller until a seat frees up, at most the connection's
//     max_wait. When the wait ends without a seat, the broker returns
//     RESOURCE_EXHAUSTED with reason NO_SEAT_AVAILABLE and a retry delay,
//     and Acquire tries again.
//  2. Use. Send Lease.Credentials (an access token, a base URL and maybe
//     cookies) with each request to the Acumatica site, or let
//     Lease.Transport add them.
//  3. Renew. The lease lasts its TTL (WithLeaseTTL, or the connection's
//     default) unless renewed. A background goroutine renews it when about
//     a third of the TTL remains, and sooner as the access token nears its
//     expiry. When the broker refreshes the token during a renewal, the new
//     credentials replace the old ones at once; read Credentials for every
//     request.
//  4. End. Lease.Release returns the session to the pool, open, for the
//     next caller. Lease.ReleaseTokenRejected reports that Acumatica
//     returned 401, so the broker signs the session out instead.
//     Lease.SignOut closes the session at Acumatica, which frees its seat.
//     Each of them ends the renewals and closes Done. Once one of them has
//     succeeded, calling any of them again returns nil without a call.
//
// # Losing a lease
//
// A lease is lost when a renewal gets FAILED_PRECONDITION with reason
// LEASE_EXPIRED, LEASE_REVOKED, LEASE_RELEASED or LEASE_SIGNED_OUT, or
// NOT_FOUND: the broker reclaimed the seat, for example after renewals
// failed for a whole TTL or an operator revoked the lease. Its session may
// already serve another caller, so the holder must stop using the token at
// once. Lease.Done is then closed and Lease.Err returns a *LeaseLostError;
// Do cancels fn's context with that error as its cause.
//
// # Trust window
//
// A renewal that fails for another reason (the broker is unreachable) is
// retried with backoff. The broker may reclaim the seat as soon as the
// lease's expire time passes, so the client trusts the lease only until
// then: once Lease.ExpireTime passes on the client's clock without a
// successful renewal, the lease is lost with reason LEASE_EXPIRED, and
// Lease.Transport fails requests from that moment on. Expire times come
// from the broker's clock, so keep the client's clock synchronised with it
// (WithClock replaces the clock).
//
// # Retries
//
// Calls that fail with UNAVAILABLE or ABORTED, or with RESOURCE_EXHAUSTED
// and a google.rpc.RetryInfo, are sent again after the broker's delay or
// an exponential backoff with jitter, bounded by the call's context and
// WithMaxAttempts. INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
// PERMISSION_DENIED and every other code are returned at once. All
// attempts of one Acquire carry the same request_id, so an attempt whose
// response was lost cannot take a second seat. Reason and RetryDelay read the
// details of an error.
package client
