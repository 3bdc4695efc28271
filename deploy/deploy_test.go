// Package deploy_test checks the deployment examples without Docker or a
// cluster: docker-compose.yml, the Dockerfile and every manifest under
// deploy/ are parsed and checked for the settings the broker relies on, and
// the Grafana dashboard and the alert rules may only query metrics that
// package metrics registers.
package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/acubroker/acubroker/config"
	"github.com/acubroker/acubroker/metrics"
)

// node is a decoded YAML value with helpers to walk it.
type node struct{ v any }

func (n node) get(path ...any) node {
	cur := n.v
	for _, p := range path {
		switch key := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				return node{}
			}
			cur = m[key]
		case int:
			l, ok := cur.([]any)
			if !ok || key >= len(l) {
				return node{}
			}
			cur = l[key]
		}
	}
	return node{cur}
}

func (n node) missing() bool { return n.v == nil }

func (n node) str() string {
	s, _ := n.v.(string)
	return s
}

func (n node) list() []node {
	l, _ := n.v.([]any)
	out := make([]node, 0, len(l))
	for _, v := range l {
		out = append(out, node{v})
	}
	return out
}

func (n node) mapping() map[string]any {
	m, _ := n.v.(map[string]any)
	return m
}

// readDocs decodes every YAML document in path.
func readDocs(t *testing.T, path string) []node {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []node
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("parse %s: %v", path, err)
		}
		if v != nil {
			docs = append(docs, node{v})
		}
	}
}

// loadConfig validates a broker config file body with config.Load, with
// every environment variable it names set.
func loadConfig(t *testing.T, name, body string) *config.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	file, _, err := config.Load(path, func(string) (string, bool) { return "placeholder", true })
	if err != nil {
		t.Fatalf("config %s is invalid: %v", name, err)
	}
	return file
}

func TestComposeFile(t *testing.T) {
	t.Parallel()
	docs := readDocs(t, "../docker-compose.yml")
	if len(docs) != 1 {
		t.Fatalf("docker-compose.yml has %d documents, want 1", len(docs))
	}
	services := docs[0].get("services").mapping()
	for _, name := range []string{"postgres", "emulator", "broker"} {
		svc := node{services[name]}
		if svc.missing() {
			t.Errorf("service %s is missing", name)
			continue
		}
		if svc.get("image").str() == "" && svc.get("build").missing() {
			t.Errorf("service %s has neither an image nor a build", name)
		}
	}
	for name, svc := range services {
		for _, port := range (node{svc}).get("ports").list() {
			if !strings.HasPrefix(port.str(), "127.0.0.1:") {
				t.Errorf("service %s publishes port %q; publish it on 127.0.0.1 only", name, port.str())
			}
		}
	}

	broker := node{services["broker"]}
	env := broker.get("environment").mapping()
	for _, key := range []string{"BROKER_CONFIG", "BROKER_DATABASE_URL", "BROKER_LISTEN", "BROKER_METRICS_LISTEN"} {
		if _, ok := env[key]; !ok {
			t.Errorf("broker environment lacks %s", key)
		}
	}
	for _, key := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		if _, ok := env[key]; ok {
			t.Errorf("broker environment sets %s; tracing must stay off unless the user sets it", key)
		}
	}
	if got := broker.get("build", "target").str(); got != "broker" {
		t.Errorf("broker build target = %q, want broker", got)
	}
	if got := (node{services["emulator"]}).get("build", "target").str(); got != "emulator" {
		t.Errorf("emulator build target = %q, want emulator", got)
	}

	// The mounted config file exists, is valid, and names only variables
	// that the service sets.
	var configPath string
	for _, v := range broker.get("volumes").list() {
		src, dst, _ := strings.Cut(v.str(), ":")
		if strings.HasPrefix(dst, "/etc/acubroker/broker.yaml") {
			configPath = filepath.Join("..", src)
		}
	}
	if configPath == "" {
		t.Fatal("the broker service mounts no config file at /etc/acubroker/broker.yaml")
	}
	body, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatalf("read the broker's config: %v", err)
	}
	file, _, err := config.Parse(body, filepath.Dir(configPath), func(name string) (string, bool) {
		v, ok := env[name].(string)
		return v, ok
	})
	if err != nil {
		t.Fatalf("the broker's config %s is invalid with the service's environment: %v", configPath, err)
	}
	if len(file.Connections) == 0 {
		t.Error("the broker's config has no connection")
	}
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatalf("read Dockerfile: %v", err)
	}
	var stages []string
	var lastUser string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			stages = append(stages, line)
			lastUser = ""
		case "USER":
			lastUser = fields[1]
		}
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a runtime stage", len(stages))
	}
	final := stages[len(stages)-1]
	if !strings.Contains(final, "distroless") && !strings.Contains(final, "slim") {
		t.Errorf("final stage %q is neither distroless nor debian-slim", final)
	}
	if !strings.HasSuffix(final, "AS broker") {
		t.Errorf("final stage %q is not the broker stage, so a plain docker build would not build the broker", final)
	}
	if lastUser == "" || strings.HasPrefix(lastUser, "root") || strings.HasPrefix(lastUser, "0") {
		t.Errorf("final stage runs as %q, want a non-root user", lastUser)
	}
}

func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	paths, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests under deploy/kubernetes: %v", err)
	}
	byKind := map[string][]node{}
	for _, path := range paths {
		for _, doc := range readDocs(t, path) {
			kind, api := doc.get("kind").str(), doc.get("apiVersion").str()
			if kind == "" || api == "" {
				t.Errorf("%s: a document lacks kind or apiVersion", path)
				continue
			}
			byKind[kind] = append(byKind[kind], doc)
		}
	}
	for _, kind := range []string{"Deployment", "Service", "Secret", "ConfigMap", "PodDisruptionBudget"} {
		if len(byKind[kind]) == 0 {
			t.Errorf("no %s manifest", kind)
		}
	}
	if len(byKind["Deployment"]) != 1 || len(byKind["ConfigMap"]) != 1 || len(byKind["Secret"]) != 1 {
		t.Fatalf("want one Deployment, ConfigMap and Secret; got %d, %d and %d",
			len(byKind["Deployment"]), len(byKind["ConfigMap"]), len(byKind["Secret"]))
	}

	dep := byKind["Deployment"][0]
	if replicas, _ := dep.get("spec", "replicas").v.(int); replicas != 3 {
		t.Errorf("Deployment replicas = %v, want 3", dep.get("spec", "replicas").v)
	}
	podLabels := dep.get("spec", "template", "metadata", "labels").mapping()
	pod := dep.get("spec", "template", "spec")
	if nonRoot, _ := pod.get("securityContext", "runAsNonRoot").v.(bool); !nonRoot {
		t.Error("the pod does not set runAsNonRoot")
	}
	containers := pod.get("containers").list()
	if len(containers) != 1 {
		t.Fatalf("the pod has %d containers, want 1", len(containers))
	}
	c := containers[0]
	if c.get("image").str() == "" {
		t.Error("the broker container has no image")
	}
	for _, probe := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
		if c.get(probe).missing() {
			t.Errorf("the broker container has no %s", probe)
		}
	}
	if got := c.get("livenessProbe", "httpGet", "path").str(); got != "/healthz" {
		t.Errorf("liveness probe path = %q, want /healthz", got)
	}
	if got := c.get("readinessProbe", "grpc", "service").str(); got != "acubroker.v1.SessionService" {
		t.Errorf("readiness probe gRPC service = %q, want acubroker.v1.SessionService", got)
	}
	ports := map[string]int{}
	for _, p := range c.get("ports").list() {
		n, _ := p.get("containerPort").v.(int)
		ports[p.get("name").str()] = n
	}
	if ports["grpc"] != 50051 || ports["metrics"] != 9090 {
		t.Errorf("container ports = %v, want grpc 50051 and metrics 9090", ports)
	}

	env := map[string]node{}
	for _, e := range c.get("env").list() {
		env[e.get("name").str()] = e
	}
	if got := env["BROKER_METRICS_LISTEN"].get("value").str(); !strings.HasSuffix(got, ":9090") || strings.HasPrefix(got, "127.") {
		t.Errorf("BROKER_METRICS_LISTEN = %q, want port 9090 on the pod IP so that probes reach it", got)
	}
	if env["BROKER_DATABASE_URL"].get("valueFrom", "secretKeyRef").missing() {
		t.Error("BROKER_DATABASE_URL does not come from a Secret")
	}

	// The grace period covers the shutdown delay, the shutdown timeout and
	// the 5s that cancelled calls get.
	args := strings.ReplaceAll(strings.Join(nodeStrings(c.get("args").list()), " "), "=", " ")
	grace, _ := pod.get("terminationGracePeriodSeconds").v.(int)
	if need := flagSeconds(t, args, "-shutdown-delay") + flagSeconds(t, args, "-shutdown-timeout") + 5; grace <= need {
		t.Errorf("terminationGracePeriodSeconds = %d, want more than %d (delay + timeout + 5s)", grace, need)
	}

	// The ConfigMap's config is valid, and every variable it names comes
	// from the Secret.
	cm := byKind["ConfigMap"][0]
	body := cm.get("data", "broker.yaml").str()
	file := loadConfig(t, "broker.yaml", body)
	secretKeys := byKind["Secret"][0].get("stringData").mapping()
	for _, name := range envNames(body) {
		ref := env[name].get("valueFrom", "secretKeyRef")
		if ref.missing() {
			t.Errorf("the config names %s, which the container does not take from a Secret", name)
			continue
		}
		if _, ok := secretKeys[ref.get("key").str()]; !ok {
			t.Errorf("%s comes from Secret key %q, which secret.yaml lacks", name, ref.get("key").str())
		}
	}
	if len(file.Connections) == 0 {
		t.Error("the ConfigMap's config has no connection")
	}
	mounted := false
	for _, v := range pod.get("volumes").list() {
		if v.get("configMap", "name").str() == cm.get("metadata", "name").str() {
			mounted = true
		}
	}
	if !mounted {
		t.Error("the pod does not mount the ConfigMap")
	}

	for _, svc := range byKind["Service"] {
		for k, v := range svc.get("spec", "selector").mapping() {
			if podLabels[k] != v {
				t.Errorf("Service %s selects %s=%v, which the pods lack", svc.get("metadata", "name").str(), k, v)
			}
		}
	}
}

func nodeStrings(nodes []node) []string {
	out := make([]string, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, n.str())
	}
	return out
}

// flagSeconds returns the whole seconds of a duration flag in args.
func flagSeconds(t *testing.T, args, flag string) int {
	t.Helper()
	m := regexp.MustCompile(regexp.QuoteMeta(flag) + ` (\d+)s\b`).FindStringSubmatch(args)
	if m == nil {
		t.Fatalf("the container args %q lack %s in whole seconds", args, flag)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatalf("%s %ss: %v", flag, m[1], err)
	}
	return n
}

// envNames returns the environment variables that a config body names in
// *_env settings.
func envNames(body string) []string {
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^\s*\w+_env:\s*(\w+)`).FindAllStringSubmatch(body, -1) {
		names = append(names, m[1])
	}
	return names
}

// registeredNames returns the names of every metric that package metrics
// registers, read from the descriptors.
func registeredNames(t *testing.T) map[string]bool {
	t.Helper()
	// The pool never connects: describing the collectors sends no query.
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?sslmode=disable")
	if err != nil {
		t.Fatalf("pgxpool.New: %v", err)
	}
	defer pool.Close()
	m := metrics.New(metrics.Config{Pool: pool, Connections: []string{"erp"}})
	descs := make(chan *prometheus.Desc)
	go func() {
		m.Describe(descs)
		close(descs)
	}()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{}
	for d := range descs {
		if match := fqName.FindStringSubmatch(d.String()); match != nil {
			names[match[1]] = true
		}
	}
	if len(names) == 0 {
		t.Fatal("no metric names could be read from the descriptors")
	}
	return names
}

// promQLKeywords are the words of PromQL that look like metric names.
var promQLKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}

// metricNames returns the metric names an expression selects. It drops
// strings, label matchers, ranges and grouping clauses, then keeps the
// identifiers that are not functions, keywords or numbers.
func metricNames(expr string) []string {
	for _, re := range []string{`"(?:[^"\\]|\\.)*"`, `\{[^}]*\}`, `\[[^\]]*\]`,
		`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`} {
		expr = regexp.MustCompile(re).ReplaceAllString(expr, " ")
	}
	var names []string
	ident := regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	for _, loc := range ident.FindAllStringIndex(expr, -1) {
		word := expr[loc[0]:loc[1]]
		rest := strings.TrimLeft(expr[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || slices.Contains(promQLKeywords, word) || strings.HasPrefix(word, "$") {
			continue
		}
		if loc[0] > 0 && expr[loc[0]-1] == '$' {
			continue // a Grafana variable such as $__rate_interval
		}
		names = append(names, word)
	}
	return names
}

// dashboardQueries returns every PromQL expression of the dashboard: the
// panels' exprs and the metric of each label_values variable.
func dashboardQueries(t *testing.T, dash map[string]any) []string {
	t.Helper()
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, child := range x {
				if s, ok := child.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					exprs = append(exprs, s)
				}
				walk(child)
			}
		case []any:
			for _, child := range x {
				walk(child)
			}
		}
	}
	walk(dash)
	labelValues := regexp.MustCompile(`^label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)`)
	var out []string
	for _, e := range exprs {
		if m := labelValues.FindStringSubmatch(e); m != nil {
			out = append(out, m[1])
			continue
		}
		if e == "prometheus" {
			continue // the data source variable's plugin type
		}
		out = append(out, e)
	}
	return out
}

func TestDashboardQueriesRegisteredMetrics(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("grafana/acubroker-dashboard.json")
	if err != nil {
		t.Fatalf("read dashboard: %v", err)
	}
	var dash map[string]any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("the dashboard is not valid JSON: %v", err)
	}
	if dash["title"] == "" || dash["uid"] == "" {
		t.Error("the dashboard has no title or uid")
	}

	queries := dashboardQueries(t, dash)
	if len(queries) < 10 {
		t.Fatalf("found %d queries in the dashboard, want at least 10", len(queries))
	}
	used := checkQueries(t, "dashboard", queries)
	for _, name := range []string{"acubroker_seats", "acubroker_waiters", "acubroker_acquires_total",
		"acubroker_acquire_wait_seconds_bucket", "acubroker_erp_requests_total", "acubroker_pending_sign_outs",
		"grpc_server_handled_total"} {
		if !used[name] {
			t.Errorf("the dashboard has no panel on %s", name)
		}
	}
}

// checkQueries fails the test for every query that selects no metric or a
// metric that package metrics does not register, and returns the names
// used.
func checkQueries(t *testing.T, source string, queries []string) map[string]bool {
	t.Helper()
	registered := registeredNames(t)
	known := func(name string) bool {
		if registered[name] {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && registered[base] {
				return true
			}
		}
		return false
	}
	used := map[string]bool{}
	for _, q := range queries {
		names := metricNames(q)
		if len(names) == 0 {
			t.Errorf("%s: query %q selects no metric", source, q)
		}
		for _, name := range names {
			used[name] = true
			if !known(name) {
				t.Errorf("%s: query %q uses %s, which package metrics does not register", source, q, name)
			}
		}
	}
	return used
}

func TestAlertRulesQueryRegisteredMetrics(t *testing.T) {
	t.Parallel()
	docs := readDocs(t, "prometheus/alerts.yaml")
	if len(docs) != 1 {
		t.Fatalf("alerts.yaml has %d documents, want 1", len(docs))
	}
	var queries []string
	for _, group := range docs[0].get("groups").list() {
		for _, rule := range group.get("rules").list() {
			name, expr := rule.get("alert").str(), rule.get("expr").str()
			if name == "" || expr == "" {
				t.Errorf("group %s has a rule without alert or expr", group.get("name").str())
				continue
			}
			if rule.get("annotations", "summary").str() == "" {
				t.Errorf("alert %s has no summary", name)
			}
			queries = append(queries, expr)
		}
	}
	if len(queries) == 0 {
		t.Fatal("alerts.yaml has no rules")
	}
	checkQueries(t, "alerts.yaml", queries)
}

func TestEveryYAMLFileParses(t *testing.T) {
	t.Parallel()
	paths := []string{"../docker-compose.yml"}
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			paths = append(paths, path)
		}
		return err
	})
	if err != nil {
		t.Fatalf("walk deploy/: %v", err)
	}
	if len(paths) < 8 {
		t.Errorf("found %d YAML files, want at least 8: %q", len(paths), paths)
	}
	for _, path := range paths {
		if docs := readDocs(t, path); len(docs) == 0 {
			t.Errorf("%s contains no YAML document", path)
		}
	}
}

func TestMetricNamesParsesPromQL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		expr string
		want []string
	}{
		{`sum by (grpc_method, grpc_code) (rate(grpc_server_handled_total{grpc_service="x"}[$__rate_interval]))`,
			[]string{"grpc_server_handled_total"}},
		{`max by (connection) (a_total{connection=~"$connection", state!="empty"}) / max by (connection) (b)`,
			[]string{"a_total", "b"}},
		{`histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))`, []string{"x_bucket"}},
	}
	for _, tt := range tests {
		if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}
