package emulator

import (
	"slices"
	"strings"
	"time"
)

// Scopes that the ROPC flow grants.
const (
	scopeAPI              = "api"
	scopeOfflineAccess    = "offline_access"
	scopeConcurrentAccess = "api:concurrent_access"
)

// sessionMode is the mapping of a grant's bearer tokens to sessions.
type sessionMode int

const (
	// modePerToken: scope "api" alone opens one session per access token,
	// closed when the token expires.
	modePerToken sessionMode = iota
	// modePerGrant: scope "api offline_access" opens one session per grant
	// that every access token of the grant shares.
	modePerGrant
	// modePerCookie: scope "api:concurrent_access" opens one session per
	// ASP.NET_SessionId cookie.
	modePerCookie
)

// grant is one password grant and the chain of refresh grants that follow it.
type grant struct {
	user     string
	clientID string
	scope    string
	mode     sessionMode
	// session is the grant's session in modePerToken and modePerGrant. It
	// may be closed; a bearer request then opens a new one.
	session *session
	// refreshToken is the one refresh token that is still valid, empty
	// without offline_access or after revocation.
	refreshToken     string
	refreshExpiresAt time.Time
	// accessToken is the latest access token, revoked at the next refresh
	// when Config.RefreshRevokesAccessToken is set.
	accessToken string
}

type accessToken struct {
	grant     *grant
	expiresAt time.Time
}

// tokenStore holds the valid tokens. A token that expires, is revoked or,
// for a refresh token, is used, is deleted, so every lookup miss means
// "not valid".
type tokenStore struct {
	access  map[string]*accessToken
	refresh map[string]*grant
	// nextDeadline is no later than the earliest token expiry; zero means
	// unknown.
	nextDeadline time.Time
}

func newTokenStore() tokenStore {
	return tokenStore{access: map[string]*accessToken{}, refresh: map[string]*grant{}}
}

func (ts *tokenStore) lowerDeadline(t time.Time) {
	if ts.nextDeadline.IsZero() || t.Before(ts.nextDeadline) {
		ts.nextDeadline = t
	}
}

// expire deletes the tokens whose expiry has passed. It scans only when the
// earliest expiry has come.
func (ts *tokenStore) expire(now time.Time) {
	if !ts.nextDeadline.IsZero() && now.Before(ts.nextDeadline) {
		return
	}
	ts.nextDeadline = time.Time{}
	for tok, at := range ts.access {
		if !now.Before(at.expiresAt) {
			delete(ts.access, tok)
		} else {
			ts.lowerDeadline(at.expiresAt)
		}
	}
	for tok, g := range ts.refresh {
		if !now.Before(g.refreshExpiresAt) {
			delete(ts.refresh, tok)
		} else {
			ts.lowerDeadline(g.refreshExpiresAt)
		}
	}
}

// validAccess returns the grant of a valid access token, or nil.
func (ts *tokenStore) validAccess(tok string, now time.Time) *accessToken {
	at := ts.access[tok]
	if at == nil || !now.Before(at.expiresAt) {
		return nil
	}
	return at
}

// scopeRequest is a parsed scope parameter.
type scopeRequest struct {
	scope   string // the granted scope, space-separated, in request order
	mode    sessionMode
	offline bool
}

// parseScope validates a space-separated scope list. It returns false for an
// empty list, an unknown scope, or a list with neither "api" nor
// "api:concurrent_access".
func parseScope(raw string) (scopeRequest, bool) {
	var names []string
	for _, s := range strings.Fields(raw) {
		switch s {
		case scopeAPI, scopeOfflineAccess, scopeConcurrentAccess:
		default:
			return scopeRequest{}, false
		}
		if !slices.Contains(names, s) {
			names = append(names, s)
		}
	}
	req := scopeRequest{scope: strings.Join(names, " "), offline: slices.Contains(names, scopeOfflineAccess)}
	switch {
	case slices.Contains(names, scopeConcurrentAccess):
		req.mode = modePerCookie
	case !slices.Contains(names, scopeAPI):
		return scopeRequest{}, false
	case req.offline:
		req.mode = modePerGrant
	default:
		req.mode = modePerToken
	}
	return req, true
}

// subsetOf reports whether every scope in raw is in granted.
func subsetOf(raw, granted string) bool {
	have := strings.Fields(granted)
	for _, s := range strings.Fields(raw) {
		if !slices.Contains(have, s) {
			return false
		}
	}
	return true
}

// tokenResult is the outcome of a successful grant: the tokens for the client.
type tokenResult struct {
	accessToken  string
	refreshToken string
	scope        string
}

// grantFailure is the reason a grant was rejected, a key of
// Stats.RefusedSignIns.
type grantFailure string

// passwordGrant signs user in for clientID. It opens the grant's session
// unless the scope keeps sessions in cookies, in which case it only checks
// that a seat is free.
// NOTE: that check under api:concurrent_access is an assumption. Acumatica
// documents the licence check at sign-in but not for this scope.
func (e *Emulator) passwordGrant(user User, clientID string, req scopeRequest) (tokenResult, grantFailure) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.expireLocked()
	g := &grant{user: user.Name, clientID: clientID, scope: req.scope, mode: req.mode}
	expiresAt := now.Add(e.cfg.TokenLifetime)
	if req.mode == modePerCookie {
		if reason := e.checkSeatLocked(user.Name, clientID); reason != "" {
			return tokenResult{}, grantFailure(reason)
		}
	} else {
		spec := sessionSpec{user: user.Name, clientID: clientID, scope: req.scope,
			openedBy: openedByPassword, grant: g}
		if req.mode == modePerToken {
			spec.expiresAt = expiresAt
		}
		s, reason := e.openSessionLocked(now, spec)
		if reason != "" {
			return tokenResult{}, grantFailure(reason)
		}
		g.session = s
	}
	if req.offline {
		g.refreshExpiresAt = now.Add(e.cfg.RefreshTokenLifetime)
		e.rotateRefreshLocked(g)
	}
	e.stats.signIns++
	e.log.Info("password grant", "user", user.Name, "client_id", clientID, "scope", req.scope)
	return e.issueAccessLocked(g, expiresAt), ""
}

// refreshGrant redeems a refresh token of clientID. The grant keeps its
// session while it is open; if it has closed, the refresh opens a new one
// and needs a free seat. A refused refresh leaves the refresh token valid.
func (e *Emulator) refreshGrant(clientID, token, scope string) (tokenResult, grantFailure) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.expireLocked()
	g := e.tokens.refresh[token]
	if g == nil || g.clientID != clientID || !now.Before(g.refreshExpiresAt) {
		return tokenResult{}, refusedInvalidGrant
	}
	if scope != "" && !subsetOf(scope, g.scope) {
		return tokenResult{}, refusedInvalidScope
	}
	if g.mode == modePerGrant {
		if s := liveSession(g.session); s != nil {
			touchLocked(s, now)
		} else {
			spec := sessionSpec{user: g.user, clientID: g.clientID, scope: g.scope,
				openedBy: openedByRefresh, grant: g}
			s, reason := e.openSessionLocked(now, spec)
			if reason != "" {
				return tokenResult{}, grantFailure(reason)
			}
			g.session = s
		}
	}
	e.rotateRefreshLocked(g)
	if e.cfg.RefreshRevokesAccessToken {
		delete(e.tokens.access, g.accessToken)
	}
	e.stats.refreshes++
	e.log.Debug("refresh grant", "user", g.user, "client_id", g.clientID)
	return e.issueAccessLocked(g, now.Add(e.cfg.TokenLifetime)), ""
}

// rotateRefreshLocked replaces the grant's refresh token with a new one.
func (e *Emulator) rotateRefreshLocked(g *grant) {
	delete(e.tokens.refresh, g.refreshToken)
	g.refreshToken = newOpaqueToken()
	e.tokens.refresh[g.refreshToken] = g
	e.tokens.lowerDeadline(g.refreshExpiresAt)
}

func (e *Emulator) issueAccessLocked(g *grant, expiresAt time.Time) tokenResult {
	tok := newOpaqueToken()
	e.tokens.access[tok] = &accessToken{grant: g, expiresAt: expiresAt}
	e.tokens.lowerDeadline(expiresAt)
	g.accessToken = tok
	return tokenResult{accessToken: tok, refreshToken: g.refreshToken, scope: g.scope}
}

// revoke deletes token if it is an access or refresh token of clientID, and
// reports whether it did. Revocation closes no session.
func (e *Emulator) revoke(clientID, token string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expireLocked()
	if at := e.tokens.access[token]; at != nil && at.grant.clientID == clientID {
		delete(e.tokens.access, token)
		return true
	}
	if g := e.tokens.refresh[token]; g != nil && g.clientID == clientID {
		delete(e.tokens.refresh, token)
		g.refreshToken = ""
		return true
	}
	return false
}

// bearerResult is the session that a bearer request runs in.
type bearerResult struct {
	session *session
	// newSessionCookie is an ASP.NET_SessionId to set on the response when
	// the request opened an api:concurrent_access session.
	newSessionCookie string
}

// bearerSessionLocked returns the session for a request with a valid access
// token, opening one if the token's session is closed or, under
// api:concurrent_access, if sessionCookie names none of the grant's
// sessions. It returns ok false for an invalid token, or the refusal reason
// when no seat is free.
func (e *Emulator) bearerSessionLocked(now time.Time, token, sessionCookie string) (bearerResult, bool, string) {
	at := e.tokens.validAccess(token, now)
	if at == nil {
		return bearerResult{}, false, ""
	}
	g := at.grant
	if g.mode == modePerCookie {
		if s := e.sessions.bySessionCookie[sessionCookie]; s != nil && s.grant == g {
			touchLocked(s, now)
			return bearerResult{session: s}, true, ""
		}
	} else if s := liveSession(g.session); s != nil {
		touchLocked(s, now)
		return bearerResult{session: s}, true, ""
	}
	spec := sessionSpec{user: g.user, clientID: g.clientID, scope: g.scope, openedBy: openedByBearer,
		grant: g, withSessionCookie: g.mode == modePerCookie}
	if g.mode == modePerToken {
		spec.expiresAt = at.expiresAt
	}
	s, reason := e.openSessionLocked(now, spec)
	if reason != "" {
		return bearerResult{}, true, reason
	}
	if g.mode != modePerCookie {
		g.session = s
	}
	return bearerResult{session: s, newSessionCookie: s.sessionCookie}, true, ""
}
