package config

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that every config it accepts keeps the documented
// rules, and that no secret from the environment or a file reaches an error or a warning. The seed
// corpus is every table case, so `go test` runs them all without -fuzz.
func FuzzParse(f *testing.F) {
	for _, tt := range errorCases {
		f.Add([]byte(tt.yaml))
	}
	f.Add([]byte(connectionYAML(nil)))
	f.Add([]byte(connectionYAML(map[string]string{"password_file": "password.txt"}, "password_env")))
	f.Add([]byte(connectionYAML(map[string]string{"client_secret": inlineSecret}, "client_secret_env")))
	f.Add([]byte(connectionYAML(map[string]string{"<<": "{max_wait: 1m}", "lease_ttl": "{default: 1s, max: 24h}"})))
	example, err := os.ReadFile("example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	for _, tt := range slices.Concat(callerErrorCases, encryptionErrorCases) {
		f.Add([]byte(tt.yaml))
	}
	f.Add([]byte(callersYAML(map[string]string{"certificate_identity": "spiffe://corp/billing", "quotas": "{demo: 3}"})))
	f.Add([]byte(encryptionYAML("  keys: [{id: k1, env: ACU_KEY_1}, {id: k2, file: key2.b64}]\n  active: k2\n")))

	dir := secretDir(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		file, warnings, err := Parse(data, dir, lookupTestEnv)

		// Secrets that the input itself does not contain must never show up in the output.
		var output []string
		if err != nil {
			output = append(output, err.Error())
		}
		output = append(output, warnings...)
		for _, secret := range []string{envClientSecret, envPassword, fileSecret, envEncryptionKey, fileEncryptionKey, rawEncryptionKey1, rawEncryptionKey2} {
			if bytes.Contains(data, []byte(secret)) {
				continue
			}
			for _, text := range output {
				if strings.Contains(text, secret) {
					t.Fatalf("output %q contains the secret %q", text, secret)
				}
			}
		}

		if err != nil {
			if file != nil {
				t.Fatalf("Parse returned both a File and the error %v", err)
			}
			var verr *ValidationError
			if errors.As(err, &verr) {
				if len(verr.Errors) == 0 {
					t.Fatal("ValidationError without errors")
				}
				for _, fe := range verr.Errors {
					if fe.Field == "" || fe.Message == "" {
						t.Fatalf("FieldError %+v lacks a field or a message", fe)
					}
				}
			}
			return
		}
		checkInvariants(t, file)
		checkSecurityInvariants(t, file)
	})
}

// checkInvariants fails when an accepted config breaks a documented rule.
func checkInvariants(t *testing.T, file *File) {
	t.Helper()
	if len(file.Connections) == 0 {
		t.Fatal("accepted a config without connections")
	}
	names := map[string]bool{}
	for i, c := range file.Connections {
		if !namePattern.MatchString(c.Name) || names[c.Name] {
			t.Errorf("connections[%d]: accepted name %q", i, c.Name)
		}
		names[c.Name] = true
		for _, u := range []string{c.SiteURL, c.TokenURL, c.LogoutURL, c.RevocationURL} {
			if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
				t.Errorf("connections[%d]: accepted URL %q", i, u)
			}
		}
		if c.ClientID == "" || c.Username == "" || c.ClientSecret == "" || c.Password == "" {
			t.Errorf("connections[%d]: accepted an empty client ID, username or secret", i)
		}
		if !slices.Contains(c.Scopes, ScopeAPI) || c.OfflineAccess != slices.Contains(c.Scopes, ScopeOfflineAccess) {
			t.Errorf("connections[%d]: accepted scopes %q with OfflineAccess %v", i, c.Scopes, c.OfflineAccess)
		}
		if c.MaxSessions < MinMaxSessions || c.MaxSessions > MaxMaxSessions {
			t.Errorf("connections[%d]: accepted max_sessions %d", i, c.MaxSessions)
		}
		if c.DefaultLeaseTTL < minLeaseTTL || c.DefaultLeaseTTL > c.MaxLeaseTTL || c.MaxLeaseTTL > maxLeaseTTL {
			t.Errorf("connections[%d]: accepted lease_ttl default %v, max %v", i, c.DefaultLeaseTTL, c.MaxLeaseTTL)
		}
		if c.MaxWait < 0 || c.MaxWait > maxMaxWait {
			t.Errorf("connections[%d]: accepted max_wait %v", i, c.MaxWait)
		}
		if c.IdleTimeout < minIdleTimeout || c.IdleTimeout > maxIdleTimeout {
			t.Errorf("connections[%d]: accepted idle_timeout %v", i, c.IdleTimeout)
		}
		if c.TokenLifetime < minTokenLife || c.RefreshBefore < 0 || c.RefreshBefore >= c.TokenLifetime {
			t.Errorf("connections[%d]: accepted token_lifetime %v with refresh_before %v", i, c.TokenLifetime, c.RefreshBefore)
		}
		if c.IdleSignOutAfter < 0 || (c.IdleSignOutAfter > 0 && c.IdleSignOutAfter >= c.IdleTimeout) {
			t.Errorf("connections[%d]: accepted idle_sign_out_after %v with idle_timeout %v", i, c.IdleSignOutAfter, c.IdleTimeout)
		}
	}
}
