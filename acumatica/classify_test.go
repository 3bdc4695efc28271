package acumatica

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

const (
	envelopeLoginLimit = `{"message":"An error has occurred.","exceptionMessage":"API Login Limit",` +
		`"exceptionType":"PX.Data.PXException","stackTrace":"   at PX.Data.PXLogin.LoginUserImpl()"}`
	envelopeInvalidCredentials = `{"message":"An error has occurred.",` +
		`"exceptionMessage":"Error: Invalid credentials. Please try again.","exceptionType":"PX.Data.PXException",` +
		`"stackTrace":"   at PX.Data.PXLogin.PX.Data.IPXLogin.LoginUser(String& userName, String password)"}`
	envelopeGeneric = `{"message":"An error has occurred.","exceptionType":"System.NullReferenceException"}`
)

func jsonHeader() http.Header {
	return http.Header{"Content-Type": {"application/json; charset=utf-8"}}
}

func textHeader() http.Header {
	return http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
}

func htmlHeader() http.Header {
	return http.Header{"Content-Type": {"text/html"}}
}

func locationHeader(location string) http.Header {
	return http.Header{"Location": {location}, "Content-Type": {"text/html"}}
}

func TestClassifyTable(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name       string
		op         string
		status     int
		header     http.Header
		body       string
		wantKind   error // nil means Classify returns nil
		wantDetail string
	}{
		// Login limit: the text decides, whatever the status.
		{"limit in 500 envelope", OpPasswordGrant, 500, jsonHeader(), envelopeLoginLimit, ErrLoginLimit, "API Login Limit"},
		{"limit in invalid_grant", OpPasswordGrant, 400, jsonHeader(),
			`{"error":"invalid_grant","error_description":"API Login Limit"}`, ErrLoginLimit, "invalid_grant: API Login Limit"},
		{"limit in invalid_grant on refresh", OpRefresh, 400, jsonHeader(),
			`{"error":"invalid_grant","error_description":"API Login Limit"}`, ErrLoginLimit, "invalid_grant: API Login Limit"},
		{"limit in 429 text", OpPasswordGrant, 429, textHeader(), "API login limit exceeded", ErrLoginLimit, "API login limit exceeded"},
		{"limit in stack trace only", OpPasswordGrant, 500, jsonHeader(),
			`{"message":"An error has occurred.","stackTrace":"at PX.LicensePolicy.PXLicensePolicy.CheckApiUsersLimits(HttpContext context)"}`,
			ErrLoginLimit, "An error has occurred."},
		{"limit as licence maximum", OpPasswordGrant, 500, jsonHeader(),
			`{"exceptionMessage":"The Maximum Number of Web Services API Users has been reached."}`, ErrLoginLimit, "Maximum Number"},
		{"limit per user", OpPasswordGrant, 500, jsonHeader(),
			`{"exceptionMessage":"The number of concurrent API logins for this user has been reached."}`, ErrLoginLimit, "concurrent API logins"},
		{"limit as license limit", OpPasswordGrant, 500, textHeader(), "License limit exceeded", ErrLoginLimit, "License limit exceeded"},
		{"limit as number of licences", OpPasswordGrant, 500, textHeader(),
			"The number of available licences is used up", ErrLoginLimit, "available licences"},
		{"limit with escaped JSON text", OpPasswordGrant, 500, jsonHeader(),
			`{"exceptionMessage":"API\u0020Login\u0020Limit"}`, ErrLoginLimit, "API Login Limit"},
		{"limit in error page redirect", OpPasswordGrant, 302,
			locationHeader("/Instance/Frames/Error.aspx?exceptionID=42&message=The+number+of+concurrent+API+logins+for+user+admin+has+been+reached."),
			"", ErrLoginLimit, "The number of concurrent API logins for user admin has been reached."},

		// Business errors that mention exceeding something are not seat errors.
		{"credit limit is not a seat", OpPasswordGrant, 500, jsonHeader(),
			`{"exceptionMessage":"You have exceeded the credit limit of customer C0001."}`, ErrUnavailable, "credit limit"},
		{"exceeded text on 429 throttles", OpPasswordGrant, 429, textHeader(),
			"You have exceeded the request rate", ErrThrottled, "request rate"},

		// Throttling.
		{"429 without text", OpPasswordGrant, 429, textHeader(),
			"The custom error module does not recognize this error.", ErrThrottled, "custom error module"},
		{"429 JSON envelope", OpRefresh, 429, jsonHeader(),
			`{"message":"An error has occurred.","exceptionMessage":"The request was declined by the API request queue."}`,
			ErrThrottled, "declined"},

		// Credentials.
		{"wrong password grant", OpPasswordGrant, 400, jsonHeader(),
			`{"error":"invalid_grant","error_description":"invalid_username_or_password"}`,
			ErrInvalidCredentials, "invalid_grant: invalid_username_or_password"},
		{"wrong client secret", OpPasswordGrant, 400, jsonHeader(), `{"error":"invalid_client"}`, ErrInvalidCredentials, "invalid_client"},
		{"wrong client on refresh", OpRefresh, 400, jsonHeader(), `{"error":"invalid_client"}`, ErrInvalidCredentials, "invalid_client"},
		{"unauthorized client", OpPasswordGrant, 400, jsonHeader(), `{"error":"unauthorized_client"}`, ErrInvalidCredentials, "unauthorized_client"},
		{"401 at token endpoint", OpPasswordGrant, 401, jsonHeader(),
			`{"message":"Authorization has been denied for this request."}`, ErrInvalidCredentials, "Authorization has been denied"},
		{"invalid credentials envelope", OpPasswordGrant, 500, jsonHeader(), envelopeInvalidCredentials,
			ErrInvalidCredentials, "Error: Invalid credentials. Please try again."},
		{"locked account", OpPasswordGrant, 500, jsonHeader(),
			`{"exceptionMessage":"Your account is locked out. Please contact your system administrator."}`,
			ErrInvalidCredentials, "locked out"},
		{"password change pending", OpPasswordGrant, 500, jsonHeader(),
			`{"exceptionMessage":"You need to change your password. Sign in by using your browser to set a new password."}`,
			ErrInvalidCredentials, "change your password"},
		{"invalid credentials on error page", OpPasswordGrant, 302,
			locationHeader("https://erp.example.com/Instance/Frames/Error.aspx?message=Invalid%20credentials"),
			"", ErrInvalidCredentials, "Invalid credentials"},

		// Refresh tokens.
		{"spent refresh token", OpRefresh, 400, jsonHeader(), `{"error":"invalid_grant"}`, ErrInvalidGrant, "invalid_grant"},

		// Unavailable.
		{"generic 500 envelope", OpPasswordGrant, 500, jsonHeader(), envelopeGeneric, ErrUnavailable, "An error has occurred."},
		{"502 HTML", OpPasswordGrant, 502, htmlHeader(), "<html><body>Bad Gateway</body></html>", ErrUnavailable, ""},
		{"503 text", OpRefresh, 503, textHeader(), "Service Unavailable", ErrUnavailable, "Service Unavailable"},
		{"504 empty", OpPasswordGrant, 504, nil, "", ErrUnavailable, ""},
		{"408", OpPasswordGrant, 408, nil, "", ErrUnavailable, ""},

		// Unexpected.
		{"invalid_scope", OpPasswordGrant, 400, jsonHeader(), `{"error":"invalid_scope"}`, ErrUnexpected, "invalid_scope"},
		{"404", OpPasswordGrant, 404, htmlHeader(), "<html>Not Found</html>", ErrUnexpected, ""},
		{"bad JSON", OpPasswordGrant, 400, jsonHeader(), `{"error":`, ErrUnexpected, ""},
		{"other redirect", OpPasswordGrant, 302,
			locationHeader("https://login.example.com/signin?code=secret-code#frag"),
			"", ErrUnexpected, "redirected to https://login.example.com/signin"},
		{"unsupported token type", OpRevocation, 400, jsonHeader(), `{"error":"unsupported_token_type"}`, ErrUnexpected, "unsupported_token_type"},
		{"revocation bad client", OpRevocation, 400, jsonHeader(), `{"error":"invalid_client"}`, ErrInvalidCredentials, "invalid_client"},

		// Success.
		{"200", OpPasswordGrant, 200, jsonHeader(), `{"access_token":"x"}`, nil, ""},
		{"204 sign-out", OpSignOut, 204, nil, "", nil, ""},
		{"200 sign-out", OpSignOut, 200, nil, "", nil, ""},
		{"200 revocation", OpRevocation, 200, nil, "", nil, ""},

		// Sign-out.
		{"401 sign-out token rejected", OpSignOut, 401, jsonHeader(), `{"message":"Authorization has been denied for this request."}`, ErrTokenRejected, "Authorization has been denied"},
		{"411 sign-out", OpSignOut, 411, htmlHeader(), "<h2>Length Required</h2>", ErrUnexpected, "Content-Length"},
		{"429 sign-out", OpSignOut, 429, textHeader(), "Too many requests", ErrThrottled, "Too many requests"},
		{"500 sign-out", OpSignOut, 500, jsonHeader(), envelopeGeneric, ErrUnavailable, "An error has occurred."},
		{"400 sign-out", OpSignOut, 400, jsonHeader(), `{"message":"The request is invalid."}`, ErrUnexpected, "The request is invalid."},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			err := Classify(tt.op, tt.status, tt.header, []byte(tt.body))
			if tt.wantKind == nil {
				if err != nil {
					t.Fatalf("Classify(%q, %d) = %v, want nil", tt.op, tt.status, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Classify(%q, %d) = %v (%T), want *Error", tt.op, tt.status, err, err)
			}
			if !errors.Is(err, tt.wantKind) {
				t.Errorf("Classify(%q, %d) kind = %v, want %v", tt.op, tt.status, e.Kind, tt.wantKind)
			}
			if e.Op != tt.op {
				t.Errorf("Op = %q, want %q", e.Op, tt.op)
			}
			if e.StatusCode != tt.status {
				t.Errorf("StatusCode = %d, want %d", e.StatusCode, tt.status)
			}
			if tt.wantDetail == "" && e.Detail != "" && strings.HasPrefix(strings.TrimSpace(tt.body), "<") {
				t.Errorf("Detail = %q, want no detail from an HTML body", e.Detail)
			}
			if !strings.Contains(e.Detail, tt.wantDetail) {
				t.Errorf("Detail = %q, want it to contain %q", e.Detail, tt.wantDetail)
			}
			if e.OutcomeUnknown {
				t.Errorf("OutcomeUnknown = true for a response that was read")
			}
		})
	}
}

func TestClassifyDetailOmitsStackTrace(t *testing.T) {
	t.Parallel()

	err := Classify(OpPasswordGrant, 500, jsonHeader(), []byte(envelopeInvalidCredentials))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Classify = %v, want *Error", err)
	}
	if strings.Contains(e.Detail, "IPXLogin") || strings.Contains(err.Error(), "IPXLogin") {
		t.Errorf("error %q contains the stack trace", err)
	}
}

func TestClassifyRetryAfter(t *testing.T) {
	t.Parallel()

	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tests := []struct {
		name   string
		status int
		value  string
		want   time.Duration
	}{
		{"seconds", 429, "30", 30 * time.Second},
		{"seconds with spaces", 429, " 5 ", 5 * time.Second},
		{"HTTP date", 429, now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"past HTTP date", 429, now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"negative", 429, "-5", 0},
		{"garbage", 429, "soon", 0},
		{"absent", 429, "", 0},
		{"capped at one day", 429, "999999999999", 24 * time.Hour},
		{"on 503", 503, "120", 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			header := textHeader()
			if tt.value != "" {
				header.Set("Retry-After", tt.value)
			}
			e := classify(OpPasswordGrant, tt.status, header, []byte("busy"), clock)
			if e == nil {
				t.Fatal("classify returned nil")
			}
			if e.RetryAfter != tt.want {
				t.Errorf("RetryAfter for %q = %s, want %s", tt.value, e.RetryAfter, tt.want)
			}
		})
	}
}

func TestClassifyThrottledRetryAfterHint(t *testing.T) {
	t.Parallel()

	header := textHeader()
	header.Set("Retry-After", "7")
	err := Classify(OpPasswordGrant, 429, header, []byte("slow down"))
	if !errors.Is(err, ErrThrottled) {
		t.Fatalf("Classify = %v, want ErrThrottled", err)
	}
	if !strings.Contains(err.Error(), "retry after 7s") {
		t.Errorf("Error() = %q, want it to say when to retry", err)
	}
}

func TestClassifyDetailTrimmed(t *testing.T) {
	t.Parallel()

	long := strings.Repeat("é", 300) // two bytes each
	err := Classify(OpPasswordGrant, 500, jsonHeader(), []byte(`{"exceptionMessage":"`+long+`"}`))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Classify = %v, want *Error", err)
	}
	if len(e.Detail) > maxDetailBytes {
		t.Errorf("len(Detail) = %d, want at most %d", len(e.Detail), maxDetailBytes)
	}
	if len(e.Detail) < maxDetailBytes-1 {
		t.Errorf("len(Detail) = %d, want it trimmed near %d, not emptied", len(e.Detail), maxDetailBytes)
	}
	if !utf8.ValidString(e.Detail) {
		t.Errorf("Detail %q is not valid UTF-8 after trimming", e.Detail)
	}
}

func TestClassifyDetailRedactsTokens(t *testing.T) {
	t.Parallel()

	jwt := "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6ImFkbWluIn0.c2lnbmF0dXJlMTIzNDU2Nzg5MA"
	opaque := "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	clientID := "88358B02-A48D-A50E-F710-39C1636C30F6@MyTenant"
	body := `{"error":"invalid_grant","error_description":"token ` + jwt + ` or ` + opaque + ` of client ` + clientID + `"}`

	err := Classify(OpRefresh, 400, jsonHeader(), []byte(body))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Classify = %v, want *Error", err)
	}
	for _, part := range strings.Split(jwt, ".") {
		if strings.Contains(err.Error(), part) {
			t.Errorf("Error() = %q contains the JWT segment %q", err, part)
		}
	}
	if strings.Contains(err.Error(), opaque) {
		t.Errorf("Error() = %q contains the opaque token", err)
	}
	if !strings.Contains(e.Detail, clientID) {
		t.Errorf("Detail = %q, want the client ID kept", e.Detail)
	}
}

func TestSanitizeDetailSecretAtCut(t *testing.T) {
	t.Parallel()

	secret := "Secret Pass phrase!"
	text := strings.Repeat("x ", (maxDetailBytes-10)/2) + secret
	got := sanitizeDetail(text, secret)
	if strings.Contains(got, "Secret") {
		t.Errorf("sanitizeDetail = %q, want no prefix of the secret", got)
	}
	if len(got) > maxDetailBytes {
		t.Errorf("len = %d, want at most %d", len(got), maxDetailBytes)
	}
}

func TestErrorMessage(t *testing.T) {
	t.Parallel()

	e := &Error{
		Op:         OpPasswordGrant,
		Kind:       ErrLoginLimit,
		URL:        "https://erp.example.com/Instance/identity/connect/token",
		StatusCode: 500,
		Detail:     "API Login Limit",
	}
	want := "acumatica: password grant at https://erp.example.com/Instance/identity/connect/token failed: " +
		"API login limit reached (HTTP 500): API Login Limit; " +
		"sign out sessions that are no longer used or wait for idle sessions to time out, then retry"
	if got := e.Error(); got != want {
		t.Errorf("Error() =\n%q\nwant\n%q", got, want)
	}
}

func TestErrorUnwrap(t *testing.T) {
	t.Parallel()

	e := &Error{Op: OpRefresh, Kind: ErrUnavailable, OutcomeUnknown: true, Err: context.DeadlineExceeded}
	if !errors.Is(e, ErrUnavailable) {
		t.Error("errors.Is(e, ErrUnavailable) = false")
	}
	if !errors.Is(e, context.DeadlineExceeded) {
		t.Error("errors.Is(e, context.DeadlineExceeded) = false")
	}
	if errors.Is(e, ErrLoginLimit) {
		t.Error("errors.Is(e, ErrLoginLimit) = true")
	}
	if !strings.Contains(e.Error(), "may have reached Acumatica") {
		t.Errorf("Error() = %q, want it to say the outcome is unknown", e.Error())
	}
}
