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
-- never the newest event, and never at or above the lowest position in
-- event_cursors (see docs/architecture-event-log.md for the rule).
CREATE TABLE events (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,        -- never reused, even once pruned
    kind        TEXT    NOT NULL CHECK (kind IN ('thread.created', 'thread.message', 'thread.status',
                                                 'turn_taking.reply_scheduled', 'turn_taking.message',
                                                 'turn_taking.reply_cancelled')),
    thread_id   INTEGER NOT NULL REFERENCES threads(id),
    seq         INTEGER NOT NULL,                         -- the thread's seq the event belongs to
    message_id  INTEGER REFERENCES messages(id),          -- thread.message, turn_taking.message
    reply_id    INTEGER REFERENCES scheduled_replies(id), -- turn_taking.*
    uuid        TEXT,                                     -- the event id; NULL: the message's uuid
    data        TEXT,                                     -- thread.status: its JSON payload
    created_at  TEXT    NOT NULL
);

-- Durable consumers (webhook endpoints, other nodes) may record the last
-- position they have handled; pruning never deletes at or above the lowest.
-- A consumer that stops for good deletes its row.
CREATE TABLE event_cursors (
    consumer    TEXT    PRIMARY KEY,
    position    INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL
) WITHOUT ROWID;
