package store

import "strings"

// SQL of the store, one constant per statement. Seats are always aliased s.
// Timestamps come from the broker's clock (@now), never from now(), so that
// expiry follows one clock.

// notifyChannel is the LISTEN/NOTIFY channel; the payload is a connection
// name whose seat was freed or granted.
const notifyChannel = "acubroker_seats"

const seatColumns = `s.connection, s.slot, s.state, coalesce(s.session_id::text, ''), s.session_opened_at,
	s.last_used_at, s.token_expire_at, s.credentials, s.credentials_key_id, s.has_refresh_token,
	coalesce(s.lease_id::text, ''), s.lease_acquired_at, s.lease_expire_at, s.reclaim_at, s.signout_attempts,
	s.token_stale`

// emptySeat is the SET list that returns a seat to empty.
const emptySeat = `state = 'empty', session_id = NULL, session_opened_at = NULL, token_expire_at = NULL,
	credentials = NULL, credentials_key_id = '', has_refresh_token = false, token_stale = false,
	lease_id = NULL, lease_expire_at = NULL, reclaim_at = NULL,
	signout_attempts = 0, signout_next_at = NULL, signout_reason = '', updated_at = @now`

// leaseSeat joins the seat a lease holds: seats carry no index on lease_id,
// so the lease's own row leads to the seat's primary key.
const leaseSeat = `FROM leases l
	WHERE l.lease_id = @lease_id AND s.connection = l.connection AND s.slot = l.slot AND s.lease_id = @lease_id`

const upsertConnection = `
INSERT INTO connections (name, max_sessions) VALUES (@name, @max_sessions)
ON CONFLICT (name) DO UPDATE SET max_sessions = EXCLUDED.max_sessions, updated_at = now()
WHERE connections.max_sessions <> EXCLUDED.max_sessions`

const createSeats = `
INSERT INTO seats (connection, slot)
SELECT @name, g FROM generate_series(0, @max_sessions - 1) g
ON CONFLICT DO NOTHING`

const retireSeats = `
UPDATE seats SET retired = (slot >= @max_sessions)
WHERE connection = @name AND retired <> (slot >= @max_sessions)`

const deleteRetiredSeats = `DELETE FROM seats WHERE retired AND state = 'empty'`

// signInAllowed is true unless the connection's sign-ins back off after a
// login-limit refusal; empty seats are then not handed out.
const signInAllowed = `NOT EXISTS (SELECT 1 FROM connections
		WHERE name = @connection AND signin_backoff > interval '0')`

// claimSeat prefers the most recently used idle seat (its session is the
// warmest), then an empty one, and takes none while callers wait.
const claimSeat = `
WITH candidate AS (
	SELECT connection, slot, state FROM seats
	WHERE connection = @connection AND NOT retired
		AND (state = 'idle' OR (state = 'empty' AND ` + signInAllowed + `))
		AND NOT EXISTS (SELECT 1 FROM waiters WHERE connection = @connection)
		AND ` + notPaused + `
	ORDER BY state = 'idle' DESC, last_used_at DESC NULLS LAST, slot
	LIMIT 1
	FOR UPDATE SKIP LOCKED
), claimed AS (
	UPDATE seats s SET
		state = CASE WHEN c.state = 'idle' THEN 'leased' ELSE 'signing_in' END,
		lease_id = @lease_id,
		lease_acquired_at = @now,
		lease_expire_at = @now::timestamptz + @lease_ttl::interval,
		reclaim_at = CASE WHEN c.state = 'idle' THEN NULL ELSE @reclaim_at::timestamptz END,
		last_used_at = CASE WHEN c.state = 'idle' THEN @now ELSE s.last_used_at END,
		updated_at = @now
	FROM candidate c
	WHERE s.connection = c.connection AND s.slot = c.slot
	RETURNING s.*
), recorded AS (
	INSERT INTO leases (lease_id, connection, slot, session_id, holder, request_id, created_at)
	SELECT lease_id, connection, slot, session_id, @holder, @request_id, @now FROM claimed
)
SELECT ` + seatColumns + ` FROM claimed s`

// enqueue adds a waiter unless max_queue (when not 0) already wait, and
// returns the waiter's 1-based position and whether it was added. Under
// concurrent acquires the cap may be passed by the few in flight.
const enqueue = `
WITH ahead AS (
	SELECT count(*) AS n FROM waiters WHERE connection = @connection
), queued AS (
	INSERT INTO waiters (connection, lease_id, holder, request_id, lease_ttl, enqueued_at, expire_at)
	SELECT @connection, @lease_id, @holder, @request_id, @lease_ttl, @now, @expire_at
	FROM ahead WHERE @max_queue::integer = 0 OR ahead.n < @max_queue::integer
	RETURNING id
)
SELECT ahead.n + 1, EXISTS (SELECT 1 FROM queued) FROM ahead`

// lockHolder serialises the acquires of one holder on one connection for
// the rest of the transaction, so that its quota check cannot race.
const lockHolder = `SELECT pg_advisory_xact_lock(hashtextextended(@connection || '/' || @holder, 0))`

const holderLeases = `
SELECT (SELECT count(*) FROM leases WHERE connection = @connection AND holder = @holder AND state = 'active')
     + (SELECT count(*) FROM waiters WHERE connection = @connection AND holder = @holder)`

const dequeue = `DELETE FROM waiters WHERE lease_id = @lease_id`

// dispatchOne grants one free seat to the oldest waiter of a connection. The
// waiter's row goes, and the seat takes its lease, in one statement.
const dispatchOne = `
WITH waiter AS (
	SELECT id FROM waiters WHERE connection = @connection AND expire_at > @now
	ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
), seat AS (
	-- Without a waiter no seat is looked at, so a pass with nobody
	-- waiting (one runs with every release) sorts and locks nothing.
	SELECT connection, slot, state FROM seats
	WHERE connection = @connection AND NOT retired
		AND (state = 'idle' OR (state = 'empty' AND ` + signInAllowed + `))
		AND ` + notPaused + `
		AND EXISTS (SELECT 1 FROM waiter)
	ORDER BY state = 'idle' DESC, last_used_at DESC NULLS LAST, slot
	LIMIT 1 FOR UPDATE SKIP LOCKED
), granted AS (
	DELETE FROM waiters w USING waiter, seat WHERE w.id = waiter.id
	RETURNING w.lease_id, w.holder, w.request_id, w.lease_ttl
), assigned AS (
	UPDATE seats s SET
		state = CASE WHEN seat.state = 'idle' THEN 'leased' ELSE 'signing_in' END,
		lease_id = g.lease_id,
		lease_acquired_at = @now,
		lease_expire_at = @now::timestamptz + least(g.lease_ttl, @claim_within::interval),
		reclaim_at = NULL,
		last_used_at = CASE WHEN seat.state = 'idle' THEN @now ELSE s.last_used_at END,
		updated_at = @now
	FROM seat, granted g
	WHERE s.connection = seat.connection AND s.slot = seat.slot
	RETURNING s.connection, s.slot, s.lease_id, s.session_id
), recorded AS (
	INSERT INTO leases (lease_id, connection, slot, session_id, holder, request_id, created_at)
	SELECT a.lease_id, a.connection, a.slot, a.session_id, g.holder, g.request_id, @now
	FROM assigned a JOIN granted g ON g.lease_id = a.lease_id
)
SELECT pg_notify('` + notifyChannel + `', connection) FROM assigned`

const waitingConnections = `SELECT DISTINCT connection FROM waiters`

const seatByLease = `SELECT ` + seatColumns + `, l.holder FROM seats s, leases l
	WHERE l.lease_id = @lease_id AND s.connection = l.connection AND s.slot = l.slot AND s.lease_id = @lease_id`

const leaseColumns = `lease_id::text, connection, slot, coalesce(session_id::text, ''), holder, request_id, state,
	created_at, ended_at`

const leaseByID = `SELECT ` + leaseColumns + ` FROM leases WHERE lease_id = @lease_id`

const leaseByRequestID = `SELECT ` + leaseColumns + ` FROM leases
	WHERE connection = @connection AND holder = @holder AND request_id = @request_id`

const beginSignIn = `
UPDATE seats s SET state = 'signing_in', reclaim_at = @reclaim_at,
	session_id = NULL, session_opened_at = NULL, token_expire_at = NULL,
	credentials = NULL, credentials_key_id = '', has_refresh_token = false, updated_at = @now
` + leaseSeat + ` AND s.state IN ('signing_in', 'leased')
RETURNING ` + seatColumns

const completeSignIn = `
WITH opened AS (
	UPDATE seats s SET state = 'leased', session_id = @session_id, session_opened_at = @now,
		last_used_at = @now, token_expire_at = @token_expire_at, credentials = @credentials,
		credentials_key_id = @credentials_key_id, has_refresh_token = @has_refresh_token,
		lease_expire_at = @now::timestamptz + @lease_ttl::interval, reclaim_at = NULL, updated_at = @now
	` + leaseSeat + ` AND s.state = 'signing_in'
	RETURNING s.*
), recorded AS (
	UPDATE leases SET session_id = @session_id
	WHERE lease_id = @lease_id AND EXISTS (SELECT 1 FROM opened)
)
SELECT ` + seatColumns + ` FROM opened s`

// failSignIn empties the seat of a sign-in that certainly opened no session.
const failSignIn = `
UPDATE seats s SET ` + emptySeat + `
` + leaseSeat + ` AND s.state = 'signing_in'
RETURNING s.connection`

// abandonSignIn keeps the seat of a sign-in with an unknown outcome counted
// until its reclaim_at, detached from the lease.
const abandonSignIn = `
UPDATE seats s SET lease_id = NULL, lease_expire_at = NULL, updated_at = @now
` + leaseSeat + ` AND s.state = 'signing_in'`

// endLease ends a lease. A failed lease (its acquire returned an error)
// gives up its request_id, so that a retry of that acquire starts anew.
const endLease = `UPDATE leases SET state = @state, ended_at = @now,
	request_id = CASE WHEN @state = 'failed' THEN '' ELSE request_id END
WHERE lease_id = @lease_id AND state = 'active'`

const updateCredentials = `
UPDATE seats s SET credentials = @credentials, credentials_key_id = @credentials_key_id,
	has_refresh_token = @has_refresh_token, token_expire_at = @token_expire_at, token_stale = false, updated_at = @now
` + leaseSeat + ` AND s.state = 'leased'
RETURNING ` + seatColumns

const renewLease = `
UPDATE seats s SET lease_expire_at = @now::timestamptz + @lease_ttl::interval, last_used_at = @now, updated_at = @now
` + leaseSeat + ` AND s.state = 'leased' AND s.lease_expire_at > @now
RETURNING ` + seatColumns

// releaseLease puts a live lease's seat back to idle and ends the lease in
// one statement. With @check_holder it matches only a lease of @holder.
//
// It notifies listeners only when callers wait for the connection. Postgres
// serialises the commits of transactions that send a notification, so a
// notification on every release would halve the release rate at 16
// concurrent callers (measured with pgbench on 2 cores, fsync on). A waiter
// that joins the queue while this statement runs is not seen here; it finds
// the seat by the grant passes it runs after joining (see broker.wait).
const releaseLease = `
WITH released AS (
	UPDATE seats s SET state = 'idle', lease_id = NULL, lease_expire_at = NULL, last_used_at = @now, updated_at = @now
	` + leaseSeat + ` AND s.state = 'leased' AND s.lease_expire_at > @now
		AND (NOT @check_holder::boolean OR l.holder = @holder)
	RETURNING s.*
), ended AS (
	UPDATE leases SET state = @state, ended_at = @now,
		request_id = CASE WHEN @state = 'failed' THEN '' ELSE request_id END
	WHERE lease_id = @lease_id AND state = 'active' AND EXISTS (SELECT 1 FROM released)
)
SELECT ` + seatColumns + ` FROM released s
LEFT JOIN LATERAL (
	SELECT pg_notify('` + notifyChannel + `', s.connection)
	WHERE EXISTS (SELECT 1 FROM waiters w WHERE w.connection = s.connection)
) notified ON true`

// dispatchAfterRelease is dispatchOne for the connection of lease
// @lease_id. Sent in one batch with releaseLease, it hands the released seat
// to the oldest waiter in the same implicit transaction.
var dispatchAfterRelease = strings.ReplaceAll(dispatchOne, "@connection",
	"(SELECT connection FROM leases WHERE lease_id = @lease_id)")

const beginSignOut = `
UPDATE seats s SET state = 'signing_out', lease_id = NULL, lease_expire_at = NULL, last_used_at = @now,
	reclaim_at = @reclaim_at, signout_attempts = 0, signout_next_at = @next_attempt_at,
	signout_reason = @reason, updated_at = @now
` + leaseSeat + ` AND s.state = 'leased' AND s.lease_expire_at > @now
RETURNING ` + seatColumns

const finishSignOut = `
UPDATE seats s SET ` + emptySeat + `
WHERE connection = @connection AND slot = @slot AND state = 'signing_out' AND session_id = @session_id`

const retrySignOut = `
UPDATE seats SET signout_attempts = signout_attempts + 1, signout_next_at = @next_attempt_at
WHERE connection = @connection AND slot = @slot AND state = 'signing_out' AND session_id = @session_id`

const claimDueSignOuts = `
WITH due AS (
	SELECT connection, slot FROM seats
	WHERE state = 'signing_out' AND signout_next_at <= @now
	ORDER BY signout_next_at LIMIT @limit
	FOR UPDATE SKIP LOCKED
)
UPDATE seats s SET signout_next_at = @now::timestamptz + @lock_for::interval
FROM due WHERE s.connection = due.connection AND s.slot = due.slot
RETURNING ` + seatColumns

// expireLeases returns the seats of leases past their expiry to idle; their
// holders may have used the sessions until now.
const expireLeases = `
WITH due AS (
	SELECT connection, slot, lease_id FROM seats
	WHERE state = 'leased' AND lease_expire_at <= @now
	FOR UPDATE SKIP LOCKED
), freed AS (
	UPDATE seats s SET state = 'idle', lease_id = NULL, lease_expire_at = NULL, last_used_at = @now,
		token_stale = true, updated_at = @now
	FROM due WHERE s.connection = due.connection AND s.slot = due.slot
	RETURNING s.connection
), ended AS (
	UPDATE leases l SET state = 'expired', ended_at = @now
	FROM due WHERE l.lease_id = due.lease_id AND l.state = 'active'
)
SELECT pg_notify('` + notifyChannel + `', connection) FROM (SELECT DISTINCT connection FROM freed) f`

// reclaimSeats empties seats whose sessions have certainly ended at
// Acumatica: sign-ins never recorded and sign-outs never confirmed past
// their reclaim_at, grants to waiters that never began their sign-in, and
// idle sessions without a refresh token past their token's expiry.
const reclaimSeats = `
WITH due AS (
	SELECT connection, slot, lease_id FROM seats
	WHERE (state IN ('signing_in', 'signing_out') AND reclaim_at <= @now)
		OR (state = 'signing_in' AND reclaim_at IS NULL AND lease_expire_at <= @now)
		OR (state = 'idle' AND NOT has_refresh_token AND token_expire_at + @grace::interval <= @now)
	FOR UPDATE SKIP LOCKED
), freed AS (
	UPDATE seats s SET ` + emptySeat + `
	FROM due WHERE s.connection = due.connection AND s.slot = due.slot
	RETURNING s.connection
), ended AS (
	UPDATE leases l SET state = 'failed', ended_at = @now, request_id = ''
	FROM due WHERE l.lease_id = due.lease_id AND l.state = 'active'
)
SELECT pg_notify('` + notifyChannel + `', connection) FROM (SELECT DISTINCT connection FROM freed) f`

// expireWaiters deletes waiters whose replica stopped extending them a while
// ago; a waiter only briefly late keeps its place.
const expireWaiters = `DELETE FROM waiters WHERE expire_at + interval '30 seconds' <= @now`

const extendWaiters = `UPDATE waiters SET expire_at = @expire_at WHERE lease_id = ANY(@lease_ids::uuid[])`

const signOutIdle = `
WITH due AS (
	SELECT connection, slot FROM seats
	WHERE connection = @connection AND state = 'idle' AND last_used_at < @idle_since
	FOR UPDATE SKIP LOCKED
)
UPDATE seats s SET state = 'signing_out', reclaim_at = s.last_used_at + @idle_timeout::interval,
	signout_attempts = 0, signout_next_at = @now, signout_reason = 'idle', updated_at = @now
FROM due WHERE s.connection = due.connection AND s.slot = due.slot`

const pruneLeases = `DELETE FROM leases WHERE ended_at < @before`

const notifyConnection = `SELECT pg_notify('` + notifyChannel + `', @connection)`

// backOffSignIns starts or doubles a connection's sign-in backoff, between
// @initial and @max.
const backOffSignIns = `
UPDATE connections SET
	signin_backoff = least(greatest(signin_backoff * 2, @initial::interval), @max::interval),
	signin_blocked_until = @now::timestamptz
		+ least(greatest(signin_backoff * 2, @initial::interval), @max::interval)
WHERE name = @connection
RETURNING signin_blocked_until`

// claimProbe lets one replica try a sign-in once a backoff interval ends:
// it pushes the interval's end forward and returns a row only to the
// replica whose update won.
const claimProbes = `
UPDATE connections SET signin_blocked_until = @now::timestamptz + signin_backoff
WHERE signin_backoff > interval '0' AND signin_blocked_until <= @now
RETURNING name`

// claimProbeSeat claims an empty seat for a probe sign-in, bypassing the
// backoff that keeps other acquires away from empty seats.
const claimProbeSeat = `
WITH candidate AS (
	SELECT connection, slot FROM seats
	WHERE connection = @connection AND state = 'empty' AND NOT retired AND ` + notPaused + `
	ORDER BY slot LIMIT 1
	FOR UPDATE SKIP LOCKED
), claimed AS (
	UPDATE seats s SET state = 'signing_in', lease_id = @lease_id, lease_acquired_at = @now,
		lease_expire_at = @now::timestamptz + @lease_ttl::interval, reclaim_at = @reclaim_at, updated_at = @now
	FROM candidate c WHERE s.connection = c.connection AND s.slot = c.slot
	RETURNING s.*
), recorded AS (
	INSERT INTO leases (lease_id, connection, slot, holder, created_at)
	SELECT lease_id, connection, slot, @holder, @now FROM claimed
)
SELECT ` + seatColumns + ` FROM claimed s`

const endSignInBackoff = `
UPDATE connections SET signin_backoff = '0', signin_blocked_until = NULL
WHERE name = @connection AND signin_backoff > interval '0'`

const seatSummary = `
SELECT s.state, count(*), coalesce(c.signin_blocked_until, '-infinity'::timestamptz), c.signin_backoff > interval '0',
	c.paused
FROM seats s JOIN connections c ON c.name = s.connection
WHERE s.connection = @connection AND NOT s.retired
GROUP BY s.state, c.signin_blocked_until, c.signin_backoff, c.paused`

const openSessions = `SELECT count(*) FROM seats WHERE connection = @connection AND state IN ('idle', 'leased')`
