package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
)

// Clock returns the current time. The client compares the broker's expire times (of
// leases and access tokens) with it, so it must agree with the broker's
// clock.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Option configures Dial and New.
type Option func(*config)

type config struct {
	tlsConfig   *tls.Config
	insecure    bool
	apiKey      string
	apiKeySet   bool
	logger      *slog.Logger
	clock       Clock
	retries     retryPolicy
	dialOptions []grpc.DialOption
}

func newConfig(opts []Option) (*config, error) {
	cfg := &config{
		logger: slog.New(slog.DiscardHandler),
		clock:  systemClock{},
		retries: retryPolicy{
			maxAttempts:    DefaultMaxAttempts,
			initialBackoff: DefaultInitialBackoff,
			maxBackoff:     DefaultMaxBackoff,
		},
	}
	for _, opt := range opts {
		opt(cfg)
	}
	return cfg, cfg.validate()
}

func (cfg *config) validate() error {
	var errs []error
	if cfg.apiKeySet && cfg.apiKey == "" {
		errs = append(errs, errors.New("client: WithAPIKey got an empty key; pass the broker API key"))
	}
	if cfg.insecure && cfg.tlsConfig != nil {
		errs = append(errs, errors.New("client: WithInsecure and WithTLSConfig are both set; choose one"))
	}
	if cfg.retries.maxAttempts < 1 {
		errs = append(errs, fmt.Errorf("client: WithMaxAttempts got %d; use at least 1", cfg.retries.maxAttempts))
	}
	if cfg.retries.initialBackoff <= 0 || cfg.retries.maxBackoff < cfg.retries.initialBackoff {
		errs = append(errs, fmt.Errorf("client: WithBackoff got initial %s and max %s; use 0 < initial <= max",
			cfg.retries.initialBackoff, cfg.retries.maxBackoff))
	}
	if cfg.logger == nil {
		errs = append(errs, errors.New("client: WithLogger got nil; pass a logger or leave the option out"))
	}
	if cfg.clock == nil {
		errs = append(errs, errors.New("client: WithClock got nil; pass a clock or leave the option out"))
	}
	return errors.Join(errs...)
}

// WithTLSConfig sets the TLS configuration of the connection that Dial
// opens. Put a client certificate in cfg.Certificates when the broker
// requires mutual TLS. Without this option and without WithInsecure, Dial
// uses TLS 1.2 or later with the system's root certificates. New ignores
// it.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *config) { c.tlsConfig = cfg }
}

// WithInsecure makes Dial connect without TLS. Use it only for a broker on
// the same host: Dial rejects it together with WithAPIKey for a target that
// is not a loopback address, a unix socket or "localhost". New ignores it.
func WithInsecure() Option {
	return func(c *config) { c.insecure = true }
}

// WithAPIKey sends key with every call as the gRPC metadata
// "authorization: Bearer <key>", which the broker checks against the
// callers of its configuration (docs/security.md).
func WithAPIKey(key string) Option {
	return func(c *config) { c.apiKey, c.apiKeySet = key, true }
}

// WithLogger sets the logger of retries, renewals and lost leases. Default:
// discard.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithClock sets the clock that lease and token expire times are compared
// with. Expire times come from the broker's clock, so the default,
// time.Now, assumes that the client's and the broker's clocks are
// synchronised (by NTP, for example).
func WithClock(clock Clock) Option {
	return func(c *config) { c.clock = clock }
}

// WithMaxAttempts bounds how many times one call is sent, the first
// included. Default DefaultMaxAttempts; 1 turns retries off. Retries also
// stop when the call's context would end before the next attempt.
func WithMaxAttempts(n int) Option {
	return func(c *config) { c.retries.maxAttempts = n }
}

// WithBackoff sets the backoff between retries that the broker gave no
// delay for: it starts at initial, doubles up to max, and a random half of
// it is waited. Defaults DefaultInitialBackoff and DefaultMaxBackoff.
func WithBackoff(initial, max time.Duration) Option {
	return func(c *config) { c.retries.initialBackoff, c.retries.maxBackoff = initial, max }
}

// WithDialOptions adds gRPC dial options to those of Dial, after its own.
// New ignores them.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOptions = append(c.dialOptions, opts...) }
}

// AcquireOption configures Acquire, Do and TokenSource, and through
// WithAcquireOptions, Transport.
type AcquireOption func(*acquireConfig)

type acquireConfig struct {
	leaseTTL time.Duration
}

func newAcquireConfig(opts []AcquireOption) (acquireConfig, error) {
	var cfg acquireConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	if cfg.leaseTTL < 0 {
		return cfg, fmt.Errorf("client: WithLeaseTTL got %s; use a positive duration, or leave the option out "+
			"for the connection's default", cfg.leaseTTL)
	}
	return cfg, nil
}

// WithLeaseTTL sets the lease's TTL, requested again at every renewal. The
// broker accepts 1s up to the connection's maximum. Default: the
// connection's default TTL.
func WithLeaseTTL(d time.Duration) AcquireOption {
	return func(c *acquireConfig) { c.leaseTTL = d }
}

// TransportOption configures Transport.
type TransportOption func(*transportConfig)

type transportConfig struct {
	acquire     []AcquireOption
	idleRelease time.Duration
}

// DefaultIdleRelease is how long a Transport keeps its lease after its last
// request finished, unless WithIdleRelease sets another value.
const DefaultIdleRelease = 2 * time.Second

// WithIdleRelease sets how long a Transport keeps its lease once no request
// is in flight; 0 releases the lease as soon as the last request returns.
// Default DefaultIdleRelease.
func WithIdleRelease(d time.Duration) TransportOption {
	return func(c *transportConfig) { c.idleRelease = max(d, 0) }
}

// WithAcquireOptions sets the options of the Transport's acquisitions.
func WithAcquireOptions(opts ...AcquireOption) TransportOption {
	return func(c *transportConfig) { c.acquire = append(c.acquire, opts...) }
}
