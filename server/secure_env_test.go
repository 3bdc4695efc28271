package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/acubroker/acubroker/acumatica"
	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/emulator"
	"github.com/acubroker/acubroker/internal/brokertest"
	"github.com/acubroker/acubroker/internal/testdb"
	"github.com/acubroker/acubroker/server"
	"github.com/acubroker/acubroker/store"
)

// secureOptions configure startSecure.
type secureOptions struct {
	callers []server.Caller
	sealer  broker.Sealer
	// logs receives the broker's and the server's logs at debug level;
	// nil discards them.
	logs io.Writer
}

// secureEnv is a broker served over TLS on 127.0.0.1, with client
// certificates verified against ca.
type secureEnv struct {
	emu    *emulator.Server
	pool   *pgxpool.Pool
	erp    *recordingERP
	addr   string
	ca     *testCA
	tlsDir string
}

// startSecure starts the emulator, a fresh database, a broker and its gRPC
// server with TLS and opts' callers. The connection brokertest.ConnectionName
// allows leases of up to three hours, so that tests can advance the clock
// past a token's lifetime while they hold a lease.
func startSecure(t *testing.T, opts secureOptions) *secureEnv {
	t.Helper()
	emuCfg := emulator.DefaultConfig()
	emuCfg.Seats = 3
	emuCfg.IdleTimeout = 4 * time.Hour
	emu, err := emulator.Start(emuCfg)
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() { _ = emu.Close() })

	env := &secureEnv{emu: emu, ca: newTestCA(t, "acubroker test CA"), tlsDir: t.TempDir()}
	env.pool = brokertest.NewPool(t, testdb.New(t))
	env.erp = &recordingERP{ERP: brokertest.NewERP(t, emu.URL, nil, emu.Emulator.Now)}

	logger := slog.New(slog.DiscardHandler)
	if opts.logs != nil {
		logger = slog.New(slog.NewTextHandler(opts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	b, err := broker.New(broker.Config{
		Store: store.New(env.pool),
		Connections: []broker.Connection{{
			Name:            brokertest.ConnectionName,
			MaxSessions:     3,
			MaxWait:         5 * time.Second,
			DefaultLeaseTTL: 5 * time.Minute,
			MaxLeaseTTL:     3 * time.Hour,
			OfflineAccess:   true,
			ERP:             env.erp,
		}},
		Clock:               emu.Emulator,
		Logger:              logger.With("component", "broker"),
		Sealer:              opts.sealer,
		Quota:               server.CallerQuotas(opts.callers),
		PollInterval:        200 * time.Millisecond,
		MaintenanceInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("new broker: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(b.Stop)

	files := env.writeServerFiles(t)
	tlsConfig, clientCAs, err := server.NewTLSConfig(files, logger.With("component", "tls"))
	if err != nil {
		t.Fatalf("NewTLSConfig: %v", err)
	}
	srv := server.New(server.Config{
		Broker:    b,
		Logger:    logger.With("component", "grpc"),
		Callers:   opts.callers,
		ClientCAs: clientCAs,
		TLS:       tlsConfig,
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	env.addr = lis.Addr().String()
	return env
}

// writeServerFiles writes a server certificate for 127.0.0.1, its key and
// the CA certificate into env.tlsDir.
func (env *secureEnv) writeServerFiles(t *testing.T) server.TLSFiles {
	t.Helper()
	files := server.TLSFiles{
		CertFile:     filepath.Join(env.tlsDir, "server.crt"),
		KeyFile:      filepath.Join(env.tlsDir, "server.key"),
		ClientCAFile: filepath.Join(env.tlsDir, "ca.crt"),
	}
	certPEM, keyPEM := env.ca.issuePEM(t, serverTemplate(1))
	writeFile(t, files.CertFile, certPEM)
	writeFile(t, files.KeyFile, keyPEM)
	writeFile(t, files.ClientCAFile, env.ca.certPEM)
	return files
}

// clientOptions are the credentials of one test client.
type clientOptions struct {
	cert   *tls.Certificate
	apiKey string
}

// dial connects to the environment over TLS, trusting env.ca for the
// server certificate.
func (env *secureEnv) dial(t *testing.T, opts clientOptions) *grpc.ClientConn {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(env.ca.cert)
	tlsConfig := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if opts.cert != nil {
		tlsConfig.Certificates = []tls.Certificate{*opts.cert}
	}
	dialOpts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig))}
	if opts.apiKey != "" {
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(bearerKey(opts.apiKey)))
	}
	conn, err := grpc.NewClient(env.addr, dialOpts...)
	if err != nil {
		t.Fatalf("dial %s: %v", env.addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// bearerKey sends an API key as "authorization: Bearer KEY" metadata.
type bearerKey string

func (k bearerKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

func (bearerKey) RequireTransportSecurity() bool { return true }

func keyDigest(key string) [sha256.Size]byte { return sha256.Sum256([]byte(key)) }

// recordingERP records every token that Acumatica issues, so that tests
// can look for them where they must not be.
type recordingERP struct {
	broker.ERP

	mu     sync.Mutex
	tokens []string
}

func (r *recordingERP) PasswordGrant(ctx context.Context) (*acumatica.Token, error) {
	tok, err := r.ERP.PasswordGrant(ctx)
	r.record(tok)
	return tok, err
}

func (r *recordingERP) Refresh(ctx context.Context, refreshToken string) (*acumatica.Token, error) {
	tok, err := r.ERP.Refresh(ctx, refreshToken)
	r.record(tok)
	return tok, err
}

func (r *recordingERP) record(tok *acumatica.Token) {
	if tok == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range []string{tok.AccessToken, tok.RefreshToken} {
		if s != "" {
			r.tokens = append(r.tokens, s)
		}
	}
}

// Tokens returns every access and refresh token issued so far.
func (r *recordingERP) Tokens() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.tokens...)
}

// syncBuffer is a bytes.Buffer that loggers on many goroutines may share.
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

// testCA is a throwaway certificate authority.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

var serialNumber struct {
	sync.Mutex
	next int64
}

func nextSerial() *big.Int {
	serialNumber.Lock()
	defer serialNumber.Unlock()
	serialNumber.next++
	return big.NewInt(1000 + serialNumber.next)
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issuePEM signs template with a new key and returns the certificate and
// key as PEM.
func (ca *testCA) issuePEM(t *testing.T, template *x509.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// issue returns a certificate for template, ready for a tls.Config.
func (ca *testCA) issue(t *testing.T, template *x509.Certificate) *tls.Certificate {
	t.Helper()
	certPEM, keyPEM := ca.issuePEM(t, template)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &cert
}

// clientTemplate is a client certificate valid for an hour around now with
// the given SPIFFE-style URI SAN.
func clientTemplate(t *testing.T, uri string) *x509.Certificate {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	return &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: "client"},
		URIs:         []*url.URL{u},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// serverTemplate is a server certificate for 127.0.0.1 with the given
// serial number.
func serverTemplate(serial int64) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "acubroker test server"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
