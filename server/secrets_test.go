package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/acubroker/acubroker/broker"
	"github.com/acubroker/acubroker/emulator"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/brokertest"
	"github.com/acubroker/acubroker/sealing"
)

// testEncryptionKey is the AES-256 key of the tests' keyring.
var testEncryptionKey = []byte("test-encryption-key-32-bytes-Kx9")

func testKeyring(t *testing.T) *sealing.Keyring {
	t.Helper()
	k, err := sealing.NewKeyring([]sealing.Key{{ID: "k1", Secret: testEncryptionKey}}, "k1")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// cycleResult is what runSessionCycle saw.
type cycleResult struct {
	// accessTokens are the tokens that the responses carried.
	accessTokens []string
	// statusMessages are the messages and details of every error status.
	statusMessages []string
}

// runSessionCycle drives one session through every step that writes or
// reads credentials: a sign-in, a renew whose refresh fails, a renew that
// refreshes, a release to the pool, a warm acquire, a sign-out whose first
// attempt fails, and calls that end in errors. The caller billing holds the
// session, and reports fails to take it over.
func runSessionCycle(t *testing.T, env *secureEnv) cycleResult {
	t.Helper()
	var result cycleResult
	billing := sessionClient(env.dial(t, clientOptions{apiKey: billingKey}))
	reports := sessionClient(env.dial(t, clientOptions{apiKey: reportsKey}))
	stranger := sessionClient(env.dial(t, clientOptions{apiKey: "wrong-key-" + billingKey}))
	emu := env.emu.Emulator
	ctx := context.Background()
	expectError := func(step string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s succeeded, want an error", step)
		}
		st := status.Convert(err)
		result.statusMessages = append(result.statusMessages, err.Error(), prototext.Format(st.Proto()))
	}

	first, err := billing.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{
		Connection: brokertest.ConnectionName,
		LeaseTtl:   durationpb.New(2 * time.Hour),
	})
	if err != nil {
		t.Fatalf("AcquireSession: %v", err)
	}
	result.accessTokens = append(result.accessTokens, first.GetCredentials().GetAccessToken())
	leaseID := first.GetLease().GetLeaseId()

	// Within RefreshBefore of the token's expiry a renew refreshes it. The
	// first refresh fails at Acumatica and the current token is handed out.
	emu.Advance(56 * time.Minute)
	emu.InjectFault(emulator.Fault{Endpoint: "token", Status: 503, Body: `{"error":"temporarily_unavailable"}`, Count: 1})
	kept, err := billing.RenewLease(ctx, &acubrokerv1.RenewLeaseRequest{LeaseId: leaseID, LeaseTtl: durationpb.New(2 * time.Hour)})
	if err != nil {
		t.Fatalf("RenewLease with a failing refresh: %v", err)
	}
	if kept.GetCredentialsRefreshed() {
		t.Error("RenewLease reports a refresh although Acumatica failed it")
	}
	refreshed, err := billing.RenewLease(ctx, &acubrokerv1.RenewLeaseRequest{LeaseId: leaseID, LeaseTtl: durationpb.New(2 * time.Hour)})
	if err != nil {
		t.Fatalf("RenewLease: %v", err)
	}
	if !refreshed.GetCredentialsRefreshed() {
		t.Fatal("RenewLease near the token's expiry did not refresh it")
	}
	result.accessTokens = append(result.accessTokens, refreshed.GetCredentials().GetAccessToken())

	_, err = reports.ReleaseSession(ctx, &acubrokerv1.ReleaseSessionRequest{LeaseId: leaseID})
	expectError("ReleaseSession by another caller", err)
	_, err = stranger.RenewLease(ctx, &acubrokerv1.RenewLeaseRequest{LeaseId: leaseID})
	expectError("RenewLease with a wrong API key", err)

	if _, err := billing.ReleaseSession(ctx, &acubrokerv1.ReleaseSessionRequest{LeaseId: leaseID}); err != nil {
		t.Fatalf("ReleaseSession: %v", err)
	}
	warm, err := billing.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	if err != nil {
		t.Fatalf("second AcquireSession: %v", err)
	}
	if warm.GetLease().GetSessionId() != first.GetLease().GetSessionId() {
		t.Errorf("second acquire got session %s, want the warm session %s", warm.GetLease().GetSessionId(), first.GetLease().GetSessionId())
	}
	result.accessTokens = append(result.accessTokens, warm.GetCredentials().GetAccessToken())

	emu.InjectFault(emulator.Fault{Endpoint: "logout", Status: 500, Body: "logout failed", Count: 1})
	signOut, err := billing.SignOut(ctx, &acubrokerv1.SignOutRequest{LeaseId: warm.GetLease().GetLeaseId()})
	if err != nil {
		t.Fatalf("SignOut: %v", err)
	}
	if signOut.GetConfirmed() {
		t.Error("SignOut is confirmed although Acumatica failed the first attempt")
	}
	_, err = billing.RenewLease(ctx, &acubrokerv1.RenewLeaseRequest{LeaseId: warm.GetLease().GetLeaseId()})
	expectError("RenewLease after SignOut", err)

	// A second session stays leased, so the tables hold sealed credentials
	// when a test reads them.
	held, err := billing.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
	if err != nil {
		t.Fatalf("third AcquireSession: %v", err)
	}
	result.accessTokens = append(result.accessTokens, held.GetCredentials().GetAccessToken())
	return result
}

// secretValues returns every secret of the environment: the tokens that
// Acumatica issued, the demo password and client secret, the API keys and
// the encryption key.
func secretValues(env *secureEnv, result cycleResult) map[string]string {
	secrets := map[string]string{
		"demo password":      emulator.DemoPassword,
		"demo client secret": emulator.DemoClientSecret,
		"billing API key":    billingKey,
		"reports API key":    reportsKey,
		"encryption key":     string(testEncryptionKey),
		"encryption key b64": base64.StdEncoding.EncodeToString(testEncryptionKey),
	}
	for i, tok := range env.erp.Tokens() {
		secrets[fmt.Sprintf("issued token %d", i)] = tok
	}
	for i, tok := range result.accessTokens {
		secrets[fmt.Sprintf("access token %d of a response", i)] = tok
	}
	return secrets
}

// findSecret returns the name of a secret that text contains in clear,
// hex-encoded (as Postgres prints bytea) or base64-encoded, or "".
func findSecret(text string, secrets map[string]string) string {
	lower := strings.ToLower(text)
	for name, secret := range secrets {
		if strings.Contains(text, secret) ||
			strings.Contains(lower, hex.EncodeToString([]byte(secret))) ||
			strings.Contains(text, base64.StdEncoding.EncodeToString([]byte(secret))) ||
			strings.Contains(text, base64.RawURLEncoding.EncodeToString([]byte(secret))) {
			return name
		}
	}
	return ""
}

// dumpTables returns every row of the broker's tables, every column as
// text.
func dumpTables(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var dump strings.Builder
	for _, table := range []string{"connections", "seats", "leases", "waiters"} {
		rows, _ := pool.Query(context.Background(), "SELECT t::text FROM "+table+" t")
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		fmt.Fprintf(&dump, "%s:\n%s\n", table, strings.Join(lines, "\n"))
	}
	return dump.String()
}

func TestSecretsNotStoredInClear(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		sealer    func(t *testing.T) broker.Sealer
		wantKeyID string
	}{
		{"Keyring", func(t *testing.T) broker.Sealer { return testKeyring(t) }, "k1"},
		// Without encryption the same dump must find the tokens, which shows
		// that the check can fail.
		{"PlainSealer", func(*testing.T) broker.Sealer { return broker.PlainSealer{} }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := startSecure(t, secureOptions{callers: testCallers(), sealer: tt.sealer(t)})
			result := runSessionCycle(t, env)
			dump := dumpTables(t, env.pool)
			if !strings.Contains(dump, "billing") {
				t.Fatalf("the dump lacks the lease holder billing, so it did not read the tables:\n%s", dump)
			}
			secrets := secretValues(env, result)
			found := findSecret(dump, secrets)
			switch {
			case tt.wantKeyID != "" && found != "":
				t.Errorf("the tables contain the %s:\n%s", found, dump)
			case tt.wantKeyID == "" && found == "":
				t.Errorf("the tables hold credentials without encryption, but no token was found in them:\n%s", dump)
			}
			for name, secret := range map[string]string{
				"demo password": emulator.DemoPassword, "demo client secret": emulator.DemoClientSecret,
			} {
				if findSecret(dump, map[string]string{name: secret}) != "" {
					t.Errorf("the tables contain the %s", name)
				}
			}

			var sealed int
			err := env.pool.QueryRow(context.Background(),
				"SELECT count(*) FROM seats WHERE credentials IS NOT NULL AND credentials_key_id = $1", tt.wantKeyID).Scan(&sealed)
			if err != nil {
				t.Fatal(err)
			}
			if sealed == 0 {
				t.Errorf("no seat holds credentials under key id %q", tt.wantKeyID)
			}
		})
	}
}

func TestSecretsNotLogged(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	env := startSecure(t, secureOptions{callers: testCallers(), sealer: testKeyring(t), logs: logs})
	result := runSessionCycle(t, env)
	// Let the background retry of the failed sign-out run and log.
	env.emu.Emulator.Advance(5 * time.Second)
	waitForLog(t, logs, `msg="signed out"`)

	text := logs.String()
	for _, want := range []string{"finished call", "caller=billing", "component=broker", "signed in", "refreshed access token", "sign-out failed"} {
		if !strings.Contains(text, want) {
			t.Errorf("the logs lack %q, so they did not capture the whole cycle", want)
		}
	}
	secrets := secretValues(env, result)
	if found := findSecret(text, secrets); found != "" {
		t.Errorf("the logs contain the %s:\n%s", found, text)
	}
	if len(result.statusMessages) < 3 {
		t.Fatalf("the cycle saw %d error statuses, want at least 3", len(result.statusMessages))
	}
	for _, msg := range result.statusMessages {
		if found := findSecret(msg, secrets); found != "" {
			t.Errorf("status %q contains the %s", msg, found)
		}
	}

	// AdminService shows sessions to operators, never their tokens.
	admin := acubrokerv1.NewAdminServiceClient(env.dial(t, clientOptions{apiKey: opsKey}))
	sessions, err := admin.ListSessions(context.Background(), &acubrokerv1.ListSessionsRequest{})
	if err != nil {
		t.Fatalf("ListSessions as admin: %v", err)
	}
	listed := prototext.Format(sessions)
	if !strings.Contains(listed, "billing") {
		t.Errorf("ListSessions lacks the held session of billing:\n%s", listed)
	}
	if found := findSecret(listed, secrets); found != "" {
		t.Errorf("ListSessions contains the %s:\n%s", found, listed)
	}
}

// waitForLog waits up to ten seconds for logs to contain want.
func waitForLog(t *testing.T, logs *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !bytes.Contains([]byte(logs.String()), []byte(want)) {
		if time.Now().After(deadline) {
			t.Fatalf("the logs lack %q after 10s", want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
