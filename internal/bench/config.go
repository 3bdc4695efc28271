package bench

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Scenario names, in the order Run runs them.
const (
	ScenarioThroughput = "throughput"
	ScenarioCeiling    = "ceiling"
	ScenarioContention = "contention"
	ScenarioHandoff    = "handoff"
	ScenarioReuse      = "reuse"
	ScenarioScale      = "scale"
)

// AllScenarios lists every scenario in the order Run runs them.
var AllScenarios = []string{
	ScenarioThroughput, ScenarioCeiling, ScenarioContention, ScenarioHandoff, ScenarioReuse, ScenarioScale,
}

// Mode is the way the benchmark runs the brokers it starts.
type Mode string

// Modes of Config.Mode.
const (
	// ModeProcess runs each replica as a `broker serve` process with a
	// generated config file, as in production.
	ModeProcess Mode = "process"
	// ModeInProcess runs each replica in the benchmark's own process, with
	// broker.New and server.New. It allows a CPU profile, but the brokers
	// then share the process with the load generator and the emulator.
	ModeInProcess Mode = "inprocess"
)

// Config configures Run. DefaultConfig returns the full benchmark and
// QuickConfig a smoke run.
type Config struct {
	// Scenarios to run, from AllScenarios.
	Scenarios []string
	// Mode runs the brokers as processes or in process. The reuse scenario
	// always runs in process, because its broker reads the emulator's clock.
	Mode Mode
	// BrokerBinary is the `broker` executable for ModeProcess. Empty builds
	// ./cmd/broker with `go build` into OutDir.
	BrokerBinary string
	// BrokerLogLevel is the log level of the brokers: debug, info, warn or
	// error. Their logs go to OutDir/logs.
	BrokerLogLevel string
	// PoolMaxConns sets pool_max_conns in the brokers' database URL; 0
	// keeps pgxpool's default of max(4, number of CPUs).
	PoolMaxConns int
	// AdminURL is a PostgreSQL URL of a superuser on a server where the
	// benchmark may create and drop databases. Empty starts a throwaway
	// cluster with internal/pgcluster.
	AdminURL string
	// Durable turns fsync back on in the cluster the benchmark starts
	// (pgcluster turns it off), so that commits cost what they cost in
	// production. It has no effect with AdminURL.
	Durable bool
	// Diagnose adds to the throughput scenario what explains its figures:
	// the ceiling again with a NOTIFY in each release transaction, and,
	// in the cluster the benchmark starts, the broker database's
	// statements per cycle from pg_stat_statements and its backends' wait
	// events. Loading pg_stat_statements restarts the cluster once and
	// adds a little overhead to every statement.
	Diagnose bool
	// External, when set, runs the scenarios against brokers that are
	// already running instead of starting them.
	External *External
	// OutDir receives results.json, the broker logs and the built broker.
	OutDir string
	// CPUProfile, when set with ModeInProcess, writes a CPU profile of the
	// throughput scenario's broker phases to this path.
	CPUProfile string
	// Logger receives progress messages. Nil discards them.
	Logger *slog.Logger

	Throughput ThroughputConfig
	Contention ContentionConfig
	Handoff    HandoffConfig
	Reuse      ReuseConfig
	Scale      ScaleConfig
}

// External names brokers that run already. Every address must be a
// loopback address.
type External struct {
	// Addrs are the gRPC addresses of the replicas.
	Addrs []string
	// Connection is the connection every scenario acquires.
	Connection string
	// DatabaseURL is the brokers' database. The ceiling creates and drops
	// a table brokerbench_ceiling in it, and the hand-off reads the
	// waiters table.
	DatabaseURL string
	// EmulatorURL is the emulator's base URL, whose control API reports
	// sign-ins and refusals.
	EmulatorURL string
}

// ThroughputConfig configures the throughput and ceiling scenarios.
type ThroughputConfig struct {
	// Callers are the client counts, each run as one level.
	Callers []int
	// Duration is the length of one level in one round.
	Duration time.Duration
	// Rounds repeats every level; figures are medians over the rounds.
	Rounds int
}

// ContentionConfig configures the contention scenario.
type ContentionConfig struct {
	Callers int
	Seats   int
	// Hold is how long each caller holds each lease.
	Hold time.Duration
	// Cycles is how many leases each caller takes.
	Cycles int
	// Replicas spreads the callers over this many brokers.
	Replicas int
}

// HandoffConfig configures the hand-off scenario.
type HandoffConfig struct {
	// Handoffs is how many release-to-acquire hand-offs are timed.
	Handoffs int
	// Notifies is how many raw LISTEN/NOTIFY round trips are timed.
	Notifies int
}

// ReuseConfig configures the seat reuse scenario.
type ReuseConfig struct {
	Acquires int
	Seats    int
	// Advance moves the emulator's clock forward after every AdvanceEvery
	// acquires.
	AdvanceEvery int
	Advance      time.Duration
}

// ScaleConfig configures the scale scenario.
type ScaleConfig struct {
	Connections int
	// Seats is the seat budget of every connection; all of them are signed
	// in before the latency is measured.
	Seats int
	// Callers run acquire and release on random connections.
	Callers int
	// Acquires is how many acquires are timed per deployment.
	Acquires int
}

// DefaultConfig returns the full benchmark, which takes about five minutes
// on a 2-core machine.
func DefaultConfig() Config {
	return Config{
		Scenarios:      slices.Clone(AllScenarios),
		Mode:           ModeProcess,
		BrokerLogLevel: "info",
		Durable:        true,
		OutDir:         "bench-out",
		Throughput:     ThroughputConfig{Callers: []int{1, 4, 16, 64}, Duration: 5 * time.Second, Rounds: 2},
		Contention:     ContentionConfig{Callers: 64, Seats: 4, Hold: 50 * time.Millisecond, Cycles: 8, Replicas: 2},
		Handoff:        HandoffConfig{Handoffs: 300, Notifies: 1000},
		Reuse:          ReuseConfig{Acquires: 10000, Seats: 4, AdvanceEvery: 100, Advance: time.Minute},
		Scale:          ScaleConfig{Connections: 1000, Seats: 10, Callers: 8, Acquires: 4000},
	}
}

// QuickConfig returns every scenario scaled down to a few seconds in all,
// to check that the benchmark works; its figures mean little.
func QuickConfig() Config {
	cfg := DefaultConfig()
	cfg.Durable = false
	cfg.Throughput = ThroughputConfig{Callers: []int{1, 4}, Duration: 300 * time.Millisecond, Rounds: 1}
	cfg.Contention = ContentionConfig{Callers: 8, Seats: 2, Hold: 20 * time.Millisecond, Cycles: 2, Replicas: 2}
	cfg.Handoff = HandoffConfig{Handoffs: 10, Notifies: 50}
	cfg.Reuse = ReuseConfig{Acquires: 200, Seats: 2, AdvanceEvery: 10, Advance: 5 * time.Minute}
	cfg.Scale = ScaleConfig{Connections: 20, Seats: 2, Callers: 2, Acquires: 100}
	return cfg
}

// validate checks cfg and returns every problem at once. Each message
// names the brokerbench flag that sets the value.
func (c *Config) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Scenarios) == 0 {
		add("no scenario selected (-scenarios): choose from %s", strings.Join(AllScenarios, ", "))
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			add("unknown scenario %q (-scenarios): choose from %s", s, strings.Join(AllScenarios, ", "))
		}
	}
	if c.Mode != ModeProcess && c.Mode != ModeInProcess {
		add("unknown mode %q (-mode): use %q or %q", c.Mode, ModeProcess, ModeInProcess)
	}

	if c.Diagnose && c.External != nil {
		add("the diagnostics (-diagnose) need a PostgreSQL cluster that the benchmark starts: drop -addrs")
	}
	if c.CPUProfile != "" && (c.Mode != ModeInProcess || c.External != nil) {
		add("a CPU profile (-cpuprofile) needs -mode inprocess, because only then do the brokers run in this process")
	}
	if c.OutDir == "" {
		add("the output directory (-out) is empty")
	}
	if c.PoolMaxConns < 0 {
		add("pool_max_conns %d (-pool-max-conns) is negative: use 0 for pgxpool's default or a positive count",
			c.PoolMaxConns)
	}

	errs = append(errs, c.validateSizes()...)
	if c.External != nil {
		errs = append(errs, c.External.validate(c.Scenarios)...)
	}
	return errors.Join(errs...)
}

// maxSeats is the largest max_sessions that a broker config accepts.
const maxSeats = 1000

func (c *Config) validateSizes() []error {
	var errs []error
	between := func(name string, v, lo, hi int) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("%s is %d: use %d to %d", name, v, lo, hi))
		}
	}
	positive := func(name string, v int) { between(name, v, 1, math.MaxInt) }
	positiveDuration := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s is %s: use a positive duration", name, d))
		}
	}

	if len(c.Throughput.Callers) == 0 {
		errs = append(errs, errors.New("no throughput caller counts (-callers): give one or more, such as 1,4,16,64"))
	}
	for _, n := range c.Throughput.Callers {
		// Each caller count needs as many seats.
		between("a throughput caller count (-callers)", n, 1, maxSeats)
	}
	positiveDuration("the level duration (-level-duration)", c.Throughput.Duration)
	positive("the rounds (-rounds)", c.Throughput.Rounds)

	positive("the contention callers (-contention-callers)", c.Contention.Callers)
	between("the contention seats (-contention-seats)", c.Contention.Seats, 1, maxSeats)
	positiveDuration("the hold (-hold)", c.Contention.Hold)
	positive("the contention cycles (-contention-cycles)", c.Contention.Cycles)
	positive("the contention replicas (-contention-replicas)", c.Contention.Replicas)

	positive("the hand-offs (-handoffs)", c.Handoff.Handoffs)
	positive("the raw notifications (-notifies)", c.Handoff.Notifies)

	positive("the reuse acquires (-reuse-acquires)", c.Reuse.Acquires)
	between("the reuse seats (-reuse-seats)", c.Reuse.Seats, 1, maxSeats)
	positive("the acquires per clock step (-reuse-advance-every)", c.Reuse.AdvanceEvery)
	positiveDuration("the clock step (-reuse-advance)", c.Reuse.Advance)

	positive("the scale connections (-scale-connections)", c.Scale.Connections)
	between("the scale seats (-scale-seats)", c.Scale.Seats, 1, maxSeats)
	positive("the scale callers (-scale-callers)", c.Scale.Callers)
	positive("the scale acquires (-scale-acquires)", c.Scale.Acquires)
	return errs
}

// externalScenarios are the scenarios that can run against brokers the
// benchmark did not start.
var externalScenarios = []string{ScenarioThroughput, ScenarioCeiling, ScenarioContention, ScenarioHandoff}

func (e *External) validate(scenarios []string) []error {
	var errs []error
	for _, a := range e.Addrs {
		if err := checkLoopbackAddr(a); err != nil {
			errs = append(errs, err)
		}
	}
	if e.Connection == "" {
		errs = append(errs, errors.New("no connection (-connection) given for the brokers at -addrs"))
	}
	if e.DatabaseURL == "" {
		errs = append(errs, errors.New("no database URL (-database-url) given: the ceiling and the hand-off need the "+
			"brokers' database"))
	} else if err := checkLoopbackURL("database", e.DatabaseURL); err != nil {
		errs = append(errs, err)
	}
	if e.EmulatorURL == "" {
		errs = append(errs, errors.New("no emulator URL (-emulator-url) given: the contention scenario reads its "+
			"sign-in counts"))
	} else if err := checkLoopbackURL("emulator", e.EmulatorURL); err != nil {
		errs = append(errs, err)
	}

	for _, s := range scenarios {
		if !slices.Contains(externalScenarios, s) {
			errs = append(errs, fmt.Errorf("scenario %q needs brokers that the benchmark starts: with -addrs, choose "+
				"from %s", s, strings.Join(externalScenarios, ", ")))
		}
	}
	if slices.Contains(scenarios, ScenarioHandoff) && len(e.Addrs) < 2 {
		errs = append(errs, errors.New("the hand-off scenario needs two broker addresses in -addrs"))
	}
	return errs
}

// checkLoopbackAddr rejects a host:port whose host is not a loopback IP
// address, because the benchmark sends load to this machine only.
func checkLoopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid address %q: use host:port, such as 127.0.0.1:50051", addr)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("address %q is not a loopback address: the benchmark sends load to 127.0.0.1 only", addr)
	}
	return nil
}

func checkLoopbackURL(what, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		// The URL may hold a password, so it is not shown.
		return fmt.Errorf("invalid %s URL: use scheme://host:port/..., such as one on 127.0.0.1", what)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "0")
	}
	if err := checkLoopbackAddr(host); err != nil {
		return fmt.Errorf("the %s URL's host %s is not a loopback address: the benchmark connects to 127.0.0.1 only",
			what, u.Hostname())
	}
	return nil
}

func (c *Config) selected(name string) bool { return slices.Contains(c.Scenarios, name) }
