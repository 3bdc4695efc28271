package metrics

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/acubroker/acubroker/broker"
)

// UnknownConnection is the connection label of events whose connection is
// not in Config.Connections. Connection names start with a letter or digit,
// so no configured connection has this name.
const UnknownConnection = "_unknown"

// DefaultQueryTimeout bounds the seat collector's queries at each scrape.
const DefaultQueryTimeout = 2 * time.Second

// Histogram buckets, in seconds.
var (
	// waitBuckets spans a free seat (0) to the maximum max_wait of one hour.
	waitBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600}
	// holdBuckets spans a quick call to the maximum lease TTL of 24 hours.
	holdBuckets = []float64{0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400}
	// erpBuckets spans a fast token response to the 30s default timeout.
	erpBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	// grpcBuckets covers calls that wait for a seat up to max_wait.
	grpcBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
)

// Config configures New. Zero values take the documented defaults.
type Config struct {
	// Pool is the database that the seat collector reads at every scrape.
	// Nil leaves out the gauges read from Postgres.
	Pool *pgxpool.Pool
	// Connections are the configured connection names, used as labels of
	// event metrics. Events of other names count as UnknownConnection.
	Connections []string
	// QueryTimeout bounds the seat collector's queries. Default
	// DefaultQueryTimeout.
	QueryTimeout time.Duration
	// Clock times the oldest waiter's age; use the broker's clock. Default:
	// the system clock.
	Clock broker.Clock
	// Logger receives the seat collector's failures. Default: discard.
	Logger *slog.Logger
}

// Metrics contains the broker's metrics and the registry that exposes them. It
// implements [broker.Observer] and [prometheus.Collector], and is safe for
// concurrent use.
type Metrics struct {
	registry    *prometheus.Registry
	logger      *slog.Logger
	connections map[string]bool
	grpc        *grpcprom.ServerMetrics
	collectors  []prometheus.Collector

	acquires    *prometheus.CounterVec
	acquireWait *prometheus.HistogramVec
	leaseHold   *prometheus.HistogramVec
	erpRequests *prometheus.CounterVec
	erpDuration *prometheus.HistogramVec
}

var (
	_ broker.Observer      = (*Metrics)(nil)
	_ prometheus.Collector = (*Metrics)(nil)
)

// New creates the metrics and a registry that holds them, the gRPC server
// metrics, and the Go runtime, process and build info collectors.
func New(cfg Config) *Metrics {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	clock := cfg.Clock
	if clock == nil {
		clock = systemClock{}
	}
	timeout := cfg.QueryTimeout
	if timeout <= 0 {
		timeout = DefaultQueryTimeout
	}

	m := &Metrics{
		registry:    prometheus.NewRegistry(),
		logger:      logger,
		connections: make(map[string]bool, len(cfg.Connections)),
		grpc: grpcprom.NewServerMetrics(
			grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(grpcBuckets)),
		),
		acquires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "acubroker_acquires_total",
			Help: "Acquires on this replica by outcome: ok, the error reason, canceled, deadline or internal.",
		}, []string{"connection", "outcome"}),
		acquireWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "acubroker_acquire_wait_seconds",
			Help:    "How long acquires on this replica waited queued for a seat; 0 when a seat was free at once.",
			Buckets: waitBuckets,
		}, []string{"connection"}),
		leaseHold: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "acubroker_lease_hold_seconds",
			Help:    "How long leases ended on this replica were held, by final lease state.",
			Buckets: holdBuckets,
		}, []string{"connection", "state"}),
		erpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "acubroker_erp_requests_total",
			Help: "Requests from this replica to Acumatica by endpoint (sign_in, refresh, sign_out) and outcome.",
		}, []string{"connection", "endpoint", "outcome"}),
		erpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "acubroker_erp_request_duration_seconds",
			Help:    "Latency of requests from this replica to Acumatica by endpoint.",
			Buckets: erpBuckets,
		}, []string{"connection", "endpoint"}),
	}
	for _, name := range cfg.Connections {
		m.connections[name] = true
		m.initConnection(name)
	}

	m.collectors = []prometheus.Collector{
		m.acquires, m.acquireWait, m.leaseHold, m.erpRequests, m.erpDuration, m.grpc,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	}
	if cfg.Pool != nil {
		m.collectors = append(m.collectors, newSeatCollector(cfg.Pool, timeout, clock, logger))
	}
	m.registry.MustRegister(m)
	return m
}

// initConnection creates the zero series that alerts and rates need from
// the start: successful acquires, and each endpoint's successes and login
// limit refusals.
func (m *Metrics) initConnection(name string) {
	m.acquires.WithLabelValues(name, outcomeOK)
	for _, endpoint := range []string{endpointSignIn, endpointRefresh, endpointSignOut} {
		m.erpRequests.WithLabelValues(name, endpoint, outcomeOK)
	}
	m.erpRequests.WithLabelValues(name, endpointSignIn, erpOutcomeLoginLimit)
}

// Registry returns the registry that holds every metric.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler returns the HTTP handler of /metrics. A collector that fails
// leaves out its metrics but does not fail the scrape: the seat collector
// reports its failures in acubroker_store_up.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		ErrorLog:          handlerErrorLog{m.logger},
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          m.registry,
		EnableOpenMetrics: true,
	})
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors {
		c.Collect(ch)
	}
}

// UnaryServerInterceptor returns the interceptor that counts and times
// unary gRPC calls. Put it first in the chain, so that it also counts calls
// that later interceptors reject.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return m.grpc.UnaryServerInterceptor()
}

// StreamServerInterceptor returns the interceptor that counts and times
// streaming gRPC calls.
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return m.grpc.StreamServerInterceptor()
}

// InitializeGRPC creates zero series for every method registered on srv, so
// that rates of methods not yet called read 0. Call it after every service
// is registered.
func (m *Metrics) InitializeGRPC(srv *grpc.Server) {
	m.grpc.InitializeMetrics(srv)
}

// connectionLabel returns name when it is configured, else
// UnknownConnection, so that callers cannot create series with made-up
// names.
func (m *Metrics) connectionLabel(name string) string {
	if m.connections[name] {
		return name
	}
	return UnknownConnection
}

// handlerErrorLog logs the errors of the /metrics handler, such as a
// collector that failed or a client that went away mid-response.
type handlerErrorLog struct{ logger *slog.Logger }

func (l handlerErrorLog) Println(v ...any) {
	l.logger.Warn("serving /metrics failed", "err", fmt.Sprint(v...))
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
