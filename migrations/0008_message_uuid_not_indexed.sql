-- Migration 8: messages.uuid without its UNIQUE index.
--
-- Every post inserted an entry into that index, a b-tree no read uses:
-- pages are read by (thread_id, seq), events and idempotency keys point at
-- the row id, and the one lookup by uuid (remembering an idempotency key)
-- now goes by (thread_id, seq) too. Measured on the writer thread with
-- `loadgen post -t 8` (5 alternated runs): 0.7 to 2.1 µs less per post,
-- median 1.2 µs, ~9% of its time: the index entry, and its page in each
-- commit's WAL frames.
--
-- The ids stay unique without it: the writer makes each one a fresh UUID v7
-- (a millisecond timestamp and 74 random bits), which is how they were made
-- unique before too; the index only turned an impossible collision into a
-- failed post. Nothing but the writer inserts messages.
--
-- SQLite cannot drop a UNIQUE constraint in place, so the table is rebuilt
-- as in migration 5: set aside, created anew, copied with its row ids
-- (which idempotency_keys, scheduled_replies and the event log refer to),
-- dropped, in the runner's one transaction with foreign keys off and legacy
-- ALTER TABLE on; the runner checks every foreign key before it commits.

ALTER TABLE messages RENAME TO messages_before_0008;

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

INSERT INTO messages (id, uuid, thread_id, seq, sender_agent_id, sender, content, msg_type, metadata, created_at, json)
SELECT id, uuid, thread_id, seq, sender_agent_id, sender, content, msg_type, metadata, created_at, json FROM messages_before_0008;

DROP TABLE messages_before_0008;
