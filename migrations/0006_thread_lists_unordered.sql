-- Migration 6: the thread-list indexes keyed by participant only.
--
-- threads_by_creator and threads_by_target were (agent, activity_at DESC,
-- uuid DESC), meant to give the thread list its order. SQLite answers the
-- list's `creator_agent_id = ? OR target_agent_id = ?` with two index
-- searches merged by row id (MULTI-INDEX OR) and then sorts the rows
-- (EXPLAIN QUERY PLAN: USE TEMP B-TREE FOR ORDER BY), so the order in the
-- index was never used. But activity_at moves with every message, and
-- every post deleted and reinserted the thread's entry in both indexes:
-- four b-tree operations and two more dirty pages per commit. Keyed by the
-- participant alone, the indexes no longer change when a message is posted.
DROP INDEX threads_by_creator;
DROP INDEX threads_by_target;
CREATE INDEX threads_by_creator ON threads(creator_agent_id);
CREATE INDEX threads_by_target  ON threads(target_agent_id);
