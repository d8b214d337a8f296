-- Migration 13 for PostgreSQL (see migrations/0013_thread_deleted_events.sql):
-- the event log takes `thread.deleted`, and keeps on its row the deleted
-- thread's owner account and agents. In place: the CHECK is replaced (a
-- wider list: the rows already there pass it), the columns are added empty.
ALTER TABLE events DROP CONSTRAINT events_kind_check;
ALTER TABLE events ADD CONSTRAINT events_kind_check
    CHECK (kind IN ('thread.created', 'thread.message', 'thread.status',
                    'turn_taking.reply_scheduled', 'turn_taking.message',
                    'turn_taking.reply_cancelled', 'turn_taking.reply_failed',
                    'thread.deleted'));
ALTER TABLE events ADD COLUMN owner_account_id BIGINT;
ALTER TABLE events ADD COLUMN creator_agent_id BIGINT;
ALTER TABLE events ADD COLUMN target_agent_id  BIGINT;
