package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acubroker/acubroker/emulator"
)

func TestParseFlagsDefaults(t *testing.T) {
	t.Parallel()
	opts, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags: %v", err)
	}
	c := opts.cfg
	if opts.addr != "127.0.0.1:8081" {
		t.Errorf("addr = %q, want 127.0.0.1:8081", opts.addr)
	}
	if c.Seats != 2 || c.MaxLoginsPerUser != 0 || c.RequestsPerMinute != 0 {
		t.Errorf("limits = %d/%d/%d, want 2/0/0", c.Seats, c.MaxLoginsPerUser, c.RequestsPerMinute)
	}
	if c.IdleTimeout != 10*time.Minute || c.TokenLifetime != time.Hour || c.RefreshTokenLifetime != 720*time.Hour {
		t.Errorf("durations = %s/%s/%s, want 10m/1h/720h", c.IdleTimeout, c.TokenLifetime, c.RefreshTokenLifetime)
	}
	if c.TokenLoginLimitStyle != "invalid_grant" || c.RefreshRevokesAccessToken || c.ThrottlePlainText {
		t.Errorf("style %q, revokes %v, plain %v, want invalid_grant, false, false",
			c.TokenLoginLimitStyle, c.RefreshRevokesAccessToken, c.ThrottlePlainText)
	}
	wantUsers := []emulator.User{{Name: emulator.DemoUser, Password: emulator.DemoPassword}}
	wantClients := []emulator.Client{{ID: emulator.DemoClientID, Secret: emulator.DemoClientSecret}}
	if !slices.Equal(c.Users, wantUsers) || !slices.Equal(c.Clients, wantClients) {
		t.Errorf("users %v clients %v, want the demo ones", c.Users, c.Clients)
	}
	if opts.logLevel != slog.LevelInfo || opts.logFormat != "text" {
		t.Errorf("log %v/%s, want INFO/text", opts.logLevel, opts.logFormat)
	}
}

func TestParseFlagsEverySetting(t *testing.T) {
	t.Parallel()
	args := []string{
		"-addr", "127.0.0.1:9999", "-seats", "5", "-max-logins-per-user", "3", "-requests-per-minute", "120",
		"-idle-timeout", "20m", "-token-lifetime", "30m", "-refresh-token-lifetime", "48h",
		"-token-login-limit-style", "pxexception", "-refresh-revokes-access-token", "-throttle-plain-text",
		"-user", "ops:pw1", "-user", "bot:pw:with:colons", "-client", "AAAA@Tenant One:s3",
		"-seed", "99", "-log-level", "debug", "-log-format", "json",
	}
	opts, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags: %v", err)
	}
	c := opts.cfg
	if opts.addr != "127.0.0.1:9999" || c.Seats != 5 || c.MaxLoginsPerUser != 3 || c.RequestsPerMinute != 120 {
		t.Errorf("addr %q limits %d/%d/%d", opts.addr, c.Seats, c.MaxLoginsPerUser, c.RequestsPerMinute)
	}
	if c.IdleTimeout != 20*time.Minute || c.TokenLifetime != 30*time.Minute || c.RefreshTokenLifetime != 48*time.Hour {
		t.Errorf("durations = %s/%s/%s", c.IdleTimeout, c.TokenLifetime, c.RefreshTokenLifetime)
	}
	if c.TokenLoginLimitStyle != "pxexception" || !c.RefreshRevokesAccessToken || !c.ThrottlePlainText {
		t.Errorf("style %q revokes %v plain %v", c.TokenLoginLimitStyle, c.RefreshRevokesAccessToken, c.ThrottlePlainText)
	}
	wantUsers := []emulator.User{{Name: "ops", Password: "pw1"}, {Name: "bot", Password: "pw:with:colons"}}
	if !slices.Equal(c.Users, wantUsers) {
		t.Errorf("users = %v, want %v", c.Users, wantUsers)
	}
	if want := []emulator.Client{{ID: "AAAA@Tenant One", Secret: "s3"}}; !slices.Equal(c.Clients, want) {
		t.Errorf("clients = %v, want %v", c.Clients, want)
	}
	if c.Seed != 99 || opts.logLevel != slog.LevelDebug || opts.logFormat != "json" {
		t.Errorf("seed %d log %v/%s", c.Seed, opts.logLevel, opts.logFormat)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-seats", "-1"}, "Seats"},
		{[]string{"-idle-timeout", "soon"}, "idle-timeout"},
		{[]string{"-token-lifetime", "-1h"}, "TokenLifetime"},
		{[]string{"-token-login-limit-style", "teapot"}, "TokenLoginLimitStyle"},
		{[]string{"-user", "nopassword"}, "name:secret"},
		{[]string{"-client", "id:"}, "name:secret"},
		{[]string{"-log-format", "xml"}, "log-format"},
		{[]string{"-log-level", "loud"}, "log-level"},
		{[]string{"extra"}, "unexpected argument"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		_, err := parseFlags(tt.args, &out)
		msg := ""
		if err != nil {
			msg = err.Error() + " " + out.String()
		}
		if err == nil || !strings.Contains(msg, tt.want) {
			t.Errorf("parseFlags(%q) = %v, want an error mentioning %q", tt.args, err, tt.want)
		}
	}
	var out bytes.Buffer
	_, err := parseFlags([]string{"-user", "ops:hunter2-secret:x", "-user", "bad"}, &out)
	if err == nil || strings.Contains(err.Error()+out.String(), "hunter2") {
		t.Errorf("error %v / output %q must not show a password", err, out.String())
	}
}

func TestHelpDocumentsEverySetting(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	_, err := parseFlags([]string{"-help"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("parseFlags(-help) = %v, want flag.ErrHelp", err)
	}
	help := out.String()
	for _, name := range []string{"addr", "seats", "max-logins-per-user", "requests-per-minute", "idle-timeout",
		"token-lifetime", "refresh-token-lifetime", "token-login-limit-style", "refresh-revokes-access-token",
		"throttle-plain-text", "user", "client", "seed", "log-level", "log-format"} {
		i := strings.Index(help, "\n  -"+name+" ")
		if i < 0 {
			i = strings.Index(help, "\n  -"+name+"\n")
		}
		if i < 0 {
			t.Errorf("help does not list -%s", name)
			continue
		}
		entry := help[i+1:]
		if next := strings.Index(entry[1:], "\n  -"); next >= 0 {
			entry = entry[:next+1]
		}
		if !strings.Contains(entry, "default") {
			t.Errorf("help for -%s states no default: %q", name, entry)
		}
	}
	for _, s := range []string{emulator.PathToken, emulator.DemoClientID, "/_emulator/", "Go duration"} {
		if !strings.Contains(help, s) {
			t.Errorf("help does not mention %q", s)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the server's log writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunServesUntilCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	urlc := make(chan string, 1)
	errc := make(chan error, 1)
	var logs syncBuffer
	go func() {
		errc <- run(ctx, []string{"-addr", "127.0.0.1:0", "-seats", "1", "-log-format", "json", "-log-level", "debug"}, &logs,
			func(u string) { urlc <- u })
	}()
	var base string
	select {
	case base = <-urlc:
	case err := <-errc:
		t.Fatalf("run returned early: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("run did not start within 5 s")
	}

	form := url.Values{"grant_type": {"password"}, "client_id": {emulator.DemoClientID},
		"client_secret": {emulator.DemoClientSecret}, "username": {emulator.DemoUser},
		"password": {emulator.DemoPassword}, "scope": {"api"}}
	for i, want := range []int{http.StatusOK, http.StatusBadRequest} {
		resp, err := http.PostForm(base+emulator.PathToken, form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("grant %d = %d, want %d with -seats 1", i, resp.StatusCode, want)
		}
	}
	form.Set("password", "wrong-password-xyz")
	resp, err := http.PostForm(base+emulator.PathToken, form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("grant with a wrong password = %d, want 400", resp.StatusCode)
	}
	resp, err = http.Post(base+"/_emulator/clock/advance", "application/json", strings.NewReader(`{"by":"1h"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = http.Get(base + "/_emulator/stats")
	if err != nil {
		t.Fatal(err)
	}
	var st emulator.Stats
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	// The idle timeout (10 minutes) passed before the token expired.
	if err != nil || st.OpenSessions != 0 || st.SessionsClosed["idle_timeout"] != 1 {
		t.Errorf("stats after advancing 1h = %+v (%v), want the session closed by the idle timeout", st, err)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("run = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop within 10 s of cancel")
	}
	for _, s := range []string{`"msg":"acumatica emulator ready"`, `"msg":"emulator stopped"`} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("logs lack %s:\n%s", s, logs.String())
		}
	}
	for _, secret := range []string{emulator.DemoPassword, emulator.DemoClientSecret, "wrong-password-xyz"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs contain the secret %q", secret)
		}
	}
	if !strings.Contains(logs.String(), `"reason":"invalid_credentials"`) {
		t.Errorf("logs lack the rejected sign-in:\n%s", logs.String())
	}
}

func TestRunReportsListenError(t *testing.T) {
	t.Parallel()
	err := run(t.Context(), []string{"-addr", "127.0.0.1:not-a-port"}, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:not-a-port") {
		t.Errorf("run = %v, want a listen error naming the address", err)
	}
}
