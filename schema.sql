-- threadline schema, version 2: the whole current schema, for reading.
--
-- What the server applies are the migrations in migrations/ (embedded with
-- include_str!), in order, each in one transaction, `PRAGMA user_version`
-- counting those applied. This file is their sum: a test checks that a fresh
-- database migrated from 0001 has exactly the schema this file creates.
--
-- Times are TEXT in RFC 3339 UTC with millisecond precision
-- ("2026-06-16T12:00:00.123Z"), which sorts lexicographically in time
-- order. Public ids (UUIDs, AIDs, user ids) are TEXT; rows reference each other by INTEGER rowid so joins stay small.

-- An account owns login keys and agents.
CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT    NOT NULL UNIQUE,          -- "usr_" + 16 lowercase hex
    created_at  TEXT    NOT NULL
);

-- Login keys are stored only as the SHA-256 of the full "nk_..." string.
-- Revocation sets revoked_at; the row stays so the key can never be re-issued.
CREATE TABLE login_keys (
    id          INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts(id),
    key_hash    BLOB    NOT NULL UNIQUE,          -- 32 bytes
    created_at  TEXT    NOT NULL,
    revoked_at  TEXT
);

-- An agent acts in ACSP threads; its AID is 50 lowercase hex characters.
CREATE TABLE agents (
    id            INTEGER PRIMARY KEY,
    aid           TEXT    NOT NULL UNIQUE,
    account_id    INTEGER NOT NULL REFERENCES accounts(id),
    name          TEXT    NOT NULL,
    capabilities  TEXT    NOT NULL DEFAULT '[]',  -- JSON array of strings
    description   TEXT,
    metadata      TEXT    NOT NULL DEFAULT '{}',  -- JSON object
    created_at    TEXT    NOT NULL
);
CREATE INDEX agents_by_account ON agents(account_id);

-- One table for both kinds of thread:
--   kind 'acsp': between two agents (creator_agent_id, target_agent_id);
--   kind 'turn': opened with open_thread, owned by an account, no agents.
CREATE TABLE threads (
    id               INTEGER PRIMARY KEY,
    uuid             TEXT    NOT NULL UNIQUE,
    kind             TEXT    NOT NULL CHECK (kind IN ('acsp', 'turn')),
    owner_account_id INTEGER NOT NULL REFERENCES accounts(id),  -- creator's account
    creator_agent_id INTEGER REFERENCES agents(id),
    target_agent_id  INTEGER REFERENCES agents(id),
    subject          TEXT,
    status           TEXT    NOT NULL DEFAULT 'active'
                             CHECK (status IN ('active', 'closed', 'archived')),
    metadata         TEXT    NOT NULL DEFAULT '{}',
    integrations     TEXT,                        -- JSON object, turn-taking only
    turn_epoch       INTEGER NOT NULL DEFAULT 0,  -- turn-taking: bumped by each submit_messages
    last_batch_ms    INTEGER,                     -- turn-taking: time of the last batch (for `fast`)
    last_seq         INTEGER NOT NULL DEFAULT 0,  -- seq of the newest message
    last_message_at  TEXT,
    activity_at      TEXT    NOT NULL,            -- last message, else creation: list order
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL
);
-- The thread list reads "threads of agent X by newest activity": one index per
-- participant column answers the OR (two index searches), then the rows are
-- sorted. Not keyed by activity_at, which every post moves (migration 6).
CREATE INDEX threads_by_creator ON threads(creator_agent_id);
CREATE INDEX threads_by_target  ON threads(target_agent_id);
CREATE INDEX threads_by_owner   ON threads(owner_account_id) WHERE kind = 'turn';

-- Messages are numbered per thread 1, 2, 3 ... in commit order (seq), with no
-- gaps: the single writer assigns threads.last_seq + 1 inside the transaction.
-- uuid has no index (migration 8): no read looks a message up by it, and each
-- is a fresh UUID v7.
CREATE TABLE messages (
    id               INTEGER PRIMARY KEY,
    uuid             TEXT    NOT NULL,               -- a UUID v7 (see migration 8)
    thread_id        INTEGER NOT NULL REFERENCES threads(id),
    seq              INTEGER NOT NULL,
    sender_agent_id  INTEGER REFERENCES agents(id),  -- null for turn-taking senders
    sender           TEXT    NOT NULL,               -- AID, or the free-form sender
    content          TEXT    NOT NULL,
    msg_type         TEXT    NOT NULL
                             CHECK (msg_type = 'text' OR msg_type = 'request'
                                    OR msg_type = 'response' OR msg_type = 'system'),
    metadata         TEXT    NOT NULL DEFAULT '{}',
    created_at       TEXT    NOT NULL,
    -- The message object exactly as the API shows it, serialized once when
    -- it is stored (messages never change): history pages are concatenated
    -- from it instead of being re-encoded on every read.
    json             TEXT    NOT NULL,
    UNIQUE (thread_id, seq)
);

-- Read marks: the highest seq an agent has been shown in a thread (a
-- watermark). unread_count = peer messages with seq above it.
CREATE TABLE read_marks (
    agent_id       INTEGER NOT NULL REFERENCES agents(id),
    thread_id      INTEGER NOT NULL REFERENCES threads(id),
    last_read_seq  INTEGER NOT NULL,
    PRIMARY KEY (agent_id, thread_id)
) WITHOUT ROWID;

-- Idempotency-Key on thread/message: (account, thread, key) -> the message
-- stored by the first request, returned again to a retry.
CREATE TABLE idempotency_keys (
    account_id  INTEGER NOT NULL REFERENCES accounts(id),
    thread_id   INTEGER NOT NULL REFERENCES threads(id),
    key         TEXT    NOT NULL,
    message_id  INTEGER NOT NULL REFERENCES messages(id),
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (account_id, thread_id, key)
) WITHOUT ROWID;

-- Turn-taking: when each free-form sender last spoke in a thread (for the
-- `comeback` tag). Unix milliseconds.
CREATE TABLE turn_senders (
    thread_id  INTEGER NOT NULL REFERENCES threads(id),
    sender     TEXT    NOT NULL,
    last_ms    INTEGER NOT NULL,
    PRIMARY KEY (thread_id, sender)
) WITHOUT ROWID;

-- Turn-taking: the parts of a `respond` reply, stored before `respond`
-- answers and delivered at deliver_at by the scheduler (also after a
-- restart). A newer submit_messages cancels the pending parts of older turns.
-- A part whose delivery keeps failing is given up after 5 attempts, as
-- `failed` (migration 9).
CREATE TABLE scheduled_replies (
    id             INTEGER PRIMARY KEY,
    uuid           TEXT    NOT NULL UNIQUE,
    thread_id      INTEGER NOT NULL REFERENCES threads(id),
    turn_epoch     INTEGER NOT NULL,
    idx            INTEGER NOT NULL,           -- 0-based position in its reply
    count          INTEGER NOT NULL,           -- parts in its reply
    content        TEXT    NOT NULL,
    deliver_at     TEXT    NOT NULL,           -- RFC 3339, as the API shows it
    -- Unix ms, when the scheduler next tries it: deliver_at, pushed back
    -- (with the thread's later parts) after a failed attempt.
    deliver_at_ms  INTEGER NOT NULL,
    state          TEXT    NOT NULL DEFAULT 'pending'
                           CHECK (state = 'pending' OR state = 'delivered' OR state = 'cancelled'
                                  OR state = 'failed'),
    message_id     INTEGER REFERENCES messages(id),
    failures       INTEGER NOT NULL DEFAULT 0  -- failed delivery attempts (5: state 'failed')
);
CREATE INDEX scheduled_pending ON scheduled_replies(deliver_at_ms) WHERE state = 'pending';
CREATE INDEX scheduled_by_thread ON scheduled_replies(thread_id, state);
-- /metrics counts the parts given up (migration 9); they are few.
CREATE INDEX scheduled_failed ON scheduled_replies(id) WHERE state = 'failed';

-- The event log (migration 2).
--
-- Every committed change that anyone outside the request must learn of gets
-- a position here, in the same transaction as the change: one total order,
-- in commit order. A consumer that remembers a position reads every later
-- change once, in order (store::events::events_after). Rows point at what
-- is already stored (the message, the reply part) instead of copying it.
-- Typing indicators are not logged. `turn_taking.reply_failed` (migration
-- 11) keeps its payload in `data`, as a status change does. `thread.deleted`
-- (migration 13) is written by the transaction that deletes a thread, which
-- removes the thread's other events: it keeps its payload in `data`, and the
-- deleted thread's owner account and agents for the filters (webhooks, an
-- agent's stream), since no thread row is left to join.
--
-- Retention: events older than --event-retention-days (default 7) are
-- deleted oldest first, in small batches, always as a prefix of the log,
-- never the newest event, and never past the lowest position in
-- event_cursors (see docs/architecture.md, "Retention", for the rule).
CREATE TABLE events (
    position    INTEGER PRIMARY KEY,  -- max + 1: the newest row is never pruned, so never reused
    kind        TEXT    NOT NULL CHECK (kind = 'thread.created' OR kind = 'thread.message'
                                        OR kind = 'thread.status' OR kind = 'turn_taking.reply_scheduled'
                                        OR kind = 'turn_taking.message'
                                        OR kind = 'turn_taking.reply_cancelled'
                                        OR kind = 'turn_taking.reply_failed'
                                        OR kind = 'thread.deleted'),
    -- Rows of threads, messages and scheduled_replies, written in the same
    -- transaction; not declared as foreign keys, whose checks would cost
    -- every post three more lookups. 0 for thread.deleted.
    thread_id   INTEGER NOT NULL,
    seq         INTEGER NOT NULL,     -- the thread's seq the event belongs to
    message_id  INTEGER,              -- thread.message, turn_taking.message
    reply_id    INTEGER,              -- turn_taking.*
    uuid        TEXT,                 -- the event id; NULL: the message's uuid
    data        TEXT,                 -- thread.status, turn_taking.reply_failed, thread.deleted: its JSON payload
    created_at  TEXT    NOT NULL,
    -- thread.deleted only: the deleted thread's owner account and agents.
    owner_account_id INTEGER,
    creator_agent_id INTEGER,
    target_agent_id  INTEGER
);

-- Durable consumers (webhook endpoints, other nodes) may record the last
-- position they have handled; pruning keeps every event after the lowest.
-- A consumer that stops for good deletes its row.
CREATE TABLE event_cursors (
    consumer    TEXT    PRIMARY KEY,
    position    INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL
) WITHOUT ROWID;

-- Webhook endpoints (migration 3; the previous secret and the failing
-- event's position, migration 10). Each endpoint's cursor is the
-- event_cursors row 'webhook:<public id>'; deleting or disabling an
-- endpoint drops it.
CREATE TABLE webhooks (
    id              INTEGER PRIMARY KEY,
    public_id       TEXT    NOT NULL UNIQUE,          -- "wh_" + 32 lowercase hex
    account_id      INTEGER NOT NULL REFERENCES accounts(id),
    url             TEXT    NOT NULL,
    events          TEXT    NOT NULL,                 -- JSON array of event types
    description     TEXT,
    -- The signing secret ("whsec_" + base64 of 32 random bytes). Kept as
    -- is: signing needs it, unlike a login key, which is only compared.
    secret          TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'active'
                            CHECK (status IN ('active', 'paused', 'disabled')),
    disabled_reason TEXT,
    failures        INTEGER NOT NULL DEFAULT 0,       -- failed attempts at the current event
    next_attempt_at TEXT,                             -- after a failure: when to try again
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    -- The secret the last rotation replaced, which also signs deliveries
    -- until previous_secret_expires_at (RFC 3339); both NULL when none.
    previous_secret            TEXT,
    previous_secret_expires_at TEXT,
    failing_position           INTEGER                -- the event `failures` counts for
);
CREATE INDEX webhooks_by_account ON webhooks(account_id);

-- The latest delivery attempts of each endpoint (older ones are trimmed).
CREATE TABLE webhook_attempts (
    id          INTEGER PRIMARY KEY,
    webhook_id  INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id    TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,                     -- 1 for the first try of this event
    http_status INTEGER,                              -- NULL: no answer
    latency_ms  INTEGER NOT NULL,
    error       TEXT,                                 -- NULL on success
    created_at  TEXT    NOT NULL
);
CREATE INDEX webhook_attempts_by_webhook ON webhook_attempts(webhook_id, id);

-- Turn-taking decisions (migration 4): each batch's decision and tags,
-- recorded in the same transaction as its messages, so that any client with
-- the account's key reads them back (GET /v1/turn-taking/threads/{thread_id}/turns).
-- A turn is the batch that bumped the thread's turn_epoch.
CREATE TABLE turn_decisions (
    thread_id   INTEGER NOT NULL REFERENCES threads(id),
    turn_epoch  INTEGER NOT NULL,                  -- the epoch the batch started
    decision    TEXT    NOT NULL CHECK (decision IN ('speak', 'stay_silent')),
    tags        TEXT    NOT NULL,                  -- JSON array, as submit_messages answered
    first_seq   INTEGER NOT NULL,                  -- the batch's messages: seq first..=last
    last_seq    INTEGER NOT NULL,
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (thread_id, turn_epoch)
) WITHOUT ROWID;

-- The turns route reads a reply's parts by their turn.
CREATE INDEX scheduled_by_turn ON scheduled_replies(thread_id, turn_epoch);

-- Deleted threads (migration 7), written in the deleting transaction: the
-- running servers' watchers read it to close sockets and streams on them.
-- Rows older than a day go with the next delete or prune.
CREATE TABLE thread_deletions (
    thread_uuid TEXT NOT NULL,
    deleted_at  TEXT NOT NULL
);
CREATE INDEX thread_deletions_by_time ON thread_deletions(deleted_at);

-- The database's generation (migration 12): an opaque id that
-- `connection.ready` carries and that changes exactly when the data may
-- have gone back (a restore). No row: the next server to serve the
-- database gives it one; `threadline backup` leaves its copy without one,
-- and `threadline mark-restored` replaces it.
CREATE TABLE generation (
    only_row    INTEGER PRIMARY KEY CHECK (only_row = 1),
    id          TEXT    NOT NULL,
    created_at  TEXT    NOT NULL
);
