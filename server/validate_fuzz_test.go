package server

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/acubroker/acubroker/broker"
	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// Request kinds of FuzzValidateRequest.
const (
	kindAcquire uint8 = iota
	kindRenew
	kindRelease
	kindSignOut
	kindCount
)

// validateSeed is one FuzzValidateRequest input: text is the connection or
// the lease id, depending on kind.
type validateSeed struct {
	kind      uint8
	text      string
	requestID string
	hasTTL    bool
	seconds   int64
	nanos     int32
	reason    int32
}

var validateSeeds = []validateSeed{
	{kind: kindAcquire, text: "erp"},
	{kind: kindAcquire, text: "erp", requestID: "job-42", hasTTL: true, seconds: 300},
	{kind: kindAcquire, text: ""},
	{kind: kindAcquire, text: strings.Repeat("c", maxConnectionLength+1)},
	{kind: kindAcquire, text: "erp\xff"},
	{kind: kindAcquire, text: "erp", requestID: strings.Repeat("r", maxRequestIDLength+1)},
	{kind: kindAcquire, text: "erp", requestID: "\xc3\x28"},
	{kind: kindAcquire, text: "erp", hasTTL: true, seconds: -1},
	{kind: kindAcquire, text: "erp", hasTTL: true, seconds: 1, nanos: -1},
	{kind: kindAcquire, text: "erp", hasTTL: true, seconds: 315_576_000_001},
	{kind: kindRenew, text: "8d3c1f0e-5b7a-4c2d-9e6f-1a2b3c4d5e6f", hasTTL: true, seconds: 60},
	{kind: kindRenew, text: ""},
	{kind: kindRenew, text: "not-a-uuid"},
	{kind: kindRenew, text: strings.Repeat("a", 65)},
	{kind: kindRenew, text: "{8d3c1f0e-5b7a-4c2d-9e6f-1a2b3c4d5e6f}"},
	{kind: kindRelease, text: "8d3c1f0e-5b7a-4c2d-9e6f-1a2b3c4d5e6f", reason: 2},
	{kind: kindRelease, text: "8d3c1f0e-5b7a-4c2d-9e6f-1a2b3c4d5e6f", reason: 99},
	{kind: kindSignOut, text: "8d3c1f0e-5b7a-4c2d-9e6f-1a2b3c4d5e6f"},
	{kind: kindSignOut, text: "\xff\xfe"},
}

func (s validateSeed) request() any {
	var ttl *durationpb.Duration
	if s.hasTTL {
		ttl = &durationpb.Duration{Seconds: s.seconds, Nanos: s.nanos}
	}
	switch s.kind % kindCount {
	case kindAcquire:
		return &acubrokerv1.AcquireSessionRequest{Connection: s.text, RequestId: s.requestID, LeaseTtl: ttl}
	case kindRenew:
		return &acubrokerv1.RenewLeaseRequest{LeaseId: s.text, LeaseTtl: ttl}
	case kindRelease:
		return &acubrokerv1.ReleaseSessionRequest{LeaseId: s.text, Reason: acubrokerv1.ReleaseReason(s.reason)}
	}
	return &acubrokerv1.SignOutRequest{LeaseId: s.text}
}

// FuzzValidateRequest checks that validateRequest never panics, that every
// request it accepts keeps the documented bounds, and that every rejection
// names a field and becomes an INVALID_ARGUMENT status with its details.
// The seed corpus runs in every `go test`.
func FuzzValidateRequest(f *testing.F) {
	for _, s := range validateSeeds {
		f.Add(s.kind, s.text, s.requestID, s.hasTTL, s.seconds, s.nanos, s.reason)
	}
	f.Fuzz(func(t *testing.T, kind uint8, text, requestID string, hasTTL bool, seconds int64, nanos int32, reason int32) {
		seed := validateSeed{kind: kind, text: text, requestID: requestID, hasTTL: hasTTL, seconds: seconds, nanos: nanos, reason: reason}
		req := seed.request()
		verr := validateRequest(req)
		if verr == nil {
			checkAccepted(t, req)
			return
		}
		checkRejection(t, verr)
	})
}

// checkAccepted fails when an accepted request breaks a bound.
func checkAccepted(t *testing.T, req any) {
	t.Helper()
	validTTL := func(d *durationpb.Duration) bool {
		return d == nil || (d.CheckValid() == nil && d.AsDuration() >= 0)
	}
	validLeaseID := func(id string) bool {
		_, err := uuid.Parse(id)
		return err == nil && len(id) <= 64
	}
	switch r := req.(type) {
	case *acubrokerv1.AcquireSessionRequest:
		c := r.GetConnection()
		if c == "" || len(c) > maxConnectionLength || !utf8.ValidString(c) {
			t.Errorf("accepted connection %q", c)
		}
		if id := r.GetRequestId(); len(id) > maxRequestIDLength || !utf8.ValidString(id) {
			t.Errorf("accepted request_id %q", id)
		}
		if !validTTL(r.GetLeaseTtl()) {
			t.Errorf("accepted lease_ttl %v", r.GetLeaseTtl())
		}
	case *acubrokerv1.RenewLeaseRequest:
		if !validLeaseID(r.GetLeaseId()) || !validTTL(r.GetLeaseTtl()) {
			t.Errorf("accepted lease_id %q with lease_ttl %v", r.GetLeaseId(), r.GetLeaseTtl())
		}
	case *acubrokerv1.ReleaseSessionRequest:
		if _, ok := acubrokerv1.ReleaseReason_name[int32(r.GetReason())]; !ok || !validLeaseID(r.GetLeaseId()) {
			t.Errorf("accepted lease_id %q with reason %d", r.GetLeaseId(), r.GetReason())
		}
	case *acubrokerv1.SignOutRequest:
		if !validLeaseID(r.GetLeaseId()) {
			t.Errorf("accepted lease_id %q", r.GetLeaseId())
		}
	}
}

// checkRejection fails unless verr names its field, has a valid UTF-8
// message of bounded size, and converts to a status with its details.
func checkRejection(t *testing.T, verr *broker.Error) {
	t.Helper()
	if verr.Reason != broker.ReasonInvalidArgument || verr.Field == "" {
		t.Fatalf("rejection %+v lacks the INVALID_ARGUMENT reason or a field", verr)
	}
	if !strings.HasPrefix(verr.Message, "invalid "+verr.Field+": ") {
		t.Errorf("message %q does not start with the field %s", verr.Message, verr.Field)
	}
	// A message that is not UTF-8 cannot be marshalled into the status
	// details, and a long one would echo large inputs back.
	if !utf8.ValidString(verr.Message) || len(verr.Message) > 512 {
		t.Errorf("message %q is not UTF-8 or longer than 512 bytes", verr.Message)
	}
	st := status.Convert(withDetails(codes.InvalidArgument, verr))
	if st.Code() != codes.InvalidArgument {
		t.Errorf("status code = %s, want InvalidArgument", st.Code())
	}
	var info *errdetails.ErrorInfo
	var badRequest *errdetails.BadRequest
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.BadRequest:
			badRequest = d
		}
	}
	if info.GetReason() != string(broker.ReasonInvalidArgument) {
		t.Errorf("status details lack the ErrorInfo reason INVALID_ARGUMENT: %v", st.Details())
	}
	if len(badRequest.GetFieldViolations()) != 1 || badRequest.GetFieldViolations()[0].GetField() != verr.Field {
		t.Errorf("status details lack a BadRequest for field %s: %v", verr.Field, st.Details())
	}
}
