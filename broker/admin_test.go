package broker

import (
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/acubroker/acubroker/acumatica"
)

func TestPageTokenRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []pageCursor{
		{Kind: cursorSessions, AfterConnection: "erp", AfterSessionID: "7d4f1c2e-3b5a-4c6d-8e9f-0a1b2c3d4e5f"},
		{Kind: cursorSessions, Connection: "erp", State: "leased", AfterConnection: "erp",
			AfterSessionID: "00000000-0000-0000-0000-000000000001"},
		{Kind: cursorAudit, BeforeID: 42},
		{Kind: cursorAudit, Connection: "erp", Action: "pause_connection", BeforeID: 1},
	}
	for _, want := range tests {
		token := encodePageToken(want)
		if len(token) > maxPageTokenLength {
			t.Errorf("token of %+v is %d bytes, above the %d accepted", want, len(token), maxPageTokenLength)
		}
		filters := pageCursor{Kind: want.Kind, Connection: want.Connection, State: want.State, Action: want.Action}
		got, err := decodePageToken(token, filters)
		if err != nil {
			t.Errorf("decode %+v: %v", want, err)
			continue
		}
		if got != want {
			t.Errorf("decoded %+v, want %+v", got, want)
		}
	}
}

func TestPageTokenRejected(t *testing.T) {
	t.Parallel()
	sessions := pageCursor{Kind: cursorSessions, Connection: "erp"}
	valid := sessions
	valid.AfterConnection, valid.AfterSessionID = "erp", "7d4f1c2e-3b5a-4c6d-8e9f-0a1b2c3d4e5f"
	raw := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

	tests := []struct {
		name  string
		token string
		want  pageCursor
	}{
		{"not base64", "!!!", sessions},
		{"not JSON", raw("hello"), sessions},
		{"unknown field", raw(`{"k":"sessions","c":"erp","ac":"erp","as":"7d4f1c2e-3b5a-4c6d-8e9f-0a1b2c3d4e5f","x":1}`), sessions},
		{"trailing data", raw(`{"k":"sessions","c":"erp","ac":"erp","as":"7d4f1c2e-3b5a-4c6d-8e9f-0a1b2c3d4e5f"}{}`), sessions},
		{"other list", encodePageToken(pageCursor{Kind: cursorAudit, Connection: "erp", BeforeID: 3}), sessions},
		{"other connection filter", encodePageToken(valid), pageCursor{Kind: cursorSessions, Connection: "crm"}},
		{"other state filter", encodePageToken(valid), pageCursor{Kind: cursorSessions, Connection: "erp", State: "idle"}},
		{"session id not a UUID", encodePageToken(pageCursor{Kind: cursorSessions, Connection: "erp",
			AfterConnection: "erp", AfterSessionID: "'; DROP TABLE seats; --"}), sessions},
		{"no position", encodePageToken(sessions), sessions},
		{"audit id zero", encodePageToken(pageCursor{Kind: cursorAudit}), pageCursor{Kind: cursorAudit}},
		{"audit id negative", encodePageToken(pageCursor{Kind: cursorAudit, BeforeID: -5}), pageCursor{Kind: cursorAudit}},
		{"too long", encodePageToken(valid) + string(make([]byte, maxPageTokenLength)), sessions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodePageToken(tt.token, tt.want)
			var be *Error
			if !errors.As(err, &be) {
				t.Fatalf("decode returned %v, want an *Error", err)
			}
			if be.Reason != ReasonInvalidArgument || be.Field != "page_token" {
				t.Errorf("reason %s, field %q; want INVALID_ARGUMENT on page_token", be.Reason, be.Field)
			}
		})
	}
}

func FuzzDecodePageToken(f *testing.F) {
	f.Add(encodePageToken(pageCursor{Kind: cursorSessions, AfterConnection: "erp",
		AfterSessionID: "7d4f1c2e-3b5a-4c6d-8e9f-0a1b2c3d4e5f"}))
	f.Add(encodePageToken(pageCursor{Kind: cursorAudit, BeforeID: 9}))
	f.Add("")
	f.Add("e30")
	f.Fuzz(func(t *testing.T, token string) {
		for _, want := range []pageCursor{{Kind: cursorSessions}, {Kind: cursorAudit}} {
			c, err := decodePageToken(token, want)
			if err != nil {
				continue
			}
			// An accepted token matches the filters and re-encodes to a
			// token that decodes to the same cursor.
			if c.Kind != want.Kind || c.Connection != want.Connection || c.State != want.State || c.Action != want.Action {
				t.Fatalf("accepted %+v for filters %+v", c, want)
			}
			again, err := decodePageToken(encodePageToken(c), want)
			if err != nil || again != c {
				t.Fatalf("re-encoded cursor %+v decodes to %+v, %v", c, again, err)
			}
		}
	})
}

func TestPageSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		give, want int
		wantErr    bool
	}{
		{give: 0, want: DefaultPageSize},
		{give: 1, want: 1},
		{give: MaxPageSize, want: MaxPageSize},
		{give: MaxPageSize + 1, want: MaxPageSize},
		{give: -1, wantErr: true},
	}
	for _, tt := range tests {
		got, err := pageSize(tt.give)
		if (err != nil) != tt.wantErr {
			t.Errorf("pageSize(%d) error = %v, want error %t", tt.give, err, tt.wantErr)
		}
		if got != tt.want {
			t.Errorf("pageSize(%d) = %d, want %d", tt.give, got, tt.want)
		}
	}
}

// recordingObserver records the connections of the events it receives.
type recordingObserver struct {
	NopObserver
	signIns []string
}

func (o *recordingObserver) SignedIn(connection string, _ time.Duration, _ error) {
	o.signIns = append(o.signIns, connection)
}

func TestCountingObserver(t *testing.T) {
	t.Parallel()
	next := &recordingObserver{}
	counters := map[string]*connectionCounters{"erp": {}}
	o := countingObserver{next: next, counters: counters}
	loginLimit := &acumatica.Error{Kind: acumatica.ErrLoginLimit}

	o.SignedIn("erp", time.Millisecond, nil)
	o.SignedIn("erp", time.Millisecond, loginLimit)
	o.SignedIn("other", time.Millisecond, nil) // not configured: passed on, not counted
	o.Refreshed("erp", time.Millisecond, nil)
	o.Refreshed("erp", time.Millisecond, fmt.Errorf("refresh: %w", ErrERPUnavailable))
	o.SignedOut("erp", time.Millisecond, nil)
	o.SignedOut("erp", time.Millisecond, errors.New("timeout"))
	o.SignedOut("erp", time.Millisecond, errors.New("timeout"))

	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	got := counters["erp"].snapshot(since)
	want := ConnectionCounters{
		Since: since, SignIns: 1, SignInFailures: 1, Refreshes: 1, RefreshFailures: 1,
		SignOuts: 1, SignOutFailures: 2, LoginLimitErrors: 1,
	}
	if got != want {
		t.Errorf("counters = %+v, want %+v", got, want)
	}
	if fmt.Sprint(next.signIns) != "[erp erp other]" {
		t.Errorf("next observer saw sign-ins %v, want [erp erp other]", next.signIns)
	}
}
