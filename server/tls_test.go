package server_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/acubroker/acubroker/server"
)

// serverSerial makes a health check on a new connection and returns the
// serial number of the certificate that the server presented.
func serverSerial(t *testing.T, env *secureEnv) int64 {
	t.Helper()
	var p peer.Peer
	_, err := healthpb.NewHealthClient(env.dial(t, clientOptions{})).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	if err != nil {
		t.Fatalf("health Check: %v", err)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		t.Fatalf("peer auth info is %T, want TLS", p.AuthInfo)
	}
	return info.State.PeerCertificates[0].SerialNumber.Int64()
}

// replaceFile writes data to path and moves its modification time forward,
// so that a change within the file system's timestamp resolution is seen.
func replaceFile(t *testing.T, path string, data []byte, modTime time.Time) {
	t.Helper()
	writeFile(t, path, data)
	if err := os.Chtimes(path, modTime, modTime); err != nil {
		t.Fatal(err)
	}
}

func TestTLSReloadsCertificate(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	env := startSecure(t, secureOptions{callers: testCallers(), logs: logs})
	certFile, keyFile := filepath.Join(env.tlsDir, "server.crt"), filepath.Join(env.tlsDir, "server.key")

	if got := serverSerial(t, env); got != 1 {
		t.Fatalf("server certificate serial = %d, want 1", got)
	}

	certPEM, keyPEM := env.ca.issuePEM(t, serverTemplate(2))
	later := time.Now().Add(time.Minute)
	// The certificate is written first: a handshake in between sees a
	// certificate that does not match the key and keeps the old pair.
	replaceFile(t, certFile, certPEM, later)
	if got := serverSerial(t, env); got != 1 {
		t.Errorf("serial after only the certificate changed = %d, want the old pair's 1", got)
	}
	if !strings.Contains(logs.String(), "cannot load the changed TLS certificate") {
		t.Errorf("the logs lack the failed reload:\n%s", logs)
	}
	replaceFile(t, keyFile, keyPEM, later)
	if got := serverSerial(t, env); got != 2 {
		t.Errorf("serial after the certificate and key changed = %d, want 2", got)
	}
	if !strings.Contains(logs.String(), "loaded a new TLS certificate") {
		t.Errorf("the logs lack the reload:\n%s", logs)
	}

	replaceFile(t, certFile, []byte("not a certificate"), later.Add(time.Minute))
	if got := serverSerial(t, env); got != 2 {
		t.Errorf("serial after the certificate file broke = %d, want the last good pair's 2", got)
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Errorf("the logs contain the private key:\n%s", logs)
	}
}

func TestTLSRejectsPlaintextClient(t *testing.T) {
	t.Parallel()
	env := startSecure(t, secureOptions{callers: testCallers()})
	conn, err := grpc.NewClient(env.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Error("a plaintext health check on the TLS listener succeeded")
	}
}

func TestNewTLSConfig(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "config CA")
	dir := t.TempDir()
	certPEM, keyPEM := ca.issuePEM(t, serverTemplate(7))
	otherCert, _ := ca.issuePEM(t, serverTemplate(8))
	paths := map[string][]byte{
		"server.crt": certPEM, "server.key": keyPEM, "other.crt": otherCert, "ca.crt": ca.certPEM, "empty.pem": []byte("# no PEM\n"),
	}
	for name, data := range paths {
		writeFile(t, filepath.Join(dir, name), data)
	}
	path := func(name string) string { return filepath.Join(dir, name) }

	cfg, pool, err := server.NewTLSConfig(server.TLSFiles{CertFile: path("server.crt"), KeyFile: path("server.key"), ClientCAFile: path("ca.crt")}, nil)
	if err != nil {
		t.Fatalf("NewTLSConfig: %v", err)
	}
	if pool == nil {
		t.Error("client CA pool is nil with a client CA file")
	}
	if cfg.ClientAuth != tls.RequestClientCert {
		t.Errorf("ClientAuth = %v, want RequestClientCert (the interceptor verifies)", cfg.ClientAuth)
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
	}
	cert, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || cert.Leaf.SerialNumber.Int64() != 7 {
		t.Errorf("GetCertificate = serial %v, %v; want serial 7", cert.Leaf.SerialNumber, err)
	}

	cfg, pool, err = server.NewTLSConfig(server.TLSFiles{CertFile: path("server.crt"), KeyFile: path("server.key")}, nil)
	if err != nil {
		t.Fatalf("NewTLSConfig without client CAs: %v", err)
	}
	if pool != nil || cfg.ClientAuth != tls.NoClientCert {
		t.Errorf("without a client CA file: pool %v, ClientAuth %v; want nil and NoClientCert", pool, cfg.ClientAuth)
	}

	errorCases := []struct {
		name    string
		files   server.TLSFiles
		wantMsg string
	}{
		{"NoKey", server.TLSFiles{CertFile: path("server.crt")}, "-tls-key"},
		{"MissingCert", server.TLSFiles{CertFile: path("nope.crt"), KeyFile: path("server.key")}, "nope.crt"},
		{"KeyMismatch", server.TLSFiles{CertFile: path("other.crt"), KeyFile: path("server.key")}, "does not match"},
		{"CAWithoutPEM", server.TLSFiles{CertFile: path("server.crt"), KeyFile: path("server.key"), ClientCAFile: path("empty.pem")}, "no PEM certificate"},
		{"CAMissing", server.TLSFiles{CertFile: path("server.crt"), KeyFile: path("server.key"), ClientCAFile: path("nope.pem")}, "client CA file"},
	}
	for _, tt := range errorCases {
		_, _, err := server.NewTLSConfig(tt.files, nil)
		if err == nil {
			t.Errorf("%s: NewTLSConfig succeeded, want an error", tt.name)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantMsg) {
			t.Errorf("%s: error %q does not contain %q", tt.name, err, tt.wantMsg)
		}
		if strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("%s: error %q contains the key", tt.name, err)
		}
	}
}
