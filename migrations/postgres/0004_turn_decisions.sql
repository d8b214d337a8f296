-- Migration 4 for PostgreSQL: each turn-taking batch's decision, recorded
-- (see migrations/0004_turn_decisions.sql).
CREATE TABLE turn_decisions (
    thread_id   BIGINT NOT NULL REFERENCES threads(id),
    turn_epoch  BIGINT NOT NULL,
    decision    TEXT   NOT NULL CHECK (decision IN ('speak', 'stay_silent')),
    tags        TEXT   NOT NULL,
    first_seq   BIGINT NOT NULL,
    last_seq    BIGINT NOT NULL,
    created_at  TEXT   NOT NULL,
    PRIMARY KEY (thread_id, turn_epoch)
);

CREATE INDEX scheduled_by_turn ON scheduled_replies(thread_id, turn_epoch);
