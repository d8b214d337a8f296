-- Migration 9 for PostgreSQL (see migrations/0009_failed_reply_parts.sql):
-- a reply part's failed delivery attempts, and the state `failed` for a part
-- given up after 5 of them. In place: a column with a constant default is
-- added without rewriting the table, and the CHECK is replaced.
ALTER TABLE scheduled_replies ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE scheduled_replies DROP CONSTRAINT scheduled_replies_state_check;
ALTER TABLE scheduled_replies ADD CONSTRAINT scheduled_replies_state_check
    CHECK (state IN ('pending', 'delivered', 'cancelled', 'failed'));
CREATE INDEX scheduled_failed ON scheduled_replies(id) WHERE state = 'failed';
