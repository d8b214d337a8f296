-- Migration 8 for PostgreSQL (see migrations/0008_message_uuid_not_indexed.sql):
-- messages.uuid without its UNIQUE index, which every post paid for and no
-- read uses (the idempotency key's lookup goes by (thread_id, seq)). The ids
-- are fresh UUID v7s, unique as they were before. In place, no rewrite.
ALTER TABLE messages DROP CONSTRAINT messages_uuid_key;
