package emulator

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

// Reasons for refusing a sign-in, the keys of Stats.RefusedSignIns.
const (
	refusedLoginLimit         = "login_limit"
	refusedUserLimit          = "user_limit"
	refusedInvalidCredentials = "invalid_credentials"
	refusedInvalidClient      = "invalid_client"
	refusedInvalidGrant       = "invalid_grant"
	refusedInvalidScope       = "invalid_scope"
	refusedUnsupportedGrant   = "unsupported_grant_type"
	refusedInvalidRequest     = "invalid_request"
)

// Limits changes the licence limits at run time. A nil field keeps its
// current value; 0 means unlimited.
type Limits struct {
	Seats             *int `json:"seats,omitempty"`               // as Config.Seats
	MaxLoginsPerUser  *int `json:"max_logins_per_user,omitempty"` // as Config.MaxLoginsPerUser
	RequestsPerMinute *int `json:"requests_per_minute,omitempty"` // as Config.RequestsPerMinute
}

// validate returns an error naming the first negative field.
func (l Limits) validate() error {
	fields := []struct {
		name string
		v    *int
	}{{"seats", l.Seats}, {"max_logins_per_user", l.MaxLoginsPerUser}, {"requests_per_minute", l.RequestsPerMinute}}
	for _, f := range fields {
		if f.v != nil && *f.v < 0 {
			return fmt.Errorf("invalid limit %s %d: use 0 for unlimited or a positive number", f.name, *f.v)
		}
	}
	return nil
}

type limitValues struct {
	seats, maxLoginsPerUser, requestsPerMinute int
}

// SetLimits changes the non-nil limits. Sessions already open stay open when
// a limit drops below the number in use; new sign-ins are refused until
// enough close. SetLimits panics on a negative value; UpdateLimits returns
// the error instead.
func (e *Emulator) SetLimits(l Limits) {
	if err := e.UpdateLimits(l); err != nil {
		panic("emulator: SetLimits: " + err.Error())
	}
}

// UpdateLimits changes the non-nil limits as SetLimits does, or returns an
// error naming the first negative value and changes nothing.
func (e *Emulator) UpdateLimits(l Limits) error {
	if err := l.validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if l.Seats != nil {
		e.limits.seats = *l.Seats
	}
	if l.MaxLoginsPerUser != nil {
		e.limits.maxLoginsPerUser = *l.MaxLoginsPerUser
	}
	if l.RequestsPerMinute != nil {
		e.limits.requestsPerMinute = *l.RequestsPerMinute
	}
	e.log.Info("limits changed", "seats", e.limits.seats,
		"max_logins_per_user", e.limits.maxLoginsPerUser, "requests_per_minute", e.limits.requestsPerMinute)
	return nil
}

// Limits returns the limits in force, with every field set.
func (e *Emulator) Limits() Limits {
	e.mu.Lock()
	defer e.mu.Unlock()
	v := e.limits
	return Limits{Seats: &v.seats, MaxLoginsPerUser: &v.maxLoginsPerUser, RequestsPerMinute: &v.requestsPerMinute}
}

// seatRefusalLocked returns why user may not open another session, or "" if
// a seat is free. The licence limit is checked before the per-user cap, as
// Acumatica does.
func (e *Emulator) seatRefusalLocked(user string) string {
	if n := e.limits.seats; n > 0 && len(e.sessions.byID) >= n {
		return refusedLoginLimit
	}
	if n := e.limits.maxLoginsPerUser; n > 0 && e.sessions.perUser[user] >= n {
		return refusedUserLimit
	}
	return ""
}

// checkSeatLocked returns "" if user may open a session now. Otherwise it
// counts and logs the refusal and returns its reason.
func (e *Emulator) checkSeatLocked(user, clientID string) string {
	reason := e.seatRefusalLocked(user)
	if reason != "" {
		e.stats.refused[reason]++
		e.log.Info("sign-in refused", "reason", reason, "user", user, "client_id", clientID,
			"open_sessions", len(e.sessions.byID), "seats", e.limits.seats)
	}
	return reason
}

// countRefusal counts a sign-in rejected for reason and logs it at debug
// level with attrs, which must hold no secret.
func (e *Emulator) countRefusal(reason string, attrs ...any) {
	e.mu.Lock()
	e.stats.refused[reason]++
	e.mu.Unlock()
	e.log.Debug("sign-in rejected", append([]any{"reason", reason}, attrs...)...)
}

// rateWindow holds the times of the requests admitted in the last minute,
// oldest first. It is empty while the per-minute limit is 0.
type rateWindow struct {
	times []time.Time
}

// admit records a request at now and returns true, or returns false and how
// long until the window has room when limit requests were already admitted
// in the minute before now. A limit of 0 admits everything.
func (w *rateWindow) admit(now time.Time, limit int) (bool, time.Duration) {
	if limit <= 0 {
		w.times = nil
		return true, 0
	}
	start := now.Add(-time.Minute)
	i := 0
	for i < len(w.times) && !w.times[i].After(start) {
		i++
	}
	w.times = w.times[i:]
	if len(w.times) >= limit {
		return false, w.times[len(w.times)-limit].Sub(start)
	}
	w.times = append(w.times, now)
	return true, 0
}

// admitRequest applies the per-minute limit to a request. It writes a 429
// response and returns false when the limit is reached.
func (e *Emulator) admitRequest(w http.ResponseWriter, endpoint string) bool {
	e.mu.Lock()
	now := e.expireLocked()
	limit := e.limits.requestsPerMinute
	ok, wait := e.window.admit(now, limit)
	if !ok {
		e.stats.throttled++
		e.log.Debug("request throttled", "endpoint", endpoint, "requests_per_minute", limit)
	}
	e.mu.Unlock()
	if !ok {
		e.writeThrottled(w, limit, wait)
	}
	return ok
}

// writeThrottled writes a 429 response with Retry-After in whole seconds.
func (e *Emulator) writeThrottled(w http.ResponseWriter, limit int, wait time.Duration) {
	secs := max(1, int64(math.Ceil(wait.Seconds())))
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	msg := fmt.Sprintf("The request has been declined: the API request limit of %d requests per minute is reached. "+
		"Retry after %d seconds.", limit, secs)
	if e.cfg.ThrottlePlainText {
		writeText(w, http.StatusTooManyRequests, msg)
		return
	}
	writePXError(w, http.StatusTooManyRequests, pxException(msg))
}
