-- Migration 12 for PostgreSQL (see migrations/0012_generation.sql): the
-- database's generation. There is no `threadline backup` here: the restore
-- procedure (docs/operations.md) runs `threadline mark-restored`.
CREATE TABLE generation (
    only_row    BIGINT PRIMARY KEY CHECK (only_row = 1),
    id          TEXT   NOT NULL,
    created_at  TEXT   NOT NULL
);
