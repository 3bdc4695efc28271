package acumatica_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acubroker/acubroker/acumatica"
	"github.com/acubroker/acubroker/emulator"
)

// testNow is the client clock in these tests, so that expiries are exact.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type testBundle struct {
	server *emulator.Server
	emu    *emulator.Emulator
	client *acumatica.Client

	mu      sync.Mutex
	secrets []string // every credential and token the test has seen
}

// setup starts an emulator with DefaultConfig, changed by modify, and a
// client for the demo application and user.
func setup(t *testing.T, modify func(*emulator.Config)) *testBundle {
	t.Helper()

	cfg := emulator.DefaultConfig()
	if modify != nil {
		modify(&cfg)
	}
	server, err := emulator.Start(cfg)
	if err != nil {
		t.Fatalf("emulator.Start: %v", err)
	}
	t.Cleanup(func() {
		if err := server.Close(); err != nil {
			t.Errorf("closing the emulator: %v", err)
		}
	})
	b := &testBundle{
		server:  server,
		emu:     server.Emulator,
		secrets: []string{emulator.DemoPassword, emulator.DemoClientSecret},
	}
	b.client = b.newClient(t, nil)
	return b
}

// newClient returns a client for the emulator with the demo credentials,
// changed by modify. Its password and secret are added to the secrets.
func (b *testBundle) newClient(t *testing.T, modify func(*acumatica.Config)) *acumatica.Client {
	t.Helper()

	cfg := acumatica.Config{
		SiteURL:      b.server.URL,
		ClientID:     emulator.DemoClientID,
		ClientSecret: emulator.DemoClientSecret,
		Username:     emulator.DemoUser,
		Password:     emulator.DemoPassword,
		Now:          func() time.Time { return testNow },
		HTTPClient:   &http.Client{Timeout: 10 * time.Second},
	}
	if modify != nil {
		modify(&cfg)
	}
	client, err := acumatica.New(cfg)
	if err != nil {
		t.Fatalf("acumatica.New: %v", err)
	}
	// Cleanups run last-in first-out, so this runs before the emulator
	// closes. A connection that was dialled but never used would otherwise
	// hold up the emulator's graceful shutdown.
	t.Cleanup(client.CloseIdleConnections)
	b.addSecrets(cfg.Password, cfg.ClientSecret)
	return client
}

func (b *testBundle) addSecrets(secrets ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range secrets {
		if s != "" {
			b.secrets = append(b.secrets, s)
		}
	}
}

// signIn runs a password grant that must succeed and records the tokens.
func (b *testBundle) signIn(t *testing.T) *acumatica.Token {
	t.Helper()

	tok, err := b.client.PasswordGrant(context.Background())
	if err != nil {
		t.Fatalf("PasswordGrant: %v", err)
	}
	b.addSecrets(tok.AccessToken, tok.RefreshToken)
	return tok
}

// requireError checks that err is an *Error of kind and that neither its
// message nor its fields contain a secret seen so far.
func (b *testBundle) requireError(t *testing.T, err error, kind error) *acumatica.Error {
	t.Helper()

	var e *acumatica.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *acumatica.Error of kind %v", err, err, kind)
	}
	if !errors.Is(err, kind) {
		t.Errorf("error kind = %v, want %v; error: %v", e.Kind, kind, err)
	}
	b.requireNoSecrets(t, err)
	return e
}

func (b *testBundle) requireNoSecrets(t *testing.T, err error) {
	t.Helper()

	b.mu.Lock()
	defer b.mu.Unlock()
	texts := []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)}
	var e *acumatica.Error
	if errors.As(err, &e) {
		texts = append(texts, e.Detail, e.URL)
	}
	for _, text := range texts {
		for _, secret := range b.secrets {
			if strings.Contains(text, secret) {
				t.Errorf("error text %q contains a secret", text)
			}
		}
	}
}

func (b *testBundle) openSessions(t *testing.T) int {
	t.Helper()
	return b.emu.Stats().OpenSessions
}

func TestPasswordGrantReturnsToken(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)

	tok := b.signIn(t)

	if tok.AccessToken == "" {
		t.Error("AccessToken is empty")
	}
	if tok.RefreshToken == "" {
		t.Error("RefreshToken is empty, want one for scope offline_access")
	}
	if tok.TokenType != "Bearer" {
		t.Errorf("TokenType = %q, want Bearer", tok.TokenType)
	}
	if tok.Scope != "api offline_access" {
		t.Errorf("Scope = %q, want %q", tok.Scope, "api offline_access")
	}
	if want := testNow.Add(emulator.DefaultTokenLifetime); !tok.Expiry.Equal(want) {
		t.Errorf("Expiry = %s, want %s", tok.Expiry, want)
	}
	stats := b.emu.Stats()
	if stats.SignIns != 1 {
		t.Errorf("SignIns = %d, want 1", stats.SignIns)
	}
	if stats.OpenSessions != 1 {
		t.Errorf("OpenSessions = %d, want 1", stats.OpenSessions)
	}
}

func TestPasswordGrantCustomLifetime(t *testing.T) {
	t.Parallel()
	b := setup(t, func(cfg *emulator.Config) { cfg.TokenLifetime = 15 * time.Minute })

	tok := b.signIn(t)

	if want := testNow.Add(15 * time.Minute); !tok.Expiry.Equal(want) {
		t.Errorf("Expiry = %s, want %s from expires_in 900", tok.Expiry, want)
	}
}

func TestPasswordGrantConcurrent(t *testing.T) {
	t.Parallel()
	const n = 8
	b := setup(t, func(cfg *emulator.Config) { cfg.Seats = n })

	var wg sync.WaitGroup
	tokens := make([]*acumatica.Token, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { tokens[i], errs[i] = b.client.PasswordGrant(context.Background()) })
	}
	wg.Wait()

	seen := make(map[string]bool, n)
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("PasswordGrant %d: %v", i, errs[i])
		}
		b.addSecrets(tokens[i].AccessToken, tokens[i].RefreshToken)
		if seen[tokens[i].AccessToken] {
			t.Errorf("PasswordGrant %d returned an access token that another call returned", i)
		}
		seen[tokens[i].AccessToken] = true
	}
	if got := b.openSessions(t); got != n {
		t.Errorf("OpenSessions = %d, want %d", got, n)
	}
}

func TestRefreshKeepsSession(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()

	first := b.signIn(t)
	before := b.emu.Sessions()
	if len(before) != 1 {
		t.Fatalf("Sessions() has %d sessions after sign-in, want 1", len(before))
	}

	second, err := b.client.Refresh(ctx, first.RefreshToken)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	b.addSecrets(second.AccessToken, second.RefreshToken)

	if second.AccessToken == "" || second.AccessToken == first.AccessToken {
		t.Error("Refresh returned no new access token")
	}
	if second.RefreshToken == "" || second.RefreshToken == first.RefreshToken {
		t.Error("Refresh did not rotate the refresh token")
	}
	if want := testNow.Add(emulator.DefaultTokenLifetime); !second.Expiry.Equal(want) {
		t.Errorf("Expiry = %s, want %s", second.Expiry, want)
	}
	after := b.emu.Sessions()
	if len(after) != 1 {
		t.Fatalf("Sessions() has %d sessions after refresh, want 1", len(after))
	}
	if after[0].ID != before[0].ID {
		t.Errorf("session ID after refresh = %q, want %q", after[0].ID, before[0].ID)
	}
	if got := b.emu.Stats().Refreshes; got != 1 {
		t.Errorf("Refreshes = %d, want 1", got)
	}
}

func TestRefreshWithUsedToken(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()

	first := b.signIn(t)
	second, err := b.client.Refresh(ctx, first.RefreshToken)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	b.addSecrets(second.AccessToken, second.RefreshToken)

	_, err = b.client.Refresh(ctx, first.RefreshToken)
	e := b.requireError(t, err, acumatica.ErrInvalidGrant)
	if e.StatusCode != http.StatusBadRequest {
		t.Errorf("StatusCode = %d, want 400", e.StatusCode)
	}
	if e.Op != acumatica.OpRefresh {
		t.Errorf("Op = %q, want %q", e.Op, acumatica.OpRefresh)
	}
	if e.OutcomeUnknown {
		t.Error("OutcomeUnknown = true for a read response")
	}
}

func TestRefreshEmptyToken(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)

	_, err := b.client.Refresh(context.Background(), "")
	if err == nil {
		t.Fatal("Refresh with an empty token returned no error")
	}
	if got := b.emu.Stats().Refreshes; got != 0 {
		t.Errorf("Refreshes = %d, want no request sent", got)
	}
}

func TestLoginLimit(t *testing.T) {
	t.Parallel()

	styles := []struct {
		style      string
		wantStatus int
	}{
		{emulator.LoginLimitInvalidGrant, http.StatusBadRequest},
		{emulator.LoginLimitPXException, http.StatusInternalServerError},
	}
	for _, tt := range styles {
		t.Run(tt.style, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(cfg *emulator.Config) { cfg.TokenLoginLimitStyle = tt.style })

			b.signIn(t)
			b.signIn(t)
			_, err := b.client.PasswordGrant(context.Background())

			e := b.requireError(t, err, acumatica.ErrLoginLimit)
			if e.StatusCode != tt.wantStatus {
				t.Errorf("StatusCode = %d, want %d", e.StatusCode, tt.wantStatus)
			}
			if !strings.Contains(e.Detail, "API Login Limit") {
				t.Errorf("Detail = %q, want the login limit text", e.Detail)
			}
			stats := b.emu.Stats()
			if stats.OpenSessions != 2 {
				t.Errorf("OpenSessions = %d, want 2", stats.OpenSessions)
			}
			if got := stats.RefusedSignIns["login_limit"]; got != 1 {
				t.Errorf("RefusedSignIns[login_limit] = %d, want 1", got)
			}
		})
	}
}

func TestLoginLimitPerUser(t *testing.T) {
	t.Parallel()
	b := setup(t, func(cfg *emulator.Config) { cfg.MaxLoginsPerUser = 1 })

	b.signIn(t)
	_, err := b.client.PasswordGrant(context.Background())

	e := b.requireError(t, err, acumatica.ErrLoginLimit)
	if !strings.Contains(e.Detail, "concurrent API logins") {
		t.Errorf("Detail = %q, want the per-user limit text", e.Detail)
	}
}

func TestWrongCredentials(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name       string
		modify     func(*acumatica.Config)
		wantDetail string
	}{
		{"password", func(cfg *acumatica.Config) { cfg.Password = "wrong-password-1234" }, "invalid_username_or_password"},
		{"user", func(cfg *acumatica.Config) { cfg.Username = "nobody" }, "invalid_username_or_password"},
		{"client secret", func(cfg *acumatica.Config) { cfg.ClientSecret = "wrong-secret-5678" }, "invalid_client"},
		{"client ID", func(cfg *acumatica.Config) { cfg.ClientID = "00000000-0000-0000-0000-000000000000@Company" }, "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			client := b.newClient(t, tt.modify)

			_, err := client.PasswordGrant(context.Background())

			e := b.requireError(t, err, acumatica.ErrInvalidCredentials)
			if e.StatusCode != http.StatusBadRequest {
				t.Errorf("StatusCode = %d, want 400", e.StatusCode)
			}
			if !strings.Contains(e.Detail, tt.wantDetail) {
				t.Errorf("Detail = %q, want it to contain %q", e.Detail, tt.wantDetail)
			}
			if got := b.openSessions(t); got != 0 {
				t.Errorf("OpenSessions = %d, want 0", got)
			}
		})
	}
}

func TestRefreshWrongSecret(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	tok := b.signIn(t)
	client := b.newClient(t, func(cfg *acumatica.Config) { cfg.ClientSecret = "wrong-secret-5678" })

	_, err := client.Refresh(context.Background(), tok.RefreshToken)

	b.requireError(t, err, acumatica.ErrInvalidCredentials)
}

func TestSignOutFreesSeat(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()

	first := b.signIn(t)
	b.signIn(t)
	if got := b.openSessions(t); got != 2 {
		t.Fatalf("OpenSessions = %d after two sign-ins, want 2", got)
	}

	// The emulator responds with 411 and keeps the session when
	// Content-Length is missing, so success shows that the header was sent.
	if err := b.client.SignOut(ctx, acumatica.SessionCredentials{AccessToken: first.AccessToken}); err != nil {
		t.Fatalf("SignOut: %v", err)
	}
	if got := b.openSessions(t); got != 1 {
		t.Errorf("OpenSessions = %d after sign-out, want 1", got)
	}
	if got := b.emu.Stats().SignOuts; got != 1 {
		t.Errorf("SignOuts = %d, want 1", got)
	}

	third := b.signIn(t)
	if third.AccessToken == "" {
		t.Error("sign-in after sign-out returned no access token")
	}
	if got := b.openSessions(t); got != 2 {
		t.Errorf("OpenSessions = %d, want 2", got)
	}
}

func TestSignOutTwice(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	tok := b.signIn(t)
	creds := acumatica.SessionCredentials{AccessToken: tok.AccessToken}

	if err := b.client.SignOut(ctx, creds); err != nil {
		t.Fatalf("first SignOut: %v", err)
	}
	if err := b.client.SignOut(ctx, creds); err != nil {
		t.Errorf("second SignOut: %v, want nil", err)
	}
	if got := b.openSessions(t); got != 0 {
		t.Errorf("OpenSessions = %d, want 0", got)
	}
}

func TestSignOutUnknownTokenRejected(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.signIn(t)

	// The emulator responds with 401 to a token it does not know. That does
	// not prove any session closed, so it is an error.
	err := b.client.SignOut(context.Background(), acumatica.SessionCredentials{AccessToken: "not-a-token"})
	if !errors.Is(err, acumatica.ErrTokenRejected) {
		t.Errorf("SignOut with an unknown token = %v, want ErrTokenRejected", err)
	}
	if got := b.openSessions(t); got != 1 {
		t.Errorf("OpenSessions = %d, want the other session kept", got)
	}
}

func TestSignOutCookieSession(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)

	resp := cookieLogin(t, b, emulator.DemoPassword)
	if resp.status != http.StatusNoContent {
		t.Fatalf("cookie sign-in status = %d, want 204", resp.status)
	}
	var cookies []acumatica.Cookie
	for _, c := range resp.cookies {
		cookies = append(cookies, acumatica.Cookie{Name: c.Name, Value: c.Value})
		b.addSecrets(c.Value)
	}
	if got := b.openSessions(t); got != 1 {
		t.Fatalf("OpenSessions = %d after cookie sign-in, want 1", got)
	}

	if err := b.client.SignOut(context.Background(), acumatica.SessionCredentials{Cookies: cookies}); err != nil {
		t.Fatalf("SignOut with cookies: %v", err)
	}
	if got := b.openSessions(t); got != 0 {
		t.Errorf("OpenSessions = %d after sign-out, want 0", got)
	}
}

func TestSignOutWithoutCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)

	err := b.client.SignOut(context.Background(), acumatica.SessionCredentials{})
	if err == nil {
		t.Fatal("SignOut without credentials returned no error")
	}
	if got := b.emu.Stats().SignOuts; got != 0 {
		t.Errorf("SignOuts = %d, want no request sent", got)
	}
}

func TestSignOutLengthRequired(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	tok := b.signIn(t)

	// A chunked body has no Content-Length header, which IIS rejects. This
	// checks Classify against the emulator's real response.
	req, err := http.NewRequest(http.MethodPost, b.server.URL+emulator.PathLogout, io.NopCloser(bytes.NewReader(nil)))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	status, header, body := send(t, req)

	if status != http.StatusLengthRequired {
		t.Fatalf("status = %d, want 411", status)
	}
	err = acumatica.Classify(acumatica.OpSignOut, status, header, body)
	e := b.requireError(t, err, acumatica.ErrUnexpected)
	if !strings.Contains(e.Detail, "Content-Length") {
		t.Errorf("Detail = %q, want it to name Content-Length", e.Detail)
	}
	if got := b.openSessions(t); got != 1 {
		t.Errorf("OpenSessions = %d, want the session still open", got)
	}
}

func TestRevokeKeepsSeat(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	tok := b.signIn(t)

	if err := b.client.Revoke(ctx, tok.RefreshToken, "refresh_token"); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	stats := b.emu.Stats()
	if stats.Revocations != 1 {
		t.Errorf("Revocations = %d, want 1", stats.Revocations)
	}
	if stats.OpenSessions != 1 {
		t.Errorf("OpenSessions = %d, want the session still open after revocation", stats.OpenSessions)
	}

	_, err := b.client.Refresh(ctx, tok.RefreshToken)
	b.requireError(t, err, acumatica.ErrInvalidGrant)
}

func TestRevokeWrongSecret(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	tok := b.signIn(t)
	client := b.newClient(t, func(cfg *acumatica.Config) { cfg.ClientSecret = "wrong-secret-5678" })

	err := client.Revoke(context.Background(), tok.AccessToken, "access_token")

	b.requireError(t, err, acumatica.ErrInvalidCredentials)
}

func TestThrottledFault(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointToken, Status: http.StatusTooManyRequests,
		Body: "Too many requests", Count: 1})

	_, err := b.client.PasswordGrant(context.Background())

	e := b.requireError(t, err, acumatica.ErrThrottled)
	if e.StatusCode != http.StatusTooManyRequests {
		t.Errorf("StatusCode = %d, want 429", e.StatusCode)
	}
	if e.RetryAfter != 0 {
		t.Errorf("RetryAfter = %s, want 0 without a Retry-After header", e.RetryAfter)
	}
	if got := b.openSessions(t); got != 0 {
		t.Errorf("OpenSessions = %d, want 0", got)
	}
}

func TestThrottledRetryAfter(t *testing.T) {
	t.Parallel()

	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain text %t", plain), func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(cfg *emulator.Config) {
				cfg.RequestsPerMinute = 1
				cfg.ThrottlePlainText = plain
			})

			b.signIn(t)
			_, err := b.client.PasswordGrant(context.Background())

			e := b.requireError(t, err, acumatica.ErrThrottled)
			if e.RetryAfter <= 0 || e.RetryAfter > time.Minute {
				t.Errorf("RetryAfter = %s, want between 1s and 1m", e.RetryAfter)
			}
			if !strings.Contains(err.Error(), "retry after") {
				t.Errorf("Error() = %q, want it to say when to retry", err)
			}
			if got := b.openSessions(t); got != 1 {
				t.Errorf("OpenSessions = %d, want 1", got)
			}
		})
	}
}

func TestUnavailableFault(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointToken, Status: http.StatusServiceUnavailable,
		Body: "Service Unavailable", Count: 1})

	_, err := b.client.PasswordGrant(context.Background())

	e := b.requireError(t, err, acumatica.ErrUnavailable)
	if e.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("StatusCode = %d, want 503", e.StatusCode)
	}
	if e.OutcomeUnknown {
		t.Error("OutcomeUnknown = true for a 503 that was read")
	}

	// The fault was used up, so the next sign-in succeeds.
	b.signIn(t)
}

func TestSignOutFaults(t *testing.T) {
	t.Parallel()

	tests := []struct {
		status   int
		wantKind error
	}{
		{http.StatusTooManyRequests, acumatica.ErrThrottled},
		{http.StatusInternalServerError, acumatica.ErrUnavailable},
		{http.StatusBadGateway, acumatica.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			tok := b.signIn(t)
			b.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointLogout, Status: tt.status, Count: 1})

			err := b.client.SignOut(context.Background(), acumatica.SessionCredentials{AccessToken: tok.AccessToken})

			e := b.requireError(t, err, tt.wantKind)
			if e.StatusCode != tt.status {
				t.Errorf("StatusCode = %d, want %d", e.StatusCode, tt.status)
			}
			if got := b.openSessions(t); got != 1 {
				t.Errorf("OpenSessions = %d, want the session still open", got)
			}
		})
	}
}

func TestDroppedConnection(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointToken, Drop: true, Count: 1})

	_, err := b.client.PasswordGrant(context.Background())

	e := b.requireError(t, err, acumatica.ErrUnavailable)
	if !e.OutcomeUnknown {
		t.Error("OutcomeUnknown = false after a dropped connection, want true")
	}
	if e.StatusCode != 0 {
		t.Errorf("StatusCode = %d, want 0", e.StatusCode)
	}
	if e.Err == nil {
		t.Error("Err is nil, want the transport error")
	}
	if got := b.emu.Stats().FaultsInjected; got != 1 {
		t.Errorf("FaultsInjected = %d, want 1 (the request must not be retried)", got)
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointToken, Latency: 5 * time.Second, Count: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()

	_, err := b.client.PasswordGrant(ctx)

	e := b.requireError(t, err, acumatica.ErrUnavailable)
	if !e.OutcomeUnknown {
		t.Error("OutcomeUnknown = false after a timeout, want true")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is(err, context.DeadlineExceeded) = false; error: %v", err)
	}
	if !strings.Contains(err.Error(), "a session may have been opened") {
		t.Errorf("Error() = %q, want it to warn about a possible session", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	client := b.newClient(t, func(cfg *acumatica.Config) { cfg.SiteURL = "http://" + addr })

	_, err = client.PasswordGrant(context.Background())

	e := b.requireError(t, err, acumatica.ErrUnavailable)
	if e.OutcomeUnknown {
		t.Error("OutcomeUnknown = true after a refused connection, want false")
	}
	if e.StatusCode != 0 {
		t.Errorf("StatusCode = %d, want 0", e.StatusCode)
	}
}

func TestClassifyEmulatorResponses(t *testing.T) {
	t.Parallel()

	t.Run("cookie sign-in wrong password", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.addSecrets("wrong-password-1234")

		resp := cookieLogin(t, b, "wrong-password-1234")
		err := acumatica.Classify("cookie sign-in", resp.status, resp.header, resp.body)

		e := b.requireError(t, err, acumatica.ErrInvalidCredentials)
		if e.StatusCode != http.StatusInternalServerError {
			t.Errorf("StatusCode = %d, want 500", e.StatusCode)
		}
		if !strings.Contains(e.Detail, "Invalid credentials") {
			t.Errorf("Detail = %q, want the exception message", e.Detail)
		}
	})

	t.Run("cookie sign-in on full licence", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.signIn(t)
		b.signIn(t)

		resp := cookieLogin(t, b, emulator.DemoPassword)
		err := acumatica.Classify("cookie sign-in", resp.status, resp.header, resp.body)

		b.requireError(t, err, acumatica.ErrLoginLimit)
	})

	t.Run("error page redirect", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(cfg *emulator.Config) { cfg.MaxLoginsPerUser = 1 })
		ctx := context.Background()

		// Sign out keeps the bearer valid, so using it again later opens a
		// new session, which the per-user cap refuses with a redirect.
		first := b.signIn(t)
		if err := b.client.SignOut(ctx, acumatica.SessionCredentials{AccessToken: first.AccessToken}); err != nil {
			t.Fatalf("SignOut: %v", err)
		}
		b.signIn(t)

		req, err := http.NewRequest(http.MethodGet, b.server.URL+emulator.PathCustomers, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+first.AccessToken)
		status, header, body := send(t, req)
		if status != http.StatusFound {
			t.Fatalf("data request status = %d, want 302", status)
		}

		err = acumatica.Classify("data request", status, header, body)
		e := b.requireError(t, err, acumatica.ErrLoginLimit)
		if !strings.Contains(e.Detail, "concurrent API logins") {
			t.Errorf("Detail = %q, want the message from the Location header", e.Detail)
		}
	})
}

type rawResponse struct {
	status  int
	header  http.Header
	body    []byte
	cookies []*http.Cookie
}

// cookieLogin signs in at /entity/auth/login as the demo user.
func cookieLogin(t *testing.T, b *testBundle, password string) rawResponse {
	t.Helper()

	body := fmt.Sprintf(`{"name":%q,"password":%q}`, emulator.DemoUser, password)
	req, err := http.NewRequest(http.MethodPost, b.server.URL+emulator.PathLogin, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("cookie sign-in: %v", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the cookie sign-in response: %v", err)
	}
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: data, cookies: resp.Cookies()}
}

// send sends req without following redirects and returns the response.
func send(t *testing.T, req *http.Request) (int, http.Header, []byte) {
	t.Helper()

	client := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response of %s: %v", req.URL.Path, err)
	}
	return resp.StatusCode, resp.Header, body
}
