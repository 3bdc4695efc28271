package emulator

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
)

func TestParallelSignInsNeverExceedSeats(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Seats = 7
	h := newHarness(t, cfg)
	const clients = 300
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			var status int
			if i%2 == 0 {
				status, _ = h.tryPasswordGrant("api offline_access")
			} else {
				resp, _ := h.login(h.jarClient(), DemoUser, DemoPassword)
				status = resp.StatusCode
			}
			switch status {
			case http.StatusOK, http.StatusNoContent:
				ok.Add(1)
			case http.StatusBadRequest, http.StatusInternalServerError:
				refused.Add(1)
			default:
				t.Errorf("sign-in %d: unexpected status %d", i, status)
			}
		})
	}
	wg.Wait()
	st := h.e.Stats()
	if ok.Load() != 7 || refused.Load() != clients-7 {
		t.Errorf("%d sign-ins succeeded and %d were refused, want 7 and %d", ok.Load(), refused.Load(), clients-7)
	}
	if st.PeakSessions != 7 || st.OpenSessions != 7 || st.RefusedSignIns["login_limit"] != clients-7 {
		t.Errorf("stats = %+v, want peak 7, 7 open, %d login_limit refusals", st, clients-7)
	}
}

func TestParallelChurnStaysWithinSeats(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Seats = 5
	h := newHarness(t, cfg)
	const workers, rounds = 50, 6
	var signedIn atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range rounds {
				status, tb := h.tryPasswordGrant("api offline_access")
				if status != http.StatusOK {
					continue
				}
				signedIn.Add(1)
				if code := h.dataStatus(nil, tb.AccessToken); code != http.StatusOK {
					t.Errorf("data in own session = %d, want 200", code)
				}
				if code := h.logout(nil, tb.AccessToken); code != http.StatusNoContent {
					t.Errorf("sign-out = %d, want 204", code)
				}
			}
		})
	}
	wg.Wait()
	st := h.e.Stats()
	if st.PeakSessions > 5 {
		t.Errorf("peak = %d, want at most 5 seats", st.PeakSessions)
	}
	if st.OpenSessions != 0 || st.SignIns != signedIn.Load() || signedIn.Load() < 5 {
		t.Errorf("stats = %+v after %d sign-ins, want all signed out", st, signedIn.Load())
	}
}
