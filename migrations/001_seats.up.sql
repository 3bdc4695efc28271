-- The broker's state: one row per seat of each connection's budget, the
-- history of leases, and the queue of callers waiting for a seat.
--
-- A seat row exists for every slot 0..max_sessions-1 of a connection, so the
-- number of sessions the broker can have open (or be opening, or be closing)
-- never exceeds the budget: every session lives in exactly one seat row.

-- signin_backoff is zero while sign-ins are allowed. After Acumatica
-- refuses a sign-in for its login limit (seats held outside the broker), it
-- is the current backoff: no new sign-in is tried until signin_blocked_until,
-- and then one probe at a time.
CREATE TABLE connections (
    name                 text PRIMARY KEY,
    max_sessions         integer NOT NULL CHECK (max_sessions > 0),
    signin_backoff       interval NOT NULL DEFAULT '0',
    signin_blocked_until timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- state is one of:
--   empty       no session; the seat is free.
--   signing_in  a sign-in is in flight or its outcome is unknown. The seat
--               stays counted until the sign-in is recorded, or until
--               reclaim_at, when any session it may have opened has timed
--               out at Acumatica.
--   idle        an open session in the pool, ready to lease.
--   leased      an open session held by lease_id until lease_expire_at.
--   signing_out a sign-out is decided but not yet confirmed by Acumatica.
--               The seat stays counted until it is, or until reclaim_at.
CREATE TABLE seats (
    connection         text NOT NULL REFERENCES connections (name) ON DELETE CASCADE,
    slot               integer NOT NULL CHECK (slot >= 0),
    state              text NOT NULL DEFAULT 'empty'
                       CHECK (state IN ('empty', 'signing_in', 'idle', 'leased', 'signing_out')),
    -- A slot at or above the connection's max_sessions; it takes no new
    -- session and is deleted once empty.
    retired            boolean NOT NULL DEFAULT false,

    session_id         uuid,
    session_opened_at  timestamptz,
    last_used_at       timestamptz,
    token_expire_at    timestamptz,
    -- The session's access token, refresh token and cookies, encoded by the
    -- broker. credentials_key_id names the key that sealed them ('' when the
    -- value is not encrypted).
    credentials        bytea,
    credentials_key_id text NOT NULL DEFAULT '',
    has_refresh_token  boolean NOT NULL DEFAULT false,
    -- The access token was handed to a holder whose lease expired: the
    -- next holder gets a new token, and this one is revoked first.
    token_stale        boolean NOT NULL DEFAULT false,

    lease_id           uuid,
    lease_acquired_at  timestamptz,
    lease_expire_at    timestamptz,

    reclaim_at         timestamptz,
    signout_attempts   integer NOT NULL DEFAULT 0,
    signout_next_at    timestamptz,
    signout_reason     text NOT NULL DEFAULT '',

    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, slot),
    CHECK ((state IN ('leased', 'idle')) = (session_id IS NOT NULL AND credentials IS NOT NULL)
           OR state IN ('signing_in', 'signing_out')),
    CHECK ((state = 'leased') = (lease_id IS NOT NULL AND lease_expire_at IS NOT NULL)
           OR state = 'signing_in')
);

-- Seat rows are rewritten on every acquire and release. Only the primary key
-- is indexed, so those updates stay HOT (no index entry is written); lookups
-- by lease go through the leases table. Leave room on each page for the new
-- row versions, and vacuum often.
ALTER TABLE seats SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.01);

-- One row per lease ever granted, kept for a while after it ends so that a
-- late renew, release or sign-out gets a precise error instead of NOT_FOUND,
-- and so that a retried acquire with the same request_id finds its lease.
CREATE TABLE leases (
    lease_id    uuid PRIMARY KEY,
    connection  text NOT NULL,
    slot        integer NOT NULL,
    session_id  uuid,
    holder      text NOT NULL DEFAULT '',
    request_id  text NOT NULL DEFAULT '',
    state       text NOT NULL DEFAULT 'active'
                CHECK (state IN ('active', 'released', 'retired', 'signed_out', 'expired', 'revoked', 'failed')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz
);

CREATE UNIQUE INDEX leases_request_id_key ON leases (connection, holder, request_id)
    WHERE request_id <> '';
CREATE INDEX leases_ended_at_idx ON leases (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX leases_active_holder_idx ON leases (connection, holder) WHERE state = 'active';

-- Callers waiting for a seat, served oldest first (by id) whichever replica
-- they called. Granting a seat deletes the row and gives the seat the
-- waiter's pre-chosen lease_id in the same transaction.
CREATE TABLE waiters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection  text NOT NULL REFERENCES connections (name) ON DELETE CASCADE,
    lease_id    uuid NOT NULL UNIQUE,
    holder      text NOT NULL DEFAULT '',
    request_id  text NOT NULL DEFAULT '',
    lease_ttl   interval NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    -- The waiter's replica pushes this forward every few seconds while the
    -- waiter waits. Past it the waiter's replica has died: it gets no seat,
    -- and the maintenance loop deletes it.
    expire_at   timestamptz NOT NULL
);

CREATE INDEX waiters_connection_id_idx ON waiters (connection, id);
CREATE UNIQUE INDEX waiters_request_id_key ON waiters (connection, holder, request_id)
    WHERE request_id <> '';
