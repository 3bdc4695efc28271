package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/acubroker/acubroker/acumatica"
	"github.com/acubroker/acubroker/broker"
)

// Label values of acubroker_acquires_total and acubroker_erp_requests_total.
const (
	outcomeOK       = "ok"
	outcomeCanceled = "canceled"
	outcomeDeadline = "deadline"
	outcomeInternal = "internal"

	endpointSignIn  = "sign_in"
	endpointRefresh = "refresh"
	endpointSignOut = "sign_out"

	erpOutcomeLoginLimit   = "login_limit"
	erpOutcomeCredentials  = "invalid_credentials"
	erpOutcomeInvalidGrant = "invalid_grant"
	erpOutcomeThrottled    = "throttled"
	erpOutcomeUnavailable  = "unavailable"
	erpOutcomeUnexpected   = "unexpected"
	erpOutcomeError        = "error"
)

// Acquired implements broker.Observer.
func (m *Metrics) Acquired(connection string, waited time.Duration, err error) {
	label := m.connectionLabel(connection)
	m.acquires.WithLabelValues(label, acquireOutcome(err)).Inc()
	m.acquireWait.WithLabelValues(label).Observe(waited.Seconds())
}

// LeaseEnded implements broker.Observer.
func (m *Metrics) LeaseEnded(connection string, state broker.LeaseState, held time.Duration) {
	m.leaseHold.WithLabelValues(m.connectionLabel(connection), string(state)).Observe(held.Seconds())
}

// SignedIn implements broker.Observer.
func (m *Metrics) SignedIn(connection string, took time.Duration, err error) {
	m.erpRequest(connection, endpointSignIn, took, err)
}

// Refreshed implements broker.Observer.
func (m *Metrics) Refreshed(connection string, took time.Duration, err error) {
	m.erpRequest(connection, endpointRefresh, took, err)
}

// SignedOut implements broker.Observer.
func (m *Metrics) SignedOut(connection string, took time.Duration, err error) {
	m.erpRequest(connection, endpointSignOut, took, err)
}

func (m *Metrics) erpRequest(connection, endpoint string, took time.Duration, err error) {
	label := m.connectionLabel(connection)
	m.erpRequests.WithLabelValues(label, endpoint, erpOutcome(err)).Inc()
	m.erpDuration.WithLabelValues(label, endpoint).Observe(took.Seconds())
}

// acquireOutcome returns the outcome label of an acquire. A broker error is
// classified by its reason first, because an ERP error may wrap a context
// error of its own request.
func acquireOutcome(err error) string {
	if err == nil {
		return outcomeOK
	}
	var be *broker.Error
	switch {
	case errors.As(err, &be):
		return string(be.Reason)
	case errors.Is(err, context.Canceled):
		return outcomeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return outcomeDeadline
	}
	return outcomeInternal
}

// erpOutcomes maps the acumatica error kinds, and a cancelled request, to
// outcome labels.
var erpOutcomes = []struct {
	kind  error
	label string
}{
	{acumatica.ErrLoginLimit, erpOutcomeLoginLimit},
	{acumatica.ErrInvalidCredentials, erpOutcomeCredentials},
	{acumatica.ErrInvalidGrant, erpOutcomeInvalidGrant},
	{acumatica.ErrThrottled, erpOutcomeThrottled},
	{acumatica.ErrUnavailable, erpOutcomeUnavailable},
	{acumatica.ErrUnexpected, erpOutcomeUnexpected},
	{context.Canceled, outcomeCanceled},
}

// erpOutcome returns the outcome label of a request to Acumatica.
func erpOutcome(err error) string {
	if err == nil {
		return outcomeOK
	}
	for _, o := range erpOutcomes {
		if errors.Is(err, o.kind) {
			return o.label
		}
	}
	return erpOutcomeError
}
