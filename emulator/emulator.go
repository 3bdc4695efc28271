package emulator

import (
	"cmp"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Clock is the emulator's time source.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Emulator is an http.Handler that imitates Acumatica's identity server and
// API session handling. It is safe for concurrent use. Create it with New.
type Emulator struct {
	cfg     Config // read-only after New; limits live in mu's fields
	log     *slog.Logger
	users   map[string]User // by lower-case name
	clients map[string]Client
	mux     *http.ServeMux

	// mu protects the fields below. Every check and change of the seat
	// count happens under it, so the count never passes the limit.
	mu       sync.Mutex
	offset   time.Duration // added to cfg.Clock by Advance
	limits   limitValues
	sessions sessionStore
	tokens   tokenStore
	window   rateWindow
	faults   faultSet
	stats    counters
}

// counters are the running totals behind Stats.
type counters struct {
	signIns, sessionsOpened, refreshes, signOuts int64
	revocations, throttled, faultsInjected       int64
	refused, closed                              map[string]int64
}

// Stats is a snapshot of the emulator's counters.
type Stats struct {
	// OpenSessions is the number of open sessions (seats in use).
	OpenSessions int `json:"open_sessions"`
	// PeakSessions is the most sessions open at once since New or the last
	// ResetPeak.
	PeakSessions int `json:"peak_sessions"`
	// SignIns counts successful password grants and cookie sign-ins.
	SignIns int64 `json:"sign_ins"`
	// SessionsOpened counts every session opened, including those opened by
	// a bearer reused after sign-out and one per cookie jar under
	// api:concurrent_access.
	SessionsOpened int64 `json:"sessions_opened"`
	// Refreshes counts successful refresh grants.
	Refreshes int64 `json:"refreshes"`
	// SignOuts counts sign-out requests that returned 204, whether or not they
	// closed a session. SessionsClosed["sign_out"] counts the sessions
	// they closed.
	SignOuts int64 `json:"sign_outs"`
	// Revocations counts revocation requests that returned 200.
	Revocations int64 `json:"revocations"`
	// Throttled counts requests rejected with 429 by the per-minute limit.
	Throttled int64 `json:"throttled"`
	// RefusedSignIns counts refused sign-ins and session openings by
	// reason: "login_limit", "user_limit", "invalid_credentials",
	// "invalid_client", "invalid_grant", "invalid_scope",
	// "unsupported_grant_type" and "invalid_request".
	RefusedSignIns map[string]int64 `json:"refused_sign_ins"`
	// SessionsClosed counts closed sessions by reason: "sign_out",
	// "idle_timeout", "token_expiry" and "restart".
	SessionsClosed map[string]int64 `json:"sessions_closed"`
	// FaultsInjected counts calls that an injected Fault hit.
	FaultsInjected int64 `json:"faults_injected"`
	// Now is the emulator's clock at the time of the snapshot.
	Now time.Time `json:"now"`
}

// SessionInfo describes one open session.
type SessionInfo struct {
	// ID identifies the session. It is not a credential.
	ID string `json:"id"`
	// User is the user name as configured.
	User string `json:"user"`
	// ClientID is the client of the bearer token, empty for a cookie sign-in.
	ClientID string `json:"client_id"`
	// Scope is the granted scope, empty for a cookie sign-in.
	Scope string `json:"scope"`
	// OpenedBy names what opened the session: "password", "refresh",
	// "bearer" or "cookie".
	OpenedBy string `json:"opened_by"`
	// OpenedAt is when the session opened, by the emulator clock.
	OpenedAt time.Time `json:"opened_at"`
	// LastUsedAt is the last request in the session, by the emulator
	// clock. The idle timeout counts from it.
	LastUsedAt time.Time `json:"last_used_at"`
	// ExpiresAt is when the session closes unless it is used again: the
	// idle deadline, or the access token's expiry for scope "api" alone if
	// that comes first.
	ExpiresAt time.Time `json:"expires_at"`
}

// New returns an Emulator for cfg. Zero durations take their defaults. A
// negative limit or duration, an unknown TokenLoginLimitStyle, or an empty
// or duplicate user or client is an error that names the field.
func New(cfg Config) (*Emulator, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	e := &Emulator{
		cfg:     cfg,
		log:     cfg.Logger,
		users:   make(map[string]User, len(cfg.Users)),
		clients: make(map[string]Client, len(cfg.Clients)),
		limits: limitValues{
			seats:             cfg.Seats,
			maxLoginsPerUser:  cfg.MaxLoginsPerUser,
			requestsPerMinute: cfg.RequestsPerMinute,
		},
		sessions: newSessionStore(),
		tokens:   newTokenStore(),
		faults:   faultSet{rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x9e3779b97f4a7c15))},
		stats:    counters{refused: map[string]int64{}, closed: map[string]int64{}},
	}
	for _, u := range cfg.Users {
		e.users[strings.ToLower(u.Name)] = u
	}
	for _, c := range cfg.Clients {
		e.clients[c.ID] = c
	}
	e.mux = e.routes()
	return e, nil
}

// Now returns the emulator's current time: the configured clock plus every
// duration passed to Advance.
func (e *Emulator) Now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.nowLocked()
}

func (e *Emulator) nowLocked() time.Time {
	return e.cfg.Clock.Now().Add(e.offset)
}

// Advance moves the emulator's clock forward by d. Sessions and tokens whose
// time is up are closed on the next request or introspection call. A d of
// zero or less does nothing.
func (e *Emulator) Advance(d time.Duration) {
	if d <= 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.offset += d
	e.log.Debug("clock advanced", "by", d, "now", e.nowLocked())
}

// expireLocked closes the sessions and deletes the tokens whose time is up.
// Every request and introspection call runs it first.
func (e *Emulator) expireLocked() time.Time {
	now := e.nowLocked()
	e.expireSessionsLocked(now)
	e.tokens.expire(now)
	return now
}

// Stats returns a snapshot of the counters after closing expired sessions.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.expireLocked()
	return Stats{
		OpenSessions:   len(e.sessions.byID),
		PeakSessions:   e.sessions.peak,
		SignIns:        e.stats.signIns,
		SessionsOpened: e.stats.sessionsOpened,
		Refreshes:      e.stats.refreshes,
		SignOuts:       e.stats.signOuts,
		Revocations:    e.stats.revocations,
		Throttled:      e.stats.throttled,
		RefusedSignIns: maps.Clone(e.stats.refused),
		SessionsClosed: maps.Clone(e.stats.closed),
		FaultsInjected: e.stats.faultsInjected,
		Now:            now,
	}
}

// Sessions returns the open sessions, oldest first, after closing expired
// ones.
func (e *Emulator) Sessions() []SessionInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expireLocked()
	open := slices.Collect(maps.Values(e.sessions.byID))
	slices.SortFunc(open, func(a, b *session) int { return cmp.Compare(a.seq, b.seq) })
	infos := make([]SessionInfo, 0, len(open))
	for _, s := range open {
		infos = append(infos, s.info(e.cfg.IdleTimeout))
	}
	return infos
}

// RestartApplication closes every open session, as the Restart Application
// button of Apply Updates (SM203510) or an IIS restart does. Tokens stay
// valid, so a bearer used afterwards opens a new session.
func (e *Emulator) RestartApplication() {
	e.restart()
}

// restart closes every open session and returns how many it closed.
func (e *Emulator) restart() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expireLocked()
	n := len(e.sessions.byID)
	for _, s := range e.sessions.byID {
		e.closeSessionLocked(s, closedByRestart)
	}
	e.log.Info("application restarted", "closed_sessions", n)
	return n
}

// ResetPeak sets PeakSessions to the number of sessions open now.
func (e *Emulator) ResetPeak() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expireLocked()
	e.sessions.peak = len(e.sessions.byID)
}

// ServeHTTP serves the Acumatica endpoints and the control API.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mux.ServeHTTP(w, r)
}
