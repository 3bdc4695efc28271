package emulator

import (
	"crypto/subtle"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// handleDiscovery serves the OpenID Provider configuration, with endpoint
// addresses built from the request's scheme and host.
func (e *Emulator) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	issuer := scheme + "://" + r.Host + "/identity"
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                issuer,
		"token_endpoint":                        issuer + "/connect/token",
		"revocation_endpoint":                   issuer + "/connect/revocation",
		"scopes_supported":                      []string{scopeAPI, scopeOfflineAccess, scopeConcurrentAccess},
		"grant_types_supported":                 []string{"password", "refresh_token"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "client_secret_basic"},
	})
}

// handleToken serves the password and refresh_token grants.
func (e *Emulator) handleToken(w http.ResponseWriter, r *http.Request) {
	form, ok := readForm(w, r)
	if !ok {
		e.countRefusal(refusedInvalidRequest, "endpoint", EndpointToken)
		return
	}
	client, ok := e.authenticateClient(r, form)
	if !ok {
		e.countRefusal(refusedInvalidClient, "client_id", clientIDOf(r, form))
		writeOAuthError(w, http.StatusBadRequest, "invalid_client", "")
		return
	}
	switch gt := form.Get("grant_type"); gt {
	case "password":
		e.tokenByPassword(w, form, client)
	case "refresh_token":
		e.tokenByRefresh(w, form, client)
	case "":
		e.countRefusal(refusedInvalidRequest, "client_id", client.ID, "error", "grant_type is missing")
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "grant_type is missing")
	default:
		e.countRefusal(refusedUnsupportedGrant, "client_id", client.ID, "grant_type", gt)
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
	}
}

func (e *Emulator) tokenByPassword(w http.ResponseWriter, form url.Values, client Client) {
	req, ok := parseScope(form.Get("scope"))
	if !ok {
		e.countRefusal(refusedInvalidScope, "client_id", client.ID, "scope", form.Get("scope"))
		writeOAuthError(w, http.StatusBadRequest, "invalid_scope", "")
		return
	}
	user, ok := e.checkPassword(form.Get("username"), form.Get("password"))
	if !ok {
		e.countRefusal(refusedInvalidCredentials, "client_id", client.ID, "user", form.Get("username"))
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "invalid_username_or_password")
		return
	}
	res, fail := e.passwordGrant(user, client.ID, req)
	if fail != "" {
		e.writeGrantFailure(w, fail)
		return
	}
	e.writeToken(w, res)
}

func (e *Emulator) tokenByRefresh(w http.ResponseWriter, form url.Values, client Client) {
	token := form.Get("refresh_token")
	if token == "" {
		e.countRefusal(refusedInvalidRequest, "client_id", client.ID, "error", "refresh_token is missing")
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "refresh_token is missing")
		return
	}
	res, fail := e.refreshGrant(client.ID, token, form.Get("scope"))
	if fail != "" {
		// checkSeatLocked already counted and logged seat refusals.
		if fail == refusedInvalidGrant || fail == refusedInvalidScope {
			e.countRefusal(string(fail), "client_id", client.ID, "grant_type", "refresh_token")
		}
		e.writeGrantFailure(w, fail)
		return
	}
	e.writeToken(w, res)
}

// writeGrantFailure writes the error response of a rejected grant. Seat refusals follow
// Config.TokenLoginLimitStyle.
func (e *Emulator) writeGrantFailure(w http.ResponseWriter, fail grantFailure) {
	switch fail {
	case refusedLoginLimit, refusedUserLimit:
		px := loginLimitError(string(fail))
		if e.cfg.TokenLoginLimitStyle == LoginLimitPXException {
			writePXError(w, http.StatusInternalServerError, px)
			return
		}
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", px.ExceptionMessage)
	case refusedInvalidScope:
		writeOAuthError(w, http.StatusBadRequest, "invalid_scope", "")
	default:
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "")
	}
}

// tokenResponse is the token endpoint's success body.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

func (e *Emulator) writeToken(w http.ResponseWriter, res tokenResult) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, tokenResponse{
		AccessToken:  res.accessToken,
		TokenType:    "Bearer",
		ExpiresIn:    int64(e.cfg.TokenLifetime.Seconds()),
		Scope:        res.scope,
		RefreshToken: res.refreshToken,
	})
}

// handleRevocation revokes an access or refresh token (RFC 7009). It
// returns 200 with an empty body for known and unknown tokens alike, and
// closes no session.
func (e *Emulator) handleRevocation(w http.ResponseWriter, r *http.Request) {
	form, ok := readForm(w, r)
	if !ok {
		return
	}
	client, ok := e.authenticateClient(r, form)
	if !ok {
		e.log.Debug("revocation rejected", "error", "invalid_client", "client_id", clientIDOf(r, form))
		writeOAuthError(w, http.StatusBadRequest, "invalid_client", "")
		return
	}
	token := form.Get("token")
	if token == "" {
		e.log.Debug("revocation rejected", "error", "token is missing", "client_id", client.ID)
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "token is missing")
		return
	}
	revoked := e.revoke(client.ID, token)
	e.mu.Lock()
	e.stats.revocations++
	e.mu.Unlock()
	e.log.Debug("revocation", "client_id", client.ID, "revoked", revoked)
	w.WriteHeader(http.StatusOK)
}

// readForm parses an application/x-www-form-urlencoded body, or writes
// 400 invalid_request and returns false.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request",
			"the body must be application/x-www-form-urlencoded")
		return nil, false
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "the form body could not be parsed")
		return nil, false
	}
	return r.PostForm, true
}

// authenticateClient checks the client ID and secret from HTTP Basic
// authentication, whose parts are form-encoded (RFC 6749 section 2.3.1), or
// else from the form.
func (e *Emulator) authenticateClient(r *http.Request, form url.Values) (Client, bool) {
	id, secret, basic := r.BasicAuth()
	if basic {
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return Client{}, false
		}
	} else {
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	c, ok := e.clients[id]
	if !ok || subtle.ConstantTimeCompare([]byte(c.Secret), []byte(secret)) != 1 {
		return Client{}, false
	}
	return c, true
}

// clientIDOf returns the client ID that a request presents, for logs.
func clientIDOf(r *http.Request, form url.Values) string {
	if id, _, ok := r.BasicAuth(); ok {
		return id
	}
	return form.Get("client_id")
}

// checkPassword returns the user with this name, matched case-insensitively,
// if the password is right.
func (e *Emulator) checkPassword(name, password string) (User, bool) {
	u, ok := e.users[strings.ToLower(name)]
	if !ok || subtle.ConstantTimeCompare([]byte(u.Password), []byte(password)) != 1 {
		return User{}, false
	}
	return u, true
}
