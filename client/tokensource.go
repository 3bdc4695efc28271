package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// tokenRefreshMargin is the time left on an access token below which
// TokenSource.Token renews the lease first, so that the broker refreshes the
// token. It is shorter than the broker's default refresh window (5 minutes),
// so that such a renewal finds the token inside the window.
const tokenRefreshMargin = 30 * time.Second

// TokenSource is an oauth2.TokenSource backed by a lease, for code that
// already sends requests through golang.org/x/oauth2. Create it with
// Client.TokenSource. It is safe for concurrent use.
//
// It acquires a lease at the first Token call and holds it until Close, or
// until the context given to Client.TokenSource is done. Both release the
// lease. When the lease is lost, the next Token call acquires a new one.
//
// Wrap it in an oauth2.Transport directly rather than in
// oauth2.ReuseTokenSource or oauth2.NewClient: Token is cheap, and a cached
// token would outlive ReleaseTokenRejected. Requests through an
// oauth2.Transport go to any host, so send through it only requests to the
// session's base URL.
type TokenSource struct {
	client     *Client
	ctx        context.Context
	connection string
	acquire    []AcquireOption
	stopWatch  func() bool

	// mu protects the fields below and serializes Token calls.
	mu          sync.Mutex
	lease       *Lease
	lastRenewal time.Time // when Token last renewed the lease itself
	closed      bool
}

// TokenSource returns a TokenSource for connection. ctx bounds its life:
// Token's acquisitions and renewals use ctx, and when ctx is done the
// TokenSource closes itself and releases its lease.
func (c *Client) TokenSource(ctx context.Context, connection string, opts ...AcquireOption) *TokenSource {
	ts := &TokenSource{client: c, ctx: ctx, connection: connection, acquire: opts}
	ts.stopWatch = context.AfterFunc(ctx, func() { _ = ts.Close() })
	return ts
}

// Token returns the lease's current access token, acquiring a lease first
// when the TokenSource holds none. When the token expires within 30s on the
// client's clock, Token renews the lease first, at most once a second, so
// that the broker refreshes it. The token's Expiry is the earlier of the
// token's and the lease's expire time, converted to the local clock.
func (ts *TokenSource) Token() (*oauth2.Token, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	// A lease that ends during the call is replaced once.
	for range 2 {
		creds, err := ts.credentials()
		if errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrLeaseEnded) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return ts.oauthToken(creds)
	}
	return nil, fmt.Errorf("client: token source of connection %q: two leases in a row ended while "+
		"it was reading their token; check the broker's logs", ts.connection)
}

// credentials returns the current credentials, renewing the lease when the
// token is near expiry. Callers hold ts.mu.
func (ts *TokenSource) credentials() (Credentials, error) {
	lease, err := ts.currentLease()
	if err != nil {
		return Credentials{}, err
	}
	creds, err := lease.usableCredentials()
	if err != nil {
		return Credentials{}, err
	}
	now := ts.client.clock.Now()
	if creds.TokenExpireTime.Sub(now) >= tokenRefreshMargin || time.Since(ts.lastRenewal) < minTokenRenewInterval {
		return creds, nil
	}
	ts.lastRenewal = time.Now()
	if err := lease.Renew(ts.ctx); err != nil {
		if errors.Is(err, ErrLeaseLost) {
			return Credentials{}, err
		}
		ts.client.logger.WarnContext(ts.ctx, "renewing the lease to refresh its access token failed",
			"lease_id", lease.ID(), "connection", ts.connection, "err", err)
	}
	return lease.usableCredentials()
}

// currentLease returns the live lease, acquiring one when there is none.
// Callers hold ts.mu.
func (ts *TokenSource) currentLease() (*Lease, error) {
	if ts.closed {
		return nil, ErrClosed
	}
	if ts.ctx.Err() != nil {
		return nil, fmt.Errorf("client: token source of connection %q: %w", ts.connection, context.Cause(ts.ctx))
	}
	if ts.lease != nil && ts.lease.Err() == nil {
		return ts.lease, nil
	}
	if ts.lease != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ts.ctx), releaseTimeout)
		_ = ts.lease.Release(ctx) // sends nothing unless only the client's clock ended the lease
		cancel()
		ts.lease = nil
	}
	lease, err := ts.client.Acquire(ts.ctx, ts.connection, ts.acquire...)
	if err != nil {
		return nil, err
	}
	ts.lease = lease
	return lease, nil
}

func (ts *TokenSource) oauthToken(creds Credentials) (*oauth2.Token, error) {
	now := ts.client.clock.Now()
	if !now.Before(creds.TokenExpireTime) {
		return nil, fmt.Errorf("client: the access token of lease %s expired at %s and the broker did not refresh it; "+
			"check the broker's logs", ts.lease.ID(), creds.TokenExpireTime.UTC().Format(time.RFC3339))
	}
	expire := creds.TokenExpireTime
	if leaseExpire := ts.lease.ExpireTime(); leaseExpire.Before(expire) {
		expire = leaseExpire
	}
	return &oauth2.Token{
		AccessToken: creds.AccessToken,
		TokenType:   creds.TokenType,
		Expiry:      time.Now().Add(expire.Sub(now)),
	}, nil
}

// ReleaseTokenRejected releases the lease with reason
// RELEASE_REASON_TOKEN_REJECTED, so that the broker signs the session out.
// Call it when a request with the token got 401; the next Token call
// acquires a new lease.
func (ts *TokenSource) ReleaseTokenRejected(ctx context.Context) error {
	ts.mu.Lock()
	lease := ts.lease
	ts.lease = nil
	ts.mu.Unlock()
	if lease == nil {
		return nil
	}
	return lease.ReleaseTokenRejected(ctx)
}

// Close releases the lease, waiting up to 10s. Token fails with ErrClosed
// afterwards.
func (ts *TokenSource) Close() error {
	ts.stopWatch()
	ts.mu.Lock()
	lease := ts.lease
	ts.lease = nil
	ts.closed = true
	ts.mu.Unlock()
	if lease == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	return lease.Release(ctx)
}
