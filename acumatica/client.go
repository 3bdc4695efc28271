package acumatica

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Default values that New fills in for zero Config fields.
const (
	DefaultTimeout       = 30 * time.Second
	DefaultTokenLifetime = time.Hour

	defaultTokenPath      = "/identity/connect/token"
	defaultLogoutPath     = "/entity/auth/logout"
	defaultRevocationPath = "/identity/connect/revocation"
)

// DefaultScopes are the scopes a password grant requests when Config.Scopes
// is empty. With "api" and "offline_access" Acumatica opens one session per
// grant, and tokens refreshed from that grant reuse the session.
var DefaultScopes = []string{"api", "offline_access"}

// Config configures a Client. Zero fields take the defaults documented on
// each field.
type Config struct {
	// SiteURL is the absolute http or https address of the Acumatica
	// instance, such as https://erp.example.com/Instance. Required.
	SiteURL string
	// TokenURL defaults to SiteURL + "/identity/connect/token".
	TokenURL string
	// LogoutURL defaults to SiteURL + "/entity/auth/logout".
	LogoutURL string
	// RevocationURL defaults to SiteURL + "/identity/connect/revocation".
	RevocationURL string

	// ClientID is the connected application's client ID, such as
	// "88358B02-A48D-A50E-F710-39C1636C30F6@MyTenant". Required.
	ClientID string
	// ClientSecret is the connected application's shared secret. Required.
	ClientSecret string
	// Username is the Acumatica user that password grants sign in as.
	// Required.
	Username string
	// Password is that user's password. Required.
	Password string

	// Scopes defaults to DefaultScopes.
	Scopes []string

	// HTTPClient sends every request. It defaults to a client with a
	// DefaultTimeout timeout. New uses a copy of it that never follows
	// redirects and has no cookie jar, so that a redirect to Acumatica's
	// error page can be classified and only the cookies passed to SignOut
	// are sent. Its Transport and Timeout are kept.
	HTTPClient *http.Client
	// Now defaults to time.Now. It turns expires_in into Token.Expiry.
	Now func() time.Time
	// TokenLifetime is the access token lifetime assumed when a token
	// response has no expires_in. It defaults to DefaultTokenLifetime.
	TokenLifetime time.Duration
}

// String describes the configuration with the client secret and password
// replaced, so that printing a Config cannot leak them.
func (cfg Config) String() string {
	return fmt.Sprintf("acumatica.Config{SiteURL: %q, ClientID: %q, Username: %q, ClientSecret: %s, Password: %s, Scopes: %q}",
		cfg.SiteURL, cfg.ClientID, cfg.Username, redactedMark(cfg.ClientSecret), redactedMark(cfg.Password), cfg.Scopes)
}

// GoString is String, so that %#v cannot leak secrets either.
func (cfg Config) GoString() string { return cfg.String() }

// LogValue logs the configuration without the client secret and password.
func (cfg Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("site_url", cfg.SiteURL),
		slog.String("client_id", cfg.ClientID),
		slog.String("username", cfg.Username),
	)
}

// Client speaks Acumatica's OAuth 2.0 token, sign-out and revocation
// protocol for one connected application and one user. A Client is safe for
// concurrent use. It keeps no tokens: callers store the tokens it returns.
type Client struct {
	siteURL       string
	tokenURL      string
	logoutURL     string
	revocationURL string

	clientID     string
	clientSecret string
	username     string
	password     string

	oauth      *oauth2.Config
	httpClient *http.Client
	// tracksConnections is true when the transport reports every connection
	// it obtains, so a failure without one means nothing was sent.
	tracksConnections bool

	now           func() time.Time
	tokenLifetime time.Duration
}

// New validates cfg, fills in defaults and returns a Client. Errors name the
// invalid Config field. New sends no request.
func New(cfg Config) (*Client, error) {
	siteURL, err := parseEndpoint("SiteURL", cfg.SiteURL)
	if err != nil {
		return nil, err
	}
	siteURL = strings.TrimRight(siteURL, "/")

	c := &Client{
		siteURL:       siteURL,
		clientID:      cfg.ClientID,
		clientSecret:  cfg.ClientSecret,
		username:      cfg.Username,
		password:      cfg.Password,
		now:           cfg.Now,
		tokenLifetime: cfg.TokenLifetime,
	}
	endpoints := []struct {
		field, value, path string
		dest               *string
	}{
		{"TokenURL", cfg.TokenURL, defaultTokenPath, &c.tokenURL},
		{"LogoutURL", cfg.LogoutURL, defaultLogoutPath, &c.logoutURL},
		{"RevocationURL", cfg.RevocationURL, defaultRevocationPath, &c.revocationURL},
	}
	for _, ep := range endpoints {
		if ep.value == "" {
			*ep.dest = siteURL + ep.path
			continue
		}
		if *ep.dest, err = parseEndpoint(ep.field, ep.value); err != nil {
			return nil, err
		}
	}

	required := []struct{ field, value string }{
		{"ClientID", cfg.ClientID},
		{"ClientSecret", cfg.ClientSecret},
		{"Username", cfg.Username},
		{"Password", cfg.Password},
	}
	for _, r := range required {
		if r.value == "" {
			return nil, fmt.Errorf("acumatica: Config.%s is missing; set it to the value of the connected application or its user", r.field)
		}
	}

	scopes := cfg.Scopes
	if len(scopes) == 0 {
		scopes = DefaultScopes
	}
	for i, scope := range scopes {
		if scope == "" || strings.ContainsAny(scope, " \t\r\n") {
			return nil, fmt.Errorf("acumatica: Config.Scopes[%d] %q is invalid; a scope must be one non-empty word such as \"api\"", i, scope)
		}
	}

	if c.tokenLifetime < 0 {
		return nil, fmt.Errorf("acumatica: Config.TokenLifetime %s is negative; leave it zero for the default of %s", c.tokenLifetime, DefaultTokenLifetime)
	}
	if c.tokenLifetime == 0 {
		c.tokenLifetime = DefaultTokenLifetime
	}
	if c.now == nil {
		c.now = time.Now
	}

	c.httpClient, c.tracksConnections = newHTTPClient(cfg.HTTPClient)
	c.oauth = &oauth2.Config{
		ClientID:     cfg.ClientID,
		ClientSecret: cfg.ClientSecret,
		// AuthStyleInParams sends client_id and client_secret in the form,
		// as Acumatica documents. It also stops oauth2 from probing: with
		// AuthStyleAutoDetect a rejected request is sent a second time with
		// the other style, and a second password grant can take a second seat.
		Endpoint: oauth2.Endpoint{TokenURL: c.tokenURL, AuthStyle: oauth2.AuthStyleInParams},
		Scopes:   append([]string(nil), scopes...),
	}
	return c, nil
}

// SiteURL returns the instance address without a trailing slash.
func (c *Client) SiteURL() string { return c.siteURL }

// CloseIdleConnections closes the idle keep-alive connections of the HTTP
// transport. The transport may be shared with Config.HTTPClient, whose idle
// connections are closed too. Call it when the Client is no longer used.
func (c *Client) CloseIdleConnections() { c.httpClient.CloseIdleConnections() }

// parseEndpoint checks that value is an absolute http or https URL without
// user information, query or fragment.
func parseEndpoint(field, value string) (string, error) {
	if value == "" {
		return "", fmt.Errorf("acumatica: Config.%s is missing; set it to the instance address, such as https://erp.example.com/Instance", field)
	}
	u, err := url.Parse(value)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("acumatica: Config.%s %q is not an absolute http or https URL; use an address such as https://erp.example.com/Instance", field, value)
	}
	if u.User != nil {
		return "", fmt.Errorf("acumatica: Config.%s %q contains user information; remove it and set Config.Username and Config.Password instead", field, u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return "", fmt.Errorf("acumatica: Config.%s %q has a query or fragment; remove it", field, value)
	}
	return u.String(), nil
}

// requestContext returns a context that makes oauth2 use the client's HTTP
// client, and the *exchange in which that context records one request.
func (c *Client) requestContext(ctx context.Context) (context.Context, *exchange) {
	ex := &exchange{}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.httpClient)
	return context.WithValue(ctx, exchangeKey{}, ex), ex
}

// redactedMark shows whether a secret is set without showing it.
func redactedMark(secret string) string {
	if secret == "" {
		return `""`
	}
	return "[redacted]"
}
