package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
)

// Target is one of the project's goals, checked against the run.
type Target struct {
	Name  string `json:"name"`
	Goal  string `json:"goal"`
	Value string `json:"value"`
	// Met is nil when the scenario did not run or the figure was not
	// measured.
	Met *bool `json:"met"`
}

// Status returns "met", "MISSED" or "not measured".
func (t Target) Status() string {
	switch {
	case t.Met == nil:
		return "not measured"
	case *t.Met:
		return "met"
	}
	return "MISSED"
}

// Project targets.
const (
	targetThroughputCallers = 16
	targetThroughputRatio   = 0.6
	targetHandoffMarginMs   = 5
	targetContentionRatio   = 1.5
	targetScaleP99Ratio     = 1.5
	targetScaleRSSBytes     = 100 << 20
)

// evaluateTargets checks the results against the project's targets.
func evaluateTargets(res *Results, cfg *Config) []Target {
	met := func(ok bool) *bool { return &ok }
	var out []Target

	t := Target{Name: "throughput", Goal: fmt.Sprintf("at %d callers, at least %.1f of the ceiling",
		targetThroughputCallers, targetThroughputRatio), Value: "not run"}
	if res.Throughput != nil {
		t.Value = fmt.Sprintf("no level with %d callers and a ceiling", targetThroughputCallers)
		for _, l := range res.Throughput.Levels {
			if l.Callers == targetThroughputCallers && l.CyclesPerSec > 0 && l.CeilingCyclesPerSec > 0 {
				t.Value = fmt.Sprintf("%.2f (%.0f of %.0f cycles/s)", l.Ratio, l.CyclesPerSec, l.CeilingCyclesPerSec)
				t.Met = met(l.Ratio >= targetThroughputRatio)
			}
		}
	}
	out = append(out, t)

	t = Target{Name: "hand-off", Goal: fmt.Sprintf("p99 within %d ms of the raw NOTIFY p99", targetHandoffMarginMs),
		Value: "not run"}
	if h := res.Handoff; h != nil && h.Handoff.Count > 0 {
		t.Value = fmt.Sprintf("%.2f ms vs %.2f ms (+%.2f ms)", h.Handoff.P99Ms, h.Notify.P99Ms, h.P99OverNotifyMs)
		t.Met = met(h.P99OverNotifyMs <= targetHandoffMarginMs)
	}
	out = append(out, t)

	t = Target{Name: "contention wait", Goal: fmt.Sprintf("longest wait at most %.1f x the fair wait",
		targetContentionRatio), Value: "not run"}
	r := Target{Name: "contention sign-ins", Goal: "no refused sign-in", Value: "not run"}
	if c := res.Contention; c != nil && c.Wait.Count > 0 {
		t.Value = fmt.Sprintf("%.2f (%.0f ms vs fair %.0f ms)", c.MaxOverFair, c.Wait.MaxMs, c.FairWaitMs)
		t.Met = met(c.MaxOverFair <= targetContentionRatio)
		r.Value = fmt.Sprintf("%d refused, %d sign-ins for %d seats", c.RefusedSignIns, c.SignIns, c.Seats)
		r.Met = met(c.RefusedSignIns == 0)
	}
	out = append(out, t, r)

	t = Target{Name: "seat reuse", Goal: "sign-ins equal to the seats", Value: "not run"}
	if u := res.Reuse; u != nil && u.Acquire.Count > 0 {
		t.Value = fmt.Sprintf("%d sign-ins for %d seats over %d acquires", u.SignIns, u.Seats, u.Acquire.Count)
		t.Met = met(u.SignIns == int64(u.Seats))
		if u.RejectedTokens > 0 {
			t.Value += fmt.Sprintf(", but %d tokens rejected", u.RejectedTokens)
			t.Met = met(false)
		}
	}
	out = append(out, t)

	t = Target{Name: "scale latency", Goal: fmt.Sprintf("acquire p99 with %d sessions at most %.1f x that with %d",
		cfg.Scale.Connections*cfg.Scale.Seats, targetScaleP99Ratio, cfg.Scale.Seats), Value: "not run"}
	m := Target{Name: "scale memory", Goal: fmt.Sprintf("broker RSS under %d MB", targetScaleRSSBytes>>20),
		Value: "not run"}
	if s := res.Scale; s != nil {
		t.Value = fmt.Sprintf("%.2f (%.2f ms vs %.2f ms)", s.P99Ratio, s.Large.Acquire.P99Ms, s.Small.Acquire.P99Ms)
		t.Met = met(s.P99Ratio <= targetScaleP99Ratio)
		m.Value = "not measured in process"
		if peak := s.Large.MemoryEnd; peak != nil {
			m.Value = fmt.Sprintf("%.1f MB (peak %.1f MB)", mb(peak.RSSBytes), mb(peak.PeakRSSBytes))
			m.Met = met(peak.PeakRSSBytes < targetScaleRSSBytes)
		}
	}
	return append(out, t, m)
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// otherWorkShare is the share of a throughput level's CPU time that work
// outside the benchmark may take before the results warn about it.
const otherWorkShare = 0.1

// loadWarnings warns when the machine was busy with other work: a 1-minute
// load average above the CPU count at the start of the run, or other
// processes that took more than otherWorkShare of a throughput level's
// CPU time. The benchmark itself raises the load average to about 4 on 2
// CPUs, so a high load average later in the run is expected.
func loadWarnings(res *Results) []string {
	var warnings []string
	if cpus := float64(res.Machine.CPUs); cpus > 0 && res.Load.Start[0] > cpus {
		warnings = append(warnings, fmt.Sprintf("the 1-minute load average was %.2f on %d CPUs when the run "+
			"started: other processes shared the CPUs, so rerun when it is lower", res.Load.Start[0], res.Machine.CPUs))
	}
	if res.Throughput == nil {
		return warnings
	}
	for _, l := range res.Throughput.Levels {
		for i, c := range []*CPUPerCycle{l.CPU, l.CeilingCPU} {
			if c == nil {
				continue
			}
			name := []string{"broker", "ceiling"}[i]
			total := c.BrokerMs + c.BenchMs + c.PostgresMs + c.OtherMs
			if total > 0 && c.OtherMs > otherWorkShare*total {
				warnings = append(warnings, fmt.Sprintf("other work took %.0f%% of the CPU time of the %s at %d "+
					"callers, so its figures are low: rerun when the machine is idle", 100*c.OtherMs/total, name, l.Callers))
			}
		}
	}
	return warnings
}

// WriteJSON writes res to path, creating its directory.
func WriteJSON(path string, res *Results) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the results: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteTable writes res as plain-text tables.
func WriteTable(w io.Writer, res *Results) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }
	p("brokerbench %s, mode %s, load average %s at the start and %s at the end",
		res.StartedAt.Format("2006-01-02 15:04:05Z"), res.Mode, res.Load.Start, res.Load.End)
	p("machine: %d CPUs (%s), %.1f GiB, kernel %s, %s", res.Machine.CPUs, res.Machine.CPUModel,
		float64(res.Machine.MemoryBytes)/(1<<30), res.Machine.Kernel, res.Machine.GoVersion)
	p("postgres %s: %s", res.Postgres.Version, settingsLine(res.Postgres.Settings))
	writeThroughput(p, res.Throughput)
	writeContention(p, res.Contention)
	writeHandoff(p, res.Handoff)
	writeReuse(p, res.Reuse)
	writeScale(p, res.Scale)
	p("\nTargets")
	p("target\tgoal\tvalue\tstatus")
	for _, t := range res.Targets {
		p("%s\t%s\t%s\t%s", t.Name, t.Goal, t.Value, t.Status())
	}
	for _, warn := range res.Warnings {
		p("\nWARNING: %s", warn)
	}
	for _, e := range res.Errors {
		p("\nFAILED: %s", e)
	}
	return tw.Flush()
}

func settingsLine(settings map[string]string) string {
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + settings[k]
	}
	return strings.Join(parts, " ")
}

type printer func(format string, args ...any)

func writeThroughput(p printer, t *ThroughputResult) {
	if t == nil {
		return
	}
	p("\nThroughput and ceiling: acquire and release without a hold, %d seats, %d round(s) of %gs per level, "+
		"brokers %s, pool_max_conns %s; load %s -> %s", t.Seats, t.Rounds, t.LevelSeconds, t.Mode,
		poolSize(t.PoolMaxConns), t.Load.Start, t.Load.End)
	p("callers\tbroker cycles/s\tceiling cycles/s\tratio\tacquire p50/p99/p99.9 ms\trelease p50/p99 ms\t" +
		"ceiling cycle p50/p99 ms\terrors")
	for _, l := range t.Levels {
		p("%d\t%.0f\t%.0f\t%.3f\t%.2f / %.2f / %.2f\t%.2f / %.2f\t%.2f / %.2f\t%d", l.Callers, l.CyclesPerSec,
			l.CeilingCyclesPerSec, l.Ratio, l.Acquire.P50Ms, l.Acquire.P99Ms, l.Acquire.P999Ms, l.Release.P50Ms,
			l.Release.P99Ms, l.CeilingCycle.P50Ms, l.CeilingCycle.P99Ms, l.Errors)
	}
	if slices.ContainsFunc(t.Levels, func(l ThroughputLevel) bool { return l.CPU != nil || l.CeilingCPU != nil }) {
		withNotify := slices.ContainsFunc(t.Levels, func(l ThroughputLevel) bool { return l.NotifyCeilingCPU != nil })
		p("\nCPU time per cycle, ms: broker processes / benchmark process / PostgreSQL / other work on the machine")
		header := "callers\tbroker\tceiling"
		if withNotify {
			header += "\tceiling with NOTIFY"
		}
		p("%s", header)
		for _, l := range t.Levels {
			line := fmt.Sprintf("%d\t%s\t%s", l.Callers, cpuLine(l.CPU), cpuLine(l.CeilingCPU))
			if withNotify {
				line += "\t" + cpuLine(l.NotifyCeilingCPU)
			}
			p("%s", line)
		}
	}
	if slices.ContainsFunc(t.Levels, func(l ThroughputLevel) bool { return l.NotifyCeilingCyclesPerSec > 0 }) {
		p("\nCeiling with a NOTIFY in each release transaction, one connection listening")
		p("callers\tcycles/s\tof the ceiling\tbroker of it")
		for _, l := range t.Levels {
			p("%d\t%.0f\t%.3f\t%.3f", l.Callers, l.NotifyCeilingCyclesPerSec,
				ratio(l.NotifyCeilingCyclesPerSec, l.CeilingCyclesPerSec), ratio(l.CyclesPerSec, l.NotifyCeilingCyclesPerSec))
		}
	}
	for _, l := range t.Levels {
		if l.FirstError != "" {
			p("first error at %d callers: %s", l.Callers, l.FirstError)
		}
	}
	writeDiagnostics(p, "cycle", t.Statements, t.Waits)
}

// writeDiagnostics writes the statements per unit of work and the wait
// events, when there are any.
func writeDiagnostics(p printer, unit string, stmts []StatementStat, waits []WaitEvent) {
	if len(stmts) > 0 {
		p("\nBusiest statements of the broker database (pg_stat_statements)")
		p("calls/%s\tmean ms\tshare of time\tstatement", unit)
		for _, s := range stmts {
			p("%.3f\t%.3f\t%.3f\t%s", s.CallsPerCycle, s.MeanMs, s.ShareOfTime, s.Query)
		}
	}
	if len(waits) > 0 {
		p("\nWait events of the broker database's active backends, sampled every 10 ms (CPU: no wait event)")
		p("share\tevent")
		for _, w := range waits {
			p("%.3f\t%s", w.Share, w.Event)
		}
	}
}

func cpuLine(c *CPUPerCycle) string {
	if c == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f / %.3f / %.3f / %.3f", c.BrokerMs, c.BenchMs, c.PostgresMs, c.OtherMs)
}

func poolSize(n int) string {
	if n == 0 {
		return "default"
	}
	return fmt.Sprint(n)
}

func writeContention(p printer, c *ContentionResult) {
	if c == nil {
		return
	}
	p("\nContention: %d callers on %d seats over %d replica(s) (%s), %d leases each held %.0f ms; load %s -> %s",
		c.Callers, c.Seats, c.Replicas, c.Mode, c.CyclesPerCaller, c.HoldMs, c.Load.Start, c.Load.End)
	p("wait p50\tp99\tmax ms\tfair wait ms\tmax/fair\tsign-ins\trefused\tpeak sessions\terrors")
	p("%.1f\t%.1f\t%.1f\t%.1f\t%.3f\t%d\t%d\t%d\t%d", c.Wait.P50Ms, c.Wait.P99Ms, c.Wait.MaxMs, c.FairWaitMs,
		c.MaxOverFair, c.SignIns, c.RefusedSignIns, c.PeakSessions, c.Errors)
	if c.FirstError != "" {
		p("first error: %s", c.FirstError)
	}
}

func writeHandoff(p printer, h *HandoffResult) {
	if h == nil {
		return
	}
	p("\nHand-off: release on replica A while the waiter waits on replica B (%s); load %s -> %s",
		h.Mode, h.Load.Start, h.Load.End)
	p("measurement\tcount\tp50 ms\tp99 ms\tmax ms")
	row := func(name string, l Latency) {
		p("%s\t%d\t%.3f\t%.3f\t%.3f", name, l.Count, l.P50Ms, l.P99Ms, l.MaxMs)
	}
	row("release on A -> acquire returns on B", h.Handoff)
	row("release call on A", h.Release)
	row("raw NOTIFY -> receipt", h.Notify)
	if h.NotifyInTx != nil {
		row("UPDATE + NOTIFY transaction -> receipt", *h.NotifyInTx)
	}
	p("hand-off p99 - raw NOTIFY p99: %.3f ms; errors %d", h.P99OverNotifyMs, h.Errors)
	writeDiagnostics(p, "hand-off", h.Statements, h.Waits)
	if h.FirstError != "" {
		p("first error: %s", h.FirstError)
	}
}

func writeReuse(p printer, u *ReuseResult) {
	if u == nil {
		return
	}
	p("\nSeat reuse: %d acquires by %d callers on %d seats over %.0f simulated minutes (%s); load %s -> %s",
		u.Acquires, u.Callers, u.Seats, u.SimulatedMinutes, u.Mode, u.Load.Start, u.Load.End)
	p("sign-ins\tper 10k acquires\trefreshes\tper session\texpected per session\tsessions opened\trefused\t" +
		"peak sessions\ttokens rejected\tacquire p50/p99 ms\terrors")
	p("%d\t%.1f\t%d\t%.2f\t%.0f\t%d\t%d\t%d\t%d of %d\t%.2f / %.2f\t%d", u.SignIns, u.SignInsPer10k, u.Refreshes,
		u.RefreshesPerSession, u.ExpectedRefreshesPerSession, u.SessionsOpened, u.RefusedSignIns, u.PeakSessions,
		u.RejectedTokens, u.DataCalls, u.Acquire.P50Ms, u.Acquire.P99Ms, u.Errors)
	if u.FirstError != "" {
		p("first error: %s", u.FirstError)
	}
}

func writeScale(p printer, s *ScaleResult) {
	if s == nil {
		return
	}
	p("\nScale: every seat signed in, then acquire and release on random connections (%s); load %s -> %s",
		s.Mode, s.Load.Start, s.Load.End)
	p("connections\tsessions\twarm-up s\tcallers\tcycles/s\tacquire p50/p99/p99.9 ms\tRSS started/warm/end MB\t" +
		"peak RSS MB\terrors")
	for _, d := range []ScaleDeployment{s.Small, s.Large} {
		p("%d\t%d\t%.1f\t%d\t%.0f\t%.2f / %.2f / %.2f\t%s\t%s\t%d", d.Connections, d.SessionsStored, d.WarmSeconds,
			d.Callers, d.CyclesPerSec, d.Acquire.P50Ms, d.Acquire.P99Ms, d.Acquire.P999Ms,
			rssLine(d.MemoryStarted, d.MemoryWarm, d.MemoryEnd), peakLine(d.MemoryEnd), d.Errors)
	}
	p("acquire p99 ratio (large / small): %.3f", s.P99Ratio)
	for _, d := range []ScaleDeployment{s.Small, s.Large} {
		if d.FirstError != "" {
			p("first error with %d connections: %s", d.Connections, d.FirstError)
		}
	}
}

func rssLine(ms ...*MemoryUse) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = "-"
		if m != nil {
			parts[i] = fmt.Sprintf("%.1f", mb(m.RSSBytes))
		}
	}
	return strings.Join(parts, " / ")
}

func peakLine(m *MemoryUse) string {
	if m == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f", mb(m.PeakRSSBytes))
}
