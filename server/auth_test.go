package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
	"github.com/acubroker/acubroker/internal/brokertest"
	"github.com/acubroker/acubroker/server"
)

// API keys of the test callers.
const (
	billingKey = "billing-api-key-Hs8c"
	reportsKey = "reports-api-key-Mw3d"
	opsKey     = "ops-api-key-Ty6e"
	batchKey   = "batch-api-key-Jq2f"
)

const billingIdentity = "spiffe://corp/billing"

// testCallers are billing (client, API key and certificate), reports
// (client), ops (admin) and batch (client with a quota of one lease).
func testCallers() []server.Caller {
	return []server.Caller{
		{
			Name:                "billing",
			APIKeySHA256:        [][sha256.Size]byte{keyDigest(billingKey)},
			CertificateIdentity: billingIdentity,
			Roles:               []server.Role{server.RoleClient},
		},
		{Name: "reports", APIKeySHA256: [][sha256.Size]byte{keyDigest(reportsKey)}, Roles: []server.Role{server.RoleClient}},
		{Name: "ops", APIKeySHA256: [][sha256.Size]byte{keyDigest(opsKey)}, Roles: []server.Role{server.RoleAdmin}},
		{
			Name:         "batch",
			APIKeySHA256: [][sha256.Size]byte{keyDigest(batchKey)},
			Roles:        []server.Role{server.RoleClient},
			Quotas:       map[string]int{brokertest.ConnectionName: 1},
		},
	}
}

func sessionClient(conn *grpc.ClientConn) acubrokerv1.SessionServiceClient {
	return acubrokerv1.NewSessionServiceClient(conn)
}

func callAcquire(client acubrokerv1.SessionServiceClient) (*acubrokerv1.AcquireSessionResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
}

// assertStatus fails unless err has code and an ErrorInfo with reason.
func assertStatus(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded, want %s with reason %s", code, reason)
	}
	if got := status.Code(err); got != code {
		t.Errorf("code = %s, want %s (error: %v)", got, code, err)
	}
	if got := errorReason(err); got != reason {
		t.Errorf("reason = %q, want %q (error: %v)", got, reason, err)
	}
}

func TestAuthRejectsBadCredentials(t *testing.T) {
	t.Parallel()
	env := startSecure(t, secureOptions{callers: testCallers()})

	expired := clientTemplate(t, billingIdentity)
	expired.NotBefore = time.Now().Add(-48 * time.Hour)
	expired.NotAfter = time.Now().Add(-24 * time.Hour)
	notYetValid := clientTemplate(t, billingIdentity)
	notYetValid.NotBefore = time.Now().Add(time.Hour)
	notYetValid.NotAfter = time.Now().Add(2 * time.Hour)
	serverUsage := clientTemplate(t, billingIdentity)
	serverUsage.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	otherCA := newTestCA(t, "untrusted CA")
	validBilling := env.ca.issue(t, clientTemplate(t, billingIdentity))

	tests := []struct {
		name       string
		opts       clientOptions
		header     string // raw authorization metadata, sent in place of an API key
		wantReason string
	}{
		{"NoCredentials", clientOptions{}, "", server.ReasonUnauthenticated},
		{"WrongAPIKey", clientOptions{apiKey: "not-a-configured-key"}, "", server.ReasonAPIKeyInvalid},
		{"APIKeyOfOtherCase", clientOptions{apiKey: strings.ToUpper(billingKey)}, "", server.ReasonAPIKeyInvalid},
		{"BasicScheme", clientOptions{}, "Basic " + billingKey, server.ReasonAPIKeyInvalid},
		{"EmptyBearer", clientOptions{}, "Bearer ", server.ReasonAPIKeyInvalid},
		{"ExpiredCertificate", clientOptions{cert: env.ca.issue(t, expired)}, "", server.ReasonCertificateInvalid},
		{"NotYetValidCertificate", clientOptions{cert: env.ca.issue(t, notYetValid)}, "", server.ReasonCertificateInvalid},
		{"UntrustedCertificate", clientOptions{cert: otherCA.issue(t, clientTemplate(t, billingIdentity))}, "", server.ReasonCertificateInvalid},
		{"ServerCertificate", clientOptions{cert: env.ca.issue(t, serverUsage)}, "", server.ReasonCertificateInvalid},
		{"UnknownIdentity", clientOptions{cert: env.ca.issue(t, clientTemplate(t, "spiffe://corp/unknown"))}, "", server.ReasonCallerUnknown},
		{"ValidKeyExpiredCertificate", clientOptions{apiKey: billingKey, cert: env.ca.issue(t, expired)}, "", server.ReasonCertificateInvalid},
		{"KeyAndCertificateDisagree", clientOptions{apiKey: reportsKey, cert: validBilling}, "", server.ReasonCredentialsMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := sessionClient(env.dial(t, tt.opts))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tt.header != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tt.header)
			}
			_, err := client.AcquireSession(ctx, &acubrokerv1.AcquireSessionRequest{Connection: brokertest.ConnectionName})
			assertStatus(t, err, codes.Unauthenticated, tt.wantReason)
			if strings.Contains(status.Convert(err).Message(), billingKey) {
				t.Errorf("message %q contains the API key", status.Convert(err).Message())
			}
		})
	}
	if stats := env.emu.Emulator.Stats(); stats.SignIns != 0 {
		t.Errorf("emulator sign-ins = %d after rejected calls, want 0", stats.SignIns)
	}
}

func TestAuthAcceptsEachCredential(t *testing.T) {
	t.Parallel()
	env := startSecure(t, secureOptions{callers: testCallers()})
	cert := env.ca.issue(t, clientTemplate(t, billingIdentity))

	tests := []struct {
		name       string
		opts       clientOptions
		wantHolder string
	}{
		{"APIKey", clientOptions{apiKey: billingKey}, "billing"},
		{"Certificate", clientOptions{cert: cert}, "billing"},
		{"KeyAndCertificate", clientOptions{apiKey: billingKey, cert: cert}, "billing"},
		{"OtherCallerKey", clientOptions{apiKey: reportsKey}, "reports"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := sessionClient(env.dial(t, tt.opts))
			resp, err := callAcquire(client)
			if err != nil {
				t.Fatalf("AcquireSession: %v", err)
			}
			leaseID := resp.GetLease().GetLeaseId()
			var holder string
			if err := env.pool.QueryRow(context.Background(), "SELECT holder FROM leases WHERE lease_id = $1", leaseID).Scan(&holder); err != nil {
				t.Fatalf("read lease %s: %v", leaseID, err)
			}
			if holder != tt.wantHolder {
				t.Errorf("lease holder = %q, want %q", holder, tt.wantHolder)
			}
			if _, err := client.ReleaseSession(context.Background(), &acubrokerv1.ReleaseSessionRequest{LeaseId: leaseID}); err != nil {
				t.Errorf("ReleaseSession by its holder: %v", err)
			}
		})
	}
}

func TestAuthRoles(t *testing.T) {
	t.Parallel()
	env := startSecure(t, secureOptions{callers: testCallers()})
	clientConn := env.dial(t, clientOptions{apiKey: billingKey})
	adminConn := env.dial(t, clientOptions{apiKey: opsKey})
	ctx := context.Background()

	_, err := acubrokerv1.NewAdminServiceClient(clientConn).ListConnections(ctx, &acubrokerv1.ListConnectionsRequest{})
	assertStatus(t, err, codes.PermissionDenied, server.ReasonRoleRequired)

	_, err = acubrokerv1.NewAdminServiceClient(clientConn).ForceSignOut(ctx, &acubrokerv1.ForceSignOutRequest{})
	assertStatus(t, err, codes.PermissionDenied, server.ReasonRoleRequired)

	_, err = callAcquire(sessionClient(adminConn))
	assertStatus(t, err, codes.PermissionDenied, server.ReasonRoleRequired)

	resp, err := acubrokerv1.NewAdminServiceClient(adminConn).ListConnections(ctx, &acubrokerv1.ListConnectionsRequest{})
	if err != nil {
		t.Fatalf("ListConnections as admin: %v", err)
	}
	if n := len(resp.GetConnections()); n != 1 {
		t.Errorf("ListConnections returned %d connections, want 1", n)
	}
}

func TestAuthLeaseOwnership(t *testing.T) {
	t.Parallel()
	env := startSecure(t, secureOptions{callers: testCallers()})
	billing := sessionClient(env.dial(t, clientOptions{cert: env.ca.issue(t, clientTemplate(t, billingIdentity))}))
	reports := sessionClient(env.dial(t, clientOptions{apiKey: reportsKey}))
	ctx := context.Background()

	resp, err := callAcquire(billing)
	if err != nil {
		t.Fatalf("AcquireSession as billing: %v", err)
	}
	leaseID := resp.GetLease().GetLeaseId()

	_, err = reports.RenewLease(ctx, &acubrokerv1.RenewLeaseRequest{LeaseId: leaseID})
	assertStatus(t, err, codes.PermissionDenied, "LEASE_NOT_OWNED")
	_, err = reports.ReleaseSession(ctx, &acubrokerv1.ReleaseSessionRequest{LeaseId: leaseID})
	assertStatus(t, err, codes.PermissionDenied, "LEASE_NOT_OWNED")
	_, err = reports.SignOut(ctx, &acubrokerv1.SignOutRequest{LeaseId: leaseID})
	assertStatus(t, err, codes.PermissionDenied, "LEASE_NOT_OWNED")

	if _, err := billing.RenewLease(ctx, &acubrokerv1.RenewLeaseRequest{LeaseId: leaseID, LeaseTtl: durationpb.New(time.Minute)}); err != nil {
		t.Errorf("RenewLease by the holder after the others' attempts: %v", err)
	}
	if _, err := billing.ReleaseSession(ctx, &acubrokerv1.ReleaseSessionRequest{LeaseId: leaseID}); err != nil {
		t.Errorf("ReleaseSession by the holder: %v", err)
	}
}

func TestAuthCallerQuota(t *testing.T) {
	t.Parallel()
	env := startSecure(t, secureOptions{callers: testCallers()})
	batch := sessionClient(env.dial(t, clientOptions{apiKey: batchKey}))

	first, err := callAcquire(batch)
	if err != nil {
		t.Fatalf("first AcquireSession within the quota: %v", err)
	}
	_, err = callAcquire(batch)
	assertStatus(t, err, codes.ResourceExhausted, "CALLER_QUOTA")

	// The quota is batch's alone: another caller still gets a seat.
	if _, err := callAcquire(sessionClient(env.dial(t, clientOptions{apiKey: billingKey}))); err != nil {
		t.Errorf("AcquireSession by billing while batch is at its quota: %v", err)
	}
	if _, err := batch.ReleaseSession(context.Background(), &acubrokerv1.ReleaseSessionRequest{LeaseId: first.GetLease().GetLeaseId()}); err != nil {
		t.Fatalf("ReleaseSession: %v", err)
	}
	if _, err := callAcquire(batch); err != nil {
		t.Errorf("AcquireSession after releasing the lease that filled the quota: %v", err)
	}
}

func TestAuthHealthWithoutCredentials(t *testing.T) {
	t.Parallel()
	env := startSecure(t, secureOptions{callers: testCallers()})
	resp, err := healthpb.NewHealthClient(env.dial(t, clientOptions{})).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health Check without credentials: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health status = %s, want SERVING", resp.GetStatus())
	}
}

func TestAuthReflectionNeedsCredentials(t *testing.T) {
	t.Parallel()
	env := startSecure(t, secureOptions{callers: testCallers()})

	_, err := listServices(t, env.dial(t, clientOptions{}))
	assertStatus(t, err, codes.Unauthenticated, server.ReasonUnauthenticated)

	services, err := listServices(t, env.dial(t, clientOptions{apiKey: reportsKey}))
	if err != nil {
		t.Fatalf("reflection ListServices with an API key: %v", err)
	}
	for _, want := range []string{"acubroker.v1.SessionService", "acubroker.v1.AdminService"} {
		if !slices.Contains(services, want) {
			t.Errorf("reflection lists %q, want it to include %s", services, want)
		}
	}
}

// listServices requests from the reflection service for the service names.
func listServices(t *testing.T, conn *grpc.ClientConn) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	err = stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"},
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	// A Send that the server ended the stream before (as the authenticator
	// does) returns io.EOF; Recv returns the stream's status.
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}

func TestCertificateIdentity(t *testing.T) {
	t.Parallel()
	withURI := clientTemplate(t, "spiffe://corp/billing")
	withURI.DNSNames = []string{"billing.corp"}
	dnsOnly := clientTemplate(t, "spiffe://unused")
	dnsOnly.URIs = nil
	dnsOnly.DNSNames = []string{"billing.corp", "second.corp"}
	cnOnly := &x509.Certificate{Subject: pkix.Name{CommonName: "billing-cn"}}

	tests := []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"URIFirst", withURI, "spiffe://corp/billing"},
		{"DNSWithoutURI", dnsOnly, "billing.corp"},
		{"CommonNameLast", cnOnly, "billing-cn"},
	}
	for _, tt := range tests {
		if got := server.CertificateIdentity(tt.cert); got != tt.want {
			t.Errorf("%s: CertificateIdentity = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestCallerQuotas(t *testing.T) {
	t.Parallel()
	quota := server.CallerQuotas(testCallers())
	tests := []struct {
		holder, connection string
		want               int
	}{
		{"batch", brokertest.ConnectionName, 1},
		{"batch", "other", 0},
		{"billing", brokertest.ConnectionName, 0},
		{"", brokertest.ConnectionName, 0},
	}
	for _, tt := range tests {
		if got := quota(tt.holder, tt.connection); got != tt.want {
			t.Errorf("quota(%q, %q) = %d, want %d", tt.holder, tt.connection, got, tt.want)
		}
	}
}
