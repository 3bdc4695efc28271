package main

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acubroker/acubroker/config"
	"github.com/acubroker/acubroker/server"
)

// writeSecurityConfig writes a config file with one connection, demo, whose
// secrets are in files next to it, followed by extra YAML. It returns the
// file's path.
func writeSecurityConfig(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"client-secret": "client-secret-value\n",
		"password":      "password-value\n",
		"broker.yaml": `connections:
  - name: demo
    site_url: http://127.0.0.1:1
    client_id: client@Company
    client_secret_file: client-secret
    username: admin
    password_file: password
    max_sessions: 1
` + extra,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "broker.yaml")
}

// writeKey writes a base64 key file next to the config and returns its
// name.
func writeKey(t *testing.T, configPath, name string, fill byte) string {
	t.Helper()
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, 32))
	if err := os.WriteFile(filepath.Join(filepath.Dir(configPath), name), []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

func TestCheckListener(t *testing.T) {
	t.Parallel()
	anonymous := security{}
	withCallers := security{callers: []server.Caller{{Name: "billing", Roles: []server.Role{server.RoleClient}}}}
	tests := []struct {
		sec     security
		listen  string
		wantErr bool
	}{
		{anonymous, "127.0.0.1:50051", false},
		{anonymous, "127.0.0.2:0", false},
		{anonymous, "[::1]:50051", false},
		{anonymous, "0.0.0.0:50051", true},
		{anonymous, ":50051", true},
		{anonymous, "[::]:50051", true},
		{anonymous, "192.0.2.10:50051", true},
		{withCallers, "0.0.0.0:50051", false},
		{withCallers, ":50051", false},
	}
	for _, tt := range tests {
		err := tt.sec.checkListener(tt.listen, nil)
		if (err != nil) != tt.wantErr {
			t.Errorf("checkListener(%q) with %d callers = %v, want error %v", tt.listen, len(tt.sec.callers), err, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "without authentication") {
			t.Errorf("checkListener(%q) error %q does not say why", tt.listen, err)
		}
	}

	var logs bytes.Buffer
	if err := anonymous.checkListener("127.0.0.1:50051", slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "authentication is off") {
		t.Errorf("serving anonymous callers on loopback logged %q, want a warning", logs.String())
	}
}

func TestNewSecurity(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	identity := &config.File{Callers: []config.Caller{{Name: "billing", CertificateIdentity: "spiffe://corp/billing", Roles: []string{"client"}}}}

	_, err := newSecurity(tlsFlags{}, identity, logger)
	if err == nil || !strings.Contains(err.Error(), "set -tls-client-ca") {
		t.Errorf("a certificate_identity without -tls-client-ca: error %v, want one naming -tls-client-ca", err)
	}
	_, err = newSecurity(tlsFlags{clientCA: "ca.pem"}, &config.File{}, logger)
	if err == nil || !strings.Contains(err.Error(), "set -tls-cert and -tls-key") {
		t.Errorf("-tls-client-ca without a certificate: error %v, want one naming -tls-cert", err)
	}

	var logs bytes.Buffer
	sec, err := newSecurity(tlsFlags{}, &config.File{
		Callers: []config.Caller{{Name: "batch", Roles: []string{"client", "admin"}, Quotas: map[string]int{"demo": 2}}},
		Encryption: &config.Encryption{
			Keys:   []config.EncryptionKey{{ID: "k1", Secret: bytes.Repeat([]byte{1}, 32)}},
			Active: "k1",
		},
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("newSecurity: %v", err)
	}
	if sec.sealer == nil {
		t.Error("an encryption section gave no sealer")
	}
	if len(sec.callers) != 1 || len(sec.callers[0].Roles) != 2 || sec.callers[0].Roles[1] != server.RoleAdmin {
		t.Errorf("callers = %+v, want batch with roles client and admin", sec.callers)
	}
	if got := sec.quota()("batch", "demo"); got != 2 {
		t.Errorf("quota(batch, demo) = %d, want 2", got)
	}
	if !strings.Contains(logs.String(), "API keys over plaintext") {
		t.Errorf("callers without TLS logged %q, want a warning about plaintext", logs.String())
	}
	if (security{}).quota() != nil {
		t.Error("quota without callers is not nil")
	}
}

func TestServeRefusesAnonymousOnAllInterfaces(t *testing.T) {
	t.Parallel()
	path := writeSecurityConfig(t, "")
	var stdout, stderr bytes.Buffer
	// The database URL points at a closed port: serve must stop before it.
	code := run([]string{"serve", "-config", path, "-listen", "0.0.0.0:0", "-database-url", "postgres://nobody@127.0.0.1:1/none",
		"-metrics-listen", ""}, &stdout, &stderr)
	if code != 1 {
		t.Errorf("exit code = %d, want 1; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "refusing to serve on 0.0.0.0:0 without authentication") {
		t.Errorf("stderr = %q, want the refusal", stderr.String())
	}
	if strings.Contains(stderr.String(), "connect to database") {
		t.Errorf("serve tried the database before refusing: %q", stderr.String())
	}
}
