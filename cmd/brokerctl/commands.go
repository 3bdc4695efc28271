package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	acubrokerv1 "github.com/acubroker/acubroker/gen/acubroker/v1"
)

// maxPageSize is the broker's largest page; brokerctl walks pages of it.
const maxPageSize = 500

func connectionsCommand(c *cli, args []string) error {
	fs := c.newFlagSet("connections")
	positional, err := c.parse(fs, args, 0, 1)
	if err != nil {
		return err
	}
	if err := c.connect(); err != nil {
		return err
	}
	ctx, cancel := c.callContext(0)
	defer cancel()
	if len(positional) == 1 {
		resp, err := c.client.GetConnection(ctx, &acubrokerv1.GetConnectionRequest{Connection: positional[0]})
		if err != nil {
			return c.callError("get connection "+positional[0], err)
		}
		if c.opts.output == "json" {
			return c.printJSON(resp)
		}
		return c.printConnection(resp.GetConnection())
	}
	resp, err := c.client.ListConnections(ctx, &acubrokerv1.ListConnectionsRequest{})
	if err != nil {
		return c.callError("list connections", err)
	}
	if c.opts.output == "json" {
		return c.printJSON(resp)
	}
	t := c.newTable("CONNECTION", "PAUSED", "MAX", "OPEN", "LEASED", "IDLE", "SIGNING-IN", "SIGNING-OUT", "EMPTY",
		"WAITERS", "OLDEST-WAIT", "SIGN-INS", "REFRESHES", "SIGN-OUTS", "LOGIN-LIMIT")
	for _, conn := range resp.GetConnections() {
		s, n := conn.GetSeats(), conn.GetCounters()
		t.row(conn.GetName(), yesNo(conn.GetPaused()), conn.GetMaxSessions(), s.GetOpen(), s.GetLeased(), s.GetIdle(),
			s.GetSigningIn(), s.GetSigningOut(), s.GetEmpty(), conn.GetWaiters(), formatDuration(conn.GetOldestWait()),
			n.GetSignIns(), n.GetRefreshes(), n.GetSignOuts(), n.GetLoginLimitErrors())
	}
	return t.flush()
}

func (c *cli) printConnection(conn *acubrokerv1.Connection) error {
	s, n := conn.GetSeats(), conn.GetCounters()
	paused := "no"
	if conn.GetPaused() {
		paused = "yes, since " + formatTime(conn.GetPauseTime())
		if conn.GetPausedBy() != "" {
			paused += fmt.Sprintf(" by %q", conn.GetPausedBy())
		}
		if conn.GetPauseReason() != "" {
			paused += ", reason: " + conn.GetPauseReason()
		}
	}
	t := c.newTable()
	t.row("Connection:", conn.GetName())
	t.row("Paused:", paused)
	t.row("Max sessions:", conn.GetMaxSessions())
	t.row("Seats:", fmt.Sprintf("%d open (%d leased, %d idle), %d signing in, %d signing out, %d empty",
		s.GetOpen(), s.GetLeased(), s.GetIdle(), s.GetSigningIn(), s.GetSigningOut(), s.GetEmpty()))
	t.row("Waiters:", fmt.Sprintf("%d, oldest waiting %s", conn.GetWaiters(), formatDuration(conn.GetOldestWait())))
	t.row("Lease TTL:", fmt.Sprintf("%s default, %s max",
		formatDuration(conn.GetDefaultLeaseTtl()), formatDuration(conn.GetMaxLeaseTtl())))
	t.row("Max wait:", formatDuration(conn.GetMaxWait()))
	t.row("Counted since:", formatTime(n.GetStartTime())+" (this replica)")
	t.row("Sign-ins:", fmt.Sprintf("%d ok, %d failed", n.GetSignIns(), n.GetSignInFailures()))
	t.row("Refreshes:", fmt.Sprintf("%d ok, %d failed", n.GetRefreshes(), n.GetRefreshFailures()))
	t.row("Sign-outs:", fmt.Sprintf("%d ok, %d failed", n.GetSignOuts(), n.GetSignOutFailures()))
	t.row("Login-limit errors:", n.GetLoginLimitErrors())
	return t.flush()
}

var sessionStateNames = map[string]acubrokerv1.SessionState{
	"idle":        acubrokerv1.SessionState_SESSION_STATE_IDLE,
	"leased":      acubrokerv1.SessionState_SESSION_STATE_LEASED,
	"signing_out": acubrokerv1.SessionState_SESSION_STATE_SIGNING_OUT,
}

func sessionsCommand(c *cli, args []string) error {
	fs := c.newFlagSet("sessions")
	connection := fs.String("connection", "", "list only the sessions of this connection")
	state := fs.String("state", "", "list only sessions in this state: idle, leased or signing_out")
	limit := fs.Int("limit", 0, "list at most this many sessions; 0 lists all")
	positional, err := c.parse(fs, args, 0, 1)
	if err != nil {
		return err
	}
	stateFilter, ok := sessionStateNames[*state]
	if *state != "" && !ok {
		fmt.Fprintf(c.stderr, "brokerctl sessions: invalid -state %q: use idle, leased or signing_out\n", *state)
		return errUsage
	}
	if *limit < 0 {
		fmt.Fprintf(c.stderr, "brokerctl sessions: invalid -limit %d: use 0 for all, or a positive number\n", *limit)
		return errUsage
	}
	if err := c.connect(); err != nil {
		return err
	}
	if len(positional) == 1 {
		return c.showSession(positional[0])
	}

	all := &acubrokerv1.ListSessionsResponse{}
	for {
		pageSize := maxPageSize
		if *limit > 0 {
			pageSize = min(pageSize, *limit-len(all.Sessions))
		}
		ctx, cancel := c.callContext(0)
		resp, err := c.client.ListSessions(ctx, &acubrokerv1.ListSessionsRequest{
			PageSize: int32(pageSize), PageToken: all.NextPageToken, Connection: *connection, State: stateFilter,
		})
		cancel()
		if err != nil {
			return c.callError("list sessions", err)
		}
		all.Sessions = append(all.Sessions, resp.GetSessions()...)
		all.NextPageToken = resp.GetNextPageToken()
		if all.NextPageToken == "" || (*limit > 0 && len(all.Sessions) >= *limit) {
			break
		}
	}
	if c.opts.output == "json" {
		return c.printJSON(all)
	}
	t := c.newTable("SESSION", "CONNECTION", "SLOT", "STATE", "HOLDER", "LEASE", "LEASE-EXPIRES", "LAST-USED", "TOKEN-EXPIRES")
	for _, s := range all.GetSessions() {
		t.row(s.GetSessionId(), s.GetConnection(), s.GetSlot(), enumName(s.GetState().String(), "SESSION_STATE_"),
			orDash(s.GetHolder()), orDash(s.GetLeaseId()), formatTime(s.GetLeaseExpireTime()),
			formatTime(s.GetLastUseTime()), formatTime(s.GetTokenExpireTime()))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if all.NextPageToken != "" {
		fmt.Fprintf(c.stderr, "more sessions exist; raise -limit to list them\n")
	}
	return nil
}

func (c *cli) showSession(sessionID string) error {
	ctx, cancel := c.callContext(0)
	defer cancel()
	resp, err := c.client.GetSession(ctx, &acubrokerv1.GetSessionRequest{SessionId: sessionID})
	if err != nil {
		return c.callError("get session "+sessionID, err)
	}
	if c.opts.output == "json" {
		return c.printJSON(resp)
	}
	s := resp.GetSession()
	t := c.newTable()
	t.row("Session:", s.GetSessionId())
	t.row("Connection:", fmt.Sprintf("%s (slot %d)", s.GetConnection(), s.GetSlot()))
	t.row("State:", enumName(s.GetState().String(), "SESSION_STATE_"))
	t.row("Holder:", orDash(s.GetHolder()))
	t.row("Lease:", orDash(s.GetLeaseId()))
	t.row("Lease acquired:", formatTime(s.GetLeaseAcquireTime()))
	t.row("Lease expires:", formatTime(s.GetLeaseExpireTime()))
	t.row("Opened:", formatTime(s.GetCreateTime()))
	t.row("Last used:", formatTime(s.GetLastUseTime()))
	t.row("Token expires:", formatTime(s.GetTokenExpireTime()))
	t.row("Refresh token:", yesNo(s.GetHasRefreshToken()))
	if s.GetState() == acubrokerv1.SessionState_SESSION_STATE_SIGNING_OUT {
		t.row("Sign-out:", fmt.Sprintf("%s, %d failed attempts", s.GetSignOutReason(), s.GetSignOutAttempts()))
	}
	return t.flush()
}

func signOutCommand(c *cli, args []string) error {
	fs := c.newFlagSet("sign-out")
	connection := fs.String("connection", "", "sign out every open session of this connection")
	reason := fs.String("reason", "", "why, recorded in the audit events")
	positional, err := c.parse(fs, args, 0, 1)
	if err != nil {
		return err
	}
	req := &acubrokerv1.ForceSignOutRequest{Reason: *reason}
	switch {
	case len(positional) == 1 && *connection == "":
		req.Target = &acubrokerv1.ForceSignOutRequest_SessionId{SessionId: positional[0]}
	case len(positional) == 0 && *connection != "":
		req.Target = &acubrokerv1.ForceSignOutRequest_Connection{Connection: *connection}
	default:
		fmt.Fprintln(c.stderr, "brokerctl sign-out: give either a SESSION_ID or -connection NAME")
		fs.Usage()
		return errUsage
	}
	if err := c.connect(); err != nil {
		return err
	}
	ctx, cancel := c.callContext(0)
	defer cancel()
	resp, err := c.client.ForceSignOut(ctx, req)
	if err != nil {
		return c.callError("sign out", err)
	}
	c.noteUnconfirmed(resp.GetResults())
	if c.opts.output == "json" {
		return c.printJSON(resp)
	}
	if len(resp.GetResults()) == 0 {
		fmt.Fprintf(c.stdout, "Connection %q has no open session to sign out.\n", *connection)
		return nil
	}
	return c.printSignOuts(resp.GetResults())
}

func (c *cli) noteUnconfirmed(results []*acubrokerv1.SignOutResult) {
	for _, r := range results {
		if !r.GetConfirmed() {
			c.unconfirmed = true
		}
	}
}

func (c *cli) printSignOuts(results []*acubrokerv1.SignOutResult) error {
	t := c.newTable("SESSION", "CONNECTION", "WAS", "REVOKED-LEASE", "HOLDER", "CONFIRMED", "ERROR")
	for _, r := range results {
		t.row(r.GetSessionId(), r.GetConnection(), enumName(r.GetPreviousState().String(), "SESSION_STATE_"),
			orDash(r.GetRevokedLeaseId()), orDash(r.GetHolder()), yesNo(r.GetConfirmed()), orDash(r.GetError()))
	}
	return t.flush()
}

func pauseCommand(c *cli, args []string) error {
	fs := c.newFlagSet("pause")
	reason := fs.String("reason", "", "why, shown with the connection and recorded in the audit events")
	positional, err := c.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if err := c.connect(); err != nil {
		return err
	}
	ctx, cancel := c.callContext(0)
	defer cancel()
	resp, err := c.client.PauseConnection(ctx, &acubrokerv1.PauseConnectionRequest{Connection: positional[0], Reason: *reason})
	if err != nil {
		return c.callError("pause "+positional[0], err)
	}
	if c.opts.output == "json" {
		return c.printJSON(resp)
	}
	fmt.Fprintf(c.stdout, "Paused connection %q: it grants no new lease until \"brokerctl resume %s\".\n\n",
		positional[0], positional[0])
	return c.printConnection(resp.GetConnection())
}

func resumeCommand(c *cli, args []string) error {
	fs := c.newFlagSet("resume")
	positional, err := c.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if err := c.connect(); err != nil {
		return err
	}
	ctx, cancel := c.callContext(0)
	defer cancel()
	resp, err := c.client.ResumeConnection(ctx, &acubrokerv1.ResumeConnectionRequest{Connection: positional[0]})
	if err != nil {
		return c.callError("resume "+positional[0], err)
	}
	if c.opts.output == "json" {
		return c.printJSON(resp)
	}
	fmt.Fprintf(c.stdout, "Resumed connection %q.\n\n", positional[0])
	return c.printConnection(resp.GetConnection())
}

func drainCommand(c *cli, args []string) error {
	fs := c.newFlagSet("drain")
	wait := fs.Duration("wait", time.Minute, "how long to wait for lease holders to release before revoking their leases, at most 1h")
	reason := fs.String("reason", "", "why, recorded with the pause and in the audit events")
	positional, err := c.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *wait < 0 {
		fmt.Fprintf(c.stderr, "brokerctl drain: invalid -wait %s: use 0 to revoke at once, or a positive duration\n", *wait)
		return errUsage
	}
	if err := c.connect(); err != nil {
		return err
	}
	ctx, cancel := c.callContext(*wait)
	defer cancel()
	resp, err := c.client.DrainConnection(ctx, &acubrokerv1.DrainConnectionRequest{
		Connection: positional[0], WaitTimeout: durationpb.New(*wait), Reason: *reason,
	})
	if err != nil {
		return c.callError("drain "+positional[0], err)
	}
	c.noteUnconfirmed(resp.GetSignOuts())
	if c.opts.output == "json" {
		return c.printJSON(resp)
	}
	waited := formatDuration(resp.GetWaited())
	if resp.GetWaitTimeoutReached() {
		waited += " (wait timeout reached: the leases still held were revoked)"
	}
	fmt.Fprintf(c.stdout, "Drained connection %q. It stays paused until \"brokerctl resume %s\".\n\n", positional[0], positional[0])
	t := c.newTable()
	t.row("Leases at start:", resp.GetLeasesAtStart())
	t.row("Waited:", waited)
	t.row("Sessions closed:", resp.GetSessionsClosed())
	t.row("Sessions pending:", resp.GetSessionsPending())
	if err := t.flush(); err != nil {
		return err
	}
	if len(resp.GetSignOuts()) == 0 {
		return nil
	}
	fmt.Fprintln(c.stdout)
	return c.printSignOuts(resp.GetSignOuts())
}

func auditCommand(c *cli, args []string) error {
	fs := c.newFlagSet("audit")
	connection := fs.String("connection", "", "list only the events of this connection")
	action := fs.String("action", "", "list only events of this action: "+strings.Join(auditActionNames(), ", "))
	limit := fs.Int("limit", 50, "list at most this many events, newest first; 0 lists all")
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	actionFilter := acubrokerv1.AuditAction_AUDIT_ACTION_UNSPECIFIED
	if *action != "" {
		v, ok := acubrokerv1.AuditAction_value["AUDIT_ACTION_"+strings.ToUpper(*action)]
		if !ok || v == 0 {
			fmt.Fprintf(c.stderr, "brokerctl audit: invalid -action %q: use one of %s\n", *action, strings.Join(auditActionNames(), ", "))
			return errUsage
		}
		actionFilter = acubrokerv1.AuditAction(v)
	}
	if *limit < 0 {
		fmt.Fprintf(c.stderr, "brokerctl audit: invalid -limit %d: use 0 for all, or a positive number\n", *limit)
		return errUsage
	}
	if err := c.connect(); err != nil {
		return err
	}

	all := &acubrokerv1.ListAuditEventsResponse{}
	for {
		pageSize := maxPageSize
		if *limit > 0 {
			pageSize = min(pageSize, *limit-len(all.Events))
		}
		ctx, cancel := c.callContext(0)
		resp, err := c.client.ListAuditEvents(ctx, &acubrokerv1.ListAuditEventsRequest{
			PageSize: int32(pageSize), PageToken: all.NextPageToken, Connection: *connection, Action: actionFilter,
		})
		cancel()
		if err != nil {
			return c.callError("list audit events", err)
		}
		all.Events = append(all.Events, resp.GetEvents()...)
		all.NextPageToken = resp.GetNextPageToken()
		if all.NextPageToken == "" || (*limit > 0 && len(all.Events) >= *limit) {
			break
		}
	}
	if c.opts.output == "json" {
		return c.printJSON(all)
	}
	t := c.newTable("ID", "TIME", "ACTOR", "ACTION", "CONNECTION", "SESSION", "OUTCOME", "DETAIL")
	for _, e := range all.GetEvents() {
		t.row(e.GetId(), formatTime(e.GetTime()), orDash(e.GetActor()), enumName(e.GetAction().String(), "AUDIT_ACTION_"),
			orDash(e.GetConnection()), orDash(e.GetSessionId()), enumName(e.GetOutcome().String(), "AUDIT_OUTCOME_"),
			orDash(e.GetDetail()))
	}
	return t.flush()
}

// auditActionNames returns the -action values, sorted.
func auditActionNames() []string {
	var names []string
	for name, v := range acubrokerv1.AuditAction_value {
		if v != 0 {
			names = append(names, enumName(name, "AUDIT_ACTION_"))
		}
	}
	sort.Strings(names)
	return names
}
