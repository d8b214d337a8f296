-- Migration 2: the event log.
--
-- Every committed change that anyone outside the request must learn of gets
-- a position here, in the same transaction as the change: one total order,
-- in commit order. A consumer that remembers a position reads every later
-- change once, in order (store::events::events_after). Rows point at what
-- is already stored (the message, the reply part) instead of copying it.
-- Typing indicators are not logged.
--
-- Retention: events older than --event-retention-days (default 7) are
-- deleted oldest first, in small batches, always as a prefix of the log,
-- never the newest event, and never past the lowest position in
-- event_cursors (see docs/architecture.md, "Retention", for the rule).
CREATE TABLE events (
    position    INTEGER PRIMARY KEY,  -- max + 1: the newest row is never pruned, so never reused
    kind        TEXT    NOT NULL CHECK (kind IN ('thread.created', 'thread.message', 'thread.status',
                                                 'turn_taking.reply_scheduled', 'turn_taking.message',
                                                 'turn_taking.reply_cancelled')),
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

-- Durable consumers (webhook endpoints, other nodes) may record the last
-- position they have handled; pruning keeps every event after the lowest.
-- A consumer that stops for good deletes its row.
CREATE TABLE event_cursors (
    consumer    TEXT    PRIMARY KEY,
    position    INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL
) WITHOUT ROWID;
