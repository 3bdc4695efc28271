package emulator

import (
	"strings"
	"testing"
	"time"
)

func TestNewAppliesDefaults(t *testing.T) {
	t.Parallel()
	e, err := New(Config{})
	if err != nil {
		t.Fatalf("New(Config{}): %v", err)
	}
	c := e.cfg
	if c.IdleTimeout != 10*time.Minute || c.TokenLifetime != time.Hour || c.RefreshTokenLifetime != 720*time.Hour {
		t.Errorf("durations = %s/%s/%s, want 10m/1h/720h", c.IdleTimeout, c.TokenLifetime, c.RefreshTokenLifetime)
	}
	if c.TokenLoginLimitStyle != LoginLimitInvalidGrant {
		t.Errorf("TokenLoginLimitStyle = %q, want %q", c.TokenLoginLimitStyle, LoginLimitInvalidGrant)
	}
	if _, ok := e.users[DemoUser]; !ok {
		t.Error("the demo user is missing")
	}
	if _, ok := e.clients[DemoClientID]; !ok {
		t.Error("the demo client is missing")
	}
	if *e.Limits().Seats != 0 {
		t.Errorf("Seats = %d for a zero Config, want 0 (unlimited)", *e.Limits().Seats)
	}
	if d := time.Since(e.Now()); d < 0 || d > time.Minute {
		t.Errorf("Now = %s, want the system time", e.Now())
	}
}

func TestDefaultConfigIsTrialLicence(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	if c.Seats != 2 || c.MaxLoginsPerUser != 0 || c.RequestsPerMinute != 0 {
		t.Errorf("limits = %d/%d/%d, want 2/0/0", c.Seats, c.MaxLoginsPerUser, c.RequestsPerMinute)
	}
	if !strings.Contains(DemoClientID, "@") {
		t.Errorf("DemoClientID %q has no @tenant", DemoClientID)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"Seats", func(c *Config) { c.Seats = -1 }, "Config.Seats"},
		{"MaxLoginsPerUser", func(c *Config) { c.MaxLoginsPerUser = -2 }, "Config.MaxLoginsPerUser"},
		{"RequestsPerMinute", func(c *Config) { c.RequestsPerMinute = -3 }, "Config.RequestsPerMinute"},
		{"IdleTimeout", func(c *Config) { c.IdleTimeout = -time.Second }, "Config.IdleTimeout"},
		{"TokenLifetime", func(c *Config) { c.TokenLifetime = -time.Second }, "Config.TokenLifetime"},
		{"RefreshTokenLifetime", func(c *Config) { c.RefreshTokenLifetime = -time.Hour }, "Config.RefreshTokenLifetime"},
		{"Style", func(c *Config) { c.TokenLoginLimitStyle = "teapot" }, "Config.TokenLoginLimitStyle"},
		{"EmptyUser", func(c *Config) { c.Users = []User{{Password: "p"}} }, "Config.Users[0]"},
		{"EmptyPassword", func(c *Config) { c.Users = []User{{Name: "u"}} }, "Config.Users[0]"},
		{"DuplicateUser", func(c *Config) { c.Users = []User{{"u", "p"}, {"U", "q"}} }, "listed twice"},
		{"EmptySecret", func(c *Config) { c.Clients = []Client{{ID: "x@T"}} }, "Config.Clients[0]"},
		{"DuplicateClient", func(c *Config) { c.Clients = []Client{{"x@T", "s"}, {"x@T", "t"}} }, "listed twice"},
	}
	for _, tt := range tests {
		cfg := DefaultConfig()
		tt.edit(&cfg)
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: New error = %v, want one naming %s", tt.name, err, tt.want)
		}
	}
	cfg := DefaultConfig()
	cfg.Users = []User{{Name: "u", Password: "top-secret-value"}, {Name: "U", Password: "top-secret-value"}}
	if _, err := New(cfg); err == nil || strings.Contains(err.Error(), "top-secret-value") {
		t.Errorf("error %v must not contain the password", err)
	}
}

func TestAdvanceIgnoresNonPositive(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := e.Now()
	e.Advance(-time.Hour)
	e.Advance(0)
	if !e.Now().Equal(start) {
		t.Errorf("Now = %s after non-positive Advance, want %s", e.Now(), start)
	}
	e.Advance(90 * time.Second)
	if want := start.Add(90 * time.Second); !e.Now().Equal(want) {
		t.Errorf("Now = %s, want %s", e.Now(), want)
	}
}
