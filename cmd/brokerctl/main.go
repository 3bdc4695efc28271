// Command brokerctl is the operator's client of acubroker's AdminService: it
// shows connections, sessions and audit events, and signs sessions out,
// pauses, resumes and drains connections.
//
// Usage:
//
//	brokerctl [flags] COMMAND [flags] [ARGS]
//
// Run "brokerctl help" for the commands and "brokerctl COMMAND -h" for their
// flags. Output is an aligned table by default and protobuf JSON with -o
// json.
//
// Exit codes: 0 success; 1 the call failed or the broker cannot be reached;
// 2 invalid usage; 3 some sign-outs were not confirmed by Acumatica (the
// broker retries them).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitUnconfirmed = 3
)

const defaultAddr = "127.0.0.1:50051"

const usage = `brokerctl manages a running acubroker through its AdminService.

Usage:
  brokerctl [flags] COMMAND [flags] [ARGS]

Commands:
  connections [NAME]               list connections with their seats, waiters and counters
  sessions [SESSION_ID]            list open sessions, or show one
  sign-out SESSION_ID | -connection NAME
                                   sign sessions out at Acumatica, revoking their leases
  pause NAME                       stop a connection from granting new leases
  resume NAME                      let a paused connection grant leases again
  drain NAME                       pause, wait for holders, then sign every session out
  audit                            list admin actions and failed sign-outs, newest first

Flags of every command:
  -addr HOST:PORT    the broker's gRPC address (env BROKERCTL_ADDR; default 127.0.0.1:50051)
  -o table|json      output format (default table)
  -timeout DURATION  deadline of each call (default 30s; drain adds its -wait)
  -api-key-file PATH file holding the API key of a caller with the admin role (env BROKERCTL_API_KEY
                     holds the key itself); sent only over TLS or to a loopback address
  -tls               connect with TLS; without it the connection is plaintext
  -tls-ca-file PATH  PEM file of the CAs that signed the broker's certificate (default: the system's)
  -tls-server-name NAME
                     name to verify in the broker's certificate (default: the host of -addr)
  -tls-cert-file PATH, -tls-key-file PATH
                     client certificate and key, for a broker that identifies callers by certificate

Run "brokerctl COMMAND -h" for the flags of a command.
`

// errUsage marks an error that the flag package or the command already
// printed with its usage.
var errUsage = errors.New("usage error")

// options are the flags that every command accepts.
type options struct {
	addr          string
	output        string
	timeout       time.Duration
	apiKeyFile    string
	tls           bool
	tlsCAFile     string
	tlsServerName string
	tlsCertFile   string
	tlsKeyFile    string
}

func (o *options) register(fs *flag.FlagSet) {
	fs.StringVar(&o.addr, "addr", o.addr, "the broker's gRPC address, HOST:PORT (env BROKERCTL_ADDR)")
	fs.StringVar(&o.output, "o", o.output, "output format: table or json")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "deadline of each call")
	fs.StringVar(&o.apiKeyFile, "api-key-file", o.apiKeyFile,
		"file holding an admin caller's API key (env BROKERCTL_API_KEY holds the key itself)")
	fs.BoolVar(&o.tls, "tls", o.tls, "connect with TLS instead of plaintext")
	fs.StringVar(&o.tlsCAFile, "tls-ca-file", o.tlsCAFile, "PEM file of the CAs to trust with -tls (default: the system's)")
	fs.StringVar(&o.tlsServerName, "tls-server-name", o.tlsServerName, "name to verify in the broker's certificate with -tls")
	fs.StringVar(&o.tlsCertFile, "tls-cert-file", o.tlsCertFile, "PEM client certificate to present with -tls")
	fs.StringVar(&o.tlsKeyFile, "tls-key-file", o.tlsKeyFile, "PEM private key of -tls-cert-file")
}

// command is one brokerctl command. run parses args (the flags and
// arguments after the command's name) and calls the broker.
type command struct {
	name    string
	summary string
	run     func(c *cli, args []string) error
}

var commands = []command{
	{"connections", "[NAME]", connectionsCommand},
	{"sessions", "[SESSION_ID] [-connection NAME] [-state STATE] [-limit N]", sessionsCommand},
	{"sign-out", "SESSION_ID | -connection NAME [-reason TEXT]", signOutCommand},
	{"pause", "NAME [-reason TEXT]", pauseCommand},
	{"resume", "NAME", resumeCommand},
	{"drain", "NAME [-wait DURATION] [-reason TEXT]", drainCommand},
	{"audit", "[-connection NAME] [-action ACTION] [-limit N]", auditCommand},
}

// cli is the state of one run: the output streams, the options and, once
// connected, the client.
type cli struct {
	stdout, stderr io.Writer
	opts           options
	client         acubrokerv1.AdminServiceClient
	conn           *grpc.ClientConn
	// summary is the running command's argument synopsis, for its usage.
	summary string
	// unconfirmed is set when a sign-out was not confirmed, for exit code 3.
	unconfirmed bool
}

func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, opts: options{
		addr:    envOr("BROKERCTL_ADDR", defaultAddr),
		output:  "table",
		timeout: 30 * time.Second,
	}}
	global := flag.NewFlagSet("brokerctl", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.Usage = func() { fmt.Fprint(stderr, usage) }
	c.opts.register(global)
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if global.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	name, rest := global.Arg(0), global.Args()[1:]
	if name == "help" {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	for _, cmd := range commands {
		if cmd.name == name {
			c.summary = cmd.summary
			return c.exitCode(cmd.run(c, rest))
		}
	}
	fmt.Fprintf(stderr, "brokerctl: unknown command %q\n\n%s", name, usage)
	return exitUsage
}

func (c *cli) exitCode(err error) int {
	if c.conn != nil {
		_ = c.conn.Close()
	}
	switch {
	case err == nil && c.unconfirmed:
		return exitUnconfirmed
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		return exitUsage
	}
	fmt.Fprintf(c.stderr, "brokerctl: %v\n", err)
	return exitFailed
}

// parse parses a command's flags, which may come before, between or after
// its positional arguments, and checks the common options. It returns the
// positional arguments.
func (c *cli) parse(fs *flag.FlagSet, args []string, minArgs, maxArgs int) ([]string, error) {
	fs.SetOutput(c.stderr)
	c.opts.register(fs)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case len(positional) < minArgs:
		fmt.Fprintf(c.stderr, "brokerctl %s: missing argument\n", fs.Name())
		fs.Usage()
		return nil, errUsage
	case len(positional) > maxArgs:
		fmt.Fprintf(c.stderr, "brokerctl %s: unexpected arguments: %s\n", fs.Name(), strings.Join(positional[maxArgs:], " "))
		fs.Usage()
		return nil, errUsage
	}
	if c.opts.output != "table" && c.opts.output != "json" {
		fmt.Fprintf(c.stderr, "brokerctl %s: invalid -o %q: use table or json\n", fs.Name(), c.opts.output)
		return nil, errUsage
	}
	if c.opts.addr == "" {
		fmt.Fprintf(c.stderr, "brokerctl %s: -addr is empty: set it or BROKERCTL_ADDR to the broker's HOST:PORT\n", fs.Name())
		return nil, errUsage
	}
	return positional, nil
}

// newFlagSet returns the flag set of a command, whose usage line shows the
// command's arguments.
func (c *cli) newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "Usage: brokerctl %s %s\n\nFlags:\n", name, c.summary)
		fs.PrintDefaults()
	}
	return fs
}

// connect dials the broker. grpc.NewClient connects lazily, so an
// unreachable broker shows in the first call's error.
func (c *cli) connect() error {
	creds := insecure.NewCredentials()
	if c.opts.tls {
		cfg, err := c.tlsConfig()
		if err != nil {
			return err
		}
		creds = credentials.NewTLS(cfg)
	} else if c.opts.tlsCertFile != "" || c.opts.tlsCAFile != "" {
		return fmt.Errorf("-tls-cert-file and -tls-ca-file need -tls")
	}
	dialOpts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	key, err := c.apiKey()
	if err != nil {
		return err
	}
	if key != "" {
		if !c.opts.tls && !isLoopback(c.opts.addr) {
			return fmt.Errorf("an API key is set, but the connection to %s is plaintext; add -tls, "+
				"because the key is sent without TLS only to a loopback address", c.opts.addr)
		}
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(bearerKey(key)))
	}
	conn, err := grpc.NewClient(c.opts.addr, dialOpts...)
	if err != nil {
		return fmt.Errorf("invalid broker address %q (from -addr or BROKERCTL_ADDR): %w", c.opts.addr, err)
	}
	c.conn = conn
	c.client = acubrokerv1.NewAdminServiceClient(conn)
	return nil
}

func (c *cli) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{ServerName: c.opts.tlsServerName, MinVersion: tls.VersionTLS12}
	if c.opts.tlsCAFile != "" {
		pem, err := os.ReadFile(c.opts.tlsCAFile)
		if err != nil {
			return nil, fmt.Errorf("read -tls-ca-file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-tls-ca-file %s contains no PEM certificate", c.opts.tlsCAFile)
		}
	}
	if (c.opts.tlsCertFile == "") != (c.opts.tlsKeyFile == "") {
		return nil, errors.New("-tls-cert-file and -tls-key-file go together; set both or neither")
	}
	if c.opts.tlsCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.opts.tlsCertFile, c.opts.tlsKeyFile)
		if err != nil {
			return nil, fmt.Errorf("load the client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// apiKey returns the API key from -api-key-file, else from
// BROKERCTL_API_KEY, else "".
func (c *cli) apiKey() (string, error) {
	if c.opts.apiKeyFile == "" {
		return strings.TrimSpace(os.Getenv("BROKERCTL_API_KEY")), nil
	}
	data, err := os.ReadFile(c.opts.apiKeyFile)
	if err != nil {
		return "", fmt.Errorf("read -api-key-file: %w", err)
	}
	key := strings.TrimSpace(string(data))
	if key == "" {
		return "", fmt.Errorf("-api-key-file %s is empty", c.opts.apiKeyFile)
	}
	return key, nil
}

// bearerKey sends an API key as "authorization: Bearer KEY" metadata. The
// connect method decides whether the transport is safe for it.
type bearerKey string

func (k bearerKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

func (bearerKey) RequireTransportSecurity() bool { return false }

// isLoopback reports whether addr's host is localhost or a loopback IP.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// callContext returns the context of one call, bounded by -timeout plus
// extra.
func (c *cli) callContext(extra time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.opts.timeout+extra)
}

// envOr returns the environment variable name's value, or fallback.
func envOr(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return fallback
}
