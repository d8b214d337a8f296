//! Schema migrations: the files in `migrations/`, embedded, applied in order
//! at start, each in its own transaction; `PRAGMA user_version` is the number
//! applied. A database newer than this binary knows is refused before
//! anything changes it: its version is the first thing read, before the
//! connection is configured (journal mode) or anything is migrated.
//! `schema.sql` is the sum of the migrations, for reading; a test keeps the
//! two the same.

use std::path::Path;

use rusqlite::Connection;

/// One migration: applying it takes the database to `version`.
struct Migration {
    version: i64,
    sql: &'static str,
}

/// Every migration, oldest first; `version` counts up from 1 with no gap.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../../migrations/0002_event_log.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("../../migrations/0003_webhooks.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("../../migrations/0004_turn_decisions.sql"),
    },
    Migration {
        version: 5,
        sql: include_str!("../../migrations/0005_check_without_in.sql"),
    },
    Migration {
        version: 6,
        sql: include_str!("../../migrations/0006_thread_lists_unordered.sql"),
    },
    Migration {
        version: 7,
        sql: include_str!("../../migrations/0007_thread_deletions.sql"),
    },
    Migration {
        version: 8,
        sql: include_str!("../../migrations/0008_message_uuid_not_indexed.sql"),
    },
    Migration {
        version: 9,
        sql: include_str!("../../migrations/0009_failed_reply_parts.sql"),
    },
    Migration {
        version: 10,
        sql: include_str!("../../migrations/0010_webhook_secret_rotation.sql"),
    },
    Migration {
        version: 11,
        sql: include_str!("../../migrations/0011_reply_failed_events.sql"),
    },
    Migration {
        version: 12,
        sql: include_str!("../../migrations/0012_generation.sql"),
    },
    Migration {
        version: 13,
        sql: include_str!("../../migrations/0013_thread_deleted_events.sql"),
    },
];

/// The schema version this binary writes.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// The whole current schema (documentation; the tests compare it with the
/// migrations' result).
pub const SCHEMA_DOC: &str = include_str!("../../schema.sql");

/// Refuses a database written by a newer threadline, before anything
/// changes it (call it first on a new connection: it only reads
/// `user_version`). Not by reading the file's header directly: closing any
/// other descriptor of the file would drop the locks this process's SQLite
/// connections hold on it.
pub fn refuse_newer_database(conn: &Connection, path: &Path) -> Result<(), String> {
    let version =
        user_version(conn).map_err(|e| format!("cannot read database {}: {e}", path.display()))?;
    refuse_newer(path, version)
}

fn refuse_newer(path: &Path, version: i64) -> Result<(), String> {
    if version > LATEST {
        return Err(format!(
            "database {} has schema version {version}, but this threadline only knows \
             versions up to {LATEST}: it was written by a newer threadline. Run that \
             version (or restore a backup); the file was not changed",
            path.display()
        ));
    }
    Ok(())
}

/// Applies every migration the database has not had, each in one
/// transaction (IMMEDIATE: two processes starting at once do not both apply
/// one). Refuses a database newer than this binary.
pub fn migrate(conn: &Connection, path: &Path) -> Result<(), String> {
    let failed = |e: rusqlite::Error| format!("cannot migrate database {}: {e}", path.display());
    let version = user_version(conn).map_err(failed)?;
    refuse_newer(path, version)?;
    for migration in MIGRATIONS.iter().filter(|m| m.version > version) {
        apply(conn, migration).map_err(|e| {
            format!(
                "cannot apply schema migration {} to {}: {e}",
                migration.version,
                path.display()
            )
        })?;
    }
    // Another process may have migrated further meanwhile.
    refuse_newer(path, user_version(conn).map_err(failed)?)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Applies one migration the way SQLite documents for changing a table's
/// definition: foreign keys off (they can only be switched outside a
/// transaction) and legacy ALTER TABLE on, so a table renamed aside to be
/// rebuilt leaves other tables' references naming the new one; every foreign
/// key is checked before the commit.
fn apply(conn: &Connection, migration: &Migration) -> rusqlite::Result<()> {
    let foreign_keys: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA foreign_keys = OFF; PRAGMA legacy_alter_table = ON;")?;
    let applied = apply_in_transaction(conn, migration);
    let restored = conn.execute_batch(&format!(
        "PRAGMA legacy_alter_table = OFF; PRAGMA foreign_keys = {};",
        if foreign_keys { "ON" } else { "OFF" }
    ));
    applied.and(restored)
}

fn apply_in_transaction(conn: &Connection, migration: &Migration) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let applied = (|| {
        // Someone else may have applied it while we waited for the lock.
        if user_version(conn)? < migration.version {
            conn.execute_batch(migration.sql)?;
            let broken: Option<String> = conn
                .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            if let Some(table) = broken {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                    Some(format!("a foreign key of table {table} points nowhere")),
                ));
            }
            conn.execute_batch(&format!("PRAGMA user_version = {}", migration.version))?;
        }
        Ok(())
    })();
    match applied {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// One schema object: type, name, table and the SQL that made it.
pub type SchemaObject = (String, String, String, Option<String>);

/// Every schema object, sorted: what two databases must share to have the
/// same schema.
pub fn schema_objects(conn: &Connection) -> rusqlite::Result<Vec<SchemaObject>> {
    let mut stmt = conn.prepare(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name, tbl_name",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one_without_a_gap() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
        }
    }

    #[test]
    fn a_fresh_database_migrated_from_0001_has_exactly_the_schema_of_schema_sql() {
        let migrated = Connection::open_in_memory().unwrap();
        migrate(&migrated, Path::new(":memory:")).unwrap();
        assert_eq!(user_version(&migrated).unwrap(), LATEST);
        let documented = Connection::open_in_memory().unwrap();
        documented.execute_batch(SCHEMA_DOC).unwrap();
        let want = schema_objects(&documented).unwrap();
        assert!(
            want.iter().any(|o| o.1 == "events"),
            "schema.sql has the log"
        );
        assert_eq!(schema_objects(&migrated).unwrap(), want);
    }

    #[test]
    fn migration_5_rebuilds_messages_and_events_keeping_rows_and_references() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version < 5) {
            apply(&conn, m).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO accounts VALUES (1, 'usr_1', 't');
             INSERT INTO threads (id, uuid, kind, owner_account_id, activity_at, created_at,
                                  updated_at) VALUES (1, 'u', 'turn', 1, 't', 't', 't');
             INSERT INTO messages VALUES (7, 'm7', 1, 1, NULL, 's', 'c', 'request', '{}', 't', '{}');
             INSERT INTO idempotency_keys VALUES (1, 1, 'k', 7, 't');
             INSERT INTO events (position, kind, thread_id, seq, message_id, created_at)
                 VALUES (3, 'thread.message', 1, 1, 7, 't');",
        )
        .unwrap();
        migrate(&conn, Path::new(":memory:")).unwrap();
        let fk: bool = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert!(fk, "foreign keys are on again");
        let row: (i64, String) = conn
            .query_row(
                "SELECT m.id, m.msg_type FROM idempotency_keys k JOIN messages m ON m.id = k.message_id",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(row, (7, "request".to_owned()));
        let event: (i64, i64) = conn
            .query_row("SELECT position, message_id FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(event, (3, 7));
        // The references still hold (a referenced message cannot go) and
        // the constraints still refuse what they refused.
        assert!(conn
            .execute("DELETE FROM messages WHERE id = 7", [])
            .is_err());
        assert!(conn
            .execute(
                "INSERT INTO messages VALUES (8, 'm8', 1, 2, NULL, 's', 'c', 'note', '{}', 't', '{}')",
                []
            )
            .is_err());
        assert!(conn
            .execute(
                "INSERT INTO events (kind, thread_id, seq, created_at) VALUES ('x', 1, 1, 't')",
                []
            )
            .is_err());
        // No temporary index per insert any more.
        let mut explain = conn
            .prepare("EXPLAIN INSERT INTO messages VALUES (9, 'm9', 1, 3, NULL, 's', 'c', 'text', '{}', 't', '{}')")
            .unwrap();
        let ops: Vec<String> = explain
            .query_map([], |r| r.get(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!ops.iter().any(|o| o == "OpenEphemeral"), "{ops:?}");
    }

    /// What a database shows of its messages: each thread's history page
    /// (as stored JSON and as decoded rows) and the logged events.
    fn what_reads_show(conn: &Connection) -> Vec<String> {
        let mut shown = Vec::new();
        for row in [1, 2] {
            let thread = super::super::lookup::by_row_id(conn, row)
                .unwrap()
                .expect("the thread is there");
            let page = super::super::messages::page_json(conn, &thread, 0, 50, 0).unwrap();
            shown.push(String::from_utf8(page.array).unwrap());
            let (messages, more) = super::super::messages::page(conn, &thread, 1, 50, 0).unwrap();
            shown.push(format!(
                "{} {more}",
                serde_json::to_string(&messages).unwrap()
            ));
        }
        let events = super::super::events::events_after(conn, 0, 100).unwrap();
        assert_eq!(events.len(), 4, "every event is read back");
        shown.push(format!("{events:?}"));
        shown
    }

    #[test]
    fn migration_8_drops_the_uuid_index_and_every_read_shows_the_same() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version < 8) {
            apply(&conn, m).unwrap();
        }
        let aid = |c: char| c.to_string().repeat(50);
        conn.execute_batch(&format!(
            "INSERT INTO accounts VALUES (1, 'usr_1', 't');
             INSERT INTO agents (id, aid, account_id, name, created_at)
                 VALUES (1, '{a}', 1, 'Ann \"the\" agent', 't'), (2, '{b}', 1, 'Bob', 't');
             INSERT INTO threads (id, uuid, kind, owner_account_id, creator_agent_id,
                                  target_agent_id, subject, metadata, last_seq, activity_at,
                                  created_at, updated_at)
                 VALUES (1, '0190a000-0000-7000-8000-000000000001', 'acsp', 1, 1, 2, 's',
                         '{{\"k\":[1,2]}}', 2, 't', 't', 't');
             INSERT INTO threads (id, uuid, kind, owner_account_id, last_seq, activity_at,
                                  created_at, updated_at)
                 VALUES (2, '0190a000-0000-7000-8000-000000000002', 'turn', 1, 1, 't', 't', 't');",
            a = aid('a'),
            b = aid('b')
        ))
        .unwrap();
        // An agent's message with metadata, a free-form sender's with
        // awkward content (quotes, backslash, newline, NUL, </script>,
        // non-ASCII), and one more, each with its JSON as the writer makes it.
        let awkward = "say \"hi\" \\ then\nbye\u{0} </script> é 日本 🦀";
        let rows = [
            (
                7,
                "m-7",
                1,
                1,
                Some(1),
                aid('a'),
                "hello",
                "request",
                r#"{"x":{"y":[true,null]}}"#,
            ),
            (8, "m-8", 1, 2, Some(2), aid('b'), awkward, "response", "{}"),
            (
                9,
                "m-9",
                2,
                1,
                None,
                "Free form \"sender\"".to_owned(),
                awkward,
                "text",
                "{}",
            ),
        ];
        for (id, uuid, thread, seq, agent, sender, content, msg_type, metadata) in &rows {
            let json = serde_json::json!({
                "id": uuid, "thread_id": thread, "seq": seq, "sender": sender,
                "content": content, "msg_type": msg_type,
                "metadata": serde_json::from_str::<serde_json::Value>(metadata).unwrap(),
            });
            conn.execute(
                "INSERT INTO messages VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 't', ?10)",
                rusqlite::params![
                    id,
                    uuid,
                    thread,
                    seq,
                    agent,
                    sender,
                    content,
                    msg_type,
                    metadata,
                    json.to_string()
                ],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO idempotency_keys VALUES (1, 1, 'k', 8, 't');
             INSERT INTO scheduled_replies (id, uuid, thread_id, turn_epoch, idx, count, content,
                                            deliver_at, deliver_at_ms, state, message_id)
                 VALUES (1, 'r-1', 2, 1, 0, 1, 'part', 't', 0, 'delivered', 9);
             INSERT INTO events (position, kind, thread_id, seq, message_id, created_at)
                 VALUES (3, 'thread.message', 1, 1, 7, 't'), (4, 'thread.message', 1, 2, 8, 't');
             INSERT INTO events (position, kind, thread_id, seq, message_id, reply_id, uuid, created_at)
                 VALUES (5, 'turn_taking.reply_scheduled', 2, 0, NULL, 1, 'e-5', 't'),
                        (6, 'turn_taking.message', 2, 1, 9, 1, 'e-6', 't');",
        )
        .unwrap();
        // Today's reader selects the columns migration 13 adds (NULL on
        // every row it copies): give the old log them, empty, to read it.
        conn.execute_batch(
            "ALTER TABLE events ADD COLUMN owner_account_id INTEGER;
             ALTER TABLE events ADD COLUMN creator_agent_id INTEGER;
             ALTER TABLE events ADD COLUMN target_agent_id INTEGER;",
        )
        .unwrap();
        let before = what_reads_show(&conn);
        // Up to the latest: what a migration after 8 rebuilt (9:
        // scheduled_replies, which the turn-taking events read) reads the same.
        migrate(&conn, Path::new(":memory:")).unwrap();
        assert_eq!(user_version(&conn).unwrap(), LATEST);
        assert_eq!(what_reads_show(&conn), before);
        assert!(before[0].contains("</script>"), "{}", before[0]);
        // The references hold: a referenced message cannot go.
        assert!(conn
            .execute("DELETE FROM messages WHERE id = 8", [])
            .is_err());
        let key: i64 = conn
            .query_row(
                "SELECT m.seq FROM idempotency_keys k JOIN messages m ON m.id = k.message_id",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(key, 2);
        // One index left on messages, (thread_id, seq), which still refuses
        // a second message with a thread's seq; a uuid is no longer indexed.
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM pragma_index_list('messages')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(indexes.len(), 1, "{indexes:?}");
        let columns: Vec<String> = conn
            .prepare(&format!(
                "SELECT name FROM pragma_index_info('{}')",
                indexes[0]
            ))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(columns, ["thread_id", "seq"]);
        assert!(conn
            .execute(
                "INSERT INTO messages VALUES (10, 'm-10', 1, 2, NULL, 's', 'c', 'text', '{}', 't', '{}')",
                []
            )
            .is_err());
    }

    #[test]
    fn migration_9_keeps_every_reply_part_and_admits_the_failed_state() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version < 9) {
            apply(&conn, m).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO accounts VALUES (1, 'usr_1', 't');
             INSERT INTO threads (id, uuid, kind, owner_account_id, last_seq, activity_at,
                                  created_at, updated_at)
                 VALUES (2, '0190a000-0000-7000-8000-000000000002', 'turn', 1, 1, 't', 't', 't');
             INSERT INTO messages VALUES (9, 'm-9', 2, 1, NULL, 'agent', 'one', 'response',
                                          '{}', 't', '{}');
             INSERT INTO scheduled_replies (id, uuid, thread_id, turn_epoch, idx, count, content,
                                            deliver_at, deliver_at_ms, state, message_id)
                 VALUES (4, 'r-4', 2, 1, 0, 3, 'one', 'a', 10, 'delivered', 9),
                        (5, 'r-5', 2, 1, 1, 3, 'two', 'b', 20, 'cancelled', NULL),
                        (7, 'r-7', 2, 2, 0, 1, 'three', 'c', 30, 'pending', NULL);",
        )
        .unwrap();
        let rows = |conn: &Connection| -> Vec<String> {
            conn.prepare(
                "SELECT id, uuid, thread_id, turn_epoch, idx, count, content, deliver_at,
                        deliver_at_ms, state, message_id FROM scheduled_replies ORDER BY id",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((0..11)
                    .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join(" "))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let before = rows(&conn);
        assert!(conn
            .execute(
                "UPDATE scheduled_replies SET state = 'failed' WHERE id = 7",
                []
            )
            .is_err());
        apply(&conn, &MIGRATIONS[8]).unwrap();
        assert_eq!(rows(&conn), before, "every part kept, with its row id");
        let failures: i64 = conn
            .query_row("SELECT sum(failures) FROM scheduled_replies", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(failures, 0);
        conn.execute(
            "UPDATE scheduled_replies SET state = 'failed' WHERE id = 7",
            [],
        )
        .unwrap();
        assert!(conn
            .execute(
                "UPDATE scheduled_replies SET state = 'lost' WHERE id = 7",
                []
            )
            .is_err());
        // The pending part is found by the scheduler's index, and the
        // references still hold.
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT min(deliver_at_ms) FROM scheduled_replies
                 WHERE state = 'pending'",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("scheduled_pending"), "{plan}");
        assert!(conn
            .execute("DELETE FROM messages WHERE id = 9", [])
            .is_err());
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn, Path::new(":memory:")).unwrap();
        let before = schema_objects(&conn).unwrap();
        migrate(&conn, Path::new(":memory:")).unwrap();
        assert_eq!(schema_objects(&conn).unwrap(), before);
    }

    #[test]
    fn a_newer_database_is_refused_with_a_message_that_says_what_to_do() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {}", LATEST + 1))
            .unwrap();
        let err = migrate(&conn, Path::new("x.db")).unwrap_err();
        assert!(err.contains("newer threadline"), "{err}");
        let tables: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0, "nothing applied");
    }
}
