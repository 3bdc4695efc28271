package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Roles that a caller may have.
const (
	// RoleClient may call SessionService: acquire, renew, release and sign out leases.
	RoleClient = "client"
	// RoleAdmin may call AdminService.
	RoleAdmin = "admin"
)

// Limits of the callers section.
const (
	maxCertificateIdentity = 1024
	// MaxQuota bounds a caller's quota per connection, which counts active and queued leases.
	MaxQuota = 100_000
)

// Caller is a service that the broker lets in. It proves who it is with an API key, a client
// certificate, or both.
type Caller struct {
	// Name is the identity that the caller's leases are scoped to. It appears in logs.
	Name string
	// APIKeySHA256 are the SHA-256 digests of the caller's API keys. More than one allows a key to
	// be replaced without downtime.
	APIKeySHA256 [][sha256.Size]byte
	// CertificateIdentity is matched against the identity of a verified client certificate: its
	// first URI SAN, else its first DNS SAN, else its subject common name.
	CertificateIdentity string
	// Roles are RoleClient, RoleAdmin or both.
	Roles []string
	// Quotas caps, per connection name, how many leases the caller may hold or wait for at once.
	// A connection missing here has no cap.
	Quotas map[string]int
}

var callerKeys = []string{"name", "api_key_sha256", "certificate_identity", "roles", "quotas"}

var (
	callerNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	sha256HexPattern  = regexp.MustCompile(`^[0-9A-Fa-f]{64}$`)
)

// callers parses the callers section. connections are the names of the parsed connections,
// which quotas must name.
func (p *parser) callers(e entry, connections []string) []Caller {
	if !e.present() {
		return nil
	}
	items := resolve(e.value)
	if items.Kind != yaml.SequenceNode {
		p.fail("callers", e.value, "must be a list of callers, got %s", describe(items))
		return nil
	}
	if len(items.Content) == 0 {
		p.fail("callers", e.value, "is empty; list the services allowed to call the broker, or remove callers "+
			"to run without authentication (allowed on a loopback listener only)")
		return nil
	}
	var (
		callers    []Caller
		names      = map[string]int{}
		keys       = map[[sha256.Size]byte]int{}
		identities = map[string]int{}
	)
	for i, item := range items.Content {
		path := fmt.Sprintf("callers[%d]", i)
		c, fields := p.caller(path, item, connections)
		if c.Name != "" {
			if first, ok := names[c.Name]; ok {
				p.fail(path+".name", fields["name"].value, "%q is already the name of callers[%d]; names must be unique", c.Name, first)
			} else {
				names[c.Name] = i
			}
		}
		for _, key := range c.APIKeySHA256 {
			if first, ok := keys[key]; ok && first != i {
				p.fail(path+".api_key_sha256", fields["api_key_sha256"].value,
					"is also an API key of callers[%d]; give every caller its own key", first)
			} else {
				keys[key] = i
			}
		}
		if c.CertificateIdentity != "" {
			if first, ok := identities[c.CertificateIdentity]; ok {
				p.fail(path+".certificate_identity", fields["certificate_identity"].value,
					"%q is already the certificate identity of callers[%d]; give every caller its own", c.CertificateIdentity, first)
			} else {
				identities[c.CertificateIdentity] = i
			}
		}
		callers = append(callers, c)
	}
	return callers
}

// caller parses one item of the callers list, and returns its fields for later checks.
func (p *parser) caller(path string, node *yaml.Node, connections []string) (Caller, map[string]entry) {
	var c Caller
	if resolve(node).Kind != yaml.MappingNode {
		p.fail(path, node, "must be a mapping of caller settings, got %s", describe(node))
		return c, nil
	}
	fields := p.mappingFields(path, node, callerKeys)
	if name := p.requiredString(path, "name", node, fields["name"], "give the caller a name such as billing"); name != "" {
		if callerNamePattern.MatchString(name) {
			c.Name = name
		} else {
			p.fail(path+".name", fields["name"].value, "%q is invalid; use 1 to 63 letters, digits, '.', '_' or '-', "+
				"starting with a letter or digit", name)
		}
	}
	c.APIKeySHA256 = p.apiKeyHashes(path+".api_key_sha256", fields["api_key_sha256"])
	c.CertificateIdentity = p.certificateIdentity(path+".certificate_identity", fields["certificate_identity"])
	if !fields["api_key_sha256"].present() && !fields["certificate_identity"].present() {
		p.fail(path, node, "has no credentials; set api_key_sha256, certificate_identity or both")
	}
	c.Roles = p.roles(path+".roles", node, fields["roles"])
	c.Quotas = p.quotas(path+".quotas", fields["quotas"], connections)
	return c, fields
}

// apiKeyHashes parses one hex SHA-256 digest or a list of them. Errors never show the value,
// which may be an API key pasted by mistake.
func (p *parser) apiKeyHashes(field string, e entry) [][sha256.Size]byte {
	if !e.present() {
		return nil
	}
	n := resolve(e.value)
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		if len(n.Content) == 0 {
			p.fail(field, n, "is an empty list; list at least one digest or remove the setting")
			return nil
		}
		items = n.Content
	}
	var hashes [][sha256.Size]byte
	for i, item := range items {
		itemField := field
		if n.Kind == yaml.SequenceNode {
			itemField = fmt.Sprintf("%s[%d]", field, i)
		}
		item = resolve(item)
		if item.Kind != yaml.ScalarNode || isNull(item) {
			p.fail(itemField, item, "must be a hex SHA-256 digest, got %s", describe(item))
			continue
		}
		value := strings.TrimSpace(item.Value)
		if !sha256HexPattern.MatchString(value) {
			p.fail(itemField, item, "must be the SHA-256 digest of an API key as 64 hex digits, got %d characters; "+
				"compute it with: printf %%s \"$API_KEY\" | sha256sum", len(value))
			continue
		}
		var digest [sha256.Size]byte
		_, _ = hex.Decode(digest[:], []byte(value))
		if slices.Contains(hashes, digest) {
			p.fail(itemField, item, "repeats an earlier digest of this caller; remove one")
			continue
		}
		hashes = append(hashes, digest)
	}
	return hashes
}

func (p *parser) certificateIdentity(field string, e entry) string {
	if !e.present() {
		return ""
	}
	value, ok := p.scalar(field, e.value)
	if !ok {
		return ""
	}
	switch {
	case strings.TrimSpace(value) == "":
		p.fail(field, e.value, "is empty; set it to the URI SAN, DNS SAN or common name of the caller's certificate")
		return ""
	case len(value) > maxCertificateIdentity:
		p.fail(field, e.value, "is %d bytes long; use at most %d", len(value), maxCertificateIdentity)
		return ""
	}
	return value
}

func (p *parser) roles(field string, mapping *yaml.Node, e entry) []string {
	const hint = "set it to [client] for SessionService, [admin] for AdminService, or [client, admin]"
	if !e.present() {
		p.fail(field, mapping, "missing; %s", hint)
		return nil
	}
	list := resolve(e.value)
	if list.Kind != yaml.SequenceNode {
		p.fail(field, list, "must be a list; %s", hint)
		return nil
	}
	if len(list.Content) == 0 {
		p.fail(field, list, "is empty; %s", hint)
		return nil
	}
	var roles []string
	for i, item := range list.Content {
		itemField := fmt.Sprintf("%s[%d]", field, i)
		item = resolve(item)
		switch {
		case item.Kind != yaml.ScalarNode || isNull(item):
			p.fail(itemField, item, "must be a role name, got %s", describe(item))
		case item.Value != RoleClient && item.Value != RoleAdmin:
			p.fail(itemField, item, "unknown role %q; the roles are client and admin", item.Value)
		case slices.Contains(roles, item.Value):
			p.fail(itemField, item, "role %q is listed twice; remove one", item.Value)
		default:
			roles = append(roles, item.Value)
		}
	}
	return roles
}

// quotas parses a mapping of connection name to quota. A quota must name one of connections.
func (p *parser) quotas(field string, e entry, connections []string) map[string]int {
	if !e.present() {
		return nil
	}
	m := resolve(e.value)
	if m.Kind != yaml.MappingNode {
		p.fail(field, m, "must be a mapping of connection name to quota, such as {demo: 2}, got %s", describeValue(m))
		return nil
	}
	quotas := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		key, value := resolve(m.Content[i]), resolve(m.Content[i+1])
		if key.Kind != yaml.ScalarNode || key.ShortTag() == "!!merge" {
			p.fail(field, key, "keys must be connection names, got %s", describe(key))
			continue
		}
		name := key.Value
		itemField := fieldPath(field, name)
		if _, dup := quotas[name]; dup {
			p.fail(itemField, key, "is set twice; remove one")
			continue
		}
		if !slices.Contains(connections, name) {
			p.fail(itemField, key, "connection %q is not configured; the connections are %s", name, strings.Join(connections, ", "))
			continue
		}
		if value.Kind != yaml.ScalarNode || value.ShortTag() != "!!int" {
			p.fail(itemField, value, "must be a whole number of leases, got %s", describeValue(value))
			continue
		}
		var n int64
		if err := value.Decode(&n); err != nil || n < 1 || n > MaxQuota {
			p.fail(itemField, value, "must be between 1 and %d, got %s; remove the entry for no cap", MaxQuota, value.Value)
			continue
		}
		quotas[name] = int(n)
	}
	return quotas
}
