package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// Role grants a caller the methods of one service.
type Role string

// Roles of callers.
const (
	// RoleClient may call SessionService.
	RoleClient Role = "client"
	// RoleAdmin may call AdminService.
	RoleAdmin Role = "admin"
)

// Caller is a service that the broker lets in. It authenticates with an API
// key, a client certificate, or both.
type Caller struct {
	// Name is the identity that the caller's leases are scoped to.
	Name string
	// APIKeySHA256 are the SHA-256 digests of the caller's API keys, which it
	// sends as "authorization: Bearer KEY" metadata.
	APIKeySHA256 [][sha256.Size]byte
	// CertificateIdentity is compared with the identity of the caller's
	// verified client certificate (see CertificateIdentity). Empty means
	// certificates never identify this caller.
	CertificateIdentity string
	Roles               []Role
	// Quotas caps, by connection name, the leases the caller may hold or
	// wait for at once, as CallerQuotas applies them. A connection missing
	// here has no cap.
	Quotas map[string]int
}

// CallerQuotas returns the broker.Config.Quota of callers: a holder's quota
// on a connection is its caller's Quotas entry, and 0 (no cap) when there
// is none.
func CallerQuotas(callers []Caller) func(holder, connection string) int {
	quotas := make(map[string]map[string]int, len(callers))
	for _, c := range callers {
		if len(c.Quotas) > 0 {
			quotas[c.Name] = maps.Clone(c.Quotas)
		}
	}
	return func(holder, connection string) int { return quotas[holder][connection] }
}

// Reasons of the ErrorInfo of UNAUTHENTICATED and PERMISSION_DENIED errors.
const (
	// ReasonUnauthenticated: the call carried neither an API key nor a
	// client certificate.
	ReasonUnauthenticated = "UNAUTHENTICATED"
	// ReasonAPIKeyInvalid: the authorization metadata is malformed or holds
	// a key that no caller has.
	ReasonAPIKeyInvalid = "API_KEY_INVALID"
	// ReasonCertificateInvalid: the client certificate is expired, not yet
	// valid, not for client authentication, or not signed by a trusted CA.
	ReasonCertificateInvalid = "CERTIFICATE_INVALID"
	// ReasonCallerUnknown: the client certificate is valid, but its identity
	// is no caller's certificate_identity.
	ReasonCallerUnknown = "CALLER_UNKNOWN"
	// ReasonCredentialsMismatch: the API key and the client certificate
	// belong to different callers.
	ReasonCredentialsMismatch = "CREDENTIALS_MISMATCH"
	// ReasonRoleRequired: the caller lacks the role the service requires.
	ReasonRoleRequired = "ROLE_REQUIRED"
	// ReasonServiceNotAllowed: no role grants the service to callers.
	ReasonServiceNotAllowed = "SERVICE_NOT_ALLOWED"
)

// maxAPIKeyLength bounds the API key of the authorization metadata.
const maxAPIKeyLength = 1024

// anyCaller marks a service that every authenticated caller may call.
const anyCaller Role = "*"

// serviceRoles maps each service to the role its methods require. Every
// authenticated caller may use reflection, which only describes the API.
// Callers are denied services missing here, so a service registered later
// stays closed until it is added. Health checks skip authentication (see
// authInterceptors).
var serviceRoles = map[string]Role{
	acubrokerv1.SessionService_ServiceDesc.ServiceName: RoleClient,
	acubrokerv1.AdminService_ServiceDesc.ServiceName:   RoleAdmin,
	"grpc.reflection.v1.ServerReflection":              anyCaller,
	"grpc.reflection.v1alpha.ServerReflection":         anyCaller,
}

// callerKey is the context key of the authenticated caller's name.
type callerKey struct{}

// CallerFromContext returns the name of the caller that the authentication
// interceptor let in, and false when authentication is off or the method
// skips it.
func CallerFromContext(ctx context.Context) (string, bool) {
	name, ok := ctx.Value(callerKey{}).(string)
	return name, ok
}

// CertificateIdentity returns the identity of a client certificate: its
// first URI SAN, else its first DNS SAN, else its subject common name.
func CertificateIdentity(cert *x509.Certificate) string {
	switch {
	case len(cert.URIs) > 0:
		return cert.URIs[0].String()
	case len(cert.DNSNames) > 0:
		return cert.DNSNames[0]
	}
	return cert.Subject.CommonName
}

// authenticator identifies callers by API key and client certificate.
type authenticator struct {
	callers    []Caller
	byIdentity map[string]*Caller
	clientCAs  *x509.CertPool
	now        func() time.Time
}

func newAuthenticator(callers []Caller, clientCAs *x509.CertPool) *authenticator {
	a := &authenticator{
		callers:    slices.Clone(callers),
		byIdentity: make(map[string]*Caller),
		clientCAs:  clientCAs,
		now:        time.Now,
	}
	for i := range a.callers {
		if id := a.callers[i].CertificateIdentity; id != "" {
			a.byIdentity[id] = &a.callers[i]
		}
	}
	return a
}

// authInterceptors returns the interceptors that authenticate and authorize
// every call except health checks, which load balancers send without
// credentials and which reveal nothing but the serving status.
func (a *authenticator) authInterceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	notHealth := selector.MatchFunc(func(_ context.Context, call interceptors.CallMeta) bool {
		return call.Service != healthpb.Health_ServiceDesc.ServiceName
	})
	// NOTE: auth lets a service that implements auth.ServiceAuthFuncOverride
	// replace authenticate. No service of the broker implements it.
	return selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(a.authenticate), notHealth),
		selector.StreamServerInterceptor(auth.StreamServerInterceptor(a.authenticate), notHealth)
}

// authenticate identifies the caller, checks its role for the method, and
// adds its name to the context and to the call's log fields.
func (a *authenticator) authenticate(ctx context.Context) (context.Context, error) {
	caller, err := a.identify(ctx)
	if err != nil {
		return nil, err
	}
	method, _ := grpc.Method(ctx)
	if err := authorize(caller, method); err != nil {
		return nil, err
	}
	logging.AddFields(ctx, logging.Fields{"caller", caller.Name})
	return context.WithValue(ctx, callerKey{}, caller.Name), nil
}

// identify returns the caller that the call's credentials prove. A call may
// carry an API key, a client certificate or both. Every credential it
// carries must be valid, and both must name the same caller.
func (a *authenticator) identify(ctx context.Context) (*Caller, error) {
	byCert, hasCert, certErr := a.callerFromCertificate(ctx)
	if certErr != nil {
		return nil, certErr
	}
	byKey, hasKey, keyErr := a.callerFromAPIKey(ctx)
	if keyErr != nil {
		return nil, keyErr
	}
	switch {
	case hasCert && hasKey && byCert != byKey:
		return nil, authError(codes.Unauthenticated, ReasonCredentialsMismatch, nil,
			"the API key belongs to caller %q but the client certificate to caller %q; send the credentials of one caller",
			byKey.Name, byCert.Name)
	case hasCert:
		return byCert, nil
	case hasKey:
		return byKey, nil
	}
	return nil, authError(codes.Unauthenticated, ReasonUnauthenticated, nil,
		"the call carries no credentials; send the caller's API key as \"authorization: Bearer KEY\" metadata, "+
			"or connect with the caller's client certificate")
}

// callerFromAPIKey returns the caller whose API key the authorization
// metadata carries, and false when the call carries none. It compares the
// key's digest with every configured digest in constant time, so the time
// taken does not reveal which caller, if any, came close.
func (a *authenticator) callerFromAPIKey(ctx context.Context) (*Caller, bool, error) {
	values := metadata.ValueFromIncomingContext(ctx, "authorization")
	if len(values) == 0 {
		return nil, false, nil
	}
	invalid := func(format string, args ...any) error {
		return authError(codes.Unauthenticated, ReasonAPIKeyInvalid, nil, format, args...)
	}
	if len(values) > 1 {
		return nil, true, invalid("the call carries %d authorization values; send one: \"Bearer KEY\"", len(values))
	}
	scheme, key, found := strings.Cut(values[0], " ")
	if !found || !strings.EqualFold(scheme, "bearer") {
		return nil, true, invalid("the authorization metadata must be \"Bearer KEY\" with the caller's API key")
	}
	key = strings.TrimSpace(key)
	if key == "" || len(key) > maxAPIKeyLength {
		return nil, true, invalid("the API key is empty or longer than %d bytes; send the key the broker's operator issued", maxAPIKeyLength)
	}
	digest := sha256.Sum256([]byte(key))
	var match *Caller
	for i := range a.callers {
		for _, want := range a.callers[i].APIKeySHA256 {
			if subtle.ConstantTimeCompare(digest[:], want[:]) == 1 && match == nil {
				match = &a.callers[i]
			}
		}
	}
	if match == nil {
		return nil, true, invalid("the API key is not valid; check that the caller sends the key whose SHA-256 digest the broker's config lists")
	}
	return match, true, nil
}

// callerFromCertificate returns the caller that a verified client
// certificate identifies, and false when the call has no client
// certificate or no client CAs are configured.
//
// The TLS handshake requests a certificate without verifying it, and the
// chain is verified here against the client CAs on every call. A caller
// with an expired or untrusted certificate thus gets UNAUTHENTICATED with a
// reason, rather than a handshake failure that its gRPC client would report
// as UNAVAILABLE.
func (a *authenticator) callerFromCertificate(ctx context.Context) (*Caller, bool, error) {
	if a.clientCAs == nil {
		return nil, false, nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, false, nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, false, nil
	}
	leaf, err := a.verifyChain(info.State)
	if err != nil {
		return nil, true, err
	}
	identity := CertificateIdentity(leaf)
	caller, ok := a.byIdentity[identity]
	if !ok {
		return nil, true, authError(codes.Unauthenticated, ReasonCallerUnknown, map[string]string{"identity": identity},
			"the client certificate's identity %q is no caller's certificate_identity; add it to the broker's callers", identity)
	}
	return caller, true, nil
}

// verifyChain verifies the peer's certificate chain for client
// authentication and returns its leaf.
func (a *authenticator) verifyChain(state tls.ConnectionState) (*x509.Certificate, error) {
	leaf := state.PeerCertificates[0]
	intermediates := x509.NewCertPool()
	for _, c := range state.PeerCertificates[1:] {
		intermediates.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         a.clientCAs,
		Intermediates: intermediates,
		CurrentTime:   a.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err == nil {
		return leaf, nil
	}
	meta := map[string]string{"identity": CertificateIdentity(leaf)}
	var (
		invalidErr *x509.CertificateInvalidError
		unknownCA  x509.UnknownAuthorityError
	)
	switch {
	case errors.As(err, &invalidErr) && invalidErr.Reason == x509.Expired:
		return nil, authError(codes.Unauthenticated, ReasonCertificateInvalid, meta,
			"the client certificate of %q is expired or not yet valid (valid %s to %s); renew it",
			meta["identity"], leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	case errors.As(err, &invalidErr) && invalidErr.Reason == x509.IncompatibleUsage:
		return nil, authError(codes.Unauthenticated, ReasonCertificateInvalid, meta,
			"the client certificate of %q is not for client authentication; issue one with extended key usage clientAuth",
			meta["identity"])
	case errors.As(err, &unknownCA):
		return nil, authError(codes.Unauthenticated, ReasonCertificateInvalid, meta,
			"the client certificate of %q is not signed by a CA that the broker trusts (its -tls-client-ca)", meta["identity"])
	}
	return nil, authError(codes.Unauthenticated, ReasonCertificateInvalid, meta,
		"the client certificate of %q does not verify: %v", meta["identity"], err)
}

// authorize checks that caller has the role that method's service requires.
func authorize(caller *Caller, method string) error {
	service := serviceName(method)
	role, ok := serviceRoles[service]
	if !ok {
		return authError(codes.PermissionDenied, ReasonServiceNotAllowed, map[string]string{"service": service},
			"service %s is not open to callers", service)
	}
	if role == anyCaller || slices.Contains(caller.Roles, role) {
		return nil
	}
	return authError(codes.PermissionDenied, ReasonRoleRequired,
		map[string]string{"caller": caller.Name, "role": string(role), "service": service},
		"caller %q lacks role %s, which %s requires; add the role to the caller in the broker's config",
		caller.Name, role, service)
}

// serviceName returns the service of a full method name such as
// /acubroker.v1.SessionService/AcquireSession.
func serviceName(fullMethod string) string {
	service, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return service
}

// authError returns a status error with an ErrorInfo of reason.
func authError(code codes.Code, reason string, meta map[string]string, format string, args ...any) error {
	st := status.New(code, fmt.Sprintf(format, args...))
	withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: errorDomain, Metadata: meta})
	if err != nil {
		return st.Err()
	}
	return withInfo.Err()
}
