package client

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"
)

// Transport returns an http.RoundTripper that sends requests through base
// (http.DefaultTransport when nil) and adds the lease's current access token
// and cookies to each request under the session's base URL. Requests to
// other URLs pass through unchanged. It fails requests to the base URL once
// the lease has ended or its expire time has passed, and it records a 401
// response, so that Release and Do release the lease with reason
// RELEASE_REASON_TOKEN_REJECTED. It never acquires, retries or releases.
func (l *Lease) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &leaseTransport{lease: l, base: base}
}

type leaseTransport struct {
	lease *Lease
	base  http.RoundTripper
}

func (t *leaseTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, authorized, err := sendWithLease(t.base, req, t.lease)
	if err == nil && authorized && resp.StatusCode == http.StatusUnauthorized {
		t.lease.markTokenRejected()
	}
	return resp, err
}

// sendWithLease sends req through base, with the lease's credentials when
// req is under the session's base URL, and reports whether it added them.
func sendWithLease(base http.RoundTripper, req *http.Request, l *Lease) (*http.Response, bool, error) {
	site := l.siteURL()
	if site == nil || !underBaseURL(req.URL, site) {
		resp, err := base.RoundTrip(req)
		return resp, false, err
	}
	creds, err := l.usableCredentials()
	if err != nil {
		closeRequestBody(req)
		return nil, false, err
	}
	resp, err := base.RoundTrip(authorize(req, creds))
	return resp, true, err
}

// authorize returns a copy of req with the credentials' Authorization
// header and cookies. A cookie of req with the name of a session cookie is
// replaced.
func authorize(req *http.Request, creds Credentials) *http.Request {
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", creds.Authorization())
	if len(creds.Cookies) == 0 {
		return r
	}
	session := make(map[string]bool, len(creds.Cookies))
	for _, c := range creds.Cookies {
		session[c.Name] = true
	}
	others := r.Cookies()
	r.Header.Del("Cookie")
	for _, c := range others {
		if !session[c.Name] {
			r.AddCookie(c)
		}
	}
	for _, c := range creds.Cookies {
		r.AddCookie(c)
	}
	return r
}

// underBaseURL reports whether u is base or a URL below it: the same scheme,
// host and port (an absent port is the scheme's default), and a cleaned path
// equal to base's path or under it at a "/" boundary.
func underBaseURL(u, base *url.URL) bool {
	if !strings.EqualFold(u.Scheme, base.Scheme) || hostPort(u) != hostPort(base) {
		return false
	}
	prefix := strings.TrimSuffix(path.Clean("/"+base.Path), "/")
	p := path.Clean("/" + u.Path)
	return prefix == "" || p == prefix || strings.HasPrefix(p, prefix+"/")
}

func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// replayable reports whether req can be sent a second time.
func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// rewind returns a copy of req with a fresh body from GetBody.
func rewind(req *http.Request) (*http.Request, error) {
	r := req.Clone(req.Context())
	if req.Body == nil || req.Body == http.NoBody {
		return r, nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, fmt.Errorf("client: rewind the body of %s %s to retry it: %w", req.Method, req.URL.Redacted(), err)
	}
	r.Body = body
	return r, nil
}

// drain reads a little of a response body, so that its connection can be
// reused, and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// Transport is an http.RoundTripper that holds a lease of one connection
// while it sends requests, and adds the lease's credentials to requests
// under the session's base URL. Create it with Client.Transport. It is safe
// for concurrent use; concurrent requests share one lease.
//
// It acquires a lease when a request to the base URL finds none, keeps it
// while requests are in flight and for the idle release time after the
// last one returned (WithIdleRelease, default DefaultIdleRelease), then
// releases it to the pool. A request counts as in flight until RoundTrip
// returns, not until its response body is read, so the idle release time
// should cover reading a body. Close releases the lease at once.
//
// The base URL is learned from the first lease: until then every request
// acquires one, afterwards requests to other URLs pass through unchanged
// without a lease.
//
// When a request with the lease's token gets 401, Transport releases the
// lease with reason RELEASE_REASON_TOKEN_REJECTED and, when the request has
// no body, http.NoBody or a GetBody function, sends it once more with a new
// lease. Otherwise it returns the 401 response.
type Transport struct {
	client      *Client
	connection  string
	base        http.RoundTripper
	acquire     []AcquireOption
	idleRelease time.Duration
	acquireSem  chan struct{} // one acquisition at a time

	// mu protects the fields below.
	mu        sync.Mutex
	lease     *Lease
	site      *url.URL // the base URL of the last lease
	inFlight  int
	idleTimer *time.Timer
	releases  sync.WaitGroup // idle releases in progress
	closed    bool
}

// Transport returns a Transport for connection that sends requests through
// base, or http.DefaultTransport when base is nil. Close it when done.
func (c *Client) Transport(connection string, base http.RoundTripper, opts ...TransportOption) *Transport {
	cfg := transportConfig{idleRelease: DefaultIdleRelease}
	for _, opt := range opts {
		opt(&cfg)
	}
	if base == nil {
		base = http.DefaultTransport
	}
	return &Transport{
		client:      c,
		connection:  connection,
		base:        base,
		acquire:     cfg.acquire,
		idleRelease: cfg.idleRelease,
		acquireSem:  make(chan struct{}, 1),
	}
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if site := t.knownSite(); site != nil && !underBaseURL(req.URL, site) {
		return t.base.RoundTrip(req)
	}
	resp, lease, err := t.send(req)
	if err != nil || lease == nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}

	t.reject(req.Context(), lease)
	if !replayable(req) {
		return resp, nil
	}
	drain(resp)
	retry, err := rewind(req)
	if err != nil {
		return nil, err
	}
	resp, lease, err = t.send(retry)
	if err == nil && lease != nil && resp.StatusCode == http.StatusUnauthorized {
		t.reject(req.Context(), lease)
	}
	return resp, err
}

// send sends req with the current lease, acquiring one when there is none.
// It returns the lease when it added the lease's credentials.
func (t *Transport) send(req *http.Request) (*http.Response, *Lease, error) {
	lease, err := t.hold(req.Context())
	if err != nil {
		closeRequestBody(req)
		return nil, nil, err
	}
	defer t.unhold()
	resp, authorized, err := sendWithLease(t.base, req, lease)
	if !authorized {
		return resp, nil, err
	}
	return resp, lease, err
}

func (t *Transport) knownSite() *url.URL {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.site
}

// hold returns a live lease and counts a request in flight on it.
func (t *Transport) hold(ctx context.Context) (*Lease, error) {
	for {
		lease, ended, err := t.holdCurrent()
		if lease != nil || err != nil {
			return lease, err
		}
		if ended != nil {
			// A lease lost on the client's clock alone may still hold its
			// seat at the broker; releasing a lease the broker ended sends
			// nothing.
			t.release(ctx, ended)
		}
		if err := t.acquireLease(ctx); err != nil {
			return nil, err
		}
	}
}

// holdCurrent counts a request in flight on the current lease when it is
// live. Otherwise it drops the lease and returns it as ended, if there was
// one.
func (t *Transport) holdCurrent() (live, ended *Lease, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, nil, ErrClosed
	}
	if t.lease == nil {
		return nil, nil, nil
	}
	if t.lease.Err() != nil {
		ended, t.lease = t.lease, nil
		return nil, ended, nil
	}
	t.inFlight++
	if t.idleTimer != nil {
		t.idleTimer.Stop()
		t.idleTimer = nil
	}
	return t.lease, nil, nil
}

// acquireLease acquires a lease unless another request is acquiring one or
// has just done so.
func (t *Transport) acquireLease(ctx context.Context) error {
	select {
	case t.acquireSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-t.acquireSem }()

	t.mu.Lock()
	current, closed := t.lease, t.closed
	t.mu.Unlock()
	if closed || current != nil {
		return nil
	}
	lease, err := t.client.Acquire(ctx, t.connection, t.acquire...)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		t.releases.Add(1)
		go func() {
			defer t.releases.Done()
			t.release(context.Background(), lease)
		}()
		return ErrClosed
	}
	t.lease, t.site = lease, lease.siteURL()
	return nil
}

// unhold ends a request in flight, and starts the idle release timer when
// it was the last.
func (t *Transport) unhold() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.inFlight--
	if t.inFlight > 0 || t.lease == nil || t.closed {
		return
	}
	lease := t.lease
	t.idleTimer = time.AfterFunc(t.idleRelease, func() { t.releaseIdle(lease) })
}

func (t *Transport) releaseIdle(lease *Lease) {
	t.mu.Lock()
	if t.lease != lease || t.inFlight > 0 || t.closed {
		t.mu.Unlock()
		return
	}
	t.lease = nil
	t.idleTimer = nil
	t.releases.Add(1)
	t.mu.Unlock()
	defer t.releases.Done()
	t.release(context.Background(), lease)
}

// reject drops lease and releases it with reason token rejected.
func (t *Transport) reject(ctx context.Context, lease *Lease) {
	t.mu.Lock()
	if t.lease == lease {
		t.lease = nil
	}
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := lease.ReleaseTokenRejected(ctx); err != nil {
		t.client.logger.WarnContext(ctx, "releasing a lease whose token was rejected failed; it ends at its expire time",
			"lease_id", lease.ID(), "connection", t.connection, "err", err)
	}
}

func (t *Transport) release(ctx context.Context, lease *Lease) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := lease.Release(ctx); err != nil {
		t.client.logger.WarnContext(ctx, "releasing the transport's lease failed; it ends at its expire time",
			"lease_id", lease.ID(), "connection", t.connection, "err", err)
	}
}

// Close releases the lease, if the Transport holds one, even while
// requests are in flight, and waits for idle releases in progress. Requests
// to the base URL fail with ErrClosed afterwards.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	lease := t.lease
	t.lease = nil
	if t.idleTimer != nil {
		t.idleTimer.Stop()
		t.idleTimer = nil
	}
	t.mu.Unlock()

	var err error
	if lease != nil {
		ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		defer cancel()
		err = lease.Release(ctx)
	}
	t.releases.Wait()
	return err
}
