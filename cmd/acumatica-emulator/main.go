// Command acumatica-emulator serves an emulator of MYOB Acumatica's identity
// server and API session handling, for tests, demos and benchmarks of
// clients that must stay within Acumatica's licence limit on API sessions.
//
// It listens on 127.0.0.1:8081 by default. Run it with -help for every
// setting; docs/emulator.md describes the endpoints and the control API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/acubroker/acubroker/emulator"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stderr, nil)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "acumatica-emulator:", err)
		os.Exit(1)
	}
}

// run serves the emulator configured by args until ctx is done, logging to
// stderr. It calls ready, if set, with the server's URL once it listens.
func run(ctx context.Context, args []string, stderr io.Writer, ready func(url string)) error {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, opts)
	opts.cfg.Logger = logger
	srv, err := emulator.Listen(opts.addr, opts.cfg)
	if err != nil {
		return err
	}
	logger.Info("acumatica emulator ready", "url", srv.URL, "seats", opts.cfg.Seats,
		"token_url", srv.URL+emulator.PathToken, "client_id", opts.cfg.Clients[0].ID)
	if ready != nil {
		ready(srv.URL)
	}
	<-ctx.Done()
	logger.Info("shutting down", "reason", context.Cause(ctx))
	return srv.Close()
}

// options are the parsed command-line settings.
type options struct {
	addr      string
	cfg       emulator.Config
	logLevel  slog.Level
	logFormat string
}

// parseFlags parses args into options and validates them. Help and errors go
// to output; -help returns flag.ErrHelp.
func parseFlags(args []string, output io.Writer) (options, error) {
	opts := options{cfg: emulator.DefaultConfig()}
	users := &credentialList{what: "user", pairs: [][2]string{{emulator.DemoUser, emulator.DemoPassword}}}
	clients := &credentialList{what: "client", pairs: [][2]string{{emulator.DemoClientID, emulator.DemoClientSecret}}}
	fs := newFlagSet(&opts, users, clients)
	fs.SetOutput(output)
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected argument %q: every setting is a flag, see -help", fs.Arg(0))
	}
	if opts.logFormat != "text" && opts.logFormat != "json" {
		return options{}, fmt.Errorf("invalid -log-format %q: use text or json", opts.logFormat)
	}
	c := &opts.cfg
	c.Users, c.Clients = nil, nil
	for _, p := range users.pairs {
		c.Users = append(c.Users, emulator.User{Name: p[0], Password: p[1]})
	}
	for _, p := range clients.pairs {
		c.Clients = append(c.Clients, emulator.Client{ID: p[0], Secret: p[1]})
	}
	if _, err := emulator.New(*c); err != nil {
		return options{}, err
	}
	return opts, nil
}

// newFlagSet defines one flag per setting, writing into opts, users and
// clients. The defaults are the values already in opts.
func newFlagSet(opts *options, users, clients *credentialList) *flag.FlagSet {
	c := &opts.cfg
	fs := flag.NewFlagSet("acumatica-emulator", flag.ContinueOnError)
	fs.Usage = func() { printUsage(fs) }
	fs.StringVar(&opts.addr, "addr", "127.0.0.1:8081", "TCP `host:port` to listen on")
	fs.IntVar(&c.Seats, "seats", c.Seats,
		"licence limit \"Maximum Number of Web Services API Users\": API sessions open at once; 0 = unlimited")
	fs.IntVar(&c.MaxLoginsPerUser, "max-logins-per-user", c.MaxLoginsPerUser,
		"open sessions allowed per user, checked after -seats; 0 = unlimited (default 0)")
	fs.IntVar(&c.RequestsPerMinute, "requests-per-minute", c.RequestsPerMinute,
		"requests to the token, sign-in, sign-out and data endpoints allowed in any 60 s window; "+
			"0 = unlimited (default 0)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout,
		"time without use after which a session closes (Go duration, e.g. 10m)")
	fs.DurationVar(&c.TokenLifetime, "token-lifetime", c.TokenLifetime,
		"access token lifetime, returned as expires_in (Go duration)")
	fs.DurationVar(&c.RefreshTokenLifetime, "refresh-token-lifetime", c.RefreshTokenLifetime,
		"absolute lifetime of a grant's refresh tokens, from its password grant (Go duration)")
	fs.StringVar(&c.TokenLoginLimitStyle, "token-login-limit-style", c.TokenLoginLimitStyle,
		"token endpoint reply when no seat is free: \"invalid_grant\" (400) or \"pxexception\" (500 envelope)")
	fs.BoolVar(&c.RefreshRevokesAccessToken, "refresh-revokes-access-token", c.RefreshRevokesAccessToken,
		"revoke a grant's previous access token when it is refreshed (default false: it stays valid until it expires)")
	fs.BoolVar(&c.ThrottlePlainText, "throttle-plain-text", c.ThrottlePlainText,
		"send 429 bodies as text/plain instead of the JSON error envelope (default false)")
	fs.Var(users, "user", "API user as `name:password`; repeat for more users; the first use replaces the default")
	fs.Var(clients, "client", "connected application as `id:secret`, the id like <GUID>@<tenant>; "+
		"repeat for more; the first use replaces the default")
	fs.Int64Var(&c.Seed, "seed", c.Seed,
		"seed of the random source that picks the calls a fault with a ratio hits (default 0)")
	fs.TextVar(&opts.logLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	fs.StringVar(&opts.logFormat, "log-format", "text", "log `format`: text or json")
	return fs
}

func printUsage(fs *flag.FlagSet) {
	out := fs.Output()
	fmt.Fprintf(out, `Usage: acumatica-emulator [flags]

Serves an emulator of MYOB Acumatica's identity server and REST API sessions:
  GET  %s
  POST %s (password and refresh_token grants)
  POST %s
  POST %s, POST %s
  GET  %s[/{CustomerID}]
and a control API under %s (stats, sessions, limits, clock, restart, faults).

Demo credentials: client %s / %s, user %s / %s.

Flags:
`, emulator.PathDiscovery, emulator.PathToken, emulator.PathRevocation, emulator.PathLogin,
		emulator.PathLogout, emulator.PathCustomers, emulator.PathControl,
		emulator.DemoClientID, emulator.DemoClientSecret, emulator.DemoUser, emulator.DemoPassword)
	fs.PrintDefaults()
}

func newLogger(w io.Writer, opts options) *slog.Logger {
	ho := &slog.HandlerOptions{Level: opts.logLevel}
	if opts.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// credentialList is a repeatable flag of name:secret pairs. Its first Set
// replaces the default pairs.
type credentialList struct {
	what     string
	pairs    [][2]string
	replaced bool
}

// String shows the names only, so that -help prints no secret other than
// the demo ones it lists above.
func (l *credentialList) String() string {
	if l == nil {
		return ""
	}
	names := make([]string, len(l.pairs))
	for i, p := range l.pairs {
		names[i] = p[0] + ":…"
	}
	return strings.Join(names, ",")
}

func (l *credentialList) Set(v string) error {
	name, secret, ok := strings.Cut(v, ":")
	if !ok || name == "" || secret == "" {
		return fmt.Errorf("invalid %s %q: use the form name:secret", l.what, redact(v))
	}
	if !l.replaced {
		l.pairs, l.replaced = nil, true
	}
	l.pairs = append(l.pairs, [2]string{name, secret})
	return nil
}

// redact keeps the part of a name:secret value before the first colon.
func redact(v string) string {
	if name, _, ok := strings.Cut(v, ":"); ok {
		return name + ":…"
	}
	return v
}
