package emulator

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkDataCall measures a bearer data call in an open session over
// loopback HTTP, with parallel clients.
func BenchmarkDataCall(b *testing.B) {
	srv, err := Start(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	resp, err := http.PostForm(srv.URL+PathToken, passwordForm("api offline_access"))
	if err != nil {
		b.Fatal(err)
	}
	tb := readJSON[tokenBody](b, resp)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+PathCustomers, nil)
			req.Header.Set("Authorization", "Bearer "+tb.AccessToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkSignInSignOut measures a password grant followed by a sign-out,
// one seat at a time.
func BenchmarkSignInSignOut(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Seats = 0
	srv, err := Start(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	form := passwordForm("api").Encode()
	for b.Loop() {
		resp, err := http.Post(srv.URL+PathToken, "application/x-www-form-urlencoded", strings.NewReader(form))
		if err != nil {
			b.Fatal(err)
		}
		tb := readJSON[tokenBody](b, resp)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+PathLogout, strings.NewReader(""))
		req.Header.Set("Authorization", "Bearer "+tb.AccessToken)
		out, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		out.Body.Close()
		if out.StatusCode != http.StatusNoContent {
			b.Fatalf("sign-out status %d", out.StatusCode)
		}
	}
	if st := srv.Emulator.Stats(); st.OpenSessions != 0 {
		b.Errorf("%d sessions left open", st.OpenSessions)
	}
}

// readJSON decodes and closes a response body.
func readJSON[T any](tb testing.TB, resp *http.Response) T {
	tb.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return decodeJSON[T](tb, body)
}
