// Package sealing encrypts the session credentials that the broker stores in
// Postgres (access tokens, refresh tokens and cookies) with AES-256-GCM.
//
// A [Keyring] holds one or more keys, each with an id. It seals every new
// value with its active key and stores that key's id next to the value, so
// it can open values sealed with any key it still holds. Rotating keys is
// therefore three steps: add a new key and make it active, re-seal the
// stored values (broker rotate-keys), then remove the old key.
//
// # Format
//
// A sealed value is a format byte (1), a random 12-byte nonce, and the GCM
// ciphertext with its 16-byte tag. The associated data is the format byte
// followed by the session id, so a value copied onto another session's row
// fails to open instead of handing out the wrong session's tokens.
//
// With random 96-bit nonces, NIST SP 800-38D limits one key to 2^32 seals.
// The broker seals once per sign-in and once per token refresh.
package sealing

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/acubroker/acubroker/broker"
)

// KeySize is the size of an AES-256 key in bytes.
const KeySize = 32

// maxKeyIDLength bounds a key id, which is stored in every seat row.
const maxKeyIDLength = 64

// formatV1 is the first byte of every sealed value, as the package doc describes.
const formatV1 byte = 1

const nonceSize = 12

// Key is one AES-256 key and the id stored with every value it seals.
type Key struct {
	ID     string
	Secret []byte // KeySize bytes
}

// String returns the key id without the secret.
func (k Key) String() string { return "sealing.Key{ID: " + k.ID + ", Secret: [redacted]}" }

// GoString keeps the secret out of %#v output.
func (k Key) GoString() string { return k.String() }

// LogValue keeps the secret out of logs.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// Keyring seals credentials with its active key and opens values sealed with
// any of its keys. It implements broker.Sealer and is safe for concurrent
// use.
type Keyring struct {
	active string
	aeads  map[string]cipher.AEAD
	ids    []string
}

var _ broker.Sealer = (*Keyring)(nil)

// NewKeyring returns a keyring of keys that seals with the key whose id is
// active. Every key must have a unique, non-empty id of at most 64 bytes and
// a secret of KeySize bytes. The keyring keeps only the expanded AES keys,
// not the secrets themselves.
func NewKeyring(keys []Key, active string) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("sealing: no keys; configure at least one encryption key")
	}
	k := &Keyring{active: active, aeads: make(map[string]cipher.AEAD, len(keys))}
	for i, key := range keys {
		switch {
		case key.ID == "":
			return nil, fmt.Errorf("sealing: key %d has an empty id; give every key an id such as k1", i)
		case len(key.ID) > maxKeyIDLength:
			return nil, fmt.Errorf("sealing: key id %.20q... is %d bytes long; use at most %d", key.ID, len(key.ID), maxKeyIDLength)
		case len(key.Secret) != KeySize:
			return nil, fmt.Errorf("sealing: key %q is %d bytes long; AES-256 needs %d bytes "+
				"(generate one with: head -c 32 /dev/urandom | base64)", key.ID, len(key.Secret), KeySize)
		}
		if _, dup := k.aeads[key.ID]; dup {
			return nil, fmt.Errorf("sealing: key id %q is used twice; give every key its own id", key.ID)
		}
		block, err := aes.NewCipher(key.Secret)
		if err != nil {
			return nil, fmt.Errorf("sealing: key %q: %w", key.ID, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("sealing: key %q: %w", key.ID, err)
		}
		k.aeads[key.ID] = aead
		k.ids = append(k.ids, key.ID)
	}
	if _, ok := k.aeads[active]; !ok {
		return nil, fmt.Errorf("sealing: the active key %q is not among the keys (%s); set active to one of them",
			active, strings.Join(k.ids, ", "))
	}
	return k, nil
}

// ActiveKeyID returns the id of the key that Seal uses.
func (k *Keyring) ActiveKeyID() string { return k.active }

// KeyIDs returns the ids of the keys, in the order NewKeyring got them.
func (k *Keyring) KeyIDs() []string { return slices.Clone(k.ids) }

// Seal encrypts plaintext with the active key, bound to sessionID, and
// returns the sealed value and the active key's id.
func (k *Keyring) Seal(sessionID string, plaintext []byte) ([]byte, string, error) {
	aead := k.aeads[k.active]
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plaintext)+aead.Overhead())
	out[0] = formatV1
	if _, err := rand.Read(out[1 : 1+nonceSize]); err != nil {
		return nil, "", fmt.Errorf("sealing: read a random nonce: %w", err)
	}
	out = aead.Seal(out, out[1:1+nonceSize], plaintext, associatedData(sessionID))
	return out, k.active, nil
}

// Open decrypts a value that Seal returned for sessionID with the key
// keyID. A value with key id "" was stored before encryption was configured,
// so Open returns a copy of it as it is. broker rotate-keys seals such
// values.
//
// Open fails when the keyring lacks keyID, and when the value was altered,
// was sealed for another session, or was sealed by a different key that had
// the same id. Its errors never contain the value.
func (k *Keyring) Open(sessionID string, sealed []byte, keyID string) ([]byte, error) {
	if keyID == "" {
		return bytes.Clone(sealed), nil
	}
	aead, ok := k.aeads[keyID]
	if !ok {
		return nil, fmt.Errorf("credentials are sealed with key %q, which is not configured (the keys are %s); "+
			"add that key back to encryption.keys until broker rotate-keys has re-sealed every value",
			keyID, strings.Join(k.ids, ", "))
	}
	if len(sealed) < 1+nonceSize+aead.Overhead() || sealed[0] != formatV1 {
		return nil, fmt.Errorf("credentials sealed with key %q are malformed (%d bytes, format byte %d); "+
			"the value was not written by this broker", keyID, len(sealed), firstByte(sealed))
	}
	plain, err := aead.Open(nil, sealed[1:1+nonceSize], sealed[1+nonceSize:], associatedData(sessionID))
	if err != nil {
		return nil, fmt.Errorf("credentials of session %s do not decrypt with key %q: the value was altered, "+
			"belongs to another session, or the key with this id has changed", sessionID, keyID)
	}
	return plain, nil
}

// associatedData binds a sealed value to its format and its session.
func associatedData(sessionID string) []byte {
	ad := make([]byte, 0, 1+len(sessionID))
	ad = append(ad, formatV1)
	return append(ad, sessionID...)
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}
