package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// controlRoutes registers the control API under PathControl. Bodies and
// responses are JSON with snake_case names; errors are {"error": "..."}.
func (e *Emulator) controlRoutes(mux *http.ServeMux) {
	routes := []struct {
		method, path string
		handler      http.HandlerFunc
	}{
		{http.MethodGet, "/_emulator/stats", e.handleStats},
		{http.MethodGet, "/_emulator/sessions", e.handleSessions},
		{http.MethodPost, "/_emulator/reset-peak", e.handleResetPeak},
		{http.MethodGet, "/_emulator/limits", e.handleGetLimits},
		{http.MethodPost, "/_emulator/limits", e.handleSetLimits},
		{http.MethodGet, "/_emulator/clock", e.handleClock},
		{http.MethodPost, "/_emulator/clock/advance", e.handleAdvance},
		{http.MethodPost, "/_emulator/restart", e.handleRestart},
		{http.MethodGet, "/_emulator/faults", e.handleListFaults},
		{http.MethodPost, "/_emulator/faults", e.handleAddFault},
		{http.MethodDelete, "/_emulator/faults", e.handleClearFaults},
	}
	allowed := map[string][]string{}
	for _, rt := range routes {
		mux.HandleFunc(rt.method+" "+rt.path, rt.handler)
		allowed[rt.path] = append(allowed[rt.path], rt.method)
	}
	// The catch-all writes JSON errors where the mux would write text.
	mux.HandleFunc(PathControl, func(w http.ResponseWriter, r *http.Request) {
		if methods, ok := allowed[r.URL.Path]; ok {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			writeControlError(w, http.StatusMethodNotAllowed,
				fmt.Errorf("method %s not allowed on %s: use %s", r.Method, r.URL.Path, strings.Join(methods, " or ")))
			return
		}
		writeControlError(w, http.StatusNotFound, fmt.Errorf("no control endpoint %s %s", r.Method, r.URL.Path))
	})
}

func (e *Emulator) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, e.Stats())
}

// sessionsResponse is the body of GET /_emulator/sessions.
type sessionsResponse struct {
	Sessions []SessionInfo `json:"sessions"`
}

func (e *Emulator) handleSessions(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, sessionsResponse{Sessions: e.Sessions()})
}

func (e *Emulator) handleResetPeak(w http.ResponseWriter, _ *http.Request) {
	e.ResetPeak()
	writeJSON(w, http.StatusOK, e.Stats())
}

func (e *Emulator) handleGetLimits(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, e.Limits())
}

// handleSetLimits changes the limits named in the body, such as
// {"seats": 5}, and returns all limits.
func (e *Emulator) handleSetLimits(w http.ResponseWriter, r *http.Request) {
	var l Limits
	if !decodeControl(w, r, &l) {
		return
	}
	if err := e.UpdateLimits(l); err != nil {
		writeControlError(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, e.Limits())
}

// clockResponse is the body of the clock endpoints.
type clockResponse struct {
	Now time.Time `json:"now"`
}

func (e *Emulator) handleClock(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, clockResponse{Now: e.Now()})
}

// handleAdvance moves the clock forward by the Go duration in "by", such as
// {"by": "1h"}, and returns the new time.
func (e *Emulator) handleAdvance(w http.ResponseWriter, r *http.Request) {
	var body struct {
		By string `json:"by"`
	}
	if !decodeControl(w, r, &body) {
		return
	}
	d, err := time.ParseDuration(body.By)
	if err != nil || d <= 0 {
		writeControlError(w, http.StatusBadRequest,
			fmt.Errorf("invalid by %q: use a positive Go duration such as \"90s\" or \"1h\"", body.By))
		return
	}
	e.Advance(d)
	writeJSON(w, http.StatusOK, clockResponse{Now: e.Now()})
}

// restartResponse is the body of POST /_emulator/restart.
type restartResponse struct {
	ClosedSessions int `json:"closed_sessions"`
}

func (e *Emulator) handleRestart(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, restartResponse{ClosedSessions: e.restart()})
}

// faultJSON is the wire form of a Fault; latency is a Go duration string.
type faultJSON struct {
	Endpoint string  `json:"endpoint"`
	Latency  string  `json:"latency,omitempty"`
	Status   int     `json:"status,omitempty"`
	Body     string  `json:"body,omitempty"`
	Drop     bool    `json:"drop,omitempty"`
	Count    int     `json:"count,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"`
}

func (f faultJSON) fault() (Fault, error) {
	var latency time.Duration
	if f.Latency != "" {
		var err error
		if latency, err = time.ParseDuration(f.Latency); err != nil {
			return Fault{}, fmt.Errorf("invalid fault latency %q: use a Go duration such as \"250ms\"", f.Latency)
		}
	}
	return Fault{Endpoint: f.Endpoint, Latency: latency, Status: f.Status, Body: f.Body,
		Drop: f.Drop, Count: f.Count, Ratio: f.Ratio}, nil
}

func toFaultJSON(f Fault) faultJSON {
	out := faultJSON{Endpoint: f.Endpoint, Status: f.Status, Body: f.Body, Drop: f.Drop,
		Count: f.Count, Ratio: f.Ratio}
	if f.Latency > 0 {
		out.Latency = f.Latency.String()
	}
	return out
}

// faultsResponse is the body of the fault endpoints.
type faultsResponse struct {
	Faults []faultJSON `json:"faults"`
}

func (e *Emulator) writeFaults(w http.ResponseWriter, status int) {
	resp := faultsResponse{Faults: []faultJSON{}}
	for _, f := range e.Faults() {
		resp.Faults = append(resp.Faults, toFaultJSON(f))
	}
	writeJSON(w, status, resp)
}

func (e *Emulator) handleListFaults(w http.ResponseWriter, _ *http.Request) {
	e.writeFaults(w, http.StatusOK)
}

// handleAddFault adds the fault in the body and returns every active fault.
func (e *Emulator) handleAddFault(w http.ResponseWriter, r *http.Request) {
	var body faultJSON
	if !decodeControl(w, r, &body) {
		return
	}
	f, err := body.fault()
	if err == nil {
		err = e.AddFault(f)
	}
	if err != nil {
		writeControlError(w, http.StatusBadRequest, err)
		return
	}
	e.writeFaults(w, http.StatusCreated)
}

func (e *Emulator) handleClearFaults(w http.ResponseWriter, _ *http.Request) {
	e.ClearFaults()
	e.writeFaults(w, http.StatusOK)
}

// decodeControl decodes a JSON body into v, rejecting unknown fields, or
// writes a 400 response and returns false.
func decodeControl(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		err = errors.New("the body is empty")
	}
	if err != nil {
		writeControlError(w, http.StatusBadRequest, fmt.Errorf("invalid JSON body: %w", err))
		return false
	}
	return true
}

func writeControlError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}
