package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// brokerError builds a status error the way the broker's server package
// does: an ErrorInfo, and a RetryInfo when delay is positive.
func brokerError(t *testing.T, c codes.Code, reason string, delay time.Duration) error {
	t.Helper()
	st := status.New(c, "test message for "+reason)
	info := &errdetails.ErrorInfo{Reason: reason, Domain: "acubroker"}
	var err error
	if delay > 0 {
		st, err = st.WithDetails(info, &errdetails.RetryInfo{RetryDelay: durationpb.New(delay)})
	} else {
		st, err = st.WithDetails(info)
	}
	if err != nil {
		t.Fatalf("add details: %v", err)
	}
	return st.Err()
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		name      string
		give      error
		wantRetry bool
		wantDelay time.Duration
	}{
		{"unavailable", status.Error(codes.Unavailable, "down"), true, 0},
		{"unavailable with delay", brokerError(t, codes.Unavailable, "ERP_UNAVAILABLE", time.Second), true, time.Second},
		{"aborted", brokerError(t, codes.Aborted, "ACQUIRE_IN_PROGRESS", time.Second), true, time.Second},
		{"exhausted with delay", brokerError(t, codes.ResourceExhausted, ReasonNoSeatAvailable, 2*time.Second), true, 2 * time.Second},
		{"exhausted without delay", status.Error(codes.ResourceExhausted, "no delay"), false, 0},
		{"invalid argument", status.Error(codes.InvalidArgument, "bad"), false, 0},
		{"not found", brokerError(t, codes.NotFound, ReasonLeaseNotFound, 0), false, 0},
		{"failed precondition", brokerError(t, codes.FailedPrecondition, ReasonLeaseExpired, 0), false, 0},
		{"permission denied", status.Error(codes.PermissionDenied, "no"), false, 0},
		{"wrapped unavailable", fmt.Errorf("acquire: %w", status.Error(codes.Unavailable, "down")), true, 0},
		{"lost lease wrapping unavailable", &LeaseLostError{Err: status.Error(codes.Unavailable, "down"), local: true}, false, 0},
		{"plain error", errors.New("boom"), false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			delay, retry := retryable(tt.give)
			if retry != tt.wantRetry {
				t.Errorf("retryable(%v) retry = %t, want %t", tt.give, retry, tt.wantRetry)
			}
			if delay != tt.wantDelay {
				t.Errorf("retryable(%v) delay = %s, want %s", tt.give, delay, tt.wantDelay)
			}
		})
	}
}

func TestRetryWaitBounds(t *testing.T) {
	p := retryPolicy{maxAttempts: 10, initialBackoff: 100 * time.Millisecond, maxBackoff: time.Second}
	tests := []struct {
		attempt  int
		delay    time.Duration
		min, max time.Duration
	}{
		{attempt: 1, min: 50 * time.Millisecond, max: 100 * time.Millisecond},
		{attempt: 2, min: 100 * time.Millisecond, max: 200 * time.Millisecond},
		{attempt: 3, min: 200 * time.Millisecond, max: 400 * time.Millisecond},
		{attempt: 9, min: 500 * time.Millisecond, max: time.Second},
		{attempt: 1000, min: 500 * time.Millisecond, max: time.Second},
		{attempt: 1, delay: 2 * time.Second, min: 2 * time.Second, max: 2200 * time.Millisecond},
	}
	for _, tt := range tests {
		for range 50 {
			got := p.wait(tt.attempt, tt.delay)
			if got < tt.min || got > tt.max {
				t.Fatalf("wait(attempt %d, broker delay %s) = %s, want within [%s, %s]",
					tt.attempt, tt.delay, got, tt.min, tt.max)
			}
		}
	}
}

func TestReasonAndRetryDelay(t *testing.T) {
	err := fmt.Errorf("acquire: %w", brokerError(t, codes.ResourceExhausted, ReasonNoSeatAvailable, 1500*time.Millisecond))
	if got := Reason(err); got != ReasonNoSeatAvailable {
		t.Errorf("Reason = %q, want %s", got, ReasonNoSeatAvailable)
	}
	if got := RetryDelay(err); got != 1500*time.Millisecond {
		t.Errorf("RetryDelay = %s, want 1.5s", got)
	}
	if got := Reason(errors.New("plain")); got != "" {
		t.Errorf("Reason of a plain error = %q, want empty", got)
	}
	if got := RetryDelay(nil); got != 0 {
		t.Errorf("RetryDelay(nil) = %s, want 0", got)
	}
	lost := &LeaseLostError{Reason: ReasonLeaseRevoked, Err: brokerError(t, codes.FailedPrecondition, ReasonLeaseRevoked, 0)}
	if got := Reason(fmt.Errorf("do: %w", lost)); got != ReasonLeaseRevoked {
		t.Errorf("Reason of a wrapped *LeaseLostError = %q, want %s", got, ReasonLeaseRevoked)
	}
	if !errors.Is(lost, ErrLeaseLost) {
		t.Error("errors.Is(*LeaseLostError, ErrLeaseLost) = false, want true")
	}
}

func TestLeaseGone(t *testing.T) {
	tests := []struct {
		give error
		want bool
	}{
		{brokerError(t, codes.FailedPrecondition, ReasonLeaseExpired, 0), true},
		{brokerError(t, codes.FailedPrecondition, ReasonLeaseRevoked, 0), true},
		{brokerError(t, codes.FailedPrecondition, ReasonLeaseReleased, 0), true},
		{brokerError(t, codes.FailedPrecondition, ReasonLeaseSignedOut, 0), true},
		{brokerError(t, codes.NotFound, ReasonLeaseNotFound, 0), true},
		{brokerError(t, codes.FailedPrecondition, "ERP_CREDENTIALS_REJECTED", 0), false},
		{brokerError(t, codes.Unavailable, "STORE_UNAVAILABLE", time.Second), false},
	}
	for _, tt := range tests {
		if got := leaseGone(tt.give); got != tt.want {
			t.Errorf("leaseGone(%s %s) = %t, want %t", status.Code(tt.give), Reason(tt.give), got, tt.want)
		}
	}
}

func TestUnderBaseURL(t *testing.T) {
	tests := []struct {
		base, give string
		want       bool
	}{
		{"https://erp.example.com/Company", "https://erp.example.com/Company/entity/Default/24.200.001/Customer", true},
		{"https://erp.example.com/Company", "https://erp.example.com/Company", true},
		{"https://erp.example.com/Company/", "https://erp.example.com/Company/entity", true},
		{"https://erp.example.com/Company", "https://erp.example.com:443/Company/entity", true},
		{"https://erp.example.com/Company", "https://ERP.example.com/Company/entity", true},
		{"https://erp.example.com/Company", "https://erp.example.com/CompanyX/entity", false},
		{"https://erp.example.com/Company", "https://erp.example.com/Company/../Other", false},
		{"https://erp.example.com/Company", "https://erp.example.com/Other", false},
		{"https://erp.example.com/Company", "http://erp.example.com/Company/entity", false},
		{"https://erp.example.com/Company", "https://erp.example.com:8443/Company/entity", false},
		{"https://erp.example.com/Company", "https://other.example.com/Company/entity", false},
		{"https://erp.example.com/Company", "https://erp.example.com.evil.test/Company/entity", false},
		{"http://127.0.0.1:8081", "http://127.0.0.1:8081/entity/auth/login", true},
		{"http://127.0.0.1:8081", "http://127.0.0.1:8082/entity/auth/login", false},
	}
	for _, tt := range tests {
		base, err := url.Parse(tt.base)
		if err != nil {
			t.Fatalf("parse %q: %v", tt.base, err)
		}
		u, err := url.Parse(tt.give)
		if err != nil {
			t.Fatalf("parse %q: %v", tt.give, err)
		}
		if got := underBaseURL(u, base); got != tt.want {
			t.Errorf("underBaseURL(%q, base %q) = %t, want %t", tt.give, tt.base, got, tt.want)
		}
	}
}

func TestIsLoopbackTarget(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{"127.0.0.1:50051", true},
		{"localhost:50051", true},
		{"[::1]:50051", true},
		{"dns:///localhost:50051", true},
		{"passthrough:///127.0.0.1:50051", true},
		{"unix:///run/acubroker.sock", true},
		{"unix:acubroker.sock", true},
		{"broker.internal:50051", false},
		{"dns:///broker.internal:50051", false},
		{"dns://127.0.0.1/broker.internal:50051", false},
		{"10.0.0.5:50051", false},
		{"localhost.evil.test:50051", false},
	}
	for _, tt := range tests {
		if got := isLoopbackTarget(tt.give); got != tt.want {
			t.Errorf("isLoopbackTarget(%q) = %t, want %t", tt.give, got, tt.want)
		}
	}
}

func TestDialRejectsPlaintextAPIKeyToRemoteHost(t *testing.T) {
	_, err := Dial("broker.internal:50051", WithInsecure(), WithAPIKey("secret-key"))
	if err == nil {
		t.Fatal("Dial with an API key in plaintext to a remote host succeeded, want an error")
	}
	if strings.Contains(err.Error(), "secret-key") {
		t.Errorf("Dial's error %q contains the API key", err)
	}
	c, err := Dial("127.0.0.1:50051", WithInsecure(), WithAPIKey("secret-key"))
	if err != nil {
		t.Fatalf("Dial with an API key in plaintext to loopback: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestOptionsValidated(t *testing.T) {
	tests := []struct {
		name string
		give []Option
		want string
	}{
		{"empty API key", []Option{WithAPIKey("")}, "empty key"},
		{"insecure and TLS", []Option{WithInsecure(), WithTLSConfig(&tls.Config{MinVersion: tls.VersionTLS13})}, "choose one"},
		{"defaults", nil, ""},
		{"zero attempts", []Option{WithMaxAttempts(0)}, "WithMaxAttempts got 0"},
		{"inverted backoff", []Option{WithBackoff(time.Second, time.Millisecond)}, "WithBackoff"},
		{"nil logger", []Option{WithLogger(nil)}, "WithLogger got nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newConfig(tt.give)
			if tt.want == "" {
				if err != nil {
					t.Errorf("newConfig: %v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("newConfig error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestCredentialsRedacted(t *testing.T) {
	creds := Credentials{
		AccessToken: "secret-token",
		TokenType:   "Bearer",
		BaseURL:     "https://erp.example.com/Company",
		Cookies:     []*http.Cookie{{Name: "ASP.NET_SessionId", Value: "secret-cookie"}},
	}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("lease", "credentials", creds)
	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", creds),
		"%+v":  fmt.Sprintf("%+v", creds),
		"%#v":  fmt.Sprintf("%#v", creds),
		"slog": logged.String(),
	}
	for format, out := range outputs {
		if strings.Contains(out, "secret-token") || strings.Contains(out, "secret-cookie") {
			t.Errorf("credentials formatted with %s contain a secret: %s", format, out)
		}
	}
	if got, want := creds.Authorization(), "Bearer secret-token"; got != want {
		t.Errorf("Authorization() = %q, want %q", got, want)
	}
}

func TestLeaseAndClientRedacted(t *testing.T) {
	cfg, err := newConfig([]Option{WithAPIKey("secret-key")})
	if err != nil {
		t.Fatalf("newConfig: %v", err)
	}
	// No call is made: the lease's first renewal is 40 minutes away, and the
	// test stops it.
	c := newClient(nil, cfg)
	lease := newLease(c, "erp", 0, &acubrokerv1.AcquireSessionResponse{
		Lease:       &acubrokerv1.Lease{LeaseId: "lease-1", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))},
		Credentials: &acubrokerv1.Credentials{AccessToken: "secret-token", BaseUrl: "https://erp.example.com/Company"},
	})
	defer lease.stopRenewer()

	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("lease", "lease", lease, "client", c)
	outputs := map[string]string{
		"lease %v":  fmt.Sprintf("%v", lease),
		"lease %+v": fmt.Sprintf("%+v", lease),
		"client %v": fmt.Sprintf("%v", c),
		"slog":      logged.String(),
	}
	for format, out := range outputs {
		if strings.Contains(out, "secret-token") || strings.Contains(out, "secret-key") {
			t.Errorf("%s contains a secret: %s", format, out)
		}
	}
	if !strings.Contains(outputs["lease %v"], "lease-1") {
		t.Errorf("lease %%v = %q, want it to name the lease id", outputs["lease %v"])
	}
}

func TestAuthorizeReplacesSessionCookies(t *testing.T) {
	req, err := http.NewRequest(http.MethodGet, "https://erp.example.com/Company/entity", nil)
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	req.Header.Set("Authorization", "Basic old")
	req.AddCookie(&http.Cookie{Name: "ASP.NET_SessionId", Value: "stale"})
	req.AddCookie(&http.Cookie{Name: "Locale", Value: "en-US"})
	creds := Credentials{
		AccessToken: "tok",
		TokenType:   "Bearer",
		Cookies:     []*http.Cookie{{Name: "ASP.NET_SessionId", Value: "fresh"}},
	}

	got := authorize(req, creds)
	if h := got.Header.Get("Authorization"); h != "Bearer tok" {
		t.Errorf("Authorization = %q, want %q", h, "Bearer tok")
	}
	cookies := map[string][]string{}
	for _, c := range got.Cookies() {
		cookies[c.Name] = append(cookies[c.Name], c.Value)
	}
	if v := cookies["ASP.NET_SessionId"]; len(v) != 1 || v[0] != "fresh" {
		t.Errorf("ASP.NET_SessionId cookies = %q, want only the session's value", v)
	}
	if v := cookies["Locale"]; len(v) != 1 || v[0] != "en-US" {
		t.Errorf("Locale cookies = %q, want the request's own value kept", v)
	}
	if h := req.Header.Get("Authorization"); h != "Basic old" {
		t.Errorf("authorize changed the caller's request: Authorization = %q", h)
	}
}
