package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/acubroker/acubroker/acumatica"
	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/emulator"
	"github.com/acubroker/acubroker/internal/pgcluster"
)

// demoConnection is the name of the demo's one connection.
const demoConnection = "demo"

func demoCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		logs         logFlags
		listen       = fs.String("listen", envOr("BROKER_LISTEN", "127.0.0.1:50051"), "gRPC listen address (env BROKER_LISTEN)")
		emulatorAddr = fs.String("emulator-listen", "127.0.0.1:8081", "listen address of the Acumatica emulator")
		seats        = fs.Int("seats", 2, "the emulated licence's API user limit, and the demo connection's max_sessions")
		dataDir      = fs.String("data-dir", "", "PostgreSQL cluster directory, kept across runs; empty: a temporary one, removed at exit")
	)
	logs.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, err := logs.logger(stderr)
	if err != nil {
		return err
	}

	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Dir: *dataDir, Logger: logger.With("component", "postgres")})
	if err != nil {
		return fmt.Errorf("start PostgreSQL: %w", err)
	}
	defer func() {
		if err := cluster.Remove(); err != nil {
			logger.Warn("stopping PostgreSQL failed", "err", err)
		}
	}()

	emuCfg := emulator.DefaultConfig()
	emuCfg.Seats = *seats
	emuCfg.Logger = logger.With("component", "emulator")
	emu, err := emulator.Listen(*emulatorAddr, emuCfg)
	if err != nil {
		return fmt.Errorf("start the Acumatica emulator on %s: %w", *emulatorAddr, err)
	}
	defer emu.Close()

	client, err := acumatica.New(acumatica.Config{
		SiteURL:      emu.URL,
		ClientID:     emulator.DemoClientID,
		ClientSecret: emulator.DemoClientSecret,
		Username:     emulator.DemoUser,
		Password:     emulator.DemoPassword,
	})
	if err != nil {
		return err
	}
	pool, err := openPool(ctx, cluster.URL("postgres"), logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := migrate(ctx, pool, logger); err != nil {
		return err
	}

	conn := broker.Connection{
		Name:          demoConnection,
		MaxSessions:   *seats,
		MaxWait:       30 * time.Second,
		OfflineAccess: true,
		ERP:           client,
	}
	return serveBroker(ctx, serveOptions{
		listen:          *listen,
		pool:            pool,
		connections:     []broker.Connection{conn},
		logger:          logger,
		shutdownTimeout: 5 * time.Second,
		ready:           func(addr string) { printDemoHelp(stdout, addr, emu.URL, *seats) },
	})
}

func printDemoHelp(w io.Writer, addr, emulatorURL string, seats int) {
	fmt.Fprintf(w, `
acubroker demo is running. Press Ctrl-C to stop everything it started.

  broker:             %[1]s  (connection %[2]q, %[3]d seats)
  Acumatica emulator: %[4]s  (licence of %[3]d API users)

Try it with grpcurl (make tools installs it as .bin/grpcurl):

  grpcurl -plaintext %[1]s list
  grpcurl -plaintext -d '{"connection":"%[2]s"}' %[1]s acubroker.v1.SessionService/AcquireSession
  grpcurl -plaintext -d '{"lease_id":"LEASE_ID"}' %[1]s acubroker.v1.SessionService/ReleaseSession
  grpcurl -plaintext -d '{"connection":"%[2]s"}' %[1]s acubroker.v1.SessionService/AcquireSession
  grpcurl -plaintext -d '{"lease_id":"LEASE_ID"}' %[1]s acubroker.v1.SessionService/SignOut

Replace LEASE_ID with the leaseId of the acquire's response. Use the token:

  curl -H "Authorization: Bearer ACCESS_TOKEN" %[4]s/entity/Default/24.200.001/Customer

See the emulator's seats: curl %[4]s/_emulator/stats

`, addr, demoConnection, seats, emulatorURL)
}
