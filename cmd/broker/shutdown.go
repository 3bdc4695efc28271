package main

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/acubroker/acubroker/health"
	"github.com/acubroker/acubroker/server"
)

// cancelledCallsGrace is how long calls get to return after shutdown
// cancels them. An acquire cancelled mid-sign-in finishes the sign-in first
// (cutting it off would leave its outcome unknown and its seat held), so
// this only bounds the wait for the Acumatica request already in flight.
const cancelledCallsGrace = 5 * time.Second

// shuttingDownMessage is the status message of a call cut short by shutdown.
const shuttingDownMessage = "the broker replica is shutting down; retry the call, another replica will serve it"

// drainer cancels in-flight calls at shutdown, so that a call waiting for a
// seat returns UNAVAILABLE to its caller instead of losing its connection.
// Its interceptors go last in the chain, next to the handler.
type drainer struct {
	// streams ends when shutdown starts: streams such as health watches
	// never finish on their own.
	streams context.Context
	// calls ends when in-flight unary calls have used up the shutdown
	// timeout.
	calls context.Context

	endStreams context.CancelFunc
	endCalls   context.CancelFunc
	// inFlight counts the calls running, for the shutdown log.
	inFlight atomic.Int64
}

func newDrainer() *drainer {
	d := &drainer{}
	d.streams, d.endStreams = context.WithCancel(context.Background())
	d.calls, d.endCalls = context.WithCancel(context.Background())
	return d
}

// serverOptions returns the interceptors that tie calls to the drainer.
func (d *drainer) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(d.unary),
		grpc.ChainStreamInterceptor(d.stream),
	}
}

func (d *drainer) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	d.begin()
	defer d.end()
	ctx, stop := mergeCancel(ctx, d.calls)
	defer stop()
	resp, err := handler(ctx, req)
	return resp, d.shutdownError(ctx, err)
}

func (d *drainer) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	d.begin()
	defer d.end()
	ctx, stop := mergeCancel(ss.Context(), d.streams)
	defer stop()
	err := handler(srv, &drainedStream{ServerStream: ss, ctx: ctx})
	return d.shutdownError(ctx, err)
}

// shutdownError turns the error of a call that shutdown cancelled into
// UNAVAILABLE, the code of a call that is safe to retry elsewhere, and
// keeps every other result.
func (d *drainer) shutdownError(ctx context.Context, err error) error {
	if err == nil || !errors.Is(context.Cause(ctx), errShuttingDown) {
		return err
	}
	return status.Error(codes.Unavailable, shuttingDownMessage)
}

func (d *drainer) begin() { d.inFlight.Add(1) }

func (d *drainer) end() { d.inFlight.Add(-1) }

// errShuttingDown is the cancellation cause of calls that shutdown ends.
var errShuttingDown = errors.New("broker shutting down")

// mergeCancel returns a context that carries ctx's values and deadline and
// is also cancelled, with cause errShuttingDown, when shutdown ends.
func mergeCancel(ctx, shutdown context.Context) (context.Context, context.CancelFunc) {
	merged, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(shutdown, func() { cancel(errShuttingDown) })
	return merged, func() {
		stop()
		cancel(context.Canceled)
	}
}

// drainedStream is a ServerStream whose context ends at shutdown.
type drainedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *drainedStream) Context() context.Context { return s.ctx }

// gracefulStop stops the gRPC server in steps that let callers move to
// other replicas without losing a seat:
//
//  1. Health turns NOT_SERVING, on gRPC and on /readyz.
//  2. After delay, so that load balancers notice, the server stops
//     accepting calls; open streams such as health watches end.
//  3. In-flight calls get up to timeout to finish.
//  4. Calls still running are cancelled: an acquire that waits leaves the
//     queue and returns UNAVAILABLE. They get cancelledCallsGrace to
//     return before the connections are closed.
//
// Leases and sessions stay in Postgres, where other replicas serve them.
func gracefulStop(srv *server.Server, d *drainer, checker *health.Checker, delay, timeout time.Duration, logger *slog.Logger) {
	logger.Info("shutting down: reporting NOT_SERVING", "delay", delay.String(), "timeout", timeout.String(),
		"in_flight_calls", d.inFlight.Load())
	checker.Shutdown()
	srv.Health().Shutdown()
	if delay > 0 {
		time.Sleep(delay)
	}

	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	d.endStreams()
	select {
	case <-stopped:
		logger.Info("in-flight calls finished")
		return
	case <-time.After(timeout):
	}

	logger.Warn("in-flight calls did not finish within the shutdown timeout; cancelling them",
		"timeout", timeout.String(), "in_flight_calls", d.inFlight.Load())
	d.endCalls()
	select {
	case <-stopped:
		logger.Info("cancelled calls returned")
		return
	case <-time.After(cancelledCallsGrace):
	}
	logger.Error("calls did not return after cancellation; closing their connections",
		"grace", cancelledCallsGrace.String(), "in_flight_calls", d.inFlight.Load())
	srv.Stop()
	<-stopped
}
