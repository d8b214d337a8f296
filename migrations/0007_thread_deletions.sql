-- Migration 7: a short record of deleted threads.
--
-- `thread delete` and `prune --threads-older-than-days` run in another
-- process (on PostgreSQL maybe on another node). A running server's sockets
-- and streams on such a thread would stay open and hear nothing more; its
-- watcher (src/realtime/revocation.rs) reads this table for deletions made
-- since its lookback and closes them. Written in the deleting transaction;
-- rows older than a day are removed by the next delete or prune, so it
-- stays tiny.
CREATE TABLE thread_deletions (
    thread_uuid TEXT NOT NULL,
    deleted_at  TEXT NOT NULL
);
CREATE INDEX thread_deletions_by_time ON thread_deletions(deleted_at);
