package config

import (
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults and limits of the connection settings.
const (
	DefaultLeaseTTL             = 5 * time.Minute
	DefaultMaxLeaseTTL          = 30 * time.Minute
	DefaultMaxWait              = 30 * time.Second
	DefaultIdleTimeout          = 10 * time.Minute
	DefaultTokenLifetime        = time.Hour
	DefaultRefreshBefore        = 5 * time.Minute
	DefaultRequestTimeout       = 30 * time.Second
	DefaultLoginLimitBackoff    = 5 * time.Second
	DefaultLoginLimitMaxBackoff = 5 * time.Minute
	MaxMaxQueue                 = 100000

	MinMaxSessions = 1
	MaxMaxSessions = 1000

	minLeaseTTL    = time.Second
	maxLeaseTTL    = 24 * time.Hour
	maxMaxWait     = time.Hour
	minIdleTimeout = time.Second
	maxIdleTimeout = 24 * time.Hour
	minTokenLife   = time.Second
	maxTokenLife   = 24 * time.Hour
)

// Scope values that a connection may request.
const (
	ScopeAPI                 = "api"
	ScopeOfflineAccess       = "offline_access"
	ScopeAPIConcurrentAccess = "api:concurrent_access"
)

// DefaultScopes are the scopes of a connection that sets none.
var DefaultScopes = []string{ScopeAPI, ScopeOfflineAccess}

// allowedScopes leaves out ScopeAPIConcurrentAccess, which the broker cannot
// budget.
var allowedScopes = []string{ScopeAPI, ScopeOfflineAccess}

var (
	namePattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	envVarPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

var topLevelKeys = []string{"connections", "callers", "encryption"}

var connectionKeys = []string{
	"name", "site_url", "token_url", "logout_url", "revocation_url",
	"client_id", "client_secret_env", "client_secret_file", "client_secret",
	"username", "password_env", "password_file", "password",
	"scopes", "max_sessions", "lease_ttl", "max_wait", "idle_timeout",
	"token_lifetime", "refresh_before", "idle_sign_out_after",
	"request_timeout", "login_limit_backoff", "max_queue",
}

var loginLimitBackoffKeys = []string{"initial", "max"}

var leaseTTLKeys = []string{"default", "max"}

// file parses the document root.
func (p *parser) file(root *yaml.Node) *File {
	const hint = "add at least one connection under connections (config/example.yaml shows one)"
	if isNull(root) {
		p.fail("connections", nil, "missing: the file is empty; %s", hint)
		return nil
	}
	if resolve(root).Kind != yaml.MappingNode {
		p.fail("connections", root, "missing: the file holds %s, not a mapping with a connections list; %s", describe(root), hint)
		return nil
	}
	fields := p.mappingFields("", root, topLevelKeys)
	list := fields["connections"]
	if !list.present() {
		p.fail("connections", list.key, "missing; %s", hint)
		return nil
	}
	items := resolve(list.value)
	if items.Kind != yaml.SequenceNode {
		p.fail("connections", list.value, "must be a list of connections, got %s", describe(items))
		return nil
	}
	if len(items.Content) == 0 {
		p.fail("connections", list.value, "is empty; %s", hint)
		return nil
	}

	file := &File{}
	firstUse := make(map[string]int) // name -> index of its first connection
	for i, item := range items.Content {
		c := p.connection(fmt.Sprintf("connections[%d]", i), item)
		if c.Name != "" {
			if first, ok := firstUse[c.Name]; ok {
				p.fail(fmt.Sprintf("connections[%d].name", i), item,
					"%q is already the name of connections[%d]; names must be unique", c.Name, first)
			} else {
				firstUse[c.Name] = i
			}
		}
		file.Connections = append(file.Connections, c)
	}
	file.Callers = p.callers(fields["callers"], slices.Sorted(maps.Keys(firstUse)))
	file.Encryption = p.encryption(fields["encryption"])
	return file
}

// connection parses one item of the connections list. Settings that break a rule stay at their
// zero value, since Parse returns no File when any rule is broken.
func (p *parser) connection(path string, node *yaml.Node) Connection {
	var c Connection
	if resolve(node).Kind != yaml.MappingNode {
		p.fail(path, node, "must be a mapping of connection settings, got %s", describe(node))
		return c
	}
	fields := p.mappingFields(path, node, connectionKeys)
	req := func(key, hint string) string { return p.requiredString(path, key, node, fields[key], hint) }

	if name := req("name", "give the connection a name such as demo"); name != "" {
		if namePattern.MatchString(name) {
			c.Name = name
		} else {
			p.fail(path+".name", fields["name"].value, "%q is invalid; use 1 to 63 lowercase letters, digits, "+
				"_ or -, starting with a letter or digit", name)
		}
	}
	p.urls(path, node, fields, &c)
	c.ClientID = req("client_id", "set it to the connected application's client ID, such as GUID@Tenant")
	c.ClientSecret = p.secret(path, node, fields, "client_secret", "client secret")
	c.Username = req("username", "set it to the Acumatica user that the broker signs in as")
	c.Password = p.secret(path, node, fields, "password", "password")
	c.Scopes = p.scopes(path+".scopes", fields["scopes"])
	c.OfflineAccess = slices.Contains(c.Scopes, ScopeOfflineAccess)
	c.MaxSessions = p.maxSessions(path+".max_sessions", node, fields["max_sessions"])
	p.durations(path, fields, &c)
	c.MaxQueue = p.maxQueue(path+".max_queue", fields["max_queue"])
	return c
}

// requiredString returns the string value of a required setting, or "" after reporting it missing
// or invalid.
func (p *parser) requiredString(path, key string, mapping *yaml.Node, e entry, hint string) string {
	field := path + "." + key
	if !e.present() {
		p.fail(field, mapping, "missing; %s", hint)
		return ""
	}
	value, ok := p.scalar(field, e.value)
	if !ok {
		return ""
	}
	if strings.TrimSpace(value) == "" {
		p.fail(field, e.value, "is empty; %s", hint)
		return ""
	}
	return value
}

// scalar returns the text of a scalar value, and reports other kinds without showing the value,
// which may be a secret.
func (p *parser) scalar(field string, n *yaml.Node) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode {
		p.fail(field, n, "must be a string, got %s", describe(n))
		return "", false
	}
	return n.Value, true
}

// urls sets the site URL and the endpoint URLs, deriving the endpoints that are not set.
func (p *parser) urls(path string, mapping *yaml.Node, fields map[string]entry, c *Connection) {
	site := p.requiredString(path, "site_url", mapping, fields["site_url"],
		"set it to the Acumatica site's base URL, such as https://example.acumatica.com")
	if site != "" {
		if u, ok := p.httpURL(path+".site_url", fields["site_url"].value, site); ok {
			c.SiteURL = strings.TrimRight(u, "/")
		}
	}
	endpoint := func(key, defaultPath string) string {
		e := fields[key]
		if e.present() {
			value, ok := p.scalar(path+"."+key, e.value)
			if ok && value != "" {
				u, _ := p.httpURL(path+"."+key, e.value, value)
				return u
			}
			if !ok {
				return ""
			}
		}
		if c.SiteURL == "" {
			return ""
		}
		return c.SiteURL + defaultPath
	}
	c.TokenURL = endpoint("token_url", "/identity/connect/token")
	c.LogoutURL = endpoint("logout_url", "/entity/auth/logout")
	c.RevocationURL = endpoint("revocation_url", "/identity/connect/revocation")
}

// httpURL checks that raw is an absolute http or https URL with a host and without user
// information, query or fragment.
func (p *parser) httpURL(field string, node *yaml.Node, raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil {
		// The parse error quotes the input, which may hold a password in its user information.
		p.fail(field, node, "is not a valid URL; write an absolute URL such as https://example.acumatica.com")
		return "", false
	}
	// Show the value as written, unless it contains user information, which may hold a password.
	display := raw
	if u.User != nil {
		display = u.Redacted()
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		p.fail(field, node, "%q must start with http:// or https://", display)
	case u.User != nil:
		p.fail(field, node, "%q must not contain a user name or password; put credentials in "+
			"username and password_env instead", display)
	case u.Host == "" || u.Hostname() == "":
		p.fail(field, node, "%q has no host; write an absolute URL such as https://example.acumatica.com", display)
	case u.RawQuery != "" || u.ForceQuery:
		p.fail(field, node, "%q must not have a query (?...); remove it", display)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		p.fail(field, node, "%q must not have a fragment (#...); remove it", display)
	default:
		return u.String(), true
	}
	return "", false
}

// secret resolves the secret that exactly one of NAME_env, NAME_file and NAME sets, and returns ""
// after reporting a problem.
func (p *parser) secret(path string, mapping *yaml.Node, fields map[string]entry, name, label string) string {
	envKey, fileKey := name+"_env", name+"_file"
	var set []string
	for _, key := range []string{envKey, fileKey, name} {
		if fields[key].present() {
			set = append(set, key)
		}
	}
	switch len(set) {
	case 0:
		p.fail(path+"."+name, mapping, "missing; set %s to the name of an environment variable that holds the %s, "+
			"%s to a file that holds it, or %s", envKey, label, fileKey, name)
		return ""
	case 1:
	default:
		p.fail(path+"."+set[1], fields[set[1]].key, "conflicts with %s; set only one of %s, %s and %s",
			set[0], envKey, fileKey, name)
		return ""
	}

	key := set[0]
	field := path + "." + key
	value, ok := p.scalar(field, fields[key].value)
	if !ok {
		return ""
	}
	node := fields[key].value
	switch key {
	case envKey:
		return p.secretFromEnv(field, node, value, fileKey, label)
	case fileKey:
		return p.secretFromFile(field, node, value, envKey, label)
	}
	if value == "" {
		p.fail(field, node, "is empty; set %s or %s instead", envKey, fileKey)
		return ""
	}
	p.warnings = append(p.warnings, fmt.Sprintf("%s: the %s is written in the config file (line %d); "+
		"move it to an environment variable (%s) or a file (%s)", field, label, node.Line, envKey, fileKey))
	return value
}

// secretFromEnv returns the value of environment variable name.
func (p *parser) secretFromEnv(field string, node *yaml.Node, name, fileKey, label string) string {
	if !envVarPattern.MatchString(name) {
		p.fail(field, node, "%q is not a valid environment variable name; use letters, digits and _, "+
			"not starting with a digit", name)
		return ""
	}
	value, ok := p.lookupEnv(name)
	if !ok {
		p.fail(field, node, "environment variable %s is not set; export it or use %s", name, fileKey)
		return ""
	}
	if value == "" {
		p.fail(field, node, "environment variable %s is empty; export the %s in it or use %s", name, label, fileKey)
		return ""
	}
	return value
}

// maxSessions returns the seat budget, or 0 after reporting a problem.
func (p *parser) maxSessions(field string, mapping *yaml.Node, e entry) int {
	hint := fmt.Sprintf("set it to the number of Acumatica sessions the broker may hold at once (%d to %d)",
		MinMaxSessions, MaxMaxSessions)
	if !e.present() {
		p.fail(field, mapping, "missing; %s", hint)
		return 0
	}
	n := resolve(e.value)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		p.fail(field, n, "must be a whole number, got %s; %s", describeValue(n), hint)
		return 0
	}
	var value int64
	if err := n.Decode(&value); err != nil {
		p.fail(field, n, "%s is out of range; %s", n.Value, hint)
		return 0
	}
	if value < MinMaxSessions || value > MaxMaxSessions {
		p.fail(field, n, "must be between %d and %d, got %d", MinMaxSessions, MaxMaxSessions, value)
		return 0
	}
	return int(value)
}

// maxQueue returns the queue cap, 0 (no cap) when unset.
func (p *parser) maxQueue(field string, e entry) int {
	if !e.present() {
		return 0
	}
	n := resolve(e.value)
	var value int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&value) != nil || value < 0 || value > MaxMaxQueue {
		p.fail(field, n, "must be a whole number from 0 (no cap) to %d, got %s", MaxMaxQueue, describeValue(n))
		return 0
	}
	return int(value)
}

// describeValue describes a value with its text for scalars, which suits non-secret settings.
func describeValue(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode && n.ShortTag() != "!!null" {
		return fmt.Sprintf("%s %q", describe(n), n.Value)
	}
	return describe(n)
}

// scopes returns the requested scopes, DefaultScopes when unset, or nil after reporting a problem.
func (p *parser) scopes(field string, e entry) []string {
	if !e.present() {
		return slices.Clone(DefaultScopes)
	}
	list := resolve(e.value)
	if list.Kind != yaml.SequenceNode {
		p.fail(field, list, "must be a list such as [api, offline_access], got %s", describeValue(list))
		return nil
	}
	var scopes []string
	ok := true
	for i, item := range list.Content {
		itemField := fmt.Sprintf("%s[%d]", field, i)
		item = resolve(item)
		if item.Kind != yaml.ScalarNode || isNull(item) {
			p.fail(itemField, item, "must be a scope name, got %s", describe(item))
			ok = false
			continue
		}
		switch {
		case item.Value == ScopeAPIConcurrentAccess:
			// With this scope Acumatica opens a session per cookie jar on the
			// holders' own requests, which the broker cannot count.
			p.fail(itemField, item, "scope %s is not supported: Acumatica then opens a session for every "+
				"request without a session cookie, outside the broker's seat budget; use [api, offline_access]",
				item.Value)
			ok = false
		case !slices.Contains(allowedScopes, item.Value):
			p.fail(itemField, item, "unknown scope %q; the allowed scopes are %s", item.Value, strings.Join(allowedScopes, ", "))
			ok = false
		case slices.Contains(scopes, item.Value):
			p.fail(itemField, item, "scope %q is listed twice; remove one", item.Value)
			ok = false
		default:
			scopes = append(scopes, item.Value)
		}
	}
	if !slices.Contains(scopes, ScopeAPI) {
		p.fail(field, list, "must include api, the scope of Acumatica's REST API")
		ok = false
	}
	if !ok {
		return nil
	}
	return scopes
}
