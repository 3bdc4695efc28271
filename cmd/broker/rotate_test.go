package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/emulator"
	"github.com/acubroker/acubroker/internal/brokertest"
	"github.com/acubroker/acubroker/internal/testdb"
	"github.com/acubroker/acubroker/sealing"
	"github.com/acubroker/acubroker/store"
)

// storeSealedSession signs in one session through a broker that seals
// with key k1 (all bytes 1) and leaves it idle in the database at url.
func storeSealedSession(t *testing.T, url string) {
	t.Helper()
	emu, err := emulator.Start(emulator.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	pool := brokertest.NewPool(t, url)
	if err := store.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	keyring, err := sealing.NewKeyring([]sealing.Key{{ID: "k1", Secret: bytes.Repeat([]byte{1}, 32)}}, "k1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Config{
		Store: store.New(pool),
		Connections: []broker.Connection{{
			Name: "demo", MaxSessions: 1, OfflineAccess: true,
			ERP: brokertest.NewERP(t, emu.URL, nil, emu.Emulator.Now),
		}},
		Clock:               emu.Emulator,
		Sealer:              keyring,
		MaintenanceInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	grant, err := b.Acquire(ctx, broker.AcquireParams{Connection: "demo"})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if _, err := b.Release(ctx, broker.ReleaseParams{LeaseID: grant.Lease.ID}); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

func TestRotateKeysCommand(t *testing.T) {
	t.Parallel()
	url := testdb.New(t)
	storeSealedSession(t, url)

	rotating := writeSecurityConfig(t, "encryption:\n  keys: [{id: k1, file: k1.key}, {id: k2, file: k2.key}]\n  active: k2\n")
	writeKey(t, rotating, "k1.key", 1)
	writeKey(t, rotating, "k2.key", 2)

	var stdout, stderr bytes.Buffer
	if code := run([]string{"rotate-keys", "-config", rotating, "-database-url", url}, &stdout, &stderr); code != 0 {
		t.Fatalf("rotate-keys exit code = %d, want 0; stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{"re-encrypted under key k2: 1\n", "already under key k2: 0\n", "failed: 0\n", "left under other keys: none\n"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}

	stdout.Reset()
	if code := run([]string{"rotate-keys", "-config", rotating, "-database-url", url}, &stdout, &stderr); code != 0 {
		t.Fatalf("second rotate-keys exit code = %d, want 0; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "already under key k2: 1\n") {
		t.Errorf("second run's stdout lacks the value already under k2:\n%s", stdout.String())
	}

	// A config that lacks the key of the stored value fails, and reports it.
	lost := writeSecurityConfig(t, "encryption:\n  keys: [{id: k3, file: k3.key}]\n  active: k3\n")
	writeKey(t, lost, "k3.key", 3)
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"rotate-keys", "-config", lost, "-database-url", url}, &stdout, &stderr); code != 1 {
		t.Errorf("rotate-keys without the stored value's key: exit code %d, want 1", code)
	}
	if !strings.Contains(stdout.String(), "failed: 1\n") || !strings.Contains(stdout.String(), "left under other keys: k2: 1\n") {
		t.Errorf("stdout does not report the failure:\n%s", stdout.String())
	}
	if !strings.Contains(stderr.String(), `key "k2", which is not configured`) {
		t.Errorf("stderr does not name the missing key:\n%s", stderr.String())
	}
}

func TestRotateKeysNeedsEncryption(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	code := run([]string{"rotate-keys", "-config", writeSecurityConfig(t, ""), "-database-url", "postgres://nobody@127.0.0.1:1/none"}, &stdout, &stderr)
	if code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "has no encryption section") {
		t.Errorf("stderr = %q, want it to name the missing encryption section", stderr.String())
	}
}
