package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/acubroker/acubroker/internal/bench"
	"github.com/acubroker/acubroker/internal/testdb"
)

// quickArgs returns the flags of a smoke run into dir, on the server in
// BROKER_TEST_DATABASE_URL when it is set, else on a cluster of its own.
func quickArgs(dir string, extra ...string) []string {
	args := []string{"-quick", "-out", dir}
	if url := os.Getenv(testdb.URLEnv); url != "" {
		args = append(args, "-admin-url", url)
	}
	return append(args, extra...)
}

func runQuick(t *testing.T, args []string) (*bench.Results, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("brokerbench %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, &stdout, &stderr)
	}
	data, err := os.ReadFile(filepath.Join(args[slices.Index(args, "-out")+1], "results.json"))
	if err != nil {
		t.Fatalf("read results.json: %v", err)
	}
	var res bench.Results
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("decode results.json: %v", err)
	}
	return &res, stdout.String()
}

func TestQuickRunInProcess(t *testing.T) {
	t.Parallel()
	res, table := runQuick(t, quickArgs(t.TempDir(), "-mode", "inprocess"))
	if len(res.Errors) > 0 {
		t.Errorf("scenario errors: %v", res.Errors)
	}
	if !strings.Contains(table, "Targets") || !strings.Contains(table, "load average") {
		t.Errorf("table lacks the targets or the load average:\n%s", table)
	}

	if res.Throughput == nil || len(res.Throughput.Levels) != 2 {
		t.Fatalf("throughput = %+v, expected two levels", res.Throughput)
	}
	for _, l := range res.Throughput.Levels {
		if l.CyclesPerSec <= 0 || l.CeilingCyclesPerSec <= 0 || l.Ratio <= 0 {
			t.Errorf("throughput at %d callers: %.1f cycles/s, ceiling %.1f, ratio %.3f; expected all positive",
				l.Callers, l.CyclesPerSec, l.CeilingCyclesPerSec, l.Ratio)
		}
		if l.Errors != 0 {
			t.Errorf("throughput at %d callers: %d errors, first %q", l.Callers, l.Errors, l.FirstError)
		}
	}

	c := res.Contention
	if c == nil {
		t.Fatal("no contention result")
	}
	if c.Cycles != 8*2 || c.Wait.Count != 8*2 {
		t.Errorf("contention: %d cycles and %d waits, expected 16 each", c.Cycles, c.Wait.Count)
	}
	if c.RefusedSignIns != 0 || c.SignIns != 2 || c.PeakSessions > 2 {
		t.Errorf("contention: %d refused, %d sign-ins, peak %d; expected 0, 2, at most 2",
			c.RefusedSignIns, c.SignIns, c.PeakSessions)
	}
	if c.FairWaitMs != 80 || c.MaxOverFair <= 0 {
		t.Errorf("contention: fair wait %.1f ms, max/fair %.3f; expected 80 ms and a positive ratio", c.FairWaitMs, c.MaxOverFair)
	}

	h := res.Handoff
	if h == nil {
		t.Fatal("no hand-off result")
	}
	if h.Handoff.Count != 10 || h.Notify.Count != 50 || h.NotifyInTx == nil || h.NotifyInTx.Count != 50 {
		t.Errorf("hand-off: %d hand-offs, %d raw and %v in-transaction notifications; expected 10, 50 and 50",
			h.Handoff.Count, h.Notify.Count, h.NotifyInTx)
	}
	if h.Handoff.P50Ms <= 0 || h.Notify.P50Ms <= 0 {
		t.Errorf("hand-off p50 %.3f ms, notify p50 %.3f ms; expected both positive", h.Handoff.P50Ms, h.Notify.P50Ms)
	}

	u := res.Reuse
	if u == nil {
		t.Fatal("no seat reuse result")
	}
	if u.Acquire.Count != 200 || u.SignIns != 2 || u.SimulatedMinutes != 100 {
		t.Errorf("seat reuse: %d acquires, %d sign-ins over %.0f minutes; expected 200, 2 and 100",
			u.Acquire.Count, u.SignIns, u.SimulatedMinutes)
	}
	if u.DataCalls != 200 || u.RejectedTokens != 0 {
		t.Errorf("seat reuse: %d data calls, %d tokens rejected; expected 200 and 0", u.DataCalls, u.RejectedTokens)
	}
	if u.Refreshes < u.SignIns || u.ExpectedRefreshesPerSession != 1 {
		t.Errorf("seat reuse: %d refreshes of %d sessions, %.0f expected per session; expected at least one each",
			u.Refreshes, u.SignIns, u.ExpectedRefreshesPerSession)
	}

	s := res.Scale
	if s == nil {
		t.Fatal("no scale result")
	}
	if s.Small.SessionsStored != 2 || s.Large.SessionsStored != 40 {
		t.Errorf("scale: %d and %d sessions stored, expected 2 and 40", s.Small.SessionsStored, s.Large.SessionsStored)
	}
	if s.Large.Acquire.Count != 100 || s.P99Ratio <= 0 {
		t.Errorf("scale: %d acquires timed, p99 ratio %.3f; expected 100 and a positive ratio",
			s.Large.Acquire.Count, s.P99Ratio)
	}
	if len(res.Targets) != 7 {
		t.Errorf("%d targets, expected 7", len(res.Targets))
	}
}

func TestQuickRunProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/broker and starts broker processes")
	}
	t.Parallel()
	res, _ := runQuick(t, quickArgs(t.TempDir(), "-scenarios", "throughput,scale", "-callers", "2"))
	if len(res.Errors) > 0 {
		t.Errorf("scenario errors: %v", res.Errors)
	}
	if res.Throughput == nil || res.Throughput.Mode != "process" || res.Throughput.Levels[0].CyclesPerSec <= 0 {
		t.Fatalf("throughput = %+v, expected cycles by broker processes", res.Throughput)
	}
	if cpu := res.Throughput.Levels[0].CPU; cpu == nil || cpu.BrokerMs <= 0 || cpu.BenchMs <= 0 {
		t.Errorf("CPU per cycle = %+v, expected time in the broker process and in the benchmark", cpu)
	}
	if res.Throughput.Levels[0].CeilingCyclesPerSec != 0 {
		t.Errorf("ceiling ran at %.1f cycles/s although only throughput was selected",
			res.Throughput.Levels[0].CeilingCyclesPerSec)
	}
	s := res.Scale
	if s == nil || s.Large.MemoryEnd == nil || s.Small.MemoryEnd == nil {
		t.Fatalf("scale = %+v, expected the memory of both broker processes", s)
	}
	if rss := s.Large.MemoryEnd.RSSBytes; rss < 1<<20 || rss > s.Large.MemoryEnd.PeakRSSBytes {
		t.Errorf("broker RSS %d bytes, peak %d; expected at least 1 MiB and at most the peak",
			rss, s.Large.MemoryEnd.PeakRSSBytes)
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	cfg, opts, err := parseArgs([]string{"-quick", "-rounds", "3", "-scenarios", "reuse, scale"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	quick := bench.QuickConfig()
	if !opts.quick || cfg.Throughput.Rounds != 3 || cfg.Throughput.Duration != quick.Throughput.Duration {
		t.Errorf("-quick -rounds 3 gave quick %v, rounds %d, level duration %s; expected true, 3, %s",
			opts.quick, cfg.Throughput.Rounds, cfg.Throughput.Duration, quick.Throughput.Duration)
	}
	if !slices.Equal(cfg.Scenarios, []string{"reuse", "scale"}) {
		t.Errorf("scenarios = %q, expected reuse and scale", cfg.Scenarios)
	}

	var stderr bytes.Buffer
	if _, _, err := parseArgs([]string{"-callers", "1,x"}, &stderr); !errors.Is(err, errUsage) {
		t.Errorf("-callers 1,x: error %v, expected a usage error", err)
	}

	err = run(context.Background(), []string{"-addrs", "10.0.0.1:50051", "-connection", "erp",
		"-database-url", "postgres://127.0.0.1:5432/x", "-emulator-url", "http://127.0.0.1:8081",
		"-scenarios", "throughput"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("a non-loopback broker address gave %v, expected a loopback error", err)
	}
	err = run(context.Background(), []string{"-mode", "process", "-cpuprofile", "cpu.out"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-mode inprocess") {
		t.Errorf("-cpuprofile with -mode process gave %v, expected an error about the mode", err)
	}
}
