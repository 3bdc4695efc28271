package emulator

import (
	"cmp"
	"encoding/json"
	"mime"
	"net/http"
	"strings"
	"time"
)

// Cookie names of an Acumatica session.
const (
	cookieAuth      = ".ASPXAUTH"
	cookieSessionID = "ASP.NET_SessionId"
)

// credentials is the body of POST /entity/auth/login.
type credentials struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	Tenant   string `json:"tenant"`
	Company  string `json:"company"`
	Branch   string `json:"branch"`
	Locale   string `json:"locale"`
}

// handleLogin signs in with a user name and password and opens one session
// per successful call, identified by the .ASPXAUTH and ASP.NET_SessionId
// cookies set on the 204 response.
func (e *Emulator) handleLogin(w http.ResponseWriter, r *http.Request) {
	creds, ok := readCredentials(w, r)
	if !ok {
		e.countRefusal(refusedInvalidRequest, "endpoint", EndpointLogin)
		return
	}
	if creds.Tenant != "" && creds.Company != "" {
		e.countRefusal(refusedInvalidRequest, "endpoint", EndpointLogin, "error", "both tenant and company")
		writePXError(w, http.StatusInternalServerError,
			pxException("company and tenant parameters can not be specified at the same time"))
		return
	}
	user, ok := e.checkPassword(creds.Name, creds.Password)
	if !ok {
		e.countRefusal(refusedInvalidCredentials, "endpoint", EndpointLogin, "user", creds.Name)
		px := pxException(msgInvalidCredentials)
		px.StackTrace = stackLogin
		writePXError(w, http.StatusInternalServerError, px)
		return
	}
	s, reason := e.cookieSignIn(user)
	if reason != "" {
		writePXError(w, http.StatusInternalServerError, loginLimitError(reason))
		return
	}
	tenant := cmp.Or(creds.Tenant, creds.Company, DemoTenant)
	setSessionCookies(w, r, s, tenant)
	w.WriteHeader(http.StatusNoContent)
}

func (e *Emulator) cookieSignIn(user User) (*session, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.expireLocked()
	spec := sessionSpec{user: user.Name, openedBy: openedByCookie, withSessionCookie: true, withAuthCookie: true}
	s, reason := e.openSessionLocked(now, spec)
	if reason == "" {
		e.stats.signIns++
		e.log.Info("cookie sign-in", "user", user.Name, "session_id", s.id)
	}
	return s, reason
}

// readCredentials decodes a JSON or form body, or writes a 400 response.
func readCredentials(w http.ResponseWriter, r *http.Request) (credentials, bool) {
	var c credentials
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "application/x-www-form-urlencoded" {
		if err := r.ParseForm(); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": "The request is invalid: the form body could not be parsed."})
			return c, false
		}
		f := r.PostForm
		c = credentials{Name: f.Get("name"), Password: f.Get("password"), Tenant: f.Get("tenant"),
			Company: f.Get("company"), Branch: f.Get("branch"), Locale: f.Get("locale")}
		return c, true
	}
	if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{
			"message": "The request is invalid: the body must be a JSON object with name, password and tenant."})
		return c, false
	}
	return c, true
}

// setSessionCookies sets the cookies of a cookie sign-in, as Acumatica
// does: the two that identify the session and their companions.
func setSessionCookies(w http.ResponseWriter, r *http.Request, s *session, tenant string) {
	secure := r.TLS != nil
	http.SetCookie(w, &http.Cookie{Name: cookieAuth, Value: s.authCookie, Path: "/", HttpOnly: true, Secure: secure})
	http.SetCookie(w, &http.Cookie{Name: cookieSessionID, Value: s.sessionCookie, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: secure})
	http.SetCookie(w, &http.Cookie{Name: "CompanyID", Value: tenant, Path: "/"})
	http.SetCookie(w, &http.Cookie{Name: "Locale", Value: "Culture=en-US&TimeZone=GMTM0800A", Path: "/"})
	http.SetCookie(w, &http.Cookie{Name: "UserBranch", Value: "1", Path: "/"})
	http.SetCookie(w, &http.Cookie{Name: "requestid", Value: newSessionID(), Path: "/"})
}

// handleLogout closes the session named by the bearer token, by the
// api:concurrent_access session cookie that goes with it, and by the
// .ASPXAUTH cookie. A request without a Content-Length header gets 411 and
// closes nothing, as IIS does. An invalid bearer token gets 401. The bearer
// token stays valid.
func (e *Emulator) handleLogout(w http.ResponseWriter, r *http.Request) {
	if len(r.Header.Values("Content-Length")) == 0 {
		e.log.Debug("sign-out rejected", "error", "Content-Length header missing")
		writeText(w, http.StatusLengthRequired, "Length Required")
		return
	}
	token, hasAuth, ok := bearerToken(r)
	if hasAuth && !ok {
		e.log.Debug("sign-out rejected", "error", "Authorization header is not a bearer token")
		writeUnauthorized(w)
		return
	}
	closed, ok := e.signOut(token, cookieValue(r, cookieSessionID), cookieValue(r, cookieAuth))
	if !ok {
		e.log.Debug("sign-out rejected", "error", "bearer token invalid or expired")
		writeUnauthorized(w)
		return
	}
	e.log.Debug("sign-out", "closed_sessions", closed)
	expired := time.Unix(0, 0)
	http.SetCookie(w, &http.Cookie{Name: cookieAuth, Path: "/", Expires: expired, MaxAge: -1})
	http.SetCookie(w, &http.Cookie{Name: cookieSessionID, Path: "/", Expires: expired, MaxAge: -1})
	w.WriteHeader(http.StatusNoContent)
}

// signOut closes the sessions that the credentials name and returns how
// many it closed. It returns false when token is set but not valid.
func (e *Emulator) signOut(token, sessionCookie, authCookie string) (int, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.expireLocked()
	var targets []*session
	if token != "" {
		at := e.tokens.validAccess(token, now)
		if at == nil {
			return 0, false
		}
		g := at.grant
		if g.mode == modePerCookie {
			if s := e.sessions.bySessionCookie[sessionCookie]; s != nil && s.grant == g {
				targets = append(targets, s)
			}
		} else if s := liveSession(g.session); s != nil {
			targets = append(targets, s)
		}
	}
	if s := e.sessions.byAuthCookie[authCookie]; s != nil && authCookie != "" {
		targets = append(targets, s)
	}
	for _, s := range targets {
		e.closeSessionLocked(s, closedBySignOut)
	}
	e.stats.signOuts++
	return len(targets), true
}

// bearerToken returns the token of an "Authorization: Bearer" header.
// hasAuth reports whether any Authorization header was sent; ok reports
// whether it was a non-empty bearer token.
func bearerToken(r *http.Request) (token string, hasAuth, ok bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false, false
	}
	scheme, token, found := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	if !found || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", true, false
	}
	return token, true, true
}

func cookieValue(r *http.Request, name string) string {
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return c.Value
}
