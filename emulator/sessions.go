package emulator

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"time"
)

// What opened a session, as reported in SessionInfo.OpenedBy.
const (
	openedByPassword = "password"
	openedByRefresh  = "refresh"
	openedByBearer   = "bearer"
	openedByCookie   = "cookie"
)

// Why a session closed, the keys of Stats.SessionsClosed.
const (
	closedBySignOut     = "sign_out"
	closedByIdleTimeout = "idle_timeout"
	closedByTokenExpiry = "token_expiry"
	closedByRestart     = "restart"
)

// session is one open API session, the unit that takes a licence seat.
type session struct {
	id       string
	seq      uint64 // opening order
	user     string
	clientID string
	scope    string
	openedBy string
	openedAt time.Time
	lastUsed time.Time
	// expiresAt closes the session at the access token's expiry for scope
	// "api" alone. Zero for every other kind of session.
	expiresAt time.Time
	// grant is the OAuth grant the session belongs to, nil for a cookie
	// sign-in.
	grant *grant
	// sessionCookie is the ASP.NET_SessionId value for cookie sign-ins and
	// api:concurrent_access sessions, empty otherwise.
	sessionCookie string
	// authCookie is the .ASPXAUTH value of a cookie sign-in.
	authCookie string
	closed     bool
}

// deadline returns when the session closes unless it is used before then.
func (s *session) deadline(idle time.Duration) time.Time {
	d := s.lastUsed.Add(idle)
	if !s.expiresAt.IsZero() && s.expiresAt.Before(d) {
		return s.expiresAt
	}
	return d
}

func (s *session) info(idle time.Duration) SessionInfo {
	return SessionInfo{
		ID:         s.id,
		User:       s.user,
		ClientID:   s.clientID,
		Scope:      s.scope,
		OpenedBy:   s.openedBy,
		OpenedAt:   s.openedAt,
		LastUsedAt: s.lastUsed,
		ExpiresAt:  s.deadline(idle),
	}
}

// sessionStore indexes the open sessions. Closed sessions are removed from
// every index.
type sessionStore struct {
	byID            map[string]*session
	bySessionCookie map[string]*session
	byAuthCookie    map[string]*session
	perUser         map[string]int // open sessions by configured user name
	lastSeq         uint64
	peak            int
	// nextDeadline is no later than the earliest session deadline, so no
	// session can expire before it. Zero means unknown.
	nextDeadline time.Time
}

func newSessionStore() sessionStore {
	return sessionStore{
		byID:            map[string]*session{},
		bySessionCookie: map[string]*session{},
		byAuthCookie:    map[string]*session{},
		perUser:         map[string]int{},
	}
}

// sessionSpec describes a session to open.
type sessionSpec struct {
	user, clientID, scope, openedBy string
	grant                           *grant
	expiresAt                       time.Time
	withSessionCookie               bool
	withAuthCookie                  bool
}

// openSessionLocked takes a seat and opens a session, or returns the refusal
// reason ("login_limit" or "user_limit") and opens nothing. The check and the
// opening happen under e.mu, so the seat count never passes the limit.
func (e *Emulator) openSessionLocked(now time.Time, spec sessionSpec) (*session, string) {
	if reason := e.checkSeatLocked(spec.user, spec.clientID); reason != "" {
		return nil, reason
	}
	st := &e.sessions
	st.lastSeq++
	s := &session{
		id: newSessionID(), seq: st.lastSeq,
		user: spec.user, clientID: spec.clientID, scope: spec.scope, openedBy: spec.openedBy,
		openedAt: now, lastUsed: now, expiresAt: spec.expiresAt, grant: spec.grant,
	}
	if spec.withSessionCookie {
		s.sessionCookie = newSessionCookie()
		st.bySessionCookie[s.sessionCookie] = s
	}
	if spec.withAuthCookie {
		s.authCookie = newAuthCookie()
		st.byAuthCookie[s.authCookie] = s
	}
	st.byID[s.id] = s
	st.perUser[s.user]++
	st.peak = max(st.peak, len(st.byID))
	if d := s.deadline(e.cfg.IdleTimeout); st.nextDeadline.IsZero() || d.Before(st.nextDeadline) {
		st.nextDeadline = d
	}
	e.stats.sessionsOpened++
	e.log.Debug("session opened", "session_id", s.id, "user", s.user, "client_id", s.clientID,
		"opened_by", s.openedBy, "open_sessions", len(st.byID))
	return s, ""
}

// closeSessionLocked frees the seat of s. Closing a closed session does
// nothing.
func (e *Emulator) closeSessionLocked(s *session, reason string) {
	if s.closed {
		return
	}
	s.closed = true
	st := &e.sessions
	delete(st.byID, s.id)
	delete(st.bySessionCookie, s.sessionCookie)
	delete(st.byAuthCookie, s.authCookie)
	if st.perUser[s.user]--; st.perUser[s.user] <= 0 {
		delete(st.perUser, s.user)
	}
	e.stats.closed[reason]++
	e.log.Debug("session closed", "session_id", s.id, "user", s.user, "reason", reason,
		"open_sessions", len(st.byID))
}

// touchLocked records a use of s, which restarts its idle timeout.
func touchLocked(s *session, now time.Time) {
	s.lastUsed = now
}

// expireSessionsLocked closes the sessions whose idle timeout or token
// expiry has passed. It scans only when the earliest deadline has come.
func (e *Emulator) expireSessionsLocked(now time.Time) {
	st := &e.sessions
	if !st.nextDeadline.IsZero() && now.Before(st.nextDeadline) {
		return
	}
	st.nextDeadline = time.Time{}
	for _, s := range st.byID {
		d := s.deadline(e.cfg.IdleTimeout)
		if now.Before(d) {
			if st.nextDeadline.IsZero() || d.Before(st.nextDeadline) {
				st.nextDeadline = d
			}
			continue
		}
		// The deadline is the earlier of the idle deadline and the token
		// expiry, so comparing it with the expiry shows which came first.
		reason := closedByIdleTimeout
		if d.Equal(s.expiresAt) {
			reason = closedByTokenExpiry
		}
		e.closeSessionLocked(s, reason)
	}
}

// liveSession returns s if it is open, nil otherwise.
func liveSession(s *session) *session {
	if s == nil || s.closed {
		return nil
	}
	return s
}

// newSessionID returns a random session identifier for logs and the control
// API. It is not a credential.
func newSessionID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newSessionCookie returns a value shaped like an ASP.NET_SessionId: 24
// lower-case base32 characters.
func newSessionCookie() string {
	b := make([]byte, 15)
	rand.Read(b)
	return strings.ToLower(base32.StdEncoding.EncodeToString(b))
}

// newAuthCookie returns a random upper-case hex .ASPXAUTH value.
func newAuthCookie() string {
	b := make([]byte, 48)
	rand.Read(b)
	return strings.ToUpper(hex.EncodeToString(b))
}

// newOpaqueToken returns a random 256-bit token for access and refresh
// tokens.
func newOpaqueToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
