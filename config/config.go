// Package config loads the broker's YAML config file, which lists the Acumatica connections that
// the broker owns sessions for.
//
// [Parse] checks every rule and reports every violation at once in a [*ValidationError], each
// naming its field (such as connections[1].password_env), the bad value and the fix. Unknown keys
// are errors, so a misspelt optional setting cannot silently fall back to its default. Secret
// values never appear in errors or warnings.
//
// Durations are Go duration strings ("90s", "5m", "1h30m"). A bare number such as 30 is an error,
// because its unit would be a guess. The one bare number allowed is 0.
//
// example.yaml in this directory documents every setting.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"
)

// File is a parsed and validated config file.
type File struct {
	Connections []Connection
	// Callers are the services allowed to call the broker. Empty when the file has no callers
	// section, which turns authentication off.
	Callers []Caller
	// Encryption holds the keys that encrypt session credentials in the database; nil when the
	// file has no encryption section.
	Encryption *Encryption
}

// Connection is one Acumatica site and the credentials and limits the broker uses for it.
// Secrets are resolved: ClientSecret and Password hold the values, wherever the file took them
// from.
type Connection struct {
	// Name identifies the connection in the broker's API, its database rows and its logs.
	Name string

	// SiteURL is the Acumatica site's base URL, without a trailing slash.
	SiteURL string
	// TokenURL is the OAuth 2.0 token endpoint. It defaults to SiteURL + /identity/connect/token.
	TokenURL string
	// LogoutURL ends an API session. It defaults to SiteURL + /entity/auth/logout.
	LogoutURL string
	// RevocationURL revokes refresh tokens. It defaults to SiteURL + /identity/connect/revocation.
	RevocationURL string

	// ClientID is the connected application's client ID, such as GUID@Tenant.
	ClientID string
	// ClientSecret is the connected application's secret.
	ClientSecret string
	// Username and Password are the Acumatica user that the sessions sign in as.
	Username string
	Password string

	// Scopes are the OAuth 2.0 scopes to request. They always include "api".
	Scopes []string
	// OfflineAccess reports whether Scopes include offline_access, which yields refresh tokens.
	OfflineAccess bool

	// MaxSessions is the seat budget: the most Acumatica API sessions open at once.
	MaxSessions int

	// DefaultLeaseTTL is the lease duration when an acquire names none.
	DefaultLeaseTTL time.Duration
	// MaxLeaseTTL caps the lease duration an acquire may request.
	MaxLeaseTTL time.Duration
	// MaxWait caps how long an acquire may wait for a free seat. Zero means no waiting.
	MaxWait time.Duration
	// IdleTimeout is the site's session idle timeout: Acumatica ends a session unused this long.
	IdleTimeout time.Duration
	// TokenLifetime is the access token lifetime assumed when a token response has no expires_in.
	TokenLifetime time.Duration
	// RefreshBefore is how long before expiry an access token is refreshed.
	RefreshBefore time.Duration
	// IdleSignOutAfter signs out sessions idle in the pool this long. Zero keeps them.
	IdleSignOutAfter time.Duration
	// RequestTimeout bounds each request to Acumatica. It also bounds how long after the broker
	// gives up on a sign-in Acumatica may still open its session, so seats wait that much longer
	// before they are reclaimed.
	RequestTimeout time.Duration
	// LoginLimitBackoff is the first pause of sign-ins after Acumatica refuses one for its login
	// limit; each refused probe doubles it up to LoginLimitMaxBackoff.
	LoginLimitBackoff    time.Duration
	LoginLimitMaxBackoff time.Duration
	// MaxQueue caps how many acquires may wait for a seat; 0 means no cap.
	MaxQueue int
}

// Load reads and parses the config file at path. Relative secret file paths are resolved against
// the file's directory. lookupEnv reads the *_env secrets, and nil means os.LookupEnv. The warnings
// name settings that work but are discouraged, such as inline secrets, and are for the caller to
// log.
func Load(path string, lookupEnv func(string) (string, bool)) (*File, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config file: %w", err)
	}
	file, warnings, err := Parse(data, filepath.Dir(path), lookupEnv)
	if err != nil {
		return nil, warnings, fmt.Errorf("config file %s:\n%w", path, err)
	}
	return file, warnings, nil
}

// Parse parses and validates a config file's contents. baseDir resolves relative secret file
// paths, and lookupEnv reads the *_env secrets (nil means os.LookupEnv). A file that breaks any
// rule returns a [*ValidationError] listing every problem, while YAML that does not parse returns a
// plain error.
func Parse(data []byte, baseDir string, lookupEnv func(string) (string, bool)) (*File, []string, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	root, err := decodeDocument(data)
	if err != nil {
		return nil, nil, err
	}
	p := &parser{baseDir: baseDir, lookupEnv: lookupEnv}
	file := p.file(root)
	if len(p.errs) > 0 {
		return nil, p.warnings, &ValidationError{Errors: p.errs}
	}
	return file, p.warnings, nil
}

// decodeDocument returns the root node of the single YAML document in data, or nil for a file
// with no document.
func decodeDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("config is not valid YAML: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("config contains more than one YAML document: keep one, without a second ---")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}
