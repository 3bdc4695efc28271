package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
)

// API keys of the test callers. The config holds only their digests.
const (
	billingKey     = "billing-api-key"
	billingNextKey = "billing-api-key-next"
	opsKey         = "ops-api-key"
	// pastedAPIKey is an API key written where its digest belongs. Errors must not show it.
	pastedAPIKey = "pasted-api-key-Tq1"
)

func keyDigest(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// withSections returns a valid one-connection config (connection demo) followed by extra
// top-level YAML.
func withSections(extra string) string {
	return connectionYAML(nil) + extra
}

// callersYAML returns a config with one caller: a billing client with an API key, and the
// given settings replaced or added (raw YAML in flow style) and keys in del removed.
func callersYAML(set map[string]string, del ...string) string {
	settings := [][2]string{
		{"name", "billing"},
		{"api_key_sha256", `"` + keyDigest(billingKey) + `"`},
		{"roles", "[client]"},
	}
	var parts []string
	for _, kv := range settings {
		if slices.Contains(del, kv[0]) {
			continue
		}
		value := kv[1]
		if v, ok := set[kv[0]]; ok {
			value = v
		}
		parts = append(parts, kv[0]+": "+value)
	}
	for _, key := range []string{"certificate_identity", "quotas", "role"} {
		if v, ok := set[key]; ok {
			parts = append(parts, key+": "+v)
		}
	}
	return withSections("callers:\n  - {" + strings.Join(parts, ", ") + "}\n")
}

var callerErrorCases = []errorCase{
	{"CallersNotList", withSections("callers: {name: billing}\n"), "callers", "must be a list of callers, got a mapping"},
	{"CallersEmpty", withSections("callers: []\n"), "callers", "is empty"},
	{"CallerNotMapping", withSections("callers: [billing]\n"), "callers[0]", "must be a mapping of caller settings, got a string"},
	{"CallerNameMissing", callersYAML(nil, "name"), "callers[0].name", "missing"},
	{"CallerNameInvalid", callersYAML(map[string]string{"name": `"bill ing"`}), "callers[0].name", `"bill ing" is invalid`},
	{"CallerNameDuplicate", withSections("callers:\n" +
		"  - {name: billing, api_key_sha256: " + keyDigest(billingKey) + ", roles: [client]}\n" +
		"  - {name: billing, api_key_sha256: " + keyDigest(opsKey) + ", roles: [client]}\n"),
		"callers[1].name", `"billing" is already the name of callers[0]`},
	{"CallerNoCredentials", callersYAML(nil, "api_key_sha256"), "callers[0]", "has no credentials"},
	{"CallerUnknownSetting", callersYAML(map[string]string{"role": "[admin]"}), "callers[0].role", "unknown setting; did you mean roles?"},
	{"APIKeyNotHex", callersYAML(map[string]string{"api_key_sha256": "abc"}), "callers[0].api_key_sha256", "got 3 characters"},
	{"APIKeyPasted", callersYAML(map[string]string{"api_key_sha256": pastedAPIKey}), "callers[0].api_key_sha256", "sha256sum"},
	{"APIKeyNotString", callersYAML(map[string]string{"api_key_sha256": "{a: b}"}), "callers[0].api_key_sha256", "got a mapping"},
	{"APIKeyListEmpty", callersYAML(map[string]string{"api_key_sha256": "[]"}), "callers[0].api_key_sha256", "is an empty list"},
	{"APIKeyRepeated", callersYAML(map[string]string{"api_key_sha256": "[" + keyDigest(billingKey) + ", " + keyDigest(billingKey) + "]"}),
		"callers[0].api_key_sha256[1]", "repeats an earlier digest"},
	{"APIKeyShared", withSections("callers:\n" +
		"  - {name: billing, api_key_sha256: " + keyDigest(billingKey) + ", roles: [client]}\n" +
		"  - {name: ops, api_key_sha256: " + strings.ToUpper(keyDigest(billingKey)) + ", roles: [admin]}\n"),
		"callers[1].api_key_sha256", "is also an API key of callers[0]"},
	{"IdentityEmpty", callersYAML(map[string]string{"certificate_identity": `""`}), "callers[0].certificate_identity", "is empty"},
	{"IdentityTooLong", callersYAML(map[string]string{"certificate_identity": strings.Repeat("x", 1025)}),
		"callers[0].certificate_identity", "1025 bytes long"},
	{"IdentityDuplicate", withSections("callers:\n" +
		"  - {name: billing, certificate_identity: spiffe://corp/billing, roles: [client]}\n" +
		"  - {name: ops, certificate_identity: spiffe://corp/billing, roles: [admin]}\n"),
		"callers[1].certificate_identity", "already the certificate identity of callers[0]"},
	{"RolesMissing", callersYAML(nil, "roles"), "callers[0].roles", "missing; set it to [client]"},
	{"RolesNotList", callersYAML(map[string]string{"roles": "client"}), "callers[0].roles", "must be a list"},
	{"RolesEmpty", callersYAML(map[string]string{"roles": "[]"}), "callers[0].roles", "is empty"},
	{"RoleUnknown", callersYAML(map[string]string{"roles": "[client, root]"}), "callers[0].roles[1]", `unknown role "root"`},
	{"RoleTwice", callersYAML(map[string]string{"roles": "[client, client]"}), "callers[0].roles[1]", "listed twice"},
	{"QuotasNotMapping", callersYAML(map[string]string{"quotas": "3"}), "callers[0].quotas", "must be a mapping of connection name to quota"},
	{"QuotaUnknownConnection", callersYAML(map[string]string{"quotas": "{other: 1}"}), "callers[0].quotas.other",
		`connection "other" is not configured; the connections are demo`},
	{"QuotaZero", callersYAML(map[string]string{"quotas": "{demo: 0}"}), "callers[0].quotas.demo", "must be between 1 and 100000, got 0"},
	{"QuotaTooLarge", callersYAML(map[string]string{"quotas": "{demo: 100001}"}), "callers[0].quotas.demo", "got 100001"},
	{"QuotaNotNumber", callersYAML(map[string]string{"quotas": "{demo: two}"}), "callers[0].quotas.demo", `must be a whole number of leases, got a string "two"`},
	{"QuotaTwice", callersYAML(map[string]string{"quotas": "{demo: 1, demo: 2}"}), "callers[0].quotas.demo", "is set twice"},
}

func TestParseCallerErrors(t *testing.T) {
	runErrorCases(t, callerErrorCases)
	for _, tt := range callerErrorCases {
		_, _, err := Parse([]byte(tt.yaml), "", lookupTestEnv)
		if err != nil && strings.Contains(err.Error(), pastedAPIKey) {
			t.Errorf("%s: error %q shows the pasted API key", tt.name, err)
		}
	}
}

// runErrorCases checks that each config yields exactly one FieldError with the wanted field and
// message, and that no error shows a secret.
func runErrorCases(t *testing.T, cases []errorCase) {
	t.Helper()
	dir := secretDir(t)
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			file, _, err := Parse([]byte(tt.yaml), dir, lookupTestEnv)
			if file != nil {
				t.Errorf("Parse returned a File for an invalid config:\n%s", tt.yaml)
			}
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("Parse error = %v (%T), want a *ValidationError; config:\n%s", err, err, tt.yaml)
			}
			if len(verr.Errors) != 1 {
				t.Fatalf("Parse returned %d errors, want 1:\n%v\nconfig:\n%s", len(verr.Errors), verr, tt.yaml)
			}
			got := verr.Errors[0]
			if got.Field != tt.wantField {
				t.Errorf("Field = %q, want %q (message %q)", got.Field, tt.wantField, got.Message)
			}
			if !strings.Contains(got.Message, tt.wantMsg) {
				t.Errorf("Message = %q, want it to contain %q", got.Message, tt.wantMsg)
			}
			assertNoSecrets(t, err.Error())
			assertNoKeyMaterial(t, err.Error())
		})
	}
}

func TestParseCallers(t *testing.T) {
	yaml := withSections(`callers:
  - name: billing
    api_key_sha256:
      - ` + keyDigest(billingKey) + `
      - ` + strings.ToUpper(keyDigest(billingNextKey)) + `
    certificate_identity: spiffe://corp/billing
    roles: [client]
    quotas: {demo: 2}
  - name: ops.team-1
    api_key_sha256: "` + keyDigest(opsKey) + `"
    roles: [admin, client]
`)
	file, warnings, err := Parse([]byte(yaml), "", lookupTestEnv)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %q, want none", warnings)
	}
	if len(file.Callers) != 2 {
		t.Fatalf("got %d callers, want 2", len(file.Callers))
	}
	billing, ops := file.Callers[0], file.Callers[1]
	if billing.Name != "billing" {
		t.Errorf("callers[0].Name = %q, want billing", billing.Name)
	}
	wantKeys := [][sha256.Size]byte{sha256.Sum256([]byte(billingKey)), sha256.Sum256([]byte(billingNextKey))}
	if !slices.Equal(billing.APIKeySHA256, wantKeys) {
		t.Errorf("callers[0].APIKeySHA256 = %x, want %x", billing.APIKeySHA256, wantKeys)
	}
	if billing.CertificateIdentity != "spiffe://corp/billing" {
		t.Errorf("callers[0].CertificateIdentity = %q, want spiffe://corp/billing", billing.CertificateIdentity)
	}
	if !slices.Equal(billing.Roles, []string{RoleClient}) {
		t.Errorf("callers[0].Roles = %q, want [client]", billing.Roles)
	}
	if len(billing.Quotas) != 1 || billing.Quotas["demo"] != 2 {
		t.Errorf("callers[0].Quotas = %v, want map[demo:2]", billing.Quotas)
	}
	if ops.Name != "ops.team-1" {
		t.Errorf("callers[1].Name = %q, want ops.team-1", ops.Name)
	}
	if want := [][sha256.Size]byte{sha256.Sum256([]byte(opsKey))}; !slices.Equal(ops.APIKeySHA256, want) {
		t.Errorf("callers[1].APIKeySHA256 = %x, want %x", ops.APIKeySHA256, want)
	}
	if ops.CertificateIdentity != "" {
		t.Errorf("callers[1].CertificateIdentity = %q, want empty", ops.CertificateIdentity)
	}
	if !slices.Equal(ops.Roles, []string{RoleAdmin, RoleClient}) {
		t.Errorf("callers[1].Roles = %q, want [admin client]", ops.Roles)
	}
	if ops.Quotas != nil {
		t.Errorf("callers[1].Quotas = %v, want nil", ops.Quotas)
	}
}

func TestParseWithoutSecuritySections(t *testing.T) {
	file, _, err := Parse([]byte(connectionYAML(nil)), "", lookupTestEnv)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if file.Callers != nil {
		t.Errorf("Callers = %v, want nil without a callers section", file.Callers)
	}
	if file.Encryption != nil {
		t.Errorf("Encryption = %v, want nil without an encryption section", file.Encryption)
	}
}

// TestParseSecuritySectionsWithBrokenConnection checks that errors in callers and encryption
// are reported together with those of the connections.
func TestParseSecuritySectionsWithBrokenConnection(t *testing.T) {
	yaml := connectionYAML(map[string]string{"max_sessions": "0"}) +
		"callers: [{name: billing, roles: [client]}]\n" +
		"encryption: {keys: [{id: k1}], active: k1}\n"
	_, _, err := Parse([]byte(yaml), "", lookupTestEnv)
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Parse error = %v, want a *ValidationError", err)
	}
	var fields []string
	for _, fe := range verr.Errors {
		fields = append(fields, fe.Field)
	}
	want := []string{"connections[0].max_sessions", "callers[0]", "encryption.keys[0]"}
	if !slices.Equal(fields, want) {
		t.Errorf("error fields = %q, want %q", fields, want)
	}
}

// checkSecurityInvariants fails when an accepted config breaks a rule of the callers or
// encryption sections.
func checkSecurityInvariants(t *testing.T, file *File) {
	t.Helper()
	connections := map[string]bool{}
	for _, c := range file.Connections {
		connections[c.Name] = true
	}
	names, identities := map[string]bool{}, map[string]bool{}
	keys := map[[sha256.Size]byte]bool{}
	for i, c := range file.Callers {
		if !callerNamePattern.MatchString(c.Name) || names[c.Name] {
			t.Errorf("callers[%d]: accepted name %q", i, c.Name)
		}
		names[c.Name] = true
		if len(c.APIKeySHA256) == 0 && c.CertificateIdentity == "" {
			t.Errorf("callers[%d]: accepted a caller without credentials", i)
		}
		for _, k := range c.APIKeySHA256 {
			if keys[k] {
				t.Errorf("callers[%d]: accepted an API key digest that another caller has", i)
			}
			keys[k] = true
		}
		if c.CertificateIdentity != "" && identities[c.CertificateIdentity] {
			t.Errorf("callers[%d]: accepted certificate identity %q twice", i, c.CertificateIdentity)
		}
		identities[c.CertificateIdentity] = true
		if len(c.Roles) == 0 {
			t.Errorf("callers[%d]: accepted a caller without roles", i)
		}
		for _, r := range c.Roles {
			if r != RoleClient && r != RoleAdmin {
				t.Errorf("callers[%d]: accepted role %q", i, r)
			}
		}
		for conn, q := range c.Quotas {
			if !connections[conn] || q < 1 || q > MaxQuota {
				t.Errorf("callers[%d]: accepted quota %d for connection %q", i, q, conn)
			}
		}
	}
	if enc := file.Encryption; enc != nil {
		ids := map[string]bool{}
		for i, k := range enc.Keys {
			if !keyIDPattern.MatchString(k.ID) || ids[k.ID] || len(k.Secret) != EncryptionKeySize {
				t.Errorf("encryption.keys[%d]: accepted id %q with a %d-byte key", i, k.ID, len(k.Secret))
			}
			ids[k.ID] = true
		}
		if !ids[enc.Active] {
			t.Errorf("encryption: accepted active key %q that is not among the keys", enc.Active)
		}
	}
}
