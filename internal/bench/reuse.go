package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/acubroker/acubroker/config"
	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// ReuseResult is the outcome of the seat reuse scenario: many acquires
// over more than one token lifetime, with the emulator's clock advanced
// between batches.
type ReuseResult struct {
	Mode     string `json:"mode"`
	Seats    int    `json:"seats"`
	Callers  int    `json:"callers"`
	Acquires int    `json:"acquires"`
	// SimulatedMinutes is how far the emulator's clock moved.
	SimulatedMinutes float64 `json:"simulated_minutes"`
	// SignIns are the emulator's password grants; SignInsPer10k scales
	// them to 10,000 acquires.
	SignIns       int64   `json:"sign_ins"`
	SignInsPer10k float64 `json:"sign_ins_per_10k_acquires"`
	Refreshes     int64   `json:"refreshes"`
	// RefreshesPerSession is Refreshes divided by SignIns.
	RefreshesPerSession float64 `json:"refreshes_per_session"`
	// ExpectedRefreshesPerSession is how often a session used throughout
	// is refreshed: the simulated time divided by the token lifetime less
	// the refresh margin (60 and 5 minutes by default), rounded down.
	ExpectedRefreshesPerSession float64 `json:"expected_refreshes_per_session"`
	// DataCalls counts the callers' requests to Acumatica, one per lease,
	// and RejectedTokens those that Acumatica rejected with 401.
	DataCalls      int64 `json:"data_calls"`
	RejectedTokens int64 `json:"rejected_tokens"`
	// SessionsOpened and SessionsClosed are the emulator's counts: a
	// refresh opens a session again when Acumatica has closed it.
	SessionsOpened int64            `json:"sessions_opened"`
	SessionsClosed map[string]int64 `json:"sessions_closed"`
	RefusedSignIns int64            `json:"refused_sign_ins"`
	PeakSessions   int              `json:"peak_sessions"`
	Acquire        Latency          `json:"acquire"`
	Errors         int              `json:"errors"`
	FirstError     string           `json:"first_error,omitempty"`
	Load           LoadRange        `json:"load_average"`
}

// runReuse runs the seat reuse scenario on an in-process broker whose
// clock is the emulator's. One caller per seat runs acquire, one request
// to Acumatica with the lease's token, and release. After every
// AdvanceEvery acquires, with no lease held, the clock moves forward by
// Advance. The requests keep Acumatica's sessions from idling out, as
// callers' use does.
func (r *runner) runReuse(ctx context.Context) (*ReuseResult, error) {
	cfg := r.cfg.Reuse
	res := &ReuseResult{Seats: cfg.Seats, Callers: cfg.Seats, Acquires: cfg.Acquires,
		Load: LoadRange{Start: readLoadAverage()}}
	emu := emulator.DefaultConfig()
	emu.Seats = cfg.Seats
	d, err := r.deploy(ctx, deploySpec{
		Name:          "reuse",
		Conns:         []connSpec{{Name: "erp", Seats: cfg.Seats, MaxWait: 30 * time.Second}},
		Replicas:      1,
		InProcess:     true,
		EmulatorClock: true,
		Emulator:      emu,
	})
	if err != nil {
		return nil, err
	}
	defer r.closeDeployment(d)
	res.Mode = d.mode
	clients, closeClients, err := d.dial(0, cfg.Seats)
	if err != nil {
		return nil, err
	}
	defer closeClients()

	r.log.Info("seat reuse", "acquires", cfg.Acquires, "seats", cfg.Seats, "advance", cfg.Advance,
		"every", cfg.AdvanceEvery)
	var s samples
	var calls dataCalls
	spec := fixed(d.connection, 0)
	spec.use = calls.use
	var simulated time.Duration
	for done := 0; done < cfg.Acquires && ctx.Err() == nil; {
		batch := min(cfg.AdvanceEvery, cfg.Acquires-done)
		var left atomic.Int64
		left.Store(int64(batch))
		stop := func(int) bool { return left.Add(-1) < 0 }
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Go(func() { loop(ctx, c, spec, stop, &s) })
		}
		wg.Wait()
		done += batch
		d.emu.Emulator.Advance(cfg.Advance)
		simulated += cfg.Advance
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	stats := d.emu.Emulator.Stats()
	res.SimulatedMinutes = simulated.Minutes()
	res.SignIns = stats.SignIns
	res.SignInsPer10k = round3(float64(stats.SignIns) * 10000 / float64(cfg.Acquires))
	res.Refreshes = stats.Refreshes
	res.RefreshesPerSession = ratio(float64(stats.Refreshes), float64(stats.SignIns))
	res.ExpectedRefreshesPerSession = math.Floor(float64(simulated) /
		float64(config.DefaultTokenLifetime-config.DefaultRefreshBefore))
	res.SessionsOpened = stats.SessionsOpened
	res.SessionsClosed = maps.Clone(stats.SessionsClosed)
	res.RefusedSignIns = sumCounts(stats.RefusedSignIns)
	res.PeakSessions = stats.PeakSessions
	res.DataCalls, res.RejectedTokens = calls.total.Load(), calls.rejected.Load()
	res.Acquire = summarize(s.acquire)
	res.Errors, res.FirstError = s.errors, s.firstErr
	if res.Acquire.Count != cfg.Acquires && res.Errors == 0 {
		return nil, fmt.Errorf("seat reuse: %d acquires completed, expected %d", res.Acquire.Count, cfg.Acquires)
	}
	res.Load.End = readLoadAverage()
	return res, nil
}

// dataCalls sends one request to Acumatica with a lease's access token
// and counts the tokens that Acumatica rejects.
type dataCalls struct {
	total, rejected atomic.Int64
}

func (d *dataCalls) use(ctx context.Context, resp *acubrokerv1.AcquireSessionResponse) error {
	d.total.Add(1)
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	url := resp.GetCredentials().GetBaseUrl() + emulator.PathCustomers
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("data call: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+resp.GetCredentials().GetAccessToken())
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("data call to %s: %w", url, err)
	}
	_, _ = io.Copy(io.Discard, r.Body)
	_ = r.Body.Close()
	if r.StatusCode == http.StatusUnauthorized {
		d.rejected.Add(1)
	}
	if r.StatusCode != http.StatusOK {
		return fmt.Errorf("data call to %s with lease %s: status %s", url, resp.GetLease().GetLeaseId(), r.Status)
	}
	return nil
}
