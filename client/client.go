package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// releaseTimeout bounds the release calls that the client makes on its own:
// in Do after fn returns, on idle and on Close.
const releaseTimeout = 10 * time.Second

// Client calls the broker's SessionService. Its methods are safe for
// concurrent use.
type Client struct {
	rpc     acubrokerv1.SessionServiceClient
	conn    *grpc.ClientConn // opened by Dial and closed by Close; nil after New
	apiKey  string
	logger  *slog.Logger
	clock   Clock
	retries retryPolicy

	// mu protects the fields below.
	mu     sync.Mutex
	leases map[*Lease]struct{} // live leases, released by Close
	closed bool
}

// Dial connects to the broker at target, a gRPC target such as
// "broker.internal:50051" or "dns:///broker.internal:50051". It uses TLS
// unless WithInsecure is given. The connection is opened lazily by the first
// call; Close closes it.
func Dial(target string, opts ...Option) (*Client, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if cfg.insecure && cfg.apiKey != "" && !isLoopbackTarget(target) {
		return nil, fmt.Errorf("client: dial %s: refusing to send the API key without TLS to a host other than "+
			"loopback; use WithTLSConfig, or drop WithInsecure", target)
	}
	creds := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	switch {
	case cfg.insecure:
		creds = insecure.NewCredentials()
	case cfg.tlsConfig != nil:
		creds = credentials.NewTLS(cfg.tlsConfig)
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("acubroker-go-client"),
	}, cfg.dialOptions...)
	conn, err := grpc.NewClient(target, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", target, err)
	}
	c := newClient(conn, cfg)
	c.conn = conn
	return c, nil
}

// New returns a Client that calls the broker over conn, which the caller
// owns and closes after Client.Close. Transport options (WithTLSConfig,
// WithInsecure, WithDialOptions) do not apply.
func New(conn grpc.ClientConnInterface, opts ...Option) (*Client, error) {
	if conn == nil {
		return nil, errors.New("client: New got a nil connection; pass a *grpc.ClientConn")
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	return newClient(conn, cfg), nil
}

func newClient(conn grpc.ClientConnInterface, cfg *config) *Client {
	return &Client{
		rpc:     acubrokerv1.NewSessionServiceClient(conn),
		apiKey:  cfg.apiKey,
		logger:  cfg.logger,
		clock:   cfg.clock,
		retries: cfg.retries,
		leases:  map[*Lease]struct{}{},
	}
}

// String describes the client without its API key.
func (c *Client) String() string {
	return fmt.Sprintf("client.Client{APIKey: %t}", c.apiKey != "")
}

// Close releases every lease the client still holds, waiting up to 10s in
// all, then closes the connection that Dial opened. Leases held by a
// Transport or TokenSource are released too; their next use fails with
// ErrClosed. Calls after Close fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	leases := make([]*Lease, 0, len(c.leases))
	for l := range c.leases {
		leases = append(leases, l)
	}
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	var errs []error
	for _, l := range leases {
		errs = append(errs, l.Release(ctx))
	}
	if c.conn != nil {
		errs = append(errs, c.conn.Close())
	}
	return errors.Join(errs...)
}

// Acquire leases a session of connection. The broker waits for a free seat
// up to the connection's max_wait and ctx's deadline. When it returns
// NO_SEAT_AVAILABLE, or the broker is unavailable, Acquire retries as the
// retry options allow. Every attempt sends the same request_id, so a retry
// after a lost response returns the lease the broker already granted
// instead of taking a second seat.
//
// The lease renews itself in the background, independently of ctx, until
// it is released, signed out or lost, or the client is closed. Release it
// when done: Do does that for you.
//
// NOTE: when ctx ends while the broker is granting the lease, the broker
// may hold the lease until its TTL passes, because its id never reached the
// client.
func (c *Client) Acquire(ctx context.Context, connection string, opts ...AcquireOption) (*Lease, error) {
	cfg, err := newAcquireConfig(opts)
	if err != nil {
		return nil, err
	}
	if connection == "" {
		return nil, errors.New("client: acquire: the connection name is empty; pass a connection configured on the broker")
	}
	if c.isClosed() {
		return nil, ErrClosed
	}

	req := &acubrokerv1.AcquireSessionRequest{Connection: connection, RequestId: uuid.NewString()}
	if cfg.leaseTTL > 0 {
		req.LeaseTtl = durationpb.New(cfg.leaseTTL)
	}
	resp, err := c.acquireSession(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("client: acquire a session of connection %q: %w", connection, err)
	}

	lease := newLease(c, connection, cfg.leaseTTL, resp)
	if !c.track(lease) {
		_ = lease.Release(context.WithoutCancel(ctx))
		return nil, ErrClosed
	}
	c.logLease(ctx, lease)
	return lease, nil
}

// acquireSession sends AcquireSession with retries.
func (c *Client) acquireSession(ctx context.Context, req *acubrokerv1.AcquireSessionRequest) (*acubrokerv1.AcquireSessionResponse, error) {
	var resp *acubrokerv1.AcquireSessionResponse
	err := c.retry(ctx, "AcquireSession", func(ctx context.Context, attempt int) error {
		var err error
		resp, err = c.rpc.AcquireSession(c.outgoing(ctx), req)
		if attempt > 1 && Reason(err) == ReasonRequestIDReused {
			// The lease of an earlier attempt has already ended (the broker
			// granted it after that attempt gave up, then released it), so
			// it holds no seat and a new request_id cannot take a second one.
			req.RequestId = uuid.NewString()
			resp, err = c.rpc.AcquireSession(c.outgoing(ctx), req)
		}
		return err
	})
	return resp, err
}

// logLease logs a new lease, and warns when it cannot be used.
func (c *Client) logLease(ctx context.Context, lease *Lease) {
	attrs := []any{"connection", lease.Connection(), "lease_id", lease.ID(), "session_id", lease.SessionID(),
		"expire_time", lease.ExpireTime()}
	if lease.remaining() <= 0 {
		c.logger.WarnContext(ctx, "the lease's expire time has already passed on the client's clock, so its "+
			"token will not be used; synchronise the client's clock with the broker's", attrs...)
	}
	if lease.siteURL() == nil {
		c.logger.WarnContext(ctx, "the broker sent a base URL that does not parse, so Transport adds no credentials",
			append(attrs, "base_url", lease.Credentials().BaseURL)...)
	}
	c.logger.DebugContext(ctx, "acquired lease", attrs...)
}

// outgoing adds the API key to ctx's outgoing metadata.
func (c *Client) outgoing(ctx context.Context) context.Context {
	if c.apiKey == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.apiKey)
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// track records a live lease for Close, and reports false when the client
// is already closed.
func (c *Client) track(l *Lease) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.leases[l] = struct{}{}
	return true
}

func (c *Client) untrack(l *Lease) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.leases, l)
}

// isLoopbackTarget reports whether a gRPC target names this host: a unix
// socket, "localhost" or a loopback IP address, with or without a scheme
// such as "dns:///" or "passthrough:///".
func isLoopbackTarget(target string) bool {
	if scheme, _, ok := strings.Cut(target, ":"); ok && (scheme == "unix" || scheme == "unix-abstract") {
		return true
	}
	host := target
	if _, rest, ok := strings.Cut(target, "://"); ok {
		// The endpoint follows the optional authority: dns://1.1.1.1/host:port.
		host = rest[strings.LastIndex(rest, "/")+1:]
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
