package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// connSpec is one connection of a deployment. Its site is the deployment's
// emulator.
type connSpec struct {
	Name    string
	Seats   int
	MaxWait time.Duration
}

// deploySpec describes the brokers one scenario needs.
type deploySpec struct {
	// Name names the scenario's database and log files.
	Name     string
	Conns    []connSpec
	Replicas int
	// InProcess runs the replicas in process regardless of Config.Mode.
	InProcess bool
	// EmulatorClock makes the emulator's clock the clock of the in-process
	// brokers and of their Acumatica clients, so that advancing it ages
	// tokens and leases alike.
	EmulatorClock bool
	// Emulator is the emulator's configuration.
	Emulator emulator.Config
}

// deployment is a set of replicas on one database, with the emulator that
// plays their Acumatica site and a gRPC client per replica.
type deployment struct {
	// databaseURL is the brokers' database, without pool settings.
	databaseURL string
	connection  string // the first connection's name
	replicas    []*replica
	clients     []*grpc.ClientConn
	// emu is the emulator the deployment started; nil for given brokers.
	emu         *emulator.Server
	emulatorURL string
	// mode is the replicas' run mode, as the results report it.
	mode string
	// postmaster is the process id of the PostgreSQL server, or 0 when it
	// is not known.
	postmaster int
}

// replica is one running broker.
type replica struct {
	addr string
	// pid is the broker process's id, or 0 in process.
	pid  int
	stop func() error
}

// pids returns the process ids of the replicas that are processes.
func (d *deployment) pids() []int {
	var pids []int
	for _, r := range d.replicas {
		if r.pid != 0 {
			pids = append(pids, r.pid)
		}
	}
	return pids
}

// client returns a SessionService client of replica i, round robin.
func (d *deployment) client(i int) acubrokerv1.SessionServiceClient {
	return acubrokerv1.NewSessionServiceClient(d.clients[i%len(d.clients)])
}

// dial opens n more client connections to replica i, each with its own
// HTTP/2 connection, as n separate services would have.
func (d *deployment) dial(i, n int) ([]acubrokerv1.SessionServiceClient, func(), error) {
	clients := make([]acubrokerv1.SessionServiceClient, 0, n)
	var conns []*grpc.ClientConn
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}
	for range n {
		conn, err := grpc.NewClient(d.replicas[i%len(d.replicas)].addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("dial broker %s: %w", d.replicas[i%len(d.replicas)].addr, err)
		}
		conns = append(conns, conn)
		clients = append(clients, acubrokerv1.NewSessionServiceClient(conn))
	}
	return clients, closeAll, nil
}

// stats returns the emulator's counters: in process when the deployment
// started the emulator, else through its control API.
func (d *deployment) stats(ctx context.Context) (emulator.Stats, error) {
	if d.emu != nil {
		return d.emu.Emulator.Stats(), nil
	}
	var s emulator.Stats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.emulatorURL+"/_emulator/stats", nil)
	if err != nil {
		return s, fmt.Errorf("emulator stats: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, fmt.Errorf("emulator stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("emulator stats: GET /_emulator/stats returned %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, fmt.Errorf("emulator stats: decode the response: %w", err)
	}
	return s, nil
}

// resetPeak sets the emulator's peak of open sessions to the sessions
// open now.
func (d *deployment) resetPeak(ctx context.Context) error {
	if d.emu != nil {
		d.emu.Emulator.ResetPeak()
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.emulatorURL+"/_emulator/reset-peak", nil)
	if err != nil {
		return fmt.Errorf("reset the emulator's peak: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reset the emulator's peak: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reset the emulator's peak: POST /_emulator/reset-peak returned %s", resp.Status)
	}
	return nil
}

// close stops the replicas, then the emulator, and closes the clients.
func (d *deployment) close() error {
	var errs []error
	for _, c := range d.clients {
		errs = append(errs, c.Close())
	}
	var wg sync.WaitGroup
	stopErrs := make([]error, len(d.replicas))
	for i, r := range d.replicas {
		wg.Go(func() { stopErrs[i] = r.stop() })
	}
	wg.Wait()
	errs = append(errs, stopErrs...)
	if d.emu != nil {
		errs = append(errs, d.emu.Close())
	}
	return errors.Join(errs...)
}

// deploy starts an emulator, a migrated database and the replicas of spec.
func (r *runner) deploy(ctx context.Context, spec deploySpec) (*deployment, error) {
	emu, err := emulator.Start(spec.Emulator)
	if err != nil {
		return nil, fmt.Errorf("start the emulator: %w", err)
	}
	d := &deployment{emu: emu, emulatorURL: emu.URL, connection: spec.Conns[0].Name, mode: string(r.cfg.Mode),
		postmaster: r.postmaster}
	if spec.InProcess {
		d.mode = string(ModeInProcess)
	}
	fail := func(err error) (*deployment, error) { return nil, errors.Join(err, d.close()) }

	db, err := r.pg.createDatabase(ctx, spec.Name, true)
	if err != nil {
		return fail(err)
	}
	d.databaseURL = r.pg.url(db)
	brokerURL := r.pg.brokerURL(db, r.cfg.PoolMaxConns)
	for i := range spec.Replicas {
		var rep *replica
		if spec.InProcess || r.cfg.Mode == ModeInProcess {
			rep, err = r.startInProcess(ctx, spec, brokerURL, emu, i)
		} else {
			rep, err = r.startProcess(ctx, spec, brokerURL, emu.URL, i)
		}
		if err != nil {
			return fail(err)
		}
		d.replicas = append(d.replicas, rep)
		conn, err := grpc.NewClient(rep.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fail(fmt.Errorf("dial broker %s: %w", rep.addr, err))
		}
		d.clients = append(d.clients, conn)
	}
	return d, nil
}

// external wraps the brokers given in r.cfg.External.
func (r *runner) external() (*deployment, error) {
	e := r.cfg.External
	d := &deployment{databaseURL: e.DatabaseURL, connection: e.Connection, emulatorURL: e.EmulatorURL,
		mode: "external", postmaster: r.postmaster}
	for _, addr := range e.Addrs {
		d.replicas = append(d.replicas, &replica{addr: addr, stop: func() error { return nil }})
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, errors.Join(fmt.Errorf("dial broker %s: %w", addr, err), d.close())
		}
		d.clients = append(d.clients, conn)
	}
	return d, nil
}
