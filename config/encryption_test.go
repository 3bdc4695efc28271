package config

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

// Raw keys behind the base64 values in the test environment and files. No error may show them,
// encoded or not.
const (
	rawEncryptionKey1 = "encryption-key-one-32-bytes-long"
	rawEncryptionKey2 = "encryption-key-two-32-bytes-long"
)

var (
	envEncryptionKey   = base64.StdEncoding.EncodeToString([]byte(rawEncryptionKey1))
	fileEncryptionKey  = base64.StdEncoding.EncodeToString([]byte(rawEncryptionKey2))
	shortEncryptionKey = base64.StdEncoding.EncodeToString([]byte("sixteen-byte-key"))
)

// assertNoKeyMaterial fails when s contains an encryption key of the test environment or files.
func assertNoKeyMaterial(t *testing.T, s string) {
	t.Helper()
	for _, secret := range []string{envEncryptionKey, fileEncryptionKey, shortEncryptionKey, rawEncryptionKey1, rawEncryptionKey2} {
		if strings.Contains(s, secret) {
			t.Errorf("%q contains the encryption key %q", s, secret)
		}
	}
}

func encryptionYAML(section string) string {
	return withSections("encryption:\n" + section)
}

var encryptionErrorCases = []errorCase{
	{"EncryptionNotMapping", withSections("encryption: k1\n"), "encryption", "must be a mapping"},
	{"EncryptionUnknownSetting", encryptionYAML("  keys: [{id: k1, env: ACU_KEY_1}]\n  active: k1\n  actve: k1\n"),
		"encryption.actve", "unknown setting; did you mean active?"},
	{"KeysMissing", encryptionYAML("  active: k1\n"), "encryption.keys", "missing"},
	{"KeysNotList", encryptionYAML("  keys: {id: k1}\n  active: k1\n"), "encryption.keys", "must be a list of keys, got a mapping"},
	{"KeysEmpty", encryptionYAML("  keys: []\n  active: k1\n"), "encryption.keys", "is empty"},
	{"KeyNotMapping", encryptionYAML("  keys: [k1]\n  active: k1\n"), "encryption.keys[0]", "must be a mapping"},
	{"KeyIDMissing", encryptionYAML("  keys: [{env: ACU_KEY_1}]\n  active: k1\n"), "encryption.keys[0].id", "missing"},
	{"KeyIDInvalid", encryptionYAML("  keys: [{id: 'k 1', env: ACU_KEY_1}]\n  active: 'k 1'\n"), "encryption.keys[0].id", `"k 1" is invalid`},
	{"KeyIDDuplicate", encryptionYAML("  keys: [{id: k1, env: ACU_KEY_1}, {id: k1, file: key2.b64}]\n  active: k1\n"),
		"encryption.keys[1].id", `"k1" is already the id of keys[0]`},
	{"KeyNoSource", encryptionYAML("  keys: [{id: k1}]\n  active: k1\n"), "encryption.keys[0]", "has no key; set env"},
	{"KeyBothSources", encryptionYAML("  keys: [{id: k1, env: ACU_KEY_1, file: key2.b64}]\n  active: k1\n"),
		"encryption.keys[0].env", "conflicts with file"},
	{"KeyUnknownSetting", encryptionYAML("  keys: [{id: k1, env: ACU_KEY_1, key: abc}]\n  active: k1\n"),
		"encryption.keys[0].key", "unknown setting"},
	{"KeyEnvUnset", encryptionYAML("  keys: [{id: k1, env: ACU_KEY_NONE}]\n  active: k1\n"),
		"encryption.keys[0].env", "environment variable ACU_KEY_NONE is not set"},
	{"KeyEnvEmpty", encryptionYAML("  keys: [{id: k1, env: ACU_EMPTY}]\n  active: k1\n"),
		"encryption.keys[0].env", "environment variable ACU_EMPTY is empty"},
	{"KeyEnvInvalidName", encryptionYAML("  keys: [{id: k1, env: 1KEY}]\n  active: k1\n"),
		"encryption.keys[0].env", "not a valid environment variable name"},
	{"KeyShort", encryptionYAML("  keys: [{id: k1, env: ACU_KEY_SHORT}]\n  active: k1\n"),
		"encryption.keys[0].env", "decodes to 16 bytes, but AES-256 needs 32"},
	{"KeyNotBase64", encryptionYAML("  keys: [{id: k1, env: ACU_KEY_BAD}]\n  active: k1\n"),
		"encryption.keys[0].env", "not valid base64"},
	{"KeyFileMissing", encryptionYAML("  keys: [{id: k1, file: nope.b64}]\n  active: k1\n"),
		"encryption.keys[0].file", "cannot read"},
	{"KeyFileNotBase64", encryptionYAML("  keys: [{id: k1, file: password.txt}]\n  active: k1\n"),
		"encryption.keys[0].file", "not valid base64"},
	{"ActiveMissing", encryptionYAML("  keys: [{id: k1, env: ACU_KEY_1}]\n"), "encryption.active", "missing"},
	{"ActiveUnknown", encryptionYAML("  keys: [{id: k1, env: ACU_KEY_1}, {id: k2, file: key2.b64}]\n  active: k9\n"),
		"encryption.active", `"k9" is not the id of a key; the keys are k1, k2`},
}

func TestParseEncryptionErrors(t *testing.T) {
	runErrorCases(t, encryptionErrorCases)
}

func TestParseEncryption(t *testing.T) {
	dir := secretDir(t)
	yaml := encryptionYAML(`  keys:
    - id: k1
      env: ACU_KEY_1
    - id: k2
      file: key2.b64
  active: k2
`)
	file, warnings, err := Parse([]byte(yaml), dir, lookupTestEnv)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %q, want none", warnings)
	}
	enc := file.Encryption
	if enc == nil {
		t.Fatal("Encryption is nil")
	}
	if enc.Active != "k2" {
		t.Errorf("Active = %q, want k2", enc.Active)
	}
	if len(enc.Keys) != 2 {
		t.Fatalf("got %d keys, want 2", len(enc.Keys))
	}
	want := []struct{ id, secret string }{{"k1", rawEncryptionKey1}, {"k2", rawEncryptionKey2}}
	for i, w := range want {
		if enc.Keys[i].ID != w.id {
			t.Errorf("Keys[%d].ID = %q, want %q", i, enc.Keys[i].ID, w.id)
		}
		if !bytes.Equal(enc.Keys[i].Secret, []byte(w.secret)) {
			t.Errorf("Keys[%d].Secret is not the decoded key of %s", i, w.id)
		}
	}
	for _, verb := range []string{"%v", "%+v", "%#v"} {
		out := fmt.Sprintf(verb, *enc)
		assertNoKeyMaterial(t, out)
		// "101 110 99" is how %v prints the first bytes ("enc") of both raw keys.
		if strings.Contains(out, "101 110 99") {
			t.Errorf("%s of Encryption = %q, which shows key bytes", verb, out)
		}
		if !strings.Contains(out, "k1") {
			t.Errorf("%s of Encryption = %q, want the key ids", verb, out)
		}
	}
}
