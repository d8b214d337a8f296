-- Migration 12: the database's generation.
--
-- A thread's seqs go back when the database does (a restore from a backup),
-- and the restored server gives the lost seqs out again, to new messages:
-- a client that resumes with `after=SEQ` cannot tell those from the ones it
-- holds. The generation is an opaque id (a UUID) that `connection.ready`
-- carries and that changes exactly when the data may have gone back. The
-- server that serves the database first gives it one; `threadline backup`
-- leaves the copy without one, so every restore of the copy is given a new
-- one when it is first served; `threadline mark-restored` gives a database
-- restored some other way a new one. A restart, a crash or a migration
-- leaves it as it is.
CREATE TABLE generation (
    only_row    INTEGER PRIMARY KEY CHECK (only_row = 1),
    id          TEXT    NOT NULL,
    created_at  TEXT    NOT NULL
);
