package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// StatementStat is one statement's share of the broker database's work,
// from pg_stat_statements.
type StatementStat struct {
	// Query is the normalised statement, shortened.
	Query         string  `json:"query"`
	Calls         int64   `json:"calls"`
	CallsPerCycle float64 `json:"calls_per_cycle"`
	MeanMs        float64 `json:"mean_ms"`
	// ShareOfTime is the statement's part of the database's total
	// execution time.
	ShareOfTime float64 `json:"share_of_time"`
}

// WaitEvent is the share of samples of the broker database's active
// backends that were in one wait event, or on the CPU ("CPU").
type WaitEvent struct {
	Event string  `json:"event"`
	Share float64 `json:"share"`
}

// statementsBench reads pg_stat_statements of the brokers' database and
// samples its backends' wait events.
type statementsBench struct {
	url     string
	stop    context.CancelFunc
	done    chan struct{}
	samples map[string]int
	total   int
}

// benchmarkTag marks the benchmark's own queries on the brokers' database,
// so that the statement report can leave them out.
const benchmarkTag = "/* brokerbench */"

// waitSampleEvery is the interval between two samples of pg_stat_activity.
const waitSampleEvery = 10 * time.Millisecond

// sampleWaits counts the wait events of the database's active client
// backends until ctx ends. A backend that is active without a wait event
// is on the CPU.
func (s *statementsBench) sampleWaits(ctx context.Context, conn *pgx.Conn) {
	defer close(s.done)
	defer conn.Close(context.WithoutCancel(ctx))
	for ctx.Err() == nil {
		rows, _ := conn.Query(ctx, `SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend' AND state = 'active'
	AND pid <> pg_backend_pid() `+benchmarkTag)
		var event string
		_, err := pgx.ForEachRow(rows, []any{&event}, func() error {
			s.samples[event]++
			s.total++
			return nil
		})
		if err != nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(waitSampleEvery):
		}
	}
}

// waits stops the sampling and returns the events by share, largest first.
func (s *statementsBench) waits() []WaitEvent {
	s.stop()
	<-s.done
	var out []WaitEvent
	for event, n := range s.samples {
		out = append(out, WaitEvent{Event: event, Share: round3(float64(n) / float64(s.total))})
	}
	slices.SortFunc(out, func(a, b WaitEvent) int { return cmp.Compare(b.Share, a.Share) })
	return out
}

// startStatements resets pg_stat_statements in the brokers' database and
// starts sampling its wait events, when Config.Diagnose applies to this
// run.
func (r *runner) startStatements(ctx context.Context, d *deployment) (*statementsBench, error) {
	if !r.cfg.Diagnose || r.cfg.AdminURL != "" || r.cfg.External != nil {
		return nil, nil
	}
	conn, err := pgx.Connect(ctx, d.databaseURL)
	if err != nil {
		return nil, fmt.Errorf("statements: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		return nil, fmt.Errorf("statements: create extension pg_stat_statements: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
		return nil, fmt.Errorf("statements: reset: %w", err)
	}
	sampler, err := pgx.Connect(ctx, d.databaseURL)
	if err != nil {
		return nil, fmt.Errorf("statements: connect the wait sampler: %w", err)
	}
	sampleCtx, stop := context.WithCancel(ctx)
	s := &statementsBench{url: d.databaseURL, stop: stop, done: make(chan struct{}), samples: map[string]int{}}
	go s.sampleWaits(sampleCtx, sampler)
	return s, nil
}

// collect returns the busiest statements of the brokers' database since
// the reset, with their calls per cycle, of which cycles ran. The
// benchmark's own statements are left out.
func (s *statementsBench) collect(ctx context.Context, cycles int) ([]StatementStat, error) {
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		return nil, fmt.Errorf("statements: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, _ := conn.Query(ctx, `
SELECT query, calls, mean_exec_time, total_exec_time / nullif(sum(total_exec_time) OVER (), 0)
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND query NOT LIKE '%' || $1 || '%' AND query NOT LIKE '%pg_stat_statements%'
ORDER BY total_exec_time DESC LIMIT 15`, benchmarkTag)
	var out []StatementStat
	var st StatementStat
	var share *float64
	_, err = pgx.ForEachRow(rows, []any{&st.Query, &st.Calls, &st.MeanMs, &share}, func() error {
		st.Query = shorten(st.Query, 110)
		st.MeanMs = round3(st.MeanMs)
		if share != nil {
			st.ShareOfTime = round3(*share)
		}
		if cycles > 0 {
			st.CallsPerCycle = round3(float64(st.Calls) / float64(cycles))
		}
		out = append(out, st)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("statements: read pg_stat_statements: %w", err)
	}
	return out, nil
}

// shorten collapses the whitespace of q and cuts it to n bytes.
func shorten(q string, n int) string {
	q = strings.Join(strings.Fields(q), " ")
	if len(q) > n {
		return q[:n-3] + "..."
	}
	return q
}
