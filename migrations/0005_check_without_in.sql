-- Migration 5: the CHECK constraints of messages.msg_type and events.kind
-- written as comparisons instead of IN lists. Same values allowed.
--
-- SQLite checks `x IN ('a', 'b', 'c')` (more than two values) by building a
-- temporary index of the list at every INSERT (EXPLAIN shows
-- OpenEphemeral), and every post inserts one row into each of these tables;
-- `x = 'a' OR x = 'b' ...` is a few comparisons.
--
-- SQLite cannot change a constraint in place, so both tables are rebuilt:
-- set aside under another name, created anew, copied with their row ids
-- (which other tables and the event log refer to), dropped. The migration
-- runs with foreign keys off and legacy ALTER TABLE on (set by the runner),
-- so renaming a table aside leaves the references of idempotency_keys and
-- scheduled_replies naming `messages`, the new table; the runner checks
-- every foreign key before it commits.

ALTER TABLE messages RENAME TO messages_before_0005;

CREATE TABLE messages (
    id               INTEGER PRIMARY KEY,
    uuid             TEXT    NOT NULL UNIQUE,
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

INSERT INTO messages (id, uuid, thread_id, seq, sender_agent_id, sender, content, msg_type, metadata, created_at, json)
SELECT id, uuid, thread_id, seq, sender_agent_id, sender, content, msg_type, metadata, created_at, json FROM messages_before_0005;

DROP TABLE messages_before_0005;

ALTER TABLE events RENAME TO events_before_0005;

CREATE TABLE events (
    position    INTEGER PRIMARY KEY,  -- max + 1: the newest row is never pruned, so never reused
    kind        TEXT    NOT NULL CHECK (kind = 'thread.created' OR kind = 'thread.message'
                                        OR kind = 'thread.status' OR kind = 'turn_taking.reply_scheduled'
                                        OR kind = 'turn_taking.message'
                                        OR kind = 'turn_taking.reply_cancelled'),
    -- Rows of threads, messages and scheduled_replies (none of which is ever
    -- deleted), written in the same transaction; not declared as foreign
    -- keys, whose checks would cost every post three more lookups.
    thread_id   INTEGER NOT NULL,
    seq         INTEGER NOT NULL,     -- the thread's seq the event belongs to
    message_id  INTEGER,              -- thread.message, turn_taking.message
    reply_id    INTEGER,              -- turn_taking.*
    uuid        TEXT,                 -- the event id; NULL: the message's uuid
    data        TEXT,                 -- thread.status: its JSON payload
    created_at  TEXT    NOT NULL
);

INSERT INTO events (position, kind, thread_id, seq, message_id, reply_id, uuid, data, created_at)
SELECT position, kind, thread_id, seq, message_id, reply_id, uuid, data, created_at FROM events_before_0005;

DROP TABLE events_before_0005;
