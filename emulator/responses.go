package emulator

import (
	"encoding/json"
	"net/http"
)

// Texts of the errors that Acumatica returns from sign-in.
const (
	msgLoginLimit         = "API Login Limit"
	msgInvalidCredentials = "Error: Invalid credentials. Please try again."
	msgNotAuthorized      = "Authorization has been denied for this request."
	// msgUserLimit is the per-user cap text.
	// NOTE: Acumatica's exact wording is not recorded publicly. Clients
	// match the substring "concurrent API logins", which it contains.
	msgUserLimit = "The maximum number of concurrent API logins for this user has been reached. " +
		"Sign out of an open session, or raise Max. Number of Concurrent Logins on the Users (SM201010) form."
)

// Stack traces in the style of Acumatica's error envelope. Clients must not
// depend on them.
const (
	stackLoginLimit = "   at PX.LicensePolicy.PXLicensePolicy.CheckApiUsersLimits(HttpContext context)\r\n" +
		"   at PX.Data.PXLogin.LoginUserImpl(String userName, String password)\r\n" +
		"   at PX.Api.ContractBased.WebApi.Controllers.AuthController.Login(Credentials credentials)"
	stackLogin = "   at PX.Data.PXLogin.PX.Data.IPXLogin.LoginUser(String& userName, String password)\r\n" +
		"   at PX.Api.Services.LoginService.Login(String name, String password, String company)\r\n" +
		"   at PX.Api.ContractBased.WebApi.Controllers.AuthController.Login(Credentials credentials)"
	stackGeneric = "   at PX.Api.ContractBased.WebApi.Controllers.EntityController.Get()"
)

// pxError is the JSON envelope of an unhandled Acumatica exception.
type pxError struct {
	Message          string `json:"message"`
	ExceptionMessage string `json:"exceptionMessage"`
	ExceptionType    string `json:"exceptionType"`
	StackTrace       string `json:"stackTrace"`
}

func pxException(msg string) pxError {
	return pxError{
		Message:          "An error has occurred.",
		ExceptionMessage: msg,
		ExceptionType:    "PX.Data.PXException",
		StackTrace:       stackGeneric,
	}
}

// loginLimitError returns the envelope for a refusal reason from
// seatRefusalLocked.
func loginLimitError(reason string) pxError {
	px := pxException(msgLoginLimit)
	if reason == refusedUserLimit {
		px.ExceptionMessage = msgUserLimit
	}
	px.StackTrace = stackLoginLimit
	return px
}

// oauthError is the token and revocation endpoints' error body (RFC 6749
// section 5.2).
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	// An encoding error here means the client went away; there is no one
	// left to tell.
	_ = json.NewEncoder(w).Encode(v)
}

func writePXError(w http.ResponseWriter, status int, px pxError) {
	writeJSON(w, status, px)
}

func writeOAuthError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, status, oauthError{Error: code, Description: description})
}

func writeText(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(text))
}

// writeUnauthorized writes a 401 response as ASP.NET Web API does.
func writeUnauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", "Bearer")
	writeJSON(w, http.StatusUnauthorized, map[string]string{"message": msgNotAuthorized})
}
