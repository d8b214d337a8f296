-- Migration 11: the event log takes `turn_taking.reply_failed`, logged when
-- a reply part is given up (marked `failed` after 5 failed deliveries) in
-- the same transaction: sockets and SSE streams hear it, and a stream that
-- resumes from a position replays it. Its payload is kept in `data`, as a
-- status change's is: the part's row may be the very one that no longer
-- reads back.
--
-- SQLite cannot change a CHECK in place, so the log is rebuilt as in
-- migration 5: set aside, created anew, copied with its positions, dropped,
-- in the runner's one transaction (no table refers to events). This copies
-- the whole log once: 1.8 s for 1,000,000 events (measured on a 62 MB
-- file; retention keeps the log to --event-retention-days).

ALTER TABLE events RENAME TO events_before_0010;

CREATE TABLE events (
    position    INTEGER PRIMARY KEY,  -- max + 1: the newest row is never pruned, so never reused
    kind        TEXT    NOT NULL CHECK (kind = 'thread.created' OR kind = 'thread.message'
                                        OR kind = 'thread.status' OR kind = 'turn_taking.reply_scheduled'
                                        OR kind = 'turn_taking.message'
                                        OR kind = 'turn_taking.reply_cancelled'
                                        OR kind = 'turn_taking.reply_failed'),
    -- Rows of threads, messages and scheduled_replies (none of which is ever
    -- deleted), written in the same transaction; not declared as foreign
    -- keys, whose checks would cost every post three more lookups.
    thread_id   INTEGER NOT NULL,
    seq         INTEGER NOT NULL,     -- the thread's seq the event belongs to
    message_id  INTEGER,              -- thread.message, turn_taking.message
    reply_id    INTEGER,              -- turn_taking.*
    uuid        TEXT,                 -- the event id; NULL: the message's uuid
    data        TEXT,                 -- thread.status, turn_taking.reply_failed: its JSON payload
    created_at  TEXT    NOT NULL
);

INSERT INTO events (position, kind, thread_id, seq, message_id, reply_id, uuid, data, created_at)
SELECT position, kind, thread_id, seq, message_id, reply_id, uuid, data, created_at FROM events_before_0010;

DROP TABLE events_before_0010;
