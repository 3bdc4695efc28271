package emulator

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFaultStatusForNextCalls(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	h.e.InjectFault(Fault{Endpoint: EndpointToken, Status: 503, Body: `{"message":"down"}`, Count: 2})
	for i := range 2 {
		resp, body := h.postForm(PathToken, passwordForm("api"))
		if resp.StatusCode != http.StatusServiceUnavailable || string(body) != `{"message":"down"}` {
			t.Errorf("call %d = %d %q, want the injected 503", i, resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("call %d Content-Type = %q, want JSON for a JSON body", i, ct)
		}
	}
	h.wantOpen(0)
	h.passwordGrant("api")
	st := h.e.Stats()
	if st.FaultsInjected != 2 || st.SignIns != 1 {
		t.Errorf("stats = %+v, want 2 faults and 1 sign-in", st)
	}
	if got := h.e.Faults(); len(got) != 0 {
		t.Errorf("faults after their count = %+v, want none", got)
	}
}

func TestFaultTargetsOneEndpoint(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	tb := h.passwordGrant("api offline_access")
	h.e.InjectFault(Fault{Endpoint: EndpointLogout, Status: 500, Body: "boom"})
	if code := h.dataStatus(nil, tb.AccessToken); code != http.StatusOK {
		t.Errorf("data with a logout fault = %d, want 200", code)
	}
	for range 3 {
		if code := h.logout(nil, tb.AccessToken); code != http.StatusInternalServerError {
			t.Errorf("sign-out = %d, want the injected 500", code)
		}
	}
	h.wantOpen(1)
	h.e.ClearFaults()
	if code := h.logout(nil, tb.AccessToken); code != http.StatusNoContent {
		t.Errorf("sign-out after ClearFaults = %d, want 204", code)
	}
	h.wantOpen(0)
}

func TestFaultLatency(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	const delay = 150 * time.Millisecond
	h.e.InjectFault(Fault{Endpoint: EndpointAll, Latency: delay, Count: 1})
	start := time.Now()
	tb := h.passwordGrant("api")
	if elapsed := time.Since(start); elapsed < delay {
		t.Errorf("delayed call took %s, want at least %s", elapsed, delay)
	}
	if tb.AccessToken == "" {
		t.Error("a latency-only fault did not let the call through")
	}
	if code := h.dataStatus(nil, tb.AccessToken); code != http.StatusOK {
		t.Errorf("data after the fault = %d, want 200", code)
	}
	// A wall-clock bound on the next call would fail on a loaded machine,
	// so check that the fault was used up instead.
	if got := h.e.Faults(); len(got) != 0 {
		t.Errorf("faults after one hit = %+v, want none", got)
	}
	if st := h.e.Stats(); st.FaultsInjected != 1 {
		t.Errorf("FaultsInjected = %d, want 1", st.FaultsInjected)
	}
}

func TestFaultDropConnection(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	h.e.InjectFault(Fault{Endpoint: EndpointLogin, Drop: true, Count: 1})
	req := h.newRequest(http.MethodPost, PathLogin,
		strings.NewReader(`{"name":"admin","password":"demo-password"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.hc.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("dropped call returned status %d, want a connection error", resp.StatusCode)
	}
	if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "EOF") &&
		!strings.Contains(err.Error(), "connection reset") {
		t.Errorf("error = %v, want EOF or a reset", err)
	}
	h.wantOpen(0)
	if resp, _ := h.login(h.jarClient(), DemoUser, DemoPassword); resp.StatusCode != http.StatusNoContent {
		t.Errorf("sign-in after the drop = %d, want 204", resp.StatusCode)
	}
	if st := h.e.Stats(); st.FaultsInjected != 1 {
		t.Errorf("FaultsInjected = %d, want 1", st.FaultsInjected)
	}
}

// faultSequence returns which of n discovery calls a 50% fault hits.
func faultSequence(t *testing.T, seed int64, n int) []bool {
	t.Helper()
	cfg := testConfig()
	cfg.Seed = seed
	h := newHarness(t, cfg)
	h.e.InjectFault(Fault{Endpoint: EndpointDiscovery, Status: 502, Ratio: 0.5})
	hits := make([]bool, n)
	for i := range hits {
		resp, _ := h.do(nil, h.newRequest(http.MethodGet, PathDiscovery, nil))
		hits[i] = resp.StatusCode == http.StatusBadGateway
	}
	return hits
}

func TestFaultRatioRepeatsWithSeed(t *testing.T) {
	t.Parallel()
	const n = 200
	a := faultSequence(t, 42, n)
	b := faultSequence(t, 42, n)
	if !slices.Equal(a, b) {
		t.Error("two runs with seed 42 hit different calls")
	}
	hits := 0
	for _, hit := range a {
		if hit {
			hits++
		}
	}
	// For 200 draws at p = 0.5 the standard deviation is about 7.
	if hits < 60 || hits > 140 {
		t.Errorf("ratio 0.5 hit %d of %d calls, want about half", hits, n)
	}
	if c := faultSequence(t, 7, n); slices.Equal(a, c) {
		t.Error("seeds 42 and 7 hit the same calls")
	}
}

func TestFaultRatioWithCount(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	h.e.InjectFault(Fault{Endpoint: EndpointDiscovery, Status: 502, Ratio: 0.5, Count: 3})
	hits := 0
	for range 100 {
		if resp, _ := h.do(nil, h.newRequest(http.MethodGet, PathDiscovery, nil)); resp.StatusCode == 502 {
			hits++
		}
	}
	if hits != 3 {
		t.Errorf("fault with count 3 hit %d calls, want 3", hits)
	}
}

func TestFaultValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault Fault
		want  string // "" for valid
	}{
		{"Status", Fault{Endpoint: "token", Status: 503}, ""},
		{"Drop", Fault{Endpoint: "*", Drop: true, Ratio: 0.1}, ""},
		{"Latency", Fault{Endpoint: "data", Latency: time.Second, Count: 1}, ""},
		{"UnknownEndpoint", Fault{Endpoint: "userinfo", Status: 500}, "endpoint"},
		{"NegativeLatency", Fault{Endpoint: "data", Latency: -time.Second}, "latency"},
		{"BadStatus", Fault{Endpoint: "data", Status: 700}, "status"},
		{"NegativeCount", Fault{Endpoint: "data", Status: 500, Count: -1}, "count"},
		{"RatioAboveOne", Fault{Endpoint: "data", Status: 500, Ratio: 1.5}, "ratio"},
		{"BodyWithoutStatus", Fault{Endpoint: "data", Body: "x", Drop: true}, "body"},
		{"DoesNothing", Fault{Endpoint: "data", Count: 1}, "latency, a status or drop"},
	}
	for _, tt := range tests {
		err := tt.fault.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: Validate = %v, want nil", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: Validate = %v, want an error about %s", tt.name, err, tt.want)
		}
	}
	e, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if recover() == nil {
			t.Error("InjectFault with an invalid fault did not panic")
		}
	}()
	e.InjectFault(Fault{Endpoint: "nope", Status: 500})
}

func TestCloseCancelsFaultLatency(t *testing.T) {
	t.Parallel()
	srv, err := Start(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv.Emulator.InjectFault(Fault{Endpoint: EndpointDiscovery, Latency: time.Minute})
	errc := make(chan error, 1)
	go func() {
		resp, err := http.Get(srv.URL + PathDiscovery)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	// Wait until the request is inside the fault's latency.
	for deadline := time.Now().Add(5 * time.Second); srv.Emulator.Stats().FaultsInjected == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the request did not reach the fault within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("Close took %s with a request in a 1-minute latency, want it cancelled", elapsed)
	}
	if err := <-errc; err == nil {
		t.Error("the delayed request got a response, want a closed connection")
	}
}
