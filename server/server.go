// Package server adapts the broker to gRPC: it registers SessionService, the
// standard health service and server reflection, and chains the interceptors
// that log calls, turn panics into INTERNAL, authenticate callers and
// validate requests.
//
// Each handler converts the request, calls the broker and converts the
// result. statusError is the one place where broker errors become gRPC
// status codes with their details.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"runtime/debug"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/acubroker/acubroker/broker"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// Config configures a Server.
type Config struct {
	Broker *broker.Broker
	Logger *slog.Logger // default: discard
	// DisableReflection turns off gRPC server reflection, which is on by
	// default so that grpcurl can list and describe the services.
	DisableReflection bool
	// ServerOptions are appended to the server's own options. Interceptors
	// chained here run after the server's own.
	ServerOptions []grpc.ServerOption
	// UnaryInterceptors and StreamInterceptors run before the server's own
	// interceptors, first one outermost, so that they see every call,
	// including calls that validation rejects. Metrics go here.
	UnaryInterceptors  []grpc.UnaryServerInterceptor
	StreamInterceptors []grpc.StreamServerInterceptor

	// Callers are the services allowed to call, each with its roles. Empty
	// turns authentication off: every call is let in as the anonymous
	// caller "", so serve it on a loopback listener only.
	Callers []Caller
	// ClientCAs verify client certificates, whose identities name callers.
	// Nil ignores client certificates.
	ClientCAs *x509.CertPool
	// TLS is the listener's TLS config, as NewTLSConfig builds it. Nil
	// serves plaintext.
	TLS *tls.Config
}

// Server is the broker's gRPC server.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
	logger *slog.Logger
}

// New builds the gRPC server and registers its services.
func New(cfg Config) *Server {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	unary := []grpc.UnaryServerInterceptor{
		selector.UnaryServerInterceptor(
			logging.UnaryServerInterceptor(interceptorLogger(logger), logging.WithLogOnEvents(logging.FinishCall),
				logging.WithLevels(callLogLevel)),
			selector.MatchFunc(notHealthCheck)),
		recovery.UnaryServerInterceptor(recovery.WithRecoveryHandlerContext(panicHandler(logger))),
	}
	stream := []grpc.StreamServerInterceptor{
		selector.StreamServerInterceptor(
			logging.StreamServerInterceptor(interceptorLogger(logger), logging.WithLogOnEvents(logging.FinishCall),
				logging.WithLevels(callLogLevel)),
			selector.MatchFunc(notHealthCheck)),
		recovery.StreamServerInterceptor(recovery.WithRecoveryHandlerContext(panicHandler(logger))),
	}
	// Authentication runs before validation, so that only known callers
	// learn what a valid request looks like.
	if len(cfg.Callers) > 0 {
		authUnary, authStream := newAuthenticator(cfg.Callers, cfg.ClientCAs).authInterceptors()
		unary = append(unary, authUnary)
		stream = append(stream, authStream)
	}
	unary = append(unary, validateUnary)
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(cfg.UnaryInterceptors...),
		grpc.ChainStreamInterceptor(cfg.StreamInterceptors...),
		grpc.MaxRecvMsgSize(maxMessageSize),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	opts = append(opts, cfg.ServerOptions...)
	s := &Server{grpc: grpc.NewServer(opts...), health: health.NewServer(), logger: logger}

	acubrokerv1.RegisterSessionServiceServer(s.grpc, &sessionService{broker: cfg.Broker, logger: logger})
	acubrokerv1.RegisterAdminServiceServer(s.grpc, &adminService{broker: cfg.Broker, logger: logger})
	healthpb.RegisterHealthServer(s.grpc, s.health)
	if !cfg.DisableReflection {
		reflection.Register(s.grpc)
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(acubrokerv1.SessionService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(acubrokerv1.AdminService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s
}

// GRPC returns the underlying gRPC server, to register more services.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Health returns the health service, to report NOT_SERVING.
func (s *Server) Health() *health.Server { return s.health }

// Serve accepts calls on lis until Stop or GracefulStop.
func (s *Server) Serve(lis net.Listener) error { return s.grpc.Serve(lis) }

// GracefulStop reports NOT_SERVING, stops accepting calls and waits for
// in-flight calls to finish.
func (s *Server) GracefulStop() {
	s.health.Shutdown()
	s.grpc.GracefulStop()
}

// Stop reports NOT_SERVING and closes every connection at once.
func (s *Server) Stop() {
	s.health.Shutdown()
	s.grpc.Stop()
}

// notHealthCheck keeps health checks out of the call log: load balancers and
// Kubernetes send one every few seconds.
func notHealthCheck(_ context.Context, call interceptors.CallMeta) bool {
	return call.Service != healthpb.Health_ServiceDesc.ServiceName
}

// callLogLevel is the middleware's default mapping of codes to log levels,
// except that calls rejected by authentication log at WARN: a run of them
// is how a misconfigured or hostile caller shows.
func callLogLevel(code codes.Code) logging.Level {
	if code == codes.Unauthenticated || code == codes.PermissionDenied {
		return logging.LevelWarn
	}
	return logging.DefaultServerCodeToLevel(code)
}

// interceptorLogger adapts slog to the logging interceptor. Payloads are
// never logged: responses carry access tokens.
func interceptorLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, level logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(level), msg, fields...)
	})
}

// panicHandler logs a panic with its stack and returns a generic INTERNAL,
// so that no stack trace reaches a caller.
func panicHandler(logger *slog.Logger) recovery.RecoveryHandlerFuncContext {
	return func(ctx context.Context, p any) error {
		logger.ErrorContext(ctx, "panic in a call handler", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error; the broker logged the details")
	}
}
