package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// The ceiling's table and statements: the least a lease cycle costs on
// Postgres, one single-row update by primary key to lease a seat and one
// to give it back, each its own autocommit transaction. Each client
// updates its own row, so no client waits for another's lock. The table
// has the seats table's fill factor, so that both updates stay HOT.
const (
	ceilingTable  = "brokerbench_ceiling"
	createCeiling = `CREATE TABLE ` + ceilingTable + ` (
	id              integer PRIMARY KEY,
	state           text NOT NULL DEFAULT 'idle',
	lease_id        uuid,
	lease_expire_at timestamptz,
	last_used_at    timestamptz
) WITH (fillfactor = 50)`
	fillCeiling    = `INSERT INTO ` + ceilingTable + ` (id) SELECT generate_series(0, $1::integer - 1)`
	ceilingAcquire = `UPDATE ` + ceilingTable + ` SET state = 'leased', lease_id = $2,
	lease_expire_at = now() + interval '5 minutes', last_used_at = now() WHERE id = $1`
	ceilingRelease = `UPDATE ` + ceilingTable + ` SET state = 'idle', lease_id = NULL,
	lease_expire_at = NULL, last_used_at = now() WHERE id = $1`
	// ceilingReleaseNotify also notifies in the release's transaction, as
	// the broker's release does.
	ceilingReleaseNotify = `WITH released AS (` + ceilingRelease + ` RETURNING id)
SELECT pg_notify('` + ceilingChannel + `', 'erp') FROM released`
	ceilingChannel = "brokerbench_ceiling"
)

// ceilingBench runs the ceiling's cycles on its own connections.
type ceilingBench struct {
	url   string
	conns []*pgx.Conn
	// drop removes the table when it lives in the brokers' database.
	drop func(context.Context) error
}

// newCeiling creates the ceiling's table with rows rows, in a database of
// its own on the same server, or in the given brokers' database, and opens
// rows connections.
func (r *runner) newCeiling(ctx context.Context, d *deployment, rows int) (*ceilingBench, error) {
	url := d.databaseURL
	if r.cfg.External == nil {
		db, err := r.pg.createDatabase(ctx, "ceiling", false)
		if err != nil {
			return nil, err
		}
		url = r.pg.url(db)
	}
	c := &ceilingBench{url: url}
	setup, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("ceiling: connect: %w", err)
	}
	defer setup.Close(context.WithoutCancel(ctx))
	if _, err := setup.Exec(ctx, createCeiling); err != nil {
		return nil, fmt.Errorf("ceiling: create table %s: %w", ceilingTable, err)
	}
	if r.cfg.External != nil {
		c.drop = func(ctx context.Context) error {
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			_, err = conn.Exec(ctx, "DROP TABLE "+ceilingTable)
			return err
		}
	}
	if _, err := setup.Exec(ctx, fillCeiling, rows); err != nil {
		return nil, errors.Join(fmt.Errorf("ceiling: fill table %s: %w", ceilingTable, err), c.close())
	}
	for range rows {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("ceiling: connect: %w", err), c.close())
		}
		c.conns = append(c.conns, conn)
	}
	return c, nil
}

// run runs cycles on the first clients connections for length. With
// notify, each release also sends a notification, which one more
// connection listens for. The CPU split counts the idle brokers of d apart.
func (c *ceilingBench) run(ctx context.Context, clients int, length time.Duration, notify bool, d *deployment) levelRun {
	if notify {
		stop, err := c.listen(ctx)
		if err != nil {
			return levelRun{errors: 1, firstErr: err.Error()}
		}
		defer stop()
	}

	var s samples
	deadline := time.Now().Add(length)
	counts := make([]int, clients)
	cpuBefore := readCPU(d.pids(), d.postmaster)
	start := time.Now()
	var wg sync.WaitGroup
	for i, conn := range c.conns[:clients] {
		wg.Go(func() {
			var cycles []time.Duration
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t := time.Now()
				if err := ceilingCycle(ctx, conn, i, notify); err != nil {
					s.fail(err)
					time.Sleep(errorPause)
					continue
				}
				cycles = append(cycles, time.Since(t))
				counts[i]++
			}
			s.add(cycles, nil)
		})
	}
	wg.Wait()

	run := levelRun{elapsed: time.Since(start), acquire: s.acquire, errors: s.errors, firstErr: s.firstErr}
	for _, n := range counts {
		run.cycles += n
	}
	run.cpu = cpuPerCycle(cpuBefore, readCPU(d.pids(), d.postmaster), run.cycles)
	return run
}

func ceilingCycle(ctx context.Context, conn *pgx.Conn, id int, notify bool) error {
	if _, err := conn.Exec(ctx, ceilingAcquire, id, uuid.New()); err != nil {
		return fmt.Errorf("ceiling: lease row %d: %w", id, err)
	}
	release := ceilingRelease
	if notify {
		release = ceilingReleaseNotify
	}
	if _, err := conn.Exec(ctx, release, id); err != nil {
		return fmt.Errorf("ceiling: release row %d: %w", id, err)
	}
	return nil
}

// listen starts a connection that listens on the ceiling's channel and
// drains its notifications, as a broker replica does, until stop.
func (c *ceilingBench) listen(ctx context.Context) (stop func(), err error) {
	conn, err := pgx.Connect(ctx, c.url)
	if err != nil {
		return nil, fmt.Errorf("ceiling: connect the listener: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+ceilingChannel); err != nil {
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("ceiling: listen: %w", err)
	}
	listenCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := conn.WaitForNotification(listenCtx); err != nil {
				return
			}
		}
	}()
	return func() {
		cancel()
		<-done
		_ = conn.Close(context.WithoutCancel(ctx))
	}, nil
}

func (c *ceilingBench) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for _, conn := range c.conns {
		errs = append(errs, conn.Close(ctx))
	}
	if c.drop != nil {
		if err := c.drop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("ceiling: drop table %s: %w", ceilingTable, err))
		}
	}
	return errors.Join(errs...)
}
