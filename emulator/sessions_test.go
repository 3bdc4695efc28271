package emulator

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestTrialLicenceRefusesThirdSignIn(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	h.passwordGrant("api offline_access")
	h.passwordGrant("api")
	status, tb := h.tryPasswordGrant("api offline_access")
	if status != http.StatusBadRequest || tb.Error != "invalid_grant" || tb.ErrorDescription != "API Login Limit" {
		t.Errorf("third password grant = %d %+v, want 400 invalid_grant API Login Limit", status, tb)
	}
	resp, body := h.login(h.jarClient(), DemoUser, DemoPassword)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("third sign-in by cookie = %d, want 500", resp.StatusCode)
	}
	wantPXError(t, body, "API Login Limit")
	if len(resp.Cookies()) != 0 {
		t.Errorf("refused sign-in set cookies %v", resp.Cookies())
	}
	st := h.e.Stats()
	if st.OpenSessions != 2 || st.PeakSessions != 2 || st.SignIns != 2 {
		t.Errorf("stats = %+v, want 2 open, peak 2, 2 sign-ins", st)
	}
	if st.RefusedSignIns["login_limit"] != 2 {
		t.Errorf("RefusedSignIns = %v, want login_limit: 2", st.RefusedSignIns)
	}
}

func TestSignOutFreesSeat(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	a := h.passwordGrant("api offline_access")
	h.passwordGrant("api")
	if code := h.logout(nil, a.AccessToken); code != http.StatusNoContent {
		t.Fatalf("sign-out = %d, want 204", code)
	}
	h.wantOpen(1)
	h.passwordGrant("api")
	st := h.e.Stats()
	if st.SignOuts != 1 || st.SessionsClosed["sign_out"] != 1 {
		t.Errorf("stats = %+v, want 1 sign-out closing 1 session", st)
	}
}

func TestSignOutWithoutContentLengthKeepsSeat(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	tb := h.passwordGrant("api offline_access")
	host := strings.TrimPrefix(h.srv.URL, "http://")

	raw := "POST " + PathLogout + " HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " +
		tb.AccessToken + "\r\nConnection: close\r\n\r\n"
	if resp := h.rawRequest(raw); resp.StatusCode != http.StatusLengthRequired {
		t.Errorf("raw sign-out without Content-Length = %d, want 411", resp.StatusCode)
	}
	h.wantOpen(1)

	// A body of unknown length goes out chunked, without Content-Length.
	req := h.newRequest(http.MethodPost, PathLogout, io.MultiReader(strings.NewReader("")))
	req.Header.Set("Authorization", "Bearer "+tb.AccessToken)
	resp, _ := h.do(nil, req)
	if resp.StatusCode != http.StatusLengthRequired {
		t.Errorf("chunked sign-out = %d, want 411", resp.StatusCode)
	}
	h.wantOpen(1)
	if st := h.e.Stats(); st.SignOuts != 0 {
		t.Errorf("SignOuts = %d, want 0", st.SignOuts)
	}

	raw = "POST " + PathLogout + " HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " +
		tb.AccessToken + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	if resp := h.rawRequest(raw); resp.StatusCode != http.StatusNoContent {
		t.Errorf("raw sign-out with Content-Length: 0 = %d, want 204", resp.StatusCode)
	}
	h.wantOpen(0)
}

func TestBearerReuseAfterSignOutTakesSeat(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	a := h.passwordGrant("api offline_access")
	h.logout(nil, a.AccessToken)
	h.wantOpen(0)
	if code := h.dataStatus(nil, a.AccessToken); code != http.StatusOK {
		t.Fatalf("data with signed-out bearer = %d, want 200", code)
	}
	got := h.e.Sessions()
	if len(got) != 1 || got[0].OpenedBy != "bearer" {
		t.Fatalf("sessions = %+v, want one opened by bearer", got)
	}
	if code := h.dataStatus(nil, a.AccessToken); code != http.StatusOK {
		t.Fatalf("second data call = %d, want 200", code)
	}
	h.wantOpen(1)

	// With the licence full, reusing a signed-out bearer is refused.
	h.logout(nil, a.AccessToken)
	h.passwordGrant("api")
	h.passwordGrant("api")
	resp, body := h.data(nil, a.AccessToken)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("data with licence full = %d, want 500", resp.StatusCode)
	}
	wantPXError(t, body, "API Login Limit")
	st := h.e.Stats()
	if st.OpenSessions != 2 || st.SessionsOpened != 4 || st.RefusedSignIns["login_limit"] != 1 {
		t.Errorf("stats = %+v, want 2 open, 4 opened, 1 login_limit refusal", st)
	}
}

func TestAPIScopeSessionEndsWithToken(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	tb := h.passwordGrant("api")
	// Keep the session busy so that only the token expiry can close it.
	for range 6 {
		h.e.Advance(9*time.Minute + 59*time.Second)
		if code := h.dataStatus(nil, tb.AccessToken); code != http.StatusOK {
			t.Fatalf("data at %s = %d, want 200", h.e.Now(), code)
		}
	}
	h.wantOpen(1)
	h.e.Advance(6 * time.Second) // 3600 s after the grant
	st := h.e.Stats()
	if st.OpenSessions != 0 || st.SessionsClosed["token_expiry"] != 1 {
		t.Fatalf("stats at token expiry = %+v, want 0 open and 1 closed by token_expiry", st)
	}
	if code := h.dataStatus(nil, tb.AccessToken); code != http.StatusUnauthorized {
		t.Errorf("data with expired token = %d, want 401", code)
	}
	h.wantOpen(0)
}

func TestIdleTimeoutFreesSeat(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	tb := h.passwordGrant("api offline_access")
	h.e.Advance(9 * time.Minute)
	if code := h.dataStatus(nil, tb.AccessToken); code != http.StatusOK {
		t.Fatalf("data = %d, want 200", code)
	}
	h.e.Advance(9 * time.Minute)
	h.wantOpen(1)
	h.e.Advance(time.Minute) // 10 minutes since the last use
	h.wantOpen(0)
	if st := h.e.Stats(); st.SessionsClosed["idle_timeout"] != 1 {
		t.Errorf("SessionsClosed = %v, want idle_timeout: 1", st.SessionsClosed)
	}
}

func TestIdleTimeoutSetting(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.IdleTimeout = 30 * time.Second
	h := newHarness(t, cfg)
	h.passwordGrant("api offline_access")
	h.e.Advance(29 * time.Second)
	h.wantOpen(1)
	h.e.Advance(time.Second)
	h.wantOpen(0)
}

func TestConcurrentAccessSessionPerCookieJar(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Seats = 0
	h := newHarness(t, cfg)
	tb := h.passwordGrant("api api:concurrent_access offline_access")
	h.wantOpen(0)
	jarA, jarB := h.jarClient(), h.jarClient()

	resp, _ := h.data(jarA, tb.AccessToken)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first call in jar A = %d, want 200", resp.StatusCode)
	}
	if !hasCookie(resp, "ASP.NET_SessionId") {
		t.Errorf("first call in jar A set no ASP.NET_SessionId; cookies %v", resp.Cookies())
	}
	resp, _ = h.data(jarA, tb.AccessToken)
	if resp.StatusCode != http.StatusOK || hasCookie(resp, "ASP.NET_SessionId") {
		t.Errorf("second call in jar A = %d with cookies %v, want 200 and no new session cookie",
			resp.StatusCode, resp.Cookies())
	}
	h.wantOpen(1)
	h.data(jarB, tb.AccessToken)
	h.data(jarB, tb.AccessToken)
	h.wantOpen(2)
	// Without a jar every call opens a session.
	h.data(nil, tb.AccessToken)
	h.data(nil, tb.AccessToken)
	h.wantOpen(4)
	for _, s := range h.e.Sessions() {
		if s.OpenedBy != "bearer" || s.Scope != "api api:concurrent_access offline_access" {
			t.Errorf("session %+v, want opened by bearer with the granted scope", s)
		}
	}

	if code := h.logout(jarA, tb.AccessToken); code != http.StatusNoContent {
		t.Fatalf("sign-out of jar A = %d, want 204", code)
	}
	h.wantOpen(3)
	// Jar A's cookie was cleared, so its next call opens a new session.
	if resp, _ := h.data(jarA, tb.AccessToken); !hasCookie(resp, "ASP.NET_SessionId") {
		t.Errorf("call after sign-out set no new session cookie")
	}
	h.wantOpen(4)
}

func TestConcurrentAccessGrantChecksSeats(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Seats = 1
	h := newHarness(t, cfg)
	tb := h.passwordGrant("api:concurrent_access")
	h.wantOpen(0)
	h.data(h.jarClient(), tb.AccessToken)
	h.wantOpen(1)
	status, got := h.tryPasswordGrant("api:concurrent_access")
	if status != http.StatusBadRequest || got.ErrorDescription != "API Login Limit" {
		t.Errorf("grant with licence full = %d %+v, want 400 API Login Limit", status, got)
	}
	resp, body := h.data(h.jarClient(), tb.AccessToken)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("new cookie jar with licence full = %d, want 500", resp.StatusCode)
	}
	wantPXError(t, body, "API Login Limit")
}

func TestCookieSignIn(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	jar := h.jarClient()
	resp, body := h.login(jar, DemoUser, DemoPassword)
	if resp.StatusCode != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("sign-in = %d %q, want 204 with no body", resp.StatusCode, body)
	}
	for _, name := range []string{".ASPXAUTH", "ASP.NET_SessionId", "CompanyID", "Locale", "UserBranch", "requestid"} {
		if !hasCookie(resp, name) {
			t.Errorf("sign-in did not set cookie %s; got %v", name, resp.Cookies())
		}
	}
	if got := h.e.Sessions(); len(got) != 1 || got[0].OpenedBy != "cookie" || got[0].User != DemoUser {
		t.Fatalf("sessions = %+v, want one cookie session of %s", got, DemoUser)
	}
	resp, body = h.data(jar, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("data with cookies = %d, want 200", resp.StatusCode)
	}
	if list := decodeJSON[[]customer](t, body); len(list) == 0 {
		t.Error("data returned no customers")
	}
	if code := h.logout(jar, ""); code != http.StatusNoContent {
		t.Fatalf("sign-out = %d, want 204", code)
	}
	h.wantOpen(0)
	if code := h.dataStatus(jar, ""); code != http.StatusUnauthorized {
		t.Errorf("data after sign-out = %d, want 401", code)
	}
}

func TestCookieSignInOpensSessionPerLogin(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Seats = 0
	h := newHarness(t, cfg)
	jar := h.jarClient()
	for range 3 {
		if resp, _ := h.login(jar, DemoUser, DemoPassword); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("sign-in = %d, want 204", resp.StatusCode)
		}
	}
	h.wantOpen(3)
	if st := h.e.Stats(); st.SignIns != 3 || st.SessionsOpened != 3 {
		t.Errorf("stats = %+v, want 3 sign-ins and 3 sessions opened", st)
	}
}

func TestCookieSignInFormBody(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	form := url.Values{"name": {DemoUser}, "password": {DemoPassword}, "company": {"Other"}}
	resp, body := h.postForm(PathLogin, form)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("form sign-in = %d %s, want 204", resp.StatusCode, body)
	}
	if c := findCookie(resp, "CompanyID"); c == nil || c.Value != "Other" {
		t.Errorf("CompanyID cookie = %v, want Other", c)
	}
}

func TestCookieSignInErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	resp, body := h.login(h.jarClient(), DemoUser, "wrong")
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("wrong password = %d, want 500", resp.StatusCode)
	}
	wantPXError(t, body, "Error: Invalid credentials. Please try again.")

	req := h.newRequest(http.MethodPost, PathLogin, strings.NewReader(`{"name":`))
	req.Header.Set("Content-Type", "application/json")
	if resp, _ := h.do(nil, req); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed JSON = %d, want 400", resp.StatusCode)
	}

	both := `{"name":"admin","password":"demo-password","tenant":"A","company":"B"}`
	req = h.newRequest(http.MethodPost, PathLogin, strings.NewReader(both))
	req.Header.Set("Content-Type", "application/json")
	resp, body = h.do(nil, req)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("tenant and company = %d, want 500", resp.StatusCode)
	}
	wantPXError(t, body, "can not be specified at the same time")

	st := h.e.Stats()
	if st.OpenSessions != 0 || st.RefusedSignIns["invalid_credentials"] != 1 {
		t.Errorf("stats = %+v, want 0 open and 1 invalid_credentials refusal", st)
	}
}

func TestRestartFreesAllSessions(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Seats = 0
	h := newHarness(t, cfg)
	a := h.passwordGrant("api")
	h.passwordGrant("api offline_access")
	jar := h.jarClient()
	h.login(jar, DemoUser, DemoPassword)
	h.wantOpen(3)
	h.e.RestartApplication()
	st := h.e.Stats()
	if st.OpenSessions != 0 || st.SessionsClosed["restart"] != 3 || st.PeakSessions != 3 {
		t.Fatalf("stats after restart = %+v, want 0 open, 3 closed by restart, peak 3", st)
	}
	if code := h.dataStatus(jar, ""); code != http.StatusUnauthorized {
		t.Errorf("cookie session after restart = %d, want 401", code)
	}
	if code := h.dataStatus(nil, a.AccessToken); code != http.StatusOK {
		t.Errorf("bearer after restart = %d, want 200 in a new session", code)
	}
	h.wantOpen(1)
}

func TestDataRequiresCredentials(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	tests := []struct {
		name   string
		header string
	}{
		{"None", ""},
		{"UnknownBearer", "Bearer not-a-token"},
		{"EmptyBearer", "Bearer "},
		{"Basic", "Basic YWRtaW46ZGVtby1wYXNzd29yZA=="},
	}
	for _, tt := range tests {
		req := h.newRequest(http.MethodGet, PathCustomers, nil)
		if tt.header != "" {
			req.Header.Set("Authorization", tt.header)
		}
		resp, _ := h.do(nil, req)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: status = %d, want 401", tt.name, resp.StatusCode)
		}
	}
	req := h.newRequest(http.MethodGet, PathCustomers, nil)
	req.AddCookie(&http.Cookie{Name: ".ASPXAUTH", Value: "forged"})
	if resp, _ := h.do(nil, req); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged .ASPXAUTH: status = %d, want 401", resp.StatusCode)
	}
	h.wantOpen(0)
}

func TestCustomerEndpoints(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	tb := h.passwordGrant("api")
	resp, body := h.data(nil, tb.AccessToken)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("list = %d, want 200", resp.StatusCode)
	}
	list := decodeJSON[[]map[string]any](t, body)
	if len(list) < 3 {
		t.Fatalf("list has %d customers, want at least 3", len(list))
	}
	id, ok := list[1]["CustomerID"].(map[string]any)["value"].(string)
	if !ok || id == "" {
		t.Fatalf("CustomerID = %v, want {\"value\": ...}", list[1]["CustomerID"])
	}

	req := h.newRequest(http.MethodGet, PathCustomers+"/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+tb.AccessToken)
	resp, body = h.do(nil, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("get %s = %d, want 200", id, resp.StatusCode)
	}
	if c := decodeJSON[customer](t, body); c.CustomerID.Value != id || c.CustomerName.Value == "" {
		t.Errorf("get %s returned %+v", id, c)
	}

	req = h.newRequest(http.MethodGet, PathCustomers+"/NOSUCH", nil)
	req.Header.Set("Authorization", "Bearer "+tb.AccessToken)
	if resp, _ := h.do(nil, req); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown customer = %d, want 404", resp.StatusCode)
	}
	req = h.newRequest(http.MethodGet, PathCustomers+"/"+id, nil)
	if resp, _ := h.do(nil, req); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("customer without credentials = %d, want 401", resp.StatusCode)
	}
}

func TestUserLimit(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Seats = 5
	cfg.MaxLoginsPerUser = 1
	cfg.Users = append(cfg.Users, User{Name: "other", Password: "other-password"})
	h := newHarness(t, cfg)
	h.passwordGrant("api")
	status, tb := h.tryPasswordGrant("api")
	if status != http.StatusBadRequest || tb.Error != "invalid_grant" ||
		!strings.Contains(tb.ErrorDescription, "concurrent API logins") {
		t.Errorf("second grant of the user = %d %+v, want 400 invalid_grant with \"concurrent API logins\"", status, tb)
	}
	resp, body := h.login(h.jarClient(), strings.ToUpper(DemoUser), DemoPassword)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("cookie sign-in of the user = %d, want 500", resp.StatusCode)
	}
	wantPXError(t, body, "concurrent API logins")
	if resp, _ := h.login(h.jarClient(), "other", "other-password"); resp.StatusCode != http.StatusNoContent {
		t.Errorf("sign-in of another user = %d, want 204", resp.StatusCode)
	}
	if st := h.e.Stats(); st.RefusedSignIns["user_limit"] != 2 {
		t.Errorf("RefusedSignIns = %v, want user_limit: 2", st.RefusedSignIns)
	}
}

func TestLicenceLimitCheckedBeforeUserLimit(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Seats = 1
	cfg.MaxLoginsPerUser = 1
	h := newHarness(t, cfg)
	h.passwordGrant("api")
	status, tb := h.tryPasswordGrant("api")
	if status != http.StatusBadRequest || tb.ErrorDescription != "API Login Limit" {
		t.Errorf("grant = %d %+v, want the licence limit first", status, tb)
	}
	if st := h.e.Stats(); st.RefusedSignIns["login_limit"] != 1 || st.RefusedSignIns["user_limit"] != 0 {
		t.Errorf("RefusedSignIns = %v, want login_limit only", st.RefusedSignIns)
	}
}

func TestUserLimitOnDataCallRedirects(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Seats = 5
	cfg.MaxLoginsPerUser = 1
	h := newHarness(t, cfg)
	a := h.passwordGrant("api offline_access")
	h.logout(nil, a.AccessToken)
	h.login(h.jarClient(), DemoUser, DemoPassword)
	resp, _ := h.data(nil, a.AccessToken)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("data over the user's cap = %d, want 302", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Path != "/Frames/Error.aspx" ||
		!strings.Contains(loc.Query().Get("message"), "concurrent API logins") {
		t.Fatalf("Location = %q, want /Frames/Error.aspx with the per-user message", resp.Header.Get("Location"))
	}
	req := h.newRequest(http.MethodGet, loc.String(), nil)
	page, body := h.do(nil, req)
	if page.StatusCode != http.StatusOK || !strings.Contains(string(body), "concurrent API logins") {
		t.Errorf("error page = %d %q, want 200 with the message", page.StatusCode, body)
	}
}

func TestSessionsOldestFirst(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Seats = 0
	h := newHarness(t, cfg)
	for range 5 {
		h.passwordGrant("api")
		h.e.Advance(time.Second)
	}
	got := h.e.Sessions()
	if len(got) != 5 {
		t.Fatalf("got %d sessions, want 5", len(got))
	}
	for i := 1; i < len(got); i++ {
		if !got[i-1].OpenedAt.Before(got[i].OpenedAt) {
			t.Errorf("session %d opened at %s, not before session %d at %s", i-1, got[i-1].OpenedAt, i, got[i].OpenedAt)
		}
	}
	if want := got[0].OpenedAt.Add(DefaultIdleTimeout); !got[0].ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %s, want the idle deadline %s", got[0].ExpiresAt, want)
	}
}

func findCookie(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name && c.Value != "" {
			return c
		}
	}
	return nil
}

func hasCookie(resp *http.Response, name string) bool {
	return findCookie(resp, name) != nil
}
