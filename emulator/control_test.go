package emulator

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// control sends a control API request with an optional JSON body and
// returns the status and body.
func (h *harness) control(method, path, body string) (int, []byte) {
	h.t.Helper()
	var req *http.Request
	if body == "" {
		req = h.newRequest(method, path, nil)
	} else {
		req = h.newRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
	}
	resp, out := h.do(nil, req)
	return resp.StatusCode, out
}

func TestControlStatsAndSessions(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	h.passwordGrant("api offline_access")
	h.tryPasswordGrant("api")
	h.tryPasswordGrant("api")

	status, body := h.control(http.MethodGet, "/_emulator/stats", "")
	if status != http.StatusOK {
		t.Fatalf("stats = %d, want 200", status)
	}
	raw := decodeJSON[map[string]any](t, body)
	for _, key := range []string{"open_sessions", "peak_sessions", "sign_ins", "sessions_opened", "refreshes",
		"sign_outs", "revocations", "throttled", "refused_sign_ins", "sessions_closed", "faults_injected", "now"} {
		if _, ok := raw[key]; !ok {
			t.Errorf("stats has no %q: %s", key, body)
		}
	}
	st := decodeJSON[Stats](t, body)
	if st.OpenSessions != 2 || st.RefusedSignIns["login_limit"] != 1 || !st.Now.Equal(h.e.Now()) {
		t.Errorf("stats = %+v, want 2 open, 1 login_limit refusal, now %s", st, h.e.Now())
	}

	status, body = h.control(http.MethodGet, "/_emulator/sessions", "")
	if status != http.StatusOK {
		t.Fatalf("sessions = %d, want 200", status)
	}
	if !strings.Contains(string(body), `"opened_by":"password"`) || !strings.Contains(string(body), `"client_id"`) {
		t.Errorf("sessions body %s lacks snake_case fields", body)
	}
	list := decodeJSON[sessionsResponse](t, body)
	if len(list.Sessions) != 2 || list.Sessions[0].Scope != "api offline_access" || list.Sessions[1].Scope != "api" {
		t.Errorf("sessions = %+v, want the offline session then the api one", list.Sessions)
	}
}

func TestControlResetPeak(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	a := h.passwordGrant("api")
	h.passwordGrant("api")
	h.logout(nil, a.AccessToken)
	status, body := h.control(http.MethodPost, "/_emulator/reset-peak", "")
	st := decodeJSON[Stats](t, body)
	if status != http.StatusOK || st.PeakSessions != 1 || st.OpenSessions != 1 {
		t.Errorf("reset-peak = %d %+v, want 200 with peak 1 and 1 open", status, st)
	}
}

func TestControlLimits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	status, body := h.control(http.MethodPost, "/_emulator/limits", `{"seats":7,"requests_per_minute":100}`)
	if status != http.StatusOK {
		t.Fatalf("set limits = %d %s, want 200", status, body)
	}
	want := `{"seats":7,"max_logins_per_user":0,"requests_per_minute":100}`
	if strings.TrimSpace(string(body)) != want {
		t.Errorf("limits = %s, want %s", body, want)
	}
	if _, body = h.control(http.MethodGet, "/_emulator/limits", ""); strings.TrimSpace(string(body)) != want {
		t.Errorf("GET limits = %s, want %s", body, want)
	}
	if got := *h.e.Limits().Seats; got != 7 {
		t.Errorf("Seats = %d, want 7", got)
	}

	bad := map[string]string{
		"negative":      `{"seats":-1}`,
		"unknown field": `{"licences":3}`,
		"not JSON":      `seats=3`,
		"empty":         ``,
	}
	for name, in := range bad {
		req := h.newRequest(http.MethodPost, "/_emulator/limits", strings.NewReader(in))
		resp, out := h.do(nil, req)
		errBody := decodeJSON[map[string]string](t, out)
		if resp.StatusCode != http.StatusBadRequest || errBody["error"] == "" {
			t.Errorf("%s: %d %s, want 400 with an error", name, resp.StatusCode, out)
		}
	}
	if got := *h.e.Limits().Seats; got != 7 {
		t.Errorf("Seats = %d after rejected updates, want 7", got)
	}
}

func TestControlClockAdvance(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	h.passwordGrant("api")
	before := h.e.Now()
	status, body := h.control(http.MethodPost, "/_emulator/clock/advance", `{"by":"1h"}`)
	if status != http.StatusOK {
		t.Fatalf("advance = %d %s, want 200", status, body)
	}
	got := decodeJSON[clockResponse](t, body)
	if want := before.Add(time.Hour); !got.Now.Equal(want) {
		t.Errorf("now = %s, want %s", got.Now, want)
	}
	h.wantOpen(0) // the api-only session ended with its token

	_, body = h.control(http.MethodGet, "/_emulator/clock", "")
	if c := decodeJSON[clockResponse](t, body); !c.Now.Equal(got.Now) {
		t.Errorf("GET clock = %s, want %s", c.Now, got.Now)
	}
	for _, in := range []string{`{"by":"-5m"}`, `{"by":"soon"}`, `{}`} {
		if status, _ := h.control(http.MethodPost, "/_emulator/clock/advance", in); status != http.StatusBadRequest {
			t.Errorf("advance %s = %d, want 400", in, status)
		}
	}
}

func TestControlRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	h.passwordGrant("api")
	h.passwordGrant("api offline_access")
	status, body := h.control(http.MethodPost, "/_emulator/restart", "")
	got := decodeJSON[restartResponse](t, body)
	if status != http.StatusOK || got.ClosedSessions != 2 {
		t.Errorf("restart = %d %+v, want 200 closing 2", status, got)
	}
	h.wantOpen(0)
}

func TestControlFaults(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	status, body := h.control(http.MethodPost, "/_emulator/faults",
		`{"endpoint":"data","status":503,"body":"busy","count":1}`)
	if status != http.StatusCreated {
		t.Fatalf("add fault = %d %s, want 201", status, body)
	}
	status, body = h.control(http.MethodPost, "/_emulator/faults", `{"endpoint":"token","latency":"20ms","ratio":0.25}`)
	if status != http.StatusCreated {
		t.Fatalf("add latency fault = %d %s, want 201", status, body)
	}
	list := decodeJSON[faultsResponse](t, body)
	if len(list.Faults) != 2 || list.Faults[1].Latency != "20ms" || list.Faults[0].Status != 503 {
		t.Errorf("faults = %+v, want the 503 and the 20ms latency", list.Faults)
	}
	tb := h.passwordGrant("api")
	resp, out := h.data(nil, tb.AccessToken)
	if resp.StatusCode != http.StatusServiceUnavailable || string(out) != "busy" {
		t.Errorf("data = %d %q, want the injected 503 busy", resp.StatusCode, out)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain for a plain body", ct)
	}

	status, body = h.control(http.MethodDelete, "/_emulator/faults", "")
	if list := decodeJSON[faultsResponse](t, body); status != http.StatusOK || len(list.Faults) != 0 {
		t.Errorf("delete faults = %d %s, want 200 and none left", status, body)
	}
	for _, in := range []string{`{"endpoint":"data"}`, `{"endpoint":"data","latency":"x"}`, `{"endpoint":"x","drop":true}`} {
		if status, body := h.control(http.MethodPost, "/_emulator/faults", in); status != http.StatusBadRequest {
			t.Errorf("add %s = %d %s, want 400", in, status, body)
		}
	}
}

func TestControlUnknownPath(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	if status, body := h.control(http.MethodGet, "/_emulator/nope", ""); status != http.StatusNotFound ||
		!strings.Contains(string(body), "no control endpoint") {
		t.Errorf("unknown path = %d %s, want 404 with an error", status, body)
	}
	if status, _ := h.control(http.MethodPut, "/_emulator/stats", ""); status != http.StatusMethodNotAllowed {
		t.Errorf("PUT stats = %d, want 405", status)
	}
}

func TestControlNotFaultedOrLimited(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.RequestsPerMinute = 1
	h := newHarness(t, cfg)
	h.e.InjectFault(Fault{Endpoint: EndpointAll, Status: 500})
	for range 3 {
		if status, _ := h.control(http.MethodGet, "/_emulator/stats", ""); status != http.StatusOK {
			t.Errorf("stats = %d, want 200", status)
		}
	}
}
