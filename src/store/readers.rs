//! The pooled read connections, each with a memory of the reader lookups
//! it made (`threads::reader_view`: a key's account, an agent, a thread and
//! a read mark), so a page read again and again costs one short statement
//! instead of the lookup's joins.
//!
//! What a connection remembers is exactly what the lookup would find again,
//! for as long as nobody has committed: each remembered lookup is tagged
//! with the database's version seen before it ran, and a read first looks
//! at that version again. It moves whenever another connection (this
//! server's writer, or another process: `threadline key revoke`, `thread
//! delete`, …) has committed since; then everything the connection
//! remembers is forgotten and looked up afresh. A read connection never
//! writes itself (`query_only`), so an unmoved version means an unchanged
//! database: a revoked key is refused from the very next request, as
//! without the memory. Any write (a post included) empties every
//! connection's memory, so it pays off when reads repeat between writes.
//!
//! The version, outside a transaction, is the WAL-index header itself
//! ([`WalIndex`]): the bytes SQLite compares to decide whether its own page
//! cache is still valid, read from the shared memory without a statement
//! or a lock. Inside a transaction (and wherever that memory cannot be
//! reached) it is `PRAGMA data_version`, which moves on exactly that test
//! and, as the transaction's first statement, also fixes its snapshot.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_void, CStr};
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Arc;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{ffi, Connection};

use super::accounts::Account;
use super::model::ReaderView;
use crate::domain::{Aid, ThreadId};
use crate::error::ApiResult;

/// Lookups one connection remembers before it starts over (a bound on
/// memory: a few MiB over the pool).
const MAX_REMEMBERED: usize = 1024;

/// What a reader lookup found: the key's account and the rest.
pub type Found = Arc<(Account, ReaderView)>;

/// A pooled read connection and what it remembers.
pub struct Reader {
    conn: Connection,
    remembered: RefCell<Remembered>,
    /// This connection's view of the WAL-index header, once looked for.
    wal_index: Cell<Option<Option<WalIndex>>>,
}

impl Deref for Reader {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

#[derive(Default)]
struct Remembered {
    /// The version the lookups below were made at.
    version: Option<Version>,
    /// By key and thread: the AID asked for, and what was found.
    lookups: HashMap<([u8; 32], ThreadId), Lookup>,
}

/// The database's version as a read saw it: two equal versions mean that
/// nobody committed in between.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    /// The WAL-index header's 48 bytes (see [`WalIndex`]).
    Header([u32; HEADER_WORDS]),
    /// `PRAGMA data_version`.
    Pragma(i64),
}

/// The AID a lookup asked for, and what it found.
type Lookup = (Option<String>, Option<Found>);

impl Reader {
    /// [`super::lookup::reader_view`] (`None`: the key is unknown or
    /// revoked), from memory when nothing was committed since it ran.
    /// `in_transaction`: the caller's read transaction has not run a
    /// statement yet, and the version check must be the one that fixes its
    /// snapshot (so that what `f` reads next agrees with what is
    /// remembered): the pragma, not the header.
    pub fn reader_view(
        &self,
        key_hash: &[u8; 32],
        aid: Option<&Aid>,
        id: ThreadId,
        in_transaction: bool,
    ) -> ApiResult<Option<Found>> {
        // `None`: a commit was being published as the header was read; this
        // lookup is neither answered from memory nor remembered.
        let version = match self.wal_index() {
            Some(index) if !in_transaction => index.header().map(Version::Header),
            _ => Some(Version::Pragma(super::data_version(&self.conn)?)),
        };
        let mut remembered = self.remembered.borrow_mut();
        if version.is_none() || remembered.version != version {
            remembered.lookups.clear();
            remembered.version = version;
        }
        let asked = aid.map(Aid::as_str);
        if version.is_some() {
            if let Some((for_aid, found)) = remembered.lookups.get(&(*key_hash, id)) {
                if for_aid.as_deref() == asked {
                    return Ok(found.clone());
                }
            }
        }
        // Looked up after the version was read: if anything commits in
        // between, the next read sees the version move and looks again.
        let found = super::lookup::reader_view(&self.conn, key_hash, aid, id)?.map(Arc::new);
        if version.is_some() {
            if remembered.lookups.len() >= MAX_REMEMBERED {
                remembered.lookups.clear();
            }
            remembered
                .lookups
                .insert((*key_hash, id), (asked.map(str::to_owned), found.clone()));
        }
        Ok(found)
    }

    /// The WAL-index of this connection, looked for at its first read (the
    /// pragma run just before maps it); `None` when it has none.
    fn wal_index(&self) -> Option<WalIndex> {
        if let Some(known) = self.wal_index.get() {
            return known;
        }
        let found = super::data_version(&self.conn)
            .ok()
            .and_then(|_| WalIndex::of(&self.conn));
        if found.is_none() {
            log::debug!("no WAL-index to look at: reads check PRAGMA data_version");
        }
        self.wal_index.set(Some(found));
        found
    }
}

/// 32-bit words in one copy of the WAL-index header (48 bytes).
const HEADER_WORDS: usize = 12;

/// The WAL-index header of a connection's database, in the shared memory
/// SQLite maps for it (https://www.sqlite.org/walformat.html, 2.2): two
/// copies of a 48-byte header at offset 0. Every commit rewrites it (its
/// change counter, last frame and checksums move; a WAL reset changes the
/// salts), copy 1 first, a memory barrier, then copy 0. SQLite's readers
/// read copy 0, a barrier, copy 1, trust them only when equal, and drop
/// their page cache when they differ from the header they last saw: that
/// drop is what moves `PRAGMA data_version`. [`WalIndex::header`] is the
/// same test without a statement, a read transaction or its lock calls.
#[derive(Clone, Copy)]
struct WalIndex(NonNull<AtomicU32>);

// SAFETY: the pointer is into a shared mapping that stays mapped for as
// long as the connection it came from is open (see `WalIndex::of`); it
// moves between threads only together with that connection (a `Reader`
// owns both), and is only read, atomically.
#[allow(unsafe_code)]
unsafe impl Send for WalIndex {}

// Unsafe code (denied elsewhere but here and in `walvfs`): raw SQLite
// shared memory, see above.
#[allow(unsafe_code)]
impl WalIndex {
    /// The first region of `conn`'s WAL-index, as SQLite itself has mapped
    /// it; `None` unless `conn` is a file database in WAL mode, in normal
    /// locking mode, that has read once (so the region is mapped).
    fn of(conn: &Connection) -> Option<WalIndex> {
        // Only then does the main file have shared memory to map: asking
        // for it otherwise would create a `-shm` file SQLite never uses.
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .ok()?;
        let locking: String = conn
            .query_row("PRAGMA locking_mode", [], |r| r.get(0))
            .ok()?;
        if !mode.eq_ignore_ascii_case("wal") || !locking.eq_ignore_ascii_case("normal") {
            return None;
        }
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        const MAIN: &CStr = c"main";
        // SAFETY: the handle is this open connection's; the file control
        // only writes the main database file's handle into `file`.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                conn.handle(),
                MAIN.as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                (&raw mut file).cast::<c_void>(),
            )
        };
        if rc != ffi::SQLITE_OK || file.is_null() {
            return None;
        }
        // SAFETY: `file` is the open main file of `conn`; its methods
        // table is SQLite's and lives as long as the file. xShmMap exists
        // from version 2 of that table on.
        let map = unsafe {
            let methods = (*file).pMethods;
            if methods.is_null() || (*methods).iVersion < 2 {
                return None;
            }
            (*methods).xShmMap?
        };
        let mut region: *mut c_void = std::ptr::null_mut();
        // SAFETY: region 0 (32 KiB, the size SQLite's WAL asks for) without
        // extending the file: the call that SQLite's own WAL makes, which
        // returns the mapping it already has (a null pointer if there is
        // none yet). That mapping stays until the connection closes its
        // WAL: when it is closed, or leaves WAL mode, which a query-only
        // reader never does; the `Reader` holding this pointer owns the
        // connection, so the pointer never outlives it.
        let rc = unsafe {
            map(
                file,
                0,
                32 * 1024,
                0,
                (&raw mut region).cast::<*mut c_void>(),
            )
        };
        if rc != ffi::SQLITE_OK || region.is_null() || !region.cast::<AtomicU32>().is_aligned() {
            return None;
        }
        NonNull::new(region.cast::<AtomicU32>()).map(WalIndex)
    }

    /// The header's first copy if both copies agree; `None` while a commit
    /// is rewriting it (copy 1 written, copy 0 not yet).
    fn header(self) -> Option<[u32; HEADER_WORDS]> {
        let word = |i: usize| {
            // SAFETY: the region is at least 32 KiB and page-aligned, so
            // its first 2 × 48 bytes are aligned words in bounds; other
            // processes write them, hence atomic loads (the memory is
            // shared, and Rust must not assume it unchanged).
            unsafe { self.0.add(i).as_ref() }.load(Ordering::Relaxed)
        };
        let first: [u32; HEADER_WORDS] = std::array::from_fn(word);
        // Copy 0 before copy 1, as SQLite's readers do: a writer stores
        // them in the other order, so equal copies are a whole header.
        fence(Ordering::Acquire);
        let second: [u32; HEADER_WORDS] = std::array::from_fn(|i| word(HEADER_WORDS + i));
        (first == second).then_some(first)
    }
}

/// Opens [`Reader`]s for the pool: SQLite connections as
/// [`SqliteConnectionManager`] opens them, each with an empty memory.
pub struct ReaderManager(pub SqliteConnectionManager);

impl r2d2::ManageConnection for ReaderManager {
    type Connection = Reader;
    type Error = rusqlite::Error;

    fn connect(&self) -> Result<Reader, rusqlite::Error> {
        Ok(Reader {
            conn: self.0.connect()?,
            remembered: RefCell::default(),
            wal_index: Cell::new(None),
        })
    }

    fn is_valid(&self, reader: &mut Reader) -> Result<(), rusqlite::Error> {
        self.0.is_valid(&mut reader.conn)
    }

    fn has_broken(&self, reader: &mut Reader) -> bool {
        self.0.has_broken(&mut reader.conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{init, Role};

    /// A WAL database with one table, its writer, and a pooled reader on it.
    fn open() -> (tempfile::TempDir, Connection, Reader) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("t.db");
        let writer = Connection::open(&path).expect("open the writer");
        init(&writer, Role::Writer).expect("writer pragmas");
        writer
            .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .expect("a first commit");
        let manager = ReaderManager(
            SqliteConnectionManager::file(&path).with_init(|c| init(c, Role::Reader)),
        );
        let reader = r2d2::ManageConnection::connect(&manager).expect("open a reader");
        (dir, writer, reader)
    }

    fn header(reader: &Reader) -> [u32; HEADER_WORDS] {
        let index = reader.wal_index().expect("a WAL database has a WAL-index");
        index.header().expect("no commit is under way")
    }

    #[test]
    fn the_header_moves_with_another_connections_commit_and_only_then() {
        let (_dir, writer, reader) = open();
        let before = header(&reader);
        let version = super::super::data_version(&reader).expect("data_version");
        reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .expect("a read");
        assert!(before == header(&reader), "a read changed nothing");

        writer
            .execute("INSERT INTO t VALUES (2)", [])
            .expect("a commit");
        let after = header(&reader);
        assert!(before != after, "a commit must move the header");
        // The pragma it stands for moved too.
        assert_ne!(
            super::super::data_version(&reader).expect("data_version"),
            version
        );
        assert!(after == header(&reader), "nothing committed since");
    }

    #[test]
    fn a_wal_reset_and_a_new_commit_move_the_header() {
        let (_dir, writer, reader) = open();
        writer
            .execute("INSERT INTO t VALUES (2)", [])
            .expect("a commit");
        let before = header(&reader);
        writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
            .expect("a checkpoint");
        let reset = header(&reader);
        // The WAL starts again from frame 0: frame counts repeat, the salts
        // do not.
        writer
            .execute("INSERT INTO t VALUES (3)", [])
            .expect("a commit");
        let after = header(&reader);
        assert!(
            after != before,
            "a commit after a reset must move the header"
        );
        assert!(
            after != reset,
            "a commit after a reset must move the header"
        );
    }

    #[test]
    fn a_database_not_in_wal_mode_has_no_header_to_read() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("t.db");
        let manager = ReaderManager(SqliteConnectionManager::file(&path));
        let reader = r2d2::ManageConnection::connect(&manager).expect("open a reader");
        assert!(reader.wal_index().is_none());
        assert!(
            !dir.path().join("t.db-shm").exists(),
            "no -shm file created"
        );
    }
}
