package broker

import "time"

// Observer receives the broker's events, for metrics. Its methods are
// called on the broker's hot paths: they must be fast, must not block, and
// must be safe for concurrent use. An error argument is nil on success;
// classify it with errors.Is against the package's sentinels.
type Observer interface {
	// Acquired is called when an Acquire ends, after waiting queued for
	// waited (zero when a seat was free at once).
	Acquired(connection string, waited time.Duration, err error)
	// LeaseEnded is called when a lease held for held ends by release,
	// sign-out or expiry; state is its final state.
	LeaseEnded(connection string, state LeaseState, held time.Duration)
	// SignedIn is called after each sign-in request to Acumatica.
	SignedIn(connection string, took time.Duration, err error)
	// Refreshed is called after each refresh request to Acumatica.
	Refreshed(connection string, took time.Duration, err error)
	// SignedOut is called after each sign-out request to Acumatica.
	SignedOut(connection string, took time.Duration, err error)
}

// NopObserver ignores every event.
type NopObserver struct{}

// Acquired implements Observer.
func (NopObserver) Acquired(string, time.Duration, error) {}

// LeaseEnded implements Observer.
func (NopObserver) LeaseEnded(string, LeaseState, time.Duration) {}

// SignedIn implements Observer.
func (NopObserver) SignedIn(string, time.Duration, error) {}

// Refreshed implements Observer.
func (NopObserver) Refreshed(string, time.Duration, error) {}

// SignedOut implements Observer.
func (NopObserver) SignedOut(string, time.Duration, error) {}
