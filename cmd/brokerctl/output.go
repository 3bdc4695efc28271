package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// table writes rows as aligned columns.
type table struct {
	w *tabwriter.Writer
}

// newTable starts a table, with a header row when header is not empty.
func (c *cli) newTable(header ...string) *table {
	t := &table{w: tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		fmt.Fprintln(t.w, strings.Join(header, "\t"))
	}
	return t
}

func (t *table) row(cells ...any) {
	parts := make([]string, len(cells))
	for i, cell := range cells {
		// Tabs and newlines in a value would break the columns.
		parts[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(fmt.Sprint(cell))
	}
	fmt.Fprintln(t.w, strings.Join(parts, "\t"))
}

func (t *table) flush() error { return t.w.Flush() }

// printJSON writes m as indented protobuf JSON.
func (c *cli) printJSON(m proto.Message) error {
	data, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "%s\n", data)
	return err
}

// callError explains a failed call: how to reach the broker when it cannot
// be reached, else the broker's message with the status code and reason.
func (c *cli) callError(what string, err error) error {
	st := status.Convert(err)
	var (
		reason string
		delay  time.Duration
	)
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			reason = d.GetReason()
		case *errdetails.RetryInfo:
			delay = d.GetRetryDelay().AsDuration()
		}
	}
	switch {
	case reason == "" && st.Code() == codes.Unavailable:
		return fmt.Errorf("cannot reach the broker at %s: %s; check that the broker is running (broker serve), "+
			"that -addr or BROKERCTL_ADDR is its gRPC listen address, and whether it expects TLS (-tls)",
			c.opts.addr, st.Message())
	case reason == "" && st.Code() == codes.DeadlineExceeded:
		return fmt.Errorf("%s: the broker at %s did not respond within the deadline; raise -timeout, "+
			"or check the broker's log", what, c.opts.addr)
	case st.Code() == codes.Unauthenticated:
		return fmt.Errorf("%s: the broker did not accept the credentials: %s (reason %s); set BROKERCTL_API_KEY "+
			"or -api-key-file to the API key of a caller with the admin role, or use its client certificate",
			what, st.Message(), orDash(reason))
	case st.Code() == codes.PermissionDenied:
		return fmt.Errorf("%s: %s (reason %s); AdminService needs a caller with the admin role",
			what, st.Message(), orDash(reason))
	case st.Code() == codes.Unimplemented:
		return fmt.Errorf("%s: the server at %s does not serve acubroker.v1.AdminService (%s); "+
			"check -addr, or upgrade the broker", what, c.opts.addr, st.Message())
	}
	msg := fmt.Sprintf("%s: %s (code %s", what, st.Message(), codeName(st.Code()))
	if reason != "" {
		msg += ", reason " + reason
	}
	msg += ")"
	if delay > 0 {
		msg += fmt.Sprintf("; retry after %s", delay)
	}
	return errors.New(msg)
}

// codeName returns a gRPC code as the proto enum spells it, for example
// FAILED_PRECONDITION.
func codeName(code codes.Code) string {
	var b strings.Builder
	for i, r := range code.String() {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

func formatDuration(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	v := d.AsDuration()
	if v < time.Second {
		return v.Round(time.Millisecond).String()
	}
	return v.Round(100 * time.Millisecond).String()
}

// enumName turns an enum value name into the lower-case word users type,
// for example SESSION_STATE_SIGNING_OUT into signing_out.
func enumName(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
