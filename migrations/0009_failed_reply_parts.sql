-- Migration 9: a scheduled reply part that keeps failing is given up.
--
-- The scheduler delivered every due part in one write: one part the
-- database refused (a constraint, a trigger, a row it cannot read) undid
-- the whole write, and no part of any thread was delivered again. Now each
-- part is delivered in a savepoint of its own; a part that fails counts the
-- failure (`failures`), is tried again after a pause that doubles, and after
-- 5 failed attempts is marked `failed` and never tried again
-- (store::turn::deliver_due).
--
-- SQLite cannot change a CHECK in place, so the table is rebuilt as in
-- migration 5: set aside, created anew, copied with its row ids (which the
-- event log refers to), dropped, its indexes made again, in the runner's one
-- transaction with foreign keys off and legacy ALTER TABLE on. Nothing
-- refers to scheduled_replies by a foreign key. The CHECK is written as
-- comparisons (migration 5: an IN list of more than two values costs an
-- ephemeral index at every write), and every delivery writes the row.

ALTER TABLE scheduled_replies RENAME TO scheduled_replies_before_0009;

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

INSERT INTO scheduled_replies (id, uuid, thread_id, turn_epoch, idx, count, content, deliver_at,
                               deliver_at_ms, state, message_id)
SELECT id, uuid, thread_id, turn_epoch, idx, count, content, deliver_at, deliver_at_ms, state,
       message_id
FROM scheduled_replies_before_0009;

DROP TABLE scheduled_replies_before_0009;

CREATE INDEX scheduled_pending ON scheduled_replies(deliver_at_ms) WHERE state = 'pending';
CREATE INDEX scheduled_by_thread ON scheduled_replies(thread_id, state);
CREATE INDEX scheduled_by_turn ON scheduled_replies(thread_id, turn_epoch);
-- /metrics counts the parts given up; they are few.
CREATE INDEX scheduled_failed ON scheduled_replies(id) WHERE state = 'failed';
