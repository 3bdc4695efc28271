package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// ThroughputResult is the outcome of the throughput and ceiling scenarios.
type ThroughputResult struct {
	Mode         string  `json:"mode"`
	Seats        int     `json:"seats"`
	PoolMaxConns int     `json:"pool_max_conns"`
	LevelSeconds float64 `json:"level_seconds"`
	Rounds       int     `json:"rounds"`
	// Levels has one entry per caller count.
	Levels []ThroughputLevel `json:"levels"`
	// Statements are the broker database's busiest statements during the
	// broker phases, when Config.Diagnose is set.
	Statements []StatementStat `json:"statements,omitempty"`
	// Waits are the wait events of the broker database's active backends,
	// sampled every 10 ms during the run, when Config.Diagnose is set.
	Waits []WaitEvent `json:"waits,omitempty"`
	Load  LoadRange   `json:"load_average"`
}

// ThroughputLevel is one caller count of the throughput scenario.
type ThroughputLevel struct {
	Callers int `json:"callers"`
	// CyclesPerSec is the median over the rounds of the broker's
	// acquire-and-release cycles per second; 0 when not run.
	CyclesPerSec float64 `json:"cycles_per_s"`
	// CeilingCyclesPerSec is the median over the rounds of the ceiling:
	// two single-row update transactions per cycle, over pgx.
	CeilingCyclesPerSec float64 `json:"ceiling_cycles_per_s"`
	// NotifyCeilingCyclesPerSec is the ceiling with a NOTIFY in each
	// release transaction, when Config.Diagnose is set.
	NotifyCeilingCyclesPerSec float64 `json:"notify_ceiling_cycles_per_s,omitempty"`
	// Ratio is the median over the rounds of the broker's cycles per
	// second divided by the ceiling's in the same round.
	Ratio                    float64   `json:"ratio"`
	RoundCyclesPerSec        []float64 `json:"round_cycles_per_s,omitempty"`
	RoundCeilingCyclesPerSec []float64 `json:"round_ceiling_cycles_per_s,omitempty"`
	// Acquire and Release are the broker's call latencies over all rounds.
	Acquire Latency `json:"acquire"`
	Release Latency `json:"release"`
	// CeilingCycle is the latency of one ceiling cycle (both updates).
	CeilingCycle Latency `json:"ceiling_cycle"`
	// CPU and CeilingCPU split the machine's CPU time per cycle, averaged
	// over the rounds; nil when /proc could not be read.
	CPU              *CPUPerCycle `json:"cpu_per_cycle,omitempty"`
	CeilingCPU       *CPUPerCycle `json:"ceiling_cpu_per_cycle,omitempty"`
	NotifyCeilingCPU *CPUPerCycle `json:"notify_ceiling_cpu_per_cycle,omitempty"`
	Errors           int          `json:"errors"`
	FirstError       string       `json:"first_error,omitempty"`
}

// LoadRange is the load average when a scenario started and ended.
type LoadRange struct {
	Start LoadAverage `json:"start"`
	End   LoadAverage `json:"end"`
}

// runThroughput runs the throughput scenario, the ceiling, or both
// interleaved: in every round, each caller count runs the ceiling and then
// the broker, so that both see the same machine.
func (r *runner) runThroughput(ctx context.Context) (*ThroughputResult, error) {
	cfg := r.cfg.Throughput
	wantBroker, wantCeiling := r.cfg.selected(ScenarioThroughput), r.cfg.selected(ScenarioCeiling)
	maxCallers := slices.Max(cfg.Callers)
	res := &ThroughputResult{Seats: maxCallers, PoolMaxConns: r.cfg.PoolMaxConns,
		LevelSeconds: cfg.Duration.Seconds(), Rounds: cfg.Rounds, Load: LoadRange{Start: readLoadAverage()}}

	d, err := r.throughputDeployment(ctx, maxCallers, wantBroker)
	if err != nil {
		return nil, err
	}
	defer r.closeDeployment(d)
	res.Mode = d.mode

	var clients []acubrokerv1.SessionServiceClient
	if wantBroker {
		var closeClients func()
		clients, closeClients, err = d.dial(0, maxCallers)
		if err != nil {
			return nil, err
		}
		defer closeClients()
		r.log.Info("throughput: signing in the seats", "seats", maxCallers)
		if err := warmClients(ctx, clients, d.connection); err != nil {
			return nil, fmt.Errorf("throughput warm-up: %w", err)
		}
	}
	var ceiling *ceilingBench
	if wantCeiling {
		if ceiling, err = r.newCeiling(ctx, d, maxCallers); err != nil {
			return nil, err
		}
		defer ceiling.close()
	}
	var stmts *statementsBench
	if wantBroker {
		if stmts, err = r.startStatements(ctx, d); err != nil {
			return nil, err
		}
	}

	levels := make([]levelRuns, len(cfg.Callers))
	profiling := r.cfg.CPUProfile != "" && wantBroker
	if profiling {
		// The profile covers the broker phases only, so the ceiling runs
		// after them.
		if err := r.profileBroker(ctx, d, clients, levels); err != nil {
			return nil, err
		}
	}
	for round := range cfg.Rounds {
		for i, callers := range cfg.Callers {
			if wantCeiling {
				r.log.Info("ceiling", "round", round+1, "callers", callers)
				levels[i].ceiling = append(levels[i].ceiling, ceiling.run(ctx, callers, cfg.Duration, false, d))
				if r.cfg.Diagnose {
					r.log.Info("ceiling with NOTIFY", "round", round+1, "callers", callers)
					levels[i].notify = append(levels[i].notify, ceiling.run(ctx, callers, cfg.Duration, true, d))
				}
			}
			if wantBroker && !profiling {
				r.log.Info("throughput", "round", round+1, "callers", callers)
				levels[i].broker = append(levels[i].broker, runLevel(ctx, d, clients[:callers], cfg.Duration))
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
	}
	for i, callers := range cfg.Callers {
		res.Levels = append(res.Levels, levels[i].summary(callers))
	}
	if stmts != nil {
		res.Waits = stmts.waits()
		res.Statements, err = stmts.collect(ctx, res.totalCycles())
		if err != nil {
			return nil, err
		}
	}
	res.Load.End = readLoadAverage()
	return res, nil
}

// throughputDeployment starts one broker with a connection of seats
// seats, or wraps the given brokers. The ceiling alone needs no broker.
func (r *runner) throughputDeployment(ctx context.Context, seats int, wantBroker bool) (*deployment, error) {
	if r.cfg.External != nil {
		return r.external()
	}
	if !wantBroker {
		return &deployment{mode: "none", postmaster: r.postmaster}, nil
	}
	emu := emulator.DefaultConfig()
	emu.Seats = seats
	return r.deploy(ctx, deploySpec{
		Name:     "throughput",
		Conns:    []connSpec{{Name: "erp", Seats: seats, MaxWait: 30 * time.Second}},
		Replicas: 1,
		Emulator: emu,
	})
}

// profileBroker runs every round of the broker phases under the CPU
// profiler.
func (r *runner) profileBroker(ctx context.Context, d *deployment, clients []acubrokerv1.SessionServiceClient,
	levels []levelRuns) error {
	f, err := os.Create(r.cfg.CPUProfile)
	if err != nil {
		return fmt.Errorf("create the CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("start the CPU profile: %w", err)
	}
	for round := range r.cfg.Throughput.Rounds {
		for i, callers := range r.cfg.Throughput.Callers {
			r.log.Info("throughput, profiled", "round", round+1, "callers", callers)
			levels[i].broker = append(levels[i].broker, runLevel(ctx, d, clients[:callers], r.cfg.Throughput.Duration))
		}
	}
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		return fmt.Errorf("write the CPU profile: %w", err)
	}
	r.log.Info("wrote the CPU profile", "path", r.cfg.CPUProfile)
	return ctx.Err()
}

// warmClients has every client acquire a lease at once, then release it,
// so that each client's connection is open and one seat per client holds
// a session before anything is timed.
func warmClients(ctx context.Context, clients []acubrokerv1.SessionServiceClient, connection string) error {
	leases := make([]string, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { leases[i], errs[i] = acquire(ctx, c, connection) })
	}
	wg.Wait()
	for i, c := range clients {
		if leases[i] != "" {
			errs = append(errs, release(ctx, c, leases[i]))
		}
	}
	return errors.Join(errs...)
}

// levelRun is one round of one caller count, of the broker or the ceiling.
type levelRun struct {
	cycles   int
	elapsed  time.Duration
	acquire  []time.Duration // the ceiling's whole cycles
	release  []time.Duration
	cpu      *CPUPerCycle
	errors   int
	firstErr string
}

func (l levelRun) rate() float64 {
	if l.elapsed <= 0 {
		return 0
	}
	return float64(l.cycles) / l.elapsed.Seconds()
}

// levelRuns are the rounds of one caller count.
type levelRuns struct {
	broker, ceiling, notify []levelRun
}

// summary returns the figures of one caller count over all rounds.
func (l levelRuns) summary(callers int) ThroughputLevel {
	lvl := ThroughputLevel{Callers: callers}
	var ratios, notifyRates []float64
	for i, b := range l.broker {
		lvl.RoundCyclesPerSec = append(lvl.RoundCyclesPerSec, round1(b.rate()))
		if i < len(l.ceiling) {
			ratios = append(ratios, ratio(b.rate(), l.ceiling[i].rate()))
		}
	}
	for _, c := range l.ceiling {
		lvl.RoundCeilingCyclesPerSec = append(lvl.RoundCeilingCyclesPerSec, round1(c.rate()))
	}
	for _, n := range l.notify {
		notifyRates = append(notifyRates, n.rate())
	}

	lvl.CyclesPerSec = round1(median(lvl.RoundCyclesPerSec))
	lvl.CeilingCyclesPerSec = round1(median(lvl.RoundCeilingCyclesPerSec))
	lvl.NotifyCeilingCyclesPerSec = round1(median(notifyRates))
	lvl.Ratio = round3(median(ratios))

	var acq, rel, ceil []time.Duration
	for _, b := range l.broker {
		acq, rel = append(acq, b.acquire...), append(rel, b.release...)
	}
	for _, c := range l.ceiling {
		ceil = append(ceil, c.acquire...)
	}
	lvl.Acquire, lvl.Release, lvl.CeilingCycle = summarize(acq), summarize(rel), summarize(ceil)
	lvl.CPU, lvl.CeilingCPU, lvl.NotifyCeilingCPU = meanCPU(l.broker), meanCPU(l.ceiling), meanCPU(l.notify)

	for _, runs := range [][]levelRun{l.broker, l.ceiling, l.notify} {
		for _, r := range runs {
			lvl.Errors += r.errors
			if lvl.FirstError == "" {
				lvl.FirstError = r.firstErr
			}
		}
	}
	return lvl
}

// meanCPU averages the CPU split of the runs that have one.
func meanCPU(runs []levelRun) *CPUPerCycle {
	var sum CPUPerCycle
	n := 0
	for _, r := range runs {
		if r.cpu != nil {
			sum.BrokerMs += r.cpu.BrokerMs
			sum.BenchMs += r.cpu.BenchMs
			sum.PostgresMs += r.cpu.PostgresMs
			sum.OtherMs += r.cpu.OtherMs
			n++
		}
	}
	if n == 0 {
		return nil
	}
	f := float64(n)
	return &CPUPerCycle{BrokerMs: round3(sum.BrokerMs / f), BenchMs: round3(sum.BenchMs / f),
		PostgresMs: round3(sum.PostgresMs / f), OtherMs: round3(sum.OtherMs / f)}
}

func round1(x float64) float64 { return float64(int64(x*10+0.5)) / 10 }

// runLevel runs acquire and release without a hold on every client for
// length.
func runLevel(ctx context.Context, d *deployment, clients []acubrokerv1.SessionServiceClient, length time.Duration) levelRun {
	var s samples
	deadline := time.Now().Add(length)
	stop := func(int) bool { return time.Now().After(deadline) }
	cpuBefore := readCPU(d.pids(), d.postmaster)
	start := time.Now()
	counts := make([]int, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { counts[i] = loop(ctx, c, fixed(d.connection, 0), stop, &s) })
	}
	wg.Wait()
	run := levelRun{elapsed: time.Since(start), acquire: s.acquire, release: s.release, errors: s.errors,
		firstErr: s.firstErr}
	for _, n := range counts {
		run.cycles += n
	}
	run.cpu = cpuPerCycle(cpuBefore, readCPU(d.pids(), d.postmaster), run.cycles)
	return run
}

// totalCycles is the broker cycles of every level and round.
func (res *ThroughputResult) totalCycles() int {
	n := 0
	for _, l := range res.Levels {
		n += l.Acquire.Count
	}
	return n
}

// closeDeployment closes d and logs a failure, which cannot change the
// figures already taken.
func (r *runner) closeDeployment(d *deployment) {
	if err := d.close(); err != nil {
		r.log.Warn("stopping a deployment failed", "err", err)
	}
}
