package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/acubroker/acubroker/emulator"
)

// ScaleResult is the outcome of the scale scenario: the same load on a
// broker with one connection and on one with many, every seat holding a
// signed-in session.
type ScaleResult struct {
	Mode  string          `json:"mode"`
	Small ScaleDeployment `json:"small"`
	Large ScaleDeployment `json:"large"`
	// P99Ratio is the large deployment's acquire p99 divided by the small
	// one's.
	P99Ratio float64   `json:"p99_ratio"`
	Load     LoadRange `json:"load_average"`
}

// ScaleDeployment is one broker of the scale scenario.
type ScaleDeployment struct {
	Connections int `json:"connections"`
	// SessionsStored counts the seats that hold a session (idle or leased)
	// once every seat was signed in.
	SessionsStored int     `json:"sessions_stored"`
	WarmSeconds    float64 `json:"warm_seconds"`
	Callers        int     `json:"callers"`
	Acquire        Latency `json:"acquire"`
	Release        Latency `json:"release"`
	CyclesPerSec   float64 `json:"cycles_per_s"`
	// Memory of the broker process, when it is one: after it started,
	// after every seat was signed in, and at the end.
	MemoryStarted *MemoryUse `json:"memory_started,omitempty"`
	MemoryWarm    *MemoryUse `json:"memory_warm,omitempty"`
	MemoryEnd     *MemoryUse `json:"memory_end,omitempty"`
	Errors        int        `json:"errors"`
	FirstError    string     `json:"first_error,omitempty"`
}

// warmWorkers sign in the seats of this many connections at once.
const warmWorkers = 8

// runScale runs the scale scenario: one connection, then Connections
// connections, each with Seats seats.
func (r *runner) runScale(ctx context.Context) (*ScaleResult, error) {
	res := &ScaleResult{Load: LoadRange{Start: readLoadAverage()}}
	small, mode, err := r.scaleDeployment(ctx, 1)
	if err != nil {
		return nil, err
	}
	large, _, err := r.scaleDeployment(ctx, r.cfg.Scale.Connections)
	if err != nil {
		return nil, err
	}
	res.Mode, res.Small, res.Large = mode, *small, *large
	res.P99Ratio = ratio(large.Acquire.P99Ms, small.Acquire.P99Ms)
	res.Load.End = readLoadAverage()
	return res, nil
}

// scaleDeployment starts a broker with n connections, signs in every
// seat, and times acquires on random connections.
func (r *runner) scaleDeployment(ctx context.Context, n int) (*ScaleDeployment, string, error) {
	cfg := r.cfg.Scale
	conns := make([]connSpec, n)
	for i := range conns {
		conns[i] = connSpec{Name: fmt.Sprintf("c%04d", i), Seats: cfg.Seats, MaxWait: 30 * time.Second}
	}
	emu := emulator.DefaultConfig()
	emu.Seats = 0 // unlimited: the brokers' budgets are the limit
	d, err := r.deploy(ctx, deploySpec{Name: fmt.Sprintf("scale%d", n), Conns: conns, Replicas: 1, Emulator: emu})
	if err != nil {
		return nil, "", err
	}
	defer r.closeDeployment(d)
	res := &ScaleDeployment{Connections: n, Callers: cfg.Callers}
	pid := d.replicas[0].pid
	res.MemoryStarted = memoryOf(pid)

	r.log.Info("scale: signing in every seat", "connections", n, "seats", n*cfg.Seats)
	start := time.Now()
	if err := warmConnections(ctx, d, conns); err != nil {
		return nil, "", fmt.Errorf("scale: sign in the seats of %d connections: %w", n, err)
	}
	res.WarmSeconds = round3(time.Since(start).Seconds())
	if res.SessionsStored, err = countSessions(ctx, d.databaseURL); err != nil {
		return nil, "", err
	}
	res.MemoryWarm = memoryOf(pid)

	clients, closeClients, err := d.dial(0, cfg.Callers)
	if err != nil {
		return nil, "", err
	}
	defer closeClients()
	r.log.Info("scale: timing acquires", "connections", n, "acquires", cfg.Acquires, "callers", cfg.Callers)
	var s samples
	var left atomic.Int64
	left.Store(int64(cfg.Acquires))
	stop := func(int) bool { return left.Add(-1) < 0 }
	spec := cycleSpec{pick: func() string { return conns[rand.IntN(len(conns))].Name }}
	start = time.Now()
	var wg sync.WaitGroup
	var cycles atomic.Int64
	for _, c := range clients {
		wg.Go(func() { cycles.Add(int64(loop(ctx, c, spec, stop, &s))) })
	}
	wg.Wait()
	res.CyclesPerSec = round1(float64(cycles.Load()) / time.Since(start).Seconds())
	res.Acquire, res.Release = summarize(s.acquire), summarize(s.release)
	res.Errors, res.FirstError = s.errors, s.firstErr
	res.MemoryEnd = memoryOf(pid)
	return res, d.mode, ctx.Err()
}

// warmConnections signs in every seat of every connection: for each
// connection it holds as many leases as it has seats at once.
func warmConnections(ctx context.Context, d *deployment, conns []connSpec) error {
	clients, closeClients, err := d.dial(0, warmWorkers)
	if err != nil {
		return err
	}
	defer closeClients()
	jobs := make(chan connSpec)
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			for conn := range jobs {
				if errs[i] == nil {
					errs[i] = holdAll(ctx, c, conn.Name, conn.Seats)
				}
			}
		})
	}
	for _, c := range conns {
		jobs <- c
	}
	close(jobs)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// countSessions counts the seats that hold a session.
func countSessions(ctx context.Context, url string) (int, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, fmt.Errorf("scale: connect to count sessions: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM seats WHERE state IN ('idle', 'leased')").Scan(&n); err != nil {
		return 0, fmt.Errorf("scale: count sessions: %w", err)
	}
	return n, nil
}

// memoryOf reads the memory of process pid, or returns nil for an
// in-process broker (pid 0) or when /proc cannot be read.
func memoryOf(pid int) *MemoryUse {
	if pid == 0 {
		return nil
	}
	m, err := readMemoryUse(pid)
	if err != nil {
		return nil
	}
	return &m
}
