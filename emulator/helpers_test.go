package emulator

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock that stays at a fixed time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// harness is a running emulator and an HTTP client for one test.
type harness struct {
	t   *testing.T
	srv *Server
	e   *Emulator
	hc  *http.Client // no cookie jar, does not follow redirects
}

// testConfig returns DefaultConfig on a fake clock.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Clock = &fakeClock{now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	return cfg
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	srv, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &harness{t: t, srv: srv, e: srv.Emulator, hc: noRedirectClient(nil)}
}

func noRedirectClient(jar http.CookieJar) *http.Client {
	return &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// jarClient returns a client with its own cookie jar.
func (h *harness) jarClient() *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return noRedirectClient(jar)
}

// do sends req with c (h.hc if nil) and returns the response and its body.
func (h *harness) do(c *http.Client, req *http.Request) (*http.Response, []byte) {
	h.t.Helper()
	if c == nil {
		c = h.hc
	}
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("read body of %s %s: %v", req.Method, req.URL.Path, err)
	}
	return resp, body
}

func (h *harness) newRequest(method, path string, body io.Reader) *http.Request {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	return req
}

// postForm posts form to path with the client credentials in the form.
func (h *harness) postForm(path string, form url.Values) (*http.Response, []byte) {
	h.t.Helper()
	req := h.newRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return h.do(nil, req)
}

// tokenBody is the token endpoint's response, success or error.
type tokenBody struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int    `json:"expires_in"`
	Scope            string `json:"scope"`
	RefreshToken     string `json:"refresh_token"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

func decodeJSON[T any](t testing.TB, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	return v
}

func passwordForm(scope string) url.Values {
	return url.Values{
		"grant_type":    {"password"},
		"client_id":     {DemoClientID},
		"client_secret": {DemoClientSecret},
		"username":      {DemoUser},
		"password":      {DemoPassword},
		"scope":         {scope},
	}
}

// tryPasswordGrant requests a token and returns the status and body.
func (h *harness) tryPasswordGrant(scope string) (int, tokenBody) {
	h.t.Helper()
	resp, body := h.postForm(PathToken, passwordForm(scope))
	return resp.StatusCode, decodeJSON[tokenBody](h.t, body)
}

// passwordGrant requests a token and fails the test unless it gets one.
func (h *harness) passwordGrant(scope string) tokenBody {
	h.t.Helper()
	status, tb := h.tryPasswordGrant(scope)
	if status != http.StatusOK || tb.AccessToken == "" {
		h.t.Fatalf("password grant %q: status %d, body %+v", scope, status, tb)
	}
	return tb
}

func (h *harness) refresh(refreshToken string) (int, tokenBody) {
	h.t.Helper()
	resp, body := h.postForm(PathToken, url.Values{
		"grant_type":    {"refresh_token"},
		"client_id":     {DemoClientID},
		"client_secret": {DemoClientSecret},
		"refresh_token": {refreshToken},
	})
	return resp.StatusCode, decodeJSON[tokenBody](h.t, body)
}

// data gets the customer list with c (h.hc if nil) and an optional bearer.
func (h *harness) data(c *http.Client, bearer string) (*http.Response, []byte) {
	h.t.Helper()
	req := h.newRequest(http.MethodGet, PathCustomers, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return h.do(c, req)
}

// dataStatus returns the status of a customer list request.
func (h *harness) dataStatus(c *http.Client, bearer string) int {
	h.t.Helper()
	resp, _ := h.data(c, bearer)
	return resp.StatusCode
}

// logout signs out with Content-Length: 0, as Go sends for an empty body.
func (h *harness) logout(c *http.Client, bearer string) int {
	h.t.Helper()
	req := h.newRequest(http.MethodPost, PathLogout, strings.NewReader(""))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, _ := h.do(c, req)
	return resp.StatusCode
}

// login signs in with cookies into c's jar.
func (h *harness) login(c *http.Client, name, password string) (*http.Response, []byte) {
	h.t.Helper()
	body := fmt.Sprintf(`{"name":%q,"password":%q,"tenant":%q}`, name, password, DemoTenant)
	req := h.newRequest(http.MethodPost, PathLogin, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return h.do(c, req)
}

// rawRequest writes request text to a new connection and returns the
// response, so a test controls every header.
func (h *harness) rawRequest(text string) *http.Response {
	h.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		h.t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, text); err != nil {
		h.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		h.t.Fatalf("read raw response: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// wantOpen fails the test unless n sessions are open.
func (h *harness) wantOpen(n int) {
	h.t.Helper()
	if got := h.e.Stats().OpenSessions; got != n {
		h.t.Fatalf("open sessions = %d, want %d; sessions: %+v", got, n, h.e.Sessions())
	}
}

// wantPXError fails the test unless body is the PXException envelope with
// an exceptionMessage containing msg.
func wantPXError(t *testing.T, body []byte, msg string) {
	t.Helper()
	px := decodeJSON[pxError](t, body)
	if px.Message != "An error has occurred." || px.ExceptionType != "PX.Data.PXException" || px.StackTrace == "" {
		t.Errorf("envelope = %+v, want message, PX.Data.PXException and a stack trace", px)
	}
	if !strings.Contains(px.ExceptionMessage, msg) {
		t.Errorf("exceptionMessage = %q, want it to contain %q", px.ExceptionMessage, msg)
	}
}

func intPtr(v int) *int { return &v }
