package sealing

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const sessionID = "7d1b0f6e-3c8a-4f43-9a55-2f0d8c4b1e90"

func testKey(id string, fill byte) Key {
	return Key{ID: id, Secret: bytes.Repeat([]byte{fill}, KeySize)}
}

func mustKeyring(t *testing.T, active string, keys ...Key) *Keyring {
	t.Helper()
	k, err := NewKeyring(keys, active)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return k
}

func TestKeyringRoundTrip(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, "k1", testKey("k1", 1))
	plain := []byte(`{"access_token":"access-Qe7","refresh_token":"refresh-Lr2","cookies":[{"name":"a","value":"cookie-Pz4"}]}`)

	sealed, keyID, err := k.Seal(sessionID, plain)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if keyID != "k1" {
		t.Errorf("Seal key id = %q, want k1", keyID)
	}
	for _, secret := range []string{"access-Qe7", "refresh-Lr2", "cookie-Pz4", "access_token"} {
		if bytes.Contains(sealed, []byte(secret)) {
			t.Errorf("sealed value contains %q in clear text", secret)
		}
	}
	if got, want := len(sealed), 1+nonceSize+len(plain)+16; got != want {
		t.Errorf("sealed length = %d, want %d", got, want)
	}
	opened, err := k.Open(sessionID, sealed, keyID)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !bytes.Equal(opened, plain) {
		t.Errorf("Open = %q, want %q", opened, plain)
	}
}

func TestKeyringNoncesDiffer(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, "k1", testKey("k1", 1))
	first, _, err := k.Seal(sessionID, []byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	second, _, err := k.Seal(sessionID, []byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first, second) {
		t.Error("sealing the same plaintext twice gave the same value")
	}
}

func TestKeyringOpenRejects(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, "k1", testKey("k1", 1))
	sealed, _, err := k.Seal(sessionID, []byte("secret-Vb9"))
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	otherFormat := bytes.Clone(sealed)
	otherFormat[0] = 2
	sameIDOtherSecret := mustKeyring(t, "k1", testKey("k1", 2))

	tests := []struct {
		name    string
		keyring *Keyring
		session string
		value   []byte
		keyID   string
		wantMsg string
	}{
		{"OtherSession", k, "00000000-0000-0000-0000-000000000000", sealed, "k1", "belongs to another session"},
		{"Altered", k, sessionID, flipped, "k1", "was altered"},
		{"UnknownKey", k, sessionID, sealed, "k0", `key "k0", which is not configured`},
		{"Truncated", k, sessionID, sealed[:10], "k1", "malformed"},
		{"Empty", k, sessionID, nil, "k1", "malformed"},
		{"OtherFormat", k, sessionID, otherFormat, "k1", "format byte 2"},
		{"KeyIDReused", sameIDOtherSecret, sessionID, sealed, "k1", "key with this id has changed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			plain, err := tt.keyring.Open(tt.session, tt.value, tt.keyID)
			if err == nil {
				t.Fatalf("Open returned %q, want an error", plain)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "secret-Vb9") {
				t.Errorf("error %q contains the plaintext", err)
			}
		})
	}
}

func TestKeyringOpensEveryKey(t *testing.T) {
	t.Parallel()
	old := mustKeyring(t, "k1", testKey("k1", 1))
	sealed, keyID, err := old.Seal(sessionID, []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	rotated := mustKeyring(t, "k2", testKey("k1", 1), testKey("k2", 2))
	opened, err := rotated.Open(sessionID, sealed, keyID)
	if err != nil {
		t.Fatalf("Open with the old key still configured: %v", err)
	}
	if string(opened) != "payload" {
		t.Errorf("Open = %q, want payload", opened)
	}
	resealed, newID, err := rotated.Seal(sessionID, opened)
	if err != nil {
		t.Fatal(err)
	}
	if newID != "k2" {
		t.Errorf("Seal after rotation used key %q, want k2", newID)
	}
	newOnly := mustKeyring(t, "k2", testKey("k2", 2))
	if _, err := newOnly.Open(sessionID, resealed, newID); err != nil {
		t.Errorf("Open of a re-sealed value without the old key: %v", err)
	}
	if _, err := newOnly.Open(sessionID, sealed, keyID); err == nil {
		t.Error("Open of a value sealed with a removed key succeeded")
	}
}

func TestKeyringOpensPlaintext(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, "k1", testKey("k1", 1))
	plain := []byte(`{"access_token":"x"}`)
	opened, err := k.Open(sessionID, plain, "")
	if err != nil {
		t.Fatalf("Open of a value stored before encryption: %v", err)
	}
	if !bytes.Equal(opened, plain) {
		t.Errorf("Open = %q, want %q", opened, plain)
	}
}

func TestNewKeyringErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		keys    []Key
		active  string
		wantMsg string
	}{
		{"NoKeys", nil, "k1", "no keys"},
		{"EmptyID", []Key{testKey("", 1)}, "", "empty id"},
		{"LongID", []Key{testKey(strings.Repeat("k", 65), 1)}, "k", "use at most 64"},
		{"ShortSecret", []Key{{ID: "k1", Secret: []byte("short")}}, "k1", "5 bytes long; AES-256 needs 32"},
		{"DuplicateID", []Key{testKey("k1", 1), testKey("k1", 2)}, "k1", `"k1" is used twice`},
		{"ActiveMissing", []Key{testKey("k1", 1)}, "k2", `active key "k2" is not among the keys (k1)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewKeyring(tt.keys, tt.active)
			if err == nil {
				t.Fatal("NewKeyring succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestKeyRedactsSecret(t *testing.T) {
	t.Parallel()
	key := Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("key", "key", key)
	outputs := map[string]string{
		"%v":  fmt.Sprintf("%v", key),
		"%+v": fmt.Sprintf("%+v", key),
		"%#v": fmt.Sprintf("%#v", key),
		"%s":  fmt.Sprintf("%s", []Key{key}),
		"log": logs.String(),
	}
	for verb, out := range outputs {
		if strings.Contains(out, "0123456789abcdef") || strings.Contains(out, "48 49 50") {
			t.Errorf("%s output %q contains the secret", verb, out)
		}
		if !strings.Contains(out, "k1") {
			t.Errorf("%s output %q lacks the key id", verb, out)
		}
	}
}
