package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"

	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/brokertest"
)

var (
	buildOnce sync.Once
	brokerBin string
	buildErr  error
)

// brokerBinary builds cmd/broker once per test run.
func brokerBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "acubroker-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		brokerBin = filepath.Join(dir, "broker")
		out, err := exec.Command("go", "build", "-o", brokerBin, "github.com/acubroker/acubroker/cmd/broker").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/broker: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return brokerBin
}

// processConfig is what a broker process is started with.
type processConfig struct {
	emulatorURL    string
	databaseURL    string
	seats          int
	idleTimeout    time.Duration
	requestTimeout time.Duration
	maxWait        time.Duration
	leaseTTL       time.Duration
}

// writeConfig writes a config file for one connection named like
// brokertest's to the emulator.
func writeConfig(t *testing.T, c processConfig) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "broker.yaml")
	body := fmt.Sprintf(`connections:
  - name: %s
    site_url: %s
    client_id: %q
    client_secret_env: E2E_CLIENT_SECRET
    username: %s
    password_env: E2E_PASSWORD
    max_sessions: %d
    max_wait: %s
    idle_timeout: %s
    request_timeout: %s
    lease_ttl: {default: %s, max: 1h}
`, brokertest.ConnectionName, c.emulatorURL, emulator.DemoClientID, emulator.DemoUser, c.seats,
		c.maxWait, c.idleTimeout, c.requestTimeout, c.leaseTTL)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// brokerProcess is one `broker serve` process.
type brokerProcess struct {
	t          *testing.T
	bin        string
	configPath string
	dbURL      string
	addr       string
	logPath    string

	mu  sync.Mutex
	cmd *exec.Cmd
}

func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

func startBroker(t *testing.T, configPath, dbURL string) *brokerProcess {
	t.Helper()
	p := &brokerProcess{
		t:          t,
		bin:        brokerBinary(t),
		configPath: configPath,
		dbURL:      dbURL,
		addr:       freeAddr(t),
	}
	p.logPath = filepath.Join(t.TempDir(), "broker.log")
	if dir := os.Getenv("BROKER_E2E_LOG_DIR"); dir != "" {
		p.logPath = filepath.Join(dir, "broker-"+strings.ReplaceAll(p.addr, ":", "-")+".log")
	}
	t.Cleanup(p.kill)
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs the process and waits until it serves. It may run on any
// goroutine.
func (p *brokerProcess) start() error {
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(p.bin, "serve", "-listen", p.addr, "-metrics-listen", "", "-log-level", "debug")
	cmd.Env = append(os.Environ(),
		"BROKER_CONFIG="+p.configPath,
		"BROKER_DATABASE_URL="+p.dbURL,
		"E2E_CLIENT_SECRET="+emulator.DemoClientSecret,
		"E2E_PASSWORD="+emulator.DemoPassword,
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start broker: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	p.mu.Lock()
	p.cmd = cmd
	p.mu.Unlock()
	return p.waitServing()
}

func (p *brokerProcess) waitServing() error {
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	health := grpc_health_v1.NewHealthClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := health.Check(ctx, &grpc_health_v1.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == grpc_health_v1.HealthCheckResponse_SERVING {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(p.logPath)
	return fmt.Errorf("broker on %s did not start serving within 30s; its log:\n%s", p.addr, log)
}

// kill ends the process with SIGKILL, as a crash would.
func (p *brokerProcess) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd = nil
	}
}

func TestTwoBrokerProcessesShareTheBudget(t *testing.T) {
	t.Parallel()
	const (
		seats   = 3
		callers = 20
		cycles  = 300
	)
	emuCfg := emulator.DefaultConfig()
	emuCfg.Seats = seats
	emu, err := emulator.Start(emuCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	dbURL := brokertest.NewDatabase(t)
	cfg := writeConfig(t, processConfig{
		emulatorURL: emu.URL, databaseURL: dbURL, seats: seats,
		idleTimeout: 10 * time.Minute, requestTimeout: 10 * time.Second, maxWait: 30 * time.Second, leaseTTL: time.Minute,
	})
	brokers := []*brokerProcess{startBroker(t, cfg, dbURL), startBroker(t, cfg, dbURL)}
	clients := make([]acubrokerv1.SessionServiceClient, len(brokers))
	for i, b := range brokers {
		clients[i] = acubrokerv1.NewSessionServiceClient(brokertest.Dial(t, b.addr))
	}

	next := make(chan int, cycles)
	for i := range cycles {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	errs := make(chan error, cycles)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				client := clients[i%len(clients)]
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				resp, err := client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
				if err == nil {
					// Release through the other process: any replica serves any lease.
					other := clients[(i+1)%len(clients)]
					_, err = other.ReleaseSession(ctx, &acubrokerv1.ReleaseSessionRequest{LeaseId: resp.GetLease().GetLeaseId()})
				}
				cancel()
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("cycle failed: %v", err)
	}
	stats := emu.Emulator.Stats()
	t.Logf("emulator: peak %d, sign-ins %d, refused %v", stats.PeakSessions, stats.SignIns, stats.RefusedSignIns)
	if stats.PeakSessions > seats {
		t.Errorf("emulator peak open sessions = %d, want at most %d", stats.PeakSessions, seats)
	}
	if refused := sum(stats.RefusedSignIns); refused != 0 {
		t.Errorf("emulator refused %d sign-ins, want 0", refused)
	}
	if stats.SignIns != seats {
		t.Errorf("emulator sign-ins = %d, want %d", stats.SignIns, seats)
	}
}
