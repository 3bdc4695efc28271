package emulator

import (
	"html"
	"net/http"
	"net/url"
	"slices"
)

// value is a field of Acumatica's contract-based API, {"value": ...}.
type value struct {
	Value string `json:"value"`
}

// customer is a record of the Customer entity of endpoint Default/24.200.001.
type customer struct {
	ID            string         `json:"id"`
	RowNumber     int            `json:"rowNumber"`
	Note          value          `json:"note"`
	CustomerClass value          `json:"CustomerClass"`
	CustomerID    value          `json:"CustomerID"`
	CustomerName  value          `json:"CustomerName"`
	Status        value          `json:"Status"`
	Custom        map[string]any `json:"custom"`
}

// customers are the fixed records that the data endpoint returns.
var customers = []customer{
	newCustomer(1, "8b5f1c2e-0a4d-4e6b-9f3a-1d2c3b4a5e01", "AACUSTOMER", "Alta Ace", "DEFAULT"),
	newCustomer(2, "8b5f1c2e-0a4d-4e6b-9f3a-1d2c3b4a5e02", "ABARTENDE", "USA Bartending School", "DEFAULT"),
	newCustomer(3, "8b5f1c2e-0a4d-4e6b-9f3a-1d2c3b4a5e03", "ACTIVESTAF", "Active Staffing Services", "LOCAL"),
	newCustomer(4, "8b5f1c2e-0a4d-4e6b-9f3a-1d2c3b4a5e04", "ALLENJ", "Jack Allen", "INTL"),
}

func newCustomer(row int, id, cd, name, class string) customer {
	return customer{
		ID: id, RowNumber: row, CustomerClass: value{class},
		CustomerID: value{cd}, CustomerName: value{name}, Status: value{"Active"},
		Custom: map[string]any{},
	}
}

// handleCustomers lists the customers. It needs a live session.
func (e *Emulator) handleCustomers(w http.ResponseWriter, r *http.Request) {
	if !e.authorizeData(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, customers)
}

// handleCustomer returns the customer whose CustomerID is the last path
// segment, or 404. It needs a live session.
func (e *Emulator) handleCustomer(w http.ResponseWriter, r *http.Request) {
	if !e.authorizeData(w, r) {
		return
	}
	id := r.PathValue("id")
	i := slices.IndexFunc(customers, func(c customer) bool { return c.CustomerID.Value == id })
	if i < 0 {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "No entity satisfies the condition."})
		return
	}
	writeJSON(w, http.StatusOK, customers[i])
}

// dataAuth is the outcome of authorizing a data request.
type dataAuth struct {
	session          *session
	newSessionCookie string
	refusal          string // seat refusal reason when no seat was free
}

// authorizeData finds or opens the session of a data request, and returns
// true when the request may proceed. Otherwise it writes 401 for missing or
// invalid credentials, the "API Login Limit" envelope when a new session
// finds the licence full, or a redirect to the error page when the user's
// own cap is reached.
func (e *Emulator) authorizeData(w http.ResponseWriter, r *http.Request) bool {
	res, ok := e.dataSession(r)
	switch {
	case !ok:
		e.log.Debug("data request rejected", "error", "credentials missing or invalid", "path", r.URL.Path)
		writeUnauthorized(w)
		return false
	case res.refusal == refusedUserLimit:
		q := url.Values{"exceptionID": {"PX.Data.PXException"}, "message": {msgUserLimit}}
		http.Redirect(w, r, "/Frames/Error.aspx?"+q.Encode(), http.StatusFound)
		return false
	case res.refusal != "":
		writePXError(w, http.StatusInternalServerError, loginLimitError(res.refusal))
		return false
	}
	if res.newSessionCookie != "" {
		http.SetCookie(w, &http.Cookie{Name: cookieSessionID, Value: res.newSessionCookie, Path: "/",
			HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil})
	}
	return true
}

// dataSession resolves the credentials of r to a session: the bearer token
// if an Authorization header is present, else the .ASPXAUTH cookie. It
// returns false when the credentials are missing or invalid.
func (e *Emulator) dataSession(r *http.Request) (dataAuth, bool) {
	token, hasAuth, ok := bearerToken(r)
	if hasAuth && !ok {
		return dataAuth{}, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.expireLocked()
	if hasAuth {
		res, valid, reason := e.bearerSessionLocked(now, token, cookieValue(r, cookieSessionID))
		return dataAuth{session: res.session, newSessionCookie: res.newSessionCookie, refusal: reason}, valid
	}
	auth := cookieValue(r, cookieAuth)
	s := e.sessions.byAuthCookie[auth]
	if s == nil || auth == "" {
		return dataAuth{}, false
	}
	touchLocked(s, now)
	return dataAuth{session: s}, true
}

// handleErrorPage serves the page that the per-user cap redirects to.
func handleErrorPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	msg := r.URL.Query().Get("message")
	_, _ = w.Write([]byte("<!DOCTYPE html><html><head><title>Error</title></head><body><p>" +
		html.EscapeString(msg) + "</p></body></html>"))
}
