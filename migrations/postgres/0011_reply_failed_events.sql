-- Migration 11 for PostgreSQL (see migrations/0011_reply_failed_events.sql):
-- the event log takes `turn_taking.reply_failed`. In place: the CHECK is
-- replaced (a wider list: the rows already there pass it).
ALTER TABLE events DROP CONSTRAINT events_kind_check;
ALTER TABLE events ADD CONSTRAINT events_kind_check
    CHECK (kind IN ('thread.created', 'thread.message', 'thread.status',
                    'turn_taking.reply_scheduled', 'turn_taking.message',
                    'turn_taking.reply_cancelled', 'turn_taking.reply_failed'));
