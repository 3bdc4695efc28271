package emulator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Paths of the emulated Acumatica endpoints.
const (
	PathDiscovery  = "/identity/.well-known/openid-configuration" // GET: OpenID Provider configuration
	PathToken      = "/identity/connect/token"                    // POST: password and refresh_token grants
	PathRevocation = "/identity/connect/revocation"               // POST: token revocation (RFC 7009)
	PathLogin      = "/entity/auth/login"                         // POST: cookie sign-in
	PathLogout     = "/entity/auth/logout"                        // POST: sign-out by bearer or cookies
	// PathCustomers lists customers; PathCustomers + "/{CustomerID}"
	// returns one.
	PathCustomers = "/entity/Default/24.200.001/Customer"
	// PathControl is the prefix of the control API.
	PathControl = "/_emulator/"
)

// routes builds the handler of every path. The Acumatica endpoints pass
// through fault injection, and all but discovery and revocation through the
// per-minute limit; the control API passes through neither.
func (e *Emulator) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET "+PathDiscovery, e.api(EndpointDiscovery, false, e.handleDiscovery))
	mux.Handle("POST "+PathToken, e.api(EndpointToken, true, e.handleToken))
	mux.Handle("POST "+PathRevocation, e.api(EndpointRevocation, false, e.handleRevocation))
	mux.Handle("POST "+PathLogin, e.api(EndpointLogin, true, e.handleLogin))
	mux.Handle("POST "+PathLogout, e.api(EndpointLogout, true, e.handleLogout))
	mux.Handle("GET "+PathCustomers, e.api(EndpointData, true, e.handleCustomers))
	mux.Handle("GET "+PathCustomers+"/{id}", e.api(EndpointData, true, e.handleCustomer))
	mux.HandleFunc("GET /Frames/Error.aspx", handleErrorPage)
	e.controlRoutes(mux)
	return mux
}

// api wraps the handler of an Acumatica endpoint with fault injection and,
// when limited is set, the per-minute request limit.
func (e *Emulator) api(endpoint string, limited bool, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.applyFault(w, r, endpoint) {
			return
		}
		if limited && !e.admitRequest(w, endpoint) {
			return
		}
		h(w, r)
	})
}

// Server is an Emulator served over HTTP on a TCP listener.
type Server struct {
	// URL is the base address, such as http://127.0.0.1:40123.
	URL string
	// Emulator is the emulator behind the server, for direct control.
	Emulator *Emulator

	srv       *http.Server
	cancel    context.CancelFunc
	done      chan error
	closeOnce sync.Once
	closeErr  error

	// connMu protects newConns, the connections that have not yet sent a
	// request.
	connMu   sync.Mutex
	newConns map[net.Conn]bool
}

// Start serves a new Emulator for cfg on 127.0.0.1 with a port chosen by the
// system.
func Start(cfg Config) (*Server, error) {
	return Listen("127.0.0.1:0", cfg)
}

// Listen serves a new Emulator for cfg on addr, a host:port for
// net.Listen("tcp", addr). An empty host listens on every interface.
func Listen(addr string, cfg Config) (*Server, error) {
	e, err := New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("emulator: listen on %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		URL:      "http://" + ln.Addr().String(),
		Emulator: e,
		cancel:   cancel,
		done:     make(chan error, 1),
		newConns: map[net.Conn]bool{},
	}
	s.srv = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
		ConnState:         s.trackConn,
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	e.log.Info("emulator listening", "url", s.URL)
	return s, nil
}

// trackConn records which connections have not sent a request yet.
func (s *Server) trackConn(c net.Conn, state http.ConnState) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if state == http.StateNew {
		s.newConns[c] = true
	} else {
		delete(s.newConns, c)
	}
}

// Close stops the server. It cancels requests that wait on a fault's
// latency, closes connections that carry no request, waits up to 5 seconds
// for the other requests to finish, and then closes every connection.
// Calling Close again returns the first result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdown := make(chan error, 1)
		go func() { shutdown <- s.srv.Shutdown(ctx) }()
		err := s.closeNewConnsUntil(shutdown)
		if err != nil {
			err = errors.Join(err, s.srv.Close())
		}
		if serveErr := <-s.done; !errors.Is(serveErr, http.ErrServerClosed) {
			err = errors.Join(err, serveErr)
		}
		s.closeErr = err
		s.Emulator.log.Info("emulator stopped", "url", s.URL)
	})
	return s.closeErr
}

// closeNewConnsUntil closes connections that carry no request until
// shutdown reports, and returns its result. http.Server.Shutdown alone would
// wait 5 seconds for connections that a client dialled but never used.
func (s *Server) closeNewConnsUntil(shutdown <-chan error) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		s.connMu.Lock()
		for c := range s.newConns {
			_ = c.Close()
		}
		s.connMu.Unlock()
		select {
		case err := <-shutdown:
			return err
		case <-tick.C:
		}
	}
}
