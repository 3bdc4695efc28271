package store

// SQL of the admin operations, one constant per statement, written like
// queries.go: seats are aliased s and timestamps come from @now.

// notPaused is the condition, added to every statement that grants a seat,
// that @connection is not paused. Checking it in the granting statement
// itself means a pause is honoured by every replica from the moment it
// commits.
const notPaused = `NOT EXISTS (SELECT 1 FROM connections WHERE name = @connection AND paused)`

const connectionPaused = `SELECT paused FROM connections WHERE name = @connection`

// connectionStats counts each connection's seats by state and its live
// waiters. Waiters past expire_at have given up and are not counted.
const connectionStats = `
SELECT c.name, c.max_sessions, c.paused, c.paused_at, c.paused_by, c.pause_reason,
	count(s.slot) FILTER (WHERE s.state = 'leased'),
	count(s.slot) FILTER (WHERE s.state = 'idle'),
	count(s.slot) FILTER (WHERE s.state = 'signing_in'),
	count(s.slot) FILTER (WHERE s.state = 'signing_out'),
	count(s.slot) FILTER (WHERE s.state = 'empty' AND NOT s.retired),
	count(s.slot) FILTER (WHERE s.lease_id IS NOT NULL),
	(SELECT count(*) FROM waiters w WHERE w.connection = c.name AND w.expire_at > @now),
	(SELECT min(w.enqueued_at) FROM waiters w WHERE w.connection = c.name AND w.expire_at > @now)
FROM connections c LEFT JOIN seats s ON s.connection = c.name
WHERE c.name = ANY(@names::text[])
GROUP BY c.name
ORDER BY c.name`

// sessionColumns are the columns of broker.SessionInfo, from seats s joined
// with the lease l that holds the seat. A seat keeps lease_acquired_at after
// its lease ends, so it is read only while the seat is leased.
const sessionColumns = `s.connection, s.slot, s.state, s.session_id::text, coalesce(l.holder, ''),
	coalesce(s.lease_id::text, ''), CASE WHEN s.state = 'leased' THEN s.lease_acquired_at END, s.lease_expire_at,
	s.session_opened_at, s.last_used_at,
	s.token_expire_at, s.has_refresh_token, s.signout_reason, s.signout_attempts`

// sessions pages through the open sessions in (connection, session_id)
// order. Seats of signing_in state have no session yet and are left out.
// The first page starts after the empty connection name and the nil UUID,
// which sort before every row because connection names are never empty.
const sessions = `
SELECT ` + sessionColumns + `
FROM seats s LEFT JOIN leases l ON l.lease_id = s.lease_id
WHERE s.session_id IS NOT NULL AND s.state IN ('idle', 'leased', 'signing_out')
	AND (@connection = '' OR s.connection = @connection)
	AND (@state = '' OR s.state = @state)
	AND (s.connection, s.session_id) > (@after_connection, @after_session_id::uuid)
ORDER BY s.connection, s.session_id
LIMIT @limit`

const sessionByID = `
SELECT ` + sessionColumns + `
FROM seats s LEFT JOIN leases l ON l.lease_id = s.lease_id
WHERE s.session_id = @session_id::uuid AND s.state IN ('idle', 'leased', 'signing_out')`

// setPaused pauses or resumes a connection. It returns no row when the
// connection does not exist, else whether its state changed. A pause of a
// paused connection keeps the first pause's time, actor and reason.
const setPaused = `
WITH target AS (
	SELECT name, paused FROM connections WHERE name = @connection FOR UPDATE
), changed AS (
	UPDATE connections c SET paused = @paused,
		paused_at = CASE WHEN @paused THEN @now::timestamptz END,
		paused_by = CASE WHEN @paused THEN @paused_by ELSE '' END,
		pause_reason = CASE WHEN @paused THEN @pause_reason ELSE '' END,
		updated_at = @now
	FROM target t WHERE c.name = t.name AND t.paused <> @paused
)
SELECT t.paused <> @paused FROM target t`

// beginForcedSignOut moves the targeted seats with an open session to
// signing_out and revokes their leases, in one statement. A seat already
// signing out keeps its reclaim_at, attempts and reason. The others get
// reclaim_at as Broker.SignOut computes it: the token's expiry without a
// refresh token, else now plus Acumatica's idle timeout. FOR UPDATE (not
// SKIP LOCKED) waits for a release or renew in progress on the seat, then
// re-checks the row.
const beginForcedSignOut = `
WITH target AS (
	SELECT connection, slot, state, lease_id FROM seats
	WHERE connection = @connection AND session_id IS NOT NULL
		AND state IN ('leased', 'idle', 'signing_out')
		AND (@session_id = '' OR session_id::text = @session_id)
	FOR UPDATE
), revoked AS (
	UPDATE leases l SET state = 'revoked', ended_at = @now
	FROM target t WHERE l.lease_id = t.lease_id AND l.state = 'active'
	RETURNING l.lease_id, l.holder
), moved AS (
	UPDATE seats s SET state = 'signing_out', lease_id = NULL, lease_expire_at = NULL,
		last_used_at = CASE WHEN t.state = 'leased' THEN @now ELSE s.last_used_at END,
		reclaim_at = CASE
			WHEN t.state = 'signing_out' THEN s.reclaim_at
			WHEN NOT s.has_refresh_token AND s.token_expire_at IS NOT NULL THEN s.token_expire_at
			ELSE @now::timestamptz + @idle_timeout::interval END,
		signout_attempts = CASE WHEN t.state = 'signing_out' THEN s.signout_attempts ELSE 0 END,
		signout_reason = CASE WHEN t.state = 'signing_out' THEN s.signout_reason ELSE 'forced' END,
		signout_next_at = @next_attempt_at, updated_at = @now
	FROM target t WHERE s.connection = t.connection AND s.slot = t.slot
	RETURNING s.*, t.state AS previous_state, t.lease_id AS previous_lease_id
)
SELECT ` + seatColumns + `, s.previous_state, coalesce(r.lease_id::text, ''), coalesce(r.holder, '')
FROM moved s LEFT JOIN revoked r ON r.lease_id = s.previous_lease_id
ORDER BY s.slot`

const insertAuditEvent = `
INSERT INTO audit_events (occurred_at, actor, action, connection, session_id, outcome, detail)
VALUES (@occurred_at, @actor, @action, @connection, @session_id, @outcome, @detail)`

// auditEvents pages through the audit events, newest first.
const auditEvents = `
SELECT id, occurred_at, actor, action, connection, session_id, outcome, detail
FROM audit_events
WHERE (@connection = '' OR connection = @connection)
	AND (@action = '' OR action = @action)
	AND (@before_id::bigint = 0 OR id < @before_id::bigint)
ORDER BY id DESC
LIMIT @limit`
