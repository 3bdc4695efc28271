package config

import (
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// durations sets the lease and session timing settings of c, applying defaults and checking the
// rules between them. A rule between two settings is checked only when both are valid, so one
// mistake yields one error.
func (p *parser) durations(path string, fields map[string]entry, c *Connection) {
	c.DefaultLeaseTTL, c.MaxLeaseTTL = p.leaseTTL(path+".lease_ttl", fields["lease_ttl"])

	var ok bool
	c.MaxWait, _ = p.durationIn(path+".max_wait", fields["max_wait"], DefaultMaxWait, 0, maxMaxWait)
	c.IdleTimeout, ok = p.durationIn(path+".idle_timeout", fields["idle_timeout"], DefaultIdleTimeout,
		minIdleTimeout, maxIdleTimeout)
	idleTimeoutOK := ok
	c.TokenLifetime, ok = p.durationIn(path+".token_lifetime", fields["token_lifetime"], DefaultTokenLifetime,
		minTokenLife, maxTokenLife)
	tokenLifetimeOK := ok

	c.RefreshBefore, ok = p.durationIn(path+".refresh_before", fields["refresh_before"], DefaultRefreshBefore, 0, maxTokenLife)
	if ok && tokenLifetimeOK && c.RefreshBefore >= c.TokenLifetime {
		// Report the setting that the user wrote, which broke the rule.
		if e := fields["refresh_before"]; e.present() {
			p.fail(path+".refresh_before", e.value, "%s must be less than token_lifetime (%s); lower it, or raise token_lifetime",
				formatDuration(c.RefreshBefore), formatDuration(c.TokenLifetime))
		} else {
			p.fail(path+".token_lifetime", fields["token_lifetime"].value,
				"%s must be more than refresh_before (%s, the default); raise it, or set a lower refresh_before",
				formatDuration(c.TokenLifetime), formatDuration(c.RefreshBefore))
		}
	}

	c.RequestTimeout, _ = p.durationIn(path+".request_timeout", fields["request_timeout"], DefaultRequestTimeout,
		time.Second, 10*time.Minute)
	c.LoginLimitBackoff, c.LoginLimitMaxBackoff = p.loginLimitBackoff(path+".login_limit_backoff", fields["login_limit_backoff"])

	c.IdleSignOutAfter, ok = p.durationIn(path+".idle_sign_out_after", fields["idle_sign_out_after"], 0, 0, maxIdleTimeout)
	if ok && idleTimeoutOK && c.IdleSignOutAfter > 0 && c.IdleSignOutAfter >= c.IdleTimeout {
		p.fail(path+".idle_sign_out_after", fields["idle_sign_out_after"].value,
			"%s must be less than idle_timeout (%s), so the broker signs a session out before Acumatica "+
				"ends it; lower it, or set 0 to keep idle sessions", formatDuration(c.IdleSignOutAfter), formatDuration(c.IdleTimeout))
	}
}

// leaseTTL returns lease_ttl.default and lease_ttl.max.
func (p *parser) leaseTTL(field string, e entry) (time.Duration, time.Duration) {
	var fields map[string]entry
	if e.present() {
		if resolve(e.value).Kind != yaml.MappingNode {
			p.fail(field, e.value, "must be a mapping such as {default: 5m, max: 30m}, got %s", describeValue(resolve(e.value)))
			return 0, 0
		}
		fields = p.mappingFields(field, e.value, leaseTTLKeys)
	}
	def, defOK := p.durationIn(field+".default", fields["default"], DefaultLeaseTTL, minLeaseTTL, maxLeaseTTL)
	maxTTL, maxOK := p.durationIn(field+".max", fields["max"], DefaultMaxLeaseTTL, minLeaseTTL, maxLeaseTTL)
	if defOK && maxOK && def > maxTTL {
		// Report the setting that the user wrote, which broke the rule.
		if fields["default"].present() {
			p.fail(field+".default", fields["default"].value, "%s must not exceed lease_ttl.max (%s); lower default or raise max",
				formatDuration(def), formatDuration(maxTTL))
		} else {
			p.fail(field+".max", fields["max"].value, "%s must not be less than lease_ttl.default (%s, the default); raise max or set a lower default",
				formatDuration(maxTTL), formatDuration(def))
		}
		return 0, 0
	}
	return def, maxTTL
}

// loginLimitBackoff returns login_limit_backoff.initial and login_limit_backoff.max.
func (p *parser) loginLimitBackoff(field string, e entry) (time.Duration, time.Duration) {
	var fields map[string]entry
	if e.present() {
		if resolve(e.value).Kind != yaml.MappingNode {
			p.fail(field, e.value, "must be a mapping such as {initial: 5s, max: 5m}, got %s", describeValue(resolve(e.value)))
			return 0, 0
		}
		fields = p.mappingFields(field, e.value, loginLimitBackoffKeys)
	}
	initial, initialOK := p.durationIn(field+".initial", fields["initial"], DefaultLoginLimitBackoff, time.Second, time.Hour)
	maxBackoff, maxOK := p.durationIn(field+".max", fields["max"], DefaultLoginLimitMaxBackoff, time.Second, 24*time.Hour)
	if initialOK && maxOK && initial > maxBackoff {
		p.fail(field+".max", fields["max"].value, "%s must not be less than initial (%s); raise max or lower initial",
			formatDuration(maxBackoff), formatDuration(initial))
		return 0, 0
	}
	return initial, maxBackoff
}

// durationIn returns the duration in e, or def when e is unset, and reports whether it is valid
// and within [lowest, highest].
func (p *parser) durationIn(field string, e entry, def, lowest, highest time.Duration) (time.Duration, bool) {
	if !e.present() {
		return def, true
	}
	d, ok := p.duration(field, e.value)
	if !ok {
		return 0, false
	}
	switch {
	case d < lowest:
		p.fail(field, e.value, "must be at least %s, got %s", formatDuration(lowest), formatDuration(d))
		return 0, false
	case d > highest:
		p.fail(field, e.value, "must be at most %s, got %s", formatDuration(highest), formatDuration(d))
		return 0, false
	}
	return d, true
}

// duration parses a Go duration string. A bare number other than 0 is an error, because its unit
// would be a guess.
func (p *parser) duration(field string, node *yaml.Node) (time.Duration, bool) {
	n := resolve(node)
	if n.Kind != yaml.ScalarNode {
		p.fail(field, n, "must be a duration such as 30s or 5m, got %s", describe(n))
		return 0, false
	}
	if tag := n.ShortTag(); tag == "!!int" || tag == "!!float" {
		if d, err := time.ParseDuration(n.Value); err == nil && d == 0 {
			return 0, true
		}
		p.fail(field, n, "%s has no unit; add one, as in %ss or %sm", n.Value, n.Value, n.Value)
		return 0, false
	}
	d, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		p.fail(field, n, "%q is not a duration; write it as a number with a unit (ms, s, m or h), "+
			"such as 90s, 5m or 1h30m", n.Value)
		return 0, false
	}
	if d < 0 {
		p.fail(field, n, "must not be negative, got %s", n.Value)
		return 0, false
	}
	return d, true
}

// formatDuration formats d like time.Duration.String without zero trailing units: "5m" rather
// than "5m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
