package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"

	"github.com/acubroker/acubroker/acumatica"
	"github.com/acubroker/acubroker/broker"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/health"
	"github.com/acubroker/acubroker/metrics"
	"github.com/acubroker/acubroker/server"
)

// serviceName is the OpenTelemetry service.name unless OTEL_SERVICE_NAME
// sets another.
const serviceName = "acubroker"

// OTLP protocols, as OTEL_EXPORTER_OTLP_PROTOCOL names them.
const (
	protocolGRPC         = "grpc"
	protocolHTTPProtobuf = "http/protobuf"
)

// traceExport is the trace export that the OTEL_ environment variables request.
type traceExport struct {
	// endpoint is the OTLP endpoint; "" turns tracing off.
	endpoint string
	protocol string
	// off explains why tracing is off, for the log; "" when it is on.
	off string
}

// traceExportFromEnv reads the standard OpenTelemetry variables. Tracing is
// on only when an OTLP endpoint is set: with nothing set, the broker creates
// no exporter and sends nothing, rather than trying the SDK's default
// endpoint on localhost.
func traceExportFromEnv(lookupEnv func(string) (string, bool)) (traceExport, error) {
	get := func(names ...string) string {
		for _, name := range names {
			if v, ok := lookupEnv(name); ok && strings.TrimSpace(v) != "" {
				return strings.TrimSpace(v)
			}
		}
		return ""
	}
	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return traceExport{off: "OTEL_SDK_DISABLED is true"}, nil
	}
	switch exporter := get("OTEL_TRACES_EXPORTER"); exporter {
	case "none":
		return traceExport{off: "OTEL_TRACES_EXPORTER is none"}, nil
	case "", "otlp":
	default:
		return traceExport{}, fmt.Errorf("invalid OTEL_TRACES_EXPORTER %q: the broker supports otlp and none", exporter)
	}
	endpoint := get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
	if endpoint == "" {
		return traceExport{off: "no OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set"}, nil
	}
	protocol := get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
	switch protocol {
	case "":
		protocol = protocolHTTPProtobuf
	case protocolGRPC, protocolHTTPProtobuf:
	default:
		return traceExport{}, fmt.Errorf("invalid OTLP protocol %q: the broker supports %s and %s",
			protocol, protocolHTTPProtobuf, protocolGRPC)
	}
	return traceExport{endpoint: endpoint, protocol: protocol}, nil
}

// tracing is the process's OpenTelemetry tracing of gRPC calls and of
// requests to Acumatica. A nil *tracing traces nothing and adds no
// instrumentation.
type tracing struct {
	provider   *sdktrace.TracerProvider
	propagator propagation.TextMapPropagator
}

// setupTracing starts trace export as the OTEL_ environment variables
// configure it. It returns nil when they turn tracing off. The OTLP
// exporters read the rest of their settings (headers, TLS, timeouts) from
// the same variables.
func setupTracing(ctx context.Context, lookupEnv func(string) (string, bool), logger *slog.Logger) (*tracing, error) {
	export, err := traceExportFromEnv(lookupEnv)
	if err != nil {
		return nil, err
	}
	if export.endpoint == "" {
		logger.Info("tracing off", "reason", export.off)
		return nil, nil
	}

	var exporter sdktrace.SpanExporter
	switch export.protocol {
	case protocolGRPC:
		exporter, err = otlptracegrpc.New(ctx)
	default:
		exporter, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("create the OTLP trace exporter for %s: %w", redactURL(export.endpoint), err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", serviceName)),
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		// A malformed OTEL_RESOURCE_ATTRIBUTES still yields the other
		// attributes; export with them.
		logger.Warn("some OpenTelemetry resource attributes are invalid; exporting without them", "err", err)
	}
	otel.SetErrorHandler(newExportErrorLogger(logger, time.Minute))
	t := &tracing{
		provider: sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res)),
		propagator: propagation.NewCompositeTextMapPropagator(
			propagation.TraceContext{}, propagation.Baggage{},
		),
	}
	logger.Info("tracing on", "endpoint", redactURL(export.endpoint), "protocol", export.protocol)
	return t, nil
}

// serverOptions returns the gRPC server options that trace calls. Health
// checks are left out: probes would fill the traces.
func (t *tracing) serverOptions() []grpc.ServerOption {
	if t == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(t.provider),
		otelgrpc.WithPropagators(t.propagator),
		otelgrpc.WithFilter(filters.Not(filters.HealthCheck())),
	))}
}

// httpClient returns the HTTP client for requests to Acumatica, or nil for
// the acumatica package's default.
//
// NOTE: the acumatica client trusts its connection tracing only on a bare
// *http.Transport. Behind otelhttp it treats a request that failed before
// any connection, other than by a dial error, as possibly sent: a sign-in
// cut short that way keeps its seat until reclaim_at instead of freeing it.
// This is why the transport is wrapped only while tracing is on.
func (t *tracing) httpClient() *http.Client {
	if t == nil {
		return nil
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	return &http.Client{
		Timeout: acumatica.DefaultTimeout,
		Transport: otelhttp.NewTransport(base,
			otelhttp.WithTracerProvider(t.provider),
			otelhttp.WithPropagators(t.propagator),
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
				return "acumatica " + r.Method + " " + r.URL.Path
			}),
		),
	}
}

// shutdown exports the spans still buffered and stops the exporter.
func (t *tracing) shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// flush exports the spans still buffered, for at most 5 seconds, and logs a
// failure.
func (t *tracing) flush(logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.shutdown(ctx); err != nil {
		logger.Warn("exporting the last spans failed; they are lost", "err", err)
	}
}

// redactURL returns endpoint without its user information, query and
// fragment, which may carry credentials.
func redactURL(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host + u.Path
}

// exportErrorLogger logs OpenTelemetry's errors, such as failed exports. It
// logs at most one line per interval, with the count of errors it skipped.
type exportErrorLogger struct {
	logger   *slog.Logger
	interval time.Duration

	// mu protects the fields below.
	mu         sync.Mutex
	lastLogged time.Time
	suppressed int
}

func newExportErrorLogger(logger *slog.Logger, interval time.Duration) *exportErrorLogger {
	return &exportErrorLogger{logger: logger, interval: interval}
}

// Handle implements otel.ErrorHandler.
func (l *exportErrorLogger) Handle(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.lastLogged.IsZero() && now.Sub(l.lastLogged) < l.interval {
		l.suppressed++
		return
	}
	l.logger.Warn("OpenTelemetry error; spans may be lost", "err", err, "similar_errors_not_logged", l.suppressed)
	l.lastLogged, l.suppressed = now, 0
}

// observabilityServer is the HTTP listener of /metrics, /healthz and
// /readyz.
type observabilityServer struct {
	srv    *http.Server
	addr   string
	done   chan struct{}
	logger *slog.Logger
}

// startObservabilityServer serves the metrics and probe endpoints on addr.
func startObservabilityServer(addr string, m *metrics.Metrics, checker *health.Checker, logger *slog.Logger) (*observabilityServer, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w; set -metrics-listen to a free address, or to empty to disable it", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("GET /healthz", health.LivenessHandler())
	mux.Handle("GET /readyz", checker.ReadinessHandler())
	s := &observabilityServer{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
		addr:   lis.Addr().String(),
		done:   make(chan struct{}),
		logger: logger,
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics listener stopped; /metrics, /healthz and /readyz are unavailable", "address", s.addr, "err", err)
		}
	}()
	logger.Info("metrics listener serving", "address", s.addr, "paths", "/metrics /healthz /readyz")
	return s, nil
}

// stop closes the listener after in-flight scrapes finish, for at most
// timeout.
func (s *observabilityServer) stop(timeout time.Duration) {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.logger.Warn("metrics listener did not stop in time; closing it", "err", err)
		_ = s.srv.Close()
	}
	<-s.done
	s.logger.Info("metrics listener stopped", "address", s.addr)
}

// startHealthChecker checks the database once, so that the server's health
// status is right before the first call, and keeps checking until the
// returned stop function is called.
func startHealthChecker(ctx context.Context, pool *pgxpool.Pool, srv *server.Server, logger *slog.Logger) (*health.Checker, func(), error) {
	checker, err := health.NewChecker(health.Config{
		Pool:     pool,
		Status:   srv.Health(),
		Services: []string{"", acubrokerv1.SessionService_ServiceDesc.ServiceName},
		Logger:   logger,
	})
	if err != nil {
		return nil, nil, err
	}
	// A failed check is logged by the checker and retried by Run.
	_ = checker.Check(ctx)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		checker.Run(runCtx)
	}()
	return checker, func() { cancel(); <-done }, nil
}

// connectionNames returns the names of conns.
func connectionNames(conns []broker.Connection) []string {
	names := make([]string, 0, len(conns))
	for _, c := range conns {
		names = append(names, c.Name)
	}
	return names
}

// envOrUnset returns the environment variable name's value, even when it is
// empty, or fallback when it is not set. Unlike envOr it lets an empty value
// turn a feature off.
func envOrUnset(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return fallback
}
