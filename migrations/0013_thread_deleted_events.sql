-- Migration 13: the event log takes `thread.deleted`, written by the
-- transaction that deletes a thread (`threadline thread delete`, `prune
-- --threads-older-than-days`): the one event of the thread that outlives
-- it, so webhooks, inbox sockets and `aid=` streams hear that their copy is
-- gone. Its payload is kept in `data`; the thread's row is gone, so the row
-- also keeps who may see it, for the same filters the thread's row answers
-- for the other events: its owner account and its two agents (NULL on
-- every other row). Its thread_id is 0 (no thread): a thread created later
-- may take the deleted one's row id.
--
-- SQLite cannot change a CHECK in place, so the log is rebuilt as in
-- migration 11: 2.6 s (0.6 s of CPU) for 1,000,000 events on a 62 MB file,
-- measured with the sqlite3 shell on a busy two-core machine.

ALTER TABLE events RENAME TO events_before_0013;

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

INSERT INTO events (position, kind, thread_id, seq, message_id, reply_id, uuid, data, created_at)
SELECT position, kind, thread_id, seq, message_id, reply_id, uuid, data, created_at FROM events_before_0013;

DROP TABLE events_before_0013;
