package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ListAuditEventsParams are the inputs of ListAuditEvents.
type ListAuditEventsParams struct {
	// Connection and Action filter the events; empty matches all.
	Connection string
	Action     AuditAction
	// PageSize and PageToken work as in ListSessionsParams.
	PageSize  int
	PageToken string
}

// AuditPage is one page of ListAuditEvents.
type AuditPage struct {
	Events []AuditEvent
	// NextPageToken is empty after the last page.
	NextPageToken string
}

// ListAuditEvents returns one page of audit events, newest first. Events of
// connections no longer configured are included.
//
// Errors: ErrInvalidArgument (naming page_size, page_token, action or
// connection), ErrStoreUnavailable.
func (b *Broker) ListAuditEvents(ctx context.Context, p ListAuditEventsParams) (*AuditPage, error) {
	st, err := b.adminStore()
	if err != nil {
		return nil, err
	}
	if len(p.Connection) > maxFilterLength {
		return nil, invalidArgument("connection", "it is %d bytes long; connection names have at most %d", len(p.Connection), maxFilterLength)
	}
	switch p.Action {
	case "", AuditPauseConnection, AuditResumeConnection, AuditDrainConnection, AuditForceSignOut, AuditSignOutFailed:
	default:
		return nil, invalidArgument("action", "%q is not an audit action", p.Action)
	}
	limit, err := pageSize(p.PageSize)
	if err != nil {
		return nil, err
	}

	cursor := pageCursor{Kind: cursorAudit, Connection: p.Connection, Action: string(p.Action)}
	if p.PageToken != "" {
		if cursor, err = decodePageToken(p.PageToken, cursor); err != nil {
			return nil, err
		}
	}
	events, err := st.AuditEvents(ctx, AuditEventsQuery{
		Connection: p.Connection,
		Action:     p.Action,
		BeforeID:   cursor.BeforeID,
		Limit:      limit + 1,
	})
	if err != nil {
		return nil, err
	}

	page := &AuditPage{Events: events}
	if len(events) > limit {
		page.Events = events[:limit]
		cursor.BeforeID = events[limit-1].ID
		page.NextPageToken = encodePageToken(cursor)
	}
	return page, nil
}

// recordSignOutFailure records the first failed attempt of a sign-out that
// an operator did not force; a forced sign-out gets the error through its
// context instead. Later attempts of the same sign-out are only
// logged, so a long Acumatica outage adds one event per session.
func (b *Broker) recordSignOutFailure(ctx context.Context, conn *Connection, seat *Seat, err error) {
	if failure, ok := ctx.Value(forcedSignOutKey{}).(*forcedSignOutFailure); ok {
		failure.err = err
		return
	}
	if seat.SignOutAttempts > 0 || b.admin.store == nil {
		return
	}
	b.recordAudit(ctx, AuditEvent{
		Action:     AuditSignOutFailed,
		Connection: conn.Name,
		SessionID:  seat.SessionID,
		Outcome:    AuditFailed,
		Detail: fmt.Sprintf("Acumatica did not confirm the sign-out (%s); the broker retries it until it is "+
			"confirmed or the session has certainly ended at %s", erpError(conn, "sign-out", err).Reason,
			seat.ReclaimAt.UTC().Format(time.RFC3339)),
	})
}

func (b *Broker) recordSignOuts(ctx context.Context, actor, reason string, results []SignOutResult) {
	for _, r := range results {
		var detail []string
		if reason != "" {
			detail = append(detail, "reason: "+reason)
		}
		detail = append(detail, "previous state "+string(r.PreviousState))
		switch {
		case r.RevokedLeaseID != "" && r.Holder != "":
			detail = append(detail, fmt.Sprintf("revoked lease %s of holder %q", r.RevokedLeaseID, r.Holder))
		case r.RevokedLeaseID != "":
			detail = append(detail, "revoked lease "+r.RevokedLeaseID)
		}
		outcome := AuditSucceeded
		if !r.Confirmed {
			outcome = AuditFailed
			detail = append(detail, r.Error)
		}
		b.recordAudit(ctx, AuditEvent{
			Actor:      actor,
			Action:     AuditForceSignOut,
			Connection: r.Connection,
			SessionID:  r.SessionID,
			Outcome:    outcome,
			Detail:     strings.Join(detail, "; "),
		})
	}
}

// recordFailure records an admin action that failed with err. Only the
// error's caller-safe message is stored. A request rejected as invalid
// named no valid target, so it is not recorded.
func (b *Broker) recordFailure(ctx context.Context, event AuditEvent, reason string, err error) {
	if errors.Is(err, ErrInvalidArgument) {
		return
	}
	msg := "internal error; the broker logged the details"
	var be *Error
	if errors.As(err, &be) {
		msg = be.Message
	}
	if reason != "" {
		msg = "reason: " + reason + "; " + msg
	}
	event.Outcome, event.Detail = AuditFailed, msg
	b.recordAudit(ctx, event)
}

// recordAudit stores an audit event. A failure to store it is logged, not
// returned: the action it records has already happened.
func (b *Broker) recordAudit(ctx context.Context, event AuditEvent) {
	event.Time = b.clock.Now()
	if err := b.admin.store.RecordAuditEvent(context.WithoutCancel(ctx), event); err != nil {
		b.logger.ErrorContext(ctx, "recording an audit event failed", "action", event.Action,
			"connection", event.Connection, "session_id", event.SessionID, "outcome", event.Outcome, "err", err)
	}
}
