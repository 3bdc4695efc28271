package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// Renewal timing.
const (
	// renewCallTimeout bounds one RenewLease call.
	renewCallTimeout = 10 * time.Second
	// minRenewInterval is the shortest wait between renewals, for TTLs of
	// about 1s, the broker's minimum.
	minRenewInterval = 100 * time.Millisecond
	// skewedRenewInterval is the wait between renewals when the expire time
	// looks less than 1s away right after a renewal: the client's clock is
	// ahead of the broker's, and renewing sooner would not help.
	skewedRenewInterval = time.Second
	// minTokenRenewInterval is the shortest wait of the renewals that chase
	// an access token's expiry.
	minTokenRenewInterval = time.Second
)

// Credentials is the access token, base URL and cookies that a lease holder
// sends to the Acumatica site. String, GoString and LogValue leave out the
// token and cookie values.
type Credentials struct {
	// AccessToken is sent as "Authorization: <TokenType> <AccessToken>".
	AccessToken string
	// TokenType is "Bearer".
	TokenType string
	// TokenExpireTime is when the access token expires, on the broker's
	// clock. The lease's renewals replace the token before then.
	TokenExpireTime time.Time
	// BaseURL is the Acumatica site, such as https://erp.example.com/Company.
	BaseURL string
	// Cookies are sent with every request to BaseURL.
	Cookies []*http.Cookie
}

// Authorization returns the value of the Authorization header.
func (c Credentials) Authorization() string {
	tokenType := c.TokenType
	if tokenType == "" {
		tokenType = "Bearer"
	}
	return tokenType + " " + c.AccessToken
}

func (c Credentials) String() string {
	return fmt.Sprintf("Credentials{TokenType: %q, TokenExpireTime: %s, BaseURL: %q, AccessToken: [redacted], %d cookies}",
		c.TokenType, c.TokenExpireTime.UTC().Format(time.RFC3339), c.BaseURL, len(c.Cookies))
}

// GoString is String, so that %#v leaves the secrets out too.
func (c Credentials) GoString() string { return c.String() }

// LogValue leaves the token and cookie values out of logs.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("token_type", c.TokenType),
		slog.Time("token_expire_time", c.TokenExpireTime),
		slog.String("base_url", c.BaseURL),
		slog.Int("cookies", len(c.Cookies)),
	)
}

func (c Credentials) clone() Credentials {
	cookies := make([]*http.Cookie, len(c.Cookies))
	for i, ck := range c.Cookies {
		cookies[i] = &http.Cookie{Name: ck.Name, Value: ck.Value}
	}
	c.Cookies = cookies
	return c
}

func credentialsFromProto(p *acubrokerv1.Credentials) Credentials {
	c := Credentials{
		AccessToken: p.GetAccessToken(),
		TokenType:   p.GetTokenType(),
		BaseURL:     p.GetBaseUrl(),
		Cookies:     make([]*http.Cookie, 0, len(p.GetCookies())),
	}
	if p.GetTokenExpireTime() != nil {
		c.TokenExpireTime = p.GetTokenExpireTime().AsTime()
	}
	for _, ck := range p.GetCookies() {
		c.Cookies = append(c.Cookies, &http.Cookie{Name: ck.GetName(), Value: ck.GetValue()})
	}
	return c
}

// Lease is the exclusive use of one Acumatica session, from Acquire until
// Release, ReleaseTokenRejected or SignOut, or until the lease is lost. It
// renews itself in the background. Its methods are safe for concurrent use.
type Lease struct {
	client     *Client
	id         string
	connection string
	leaseTTL   time.Duration // requested at every renewal; 0 means the connection's default

	done         chan struct{} // closed when the lease ends
	stopRenewing context.CancelFunc
	renewerDone  chan struct{} // closed when the background renewals return
	rescheduleC  chan struct{} // a renewal outside the loop moved the schedule
	renewMu      sync.Mutex    // serializes RenewLease calls
	endMu        sync.Mutex    // serializes Release, ReleaseTokenRejected and SignOut

	// mu protects the fields below.
	mu            sync.Mutex
	sessionID     string
	creds         Credentials
	site          *url.URL      // creds.BaseURL parsed; nil when it does not parse
	expireAt      time.Time     // on the broker's clock
	ttl           time.Duration // the TTL the last grant was for
	err           error         // the cause of the lease's end; nil while it is live
	settled       bool          // the broker has recorded the lease's end, so no call is needed
	tokenRejected bool          // a request with the lease's token got 401
}

// newLease returns the lease of an AcquireSession response and starts its
// background renewals.
func newLease(c *Client, connection string, leaseTTL time.Duration, resp *acubrokerv1.AcquireSessionResponse) *Lease {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Lease{
		client:       c,
		id:           resp.GetLease().GetLeaseId(),
		connection:   connection,
		leaseTTL:     leaseTTL,
		done:         make(chan struct{}),
		stopRenewing: cancel,
		renewerDone:  make(chan struct{}),
		rescheduleC:  make(chan struct{}, 1),
	}
	l.update(resp.GetLease(), resp.GetCredentials())
	go l.renewLoop(ctx)
	return l
}

// String identifies the lease without its credentials.
func (l *Lease) String() string {
	return fmt.Sprintf("Lease{ID: %s, Connection: %q, SessionID: %s}", l.id, l.connection, l.SessionID())
}

// LogValue identifies the lease in logs without its credentials.
func (l *Lease) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("lease_id", l.id),
		slog.String("connection", l.connection),
		slog.String("session_id", l.SessionID()),
	)
}

// ID returns the broker's lease id.
func (l *Lease) ID() string { return l.id }

// Connection returns the name of the lease's connection.
func (l *Lease) Connection() string { return l.connection }

// SessionID returns the broker's id of the session behind the lease. It
// changes only when the broker had to replace a session that could not be
// refreshed.
func (l *Lease) SessionID() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sessionID
}

// Credentials returns the session's current credentials. A renewal that
// refreshed the access token replaces them, so read them again for every
// request rather than keeping a copy. Stop using them once Done is closed
// or ExpireTime has passed.
func (l *Lease) Credentials() Credentials {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.creds.clone()
}

// ExpireTime returns when the lease ends unless it is renewed, on the
// broker's clock.
func (l *Lease) ExpireTime() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.expireAt
}

// Done returns a channel that is closed when the lease ends: when it is
// lost, released, signed out, or the client is closed.
func (l *Lease) Done() <-chan struct{} { return l.done }

// Err returns nil while the lease is live. After Done is closed it returns
// a *LeaseLostError when the lease was lost, and ErrLeaseEnded when its
// holder released it or signed it out.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Renew extends the lease now and takes the credentials the broker returns,
// which it refreshes when the access token is near expiry. The lease renews
// itself; call Renew when the token must be refreshed sooner. It returns a
// *LeaseLostError when the broker reports the lease gone.
func (l *Lease) Renew(ctx context.Context) error {
	err := l.client.retry(ctx, "RenewLease", func(ctx context.Context, _ int) error { return l.renewOnce(ctx) })
	var lost *LeaseLostError
	if err == nil || errors.As(err, &lost) || errors.Is(err, ErrLeaseEnded) {
		return err
	}
	return fmt.Errorf("client: renew lease %s: %w", l.id, err)
}

// Release ends the lease and returns the session to the broker's pool,
// open, for the next caller. When a request through the lease's Transport
// got 401, it releases with reason RELEASE_REASON_TOKEN_REJECTED instead,
// as ReleaseTokenRejected does.
//
// Calling Release, ReleaseTokenRejected or SignOut again after one of them
// succeeded, or after the broker reported the lease gone, returns nil
// without a call. When the call fails, the lease is no longer renewed and
// ends at its expire time; calling Release again retries the call.
func (l *Lease) Release(ctx context.Context) error {
	if l.sawTokenRejected() {
		return l.end(ctx, endTokenRejected)
	}
	return l.end(ctx, endRelease)
}

// ReleaseTokenRejected ends the lease and reports to the broker that
// Acumatica rejected the session's token (HTTP 401). The broker then signs
// the session out and frees its seat instead of returning it to the pool.
func (l *Lease) ReleaseTokenRejected(ctx context.Context) error {
	return l.end(ctx, endTokenRejected)
}

// SignOut ends the lease and has the broker close the session at
// Acumatica, which frees its seat. When Acumatica does not confirm, the
// broker retries the sign-out in the background and SignOut still returns
// nil.
func (l *Lease) SignOut(ctx context.Context) error {
	return l.end(ctx, endSignOut)
}

// ending is the way a holder ends a lease: release, release as token
// rejected, or sign out.
type ending int

const (
	endRelease ending = iota
	endTokenRejected
	endSignOut
)

// method returns the name of the RPC that ends a lease this way.
func (e ending) method() string {
	if e == endSignOut {
		return "SignOut"
	}
	return "ReleaseSession"
}

func (e ending) String() string {
	switch e {
	case endTokenRejected:
		return "release (token rejected)"
	case endSignOut:
		return "sign out"
	}
	return "release"
}

// doneReason is the reason the broker gives when a retried call finds that
// an earlier attempt of it already succeeded.
func (e ending) doneReason() string {
	if e == endRelease {
		return ReasonLeaseReleased
	}
	return ReasonLeaseSignedOut
}

func (l *Lease) end(ctx context.Context, kind ending) error {
	l.endMu.Lock()
	defer l.endMu.Unlock()
	if l.isSettled() {
		return nil
	}
	l.stopRenewer()
	l.markEnded(ErrLeaseEnded)
	if l.isSettled() {
		return nil
	}
	err := l.client.retry(ctx, kind.method(), func(ctx context.Context, attempt int) error {
		err := l.sendEnd(ctx, kind)
		if attempt > 1 && Reason(err) == kind.doneReason() {
			return nil
		}
		return err
	})
	if err == nil || leaseGone(err) {
		l.settle()
	}
	if err != nil {
		return fmt.Errorf("client: %s lease %s: %w", kind, l.id, err)
	}
	return nil
}

func (l *Lease) sendEnd(ctx context.Context, kind ending) error {
	ctx = l.client.outgoing(ctx)
	if kind == endSignOut {
		resp, err := l.client.rpc.SignOut(ctx, &acubrokerv1.SignOutRequest{LeaseId: l.id})
		if err == nil && !resp.GetConfirmed() {
			l.client.logger.InfoContext(ctx, "Acumatica did not confirm the sign-out; the broker retries it",
				"lease_id", l.id, "connection", l.connection)
		}
		return err
	}
	reason := acubrokerv1.ReleaseReason_RELEASE_REASON_DONE
	if kind == endTokenRejected {
		reason = acubrokerv1.ReleaseReason_RELEASE_REASON_TOKEN_REJECTED
	}
	_, err := l.client.rpc.ReleaseSession(ctx, &acubrokerv1.ReleaseSessionRequest{LeaseId: l.id, Reason: reason})
	return err
}

// markEnded marks the lease ended with err, closes Done and stops the
// renewals, unless it has already ended. It reports whether it ended the
// lease.
func (l *Lease) markEnded(err error) bool {
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		return false
	}
	l.err = err
	close(l.done)
	l.mu.Unlock()
	l.stopRenewing()
	l.client.untrack(l)
	return true
}

// lose ends the lease because it was lost.
func (l *Lease) lose(ctx context.Context, lost *LeaseLostError) {
	if !lost.local {
		l.settle()
	}
	if l.markEnded(lost) {
		l.client.logger.WarnContext(ctx, "lease lost", "lease_id", l.id, "connection", l.connection,
			"reason", lost.Reason, "err", lost.Err)
	}
}

func (l *Lease) lostError(err error, local bool) *LeaseLostError {
	reason := ReasonLeaseExpired
	if !local {
		reason = Reason(err)
		if reason == "" {
			reason = ReasonLeaseNotFound
		}
	}
	return &LeaseLostError{
		LeaseID:    l.id,
		Connection: l.connection,
		Reason:     reason,
		ExpireTime: l.ExpireTime(),
		Err:        err,
		local:      local,
	}
}

func (l *Lease) settle() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.settled = true
}

func (l *Lease) isSettled() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.settled
}

func (l *Lease) markTokenRejected() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tokenRejected = true
}

func (l *Lease) sawTokenRejected() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tokenRejected
}

// usableCredentials returns the credentials while the lease is live and its
// expire time has not passed on the client's clock.
func (l *Lease) usableCredentials() (Credentials, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return Credentials{}, l.err
	}
	if !l.client.clock.Now().Before(l.expireAt) {
		return Credentials{}, fmt.Errorf("client: lease %s passed its expire time %s without a renewal, "+
			"so its token must not be used; acquire a new lease", l.id, l.expireAt.UTC().Format(time.RFC3339))
	}
	return l.creds.clone(), nil
}

// update takes a lease and credentials the broker granted.
func (l *Lease) update(lease *acubrokerv1.Lease, creds *acubrokerv1.Credentials) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sessionID = lease.GetSessionId()
	l.creds = credentialsFromProto(creds)
	l.site = nil
	if u, err := url.Parse(l.creds.BaseURL); err == nil && u.Scheme != "" && u.Host != "" {
		l.site = u
	}
	l.expireAt = lease.GetExpireTime().AsTime()
	l.ttl = l.leaseTTL
	if l.ttl == 0 {
		// The connection's default TTL, as far as the clocks agree.
		l.ttl = l.expireAt.Sub(l.client.clock.Now())
	}
}

// siteURL returns the session's base URL, or nil when the broker sent none
// that parses.
func (l *Lease) siteURL() *url.URL {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.site
}

func (l *Lease) remaining() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.expireAt.Sub(l.client.clock.Now())
}

// renewOnce sends one RenewLease and takes its result.
func (l *Lease) renewOnce(ctx context.Context) error {
	l.renewMu.Lock()
	defer l.renewMu.Unlock()
	if err := l.Err(); err != nil {
		return err
	}
	req := &acubrokerv1.RenewLeaseRequest{LeaseId: l.id}
	if l.leaseTTL > 0 {
		req.LeaseTtl = durationpb.New(l.leaseTTL)
	}
	resp, err := l.client.rpc.RenewLease(l.client.outgoing(ctx), req)
	if err != nil {
		if leaseGone(err) {
			lost := l.lostError(err, false)
			l.lose(ctx, lost)
			return lost
		}
		return err
	}
	l.update(resp.GetLease(), resp.GetCredentials())
	if resp.GetCredentialsRefreshed() {
		l.client.logger.DebugContext(ctx, "lease renewed with a refreshed access token", "lease_id", l.id,
			"connection", l.connection)
	}
	select {
	case l.rescheduleC <- struct{}{}:
	default:
	}
	return nil
}

// stopRenewer stops the background renewals and waits for them to return.
func (l *Lease) stopRenewer() {
	l.stopRenewing()
	<-l.renewerDone
}

func (l *Lease) renewLoop(ctx context.Context) {
	defer close(l.renewerDone)
	timer := time.NewTimer(l.nextRenewal())
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.rescheduleC:
		case <-timer.C:
			if !l.renewBeforeExpiry(ctx) {
				return
			}
		}
		timer.Reset(l.nextRenewal())
	}
}

// nextRenewal returns the wait until the next renewal: when about a third
// of the TTL remains, or sooner to chase the access token's expiry. The
// token renewals halve the time left each time, so that one lands inside
// the broker's refresh window unless that window is shorter than 1s.
func (l *Lease) nextRenewal() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.client.clock.Now()
	wait := l.expireAt.Sub(now) - l.ttl/3
	if !l.creds.TokenExpireTime.IsZero() {
		wait = min(wait, max(l.creds.TokenExpireTime.Sub(now)/2, minTokenRenewInterval))
	}
	if l.ttl < time.Second {
		return max(wait, skewedRenewInterval)
	}
	return max(wait, minRenewInterval)
}

// renewBeforeExpiry renews the lease, retrying failures until the lease's
// expire time passes on the client's clock, which loses the lease. It
// reports whether the lease is still live.
func (l *Lease) renewBeforeExpiry(ctx context.Context) bool {
	for attempt := 1; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, min(renewCallTimeout, max(l.remaining(), time.Second)))
		err := l.renewOnce(callCtx)
		cancel()
		if err == nil {
			return true
		}
		if ctx.Err() != nil || l.Err() != nil {
			return false
		}
		remaining := l.remaining()
		if remaining <= 0 {
			l.lose(ctx, l.lostError(err, true))
			return false
		}
		delay, _ := retryable(err)
		wait := min(l.client.retries.wait(attempt, delay), remaining)
		l.client.logger.WarnContext(ctx, "renewing lease failed; retrying", "lease_id", l.id,
			"connection", l.connection, "attempt", attempt, "retry_in", wait, "err", err)
		if !sleep(ctx, wait) {
			return false
		}
	}
}
