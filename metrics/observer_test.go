package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/acubroker/acubroker/acumatica"
	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/metrics"
)

func TestAcquiredCountsOutcomes(t *testing.T) {
	t.Parallel()
	m := metrics.New(metrics.Config{Connections: []string{"erp"}})
	erpTimeout := &broker.Error{
		Reason: broker.ReasonERPUnavailable,
		Cause:  &acumatica.Error{Kind: acumatica.ErrUnavailable, Err: context.DeadlineExceeded},
	}
	events := []struct {
		connection string
		err        error
	}{
		{"erp", nil},
		{"erp", nil},
		{"erp", &broker.Error{Reason: broker.ReasonNoSeatAvailable}},
		{"erp", fmt.Errorf("acquire: %w", &broker.Error{Reason: broker.ReasonLoginLimit})},
		{"erp", erpTimeout},
		{"erp", context.Canceled},
		{"erp", errors.Join(context.DeadlineExceeded, errors.New("dequeue failed"))},
		{"erp", errors.New("decode credentials")},
		{"made-up", &broker.Error{Reason: broker.ReasonConnectionNotFound}},
		{"", &broker.Error{Reason: broker.ReasonInvalidArgument}},
	}
	for _, e := range events {
		m.Acquired(e.connection, 0, e.err)
	}

	tests := []struct {
		connection, outcome string
		want                float64
	}{
		{"erp", "ok", 2},
		{"erp", "NO_SEAT_AVAILABLE", 1},
		{"erp", "ERP_LOGIN_LIMIT", 1},
		{"erp", "ERP_UNAVAILABLE", 1},
		{"erp", "canceled", 1},
		{"erp", "deadline", 1},
		{"erp", "internal", 1},
		{metrics.UnknownConnection, "CONNECTION_NOT_FOUND", 1},
		{metrics.UnknownConnection, "INVALID_ARGUMENT", 1},
	}
	for _, tt := range tests {
		got := counterValue(t, m, "acubroker_acquires_total", map[string]string{"connection": tt.connection, "outcome": tt.outcome})
		if got != tt.want {
			t.Errorf("acubroker_acquires_total{connection=%q,outcome=%q} = %v, want %v", tt.connection, tt.outcome, got, tt.want)
		}
	}
	if got := seriesCount(t, m, "acubroker_acquires_total"); got != len(tests) {
		t.Errorf("acubroker_acquires_total has %d series, want %d", got, len(tests))
	}
}

func TestERPRequestsCountOutcomes(t *testing.T) {
	t.Parallel()
	m := metrics.New(metrics.Config{Connections: []string{"erp"}})
	m.SignedIn("erp", 20*time.Millisecond, nil)
	m.SignedIn("erp", 30*time.Millisecond, &acumatica.Error{Kind: acumatica.ErrLoginLimit, StatusCode: 429})
	m.Refreshed("erp", 10*time.Millisecond, &acumatica.Error{Kind: acumatica.ErrInvalidGrant})
	m.Refreshed("erp", 10*time.Millisecond, &acumatica.Error{Kind: acumatica.ErrUnavailable, Err: context.Canceled})
	m.SignedOut("erp", 5*time.Millisecond, nil)
	m.SignedOut("erp", 5*time.Millisecond, context.Canceled)
	m.SignedOut("other", 5*time.Millisecond, errors.New("boom"))

	tests := []struct {
		connection, endpoint, outcome string
		want                          float64
	}{
		{"erp", "sign_in", "ok", 1},
		{"erp", "sign_in", "login_limit", 1},
		{"erp", "refresh", "invalid_grant", 1},
		{"erp", "refresh", "unavailable", 1},
		{"erp", "refresh", "ok", 0},
		{"erp", "sign_out", "ok", 1},
		{"erp", "sign_out", "canceled", 1},
		{metrics.UnknownConnection, "sign_out", "error", 1},
	}
	for _, tt := range tests {
		labels := map[string]string{"connection": tt.connection, "endpoint": tt.endpoint, "outcome": tt.outcome}
		if got := counterValue(t, m, "acubroker_erp_requests_total", labels); got != tt.want {
			t.Errorf("acubroker_erp_requests_total%v = %v, want %v", labels, got, tt.want)
		}
	}
	count, sum := histogramValue(t, m, "acubroker_erp_request_duration_seconds", map[string]string{"connection": "erp", "endpoint": "sign_in"})
	if count != 2 {
		t.Errorf("sign_in duration count = %d, want 2", count)
	}
	if want := 0.05; sum < want-1e-9 || sum > want+1e-9 {
		t.Errorf("sign_in duration sum = %v, want %v", sum, want)
	}
}

func TestLeaseEndedObservesHoldTime(t *testing.T) {
	t.Parallel()
	m := metrics.New(metrics.Config{Connections: []string{"erp"}})
	m.LeaseEnded("erp", broker.LeaseReleased, 2*time.Second)
	m.LeaseEnded("erp", broker.LeaseReleased, 4*time.Second)
	m.LeaseEnded("erp", broker.LeaseSignedOut, time.Minute)

	count, sum := histogramValue(t, m, "acubroker_lease_hold_seconds", map[string]string{"connection": "erp", "state": "released"})
	if count != 2 || sum != 6 {
		t.Errorf("released hold time: count %d, sum %v; want 2 and 6", count, sum)
	}
	count, sum = histogramValue(t, m, "acubroker_lease_hold_seconds", map[string]string{"connection": "erp", "state": "signed_out"})
	if count != 1 || sum != 60 {
		t.Errorf("signed_out hold time: count %d, sum %v; want 1 and 60", count, sum)
	}
}

func TestRegistryPassesLint(t *testing.T) {
	t.Parallel()
	m := metrics.New(metrics.Config{Connections: []string{"erp"}})
	m.Acquired("erp", time.Second, nil)
	m.LeaseEnded("erp", broker.LeaseReleased, time.Second)
	m.SignedIn("erp", time.Second, nil)
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatalf("GatherAndLint: %v", err)
	}
	for _, p := range problems {
		if !strings.HasPrefix(p.Metric, "acubroker_") {
			continue
		}
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
