package emulator

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestPerMinuteLimit(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.RequestsPerMinute = 4
	h := newHarness(t, cfg)
	tb := h.passwordGrant("api offline_access") // 1
	h.e.Advance(10 * time.Second)
	h.dataStatus(nil, tb.AccessToken) // 2
	h.logout(nil, tb.AccessToken)     // 3: sign-out counts too
	h.login(h.jarClient(), DemoUser, DemoPassword)

	resp, body := h.data(nil, tb.AccessToken)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("5th request in a minute = %d, want 429", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want JSON by default", ct)
	}
	px := decodeJSON[pxError](t, body)
	if !strings.Contains(px.ExceptionMessage, "4 requests per minute") || strings.Contains(px.ExceptionMessage, "Login Limit") {
		t.Errorf("exceptionMessage = %q, want the request limit and no login-limit text", px.ExceptionMessage)
	}
	// The first request leaves the window 60 s after it was made.
	if ra := resp.Header.Get("Retry-After"); ra != "50" {
		t.Errorf("Retry-After = %q, want 50", ra)
	}
	if code := h.logout(nil, tb.AccessToken); code != http.StatusTooManyRequests {
		t.Errorf("sign-out over the limit = %d, want 429", code)
	}

	// Discovery, revocation and the control API are not limited.
	if resp, _ := h.do(nil, h.newRequest(http.MethodGet, PathDiscovery, nil)); resp.StatusCode != http.StatusOK {
		t.Errorf("discovery over the limit = %d, want 200", resp.StatusCode)
	}
	if st := h.e.Stats(); st.Throttled != 2 {
		t.Errorf("Throttled = %d, want 2", st.Throttled)
	}

	h.e.Advance(50 * time.Second)
	if code := h.dataStatus(nil, tb.AccessToken); code != http.StatusOK {
		t.Errorf("request after the oldest left the window = %d, want 200", code)
	}
}

func TestPerMinuteLimitPlainText(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.RequestsPerMinute = 1
	cfg.ThrottlePlainText = true
	h := newHarness(t, cfg)
	h.passwordGrant("api")
	resp, body := h.postForm(PathToken, passwordForm("api"))
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status = %d, want 429", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain", ct)
	}
	if !strings.Contains(string(body), "1 requests per minute") {
		t.Errorf("body = %q, want the limit", body)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "60" {
		t.Errorf("Retry-After = %q, want 60", ra)
	}
	h.wantOpen(1)
}

func TestSetLimitsAtRunTime(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	h.passwordGrant("api")
	h.passwordGrant("api")
	h.e.SetLimits(Limits{Seats: intPtr(3)})
	h.passwordGrant("api")
	if status, _ := h.tryPasswordGrant("api"); status != http.StatusBadRequest {
		t.Errorf("4th grant with 3 seats = %d, want 400", status)
	}
	h.e.SetLimits(Limits{Seats: intPtr(1)})
	h.wantOpen(3) // lowering the limit closes nothing
	h.e.SetLimits(Limits{Seats: intPtr(0), RequestsPerMinute: intPtr(1)})
	got := h.e.Limits()
	if *got.Seats != 0 || *got.MaxLoginsPerUser != 0 || *got.RequestsPerMinute != 1 {
		t.Errorf("limits = %d/%d/%d, want 0/0/1", *got.Seats, *got.MaxLoginsPerUser, *got.RequestsPerMinute)
	}
	h.passwordGrant("api")
	if status, _ := h.tryPasswordGrant("api"); status != http.StatusTooManyRequests {
		t.Errorf("2nd grant with 1 request per minute = %d, want 429", status)
	}
}

func TestUpdateLimitsRejectsNegative(t *testing.T) {
	t.Parallel()
	e, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	err = e.UpdateLimits(Limits{Seats: intPtr(5), MaxLoginsPerUser: intPtr(-1)})
	if err == nil || !strings.Contains(err.Error(), "max_logins_per_user") {
		t.Fatalf("err = %v, want one naming max_logins_per_user", err)
	}
	if got := *e.Limits().Seats; got != DefaultSeats {
		t.Errorf("seats = %d after a rejected update, want %d", got, DefaultSeats)
	}
	defer func() {
		if recover() == nil {
			t.Error("SetLimits with a negative value did not panic")
		}
	}()
	e.SetLimits(Limits{RequestsPerMinute: intPtr(-3)})
}

func TestRevocationNotLimited(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.RequestsPerMinute = 1
	h := newHarness(t, cfg)
	tb := h.passwordGrant("api")
	resp, _ := h.postForm(PathRevocation, url.Values{
		"token": {tb.AccessToken}, "client_id": {DemoClientID}, "client_secret": {DemoClientSecret},
	})
	if resp.StatusCode != http.StatusOK {
		t.Errorf("revocation over the limit = %d, want 200", resp.StatusCode)
	}
}
