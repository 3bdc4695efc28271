package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Results are the figures of one run. Scenarios that did not run are nil.
type Results struct {
	StartedAt  time.Time    `json:"started_at"`
	FinishedAt time.Time    `json:"finished_at"`
	Mode       string       `json:"mode"`
	Scenarios  []string     `json:"scenarios"`
	Machine    Machine      `json:"machine"`
	Postgres   PostgresInfo `json:"postgres"`
	Load       LoadRange    `json:"load_average"`

	Throughput *ThroughputResult `json:"throughput,omitempty"`
	Contention *ContentionResult `json:"contention,omitempty"`
	Handoff    *HandoffResult    `json:"handoff,omitempty"`
	Reuse      *ReuseResult      `json:"reuse,omitempty"`
	Scale      *ScaleResult      `json:"scale,omitempty"`

	Targets []Target `json:"targets"`
	// Warnings explain why figures may mislead, such as a high load
	// average.
	Warnings []string `json:"warnings,omitempty"`
	// Errors are the scenarios that failed, each with its error.
	Errors []string `json:"errors,omitempty"`
}

// runner holds what the scenarios of one run share.
type runner struct {
	cfg       Config
	log       *slog.Logger
	pg        *postgres
	brokerBin string
	// workDir holds the generated broker config files.
	workDir string
	logDir  string
	// postmaster is the process id of the PostgreSQL server when it runs
	// on this machine and /proc shows it, else 0.
	postmaster int
}

// Run runs the selected scenarios. A failed scenario does not stop the
// rest, so Run returns the results of every scenario that finished, and an
// error that joins the failures of the others.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, log: cfg.Logger, logDir: filepath.Join(cfg.OutDir, "logs")}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	res := &Results{StartedAt: time.Now().UTC(), Mode: string(cfg.Mode), Scenarios: cfg.Scenarios,
		Machine: readMachine(), Load: LoadRange{Start: readLoadAverage()}}
	if cfg.External != nil {
		res.Mode = "external"
	}
	if err := os.MkdirAll(r.logDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", r.logDir, err)
	}
	workDir, err := os.MkdirTemp("", "brokerbench-")
	if err != nil {
		return nil, fmt.Errorf("create a work directory: %w", err)
	}
	r.workDir = workDir
	defer os.RemoveAll(workDir)

	if err := r.setup(ctx, res); err != nil {
		return nil, err
	}
	defer func() {
		if r.pg != nil {
			if err := r.pg.close(); err != nil {
				r.log.Warn("cleaning up PostgreSQL failed", "err", err)
			}
		}
	}()

	var errs []error
	for _, sc := range r.scenarioSteps(res) {
		if ctx.Err() != nil {
			break
		}
		load := readLoadAverage()
		r.log.Info("scenario starting", "scenario", sc.name, "load_average", load.String())
		if err := sc.run(ctx); err != nil {
			r.log.Error("scenario failed", "scenario", sc.name, "err", err)
			res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", sc.name, err))
			errs = append(errs, fmt.Errorf("scenario %s: %w", sc.name, err))
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	res.Load.End = readLoadAverage()
	res.FinishedAt = time.Now().UTC()
	res.Targets = evaluateTargets(res, &cfg)
	res.Warnings = append(res.Warnings, loadWarnings(res)...)
	return res, errors.Join(errs...)
}

// setup starts Postgres, builds the broker and reads the server facts.
func (r *runner) setup(ctx context.Context, res *Results) error {
	infoURL := ""
	if r.cfg.External != nil {
		infoURL = r.cfg.External.DatabaseURL
	} else {
		pg, err := startPostgres(ctx, &r.cfg, r.log)
		if err != nil {
			return err
		}
		r.pg = pg
		infoURL = pg.url("postgres")
		if err := r.findBroker(ctx); err != nil {
			return errors.Join(err, pg.close())
		}
	}
	info, err := readPostgresInfo(ctx, infoURL)
	if err != nil {
		if r.pg != nil {
			err = errors.Join(err, r.pg.close())
		}
		return err
	}
	res.Postgres = info
	r.postmaster = findPostmaster(ctx, infoURL)
	return nil
}

// findBroker builds the broker binary when a scenario runs broker
// processes and none was given.
func (r *runner) findBroker(ctx context.Context) error {
	needsProcess := slices.ContainsFunc(r.cfg.Scenarios, func(s string) bool {
		return s != ScenarioCeiling && s != ScenarioReuse
	})
	if r.cfg.Mode != ModeProcess || !needsProcess {
		return nil
	}
	if r.cfg.BrokerBinary != "" {
		r.brokerBin = r.cfg.BrokerBinary
		return nil
	}
	r.log.Info("building ./cmd/broker")
	bin, err := buildBroker(ctx, r.workDir)
	r.brokerBin = bin
	return err
}

type scenarioStep struct {
	name string
	run  func(context.Context) error
}

// scenarioSteps returns the selected scenarios in order. The throughput
// and ceiling scenarios run as one step, interleaved.
func (r *runner) scenarioSteps(res *Results) []scenarioStep {
	var steps []scenarioStep
	if r.cfg.selected(ScenarioThroughput) || r.cfg.selected(ScenarioCeiling) {
		steps = append(steps, scenarioStep{"throughput", func(ctx context.Context) (err error) {
			res.Throughput, err = r.runThroughput(ctx)
			return err
		}})
	}
	if r.cfg.selected(ScenarioContention) {
		steps = append(steps, scenarioStep{ScenarioContention, func(ctx context.Context) (err error) {
			res.Contention, err = r.runContention(ctx)
			return err
		}})
	}
	if r.cfg.selected(ScenarioHandoff) {
		steps = append(steps, scenarioStep{ScenarioHandoff, func(ctx context.Context) (err error) {
			res.Handoff, err = r.runHandoff(ctx)
			return err
		}})
	}
	if r.cfg.selected(ScenarioReuse) {
		steps = append(steps, scenarioStep{ScenarioReuse, func(ctx context.Context) (err error) {
			res.Reuse, err = r.runReuse(ctx)
			return err
		}})
	}
	if r.cfg.selected(ScenarioScale) {
		steps = append(steps, scenarioStep{ScenarioScale, func(ctx context.Context) (err error) {
			res.Scale, err = r.runScale(ctx)
			return err
		}})
	}
	return steps
}
