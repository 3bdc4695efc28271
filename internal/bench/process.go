package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"

	"github.com/acubroker/acubroker/config"
	"github.com/acubroker/acubroker/emulator"
)

// Environment variables that carry the emulator's demo secrets to the
// broker processes, which the config file names.
const (
	clientSecretEnv = "BROKERBENCH_CLIENT_SECRET"
	passwordEnv     = "BROKERBENCH_PASSWORD"
)

// buildBroker builds ./cmd/broker into dir and returns the binary's path.
func buildBroker(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "broker")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/acubroker/acubroker/cmd/broker").
		CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/broker: %w\n%s", err, out)
	}
	return bin, nil
}

// writeConfig writes the broker config file of spec for the emulator at
// siteURL.
func writeConfig(path string, spec deploySpec, siteURL string) error {
	var b strings.Builder
	b.WriteString("connections:\n")
	for _, c := range spec.Conns {
		fmt.Fprintf(&b, `  - name: %s
    site_url: %s
    client_id: %q
    client_secret_env: %s
    username: %s
    password_env: %s
    max_sessions: %d
    max_wait: %s
`, c.Name, siteURL, emulator.DemoClientID, clientSecretEnv, emulator.DemoUser, passwordEnv, c.Seats, c.MaxWait)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write the broker config: %w", err)
	}
	// Catch a config the broker would reject before starting it.
	if _, _, err := config.Load(path, func(string) (string, bool) { return "x", true }); err != nil {
		return fmt.Errorf("generated broker config %s is invalid: %w", path, err)
	}
	return nil
}

// startProcess starts replica i of spec as a `broker serve` process and
// waits until its health service reports SERVING.
func (r *runner) startProcess(ctx context.Context, spec deploySpec, databaseURL, siteURL string, i int) (*replica, error) {
	configPath := filepath.Join(r.workDir, spec.Name+".yaml")
	if i == 0 {
		if err := writeConfig(configPath, spec, siteURL); err != nil {
			return nil, err
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(r.logDir, fmt.Sprintf("%s-broker%d.log", spec.Name, i))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create the broker log: %w", err)
	}
	cmd := exec.Command(r.brokerBin, "serve", "-listen", addr, "-metrics-listen", "",
		"-log-level", r.cfg.BrokerLogLevel, "-shutdown-timeout", "5s")
	cmd.Env = append(brokerFreeEnviron(),
		"BROKER_CONFIG="+configPath,
		"BROKER_DATABASE_URL="+databaseURL,
		clientSecretEnv+"="+emulator.DemoClientSecret,
		passwordEnv+"="+emulator.DemoPassword,
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The broker dies with the benchmark, even when the benchmark is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", r.brokerBin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(exited)
	}()
	rep := &replica{addr: addr, pid: cmd.Process.Pid, stop: func() error { return stopProcess(cmd, exited) }}
	if err := waitServing(ctx, addr, exited, logPath); err != nil {
		return nil, errors.Join(err, rep.stop())
	}
	r.log.Info("broker process serving", "scenario", spec.Name, "address", addr, "pid", rep.pid, "log", logPath)
	return rep, nil
}

// brokerFreeEnviron returns the environment without the variables that
// configure a broker, such as BROKER_TLS_CERT, so that only the
// benchmark's settings apply.
func brokerFreeEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BROKER_") && !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	return env
}

// stopProcess sends SIGTERM and waits for the process, then kills it
// when it is still running after 10 seconds.
func stopProcess(cmd *exec.Cmd, exited <-chan struct{}) error {
	select {
	case <-exited:
		return nil
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = cmd.Process.Kill()
	<-exited
	return fmt.Errorf("broker process %d did not stop within 10s of SIGTERM and was killed", cmd.Process.Pid)
}

// waitServing polls the health service at addr until it reports SERVING,
// the process exits, or 30 seconds pass.
func waitServing(ctx context.Context, addr string, exited <-chan struct{}, logPath string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial broker %s: %w", addr, err)
	}
	defer conn.Close()
	health := grpc_health_v1.NewHealthClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := health.Check(callCtx, &grpc_health_v1.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == grpc_health_v1.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("broker on %s exited before it served; its log:\n%s", addr, logTail(logPath))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("broker on %s did not serve within 30s; its log:\n%s", addr, logTail(logPath))
}

// logTail returns the last lines of a log file.
func logTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-20, 0):], "\n")
}

// freeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeAddr() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		return "", fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	return addr, nil
}
