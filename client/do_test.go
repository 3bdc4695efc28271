package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/acubroker/acubroker/client"
	"github.com/acubroker/acubroker/internal/brokertest"
)

func TestDoReleasesOnSuccess(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	c := newClient(t, env)

	var leaseID string
	err := c.Do(testContext(t), connection, func(ctx context.Context, s *client.Lease) error {
		leaseID = s.ID()
		if s.Credentials().AccessToken == "" {
			return errors.New("the lease has no access token")
		}
		if got := leaseState(t, env, s.ID()); got != "active" {
			return fmt.Errorf("lease state inside fn = %q, want active", got)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if got := leaseState(t, env, leaseID); got != "released" {
		t.Errorf("lease state after Do = %q, want released", got)
	}
	seats := seatStates(t, env)
	if seats["leased"] != 0 || seats["idle"] != 1 {
		t.Errorf("seats after Do = %v, want 1 idle and none leased", seats)
	}
	if open := env.Emulator.Emulator.Stats().OpenSessions; open != 1 {
		t.Errorf("emulator open sessions = %d, want 1, the one seat used", open)
	}
}

func TestDoReleasesOnError(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	c := newClient(t, env)

	fnErr := errors.New("posting the invoice failed")
	var leaseID string
	err := c.Do(testContext(t), connection, func(ctx context.Context, s *client.Lease) error {
		leaseID = s.ID()
		return fnErr
	})
	if err != fnErr {
		t.Errorf("Do returned %v, want fn's error unchanged", err)
	}
	if got := leaseState(t, env, leaseID); got != "released" {
		t.Errorf("lease state after Do = %q, want released", got)
	}
	if open := env.Emulator.Emulator.Stats().OpenSessions; open != 1 {
		t.Errorf("emulator open sessions = %d, want 1", open)
	}
}

func TestDoReleasesOnPanic(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	c := newClient(t, env)

	var leaseID string
	recovered := func() (p any) {
		defer func() { p = recover() }()
		_ = c.Do(testContext(t), connection, func(ctx context.Context, s *client.Lease) error {
			leaseID = s.ID()
			panic("fn panicked")
		})
		return nil
	}()
	if recovered != "fn panicked" {
		t.Fatalf("recovered %v, want fn's panic value", recovered)
	}
	if got := leaseState(t, env, leaseID); got != "released" {
		t.Errorf("lease state after the panic = %q, want released", got)
	}
	seats := seatStates(t, env)
	if seats["leased"] != 0 {
		t.Errorf("seats after the panic = %v, want none leased", seats)
	}
	if open := env.Emulator.Emulator.Stats().OpenSessions; open != 1 {
		t.Errorf("emulator open sessions = %d, want 1", open)
	}
}

func TestDoErrTokenRejectedRetiresSession(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	c := newClient(t, env)

	var leaseID string
	err := c.Do(testContext(t), connection, func(ctx context.Context, s *client.Lease) error {
		leaseID = s.ID()
		return fmt.Errorf("GET Customer: %w", client.ErrTokenRejected)
	})
	if !errors.Is(err, client.ErrTokenRejected) {
		t.Errorf("Do returned %v, want fn's error wrapping ErrTokenRejected", err)
	}
	if got := leaseState(t, env, leaseID); got != "retired" {
		t.Errorf("lease state = %q, want retired", got)
	}
	stats := env.Emulator.Emulator.Stats()
	if stats.OpenSessions != 0 {
		t.Errorf("emulator open sessions = %d, want 0 after the retired session's sign-out", stats.OpenSessions)
	}
	if stats.SignOuts != 1 {
		t.Errorf("emulator sign-outs = %d, want 1", stats.SignOuts)
	}
}

func TestDoTransport401RetiresSession(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	c := newClient(t, env)

	var leaseID string
	err := c.Do(testContext(t), connection, func(ctx context.Context, s *client.Lease) error {
		leaseID = s.ID()
		revoke(t, env, s.Credentials().AccessToken)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, customersURL(env), nil)
		if err != nil {
			return err
		}
		resp, err := (&http.Client{Transport: s.Transport(nil)}).Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			return fmt.Errorf("GET Customer with a revoked token: status %d, want 401", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if got := leaseState(t, env, leaseID); got != "retired" {
		t.Errorf("lease state = %q, want retired after the transport saw 401", got)
	}
}

func TestDoLostLeaseCancelsContext(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	c, rec := newRecordedClient(t, env)

	var leaseID string
	var cause error
	err := c.Do(testContext(t), connection, func(ctx context.Context, s *client.Lease) error {
		leaseID = s.ID()
		// Lease expiry follows the broker's clock, the emulator's: move it
		// past the TTL so that maintenance reclaims the seat and the next
		// renewal finds the lease gone.
		env.Emulator.Emulator.Advance(3 * time.Second)
		select {
		case <-ctx.Done():
			cause = context.Cause(ctx)
			return ctx.Err()
		case <-time.After(10 * time.Second):
			return errors.New("fn's context was not cancelled within 10s of the lease expiring")
		}
	}, client.WithLeaseTTL(2*time.Second))

	if !errors.Is(err, client.ErrLeaseLost) {
		t.Fatalf("Do returned %v, want a lost lease", err)
	}
	if got := client.Reason(err); got != client.ReasonLeaseExpired {
		t.Errorf("Reason(Do's error) = %q, want %s", got, client.ReasonLeaseExpired)
	}
	if !strings.Contains(err.Error(), client.ReasonLeaseExpired) {
		t.Errorf("Do's error %q does not name the reason %s", err, client.ReasonLeaseExpired)
	}
	var lost *client.LeaseLostError
	if !errors.As(cause, &lost) || lost.LeaseID != leaseID {
		t.Errorf("context.Cause(fn's context) = %v, want the *LeaseLostError of lease %s", cause, leaseID)
	}
	if got := leaseState(t, env, leaseID); got != "expired" {
		t.Errorf("lease state = %q, want expired", got)
	}
	if n := len(rec.of("ReleaseSession")); n != 0 {
		t.Errorf("Do sent %d ReleaseSession calls for a lease the broker had ended, want 0", n)
	}
}
