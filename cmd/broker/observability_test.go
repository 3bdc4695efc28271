package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/acubroker/acubroker/acumatica"
	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/brokertest"
	"github.com/acubroker/acubroker/server"
)

func envMap(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

func TestTraceExportFromEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		env          map[string]string
		wantEndpoint string
		wantProtocol string
		wantErr      string
	}{
		{name: "nothing set", env: nil},
		{name: "only the exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}},
		{
			name:         "endpoint",
			env:          map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
			wantEndpoint: "http://127.0.0.1:4318", wantProtocol: "http/protobuf",
		},
		{
			name: "traces endpoint and grpc",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://127.0.0.1:4318",
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317",
				"OTEL_EXPORTER_OTLP_PROTOCOL":        "grpc",
			},
			wantEndpoint: "http://127.0.0.1:4317", wantProtocol: "grpc",
		},
		{
			name: "exporter none",
			env:  map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
		},
		{
			name: "SDK disabled",
			env:  map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
		},
		{
			name:    "unsupported exporter",
			env:     map[string]string{"OTEL_TRACES_EXPORTER": "zipkin", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
			wantErr: "invalid OTEL_TRACES_EXPORTER",
		},
		{
			name:    "unsupported protocol",
			env:     map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
			wantErr: "invalid OTLP protocol",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := traceExportFromEnv(envMap(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("error = %v", err)
			}
			if got.endpoint != tt.wantEndpoint {
				t.Errorf("endpoint = %q, want %q", got.endpoint, tt.wantEndpoint)
			}
			if got.protocol != tt.wantProtocol {
				t.Errorf("protocol = %q, want %q", got.protocol, tt.wantProtocol)
			}
			if tt.wantEndpoint == "" && got.off == "" {
				t.Error("tracing is off but no reason is given")
			}
		})
	}
}

func TestSetupTracingOffByDefault(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	tr, err := setupTracing(context.Background(), envMap(nil), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("setupTracing: %v", err)
	}
	if tr != nil {
		t.Fatal("setupTracing with no OTEL_ variables returned a tracer, want none")
	}
	if opts := tr.serverOptions(); len(opts) != 0 {
		t.Errorf("server options with tracing off = %d, want 0", len(opts))
	}
	if tr.httpClient() != nil {
		t.Error("HTTP client with tracing off is not nil, want the acumatica default")
	}
	if err := tr.shutdown(context.Background()); err != nil {
		t.Errorf("shutdown with tracing off: %v", err)
	}
	if !strings.Contains(logs.String(), "tracing off") {
		t.Errorf("log = %q, want it to say tracing is off", logs.String())
	}
}

// otlpReceiver is an OTLP/HTTP trace endpoint that records span names.
type otlpReceiver struct {
	mu    sync.Mutex
	names []string
	raw   bytes.Buffer
}

func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil || req.URL.Path != "/v1/traces" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var export coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &export); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.raw.Write(body)
	for _, rs := range export.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, span := range ss.GetSpans() {
				r.names = append(r.names, span.GetName())
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (r *otlpReceiver) spanNames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.names)
}

// TestTracingExportsSpans cannot run in parallel: it sets OTEL_ variables,
// which the OTLP exporter reads from the process environment.
func TestTracingExportsSpans(t *testing.T) {
	receiver := &otlpReceiver{}
	collector := httptest.NewServer(receiver)
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_SERVICE_NAME", "acubroker-test")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr, err := setupTracing(ctx, envMap(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
	}), brokertest.Logger(t))
	if err != nil {
		t.Fatalf("setupTracing: %v", err)
	}
	if tr == nil {
		t.Fatal("setupTracing with an endpoint returned no tracer")
	}

	env := brokertest.Start(t, brokertest.Options{
		Server: func(c *server.Config) { c.ServerOptions = append(c.ServerOptions, tr.serverOptions()...) },
	})
	_, err = env.Client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: "not-configured"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("AcquireSession of an unknown connection: %v, want NOT_FOUND", err)
	}

	client, err := acumatica.New(acumatica.Config{
		SiteURL:      env.Emulator.URL,
		ClientID:     emulator.DemoClientID,
		ClientSecret: emulator.DemoClientSecret,
		Username:     emulator.DemoUser,
		Password:     emulator.DemoPassword,
		HTTPClient:   tr.httpClient(),
	})
	if err != nil {
		t.Fatalf("acumatica.New: %v", err)
	}
	if _, err := client.PasswordGrant(ctx); err != nil {
		t.Fatalf("PasswordGrant through the traced client: %v", err)
	}

	// The server ends a call's span after the client has its reply, so
	// flush until the AcquireSession span has been exported.
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(receiver.spanNames(), "acubroker.v1.SessionService/AcquireSession") && time.Now().Before(deadline) {
		if err := tr.provider.ForceFlush(ctx); err != nil {
			t.Fatalf("ForceFlush: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := tr.shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	names := receiver.spanNames()
	for _, want := range []string{
		"acubroker.v1.SessionService/AcquireSession",
		"acumatica POST " + emulator.PathToken,
	} {
		if !slices.Contains(names, want) {
			t.Errorf("exported spans %q lack %q", names, want)
		}
	}
	receiver.mu.Lock()
	raw := receiver.raw.String()
	receiver.mu.Unlock()
	if !strings.Contains(raw, "acubroker-test") {
		t.Error("exported spans lack the service name set by OTEL_SERVICE_NAME")
	}
	for _, secret := range []string{emulator.DemoPassword, emulator.DemoClientSecret} {
		if strings.Contains(raw, secret) {
			t.Errorf("exported spans contain a secret (%d bytes long)", len(secret))
		}
	}
}

func TestExportErrorLoggerLimitsRepeats(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	l := newExportErrorLogger(slog.New(slog.NewTextHandler(&logs, nil)), time.Hour)
	for range 5 {
		l.Handle(io.ErrUnexpectedEOF)
	}
	if got := strings.Count(logs.String(), "OpenTelemetry error"); got != 1 {
		t.Errorf("logged %d lines for 5 errors within the interval, want 1", got)
	}
	if l.suppressed != 4 {
		t.Errorf("suppressed = %d, want 4", l.suppressed)
	}
}

func TestRedactURLDropsCredentials(t *testing.T) {
	t.Parallel()
	got := redactURL("https://user:secret@collector.example:4318/v1/traces?token=abc")
	if want := "https://collector.example:4318/v1/traces"; got != want {
		t.Errorf("redactURL = %q, want %q", got, want)
	}
}
