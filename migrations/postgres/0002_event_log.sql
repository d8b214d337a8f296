-- Migration 2 for PostgreSQL: the event log (see migrations/0002_event_log.sql).
--
-- Positions must follow COMMIT order across every node, which a sequence
-- does not give (a transaction that took 7 may commit after the one that
-- took 8, and a reader at 8 would never see 7). So a writing transaction
-- numbers its events from the one `log_head` row as its very last step
-- before COMMIT: the row lock orders the tails of concurrent transactions
-- and is held only from there to COMMIT.
CREATE TABLE log_head (
    only_row  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    position  BIGINT  NOT NULL
);
INSERT INTO log_head (position) VALUES (0);

CREATE TABLE events (
    position    BIGINT PRIMARY KEY,
    kind        TEXT   NOT NULL CHECK (kind IN ('thread.created', 'thread.message', 'thread.status',
                                                'turn_taking.reply_scheduled', 'turn_taking.message',
                                                'turn_taking.reply_cancelled')),
    thread_id   BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    message_id  BIGINT,
    reply_id    BIGINT,
    uuid        TEXT,
    data        TEXT,
    created_at  TEXT   NOT NULL
);

CREATE TABLE event_cursors (
    consumer    TEXT   PRIMARY KEY,
    position    BIGINT NOT NULL,
    updated_at  TEXT   NOT NULL
);
