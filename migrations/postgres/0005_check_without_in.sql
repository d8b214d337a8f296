-- Migration 5 for PostgreSQL (see migrations/0005_check_without_in.sql).
--
-- SQLite's migration 5 rewrites the CHECK constraints of messages.msg_type
-- and events.kind from IN lists to comparisons, because SQLite builds a
-- temporary index of an IN list at every INSERT. PostgreSQL checks an IN
-- list as it is, and the values allowed are the same, so nothing changes
-- here: this migration only keeps the two schema versions in step.
SELECT 1;
