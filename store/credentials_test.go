package store_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/emulator"
	"github.com/acubroker/acubroker/internal/brokertest"
	"github.com/acubroker/acubroker/internal/testdb"
	"github.com/acubroker/acubroker/sealing"
	"github.com/acubroker/acubroker/store"
)

var (
	oldKey = sealing.Key{ID: "k1", Secret: bytes.Repeat([]byte{1}, sealing.KeySize)}
	newKey = sealing.Key{ID: "k2", Secret: bytes.Repeat([]byte{2}, sealing.KeySize)}
)

func keyring(t *testing.T, active string, keys ...sealing.Key) *sealing.Keyring {
	t.Helper()
	k, err := sealing.NewKeyring(keys, active)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rotationEnv is an emulator and a database that brokers with different
// keyrings share.
type rotationEnv struct {
	emu  *emulator.Server
	pool *pgxpool.Pool
}

func newRotationEnv(t *testing.T) *rotationEnv {
	t.Helper()
	cfg := emulator.DefaultConfig()
	cfg.Seats = 3
	cfg.IdleTimeout = 4 * time.Hour
	emu, err := emulator.Start(cfg)
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	return &rotationEnv{emu: emu, pool: brokertest.NewPool(t, testdb.New(t))}
}

// startBroker starts a broker that seals with sealer.
func (e *rotationEnv) startBroker(t *testing.T, sealer broker.Sealer) *broker.Broker {
	t.Helper()
	b, err := broker.New(broker.Config{
		Store: store.New(e.pool),
		Connections: []broker.Connection{{
			Name:          "erp",
			MaxSessions:   3,
			MaxWait:       5 * time.Second,
			MaxLeaseTTL:   3 * time.Hour,
			OfflineAccess: true,
			ERP:           brokertest.NewERP(t, e.emu.URL, nil, e.emu.Emulator.Now),
		}},
		Clock:               e.emu.Emulator,
		Sealer:              sealer,
		MaintenanceInterval: time.Hour,
	})
	if err != nil {
		t.Fatalf("new broker: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(b.Stop)
	return b
}

func acquire(t *testing.T, b *broker.Broker, ttl time.Duration) *broker.Grant {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	grant, err := b.Acquire(ctx, broker.AcquireParams{Connection: "erp", LeaseTTL: ttl, Holder: "billing"})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return grant
}

// keyCounts returns the stored credentials by key id.
func keyCounts(t *testing.T, s *store.Store) map[string]int {
	t.Helper()
	counts, err := s.CountCredentialsByKey(context.Background())
	if err != nil {
		t.Fatalf("CountCredentialsByKey: %v", err)
	}
	return counts
}

func TestResealCredentialsRotatesKeys(t *testing.T) {
	t.Parallel()
	env := newRotationEnv(t)
	s := store.New(env.pool)
	ctx := context.Background()

	// Under the old key: one session leased, one idle in the pool.
	before := env.startBroker(t, keyring(t, "k1", oldKey))
	held := acquire(t, before, 2*time.Hour)
	idle := acquire(t, before, time.Minute)
	if _, err := before.Release(ctx, broker.ReleaseParams{LeaseID: idle.Lease.ID, Holder: "billing"}); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if got, want := keyCounts(t, s), map[string]int{"k1": 2}; !maps.Equal(got, want) {
		t.Fatalf("stored credentials by key = %v, want %v", got, want)
	}

	rotating := keyring(t, "k2", oldKey, newKey)
	result, err := s.ResealCredentials(ctx, rotating, "k2")
	if err != nil {
		t.Fatalf("ResealCredentials: %v", err)
	}
	if result.Resealed != 2 || result.Current != 0 || result.Changed != 0 || result.Failed != 0 || len(result.Remaining) != 0 {
		t.Errorf("first run = %+v, want 2 resealed and nothing else", result)
	}
	if got, want := keyCounts(t, s), map[string]int{"k2": 2}; !maps.Equal(got, want) {
		t.Errorf("stored credentials by key after rotation = %v, want %v", got, want)
	}

	again, err := s.ResealCredentials(ctx, rotating, "k2")
	if err != nil {
		t.Fatalf("second ResealCredentials: %v", err)
	}
	if again.Resealed != 0 || again.Current != 2 {
		t.Errorf("second run = %+v, want 2 current and none resealed", again)
	}

	// A broker without the old key serves both sessions: it renews the held
	// lease, refreshing its token, and hands out the idle session warm.
	before.Stop()
	after := env.startBroker(t, keyring(t, "k2", newKey))
	env.emu.Emulator.Advance(56 * time.Minute)
	renewed, err := after.Renew(ctx, broker.RenewParams{LeaseID: held.Lease.ID, Holder: "billing", LeaseTTL: time.Hour})
	if err != nil {
		t.Fatalf("Renew of a rotated session without the old key: %v", err)
	}
	if !renewed.Refreshed {
		t.Error("Renew near the token's expiry did not refresh it")
	}
	warm := acquire(t, after, time.Minute)
	if warm.Lease.SessionID != idle.Lease.SessionID {
		t.Errorf("acquire after rotation got session %s, want the idle session %s", warm.Lease.SessionID, idle.Lease.SessionID)
	}
	if warm.Credentials.AccessToken == "" {
		t.Error("acquire after rotation returned no access token")
	}
	if n := env.emu.Emulator.Stats().SignIns; n != 2 {
		t.Errorf("emulator sign-ins = %d, want the 2 from before the rotation", n)
	}
}

func TestResealCredentialsWithoutOldKeyFails(t *testing.T) {
	t.Parallel()
	env := newRotationEnv(t)
	s := store.New(env.pool)
	b := env.startBroker(t, keyring(t, "k1", oldKey))
	held := acquire(t, b, time.Hour)

	result, err := s.ResealCredentials(context.Background(), keyring(t, "k2", newKey), "k2")
	if err == nil {
		t.Fatal("ResealCredentials without the old key succeeded")
	}
	if !strings.Contains(err.Error(), `key "k1", which is not configured`) || !strings.Contains(err.Error(), "seat erp/") {
		t.Errorf("error %q does not name the seat and the missing key", err)
	}
	if result.Failed != 1 || result.Resealed != 0 {
		t.Errorf("result = %+v, want 1 failed", result)
	}
	if got, want := result.Remaining, map[string]int{"k1": 1}; !maps.Equal(got, want) {
		t.Errorf("Remaining = %v, want %v", got, want)
	}

	// A broker that lacks the key cannot serve the session either.
	newOnly := env.startBroker(t, keyring(t, "k2", newKey))
	if _, err := newOnly.Renew(context.Background(), broker.RenewParams{LeaseID: held.Lease.ID, Holder: "billing"}); err == nil {
		t.Error("Renew by a broker without the session's key succeeded")
	}
}

func TestResealCredentialsEncryptsPlaintext(t *testing.T) {
	t.Parallel()
	env := newRotationEnv(t)
	s := store.New(env.pool)
	plain := env.startBroker(t, broker.PlainSealer{})
	held := acquire(t, plain, time.Hour)
	if got, want := keyCounts(t, s), map[string]int{"": 1}; !maps.Equal(got, want) {
		t.Fatalf("stored credentials by key = %v, want %v", got, want)
	}

	result, err := s.ResealCredentials(context.Background(), keyring(t, "k1", oldKey), "k1")
	if err != nil {
		t.Fatalf("ResealCredentials: %v", err)
	}
	if result.Resealed != 1 {
		t.Errorf("result = %+v, want 1 resealed", result)
	}
	list, err := s.ListCredentials(context.Background(), "", -1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].KeyID != "k1" || bytes.Contains(list[0].Credentials, []byte(held.Credentials.AccessToken)) {
		t.Errorf("stored credentials after sealing = %+v, want one value under k1 without the access token in clear", list)
	}
}

func TestReplaceCredentialsSkipsChangedSeat(t *testing.T) {
	t.Parallel()
	env := newRotationEnv(t)
	s := store.New(env.pool)
	ring := keyring(t, "k1", oldKey)
	b := env.startBroker(t, ring)
	acquire(t, b, time.Hour)
	ctx := context.Background()

	list, err := s.ListCredentials(ctx, "", -1, 10)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListCredentials = %d values, %v; want 1", len(list), err)
	}
	read := list[0]
	// The broker rewrites the value between the read and the replacement.
	ok, err := s.ReplaceCredentials(ctx, read, []byte("rewritten by a broker"), "k1")
	if err != nil || !ok {
		t.Fatalf("first ReplaceCredentials = %v, %v; want true", ok, err)
	}
	ok, err = s.ReplaceCredentials(ctx, read, []byte("stale"), "k2")
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Error("ReplaceCredentials overwrote a value that changed after it was read")
	}
	list, err = s.ListCredentials(ctx, "", -1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if string(list[0].Credentials) != "rewritten by a broker" || list[0].KeyID != "k1" {
		t.Errorf("stored value = %q under %q, want the newer write under k1", list[0].Credentials, list[0].KeyID)
	}
}

func TestListCredentialsPages(t *testing.T) {
	t.Parallel()
	env := newRotationEnv(t)
	s := store.New(env.pool)
	b := env.startBroker(t, keyring(t, "k1", oldKey))
	for range 3 {
		acquire(t, b, time.Hour)
	}
	ctx := context.Background()
	first, err := s.ListCredentials(ctx, "", -1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 2 {
		t.Fatalf("first page has %d values, want 2", len(first))
	}
	last := first[len(first)-1]
	second, err := s.ListCredentials(ctx, last.Connection, last.Slot, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(second) != 1 {
		t.Fatalf("second page has %d values, want 1", len(second))
	}
	slots := []int{first[0].Slot, first[1].Slot, second[0].Slot}
	if slots[0] >= slots[1] || slots[1] >= slots[2] {
		t.Errorf("slots across pages = %v, want them increasing", slots)
	}
}

func TestAcquireRetiresSessionWithUnreadableCredentials(t *testing.T) {
	t.Parallel()
	env := newRotationEnv(t)
	ctx := context.Background()
	old := env.startBroker(t, keyring(t, "k1", oldKey))
	idle := acquire(t, old, time.Hour)
	if _, err := old.Release(ctx, broker.ReleaseParams{LeaseID: idle.Lease.ID, Holder: "billing"}); err != nil {
		t.Fatalf("Release: %v", err)
	}

	// A broker without k1 takes the warm session sealed under it.
	newOnly := env.startBroker(t, keyring(t, "k2", newKey))
	_, err := newOnly.Acquire(ctx, broker.AcquireParams{Connection: "erp", Holder: "billing"})
	if !errors.Is(err, broker.ErrERPUnavailable) {
		t.Fatalf("Acquire of a session sealed under a missing key = %v, want ERP_UNAVAILABLE", err)
	}
	if !strings.Contains(err.Error(), `"k1"`) {
		t.Errorf("error %q does not name the missing key", err)
	}
	states := map[string]int{}
	rows, _ := env.pool.Query(ctx, "SELECT state FROM seats")
	for rows.Next() {
		var state string
		if err := rows.Scan(&state); err != nil {
			t.Fatal(err)
		}
		states[state]++
	}
	if states["leased"] != 0 {
		t.Errorf("seats after the failed acquire = %v, want none leased to the lease nobody received", states)
	}
	if states["signing_out"] != 1 {
		t.Errorf("seats after the failed acquire = %v, want the unreadable session retired and still counted", states)
	}

	// The next acquire signs in a new session on a free seat.
	next := acquire(t, newOnly, time.Hour)
	if next.Lease.SessionID == idle.Lease.SessionID {
		t.Error("the next acquire got the retired session")
	}
}
