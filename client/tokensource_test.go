package client_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/client"
	"github.com/acubroker/acubroker/emulator"
	"github.com/acubroker/acubroker/internal/brokertest"
)

func TestTokenSourceRefreshesToken(t *testing.T) {
	t.Parallel()
	const tokenLifetime = 2 * time.Minute
	env := brokertest.Start(t, brokertest.Options{
		Seats:    1,
		Emulator: func(c *emulator.Config) { c.TokenLifetime = tokenLifetime },
		// Refresh only near expiry, so that the first token survives the
		// renewals before the clock moves.
		Connection: func(c *broker.Connection) { c.RefreshBefore = 30 * time.Second },
	})
	emu := env.Emulator.Emulator
	// The client judges token expiry by the broker's clock, the emulator's.
	c := newClient(t, env, client.WithClock(emu))
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	ts := c.TokenSource(ctx, connection, client.WithLeaseTTL(10*time.Minute))

	first, err := ts.Token()
	if err != nil {
		t.Fatalf("first Token: %v", err)
	}
	if first.AccessToken == "" || first.TokenType != "Bearer" {
		t.Fatalf("first token has type %q and an empty access token: %t, want a bearer token",
			first.TokenType, first.AccessToken == "")
	}
	if left := time.Until(first.Expiry); left <= tokenLifetime-10*time.Second || left > tokenLifetime {
		t.Errorf("first token expires in %s, want about %s", left, tokenLifetime)
	}
	again, err := ts.Token()
	if err != nil {
		t.Fatalf("second Token: %v", err)
	}
	if again.AccessToken != first.AccessToken {
		t.Error("Token changed the access token before it neared expiry")
	}

	emu.Advance(tokenLifetime + time.Second)
	refreshed, err := ts.Token()
	if err != nil {
		t.Fatalf("Token after the token lifetime: %v", err)
	}
	if refreshed.AccessToken == first.AccessToken {
		t.Error("Token after the token lifetime returned the expired access token")
	}
	if refreshes := emu.Stats().Refreshes; refreshes != 1 {
		t.Errorf("emulator refreshes = %d, want 1", refreshes)
	}
	if !refreshed.Expiry.After(time.Now().Add(time.Minute)) {
		t.Errorf("refreshed token expires at %s, want about %s from now", refreshed.Expiry, tokenLifetime)
	}

	hc := &http.Client{Transport: &oauth2.Transport{Source: ts}}
	if ids := getCustomers(t, hc, customersURL(env)); len(ids) != 4 {
		t.Errorf("customers with the refreshed token = %v, want 4", ids)
	}

	cancel()
	waitFor(t, "the cancelled token source to release its lease", func() bool {
		return seatStates(t, env)["leased"] == 0
	})
	if _, err := ts.Token(); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Token after the context was cancelled returned %v, want ErrClosed", err)
	}
}

func TestTokenSourceReplacesRejectedLease(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	c, rec := newRecordedClient(t, env)
	ts := c.TokenSource(testContext(t), connection)
	t.Cleanup(func() { _ = ts.Close() })

	first, err := ts.Token()
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if err := ts.ReleaseTokenRejected(testContext(t)); err != nil {
		t.Fatalf("ReleaseTokenRejected: %v", err)
	}
	second, err := ts.Token()
	if err != nil {
		t.Fatalf("Token after ReleaseTokenRejected: %v", err)
	}
	if second.AccessToken == first.AccessToken {
		t.Error("Token after ReleaseTokenRejected returned the rejected token")
	}
	if n := len(rec.of("AcquireSession")); n != 2 {
		t.Errorf("AcquireSession calls = %d, want 2", n)
	}
	if err := ts.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	seats := seatStates(t, env)
	if seats["leased"] != 0 {
		t.Errorf("seats after Close = %v, want none leased", seats)
	}
	if open := env.Emulator.Emulator.Stats().OpenSessions; open != 1 {
		t.Errorf("emulator open sessions = %d, want 1: the rejected session signed out, the new one warm", open)
	}
}
