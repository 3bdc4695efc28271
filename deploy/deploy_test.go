// Package deploy_test checks the deployment examples without Docker or a
// cluster. docker-compose.yml, the Dockerfile and every manifest under
// deploy/ are parsed and checked for the settings the broker relies on.
// Each broker config is loaded with the environment that its example gives
// the container, and must pass the checks that broker serve makes before it
// starts. The Grafana dashboard and the alert rules may only query metrics
// that package metrics registers.
package deploy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
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

// defaultListen is the gRPC listen address of broker serve when neither
// -listen nor BROKER_LISTEN is set.
const defaultListen = "127.0.0.1:50051"

// fakeSecret is the value of every environment variable that a manifest
// takes from a Secret. It is a valid base64 encryption key, and as a
// non-empty string it is also a valid client secret, password or database
// URL for the config loader.
var fakeSecret = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, config.EncryptionKeySize))

// deployment is a broker config file as an example deploys it.
type deployment struct {
	source     string            // the file that deploys the config, for messages
	configPath string            // the config file, on this machine
	args       []string          // the container's arguments after the entrypoint
	env        map[string]string // the container's environment
}

// flagValue returns the value of the flag name in args, written as -name
// value, -name=value, --name value or --name=value, and whether it is
// present.
func flagValue(args []string, name string) (string, bool) {
	for i, arg := range args {
		key, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if !strings.HasPrefix(arg, "-") || key != name {
			continue
		}
		if hasValue {
			return value, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
		return "", true
	}
	return "", false
}

// serveSetting returns the value that broker serve uses for a flag with an
// environment fallback: the flag in args, else the variable envName when it
// is not empty, else def.
func serveSetting(d deployment, flag, envName, def string) string {
	if v, ok := flagValue(d.args, flag); ok {
		return v
	}
	if v := d.env[envName]; v != "" {
		return v
	}
	return def
}

// checkStartup loads the config of d with the broker's config loader and
// the container's environment, and runs the checks that broker serve makes
// on the config and its flags before it touches the database. It fails the
// test for every check that would stop the broker from starting.
func checkStartup(t *testing.T, d deployment) *config.File {
	t.Helper()
	file, _, err := config.Load(d.configPath, func(name string) (string, bool) {
		v, ok := d.env[name]
		return v, ok
	})
	if err != nil {
		t.Fatalf("%s: broker serve would not start: config %s is invalid with the container's environment: %v",
			d.source, d.configPath, err)
	}

	listen := serveSetting(d, "listen", "BROKER_LISTEN", defaultListen)
	if err := config.CheckListener(listen, len(file.Callers)); err != nil {
		t.Errorf("%s: broker serve would not start: %v", d.source, err)
	}

	// The TLS rules of newSecurity in cmd/broker, which is unexported.
	cert := serveSetting(d, "tls-cert", "BROKER_TLS_CERT", "")
	key := serveSetting(d, "tls-key", "BROKER_TLS_KEY", "")
	clientCA := serveSetting(d, "tls-client-ca", "BROKER_TLS_CLIENT_CA", "")
	if (cert == "") != (key == "") {
		t.Errorf("%s: broker serve would not start: TLS needs both -tls-cert and -tls-key, got %q and %q", d.source, cert, key)
	}
	if clientCA != "" && cert == "" {
		t.Errorf("%s: broker serve would not start: -tls-client-ca needs -tls-cert and -tls-key", d.source)
	}
	for i, c := range file.Callers {
		if c.CertificateIdentity != "" && clientCA == "" {
			t.Errorf("%s: broker serve would not start: callers[%d] (%s) has a certificate_identity, but -tls-client-ca is not set",
				d.source, i, c.Name)
		}
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
	d := deployment{source: "docker-compose.yml", configPath: configPath, env: map[string]string{}}
	for name, v := range env {
		s, ok := v.(string)
		if !ok {
			t.Errorf("broker environment %s = %v, want a string", name, v)
		}
		d.env[name] = s
	}
	for _, arg := range broker.get("command").list() {
		d.args = append(d.args, arg.str())
	}
	file := checkStartup(t, d)
	if len(file.Connections) == 0 {
		t.Error("the broker's config has no connection")
	}

	// The demo API key in the comments belongs to a caller of the config, so
	// that the grpcurl commands shown work.
	data, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatalf("read docker-compose.yml: %v", err)
	}
	keys := regexp.MustCompile(`authorization: Bearer ([^\s'"]+)`).FindAllStringSubmatch(string(data), -1)
	if len(keys) == 0 {
		t.Error("docker-compose.yml shows no grpcurl command with an API key")
	}
	for _, m := range keys {
		digest := sha256.Sum256([]byte(m[1]))
		if !slices.ContainsFunc(file.Callers, func(c config.Caller) bool { return slices.Contains(c.APIKeySHA256, digest) }) {
			t.Errorf("docker-compose.yml shows the API key %q, whose SHA-256 digest is no caller's api_key_sha256 in %s",
				m[1], configPath)
		}
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
	if len(byKind["Deployment"]) != 1 || len(byKind["ConfigMap"]) != 1 {
		t.Fatalf("want one Deployment and one ConfigMap; got %d and %d", len(byKind["Deployment"]), len(byKind["ConfigMap"]))
	}
	secrets := map[string]node{}
	for _, secret := range byKind["Secret"] {
		secrets[secret.get("metadata", "name").str()] = secret
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
	if got := c.get("readinessProbe", "httpGet", "path").str(); got != "/readyz" {
		t.Errorf("readiness probe path = %q, want /readyz", got)
	}
	for _, probe := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
		if port := c.get(probe, "httpGet", "port").v; port != nil && port != "metrics" {
			t.Errorf("%s port = %v, want metrics", probe, port)
		}
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
	args := nodeStrings(c.get("args").list())
	flags := strings.ReplaceAll(strings.Join(args, " "), "=", " ")
	grace, _ := pod.get("terminationGracePeriodSeconds").v.(int)
	if need := flagSeconds(t, flags, "-shutdown-delay") + flagSeconds(t, flags, "-shutdown-timeout") + 5; grace <= need {
		t.Errorf("terminationGracePeriodSeconds = %d, want more than %d (delay + timeout + 5s)", grace, need)
	}

	// The ConfigMap's config starts with the container's environment and
	// flags, and every variable it names comes from a Secret.
	cm := byKind["ConfigMap"][0]
	body := cm.get("data", "broker.yaml").str()
	configPath := filepath.Join(t.TempDir(), "broker.yaml")
	if err := os.WriteFile(configPath, []byte(body), 0o600); err != nil {
		t.Fatalf("write %s: %v", configPath, err)
	}
	d := deployment{
		source:     "deploy/kubernetes/deployment.yaml",
		configPath: configPath,
		args:       args,
		env:        containerEnv(t, c, secrets),
	}
	file := checkStartup(t, d)
	for _, name := range envNames(body) {
		if env[name].get("valueFrom", "secretKeyRef").missing() {
			t.Errorf("the config names %s, which the container does not take from a Secret", name)
		}
	}
	if len(file.Connections) == 0 {
		t.Error("the ConfigMap's config has no connection")
	}
	if file.Encryption == nil {
		t.Error("the ConfigMap's config has no encryption section, so session tokens would be stored unencrypted")
	}
	checkConfigMount(t, serveSetting(d, "config", "BROKER_CONFIG", ""), cm, pod, c)
	checkTLS(t, d, pod, c, secrets)

	for _, svc := range byKind["Service"] {
		for k, v := range svc.get("spec", "selector").mapping() {
			if podLabels[k] != v {
				t.Errorf("Service %s selects %s=%v, which the pods lack", svc.get("metadata", "name").str(), k, v)
			}
		}
	}
}

// containerEnv returns the environment that the kubelet gives container c:
// literal values as written, and fakeSecret for each value taken from a
// Secret key. It fails the test for a reference to a Secret or key that the
// manifests lack.
func containerEnv(t *testing.T, c node, secrets map[string]node) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.get("env").list() {
		name := e.get("name").str()
		ref := e.get("valueFrom", "secretKeyRef")
		switch {
		case !ref.missing():
			secret, key := ref.get("name").str(), ref.get("key").str()
			if !slices.Contains(secretKeys(secrets[secret]), key) {
				t.Errorf("%s comes from key %q of Secret %q, which the manifests lack", name, key, secret)
				continue
			}
			env[name] = fakeSecret
		case !e.get("valueFrom").missing():
			t.Errorf("%s comes from %v; this test can fake only Secret keys", name, e.get("valueFrom").v)
		default:
			env[name] = e.get("value").str()
		}
	}
	return env
}

// secretKeys returns the keys of a Secret manifest, from data and
// stringData.
func secretKeys(secret node) []string {
	var keys []string
	for _, field := range []string{"data", "stringData"} {
		for k := range secret.get(field).mapping() {
			keys = append(keys, k)
		}
	}
	return keys
}

// checkConfigMount fails the test unless path, the config file that broker
// serve reads, is the broker.yaml key of ConfigMap cm as the pod mounts it.
func checkConfigMount(t *testing.T, path string, cm, pod, c node) {
	t.Helper()
	var volume string
	for _, v := range pod.get("volumes").list() {
		if v.get("configMap", "name").str() == cm.get("metadata", "name").str() {
			volume = v.get("name").str()
		}
	}
	if volume == "" {
		t.Error("the pod does not mount the ConfigMap")
		return
	}
	for _, m := range c.get("volumeMounts").list() {
		if m.get("name").str() == volume && strings.TrimSuffix(m.get("mountPath").str(), "/")+"/broker.yaml" == path {
			return
		}
	}
	t.Errorf("the broker reads its config from %q, which is not where the container mounts the ConfigMap's broker.yaml", path)
}

// checkTLS fails the test unless the gRPC listener of d serves TLS from
// files of a Secret, and no probe of container c uses the kubelet's gRPC
// probe, which cannot connect to a TLS listener.
func checkTLS(t *testing.T, d deployment, pod, c node, secrets map[string]node) {
	t.Helper()
	cert := serveSetting(d, "tls-cert", "BROKER_TLS_CERT", "")
	if cert == "" {
		t.Error("the gRPC listener serves plaintext, so API keys would cross the network in clear text; " +
			"set BROKER_TLS_CERT and BROKER_TLS_KEY")
		return
	}
	for _, setting := range []struct{ flag, env string }{
		{"tls-cert", "BROKER_TLS_CERT"},
		{"tls-key", "BROKER_TLS_KEY"},
		{"tls-client-ca", "BROKER_TLS_CLIENT_CA"},
	} {
		if path := serveSetting(d, setting.flag, setting.env, ""); path != "" {
			checkSecretFile(t, setting.env, path, pod, c, secrets)
		}
	}
	for _, probe := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
		if !c.get(probe, "grpc").missing() {
			t.Errorf("%s is a gRPC probe, which the kubelet sends in plaintext, but the gRPC listener serves TLS; "+
				"use httpGet on the metrics port", probe)
		}
	}
}

// checkSecretFile fails the test unless container c of pod reads path from
// a Secret of the manifests: path lies under the mountPath of a volume mount
// without subPath, and that volume's Secret has the key that becomes the
// file. A subPath mount never receives a renewed certificate.
func checkSecretFile(t *testing.T, setting, path string, pod, c node, secrets map[string]node) {
	t.Helper()
	volumes := map[string]node{}
	for _, v := range pod.get("volumes").list() {
		volumes[v.get("name").str()] = v
	}
	for _, m := range c.get("volumeMounts").list() {
		file, ok := strings.CutPrefix(path, strings.TrimSuffix(m.get("mountPath").str(), "/")+"/")
		if !ok {
			continue
		}
		if !m.get("subPath").missing() {
			t.Errorf("%s = %s is mounted with subPath, so a renewed Secret would not reach the broker", setting, path)
			return
		}
		volume := volumes[m.get("name").str()].get("secret")
		if volume.missing() {
			t.Errorf("%s = %s lies in volume %s, which is not a Secret", setting, path, m.get("name").str())
			return
		}
		secret, key := volume.get("secretName").str(), file
		if items := volume.get("items").list(); len(items) > 0 {
			key = ""
			for _, item := range items {
				if item.get("path").str() == file {
					key = item.get("key").str()
				}
			}
		}
		if !slices.Contains(secretKeys(secrets[secret]), key) {
			t.Errorf("%s = %s, but Secret %q of the manifests has no key that becomes %s", setting, path, secret, file)
		}
		return
	}
	t.Errorf("%s = %s, which no volume mount of the container provides", setting, path)
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
// its env and *_env settings, written in block style.
func envNames(body string) []string {
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^[\s-]*(?:\w+_)?env:\s*(\w+)`).FindAllStringSubmatch(body, -1) {
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
