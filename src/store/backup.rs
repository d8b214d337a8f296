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
//!
//! A restore goes back in time, but consumers of the event log (an SSE
//! client with its `Last-Event-ID`, a follower with its cursor) may already
//! hold positions the old server gave out after the copy was taken. Were
//! the restored server to give those positions out again, such a consumer
//! would step over the new events as if it had seen them. So the copy's
//! log jumps ahead by [`RESTORE_POSITION_GAP`]: it gets one more row there,
//! an empty one that no reader returns (a `thread.status` of thread row 0,
//! which no thread has), and since a position is always the newest + 1, the restored
//! server numbers its events after it.
//!
//! Clients of `/v1/ws` resume by a thread's seq, which a restore does give
//! out again. The copy is marked for them too: it has no generation (see
//! [`super::generation`]), so the server that first serves a restore of it
//! gives the data a new one, and `connection.ready` tells the client.
//!
//! The copy is written under a temporary name beside `to` and renamed to
//! `to` only once it is whole and synced: a backup that dies midway (a
//! full disk, a timeout, a signal) leaves no file at `to`, which would
//! pass SQLite's integrity check with none of the data in it.

use std::path::Path;
use std::time::Instant;

use rusqlite::{params, Connection, OpenFlags};
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
    /// The position of the first event a server restored from the copy logs:
    /// past anything the copied server can have given out since.
    pub restored_positions_from: i64,
}

/// How far ahead of its newest event a copy's log numbers the next one: a
/// server would have to log four billion events after the copy for a
/// consumer's cursor to reach into what the restored server gives out. It
/// keeps positions far below 2^53 (JavaScript's exact integers) for as
/// many generations of restores as anyone will make.
pub const RESTORE_POSITION_GAP: i64 = 1 << 32;

/// Copies the database at `db` (which must exist) to `to` (which must not).
pub fn backup(db: &Path, to: &Path) -> Result<BackupReport, String> {
    if to.exists() {
        return Err(format!(
            "{} already exists; a backup never overwrites a file",
            to.display()
        ));
    }
    // Beside `to` (the same file system, for the rename), named for what
    // it is if it is ever left behind.
    let name = to
        .file_name()
        .ok_or_else(|| format!("the backup path {} names no file", to.display()))?;
    static COPIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let copy = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut partial_name = name.to_os_string();
    partial_name.push(format!(".{}-{copy}.partial", std::process::id()));
    let partial = to.with_file_name(partial_name);
    let target = partial
        .to_str()
        .ok_or_else(|| format!("the backup path {} is not UTF-8", to.display()))?;
    clear_stale_partials(to);
    let conn = super::open_existing(db)?;
    // Made here (VACUUM INTO writes into an empty file) and locked until
    // the copy is in place or gone: the lock is how the next backup to
    // this name tells a copy in progress from one whose process died.
    let _held = hold(&partial)?;
    let started = Instant::now();
    // The path is a bound parameter, never spliced into the SQL.
    let copied = conn.execute("VACUUM INTO ?1", [target]);
    let millis = started.elapsed().as_millis() as u64;
    drop(conn);
    let finished = copied
        .map_err(|e| format!("backup failed: {e}"))
        .and_then(|_| finish(&partial, to));
    let (last_event_position, restored_positions_from, last) = match finished {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            let _ = std::fs::remove_file(journal_of(&partial));
            return Err(e);
        }
    };
    if to.exists() {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "{} was created while the backup ran; a backup never overwrites a file",
            to.display()
        ));
    }
    std::fs::rename(&partial, to)
        .map_err(|e| format!("cannot move the backup into place at {}: {e}", to.display()))?;
    // The rename (a new directory entry) is durable once the directory is.
    let dir = to
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync the directory of {}: {e}", to.display()))?;
    let bytes = std::fs::metadata(to)
        .map_err(|e| format!("cannot read the backup {}: {e}", to.display()))?
        .len();

    Ok(BackupReport {
        path: to.display().to_string(),
        bytes,
        millis,
        last_message_id: last.as_ref().map(|l| l.0),
        last_message_at: last.map(|l| l.1),
        last_event_position,
        restored_positions_from,
    })
}

/// Creates the empty file `partial` and takes an exclusive `flock` on it,
/// held while the returned file is open (the whole backup: dropping it
/// earlier would close a descriptor of a file SQLite has open, dropping
/// SQLite's locks on it). A file system without `flock` copies unguarded.
fn hold(partial: &Path) -> Result<std::fs::File, String> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(partial)
        .map_err(|e| format!("cannot write the backup {}: {e}", partial.display()))?;
    if let Err(std::fs::TryLockError::Error(e)) = file.try_lock() {
        log::debug!("cannot lock {}: {e}", partial.display());
    }
    Ok(file)
}

/// A partial copy beside `to`, as [`backup`] names them:
/// `NAME.<pid>-<n>.partial` (and its `-journal`). Returns the pid.
fn partial_pid(name: &str, file: &str) -> Option<u32> {
    let rest = file.strip_prefix(name)?.strip_prefix('.')?;
    let rest = rest
        .strip_suffix(".partial")
        .or_else(|| rest.strip_suffix(".partial-journal"))?;
    let (pid, n) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` runs on this machine (`None`: cannot tell, no
/// `/proc`).
fn running(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    Some(Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes the partial copies of earlier backups to `to` whose process is
/// gone (killed mid-copy, it never cleaned up): no other process holds the
/// copy's lock, and its pid runs no process here. Any other is left alone
/// and named in the log (a backup in progress, or one this process cannot
/// judge). Failing to look is not the backup's failure.
fn clear_stale_partials(to: &Path) {
    let Some(name) = to.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let dir = to
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(std::path::PathBuf, u32)> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let pid = partial_pid(name, path.file_name()?.to_str()?)?;
            Some((path, pid))
        })
        .collect();
    // Each copy before its journal.
    found.sort();
    for (path, pid) in found {
        let is_journal = path.to_string_lossy().ends_with("-journal");
        // A lock held: a backup is writing it now (whatever its pid says,
        // from another PID namespace or host on a shared file system).
        let lock = match is_journal {
            true => None,
            false => match std::fs::File::open(&path) {
                Ok(file) => match file.try_lock() {
                    Err(std::fs::TryLockError::WouldBlock) => {
                        log::info!(
                            "{}: a backup in progress (process {pid}) is writing it; left alone",
                            path.display()
                        );
                        continue;
                    }
                    _ => Some(file),
                },
                // Removed meanwhile with its copy, say.
                Err(_) => continue,
            },
        };
        match running(pid) {
            Some(false) => match std::fs::remove_file(&path) {
                Ok(()) => log::warn!(
                    "removed {}, a partial backup left by process {pid}, which is no longer \
                     running (killed before it could clean up)",
                    path.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!(
                    "{} is a partial backup left by process {pid}, which is no longer \
                     running; it could not be removed ({e}): delete it",
                    path.display()
                ),
            },
            _ => log::warn!(
                "{} is a partial backup of process {pid}, which still runs (or this \
                 system cannot tell); left alone: delete it if no backup is running",
                path.display()
            ),
        }
        drop(lock);
    }
}

/// The newest message a copy holds: its row id and `created_at`.
type LastMessage = Option<(i64, String)>;

/// Completes the copy at `partial`: the gap in its log, its newest message
/// read back, synced to disk. Returns the log's newest position, the first
/// one a restored server logs, and the newest message.
fn finish(partial: &Path, to: &Path) -> Result<(Option<i64>, i64, LastMessage), String> {
    let copy = Connection::open_with_flags(partial, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| format!("cannot open the backup {}: {e}", to.display()))?;
    let (last_event_position, restored_positions_from) = leave_a_gap_in_the_log(&copy)
        .and_then(|gap| leave_no_generation(&copy).map(|()| gap))
        .map_err(|e| format!("cannot write the backup {}: {e}", to.display()))?;
    let last = optional(copy.query_row(
        "SELECT id, created_at FROM messages ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
    ))
    .map_err(|e| format!("cannot read the backup {}: {}", to.display(), e))?;
    copy.close()
        .map_err(|(_, e)| format!("cannot close the backup {}: {e}", to.display()))?;
    // VACUUM INTO does not sync what it wrote; a backup that a power cut
    // can take back is no backup.
    std::fs::File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot sync the backup {}: {e}", to.display()))?;
    Ok((last_event_position, restored_positions_from, last))
}

/// The rollback journal SQLite keeps beside `path` while writing to it.
fn journal_of(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push("-journal");
    name.into()
}

/// Removes the copy's generation, so that a server restored from it gives
/// the data a new one the first time it serves it (see
/// [`super::generation`]): the copy goes back in time, and a client must
/// be able to tell. Each restore copies the file anew, without one, so the
/// same copy restored twice comes up under two generations.
fn leave_no_generation(copy: &Connection) -> rusqlite::Result<()> {
    copy.execute("DELETE FROM generation", []).map(|_| ())
}

/// Adds the empty row [`RESTORE_POSITION_GAP`] past the copy's newest
/// event; returns that newest position (if any) and the position a restored
/// server logs first.
pub(crate) fn leave_a_gap_in_the_log(copy: &Connection) -> rusqlite::Result<(Option<i64>, i64)> {
    let newest: Option<i64> =
        copy.query_row("SELECT max(position) FROM events", [], |r| r.get(0))?;
    let gap = newest.unwrap_or(0) + RESTORE_POSITION_GAP;
    copy.execute(
        "INSERT INTO events (position, kind, thread_id, seq, created_at)
         VALUES (?1, 'thread.status', 0, 0, ?2)",
        params![gap, crate::domain::now()],
    )?;
    Ok((newest, gap + 1))
}

#[cfg(test)]
mod tests {
    use super::partial_pid;

    #[test]
    fn partial_copies_are_told_by_their_name_and_pid() {
        assert_eq!(partial_pid("x.db", "x.db.4242-0.partial"), Some(4242));
        assert_eq!(
            partial_pid("x.db", "x.db.4242-17.partial-journal"),
            Some(4242)
        );
        for other in [
            "x.db",
            "x.db.partial",
            "x.db.-0.partial",
            "x.db.4242-.partial",
            "x.db.42a-0.partial",
            "x.db.4242-0.partial.bak",
            "xx.db.4242-0.partial",
            "x.dbx.4242-0.partial",
            "x.db.4242-0-1.partial",
        ] {
            assert_eq!(partial_pid("x.db", other), None, "{other}");
        }
    }
}
