package broker

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
)

func pageSize(n int) (int, error) {
	switch {
	case n < 0:
		return 0, invalidArgument("page_size", "%d is negative; use 1 to %d, or 0 for %d", n, MaxPageSize, DefaultPageSize)
	case n == 0:
		return DefaultPageSize, nil
	}
	return min(n, MaxPageSize), nil
}

// Kinds of page cursors, so that a token of one list is rejected by another.
const (
	cursorSessions = "sessions"
	cursorAudit    = "audit"
)

// pageCursor is the decoded form of a page token: the list and filters of
// the request that issued it, and the position after its last row. A token
// is the cursor as JSON, base64url-encoded; it is opaque to callers.
type pageCursor struct {
	Kind       string `json:"k"`
	Connection string `json:"c,omitempty"`
	State      string `json:"s,omitempty"`
	Action     string `json:"a,omitempty"`
	// AfterConnection and AfterSessionID are the last session of the
	// previous page; BeforeID is the last audit event's id.
	AfterConnection string `json:"ac,omitempty"`
	AfterSessionID  string `json:"as,omitempty"`
	BeforeID        int64  `json:"b,omitempty"`
}

func encodePageToken(c pageCursor) string {
	data, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("broker: encode page cursor: %v", err)) // only strings and an int64
	}
	return base64.RawURLEncoding.EncodeToString(data)
}

// decodePageToken decodes token and checks that it was issued for the same
// list and filters as want, and that its position is well formed.
func decodePageToken(token string, want pageCursor) (pageCursor, error) {
	notIssued := invalidArgument("page_token", "it is not a token that the broker issued; pass next_page_token "+
		"unchanged, or leave page_token empty for the first page")
	if len(token) > maxPageTokenLength {
		return want, notIssued
	}
	data, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return want, notIssued
	}
	var c pageCursor
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || dec.More() {
		return want, notIssued
	}
	if c.Kind != want.Kind {
		return want, notIssued
	}

	if c.Connection != want.Connection || c.State != want.State || c.Action != want.Action {
		filters := fmt.Sprintf("connection %q, state %q", c.Connection, c.State)
		if c.Kind == cursorAudit {
			filters = fmt.Sprintf("connection %q, action %q", c.Connection, c.Action)
		}
		return want, invalidArgument("page_token", "it was issued for other filters (%s); repeat the filters "+
			"of the request that returned it, or leave page_token empty to start over", filters)
	}

	switch c.Kind {
	case cursorSessions:
		if _, err := uuid.Parse(c.AfterSessionID); err != nil || c.AfterConnection == "" ||
			len(c.AfterConnection) > maxFilterLength || c.BeforeID != 0 {
			return want, notIssued
		}
	case cursorAudit:
		if c.BeforeID <= 0 || c.AfterConnection != "" || c.AfterSessionID != "" {
			return want, notIssued
		}
	}
	return c, nil
}
