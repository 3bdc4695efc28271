package emulator

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Demo credentials that DefaultConfig registers, and that New uses when
// Config.Users or Config.Clients is empty.
const (
	// DemoClientID is the client ID of the demo connected application, in
	// Acumatica's <GUID>@<tenant> form. Send the "@" as %40 in form bodies.
	DemoClientID = "5F2C3E4A-9B1D-4C7E-8A6F-0D2B4E6C8A10@" + DemoTenant
	// DemoClientSecret is the shared secret of the demo client.
	DemoClientSecret = "demo-client-secret"
	// DemoUser is the name of the demo API user.
	DemoUser = "admin"
	// DemoPassword is the password of DemoUser.
	DemoPassword = "demo-password"
	// DemoTenant is the tenant of the demo client ID and the CompanyID
	// cookie value when a cookie sign-in names no tenant.
	DemoTenant = "Company"
)

// Defaults that New applies to zero fields of Config.
const (
	// DefaultSeats is the API user limit of an Acumatica trial licence.
	DefaultSeats = 2
	// DefaultIdleTimeout is the idle time after which Acumatica closes an
	// unclosed API session.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultTokenLifetime is the access token lifetime (expires_in 3600).
	DefaultTokenLifetime = time.Hour
	// DefaultRefreshTokenLifetime is the absolute lifetime of a refresh token
	// chain, counted from the password grant (30 days).
	DefaultRefreshTokenLifetime = 30 * 24 * time.Hour
)

// Values of Config.TokenLoginLimitStyle.
const (
	// LoginLimitInvalidGrant rejects a password or refresh grant that finds
	// no free seat with 400 {"error":"invalid_grant","error_description":"API Login Limit"}.
	LoginLimitInvalidGrant = "invalid_grant"
	// LoginLimitPXException rejects such a grant with the HTTP 500
	// PXException envelope that /entity/auth/login returns.
	LoginLimitPXException = "pxexception"
)

// Config sets the licence limits, lifetimes and credentials of an Emulator.
// New fills zero durations, an empty TokenLoginLimitStyle, empty Users and
// Clients and a nil Clock or Logger with their defaults.
type Config struct {
	// Seats is the licence limit "Maximum Number of Web Services API
	// Users": the number of API sessions that may be open at once.
	// 0 means unlimited.
	Seats int
	// MaxLoginsPerUser caps the open sessions of one user, checked after
	// Seats. 0 means unlimited.
	MaxLoginsPerUser int
	// RequestsPerMinute caps the requests to the token, sign-in, sign-out
	// and data endpoints in any 60-second window. 0 means unlimited.
	RequestsPerMinute int
	// IdleTimeout closes a session that has not been used for this long.
	// Default 10 minutes.
	IdleTimeout time.Duration
	// TokenLifetime is the access token lifetime. Default 1 hour.
	TokenLifetime time.Duration
	// RefreshTokenLifetime is the absolute lifetime of a grant's refresh
	// tokens, from its password grant. Default 720 hours (30 days).
	RefreshTokenLifetime time.Duration
	// TokenLoginLimitStyle chooses how the token endpoint reports a full
	// licence or per-user cap: LoginLimitInvalidGrant (default) or
	// LoginLimitPXException.
	// NOTE: Acumatica's own reply is not recorded publicly. The default
	// follows the error codes of IdentityServer, which its token endpoint
	// resembles.
	TokenLoginLimitStyle string
	// RefreshRevokesAccessToken makes a refresh grant revoke the access
	// token that the grant issued before. By default that token stays valid
	// until it expires.
	RefreshRevokesAccessToken bool
	// ThrottlePlainText makes 429 responses text/plain instead of the JSON
	// PXException envelope.
	ThrottlePlainText bool
	// Users are the API users. Default: DemoUser with DemoPassword.
	Users []User
	// Clients are the connected applications. Default: DemoClientID with
	// DemoClientSecret.
	Clients []Client
	// Clock is the time source. Nil means the system clock.
	Clock Clock
	// Logger receives the emulator's logs. Nil discards them.
	Logger *slog.Logger
	// Seed seeds the random source that decides which calls a Fault with a
	// Ratio hits, so runs with the same seed hit the same calls.
	Seed int64
}

// User is an Acumatica user allowed to sign in through the API. Names match
// case-insensitively, as Acumatica's do.
type User struct {
	Name     string // user name, such as "admin"
	Password string // password for the token endpoint and cookie sign-in
}

// Client is a connected application registered for the ROPC flow.
type Client struct {
	// ID is the client ID, such as "<GUID>@<tenant>".
	ID string
	// Secret is the client's shared secret.
	Secret string
}

// DefaultConfig returns the configuration of a trial licence: 2 seats, no
// per-user or per-minute limit, the default lifetimes, the demo user and the
// demo client.
func DefaultConfig() Config {
	return Config{
		Seats:                DefaultSeats,
		IdleTimeout:          DefaultIdleTimeout,
		TokenLifetime:        DefaultTokenLifetime,
		RefreshTokenLifetime: DefaultRefreshTokenLifetime,
		TokenLoginLimitStyle: LoginLimitInvalidGrant,
		Users:                []User{{Name: DemoUser, Password: DemoPassword}},
		Clients:              []Client{{ID: DemoClientID, Secret: DemoClientSecret}},
	}
}

// withDefaults returns c with defaults filled in, or an error that names
// every invalid field.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	errs = append(errs, checkLimit("Seats", c.Seats))
	errs = append(errs, checkLimit("MaxLoginsPerUser", c.MaxLoginsPerUser))
	errs = append(errs, checkLimit("RequestsPerMinute", c.RequestsPerMinute))
	c.IdleTimeout = durationOrDefault(&errs, "IdleTimeout", c.IdleTimeout, DefaultIdleTimeout)
	c.TokenLifetime = durationOrDefault(&errs, "TokenLifetime", c.TokenLifetime, DefaultTokenLifetime)
	c.RefreshTokenLifetime = durationOrDefault(&errs, "RefreshTokenLifetime",
		c.RefreshTokenLifetime, DefaultRefreshTokenLifetime)
	switch c.TokenLoginLimitStyle {
	case "":
		c.TokenLoginLimitStyle = LoginLimitInvalidGrant
	case LoginLimitInvalidGrant, LoginLimitPXException:
	default:
		errs = append(errs, fmt.Errorf("invalid Config.TokenLoginLimitStyle %q: use %q or %q",
			c.TokenLoginLimitStyle, LoginLimitInvalidGrant, LoginLimitPXException))
	}
	if len(c.Users) == 0 {
		c.Users = []User{{Name: DemoUser, Password: DemoPassword}}
	}
	if len(c.Clients) == 0 {
		c.Clients = []Client{{ID: DemoClientID, Secret: DemoClientSecret}}
	}
	errs = append(errs, checkUsers(c.Users), checkClients(c.Clients))
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, errors.Join(errs...)
}

func checkLimit(field string, v int) error {
	if v < 0 {
		return fmt.Errorf("invalid Config.%s %d: use 0 for unlimited or a positive number", field, v)
	}
	return nil
}

func durationOrDefault(errs *[]error, field string, d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		*errs = append(*errs, fmt.Errorf("invalid Config.%s %s: use a positive duration, or 0 for the default %s",
			field, d, def))
	}
	return d
}

func checkUsers(users []User) error {
	seen := make(map[string]bool, len(users))
	for i, u := range users {
		key := strings.ToLower(u.Name)
		switch {
		case u.Name == "":
			return fmt.Errorf("invalid Config.Users[%d]: the name is empty", i)
		case u.Password == "":
			return fmt.Errorf("invalid Config.Users[%d] %q: the password is empty", i, u.Name)
		case seen[key]:
			return fmt.Errorf("invalid Config.Users[%d]: the name %q is listed twice", i, u.Name)
		}
		seen[key] = true
	}
	return nil
}

func checkClients(clients []Client) error {
	seen := make(map[string]bool, len(clients))
	for i, c := range clients {
		switch {
		case c.ID == "":
			return fmt.Errorf("invalid Config.Clients[%d]: the client ID is empty", i)
		case c.Secret == "":
			return fmt.Errorf("invalid Config.Clients[%d] %q: the secret is empty", i, c.ID)
		case seen[c.ID]:
			return fmt.Errorf("invalid Config.Clients[%d]: the client ID %q is listed twice", i, c.ID)
		}
		seen[c.ID] = true
	}
	return nil
}
