-- Migration 6 for PostgreSQL (see migrations/0006_thread_lists_unordered.sql).
--
-- The thread list's OR of the two participant columns is a BitmapOr and a
-- sort here too, so the order in these indexes was never read. With
-- activity_at out of every index, the UPDATE a post makes to its thread
-- changes no indexed column and can be a HOT update (no new index entries).
DROP INDEX threads_by_creator;
DROP INDEX threads_by_target;
CREATE INDEX threads_by_creator ON threads(creator_agent_id);
CREATE INDEX threads_by_target  ON threads(target_agent_id);
