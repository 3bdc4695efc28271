package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"
)

// Endpoint names that a Fault can target.
const (
	EndpointToken      = "token"      // POST /identity/connect/token
	EndpointRevocation = "revocation" // POST /identity/connect/revocation
	EndpointLogin      = "login"      // POST /entity/auth/login
	EndpointLogout     = "logout"     // POST /entity/auth/logout
	EndpointData       = "data"       // GET /entity/Default/24.200.001/Customer...
	EndpointDiscovery  = "discovery"  // GET /identity/.well-known/openid-configuration
	EndpointAll        = "*"          // every endpoint above
)

var faultEndpoints = []string{EndpointToken, EndpointRevocation, EndpointLogin, EndpointLogout,
	EndpointData, EndpointDiscovery, EndpointAll}

// Fault disturbs calls to one endpoint. The emulator waits Latency. Then it
// closes the connection without a response if Drop is set, or responds with
// Status and Body if Status is set, or else handles the call normally.
//
// Count and Ratio choose the calls. With Count > 0 the fault hits at most
// Count matching calls and is then removed. With Ratio > 0 each matching
// call is hit with that probability, drawn from the source seeded by
// Config.Seed. With both 0 every matching call is hit until ClearFaults.
// When several faults match a call, the one injected first applies.
type Fault struct {
	// Endpoint is one of the Endpoint constants: "token", "revocation",
	// "login", "logout", "data", "discovery" or "*".
	Endpoint string
	// Latency is a real-time delay before the call proceeds; the emulator
	// clock does not move.
	Latency time.Duration
	// Status is the HTTP status to respond with, 200 to 599, or 0 for none.
	Status int
	// Body is sent with Status, as application/json if it is valid JSON and
	// as text/plain otherwise.
	Body string
	// Drop closes the connection without writing a response.
	Drop bool
	// Count is how many calls the fault hits before it is removed; 0 for no
	// limit.
	Count int
	// Ratio is the probability, 0 to 1, that a matching call is hit; 0
	// hits every matching call.
	Ratio float64
}

// Validate returns an error naming the first invalid field of f.
func (f Fault) Validate() error {
	switch {
	case !slices.Contains(faultEndpoints, f.Endpoint):
		return fmt.Errorf("invalid fault endpoint %q: use one of %q", f.Endpoint, faultEndpoints)
	case f.Latency < 0:
		return fmt.Errorf("invalid fault latency %s: use 0 or a positive duration", f.Latency)
	case f.Status != 0 && (f.Status < 200 || f.Status > 599):
		return fmt.Errorf("invalid fault status %d: use 0 for none or 200 to 599", f.Status)
	case f.Count < 0:
		return fmt.Errorf("invalid fault count %d: use 0 for no limit or a positive number", f.Count)
	case f.Ratio < 0 || f.Ratio > 1:
		return fmt.Errorf("invalid fault ratio %g: use a probability from 0 to 1", f.Ratio)
	case f.Body != "" && f.Status == 0:
		return errors.New("invalid fault: a body needs a status")
	case f.Latency == 0 && f.Status == 0 && !f.Drop:
		return errors.New("invalid fault: set a latency, a status or drop")
	}
	return nil
}

// faultSet holds the active faults in injection order.
type faultSet struct {
	active []*Fault
	rng    *rand.Rand
}

// pick returns the fault that hits a call to endpoint, if any, and uses up
// one of its Count.
func (fs *faultSet) pick(endpoint string) (Fault, bool) {
	for i, f := range fs.active {
		if f.Endpoint != endpoint && f.Endpoint != EndpointAll {
			continue
		}
		if f.Ratio > 0 && fs.rng.Float64() >= f.Ratio {
			continue
		}
		hit := *f
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				fs.active = slices.Delete(fs.active, i, i+1)
			}
		}
		return hit, true
	}
	return Fault{}, false
}

// AddFault validates f and adds it after the faults already active.
func (e *Emulator) AddFault(f Fault) error {
	if err := f.Validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults.active = append(e.faults.active, &f)
	e.log.Info("fault injected", "endpoint", f.Endpoint, "latency", f.Latency, "status", f.Status,
		"drop", f.Drop, "count", f.Count, "ratio", f.Ratio)
	return nil
}

// InjectFault adds f as AddFault does, and panics if f is invalid.
func (e *Emulator) InjectFault(f Fault) {
	if err := e.AddFault(f); err != nil {
		panic("emulator: InjectFault: " + err.Error())
	}
}

// Faults returns the active faults, with Count lowered by the calls each
// has hit.
func (e *Emulator) Faults() []Fault {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Fault, 0, len(e.faults.active))
	for _, f := range e.faults.active {
		out = append(out, *f)
	}
	return out
}

// ClearFaults removes every active fault.
func (e *Emulator) ClearFaults() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults.active = nil
	e.log.Info("faults cleared")
}

// applyFault runs the fault that hits this call, if any. It returns true
// when the fault wrote a response or dropped the connection, so the handler must not run.
func (e *Emulator) applyFault(w http.ResponseWriter, r *http.Request, endpoint string) bool {
	e.mu.Lock()
	f, ok := e.faults.pick(endpoint)
	if ok {
		e.stats.faultsInjected++
	}
	e.mu.Unlock()
	if !ok {
		return false
	}
	e.log.Debug("fault hit", "endpoint", endpoint, "latency", f.Latency, "status", f.Status, "drop", f.Drop)
	if f.Latency > 0 && !sleepContext(r, f.Latency) {
		// The client went away or the server is closing, so end the call
		// without a response rather than send an empty 200.
		panic(http.ErrAbortHandler)
	}
	switch {
	case f.Drop:
		dropConnection(w)
		return true
	case f.Status != 0:
		writeFaultBody(w, f.Status, f.Body)
		return true
	}
	return false
}

// sleepContext waits d, and returns false if the request was cancelled or
// the server closed first.
func sleepContext(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// dropConnection closes the client connection without a response.
func dropConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		// The server aborts the response and closes the connection.
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

func writeFaultBody(w http.ResponseWriter, status int, body string) {
	if json.Valid([]byte(body)) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	} else if body != "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}
