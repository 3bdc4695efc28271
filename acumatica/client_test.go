package acumatica

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{
		SiteURL:      "https://erp.example.com/Instance/",
		ClientID:     "88358B02-A48D-A50E-F710-39C1636C30F6@MyTenant",
		ClientSecret: "client-secret-value",
		Username:     "api-bot",
		Password:     "password-value",
	}
}

func TestNewDefaults(t *testing.T) {
	t.Parallel()

	c, err := New(validConfig())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	checks := []struct{ name, got, want string }{
		{"SiteURL", c.SiteURL(), "https://erp.example.com/Instance"},
		{"tokenURL", c.tokenURL, "https://erp.example.com/Instance/identity/connect/token"},
		{"logoutURL", c.logoutURL, "https://erp.example.com/Instance/entity/auth/logout"},
		{"revocationURL", c.revocationURL, "https://erp.example.com/Instance/identity/connect/revocation"},
		{"scopes", strings.Join(c.oauth.Scopes, " "), "api offline_access"},
	}
	for _, check := range checks {
		if check.got != check.want {
			t.Errorf("%s = %q, want %q", check.name, check.got, check.want)
		}
	}
	if c.tokenLifetime != time.Hour {
		t.Errorf("tokenLifetime = %s, want 1h", c.tokenLifetime)
	}
	if c.httpClient.Timeout != DefaultTimeout {
		t.Errorf("HTTP client timeout = %s, want %s", c.httpClient.Timeout, DefaultTimeout)
	}
	if c.httpClient.CheckRedirect == nil {
		t.Error("HTTP client follows redirects, want CheckRedirect set")
	}
	if !c.tracksConnections {
		t.Error("tracksConnections = false for the default transport")
	}
}

func TestNewKeepsHTTPClientSettings(t *testing.T) {
	t.Parallel()

	transport := &http.Transport{}
	callerClient := &http.Client{Transport: transport, Timeout: 5 * time.Second}
	cfg := validConfig()
	cfg.HTTPClient = callerClient
	cfg.TokenURL = "https://id.example.com/connect/token"

	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if c.httpClient == callerClient {
		t.Error("New uses the callerClient *http.Client itself, want a copy")
	}
	if callerClient.CheckRedirect != nil {
		t.Error("New changed the callerClient client's CheckRedirect")
	}
	if c.httpClient.Timeout != 5*time.Second {
		t.Errorf("timeout = %s, want the callerClient 5s", c.httpClient.Timeout)
	}
	rt, ok := c.httpClient.Transport.(*recordingTransport)
	if !ok || rt.base != transport {
		t.Errorf("transport = %T, want the callerClient transport wrapped", c.httpClient.Transport)
	}
	if c.tokenURL != cfg.TokenURL {
		t.Errorf("tokenURL = %q, want %q", c.tokenURL, cfg.TokenURL)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name      string
		modify    func(*Config)
		wantField string
	}{
		{"missing site", func(c *Config) { c.SiteURL = "" }, "Config.SiteURL"},
		{"relative site", func(c *Config) { c.SiteURL = "erp.example.com/Instance" }, "Config.SiteURL"},
		{"ftp site", func(c *Config) { c.SiteURL = "ftp://erp.example.com/Instance" }, "Config.SiteURL"},
		{"site with query", func(c *Config) { c.SiteURL = "https://erp.example.com/Instance?x=1" }, "Config.SiteURL"},
		{"site with user", func(c *Config) { c.SiteURL = "https://admin:hunter2@erp.example.com/Instance" }, "Config.SiteURL"},
		{"bad token URL", func(c *Config) { c.TokenURL = "/identity/connect/token" }, "Config.TokenURL"},
		{"bad logout URL", func(c *Config) { c.LogoutURL = "mailto:x@example.com" }, "Config.LogoutURL"},
		{"bad revocation URL", func(c *Config) { c.RevocationURL = "https://" }, "Config.RevocationURL"},
		{"missing client ID", func(c *Config) { c.ClientID = "" }, "Config.ClientID"},
		{"missing secret", func(c *Config) { c.ClientSecret = "" }, "Config.ClientSecret"},
		{"missing username", func(c *Config) { c.Username = "" }, "Config.Username"},
		{"missing password", func(c *Config) { c.Password = "" }, "Config.Password"},
		{"scope with space", func(c *Config) { c.Scopes = []string{"api offline_access"} }, "Config.Scopes[0]"},
		{"empty scope", func(c *Config) { c.Scopes = []string{"api", ""} }, "Config.Scopes[1]"},
		{"negative lifetime", func(c *Config) { c.TokenLifetime = -time.Second }, "Config.TokenLifetime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			cfg := validConfig()
			tt.modify(&cfg)
			_, err := New(cfg)
			if err == nil {
				t.Fatal("New returned no error")
			}
			if !strings.Contains(err.Error(), tt.wantField) {
				t.Errorf("error %q does not name %s", err, tt.wantField)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q contains the password from the URL", err)
			}
		})
	}
}

func TestStringsRedactSecrets(t *testing.T) {
	t.Parallel()

	cfg := validConfig()
	tok := Token{AccessToken: "access-token-value", RefreshToken: "refresh-token-value", TokenType: "Bearer"}
	creds := SessionCredentials{AccessToken: "access-token-value", Cookies: []Cookie{{Name: ".ASPXAUTH", Value: "cookie-value"}}}
	secrets := []string{cfg.ClientSecret, cfg.Password, tok.AccessToken, tok.RefreshToken, "cookie-value"}

	outputs := []string{
		fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%v", &cfg),
		fmt.Sprint(tok), fmt.Sprintf("%+v", &tok), fmt.Sprintf("%#v", tok),
		fmt.Sprint(creds), fmt.Sprintf("%#v", creds),
	}
	for _, out := range outputs {
		for _, secret := range secrets {
			if strings.Contains(out, secret) {
				t.Errorf("output %q contains a secret", out)
			}
		}
	}
	if !strings.Contains(fmt.Sprint(creds), ".ASPXAUTH") {
		t.Errorf("SessionCredentials string %q, want the cookie name", fmt.Sprint(creds))
	}
}
