-- Operator controls: a connection can be paused, and every admin action and
-- every failed sign-out is kept as an audit event.
--
-- The pause lives in the database, not in a replica's memory, so that every
-- broker replica stops granting leases of a paused connection: the claim and
-- dispatch statements check connections.paused in the same statement that
-- takes a seat.

ALTER TABLE connections
    ADD COLUMN paused       boolean NOT NULL DEFAULT false,
    -- When, by whom (the caller identity; empty without authentication) and
    -- why the connection was paused. Cleared on resume.
    ADD COLUMN paused_at    timestamptz,
    ADD COLUMN paused_by    text NOT NULL DEFAULT '',
    ADD COLUMN pause_reason text NOT NULL DEFAULT '';

-- One row per admin action (pause, resume, drain, forced sign-out of one
-- session) and per sign-out that failed at Acumatica on its first attempt.
-- Rows are never updated. Nothing deletes them: an operator prunes old rows
-- by occurred_at when the table grows too large.
CREATE TABLE audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    -- The caller identity of the admin call; empty for events the broker
    -- records by itself and while callers are not authenticated.
    actor       text NOT NULL DEFAULT '',
    action      text NOT NULL CHECK (action IN ('pause_connection', 'resume_connection', 'drain_connection',
                                               'force_sign_out', 'sign_out_failed')),
    connection  text NOT NULL DEFAULT '',
    -- The session acted on; empty for actions on a whole connection.
    session_id  text NOT NULL DEFAULT '',
    outcome     text NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    detail      text NOT NULL DEFAULT ''
);

-- ListAuditEvents pages newest first, by id, optionally for one connection.
CREATE INDEX audit_events_connection_id_idx ON audit_events (connection, id);
