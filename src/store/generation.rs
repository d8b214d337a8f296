//! The database's generation: an opaque id (a UUID) that changes exactly
//! when the data may have gone back, so that a client that resumes a
//! thread can tell a restored server from the one it left (a thread's seqs
//! go back with a restore, and new messages take the lost seqs again).
//!
//! One row, `generation` (migration 12). No row means a new one is due:
//! the server that serves the database first gives it one ([`settle`]),
//! and keeps it through restarts, crashes and migrations. `threadline
//! backup` removes the row from its copy (`backup.rs`), so each restore of
//! the copy gets a new generation when it is first served, however often
//! the same file is restored. `threadline mark-restored` ([`renew`]) gives
//! a database restored any other way (a file copy, PostgreSQL's
//! `pg_restore`) a new one.

use rusqlite::{params, Connection};

use super::row::optional;
use crate::error::ApiResult;

/// A new generation id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The database's generation, given one first if it has none; `true` when
/// it was given now. (Two servers starting at once on one database agree:
/// the second insert does nothing, and both read the first's.)
pub fn settle(conn: &Connection) -> ApiResult<(String, bool)> {
    let given = conn.execute(
        "INSERT INTO generation (only_row, id, created_at) VALUES (1, ?1, ?2)
         ON CONFLICT (only_row) DO NOTHING",
        params![new_id(), crate::domain::now()],
    )? == 1;
    let id = conn.query_row("SELECT id FROM generation", [], |r| r.get(0))?;
    Ok((id, given))
}

/// Logs the generation a server opened `what` with ([`settle`]'s answer:
/// `given` when the database had none) and returns it.
pub(crate) fn announce((id, given): (String, bool), what: &str) -> String {
    match given {
        true => log::info!(
            "{what} had no generation (a new database, or a restored backup copy served for \
             the first time): it is generation {id} now"
        ),
        false => log::info!("{what} is generation {id}"),
    }
    id
}

/// Gives the database a new generation; returns the one it had (if any)
/// and the new one.
pub fn renew(conn: &Connection) -> ApiResult<(Option<String>, String)> {
    let was = optional(conn.query_row("SELECT id FROM generation", [], |r| r.get(0)))?;
    let id = new_id();
    conn.execute(
        "INSERT INTO generation (only_row, id, created_at) VALUES (1, ?1, ?2)
         ON CONFLICT (only_row) DO UPDATE SET id = excluded.id, created_at = excluded.created_at",
        params![id, crate::domain::now()],
    )?;
    Ok((was, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrated() -> Connection {
        let conn = Connection::open_in_memory().expect("expect: an in-memory database");
        super::super::migrate::migrate(&conn, std::path::Path::new(":memory:"))
            .expect("expect: the migrations apply");
        conn
    }

    #[test]
    fn the_first_settle_gives_a_generation_and_later_ones_keep_it() {
        let conn = migrated();
        let (first, given) = settle(&conn).unwrap();
        assert!(given);
        assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first}");
        assert_eq!(settle(&conn).unwrap(), (first, false));
    }

    #[test]
    fn renew_replaces_the_generation_and_says_which_it_was() {
        let conn = migrated();
        let (none, fresh) = renew(&conn).unwrap();
        assert_eq!(none, None, "a database never served had none");
        let (was, new) = renew(&conn).unwrap();
        assert_eq!(was.as_deref(), Some(fresh.as_str()));
        assert_ne!(new, fresh);
        assert_eq!(settle(&conn).unwrap(), (new, false));
    }

    #[test]
    fn a_database_without_the_row_settles_on_a_new_one() {
        // What a `threadline backup` copy is: the row removed.
        let conn = migrated();
        let (first, _) = settle(&conn).unwrap();
        conn.execute("DELETE FROM generation", []).unwrap();
        let (second, given) = settle(&conn).unwrap();
        assert!(given);
        assert_ne!(second, first);
    }
}
