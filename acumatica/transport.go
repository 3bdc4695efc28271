package acumatica

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
)

// maxResponseBytes caps how much of a response body is read. Token and
// error responses are a few hundred bytes.
const maxResponseBytes = 1 << 20

// exchangeKey is the context key under which a request carries its
// *exchange.
type exchangeKey struct{}

// exchange records what happened to one request on the wire. oauth2 hides
// some of it: it reports a failed body read or an unreadable 2xx token
// response as a plain error without the status, so recordingTransport fills
// this in as the request runs.
type exchange struct {
	mu        sync.Mutex
	connected bool        // a connection was obtained, so the request may have been sent
	status    int         // status of the response, 0 until one arrives
	header    http.Header // headers of the response
	bodyErr   error       // error while reading the response body
}

func (ex *exchange) gotConn() {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	ex.connected = true
}

func (ex *exchange) gotResponse(status int, header http.Header) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	ex.status = status
	ex.header = header
}

func (ex *exchange) readFailed(err error) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.bodyErr == nil {
		ex.bodyErr = err
	}
}

// snapshot returns the recorded fields.
func (ex *exchange) snapshot() (connected bool, status int, header http.Header, bodyErr error) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.connected, ex.status, ex.header, ex.bodyErr
}

// recordingTransport fills in the *exchange found in a request's context.
type recordingTransport struct {
	base http.RoundTripper
}

func (t *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ex, ok := req.Context().Value(exchangeKey{}).(*exchange)
	if !ok {
		return t.base.RoundTrip(req)
	}
	trace := &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { ex.gotConn() },
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	ex.gotResponse(resp.StatusCode, resp.Header)
	resp.Body = &recordingBody{ReadCloser: resp.Body, ex: ex}
	return resp, nil
}

// CloseIdleConnections forwards to the wrapped transport, so that
// http.Client.CloseIdleConnections keeps working.
func (t *recordingTransport) CloseIdleConnections() {
	if closer, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		closer.CloseIdleConnections()
	}
}

// recordingBody records the first read error other than io.EOF.
type recordingBody struct {
	io.ReadCloser
	ex *exchange
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.ex.readFailed(err)
	}
	return n, err
}

// newHTTPClient returns a copy of base, or of a default client when base is
// nil, that records exchanges, never follows redirects and has no cookie
// jar. The second result reports whether the transport is an
// *http.Transport, whose connection tracing can be trusted.
func newHTTPClient(base *http.Client) (*http.Client, bool) {
	client := &http.Client{Timeout: DefaultTimeout}
	if base != nil {
		*client = *base
	}
	transport := client.Transport
	if transport == nil {
		transport = http.DefaultTransport
	}
	_, tracks := transport.(*http.Transport)
	client.Transport = &recordingTransport{base: transport}
	client.Jar = nil
	client.CheckRedirect = func(*http.Request, []*http.Request) error {
		// A redirect from these endpoints is itself the result. Acumatica
		// redirects to /Frames/Error.aspx with the error in the query, and
		// following a 302 would turn a POST with credentials into a GET.
		return http.ErrUseLastResponse
	}
	return client, tracks
}

// transportError builds the error for a request that got no usable
// response.
func (c *Client) transportError(op, endpoint string, ex *exchange, err error) *Error {
	connected, _, _, _ := ex.snapshot()
	return &Error{
		Op:             op,
		Kind:           ErrUnavailable,
		URL:            endpoint,
		OutcomeUnknown: c.mayHaveBeenSent(connected, err),
		Err:            unwrapURLError(err),
	}
}

// mayHaveBeenSent reports whether a request that failed with err may have
// reached the server. Once a connection was obtained, any failure may have
// come after the server read the request. A dial error, or a failure before
// any connection on a transport that reports connections, means that
// nothing was sent.
func (c *Client) mayHaveBeenSent(connected bool, err error) bool {
	if connected {
		return true
	}
	if isDialError(err) {
		return false
	}
	return !c.tracksConnections
}

// isDialError reports whether err happened while connecting: a refused
// connection, a DNS failure or a failed proxy connection.
func isDialError(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && (opErr.Op == "dial" || opErr.Op == "proxyconnect") {
		return true
	}
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr)
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the URL
// that Error already shows.
func unwrapURLError(err error) error {
	var urlErr *url.Error
	if errors.As(err, &urlErr) && urlErr.Err != nil {
		return urlErr.Err
	}
	return err
}

// readBody reads at most maxResponseBytes of the response body and closes
// it.
func readBody(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
}
