package acumatica

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxDetailBytes is the maximum length of Error.Detail.
const maxDetailBytes = 200

// loginLimitPattern matches the texts Acumatica and IIS use when a sign-in is
// rejected for lack of an API seat: the licence limit ("API Login Limit",
// "Maximum Number of Web Services API Users"), the per-user limit ("The number
// of concurrent API logins ... has been reached") and the licence check that
// raises them (PXLicensePolicy.CheckApiUsersLimits) in a stack trace. A bare
// "you have exceeded" is left out on purpose because business errors such as
// "you have exceeded the credit limit" use it too.
var loginLimitPattern = regexp.MustCompile(`(?i)api login limit|concurrent api logins?|checkapiuserslimits|` +
	`maximum number of .{0,40}(users?|logins?|sessions?)|licen[sc]e limit|number of .{0,20}licen[sc]e`)

// credentialsPattern matches sign-in rejections that a retry cannot fix:
// "Invalid credentials", "Invalid user name", a locked account, a user who
// is not allowed to sign in or to use the API, and a pending password change.
var credentialsPattern = regexp.MustCompile(`(?i)invalid credentials|invalid user ?name|\blocked\b|` +
	`not allowed to log ?in|cannot send api requests|change your password`)

// jwtPattern matches a JSON Web Token: base64url segments joined by dots,
// the first of which encodes a JSON object and so starts with "eyJ".
var jwtPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]*)?`)

// tokenLikePattern matches long runs of token characters, such as opaque
// access and refresh tokens. sanitizeDetail keeps the runs without a digit,
// which are words, and GUIDs, which are identifiers.
var tokenLikePattern = regexp.MustCompile(`[A-Za-z0-9_\-+/=~]{32,}`)

// guidPattern matches a GUID, which is an identifier (for example the first
// part of a client ID) and not a secret.
var guidPattern = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)

// Classify turns an HTTP response from Acumatica into an *Error. It returns
// nil for a 2xx status.
//
// The response text decides first and the status second:
//   - A login-limit text at any status gives ErrLoginLimit.
//   - The OAuth error invalid_client or unauthorized_client gives
//     ErrInvalidCredentials. The OAuth error invalid_grant gives
//     ErrInvalidGrant on OpRefresh and ErrInvalidCredentials otherwise.
//   - A credentials text ("Invalid credentials", a locked account) gives
//     ErrInvalidCredentials.
//   - A 401 on OpSignOut gives ErrTokenRejected: the session may still be
//     open, so its seat is not free.
//   - Then 429 gives ErrThrottled, 401 gives ErrInvalidCredentials, 408 and
//     5xx give ErrUnavailable, 411 on OpSignOut gives ErrUnexpected with a
//     Detail about the missing Content-Length, and anything else gives
//     ErrUnexpected.
//
// A 3xx redirect to /Frames/Error.aspx is classified by the message in its
// Location. Classify reads Retry-After relative to time.Now.
func Classify(op string, status int, header http.Header, body []byte) error {
	if e := classify(op, status, header, body, time.Now); e != nil {
		return e
	}
	return nil
}

// classify is Classify with an injected clock, secrets to remove from
// Detail and a concrete result type.
func classify(op string, status int, header http.Header, body []byte, now func() time.Time, secrets ...string) *Error {
	if status >= 200 && status < 300 {
		return nil
	}
	return classifyFailure(op, status, header, body, now, secrets...)
}

// classifyFailure classifies a response known to be a failure, whatever its
// status. The token endpoint can return an OAuth error with status 200, and
// the caller handles that case through this function.
func classifyFailure(op string, status int, header http.Header, body []byte, now func() time.Time, secrets ...string) *Error {
	r := parseResponse(status, header, body)
	e := &Error{
		Op:         op,
		StatusCode: status,
		RetryAfter: parseRetryAfter(header.Get("Retry-After"), now),
		Detail:     sanitizeDetail(r.detail, secrets...),
	}
	messages := r.messages()

	switch {
	case loginLimitPattern.MatchString(string(body)) || loginLimitPattern.MatchString(messages):
		e.Kind = ErrLoginLimit
	case op == OpSignOut && status == http.StatusUnauthorized:
		e.Kind = ErrTokenRejected
	case op == OpSignOut && status == http.StatusLengthRequired:
		e.Kind = ErrUnexpected
		e.Detail = "the server requires a Content-Length header, so the session was not signed out"
	case r.code == "invalid_client" || r.code == "unauthorized_client":
		e.Kind = ErrInvalidCredentials
	case r.code == "invalid_grant" && op == OpRefresh:
		e.Kind = ErrInvalidGrant
	case r.code == "invalid_grant":
		e.Kind = ErrInvalidCredentials
	case credentialsPattern.MatchString(messages):
		e.Kind = ErrInvalidCredentials
	case status == http.StatusTooManyRequests:
		e.Kind = ErrThrottled
	case status == http.StatusUnauthorized:
		e.Kind = ErrInvalidCredentials
	case status == http.StatusRequestTimeout || status >= 500:
		e.Kind = ErrUnavailable
	default:
		e.Kind = ErrUnexpected
	}
	return e
}

// response holds the parts of an error response that classification reads.
type response struct {
	code        string // OAuth "error"
	description string // OAuth "error_description"
	message     string // exceptionMessage or message of an Acumatica error envelope
	text        string // a plain-text body, or the message of an error page redirect
	detail      string // the text for Error.Detail, before sanitizing
}

// messages returns the human-readable texts of the response, without stack
// traces, for matching credential errors.
func (r *response) messages() string {
	return strings.Join([]string{r.code, r.description, r.message, r.text}, "\n")
}

// parseResponse extracts the OAuth error fields, the Acumatica exception
// message, a plain-text body or the message of a redirect to the error page.
func parseResponse(status int, header http.Header, body []byte) response {
	var r response
	if status >= 300 && status < 400 {
		if msg, ok := errorPageMessage(header.Get("Location")); ok {
			r.text = msg
			r.detail = msg
			return r
		}
		if target := redirectTarget(header.Get("Location")); target != "" {
			r.detail = "redirected to " + target
		}
		return r
	}

	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var envelope struct {
			Error            string `json:"error"`
			ErrorDescription string `json:"error_description"`
			ExceptionMessage string `json:"exceptionMessage"`
			Message          string `json:"message"`
		}
		if json.Unmarshal(trimmed, &envelope) == nil {
			r.code = envelope.Error
			r.description = envelope.ErrorDescription
			r.message = envelope.ExceptionMessage
			if r.message == "" {
				r.message = envelope.Message
			}
			switch {
			case r.code != "" && r.description != "":
				r.detail = r.code + ": " + r.description
			case r.code != "":
				r.detail = r.code
			default:
				r.detail = r.message
			}
			return r
		}
	}

	if isPlainText(header, trimmed) {
		r.text = string(trimmed)
		r.detail = r.text
	}
	return r
}

// isPlainText reports whether body is text worth showing: not HTML, not
// binary and not labelled as HTML or JSON.
func isPlainText(header http.Header, body []byte) bool {
	if len(body) == 0 || body[0] == '<' || !utf8.Valid(body) {
		return false
	}
	mediaType, _, err := mime.ParseMediaType(header.Get("Content-Type"))
	if err != nil {
		// A missing or malformed Content-Type leaves the decision to the body.
		return true
	}
	return mediaType == "text/plain"
}

// errorPageMessage returns the "message" query parameter of a redirect to
// Acumatica's error page, /Frames/Error.aspx.
func errorPageMessage(location string) (string, bool) {
	u, err := url.Parse(location)
	if err != nil {
		return "", false
	}
	if !strings.HasSuffix(strings.ToLower(u.Path), "/frames/error.aspx") {
		return "", false
	}
	for key, values := range u.Query() {
		if strings.EqualFold(key, "message") && len(values) > 0 && values[0] != "" {
			return values[0], true
		}
	}
	return "", false
}

// redirectTarget returns the redirect location without its query and
// fragment, which may carry codes or tokens.
func redirectTarget(location string) string {
	u, err := url.Parse(location)
	if err != nil {
		return ""
	}
	u.RawQuery = ""
	u.Fragment = ""
	u.User = nil
	return u.String()
}

// parseRetryAfter reads a Retry-After value given in seconds or as an HTTP
// date. It returns 0 for a missing, invalid or past value and caps the delay
// at one day.
func parseRetryAfter(value string, now func() time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0
	}
	var d time.Duration
	if seconds, err := strconv.ParseInt(value, 10, 64); err == nil {
		d = time.Duration(min(max(seconds, 0), maxRetryAfterSeconds)) * time.Second
	} else if at, err := http.ParseTime(value); err == nil {
		d = at.Sub(now())
	}
	return min(max(d, 0), maxRetryAfterSeconds*time.Second)
}

// maxRetryAfterSeconds caps Retry-After at one day, so that a broken header
// cannot make a caller wait for years.
const maxRetryAfterSeconds = 24 * 60 * 60

// sanitizeDetail removes the given secrets and token-like strings, collapses
// white space and trims the text to maxDetailBytes. Secrets are removed
// before trimming, so that no prefix of a secret can remain at the cut.
func sanitizeDetail(text string, secrets ...string) string {
	for _, secret := range secrets {
		if secret != "" {
			text = strings.ReplaceAll(text, secret, "[redacted]")
		}
	}
	text = strings.Join(strings.Fields(text), " ")
	text = jwtPattern.ReplaceAllString(text, "[redacted]")
	text = tokenLikePattern.ReplaceAllStringFunc(text, func(s string) string {
		if guidPattern.MatchString(s) || !strings.ContainsAny(s, "0123456789") {
			return s
		}
		return "[redacted]"
	})
	return truncateUTF8(text, maxDetailBytes)
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
