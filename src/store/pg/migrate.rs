//! PostgreSQL migrations: `migrations/postgres/NNNN_*.sql`, one per SQLite
//! migration (same number, same tables), applied in order, each in one
//! transaction under an advisory lock, so two nodes starting at once apply
//! each exactly once. `schema_version` holds the number applied (SQLite
//! keeps it in `PRAGMA user_version`).

use super::conn::{get, PgConn};

/// The migrations, in order: schema version N is the first N applied.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_initial",
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        "0002_event_log",
        include_str!("../../../migrations/postgres/0002_event_log.sql"),
    ),
    (
        "0003_webhooks",
        include_str!("../../../migrations/postgres/0003_webhooks.sql"),
    ),
    (
        "0004_turn_decisions",
        include_str!("../../../migrations/postgres/0004_turn_decisions.sql"),
    ),
    (
        "0005_check_without_in",
        include_str!("../../../migrations/postgres/0005_check_without_in.sql"),
    ),
    (
        "0006_thread_lists_unordered",
        include_str!("../../../migrations/postgres/0006_thread_lists_unordered.sql"),
    ),
    (
        "0007_thread_deletions",
        include_str!("../../../migrations/postgres/0007_thread_deletions.sql"),
    ),
    (
        "0008_message_uuid_not_indexed",
        include_str!("../../../migrations/postgres/0008_message_uuid_not_indexed.sql"),
    ),
    (
        "0009_failed_reply_parts",
        include_str!("../../../migrations/postgres/0009_failed_reply_parts.sql"),
    ),
    (
        "0010_webhook_secret_rotation",
        include_str!("../../../migrations/postgres/0010_webhook_secret_rotation.sql"),
    ),
    (
        "0011_reply_failed_events",
        include_str!("../../../migrations/postgres/0011_reply_failed_events.sql"),
    ),
    (
        "0012_generation",
        include_str!("../../../migrations/postgres/0012_generation.sql"),
    ),
    (
        "0013_thread_deleted_events",
        include_str!("../../../migrations/postgres/0013_thread_deleted_events.sql"),
    ),
];

/// The advisory lock every node takes to migrate ("threadln" in ASCII).
const LOCK: i64 = 0x7468_7265_6164_6c6e;

/// Applies the migrations the database lacks; refuses a database whose
/// schema is newer than this binary knows.
pub fn migrate(c: &PgConn) -> Result<(), String> {
    let fail = |what: &str, e: crate::error::ApiError| format!("cannot {what}: {e:?}");
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate() {
        let target = i as i64 + 1;
        c.batch("BEGIN").map_err(|e| fail("begin a migration", e))?;
        let applied = (|| {
            c.one("SELECT pg_advisory_xact_lock($1)", &[&LOCK])?;
            // No NOTICE "already exists" in the log at every start.
            c.batch(
                "SET LOCAL client_min_messages = warning;
                 CREATE TABLE IF NOT EXISTS schema_version (
                     only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
                     version  BIGINT  NOT NULL);
                 INSERT INTO schema_version (version) VALUES (0) ON CONFLICT DO NOTHING;",
            )?;
            let version: i64 = get(&c.one("SELECT version FROM schema_version", &[])?, 0)?;
            if version > MIGRATIONS.len() as i64 {
                return Ok(Err(format!(
                    "the database has schema version {version}, newer than this threadline \
                     knows ({}): upgrade threadline",
                    MIGRATIONS.len()
                )));
            }
            if version >= target {
                return Ok(Ok(false));
            }
            c.batch(sql)?;
            c.exec("UPDATE schema_version SET version = $1", &[&target])?;
            Ok(Ok(true))
        })();
        match applied {
            Ok(Ok(done)) => {
                c.batch("COMMIT")
                    .map_err(|e| fail("commit a migration", e))?;
                if done {
                    log::info!("database migrated to {name}");
                }
            }
            Ok(Err(newer)) => {
                let _ = c.batch("ROLLBACK");
                return Err(newer);
            }
            Err(e) => {
                let _ = c.batch("ROLLBACK");
                return Err(fail(&format!("apply migration {name}"), e));
            }
        }
    }
    Ok(())
}
