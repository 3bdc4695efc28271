package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Secrets that the test environment and files hold. No error or warning may contain them.
const (
	envClientSecret  = "client-secret-from-env-Zq8"
	envPassword      = "password-from-env-Xk3"
	fileSecret       = "password-from-file-Wp5"
	inlineSecret     = "inline-secret-Vm2"
	emptyEnvVariable = "ACU_EMPTY"
)

// testEnv is the environment that the table cases see.
var testEnv = map[string]string{
	"ACU_SECRET":     envClientSecret,
	"ACU_PASSWORD":   envPassword,
	emptyEnvVariable: "",
	"ACU_KEY_1":      envEncryptionKey,
	"ACU_KEY_SHORT":  shortEncryptionKey,
	"ACU_KEY_BAD":    "not base64!",
}

func lookupTestEnv(name string) (string, bool) {
	v, ok := testEnv[name]
	return v, ok
}

// baseConnection is a valid connection as key and raw YAML value, in file order.
var baseConnection = [][2]string{
	{"name", "demo"},
	{"site_url", "https://acu.example.com"},
	{"client_id", `"00000000-0000-0000-0000-000000000000@Company"`},
	{"client_secret_env", "ACU_SECRET"},
	{"username", "admin"},
	{"password_env", "ACU_PASSWORD"},
	{"max_sessions", "2"},
}

// connectionYAML returns a config with one connection: baseConnection with the keys in set
// replaced or added (raw YAML values, in flow style) and the keys in del removed.
func connectionYAML(set map[string]string, del ...string) string {
	var lines []string
	seen := map[string]bool{}
	for _, kv := range baseConnection {
		key, value := kv[0], kv[1]
		seen[key] = true
		if slices.Contains(del, key) {
			continue
		}
		if v, ok := set[key]; ok {
			value = v
		}
		lines = append(lines, key+": "+value)
	}
	var extra []string
	for key := range set {
		if !seen[key] {
			extra = append(extra, key)
		}
	}
	slices.Sort(extra)
	for _, key := range extra {
		lines = append(lines, key+": "+set[key])
	}
	return "connections:\n  - " + strings.Join(lines, "\n    ") + "\n"
}

// secretDir returns a directory with the secret files that the table cases name.
func secretDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	files := map[string]string{
		"password.txt":      fileSecret + "\n",
		"password-crlf.txt": fileSecret + "\r\n",
		"empty.txt":         "",
		"newline.txt":       "\n",
		"large.txt":         strings.Repeat("x", maxSecretFileSize+1),
		"key2.b64":          fileEncryptionKey + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o700); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// errorCase is a config that breaks one rule.
type errorCase struct {
	name      string
	yaml      string
	wantField string
	wantMsg   string // a substring of the message
}

// errorCases lists one case per rule. Each config breaks exactly one rule, so each must yield
// exactly one FieldError.
var errorCases = []errorCase{
	// The file and the connections list.
	{"EmptyFile", "", "connections", "the file is empty"},
	{"OnlyComments", "# nothing\n", "connections", "the file is empty"},
	{"RootIsList", "- a\n", "connections", "not a mapping with a connections list"},
	{"ConnectionsMissing", "{}\n", "connections", "missing; add at least one connection"},
	{"ConnectionsNull", "connections:\n", "connections", "missing"},
	{"ConnectionsEmpty", "connections: []\n", "connections", "is empty"},
	{"ConnectionsNotList", "connections: {name: demo}\n", "connections", "must be a list of connections, got a mapping"},
	{"ConnectionNotMapping", "connections: [demo]\n", "connections[0]", "must be a mapping of connection settings, got a string"},
	{"TopLevelTypo", connectionYAML(nil) + "conection: 1\n", "conection", "unknown setting; did you mean connections?"},

	// Keys.
	{"UnknownKeySuggestion", connectionYAML(map[string]string{"max_wiat": "5s"}),
		"connections[0].max_wiat", "unknown setting; did you mean max_wait?"},
	{"UnknownKeyList", connectionYAML(map[string]string{"colour": "blue"}),
		"connections[0].colour", "the settings here are name, site_url"},
	{"DuplicateKey", connectionYAML(nil) + "    username: other\n",
		"connections[0].username", "is set twice (first on line 6)"},
	{"NonScalarKey", connectionYAML(map[string]string{"[a]": "1"}), "connections[0]", "keys must be plain names, got a list"},

	// name.
	{"NameMissing", connectionYAML(nil, "name"), "connections[0].name", "missing; give the connection a name"},
	{"NameEmpty", connectionYAML(map[string]string{"name": `""`}), "connections[0].name", "is empty"},
	{"NameUppercase", connectionYAML(map[string]string{"name": "Demo"}), "connections[0].name", `"Demo" is invalid`},
	{"NameLeadingDash", connectionYAML(map[string]string{"name": "-demo"}), "connections[0].name", `"-demo" is invalid`},
	{"NameTooLong", connectionYAML(map[string]string{"name": strings.Repeat("a", 64)}), "connections[0].name", "is invalid; use 1 to 63"},
	{"NameWithSpace", connectionYAML(map[string]string{"name": `"my demo"`}), "connections[0].name", "is invalid"},
	{"NameMapping", connectionYAML(map[string]string{"name": "{a: b}"}), "connections[0].name", "must be a string, got a mapping"},
	{"NameDuplicate", connectionYAML(nil) + strings.TrimPrefix(connectionYAML(nil), "connections:\n"),
		"connections[1].name", `"demo" is already the name of connections[0]`},

	// site_url and the endpoints.
	{"SiteURLMissing", connectionYAML(nil, "site_url"), "connections[0].site_url", "missing; set it to the Acumatica site's base URL"},
	{"SiteURLNoScheme", connectionYAML(map[string]string{"site_url": "acu.example.com"}), "connections[0].site_url", "must start with http:// or https://"},
	{"SiteURLFTP", connectionYAML(map[string]string{"site_url": "ftp://acu.example.com"}), "connections[0].site_url", `"ftp://acu.example.com" must start with http://`},
	{"SiteURLNoHost", connectionYAML(map[string]string{"site_url": "http://"}), "connections[0].site_url", `"http://" has no host`},
	{"SiteURLPortOnly", connectionYAML(map[string]string{"site_url": "http://:8080"}), "connections[0].site_url", "has no host"},
	{"SiteURLQuery", connectionYAML(map[string]string{"site_url": "https://acu.example.com/?company=x"}), "connections[0].site_url", "must not have a query"},
	{"SiteURLEmptyQuery", connectionYAML(map[string]string{"site_url": "https://acu.example.com/?"}), "connections[0].site_url", "must not have a query"},
	{"SiteURLFragment", connectionYAML(map[string]string{"site_url": "https://acu.example.com/#top"}), "connections[0].site_url", "must not have a fragment"},
	{"SiteURLEmptyFragment", connectionYAML(map[string]string{"site_url": "https://acu.example.com/#"}), "connections[0].site_url", `"https://acu.example.com/#" must not have a fragment`},
	{"SiteURLUserInfo", connectionYAML(map[string]string{"site_url": "https://admin:" + inlineSecret + "@acu.example.com"}), "connections[0].site_url", "must not contain a user name or password"},
	{"SiteURLUnparsable", connectionYAML(map[string]string{"site_url": `"http://[::1"`}), "connections[0].site_url", "is not a valid URL"},
	{"SiteURLList", connectionYAML(map[string]string{"site_url": "[a]"}), "connections[0].site_url", "must be a string, got a list"},
	{"TokenURLInvalid", connectionYAML(map[string]string{"token_url": "/token"}), "connections[0].token_url", "must start with http:// or https://"},
	{"LogoutURLQuery", connectionYAML(map[string]string{"logout_url": "https://acu.example.com/logout?x=1"}), "connections[0].logout_url", "must not have a query"},
	{"RevocationURLNoHost", connectionYAML(map[string]string{"revocation_url": "https:///revoke"}), "connections[0].revocation_url", "has no host"},
	{"TokenURLMapping", connectionYAML(map[string]string{"token_url": "{a: b}"}), "connections[0].token_url", "must be a string, got a mapping"},

	// client_id and username.
	{"ClientIDMissing", connectionYAML(nil, "client_id"), "connections[0].client_id", "missing; set it to the connected application's client ID"},
	{"ClientIDBlank", connectionYAML(map[string]string{"client_id": `"  "`}), "connections[0].client_id", "is empty"},
	{"UsernameMissing", connectionYAML(nil, "username"), "connections[0].username", "missing; set it to the Acumatica user"},

	// client_secret and password sources.
	{"ClientSecretMissing", connectionYAML(nil, "client_secret_env"), "connections[0].client_secret",
		"missing; set client_secret_env to the name of an environment variable that holds the client secret, client_secret_file"},
	{"ClientSecretTwoSources", connectionYAML(map[string]string{"client_secret": inlineSecret}), "connections[0].client_secret",
		"conflicts with client_secret_env; set only one of client_secret_env, client_secret_file and client_secret"},
	{"ClientSecretEnvUnset", connectionYAML(map[string]string{"client_secret_env": "ACU_NOPE"}), "connections[0].client_secret_env",
		"environment variable ACU_NOPE is not set; export it or use client_secret_file"},
	{"ClientSecretEnvEmpty", connectionYAML(map[string]string{"client_secret_env": emptyEnvVariable}), "connections[0].client_secret_env",
		"environment variable ACU_EMPTY is empty; export the client secret in it or use client_secret_file"},
	{"ClientSecretEnvInvalidName", connectionYAML(map[string]string{"client_secret_env": `"ACU SECRET"`}), "connections[0].client_secret_env",
		`"ACU SECRET" is not a valid environment variable name`},
	{"ClientSecretEnvEmptyName", connectionYAML(map[string]string{"client_secret_env": `""`}), "connections[0].client_secret_env",
		`"" is not a valid environment variable name`},
	{"ClientSecretInlineEmpty", connectionYAML(map[string]string{"client_secret": `""`}, "client_secret_env"), "connections[0].client_secret",
		"is empty; set client_secret_env or client_secret_file instead"},
	{"PasswordEnvUnset", connectionYAML(map[string]string{"password_env": "ACU_MISSING"}), "connections[0].password_env",
		"environment variable ACU_MISSING is not set; export it or use password_file"},
	{"PasswordMissing", connectionYAML(nil, "password_env"), "connections[0].password", "missing; set password_env"},
	{"PasswordThreeSources", connectionYAML(map[string]string{"password_file": "password.txt", "password": "x"}), "connections[0].password_file",
		"conflicts with password_env"},
	{"PasswordFileMissing", connectionYAML(map[string]string{"password_file": "nope.txt"}, "password_env"), "connections[0].password_file",
		"nope.txt: no such file or directory; fix the path or use password_env"},
	{"PasswordFileEmpty", connectionYAML(map[string]string{"password_file": "empty.txt"}, "password_env"), "connections[0].password_file",
		"empty.txt is empty; write the password into it"},
	{"PasswordFileOnlyNewline", connectionYAML(map[string]string{"password_file": "newline.txt"}, "password_env"), "connections[0].password_file",
		"newline.txt is empty"},
	{"PasswordFileDirectory", connectionYAML(map[string]string{"password_file": "subdir"}, "password_env"), "connections[0].password_file",
		"subdir is not a regular file"},
	{"PasswordFileTooLarge", connectionYAML(map[string]string{"password_file": "large.txt"}, "password_env"), "connections[0].password_file",
		"is larger than 64 KiB"},
	{"PasswordFileEmptyPath", connectionYAML(map[string]string{"password_file": `""`}, "password_env"), "connections[0].password_file",
		"is empty; set it to the path of a file that holds the password"},
	{"PasswordInlineList", connectionYAML(map[string]string{"password": "[a, b]"}, "password_env"), "connections[0].password",
		"must be a string, got a list"},

	// scopes.
	{"ScopesNotList", connectionYAML(map[string]string{"scopes": "api"}), "connections[0].scopes", `must be a list such as [api, offline_access], got a string "api"`},
	{"ScopesUnknown", connectionYAML(map[string]string{"scopes": "[api, openid]"}), "connections[0].scopes[1]",
		`unknown scope "openid"; the allowed scopes are api, offline_access`},
	{"ScopesConcurrentAccess", connectionYAML(map[string]string{"scopes": "[api, api:concurrent_access]"}), "connections[0].scopes[1]",
		"scope api:concurrent_access is not supported"},
	{"ScopesDuplicate", connectionYAML(map[string]string{"scopes": "[api, api]"}), "connections[0].scopes[1]", `scope "api" is listed twice`},
	{"ScopesWithoutAPI", connectionYAML(map[string]string{"scopes": "[offline_access]"}), "connections[0].scopes", "must include api"},
	{"ScopesEmpty", connectionYAML(map[string]string{"scopes": "[]"}), "connections[0].scopes", "must include api"},
	{"ScopesNullItem", connectionYAML(map[string]string{"scopes": "[api, null]"}), "connections[0].scopes[1]", "must be a scope name, got null"},

	// max_sessions.
	{"MaxSessionsMissing", connectionYAML(nil, "max_sessions"), "connections[0].max_sessions", "missing; set it to the number of Acumatica sessions"},
	{"MaxSessionsZero", connectionYAML(map[string]string{"max_sessions": "0"}), "connections[0].max_sessions", "must be between 1 and 1000, got 0"},
	{"MaxSessionsNegative", connectionYAML(map[string]string{"max_sessions": "-1"}), "connections[0].max_sessions", "must be between 1 and 1000, got -1"},
	{"MaxSessionsTooMany", connectionYAML(map[string]string{"max_sessions": "1001"}), "connections[0].max_sessions", "must be between 1 and 1000, got 1001"},
	{"MaxSessionsQuoted", connectionYAML(map[string]string{"max_sessions": `"2"`}), "connections[0].max_sessions", `must be a whole number, got a string "2"`},
	{"MaxSessionsFraction", connectionYAML(map[string]string{"max_sessions": "2.5"}), "connections[0].max_sessions", `must be a whole number, got a number "2.5"`},
	{"MaxSessionsOverflow", connectionYAML(map[string]string{"max_sessions": "99999999999999999999"}), "connections[0].max_sessions", "must be a whole number"},
	{"MaxSessionsMapping", connectionYAML(map[string]string{"max_sessions": "{n: 2}"}), "connections[0].max_sessions", "must be a whole number, got a mapping"},

	// lease_ttl.
	{"LeaseTTLNotMapping", connectionYAML(map[string]string{"lease_ttl": "5m"}), "connections[0].lease_ttl", `must be a mapping such as {default: 5m, max: 30m}, got a string "5m"`},
	{"LeaseTTLUnknownKey", connectionYAML(map[string]string{"lease_ttl": "{defualt: 5m}"}), "connections[0].lease_ttl.defualt", "did you mean default?"},
	{"LeaseTTLDefaultTooShort", connectionYAML(map[string]string{"lease_ttl": "{default: 500ms}"}), "connections[0].lease_ttl.default", "must be at least 1s, got 500ms"},
	{"LeaseTTLDefaultZero", connectionYAML(map[string]string{"lease_ttl": "{default: 0s}"}), "connections[0].lease_ttl.default", "must be at least 1s, got 0s"},
	{"LeaseTTLDefaultAboveMax", connectionYAML(map[string]string{"lease_ttl": "{default: 40m}"}), "connections[0].lease_ttl.default", "40m must not exceed lease_ttl.max (30m)"},
	{"LeaseTTLDefaultAboveGivenMax", connectionYAML(map[string]string{"lease_ttl": "{default: 2m, max: 1m}"}), "connections[0].lease_ttl.default", "2m must not exceed lease_ttl.max (1m)"},
	{"LeaseTTLMaxBelowDefault", connectionYAML(map[string]string{"lease_ttl": "{max: 1m}"}), "connections[0].lease_ttl.max", "1m must not be less than lease_ttl.default (5m, the default)"},
	{"LeaseTTLMaxTooLong", connectionYAML(map[string]string{"lease_ttl": "{max: 25h}"}), "connections[0].lease_ttl.max", "must be at most 24h, got 25h"},
	{"LeaseTTLBareNumber", connectionYAML(map[string]string{"lease_ttl": "{default: 300}"}), "connections[0].lease_ttl.default", "300 has no unit; add one, as in 300s or 300m"},

	// Durations in general, through max_wait.
	{"MaxWaitBareNumber", connectionYAML(map[string]string{"max_wait": "30"}), "connections[0].max_wait", "30 has no unit; add one, as in 30s or 30m"},
	{"MaxWaitBareFloat", connectionYAML(map[string]string{"max_wait": "1.5"}), "connections[0].max_wait", "1.5 has no unit"},
	{"MaxWaitDays", connectionYAML(map[string]string{"max_wait": "1d"}), "connections[0].max_wait", `"1d" is not a duration; write it as a number with a unit (ms, s, m or h)`},
	{"MaxWaitWords", connectionYAML(map[string]string{"max_wait": `"5 minutes"`}), "connections[0].max_wait", `"5 minutes" is not a duration`},
	{"MaxWaitNegative", connectionYAML(map[string]string{"max_wait": "-1s"}), "connections[0].max_wait", "must not be negative, got -1s"},
	{"MaxWaitTooLong", connectionYAML(map[string]string{"max_wait": "61m"}), "connections[0].max_wait", "must be at most 1h, got 1h1m"},
	{"MaxWaitList", connectionYAML(map[string]string{"max_wait": "[1s]"}), "connections[0].max_wait", "must be a duration such as 30s or 5m, got a list"},
	{"MaxWaitBool", connectionYAML(map[string]string{"max_wait": "true"}), "connections[0].max_wait", `"true" is not a duration`},

	// idle_timeout, token_lifetime, refresh_before and idle_sign_out_after.
	{"IdleTimeoutZero", connectionYAML(map[string]string{"idle_timeout": "0s"}), "connections[0].idle_timeout", "must be at least 1s, got 0s"},
	{"IdleTimeoutTooLong", connectionYAML(map[string]string{"idle_timeout": "25h"}), "connections[0].idle_timeout", "must be at most 24h, got 25h"},
	{"TokenLifetimeZero", connectionYAML(map[string]string{"token_lifetime": "0"}), "connections[0].token_lifetime", "must be at least 1s, got 0s"},
	{"RefreshBeforeEqualsLifetime", connectionYAML(map[string]string{"token_lifetime": "5m", "refresh_before": "5m"}), "connections[0].refresh_before",
		"5m must be less than token_lifetime (5m)"},
	{"TokenLifetimeBelowDefaultRefresh", connectionYAML(map[string]string{"token_lifetime": "4m"}), "connections[0].token_lifetime",
		"4m must be more than refresh_before (5m, the default)"},
	{"RefreshBeforeAboveLifetime", connectionYAML(map[string]string{"refresh_before": "2h"}), "connections[0].refresh_before",
		"2h must be less than token_lifetime (1h)"},
	{"IdleSignOutEqualsTimeout", connectionYAML(map[string]string{"idle_sign_out_after": "10m"}), "connections[0].idle_sign_out_after",
		"10m must be less than idle_timeout (10m)"},
	{"IdleSignOutAboveGivenTimeout", connectionYAML(map[string]string{"idle_timeout": "2m", "idle_sign_out_after": "3m"}), "connections[0].idle_sign_out_after",
		"3m must be less than idle_timeout (2m)"},
	{"IdleSignOutNegative", connectionYAML(map[string]string{"idle_sign_out_after": "-1m"}), "connections[0].idle_sign_out_after", "must not be negative"},

	// YAML merge keys.
	{"MergeNotMapping", connectionYAML(map[string]string{"<<": "5"}), "connections[0].<<", "a merge key needs a mapping or a list of mappings, got a number"},
	{"MergeUnknownKey", connectionYAML(map[string]string{"<<": "{colour: red}"}), "connections[0].colour", "unknown setting"},
}

func TestParseErrors(t *testing.T) {
	dir := secretDir(t)
	for _, tt := range errorCases {
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
		})
	}
}

// assertNoSecrets fails when s contains a secret value of the test environment or files.
func assertNoSecrets(t *testing.T, s string) {
	t.Helper()
	for _, secret := range []string{envClientSecret, envPassword, fileSecret, inlineSecret} {
		if strings.Contains(s, secret) {
			t.Errorf("%q contains the secret %q", s, secret)
		}
	}
}

func TestParseErrorLines(t *testing.T) {
	yaml := connectionYAML(map[string]string{"max_sessions": "0"}, "username")
	_, _, err := Parse([]byte(yaml), "", lookupTestEnv)
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Parse error = %v, want a *ValidationError", err)
	}
	want := []FieldError{
		// A missing setting points at its connection's first line.
		{Field: "connections[0].username", Line: 2},
		{Field: "connections[0].max_sessions", Line: 7},
	}
	if len(verr.Errors) != len(want) {
		t.Fatalf("Parse returned %d errors, want %d:\n%v", len(verr.Errors), len(want), verr)
	}
	for i, w := range want {
		if verr.Errors[i].Field != w.Field || verr.Errors[i].Line != w.Line {
			t.Errorf("error %d = %s at line %d, want %s at line %d",
				i, verr.Errors[i].Field, verr.Errors[i].Line, w.Field, w.Line)
		}
	}
}

func TestParseReportsEveryError(t *testing.T) {
	yaml := `connections:
  - name: Bad Name
    site_url: ftp://acu.example.com
    client_id: x
    client_secret: ` + inlineSecret + `
    client_secret_env: ACU_SECRET
    username: admin
    password_env: ACU_MISSING
    max_sessions: 0
    max_wait: 30
    colour: red
  - name: second
    site_url: https://acu.example.com
    client_id: x
    client_secret_file: nope.txt
    username: admin
    password: ` + inlineSecret + `
    max_sessions: 3
`
	_, _, err := Parse([]byte(yaml), t.TempDir(), lookupTestEnv)
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Parse error = %v, want a *ValidationError", err)
	}
	wantFields := []string{
		"connections[0].colour",
		"connections[0].name",
		"connections[0].site_url",
		"connections[0].client_secret",
		"connections[0].password_env",
		"connections[0].max_sessions",
		"connections[0].max_wait",
		"connections[1].client_secret_file",
	}
	var gotFields []string
	for _, fe := range verr.Errors {
		gotFields = append(gotFields, fe.Field)
	}
	if !slices.Equal(gotFields, wantFields) {
		t.Errorf("fields in error = %v\nwant %v", gotFields, wantFields)
	}

	// Error lists every problem, one per line.
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(wantFields) {
		t.Errorf("Error() has %d lines, want %d:\n%s", len(lines), len(wantFields), err)
	}
	for i, line := range lines {
		if i < len(wantFields) && !strings.HasPrefix(line, wantFields[i]+": ") {
			t.Errorf("Error() line %d = %q, want it to start with %q", i, line, wantFields[i]+": ")
		}
	}
	assertNoSecrets(t, err.Error())
}

func TestParseInvalidYAML(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantMsg string
	}{
		{"Syntax", "connections: [\n", "config is not valid YAML"},
		{"Tab", "connections:\n\t- name: x\n", "config is not valid YAML"},
		{"TwoDocuments", connectionYAML(nil) + "---\n" + connectionYAML(nil), "more than one YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tt.yaml), "", lookupTestEnv)
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Parse error = %q, want it to contain %q", err, tt.wantMsg)
			}
			var verr *ValidationError
			if errors.As(err, &verr) {
				t.Errorf("Parse error is a *ValidationError, want a plain error for YAML that does not parse")
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	file, warnings, err := Parse([]byte(connectionYAML(nil)), "", lookupTestEnv)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %q, want none", warnings)
	}
	if len(file.Connections) != 1 {
		t.Fatalf("got %d connections, want 1", len(file.Connections))
	}
	want := Connection{
		Name:             "demo",
		SiteURL:          "https://acu.example.com",
		TokenURL:         "https://acu.example.com/identity/connect/token",
		LogoutURL:        "https://acu.example.com/entity/auth/logout",
		RevocationURL:    "https://acu.example.com/identity/connect/revocation",
		ClientID:         "00000000-0000-0000-0000-000000000000@Company",
		ClientSecret:     envClientSecret,
		Username:         "admin",
		Password:         envPassword,
		Scopes:           []string{"api", "offline_access"},
		OfflineAccess:    true,
		MaxSessions:      2,
		DefaultLeaseTTL:  5 * time.Minute,
		MaxLeaseTTL:      30 * time.Minute,
		MaxWait:          30 * time.Second,
		IdleTimeout:      10 * time.Minute,
		TokenLifetime:    time.Hour,
		RefreshBefore:    5 * time.Minute,
		IdleSignOutAfter: 0,
	}
	assertConnection(t, file.Connections[0], want)
}

// assertConnection compares every field of got and want.
func assertConnection(t *testing.T, got, want Connection) {
	t.Helper()
	strs := []struct {
		field     string
		got, want string
	}{
		{"Name", got.Name, want.Name},
		{"SiteURL", got.SiteURL, want.SiteURL},
		{"TokenURL", got.TokenURL, want.TokenURL},
		{"LogoutURL", got.LogoutURL, want.LogoutURL},
		{"RevocationURL", got.RevocationURL, want.RevocationURL},
		{"ClientID", got.ClientID, want.ClientID},
		{"ClientSecret", got.ClientSecret, want.ClientSecret},
		{"Username", got.Username, want.Username},
		{"Password", got.Password, want.Password},
	}
	for _, s := range strs {
		if s.got != s.want {
			t.Errorf("%s = %q, want %q", s.field, s.got, s.want)
		}
	}
	durations := []struct {
		field     string
		got, want time.Duration
	}{
		{"DefaultLeaseTTL", got.DefaultLeaseTTL, want.DefaultLeaseTTL},
		{"MaxLeaseTTL", got.MaxLeaseTTL, want.MaxLeaseTTL},
		{"MaxWait", got.MaxWait, want.MaxWait},
		{"IdleTimeout", got.IdleTimeout, want.IdleTimeout},
		{"TokenLifetime", got.TokenLifetime, want.TokenLifetime},
		{"RefreshBefore", got.RefreshBefore, want.RefreshBefore},
		{"IdleSignOutAfter", got.IdleSignOutAfter, want.IdleSignOutAfter},
	}
	for _, d := range durations {
		if d.got != d.want {
			t.Errorf("%s = %v, want %v", d.field, d.got, d.want)
		}
	}
	if !slices.Equal(got.Scopes, want.Scopes) {
		t.Errorf("Scopes = %q, want %q", got.Scopes, want.Scopes)
	}
	if got.OfflineAccess != want.OfflineAccess {
		t.Errorf("OfflineAccess = %v, want %v", got.OfflineAccess, want.OfflineAccess)
	}
	if got.MaxSessions != want.MaxSessions {
		t.Errorf("MaxSessions = %d, want %d", got.MaxSessions, want.MaxSessions)
	}
}

func TestParseEverySetting(t *testing.T) {
	yaml := `connections:
  - name: prod-eu_1
    site_url: https://acu.example.com/site/
    token_url: https://login.example.com/token
    logout_url: http://acu.example.com/logout
    revocation_url: https://login.example.com/revoke
    client_id: abc@Tenant
    client_secret_file: password-crlf.txt
    username: svc-broker
    password_file: password.txt
    scopes: [api]
    max_sessions: 1000
    lease_ttl: {default: 1s, max: 24h}
    max_wait: 0
    idle_timeout: 20m
    token_lifetime: 30m
    refresh_before: 0s
    idle_sign_out_after: 19m59s
`
	file, warnings, err := Parse([]byte(yaml), secretDir(t), lookupTestEnv)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %q, want none", warnings)
	}
	want := Connection{
		Name:             "prod-eu_1",
		SiteURL:          "https://acu.example.com/site",
		TokenURL:         "https://login.example.com/token",
		LogoutURL:        "http://acu.example.com/logout",
		RevocationURL:    "https://login.example.com/revoke",
		ClientID:         "abc@Tenant",
		ClientSecret:     fileSecret,
		Username:         "svc-broker",
		Password:         fileSecret,
		Scopes:           []string{"api"},
		OfflineAccess:    false,
		MaxSessions:      1000,
		DefaultLeaseTTL:  time.Second,
		MaxLeaseTTL:      24 * time.Hour,
		MaxWait:          0,
		IdleTimeout:      20 * time.Minute,
		TokenLifetime:    30 * time.Minute,
		RefreshBefore:    0,
		IdleSignOutAfter: 19*time.Minute + 59*time.Second,
	}
	assertConnection(t, file.Connections[0], want)
}

func TestParseDefaultEndpointsUseTrimmedSiteURL(t *testing.T) {
	yaml := connectionYAML(map[string]string{"site_url": "http://127.0.0.1:8081/AcumaticaERP//", "token_url": `""`})
	file, _, err := Parse([]byte(yaml), "", lookupTestEnv)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	c := file.Connections[0]
	if want := "http://127.0.0.1:8081/AcumaticaERP"; c.SiteURL != want {
		t.Errorf("SiteURL = %q, want %q", c.SiteURL, want)
	}
	if want := "http://127.0.0.1:8081/AcumaticaERP/identity/connect/token"; c.TokenURL != want {
		t.Errorf("TokenURL = %q, want %q (an empty token_url means the default)", c.TokenURL, want)
	}
}

func TestParseInlineSecretsWarn(t *testing.T) {
	yaml := connectionYAML(map[string]string{"client_secret": inlineSecret, "password": inlineSecret},
		"client_secret_env", "password_env")
	file, warnings, err := Parse([]byte(yaml), "", lookupTestEnv)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c := file.Connections[0]; c.ClientSecret != inlineSecret || c.Password != inlineSecret {
		t.Errorf("ClientSecret, Password = %q, %q; want the inline values", c.ClientSecret, c.Password)
	}
	wantPrefixes := []string{
		"connections[0].client_secret: the client secret is written in the config file",
		"connections[0].password: the password is written in the config file",
	}
	if len(warnings) != len(wantPrefixes) {
		t.Fatalf("warnings = %q, want %d", warnings, len(wantPrefixes))
	}
	for i, prefix := range wantPrefixes {
		if !strings.HasPrefix(warnings[i], prefix) {
			t.Errorf("warning %d = %q, want it to start with %q", i, warnings[i], prefix)
		}
		assertNoSecrets(t, warnings[i])
	}
}

func TestParseMergeKeys(t *testing.T) {
	yaml := `connections:
  - &shared
    name: first
    site_url: https://acu.example.com
    client_id: abc@Tenant
    client_secret_env: ACU_SECRET
    username: admin
    password_env: ACU_PASSWORD
    max_sessions: 2
  - <<: *shared
    name: second
    max_sessions: 5
`
	file, _, err := Parse([]byte(yaml), "", lookupTestEnv)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(file.Connections) != 2 {
		t.Fatalf("got %d connections, want 2", len(file.Connections))
	}
	second := file.Connections[1]
	if second.Name != "second" || second.MaxSessions != 5 {
		t.Errorf("second connection name, max_sessions = %q, %d; want second, 5 (written keys win over merged ones)",
			second.Name, second.MaxSessions)
	}
	if second.SiteURL != "https://acu.example.com" || second.Password != envPassword {
		t.Errorf("second connection site_url, password = %q, %q; want the merged values", second.SiteURL, second.Password)
	}
}

func TestParseMergeExpansionLimit(t *testing.T) {
	// Each level merges the previous one ten times, so the merges would expand to 10^7 entries.
	var b strings.Builder
	b.WriteString("connections:\n  - &l0 {name: x}\n")
	for level := 1; level <= 7; level++ {
		b.WriteString("  - &l" + string(rune('0'+level)) + " {<<: [")
		for i := range 10 {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*l" + string(rune('0'+level-1)))
		}
		b.WriteString("]}\n")
	}
	start := time.Now()
	_, _, err := Parse([]byte(b.String()), "", lookupTestEnv)
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Parse took %v, want the merge limit to stop it early", elapsed)
	}
	if err == nil || !strings.Contains(err.Error(), "merge keys expand to more than") {
		t.Errorf("Parse error = %v, want one about the merge expansion limit", err)
	}
}

func TestParseExample(t *testing.T) {
	env := map[string]string{
		"ACUBROKER_DEMO_CLIENT_SECRET": envClientSecret,
		"ACUBROKER_DEMO_PASSWORD":      envPassword,
	}
	lookup := func(name string) (string, bool) { v, ok := env[name]; return v, ok }
	file, warnings, err := Load("example.yaml", lookup)
	if err != nil {
		t.Fatalf("Load example.yaml: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %q, want none", warnings)
	}
	want := Connection{
		Name:             "demo",
		SiteURL:          "http://127.0.0.1:8081",
		TokenURL:         "http://127.0.0.1:8081/identity/connect/token",
		LogoutURL:        "http://127.0.0.1:8081/entity/auth/logout",
		RevocationURL:    "http://127.0.0.1:8081/identity/connect/revocation",
		ClientID:         "00000000-0000-0000-0000-000000000000@Company",
		ClientSecret:     envClientSecret,
		Username:         "admin",
		Password:         envPassword,
		Scopes:           []string{"api", "offline_access"},
		OfflineAccess:    true,
		MaxSessions:      2,
		DefaultLeaseTTL:  DefaultLeaseTTL,
		MaxLeaseTTL:      DefaultMaxLeaseTTL,
		MaxWait:          DefaultMaxWait,
		IdleTimeout:      DefaultIdleTimeout,
		TokenLifetime:    DefaultTokenLifetime,
		RefreshBefore:    DefaultRefreshBefore,
		IdleSignOutAfter: 0,
	}
	if len(file.Connections) != 1 {
		t.Fatalf("got %d connections, want 1", len(file.Connections))
	}
	assertConnection(t, file.Connections[0], want)
}

func TestLoad(t *testing.T) {
	dir := secretDir(t)
	path := filepath.Join(dir, "broker.yaml")
	yaml := connectionYAML(map[string]string{"password_file": "password.txt"}, "password_env")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	file, _, err := Load(path, lookupTestEnv)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := file.Connections[0].Password; got != fileSecret {
		t.Errorf("Password = %q, want the contents of password.txt next to the config file", got)
	}

	t.Run("MissingFile", func(t *testing.T) {
		missing := filepath.Join(dir, "nope.yaml")
		_, _, err := Load(missing, lookupTestEnv)
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("Load of a missing file: error %v, want one naming %s", err, missing)
		}
	})

	t.Run("InvalidFile", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(bad, []byte(connectionYAML(map[string]string{"max_sessions": "0"})), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := Load(bad, lookupTestEnv)
		var verr *ValidationError
		if !errors.As(err, &verr) {
			t.Fatalf("Load error = %v, want a *ValidationError inside", err)
		}
		if want := "config file " + bad + ":\nconnections[0].max_sessions: "; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Load error = %q, want it to start with %q", err, want)
		}
	})
}

func TestParseNilLookupUsesEnvironment(t *testing.T) {
	t.Setenv("ACU_SECRET", "from-process-env")
	t.Setenv("ACU_PASSWORD", "password-from-process-env")
	file, _, err := Parse([]byte(connectionYAML(nil)), "", nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := file.Connections[0].ClientSecret; got != "from-process-env" {
		t.Errorf("ClientSecret = %q, want the process environment's value", got)
	}
}

func TestFieldErrorFormat(t *testing.T) {
	tests := []struct {
		give FieldError
		want string
	}{
		{FieldError{Field: "connections[0].max_sessions", Message: "must be between 1 and 1000, got 0", Line: 7},
			"connections[0].max_sessions: must be between 1 and 1000, got 0 (line 7)"},
		{FieldError{Field: "connections", Message: "missing"}, "connections: missing"},
	}
	for _, tt := range tests {
		if got := tt.give.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		give time.Duration
		want string
	}{
		{0, "0s"},
		{500 * time.Millisecond, "500ms"},
		{90 * time.Second, "1m30s"},
		{5 * time.Minute, "5m"},
		{time.Hour, "1h"},
		{time.Hour + time.Minute, "1h1m"},
		{time.Hour + time.Second, "1h0m1s"},
	}
	for _, tt := range tests {
		if got := formatDuration(tt.give); got != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.give, got, tt.want)
		}
	}
}
