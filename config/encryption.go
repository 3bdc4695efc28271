package config

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EncryptionKeySize is the size of an encryption key in bytes (AES-256).
const EncryptionKeySize = 32

// Encryption holds the keys that encrypt session credentials in the database.
type Encryption struct {
	// Keys are every key that may have sealed a stored value. Old keys stay here until
	// broker rotate-keys has re-sealed the values under Active.
	Keys []EncryptionKey
	// Active is the id of the key that seals new values.
	Active string
}

// EncryptionKey is one key, read from a file or an environment variable.
type EncryptionKey struct {
	// ID is stored next to every value the key seals.
	ID string
	// Secret is the decoded key, EncryptionKeySize bytes.
	Secret []byte
}

// String returns the key id without the secret.
func (k EncryptionKey) String() string {
	return "config.EncryptionKey{ID: " + k.ID + ", Secret: [redacted]}"
}

// GoString keeps the secret out of %#v output.
func (k EncryptionKey) GoString() string { return k.String() }

// LogValue keeps the secret out of logs.
func (k EncryptionKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

var (
	encryptionKeys    = []string{"keys", "active"}
	encryptionKeyKeys = []string{"id", "file", "env"}
	keyIDPattern      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
)

// encryption parses the encryption section, and returns nil when it is missing.
func (p *parser) encryption(e entry) *Encryption {
	if !e.present() {
		return nil
	}
	const field = "encryption"
	if resolve(e.value).Kind != yaml.MappingNode {
		p.fail(field, e.value, "must be a mapping such as {keys: [{id: k1, env: ACUBROKER_KEY_K1}], active: k1}, got %s",
			describe(e.value))
		return nil
	}
	fields := p.mappingFields(field, e.value, encryptionKeys)
	enc := &Encryption{}

	errsBefore := len(p.errs)
	list := fields["keys"]
	items := resolve(list.value)
	switch {
	case !list.present():
		p.fail(field+".keys", e.value, "missing; list at least one key as {id: k1, env: NAME} or {id: k1, file: PATH}")
	case items.Kind != yaml.SequenceNode:
		p.fail(field+".keys", items, "must be a list of keys, got %s", describe(items))
	case len(items.Content) == 0:
		p.fail(field+".keys", items, "is empty; list at least one key")
	default:
		firstUse := map[string]int{}
		for i, item := range items.Content {
			path := fmt.Sprintf("%s.keys[%d]", field, i)
			key, idNode := p.encryptionKey(path, item)
			if key.ID == "" {
				continue
			}
			if first, ok := firstUse[key.ID]; ok {
				p.fail(path+".id", idNode, "%q is already the id of keys[%d]; ids must be unique", key.ID, first)
				continue
			}
			firstUse[key.ID] = i
			enc.Keys = append(enc.Keys, key)
		}
	}

	active := p.requiredString(field, "active", e.value, fields["active"],
		"set it to the id of the key that encrypts new values")
	if active != "" {
		found := false
		ids := make([]string, 0, len(enc.Keys))
		for _, k := range enc.Keys {
			ids = append(ids, k.ID)
			found = found || k.ID == active
		}
		// When keys has errors, the active key may be among the broken ones: report only those.
		if !found && len(p.errs) == errsBefore {
			p.fail(field+".active", fields["active"].value, "%q is not the id of a key; the keys are %s", active, strings.Join(ids, ", "))
		}
		enc.Active = active
	}
	return enc
}

// encryptionKey parses one item of encryption.keys and returns it with the node of its id. A
// key with errors comes back with an empty ID.
func (p *parser) encryptionKey(path string, node *yaml.Node) (EncryptionKey, *yaml.Node) {
	if resolve(node).Kind != yaml.MappingNode {
		p.fail(path, node, "must be a mapping such as {id: k1, env: NAME}, got %s", describe(node))
		return EncryptionKey{}, nil
	}
	fields := p.mappingFields(path, node, encryptionKeyKeys)
	errsBefore := len(p.errs)

	id := p.requiredString(path, "id", node, fields["id"], "give the key an id such as k1")
	if id != "" && !keyIDPattern.MatchString(id) {
		p.fail(path+".id", fields["id"].value, "%q is invalid; use 1 to 63 letters, digits, '.', '_' or '-', "+
			"starting with a letter or digit", id)
	}

	var encoded string
	fileSet, envSet := fields["file"].present(), fields["env"].present()
	switch {
	case fileSet && envSet:
		p.fail(path+".env", fields["env"].key, "conflicts with file; set only one of file and env")
	case envSet:
		if name, ok := p.scalar(path+".env", fields["env"].value); ok {
			encoded = p.secretFromEnv(path+".env", fields["env"].value, name, "file", "encryption key")
		}
	case fileSet:
		if file, ok := p.scalar(path+".file", fields["file"].value); ok {
			encoded = p.secretFromFile(path+".file", fields["file"].value, file, "env", "encryption key")
		}
	default:
		p.fail(path, node, "has no key; set env to the name of an environment variable that holds the key, "+
			"or file to a file that holds it (a base64 key from: head -c 32 /dev/urandom | base64)")
	}
	var secret []byte
	if encoded != "" {
		secret = p.decodeKey(path, fields, encoded)
	}
	if len(p.errs) > errsBefore {
		return EncryptionKey{}, fields["id"].value
	}
	return EncryptionKey{ID: id, Secret: secret}, fields["id"].value
}

// decodeKey decodes a base64 key of EncryptionKeySize bytes. Errors never show the value.
func (p *parser) decodeKey(path string, fields map[string]entry, encoded string) []byte {
	source := "env"
	if fields["file"].present() {
		source = "file"
	}
	secret, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		p.fail(path+"."+source, fields[source].value, "the key is not valid base64; generate one with: head -c 32 /dev/urandom | base64")
		return nil
	}
	if len(secret) != EncryptionKeySize {
		p.fail(path+"."+source, fields[source].value, "the key decodes to %d bytes, but AES-256 needs %d; "+
			"generate one with: head -c 32 /dev/urandom | base64", len(secret), EncryptionKeySize)
		return nil
	}
	return secret
}
