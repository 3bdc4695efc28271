package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Clock is the source of the current time. The broker judges every expiry
// by it.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Connection is one Acumatica site, user and client whose sessions the
// broker shares, with its seat budget and timings.
type Connection struct {
	Name            string
	MaxSessions     int
	DefaultLeaseTTL time.Duration
	MaxLeaseTTL     time.Duration
	// MaxWait bounds how long an acquire waits for a seat.
	MaxWait time.Duration
	// IdleTimeout is Acumatica's session idle timeout.
	IdleTimeout time.Duration
	// TokenLifetime is how long a session lives without a refresh token
	// when Acumatica's response omits expires_in.
	TokenLifetime time.Duration
	// RefreshBefore is how long before expiry an access token is refreshed.
	RefreshBefore time.Duration
	// IdleSignOutAfter signs out sessions idle in the pool this long; zero
	// keeps them until Acumatica's idle timeout ends them.
	IdleSignOutAfter time.Duration
	// LoginLimitBackoff is the first pause of sign-ins after Acumatica
	// refuses one for its login limit; each refused probe doubles it up to
	// LoginLimitMaxBackoff. Defaults 5s and 5m.
	LoginLimitBackoff    time.Duration
	LoginLimitMaxBackoff time.Duration
	// RequestTimeout bounds each request to Acumatica. Default: the
	// broker's Config.SignInTimeout.
	RequestTimeout time.Duration
	// MaxQueue caps how many acquires may wait for a seat; further ones
	// fail at once with ReasonQueueFull. Zero means no cap.
	MaxQueue int
	// OfflineAccess is true when the scopes include offline_access, so that
	// sessions have refresh tokens and outlive one access token.
	OfflineAccess bool
	ERP           ERP
}

// Config configures a Broker. Zero values take the documented defaults.
type Config struct {
	Store       Store
	Connections []Connection
	Clock       Clock        // default: the system clock
	Logger      *slog.Logger // default: discard
	Sealer      Sealer       // default: PlainSealer
	Observer    Observer     // default: NopObserver
	// PollInterval is how often a waiter checks the queue without a
	// notification, as a safety net. Default 1s.
	PollInterval time.Duration
	// MaintenanceInterval is how often expired leases, stale seats and
	// pending sign-outs are handled. Default 1s.
	MaintenanceInterval time.Duration
	// SignInTimeout is the default of Connection.RequestTimeout. Default
	// 30s.
	SignInTimeout time.Duration
	// Quota returns how many leases (active or queued) a holder may have
	// on a connection at once; zero means no cap. A nil Quota sets no cap.
	Quota func(holder, connection string) int
}

// Broker hands out leases of Acumatica sessions. Its methods are safe for
// concurrent use.
type Broker struct {
	store         Store
	connections   map[string]*Connection
	clock         Clock
	logger        *slog.Logger
	sealer        Sealer
	observer      Observer
	pollInterval  time.Duration
	maintInterval time.Duration
	signInTimeout time.Duration
	// grace is the largest of the connections' grace periods.
	grace time.Duration
	quota func(holder, connection string) int
	wake  *wakeHub
	// admin supports the admin methods (admin.go).
	admin adminState

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

// New validates cfg and returns a Broker. Call Start before use.
func New(cfg Config) (*Broker, error) {
	if cfg.Store == nil {
		return nil, errors.New("broker: Config.Store is required")
	}
	b := &Broker{
		store:         cfg.Store,
		connections:   make(map[string]*Connection, len(cfg.Connections)),
		clock:         cfg.Clock,
		logger:        cfg.Logger,
		sealer:        cfg.Sealer,
		observer:      cfg.Observer,
		pollInterval:  orDefault(cfg.PollInterval, time.Second),
		maintInterval: orDefault(cfg.MaintenanceInterval, time.Second),
		signInTimeout: orDefault(cfg.SignInTimeout, 30*time.Second),
		quota:         cfg.Quota,
		wake:          newWakeHub(),
	}
	if b.clock == nil {
		b.clock = realClock{}
	}
	if b.logger == nil {
		b.logger = slog.New(slog.DiscardHandler)
	}
	if b.sealer == nil {
		b.sealer = PlainSealer{}
	}
	if b.observer == nil {
		b.observer = NopObserver{}
	}
	for i := range cfg.Connections {
		c := cfg.Connections[i]
		if err := validateConnection(&c); err != nil {
			return nil, err
		}
		c.RequestTimeout = orDefault(c.RequestTimeout, b.signInTimeout)
		b.grace = max(b.grace, c.grace())
		if _, dup := b.connections[c.Name]; dup {
			return nil, fmt.Errorf("broker: connection %q configured twice", c.Name)
		}
		b.connections[c.Name] = &c
	}
	b.initAdmin(cfg.Store)
	return b, nil
}

// grace is added to every moment at which a session of the connection "has
// certainly ended" at Acumatica: a request sent at the last moment may
// reach Acumatica up to one request timeout later.
func (c *Connection) grace() time.Duration { return c.RequestTimeout + time.Second }

func validateConnection(c *Connection) error {
	switch {
	case c.Name == "":
		return errors.New("broker: connection name is empty")
	case c.MaxSessions < 1:
		return fmt.Errorf("broker: connection %q: MaxSessions must be at least 1, got %d", c.Name, c.MaxSessions)
	case c.ERP == nil:
		return fmt.Errorf("broker: connection %q: ERP is nil", c.Name)
	}
	c.DefaultLeaseTTL = orDefault(c.DefaultLeaseTTL, 5*time.Minute)
	c.MaxLeaseTTL = orDefault(c.MaxLeaseTTL, 30*time.Minute)
	c.IdleTimeout = orDefault(c.IdleTimeout, 10*time.Minute)
	c.TokenLifetime = orDefault(c.TokenLifetime, time.Hour)
	c.RefreshBefore = orDefault(c.RefreshBefore, 5*time.Minute)
	c.LoginLimitBackoff = orDefault(c.LoginLimitBackoff, 5*time.Second)
	c.LoginLimitMaxBackoff = max(orDefault(c.LoginLimitMaxBackoff, 5*time.Minute), c.LoginLimitBackoff)
	if c.DefaultLeaseTTL > c.MaxLeaseTTL {
		return fmt.Errorf("broker: connection %q: DefaultLeaseTTL %s exceeds MaxLeaseTTL %s",
			c.Name, c.DefaultLeaseTTL, c.MaxLeaseTTL)
	}
	return nil
}

// Start creates the connections' seats and starts the background work:
// listening for seat notifications and the maintenance loop. It returns
// once the listener is ready, so that no notification sent after Start
// returns is missed.
func (b *Broker) Start(ctx context.Context) error {
	budgets := make([]ConnectionBudget, 0, len(b.connections))
	for _, c := range b.connections {
		budgets = append(budgets, ConnectionBudget{Name: c.Name, MaxSessions: c.MaxSessions})
	}
	if err := b.store.SyncConnections(ctx, budgets); err != nil {
		return fmt.Errorf("sync connections: %w", err)
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	b.done = make(chan struct{})
	ready := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); b.listen(runCtx, ready) }()
	go func() { defer wg.Done(); b.maintain(runCtx) }()
	go func() { defer wg.Done(); b.heartbeat(runCtx) }()
	go func() { wg.Wait(); close(b.done) }()

	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		b.Stop()
		return ctx.Err()
	}
}

// Stop ends the background work and waits for it. Leases and sessions stay
// in the store for other replicas.
func (b *Broker) Stop() {
	b.stopOnce.Do(func() {
		if b.cancel != nil {
			b.cancel()
			<-b.done
		}
	})
}

// Connections returns the configured connection names.
func (b *Broker) Connections() []string {
	names := make([]string, 0, len(b.connections))
	for name := range b.connections {
		names = append(names, name)
	}
	return names
}

func (b *Broker) connection(name string) (*Connection, error) {
	if name == "" {
		return nil, invalidArgument("connection", "the connection name is empty; set it to a configured connection")
	}
	c, ok := b.connections[name]
	if !ok {
		return nil, &Error{
			Reason:   ReasonConnectionNotFound,
			Message:  fmt.Sprintf("connection %q is not configured on this broker", name),
			Metadata: map[string]string{"connection": name},
		}
	}
	return c, nil
}

// listen keeps a notification listener running, reconnecting with backoff.
func (b *Broker) listen(ctx context.Context, ready chan struct{}) {
	var once sync.Once
	markReady := func() { once.Do(func() { close(ready) }) }
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := b.store.Listen(ctx, func() { markReady(); backoff = 100 * time.Millisecond }, b.onNotify(ctx))
		if ctx.Err() != nil {
			return
		}
		b.logger.WarnContext(ctx, "seat notification listener stopped; waiters fall back to polling until it reconnects",
			"err", err, "retry_in", backoff)
		// Waiters poll meanwhile, and the first start must not hang on a
		// database that is down: let Start return.
		markReady()
		b.wake.notifyAll()
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// heartbeat keeps this replica's waiters alive in the queue. Waiters whose
// replica stops (a crash) expire within waiterLiveness and get no seat.
func (b *Broker) heartbeat(ctx context.Context) {
	ticker := time.NewTicker(waiterHeartbeat)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		ids := b.wake.leaseIDs()
		if err := b.store.ExtendWaiters(ctx, ids, b.clock.Now().Add(waiterLiveness)); err != nil && ctx.Err() == nil {
			b.logger.WarnContext(ctx, "extending waiters failed; they may lose their place if it keeps failing",
				"waiters", len(ids), "err", err)
		}
	}
}

// onNotify returns the handler of seat notifications. When this replica has
// waiters of the connection, it wakes them to look for their grants, then
// grants any free seat to the oldest waiters (a seat freed while a waiter
// was still joining the queue).
func (b *Broker) onNotify(ctx context.Context) func(connection string) {
	return func(connection string) {
		if !b.wake.hasWaiters(connection) {
			return
		}
		// Wake the waiters first: a grant that the notification reports is
		// already theirs, and a grant made here sends its own notification.
		b.wake.notify(connection)
		if _, err := b.store.Dispatch(ctx, connection, b.clock.Now()); err != nil && ctx.Err() == nil {
			b.logger.WarnContext(ctx, "dispatch after notification failed", "connection", connection, "err", err)
		}
	}
}
