package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/brokertest"
	"github.com/acubroker/acubroker/internal/pgcluster"
)

// Settings of the fault test. BROKER_CHAOS_DURATION lengthens or shortens
// the run (a Go duration); the default keeps the whole test near a minute
// and a half.
const (
	chaosSeats      = 4
	chaosBrokers    = 3
	chaosCallers    = 40
	chaosKillEvery  = 3 * time.Second
	chaosIdle       = 15 * time.Second
	chaosRequest    = 2 * time.Second
	chaosSettleTime = 90 * time.Second
)

// chaosCounts are the figures the fault test prints.
type chaosCounts struct {
	cycles, acquireErrors, releaseErrors, kills, restarts atomic.Int64
	mu                                                    sync.Mutex
	codes                                                 map[string]int
}

func (c *chaosCounts) failed(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := status.Code(err).String()
	if reason := errorInfo(err).GetReason(); reason != "" {
		key += "/" + reason
	}
	c.codes[key]++
}

func (c *chaosCounts) codeSummary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.codes))
	for k := range c.codes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c.codes[k]))
	}
	return strings.Join(parts, " ")
}

// TestChaosKeepsSeatsWithinBudget runs callers against three broker
// processes while it kills and restarts them, restarts Postgres and has the
// emulator fail requests. The emulator's seat count must stay within the
// budget at every instant, and it must refuse no sign-in for its login
// limit. After a sign-out of everything, no session may stay open.
func TestChaosKeepsSeatsWithinBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault test runs for about a minute and a half; it is skipped with -short")
	}
	t.Parallel()
	runFor := 40 * time.Second
	if v := os.Getenv("BROKER_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("BROKER_CHAOS_DURATION=%q: %v", v, err)
		}
		runFor = d
	}

	ctx := context.Background()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() { _ = cluster.Remove() })
	dbURL := cluster.URL("postgres")

	emuCfg := emulator.DefaultConfig()
	emuCfg.Seats = chaosSeats
	emuCfg.IdleTimeout = chaosIdle
	emu, err := emulator.Start(emuCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })

	cfg := writeConfig(t, processConfig{
		emulatorURL: emu.URL, databaseURL: dbURL, seats: chaosSeats, idleTimeout: chaosIdle,
		requestTimeout: chaosRequest, maxWait: 5 * time.Second, leaseTTL: 5 * time.Second,
	})
	brokers := make([]*brokerProcess, chaosBrokers)
	clients := make([]acubrokerv1.SessionServiceClient, chaosBrokers)
	for i := range brokers {
		brokers[i] = startBroker(t, cfg, dbURL)
		clients[i] = acubrokerv1.NewSessionServiceClient(brokertest.Dial(t, brokers[i].addr))
	}
	injectChaosFaults(emu.Emulator)

	counts := &chaosCounts{codes: map[string]int{}}
	runCtx, stop := context.WithTimeout(ctx, runFor)
	defer stop()
	var wg sync.WaitGroup
	for range chaosCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			chaosCaller(runCtx, clients, counts)
		}()
	}
	disruptErr := make(chan error, 1)
	go func() { disruptErr <- disrupt(runCtx, brokers, cluster, counts, runFor) }()
	wg.Wait()
	if err := <-disruptErr; err != nil {
		t.Fatalf("disrupting: %v", err)
	}

	emu.Emulator.ClearFaults()
	signOutEverything(t, clients, emu.Emulator, dbURL)

	stats := emu.Emulator.Stats()
	t.Logf("fault test: %s run, %d cycles, %d acquire errors, %d release errors, %d broker kills, %d Postgres restarts",
		runFor, counts.cycles.Load(), counts.acquireErrors.Load(), counts.releaseErrors.Load(),
		counts.kills.Load(), counts.restarts.Load())
	t.Logf("errors by code: %s", counts.codeSummary())
	t.Logf("emulator: peak %d of %d seats, sign-ins %d, refreshes %d, sign-outs %d, faults injected %d, refused %v, closed %v",
		stats.PeakSessions, chaosSeats, stats.SignIns, stats.Refreshes, stats.SignOuts, stats.FaultsInjected,
		stats.RefusedSignIns, stats.SessionsClosed)

	if stats.PeakSessions > chaosSeats {
		t.Errorf("emulator peak open sessions = %d, want at most %d", stats.PeakSessions, chaosSeats)
	}
	if n := stats.RefusedSignIns["login_limit"] + stats.RefusedSignIns["user_limit"]; n != 0 {
		t.Errorf("emulator refused %d sign-ins for a login limit, want 0", n)
	}
	if stats.OpenSessions != 0 {
		t.Errorf("emulator open sessions after the sign-out of everything = %d, want 0", stats.OpenSessions)
	}
	if counts.cycles.Load() < 30 {
		t.Errorf("only %d cycles completed; the brokers did not keep serving", counts.cycles.Load())
	}
	if counts.kills.Load() < 3 {
		t.Errorf("only %d broker kills; the run was too short to test crashes", counts.kills.Load())
	}
}

// injectChaosFaults makes a share of the emulator's calls fail in each way
// a network and a busy site fail: 5xx, timeouts (latency beyond the
// broker's request timeout), dropped connections and 429s.
func injectChaosFaults(emu *emulator.Emulator) {
	for _, f := range []emulator.Fault{
		{Endpoint: "token", Status: 503, Body: "Service Unavailable", Ratio: 0.05},
		{Endpoint: "token", Drop: true, Ratio: 0.03},
		{Endpoint: "token", Latency: chaosRequest + 500*time.Millisecond, Ratio: 0.03},
		{Endpoint: "token", Status: 429, Body: "Too many requests", Ratio: 0.05},
		{Endpoint: "logout", Status: 503, Body: "Service Unavailable", Ratio: 0.10},
		{Endpoint: "logout", Drop: true, Ratio: 0.05},
		{Endpoint: "revocation", Status: 500, Body: "error", Ratio: 0.10},
	} {
		emu.InjectFault(f)
	}
}

// chaosCaller acquires, holds and releases until ctx ends, through random
// brokers, retrying a release on other brokers while some are down.
func chaosCaller(ctx context.Context, clients []acubrokerv1.SessionServiceClient, counts *chaosCounts) {
	for ctx.Err() == nil {
		client := clients[rand.IntN(len(clients))]
		callCtx, cancel := context.WithTimeout(ctx, 6*time.Second)
		resp, err := client.AcquireSession(callCtx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				counts.acquireErrors.Add(1)
				counts.failed(err)
				time.Sleep(50 * time.Millisecond)
			}
			continue
		}
		time.Sleep(time.Duration(20+rand.IntN(180)) * time.Millisecond)
		if releaseAnywhere(clients, resp.GetLease().GetLeaseId(), counts) {
			counts.cycles.Add(1)
		}
	}
}

func releaseAnywhere(clients []acubrokerv1.SessionServiceClient, leaseID string, counts *chaosCounts) bool {
	for attempt := range 6 {
		client := clients[(attempt+rand.IntN(len(clients)))%len(clients)]
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := client.ReleaseSession(ctx, &acubrokerv1.ReleaseSessionRequest{LeaseId: leaseID})
		cancel()
		if err == nil {
			return true
		}
		if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
			// The lease expired while its broker was down: the seat was
			// reclaimed, which is what the broker is for.
			counts.releaseErrors.Add(1)
			counts.failed(err)
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	counts.releaseErrors.Add(1)
	return false
}

// disrupt SIGKILLs and restarts one broker every chaosKillEvery, round
// robin, and restarts Postgres once, near the middle of the run.
func disrupt(ctx context.Context, brokers []*brokerProcess, cluster *pgcluster.Cluster, counts *chaosCounts, runFor time.Duration) error {
	restartAt := time.Now().Add(runFor / 2)
	ticker := time.NewTicker(chaosKillEvery)
	defer ticker.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		if counts.restarts.Load() == 0 && time.Now().After(restartAt) {
			if err := cluster.Restart(context.Background()); err != nil {
				return fmt.Errorf("restart PostgreSQL: %w", err)
			}
			counts.restarts.Add(1)
			continue
		}
		b := brokers[i%len(brokers)]
		b.kill()
		counts.kills.Add(1)
		time.Sleep(200 * time.Millisecond)
		if err := b.start(); err != nil {
			return err
		}
	}
}

// signOutEverything signs out every session the brokers hold, until the
// emulator has no open session and every seat is empty. It holds each lease
// it gets until it holds every seat, then signs them all out, so that it
// never signs in again on a seat it has just emptied. Meanwhile leases of
// the run expire and unrecorded sign-ins are reclaimed.
func signOutEverything(t *testing.T, clients []acubrokerv1.SessionServiceClient, emu *emulator.Emulator, dbURL string) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	seatStates := func() string {
		var s string
		_ = pool.QueryRow(context.Background(), "SELECT string_agg(state, ',' ORDER BY slot) FROM seats").Scan(&s)
		return s
	}
	allEmpty := strings.TrimSuffix(strings.Repeat("empty,", chaosSeats), ",")
	var held []string
	deadline := time.Now().Add(chaosSettleTime)
	for time.Now().Before(deadline) {
		if len(held) == 0 && emu.Stats().OpenSessions == 0 && seatStates() == allEmpty {
			return
		}
		if len(held) == chaosSeats {
			for _, leaseID := range held {
				resp, err := clients[0].SignOut(context.Background(), &acubrokerv1.SignOutRequest{LeaseId: leaseID})
				if err != nil || !resp.GetConfirmed() {
					t.Logf("sign-out of lease %s: confirmed %v, err %v", leaseID, resp.GetConfirmed(), err)
				}
			}
			held = nil
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := clients[rand.IntN(len(clients))].AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{
			Connection: brokertest.ConnectionName, LeaseTtl: durationProto(time.Minute),
		})
		cancel()
		if err == nil {
			held = append(held, resp.GetLease().GetLeaseId())
			continue
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Errorf("after %s: emulator open sessions %d, seats %s, leases held %d; want 0, all empty and 0",
		chaosSettleTime, emu.Stats().OpenSessions, seatStates(), len(held))
}
