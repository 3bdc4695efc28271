package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acubroker/acubroker/client"
	"github.com/acubroker/acubroker/internal/brokertest"
)

// sentRequests is a RoundTripper that records the Authorization header and
// cookies of each request before sending it.
type sentRequests struct {
	next http.RoundTripper // default http.DefaultTransport

	mu            sync.Mutex
	authorization []string
	cookies       []string
}

func (s *sentRequests) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.authorization = append(s.authorization, req.Header.Get("Authorization"))
	s.cookies = append(s.cookies, req.Header.Get("Cookie"))
	s.mu.Unlock()
	next := s.next
	if next == nil {
		next = http.DefaultTransport
	}
	return next.RoundTrip(req)
}

func (s *sentRequests) auth() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.authorization...)
}

// getCustomers fetches the emulator's customers and returns their
// CustomerID values.
func getCustomers(t *testing.T, hc *http.Client, url string) []string {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200", url, resp.StatusCode)
	}
	var customers []struct {
		CustomerID struct{ Value string } `json:"CustomerID"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&customers); err != nil {
		t.Fatalf("decode customers: %v", err)
	}
	ids := make([]string, 0, len(customers))
	for _, c := range customers {
		ids = append(ids, c.CustomerID.Value)
	}
	return ids
}

func TestTransportSurvives401(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	c, rec := newRecordedClient(t, env)
	sent := &sentRequests{}
	tr := c.Transport(connection, sent, client.WithIdleRelease(time.Hour))
	hc := &http.Client{Transport: tr}

	ids := getCustomers(t, hc, customersURL(env))
	if len(ids) != 4 || ids[0] != "AACUSTOMER" {
		t.Fatalf("customers = %v, want the emulator's 4 starting with AACUSTOMER", ids)
	}
	firstToken, ok := strings.CutPrefix(sent.auth()[0], "Bearer ")
	if !ok || firstToken == "" {
		t.Fatalf("first request's Authorization = %q, want a bearer token", sent.auth()[0])
	}

	revoke(t, env, firstToken)
	if ids := getCustomers(t, hc, customersURL(env)); len(ids) != 4 {
		t.Errorf("customers after the token was revoked = %v, want 4", ids)
	}
	auth := sent.auth()
	if len(auth) != 3 {
		t.Fatalf("requests sent = %d, want 3: the first, the one answered 401, and its retry", len(auth))
	}
	if auth[1] != "Bearer "+firstToken {
		t.Error("the request answered 401 did not carry the revoked token")
	}
	if auth[2] == auth[1] || !strings.HasPrefix(auth[2], "Bearer ") {
		t.Error("the retry did not carry a new bearer token")
	}

	if err := tr.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	acquires := rec.of("AcquireSession")
	if len(acquires) != 2 {
		t.Fatalf("AcquireSession calls = %d, want 2", len(acquires))
	}
	releases := rec.of("ReleaseSession")
	if len(releases) != 2 {
		t.Fatalf("ReleaseSession calls = %d, want 2: token rejected, then on Close", len(releases))
	}
	seats := seatStates(t, env)
	if seats["leased"] != 0 || seats["idle"] != 1 {
		t.Errorf("seats after Close = %v, want 1 idle and none leased", seats)
	}
	stats := env.Emulator.Emulator.Stats()
	if stats.SignIns != 2 {
		t.Errorf("emulator sign-ins = %d, want 2", stats.SignIns)
	}
	// The revoked session stays open at Acumatica until its idle timeout:
	// revocation closes no session, and its sign-out needs a valid token.
	// The other open session is the warm one in the broker's pool. The
	// broker keeps counting the revoked session's seat until it has timed
	// out, so its count matches Acumatica's.
	if stats.OpenSessions != 2 {
		t.Errorf("emulator open sessions = %d, want 2 (the revoked session and the warm one)", stats.OpenSessions)
	}
	if seats["signing_out"] != 1 {
		t.Errorf("seats after Close = %v, want the revoked session's seat still counted as signing_out", seats)
	}
}

func TestTransportKeepsCredentialsFromOtherHosts(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	c, rec := newRecordedClient(t, env)

	var mu sync.Mutex
	var seen []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization")+"|"+r.Header.Get("Cookie"))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(other.Close)

	tr := c.Transport(connection, nil)
	t.Cleanup(func() { _ = tr.Close() })
	hc := &http.Client{Transport: tr}
	get := func(url string) {
		t.Helper()
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}

	get(other.URL + "/before")
	if ids := getCustomers(t, hc, customersURL(env)); len(ids) != 4 {
		t.Errorf("customers = %v, want 4", ids)
	}
	get(other.URL + "/after")

	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("requests to the other host = %d, want 2", len(seen))
	}
	for i, s := range seen {
		if s != "|" {
			t.Errorf("request %d to the other host carried Authorization|Cookie %q, want none", i+1, s)
		}
	}
	if n := len(rec.of("AcquireSession")); n != 1 {
		t.Errorf("AcquireSession calls = %d, want 1", n)
	}
}

// rejectPOST returns a 401 response to every POST without sending it, and
// sends other requests.
type rejectPOST struct {
	mu    sync.Mutex
	posts int
}

func (r *rejectPOST) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost {
		return http.DefaultTransport.RoundTrip(req)
	}
	if req.Body != nil {
		_ = req.Body.Close()
	}
	r.mu.Lock()
	r.posts++
	r.mu.Unlock()
	return &http.Response{
		StatusCode: http.StatusUnauthorized,
		Status:     "401 Unauthorized",
		Header:     http.Header{},
		Body:       io.NopCloser(strings.NewReader("")),
		Request:    req,
	}, nil
}

func (r *rejectPOST) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.posts
}

func TestTransportRetriesOnlyReplayableBodies(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 2})
	c, rec := newRecordedClient(t, env)
	base := &rejectPOST{}
	tr := c.Transport(connection, base)
	t.Cleanup(func() { _ = tr.Close() })
	hc := &http.Client{Transport: tr}
	post := func(body io.Reader) int {
		t.Helper()
		req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, customersURL(env), body)
		if err != nil {
			t.Fatalf("build request: %v", err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}

	// io.NopCloser hides the reader's type, so the request has no GetBody.
	if got := post(io.NopCloser(strings.NewReader(`{"x":1}`))); got != http.StatusUnauthorized {
		t.Errorf("POST with a one-shot body: status %d, want 401", got)
	}
	if got := base.count(); got != 1 {
		t.Errorf("a one-shot body was sent %d times, want 1", got)
	}
	if got := post(strings.NewReader(`{"x":1}`)); got != http.StatusUnauthorized {
		t.Errorf("POST with a replayable body: status %d, want 401", got)
	}
	if got := base.count(); got != 3 {
		t.Errorf("POSTs sent = %d, want 3: one, then a replayable one and its retry", got)
	}

	acquires := rec.of("AcquireSession")
	if len(acquires) != 3 {
		t.Fatalf("AcquireSession calls = %d, want 3, one per POST sent", len(acquires))
	}
	for _, r := range rec.of("ReleaseSession") {
		if r.err != nil {
			t.Errorf("ReleaseSession failed: %v", r.err)
		}
	}
	if n := len(rec.of("ReleaseSession")); n != 3 {
		t.Errorf("ReleaseSession calls = %d, want 3, all with token rejected", n)
	}
	if seats := seatStates(t, env); seats["leased"] != 0 {
		t.Errorf("seats = %v, want none leased", seats)
	}
}

func TestTransportReleasesWhenIdle(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	c, rec := newRecordedClient(t, env)
	tr := c.Transport(connection, nil, client.WithIdleRelease(50*time.Millisecond))
	t.Cleanup(func() { _ = tr.Close() })
	hc := &http.Client{Transport: tr}

	for round := 1; round <= 2; round++ {
		if ids := getCustomers(t, hc, customersURL(env)); len(ids) != 4 {
			t.Errorf("round %d: customers = %v, want 4", round, ids)
		}
		waitFor(t, "the idle lease to be released", func() bool {
			return len(rec.of("ReleaseSession")) == round && seatStates(t, env)["leased"] == 0
		})
	}
	if n := len(rec.of("AcquireSession")); n != 2 {
		t.Errorf("AcquireSession calls = %d, want 2, one per round", n)
	}
	if signIns := env.Emulator.Emulator.Stats().SignIns; signIns != 1 {
		t.Errorf("emulator sign-ins = %d, want 1: the second round reuses the warm session", signIns)
	}
}

func TestTransportAfterCloseFails(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t, brokertest.Options{Seats: 1})
	c := newClient(t, env)
	tr := c.Transport(connection, nil)
	hc := &http.Client{Transport: tr}

	if ids := getCustomers(t, hc, customersURL(env)); len(ids) != 4 {
		t.Errorf("customers = %v, want 4", ids)
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, customersURL(env), nil)
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	if _, err := hc.Do(req); !errors.Is(err, client.ErrClosed) {
		t.Errorf("GET after Close returned %v, want ErrClosed", err)
	}
	if seats := seatStates(t, env); seats["leased"] != 0 {
		t.Errorf("seats after Close = %v, want none leased", seats)
	}
}
