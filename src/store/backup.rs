//! Online backup: a consistent copy of the database while a server runs and
//! writes, with `VACUUM INTO`.
//!
//! `VACUUM INTO` reads the database inside one read transaction, so the copy
//! is the snapshot of one instant. In WAL mode a reader never blocks the
//! writer: commits go on during the copy (they land in the WAL, which the
//! background checkpointer cannot fold past the reader's snapshot until the
//! copy ends). It writes a compact file (no free pages) and refuses to write
//! over a file that exists. What the copy holds is read back from the copy
//! itself, so the reported position is the one a restore gets.

use std::path::Path;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::row::optional;

/// What `threadline backup` reports.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// Where the copy is.
    pub path: String,
    /// The copy's size in bytes.
    pub bytes: u64,
    /// How long the copy took, in milliseconds.
    pub millis: u64,
    /// The newest message in the copy: its row id and `created_at` (`null`
    /// when it holds no message).
    pub last_message_id: Option<i64>,
    pub last_message_at: Option<String>,
    /// The newest position of the event log in the copy (`null` when the
    /// log is empty): a consumer restored with the copy resumes after it.
    pub last_event_position: Option<i64>,
}

/// Copies the database at `db` (which must exist) to `to` (which must not).
pub fn backup(db: &Path, to: &Path) -> Result<BackupReport, String> {
    if to.exists() {
        return Err(format!(
            "{} already exists; a backup never overwrites a file",
            to.display()
        ));
    }
    let target = to
        .to_str()
        .ok_or_else(|| format!("the backup path {} is not UTF-8", to.display()))?;
    let conn = super::open_existing(db)?;
    let started = Instant::now();
    // The path is a bound parameter, never spliced into the SQL.
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| format!("backup failed: {e}"))?;
    let millis = started.elapsed().as_millis() as u64;
    drop(conn);

    // VACUUM INTO does not sync what it wrote; a backup that a power cut
    // can take back is no backup.
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot sync the backup {}: {e}", to.display()))?;
    let bytes = std::fs::metadata(to)
        .map_err(|e| format!("cannot read the backup {}: {e}", to.display()))?
        .len();

    let copy = Connection::open_with_flags(to, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open the backup {}: {e}", to.display()))?;
    let last = optional(copy.query_row(
        "SELECT id, created_at FROM messages ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
    ))
    .map_err(|e| format!("cannot read the backup {}: {}", to.display(), e))?;
    let last_event_position: Option<i64> = copy
        .query_row("SELECT max(position) FROM events", [], |r| r.get(0))
        .map_err(|e| format!("cannot read the backup {}: {}", to.display(), e))?;
    Ok(BackupReport {
        path: to.display().to_string(),
        bytes,
        millis,
        last_message_id: last.as_ref().map(|l| l.0),
        last_message_at: last.map(|l| l.1),
        last_event_position,
    })
}
