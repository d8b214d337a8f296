-- Migration 7 for PostgreSQL (see migrations/0007_thread_deletions.sql).
CREATE TABLE thread_deletions (
    thread_uuid TEXT NOT NULL,
    deleted_at  TEXT NOT NULL
);
CREATE INDEX thread_deletions_by_time ON thread_deletions(deleted_at);
