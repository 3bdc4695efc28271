package emulator

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestDiscoveryBuildsURLsFromHost(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	req := h.newRequest(http.MethodGet, PathDiscovery, nil)
	req.Host = "erp.example.test:8443"
	resp, body := h.do(nil, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	doc := decodeJSON[map[string]any](t, body)
	want := map[string]string{
		"issuer":              "http://erp.example.test:8443/identity",
		"token_endpoint":      "http://erp.example.test:8443/identity/connect/token",
		"revocation_endpoint": "http://erp.example.test:8443/identity/connect/revocation",
	}
	for k, v := range want {
		if doc[k] != v {
			t.Errorf("%s = %v, want %s", k, doc[k], v)
		}
	}
}

func TestPasswordGrantResponse(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	resp, body := h.postForm(PathToken, passwordForm("api"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, body %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	raw := decodeJSON[map[string]any](t, body)
	if _, ok := raw["refresh_token"]; ok {
		t.Errorf("scope api alone returned a refresh_token: %s", body)
	}
	tb := decodeJSON[tokenBody](t, body)
	if tb.TokenType != "Bearer" || tb.ExpiresIn != 3600 || tb.Scope != "api" || len(tb.AccessToken) < 40 {
		t.Errorf("token response = %+v, want Bearer, 3600, scope api and a long token", tb)
	}

	offline := h.passwordGrant("api offline_access")
	if offline.RefreshToken == "" || offline.Scope != "api offline_access" {
		t.Errorf("offline grant = %+v, want a refresh token and scope \"api offline_access\"", offline)
	}
	if offline.AccessToken == tb.AccessToken {
		t.Error("two grants returned the same access token")
	}
	if got := h.e.Stats().SignIns; got != 2 {
		t.Errorf("SignIns = %d, want 2", got)
	}
}

func TestPasswordGrantBasicClientAuth(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	form := passwordForm("api")
	form.Del("client_id")
	form.Del("client_secret")
	req := h.newRequest(http.MethodPost, PathToken, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// RFC 6749 section 2.3.1: Basic credentials are form-encoded first, so
	// "@" travels as %40.
	req.SetBasicAuth(url.QueryEscape(DemoClientID), url.QueryEscape(DemoClientSecret))
	resp, body := h.do(nil, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, body %s", resp.StatusCode, body)
	}
	if got := h.e.Sessions(); len(got) != 1 || got[0].ClientID != DemoClientID {
		t.Errorf("sessions = %+v, want one for %s", got, DemoClientID)
	}
}

func TestClientIDIsFormEncoded(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	body := "grant_type=password&client_id=" + strings.ReplaceAll(DemoClientID, "@", "%40") +
		"&client_secret=" + DemoClientSecret + "&username=" + DemoUser + "&password=" + DemoPassword +
		"&scope=api%20offline_access"
	req := h.newRequest(http.MethodPost, PathToken, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, out := h.do(nil, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, body %s", resp.StatusCode, out)
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		edit       func(url.Values)
		wantError  string
		wantDesc   string
		wantReason string
	}{
		{"WrongPassword", func(f url.Values) { f.Set("password", "wrong") },
			"invalid_grant", "invalid_username_or_password", "invalid_credentials"},
		{"UnknownUser", func(f url.Values) { f.Set("username", "nobody") },
			"invalid_grant", "invalid_username_or_password", "invalid_credentials"},
		{"WrongSecret", func(f url.Values) { f.Set("client_secret", "wrong") },
			"invalid_client", "", "invalid_client"},
		{"UnknownClient", func(f url.Values) { f.Set("client_id", "00000000-0000-0000-0000-000000000000@Company") },
			"invalid_client", "", "invalid_client"},
		{"UnknownScope", func(f url.Values) { f.Set("scope", "api openid") },
			"invalid_scope", "", "invalid_scope"},
		{"OfflineWithoutAPI", func(f url.Values) { f.Set("scope", "offline_access") },
			"invalid_scope", "", "invalid_scope"},
		{"EmptyScope", func(f url.Values) { f.Del("scope") },
			"invalid_scope", "", "invalid_scope"},
		{"UnsupportedGrant", func(f url.Values) { f.Set("grant_type", "client_credentials") },
			"unsupported_grant_type", "", "unsupported_grant_type"},
		{"MissingGrantType", func(f url.Values) { f.Del("grant_type") },
			"invalid_request", "grant_type is missing", "invalid_request"},
		{"MissingRefreshToken", func(f url.Values) { f.Set("grant_type", "refresh_token") },
			"invalid_request", "refresh_token is missing", "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, testConfig())
			form := passwordForm("api offline_access")
			tt.edit(form)
			resp, body := h.postForm(PathToken, form)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400; body %s", resp.StatusCode, body)
			}
			tb := decodeJSON[tokenBody](t, body)
			if tb.Error != tt.wantError || tb.ErrorDescription != tt.wantDesc {
				t.Errorf("error = %q/%q, want %q/%q", tb.Error, tb.ErrorDescription, tt.wantError, tt.wantDesc)
			}
			st := h.e.Stats()
			if st.OpenSessions != 0 || st.SignIns != 0 {
				t.Errorf("open sessions %d, sign-ins %d, want 0 and 0", st.OpenSessions, st.SignIns)
			}
			if st.RefusedSignIns[tt.wantReason] != 1 {
				t.Errorf("RefusedSignIns = %v, want %s: 1", st.RefusedSignIns, tt.wantReason)
			}
		})
	}
}

func TestTokenEndpointRejectsJSONBody(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	req := h.newRequest(http.MethodPost, PathToken, strings.NewReader(`{"grant_type":"password"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, body := h.do(nil, req)
	tb := decodeJSON[tokenBody](t, body)
	if resp.StatusCode != http.StatusBadRequest || tb.Error != "invalid_request" {
		t.Errorf("status %d error %q, want 400 invalid_request", resp.StatusCode, tb.Error)
	}
}

func TestRefreshKeepsSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	first := h.passwordGrant("api offline_access")
	before := h.e.Sessions()
	if len(before) != 1 || before[0].OpenedBy != "password" {
		t.Fatalf("sessions after password grant = %+v, want one opened by password", before)
	}
	// Use the session every 9 minutes until the access token expires, so
	// the idle timeout never closes it.
	for range 6 {
		h.e.Advance(9 * time.Minute)
		if code := h.dataStatus(nil, first.AccessToken); code != http.StatusOK {
			t.Fatalf("data at %s = %d, want 200", h.e.Now(), code)
		}
	}
	h.e.Advance(6 * time.Minute)
	if code := h.dataStatus(nil, first.AccessToken); code != http.StatusUnauthorized {
		t.Fatalf("data with expired access token = %d, want 401", code)
	}
	status, second := h.refresh(first.RefreshToken)
	if status != http.StatusOK {
		t.Fatalf("refresh status = %d, body %+v", status, second)
	}
	if second.AccessToken == first.AccessToken || second.RefreshToken == first.RefreshToken {
		t.Error("refresh returned the previous access or refresh token")
	}
	if second.Scope != "api offline_access" || second.ExpiresIn != 3600 {
		t.Errorf("refresh response = %+v, want scope \"api offline_access\" and 3600", second)
	}
	after := h.e.Sessions()
	if len(after) != 1 || after[0].ID != before[0].ID {
		t.Fatalf("sessions after refresh = %+v, want the same single session %s", after, before[0].ID)
	}
	if code := h.dataStatus(nil, second.AccessToken); code != http.StatusOK {
		t.Errorf("data with refreshed token = %d, want 200", code)
	}
	st := h.e.Stats()
	if st.SessionsOpened != 1 || st.Refreshes != 1 || st.SignIns != 1 {
		t.Errorf("stats = %+v, want 1 session opened, 1 refresh, 1 sign-in", st)
	}
}

func TestRefreshOnFullLicenceKeepsSeat(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig()) // 2 seats
	a := h.passwordGrant("api offline_access")
	h.passwordGrant("api offline_access")
	status, tb := h.refresh(a.RefreshToken)
	if status != http.StatusOK {
		t.Fatalf("refresh with both seats in use = %d %+v, want 200 because the grant keeps its seat", status, tb)
	}
	h.wantOpen(2)
}

func TestRotatedRefreshTokenRejected(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	first := h.passwordGrant("api offline_access")
	if status, _ := h.refresh(first.RefreshToken); status != http.StatusOK {
		t.Fatalf("first refresh = %d, want 200", status)
	}
	status, tb := h.refresh(first.RefreshToken)
	if status != http.StatusBadRequest || tb.Error != "invalid_grant" {
		t.Fatalf("reuse of rotated refresh token = %d %+v, want 400 invalid_grant", status, tb)
	}
	st := h.e.Stats()
	if st.RefusedSignIns["invalid_grant"] != 1 || st.Refreshes != 1 {
		t.Errorf("stats = %+v, want 1 invalid_grant refusal and 1 refresh", st)
	}
	h.wantOpen(1)
}

func TestRefreshTokenOfOtherClientRejected(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Clients = append(cfg.Clients, Client{ID: "11111111-2222-3333-4444-555555555555@Company", Secret: "other"})
	h := newHarness(t, cfg)
	tb := h.passwordGrant("api offline_access")
	resp, body := h.postForm(PathToken, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {tb.RefreshToken},
		"client_id": {cfg.Clients[1].ID}, "client_secret": {"other"},
	})
	if got := decodeJSON[tokenBody](t, body); resp.StatusCode != http.StatusBadRequest || got.Error != "invalid_grant" {
		t.Errorf("refresh by another client = %d %+v, want 400 invalid_grant", resp.StatusCode, got)
	}
}

func TestRefreshAfterSignOutOpensSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	tb := h.passwordGrant("api offline_access")
	if code := h.logout(nil, tb.AccessToken); code != http.StatusNoContent {
		t.Fatalf("sign-out = %d, want 204", code)
	}
	h.wantOpen(0)
	status, next := h.refresh(tb.RefreshToken)
	if status != http.StatusOK {
		t.Fatalf("refresh = %d %+v, want 200", status, next)
	}
	got := h.e.Sessions()
	if len(got) != 1 || got[0].OpenedBy != "refresh" {
		t.Fatalf("sessions = %+v, want one opened by refresh", got)
	}
	if st := h.e.Stats(); st.SessionsOpened != 2 {
		t.Errorf("SessionsOpened = %d, want 2", st.SessionsOpened)
	}
}

func TestRefreshRefusedWhenLicenceFull(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	tb := h.passwordGrant("api offline_access")
	h.logout(nil, tb.AccessToken)
	h.passwordGrant("api")
	h.passwordGrant("api")
	status, got := h.refresh(tb.RefreshToken)
	if status != http.StatusBadRequest || got.Error != "invalid_grant" || got.ErrorDescription != "API Login Limit" {
		t.Fatalf("refresh with licence full = %d %+v, want 400 invalid_grant API Login Limit", status, got)
	}
	// The refused refresh did not use up the refresh token.
	h.e.RestartApplication()
	if status, got := h.refresh(tb.RefreshToken); status != http.StatusOK {
		t.Errorf("refresh after restart = %d %+v, want 200", status, got)
	}
}

func TestRefreshTokenLifetime(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	tb := h.passwordGrant("api offline_access")
	h.e.Advance(DefaultRefreshTokenLifetime - time.Second)
	status, next := h.refresh(tb.RefreshToken)
	if status != http.StatusOK {
		t.Fatalf("refresh 1 s before the chain expires = %d, want 200", status)
	}
	h.e.Advance(time.Second)
	status, got := h.refresh(next.RefreshToken)
	if status != http.StatusBadRequest || got.Error != "invalid_grant" {
		t.Errorf("refresh at the chain's expiry = %d %+v, want 400 invalid_grant", status, got)
	}
}

func TestRefreshLeavesPreviousAccessToken(t *testing.T) {
	t.Parallel()
	for _, revokes := range []bool{false, true} {
		cfg := testConfig()
		cfg.RefreshRevokesAccessToken = revokes
		h := newHarness(t, cfg)
		first := h.passwordGrant("api offline_access")
		if status, _ := h.refresh(first.RefreshToken); status != http.StatusOK {
			t.Fatalf("refresh = %d, want 200", status)
		}
		want := http.StatusOK
		if revokes {
			want = http.StatusUnauthorized
		}
		if got := h.dataStatus(nil, first.AccessToken); got != want {
			t.Errorf("RefreshRevokesAccessToken=%v: previous token on data = %d, want %d", revokes, got, want)
		}
	}
}

func TestRevocationKeepsSeat(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	tb := h.passwordGrant("api offline_access")
	resp, body := h.postForm(PathRevocation, url.Values{
		"token": {tb.AccessToken}, "client_id": {DemoClientID}, "client_secret": {DemoClientSecret},
	})
	if resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("revocation = %d %q, want 200 with an empty body", resp.StatusCode, body)
	}
	h.wantOpen(1)
	if got := h.dataStatus(nil, tb.AccessToken); got != http.StatusUnauthorized {
		t.Errorf("data with revoked access token = %d, want 401", got)
	}
	if got := h.logout(nil, tb.AccessToken); got != http.StatusUnauthorized {
		t.Errorf("sign-out with revoked access token = %d, want 401", got)
	}
	h.wantOpen(1)

	resp, _ = h.postForm(PathRevocation, url.Values{
		"token": {tb.RefreshToken}, "client_id": {DemoClientID}, "client_secret": {DemoClientSecret},
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("refresh token revocation = %d, want 200", resp.StatusCode)
	}
	if status, got := h.refresh(tb.RefreshToken); status != http.StatusBadRequest || got.Error != "invalid_grant" {
		t.Errorf("refresh with revoked token = %d %+v, want 400 invalid_grant", status, got)
	}
	st := h.e.Stats()
	if st.Revocations != 2 || st.OpenSessions != 1 {
		t.Errorf("stats = %+v, want 2 revocations and 1 open session", st)
	}
}

func TestRevocationErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	tb := h.passwordGrant("api")
	resp, body := h.postForm(PathRevocation, url.Values{
		"token": {tb.AccessToken}, "client_id": {DemoClientID}, "client_secret": {"wrong"},
	})
	if got := decodeJSON[tokenBody](t, body); resp.StatusCode != http.StatusBadRequest || got.Error != "invalid_client" {
		t.Errorf("revocation with wrong secret = %d %+v, want 400 invalid_client", resp.StatusCode, got)
	}
	resp, body = h.postForm(PathRevocation, url.Values{"client_id": {DemoClientID}, "client_secret": {DemoClientSecret}})
	if got := decodeJSON[tokenBody](t, body); resp.StatusCode != http.StatusBadRequest || got.Error != "invalid_request" {
		t.Errorf("revocation without token = %d %+v, want 400 invalid_request", resp.StatusCode, got)
	}
	resp, _ = h.postForm(PathRevocation, url.Values{
		"token": {"unknown"}, "client_id": {DemoClientID}, "client_secret": {DemoClientSecret},
	})
	if resp.StatusCode != http.StatusOK {
		t.Errorf("revocation of unknown token = %d, want 200", resp.StatusCode)
	}
	if got := h.dataStatus(nil, tb.AccessToken); got != http.StatusOK {
		t.Errorf("data after failed revocations = %d, want 200", got)
	}
}

func TestTokenLoginLimitStyles(t *testing.T) {
	t.Parallel()
	t.Run("InvalidGrant", func(t *testing.T) {
		t.Parallel()
		cfg := testConfig()
		cfg.Seats = 1
		h := newHarness(t, cfg)
		h.passwordGrant("api")
		status, tb := h.tryPasswordGrant("api")
		if status != http.StatusBadRequest || tb.Error != "invalid_grant" || tb.ErrorDescription != "API Login Limit" {
			t.Errorf("second grant = %d %+v, want 400 invalid_grant API Login Limit", status, tb)
		}
	})
	t.Run("PXException", func(t *testing.T) {
		t.Parallel()
		cfg := testConfig()
		cfg.Seats = 1
		cfg.TokenLoginLimitStyle = LoginLimitPXException
		h := newHarness(t, cfg)
		h.passwordGrant("api")
		resp, body := h.postForm(PathToken, passwordForm("api"))
		if resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("status = %d, want 500", resp.StatusCode)
		}
		wantPXError(t, body, "API Login Limit")
	})
}
