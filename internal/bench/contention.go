package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// ContentionResult is the outcome of the contention scenario: many callers
// that hold leases for a while share a few seats.
type ContentionResult struct {
	Mode            string  `json:"mode"`
	Replicas        int     `json:"replicas"`
	Callers         int     `json:"callers"`
	Seats           int     `json:"seats"`
	HoldMs          float64 `json:"hold_ms"`
	CyclesPerCaller int     `json:"cycles_per_caller"`
	// Wait is the latency of the acquires, most of which queue.
	Wait Latency `json:"wait"`
	// FairWaitMs is callers / seats × hold: the wait of a caller that
	// joins the queue behind every other caller when each lease lasts
	// exactly the hold.
	FairWaitMs float64 `json:"fair_wait_ms"`
	// MaxOverFair is the longest wait divided by the fair wait.
	MaxOverFair float64 `json:"max_over_fair"`
	// SignIns, RefusedSignIns and PeakSessions are the emulator's counts
	// during the scenario.
	SignIns        int64     `json:"sign_ins"`
	RefusedSignIns int64     `json:"refused_sign_ins"`
	PeakSessions   int       `json:"peak_sessions"`
	Cycles         int       `json:"cycles"`
	ElapsedSeconds float64   `json:"elapsed_seconds"`
	Errors         int       `json:"errors"`
	FirstError     string    `json:"first_error,omitempty"`
	Load           LoadRange `json:"load_average"`
}

// runContention runs the contention scenario.
func (r *runner) runContention(ctx context.Context) (*ContentionResult, error) {
	cfg := r.cfg.Contention
	res := &ContentionResult{Callers: cfg.Callers, Seats: cfg.Seats, HoldMs: ms(cfg.Hold),
		CyclesPerCaller: cfg.Cycles, Load: LoadRange{Start: readLoadAverage()}}
	var d *deployment
	var err error
	if r.cfg.External != nil {
		d, err = r.external()
	} else {
		emu := emulator.DefaultConfig()
		emu.Seats = cfg.Seats
		d, err = r.deploy(ctx, deploySpec{
			Name:     "contention",
			Conns:    []connSpec{{Name: "erp", Seats: cfg.Seats, MaxWait: 30 * time.Second}},
			Replicas: cfg.Replicas,
			Emulator: emu,
		})
	}
	if err != nil {
		return nil, err
	}
	defer r.closeDeployment(d)
	res.Mode, res.Replicas = d.mode, len(d.replicas)

	clients, closeClients, err := dialSpread(d, cfg.Callers)
	if err != nil {
		return nil, err
	}
	defer closeClients()
	before, err := d.stats(ctx)
	if err != nil {
		return nil, err
	}
	if err := d.resetPeak(ctx); err != nil {
		return nil, err
	}

	r.log.Info("contention", "callers", cfg.Callers, "seats", cfg.Seats, "hold", cfg.Hold, "replicas", res.Replicas)
	// The loop stops by itself after its cycles. The timeout only guards
	// against a broker that stops responding.
	fair := time.Duration(cfg.Callers) * cfg.Hold / time.Duration(cfg.Seats)
	runCtx, cancel := context.WithTimeout(ctx, time.Duration(cfg.Cycles+2)*fair+time.Minute)
	defer cancel()
	var s samples
	stop := func(done int) bool { return done >= cfg.Cycles }
	counts := make([]int, len(clients))
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { counts[i] = loop(runCtx, c, fixed(d.connection, cfg.Hold), stop, &s) })
	}
	wg.Wait()
	res.ElapsedSeconds = round3(time.Since(start).Seconds())
	for _, n := range counts {
		res.Cycles += n
	}

	after, err := d.stats(ctx)
	if err != nil {
		return nil, err
	}
	res.SignIns = after.SignIns - before.SignIns
	res.RefusedSignIns = sumCounts(after.RefusedSignIns) - sumCounts(before.RefusedSignIns)
	res.PeakSessions = after.PeakSessions
	res.Wait = summarize(s.acquire)
	res.FairWaitMs = ms(fair)
	res.MaxOverFair = ratio(res.Wait.MaxMs, res.FairWaitMs)
	res.Errors, res.FirstError = s.errors, s.firstErr
	res.Load.End = readLoadAverage()
	return res, nil
}

// dialSpread opens one client connection per caller, spread round robin
// over the deployment's replicas.
func dialSpread(d *deployment, callers int) ([]acubrokerv1.SessionServiceClient, func(), error) {
	var clients []acubrokerv1.SessionServiceClient
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	perReplica := make([][]acubrokerv1.SessionServiceClient, len(d.replicas))
	for i := range d.replicas {
		n := callers / len(d.replicas)
		if i < callers%len(d.replicas) {
			n++
		}
		if n == 0 {
			continue
		}
		cs, closeFn, err := d.dial(i, n)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("dial replica %d: %w", i, err)
		}
		perReplica[i] = cs
		closers = append(closers, closeFn)
	}
	for i := range callers {
		rep := i % len(d.replicas)
		clients = append(clients, perReplica[rep][i/len(d.replicas)])
	}
	return clients, closeAll, nil
}

func sumCounts(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
