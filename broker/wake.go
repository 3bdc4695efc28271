package broker

import "sync"

// wakeHub fans store notifications out to the waiters of this replica.
// Waiters of a connection share one channel, closed and replaced on every
// notification for that connection.
type wakeHub struct {
	mu sync.Mutex
	// channels maps a connection name to the channel its waiters block on.
	channels map[string]chan struct{}
	// waiters counts the waiters of each connection on this replica.
	waiters map[string]int
	// leases holds the lease ids of this replica's acquires in progress,
	// whose waiter rows it keeps alive.
	leases map[string]struct{}
}

func newWakeHub() *wakeHub {
	return &wakeHub{
		channels: make(map[string]chan struct{}),
		waiters:  make(map[string]int),
		leases:   make(map[string]struct{}),
	}
}

// register counts a waiter of connection. A waiter with a lease id in the
// queue has its row kept alive by the heartbeat; pass "" for none.
func (h *wakeHub) register(connection, leaseID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.waiters[connection]++
	if leaseID != "" {
		h.leases[leaseID] = struct{}{}
	}
}

func (h *wakeHub) unregister(connection, leaseID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waiters[connection]--; h.waiters[connection] <= 0 {
		delete(h.waiters, connection)
	}
	delete(h.leases, leaseID)
}

// leaseIDs returns the lease ids of this replica's acquires in progress.
func (h *wakeHub) leaseIDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, 0, len(h.leases))
	for id := range h.leases {
		ids = append(ids, id)
	}
	return ids
}

func (h *wakeHub) hasWaiters(connection string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.waiters[connection] > 0
}

// wait returns a channel closed at the next notification for connection.
func (h *wakeHub) wait(connection string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.channels[connection]
	if !ok {
		c = make(chan struct{})
		h.channels[connection] = c
	}
	return c
}

func (h *wakeHub) notify(connection string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.channels[connection]; ok {
		close(c)
		delete(h.channels, connection)
	}
}

func (h *wakeHub) notifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, c := range h.channels {
		close(c)
		delete(h.channels, name)
	}
}
