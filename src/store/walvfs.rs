//! A thin VFS over SQLite's default one ("unix") for the writer's
//! connection: it gathers the writes of a transaction's WAL frames and hands
//! them to the file in one write when the commit frame arrives.
//!
//! SQLite writes each WAL frame as two `pwrite`s (its 24-byte header, then
//! the page), so a batch of posts that dirtied 30 pages cost 60 system
//! calls, each taking the file's lock and touching the same page-cache
//! pages again: a quarter of the writer thread's time in a profile of
//! `post -t 8`. Here the frames of a transaction are kept in memory, in
//! order, and written as one run when the frame whose header carries a
//! non-zero commit size (the last of a commit) has been written, i.e.
//! inside the same `xWrite` call, before SQLite adds the frames to the WAL
//! index and publishes them to readers. Anything else done to the file
//! (read, sync, truncate, size, locks, file controls, close) first writes
//! out what is pending, so SQLite never sees a file that lacks a write it
//! made. A commit is therefore in the file (and, under `synchronous =
//! FULL`, synced: `xSync` flushes first) when COMMIT returns, as before.
//!
//! Only the `-wal` file of connections opened with [`NAME`] is wrapped;
//! every other file, and every other method, is the default VFS's own.
//!
//! One of the two places with `unsafe` code (the crate denies it elsewhere;
//! the other is the WAL-index header read in `readers.rs`): a VFS is C
//! function pointers over raw memory SQLite owns.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name to open a connection with (`Connection::open_with_flags_and_vfs`).
pub const NAME: &CStr = c"threadline-wal";
/// Size of a WAL frame header (SQLite's `WAL_FRAME_HDRSIZE`).
const FRAME_HEADER: c_int = 24;
/// Size of the WAL file header: frames start after it.
const WAL_HEADER: i64 = 32;
/// Most bytes handed to the base file's xWrite at once: the unix VFS
/// writes at most 128 KiB - 1 per call (`seekAndWriteFd` masks the length
/// with 0x1ffff) and reports a longer write as a full disk.
const MAX_WRITE: usize = 124 << 10;
/// Pending bytes past which they are written out even before a commit
/// frame (a transaction larger than the page cache spills frames early).
const MAX_PENDING: usize = 4 << 20;

/// Registers the VFS (once per process); `false` if SQLite has no default
/// VFS to wrap or refused it (the caller then opens the plain way).
pub fn register() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS, which
        // lives as long as the process; the copy we register is leaked, so
        // it does too, as sqlite3_vfs_register requires.
        unsafe {
            let base = ffi::sqlite3_vfs_find(std::ptr::null());
            if base.is_null() {
                return false;
            }
            let mut vfs = *base;
            vfs.szOsFile = inner_offset() as c_int + (*base).szOsFile;
            vfs.zName = NAME.as_ptr();
            vfs.pAppData = base.cast();
            vfs.pNext = std::ptr::null_mut();
            // The other methods are the base's own: the unix VFS's use
            // their `sqlite3_vfs` argument only for `pAppData` in xOpen,
            // which gets the base here.
            vfs.xOpen = Some(open);
            let vfs = Box::leak(Box::new(vfs));
            ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
        }
    })
}

/// A wrapped WAL file: SQLite's `sqlite3_file` (our methods), what is
/// pending, and the base VFS's file after it (at [`inner_offset`]).
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    pending: *mut Pending,
}

/// Writes not yet handed to the file: one contiguous run.
struct Pending {
    /// File offset of `bytes[0]`.
    start: i64,
    bytes: Vec<u8>,
    /// The last write was the header of a commit frame: its page, next,
    /// completes the commit.
    commit_next: bool,
}

/// Where the base VFS's file starts inside ours.
const fn inner_offset() -> usize {
    let size = std::mem::size_of::<WalFile>();
    (size + 15) & !15
}

/// The base VFS's file inside ours.
unsafe fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    file.cast::<u8>().add(inner_offset()).cast()
}

/// The base file's methods.
unsafe fn methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    &*(*inner(file)).pMethods
}

unsafe fn pending<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Pending {
    &mut *(*file.cast::<WalFile>()).pending
}

/// Writes out what is pending, in one call of the base file's xWrite.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    let p = pending(file);
    p.commit_next = false;
    if p.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Some(write) = methods(file).xWrite else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut rc = ffi::SQLITE_OK;
    let mut at = p.start;
    for chunk in p.bytes.chunks(MAX_WRITE) {
        // Fits: MAX_WRITE is below c_int::MAX.
        rc = write(inner(file), chunk.as_ptr().cast(), chunk.len() as c_int, at);
        if rc != ffi::SQLITE_OK {
            break;
        }
        at += chunk.len() as i64;
    }
    p.bytes.clear();
    rc
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let base = (*vfs).pAppData.cast::<ffi::sqlite3_vfs>();
    let Some(base_open) = (*base).xOpen else {
        return ffi::SQLITE_CANTOPEN;
    };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Not a WAL: the base's file in our space, its methods unchanged.
        return base_open(base, name, file, flags, out_flags);
    }
    (*file).pMethods = std::ptr::null();
    let rc = base_open(base, name, inner(file), flags, out_flags);
    if rc != ffi::SQLITE_OK || (*inner(file)).pMethods.is_null() {
        return rc;
    }
    (*file.cast::<WalFile>()).pending = Box::into_raw(Box::new(Pending {
        start: 0,
        bytes: Vec::with_capacity(256 << 10),
        commit_next: false,
    }));
    (*file).pMethods = &METHODS;
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let flushed = flush(file);
    let closed = methods(file)
        .xClose
        .map_or(ffi::SQLITE_OK, |f| f(inner(file)));
    drop(Box::from_raw((*file.cast::<WalFile>()).pending));
    (*file).pMethods = std::ptr::null();
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let Ok(len) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len);
    let p = pending(file);
    let contiguous = p.start + p.bytes.len() as i64 == offset;
    if !p.bytes.is_empty() && !contiguous {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    let p = pending(file);
    if p.bytes.is_empty() {
        p.start = offset;
    }
    p.bytes.extend_from_slice(bytes);
    let completes_commit = std::mem::take(&mut p.commit_next);
    // A frame header's second big-endian word is the database size after
    // a commit, zero in any other frame.
    let commit_header =
        amount == FRAME_HEADER && offset >= WAL_HEADER && bytes[4..8] != [0, 0, 0, 0];
    if completes_commit || p.bytes.len() >= MAX_PENDING {
        return flush(file);
    }
    p.commit_next = commit_header;
    ffi::SQLITE_OK
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    flushed(file, |m| {
        m.xRead.map_or(ffi::SQLITE_IOERR_READ, |f| {
            f(inner(file), buf, amount, offset)
        })
    })
}

/// Writes out what is pending, then runs `call` on the base file's
/// methods (a failed write is returned instead).
unsafe fn flushed(
    file: *mut ffi::sqlite3_file,
    call: impl FnOnce(&ffi::sqlite3_io_methods) -> c_int,
) -> c_int {
    match flush(file) {
        ffi::SQLITE_OK => call(methods(file)),
        failed => failed,
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushed(file, |m| {
        m.xTruncate
            .map_or(ffi::SQLITE_IOERR_TRUNCATE, |f| f(inner(file), size))
    })
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flushed(file, |m| {
        m.xSync
            .map_or(ffi::SQLITE_IOERR_FSYNC, |f| f(inner(file), flags))
    })
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushed(file, |m| {
        m.xFileSize
            .map_or(ffi::SQLITE_IOERR_FSTAT, |f| f(inner(file), size))
    })
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    flushed(file, |m| {
        m.xLock
            .map_or(ffi::SQLITE_IOERR_LOCK, |f| f(inner(file), level))
    })
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    flushed(file, |m| {
        m.xUnlock
            .map_or(ffi::SQLITE_IOERR_UNLOCK, |f| f(inner(file), level))
    })
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    flushed(file, |m| {
        m.xCheckReservedLock
            .map_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, |f| f(inner(file), out))
    })
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    flushed(file, |m| {
        m.xFileControl
            .map_or(ffi::SQLITE_NOTFOUND, |f| f(inner(file), op, arg))
    })
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    methods(file).xSectorSize.map_or(4096, |f| f(inner(file)))
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    methods(file)
        .xDeviceCharacteristics
        .map_or(0, |f| f(inner(file)))
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    flushed(file, |m| {
        m.xShmMap.map_or(ffi::SQLITE_IOERR_SHMMAP, |f| {
            f(inner(file), page, size, extend, out)
        })
    })
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    at: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    flushed(file, |m| {
        m.xShmLock
            .map_or(ffi::SQLITE_IOERR_SHMLOCK, |f| f(inner(file), at, n, flags))
    })
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // Nothing can be reported from here; a failed write shows at the next
    // call that flushes (the write is retried then).
    let _ = flush_keeping_on_error(file);
    if let Some(f) = methods(file).xShmBarrier {
        f(inner(file));
    }
}

/// [`flush`], but what failed to be written stays pending.
unsafe fn flush_keeping_on_error(file: *mut ffi::sqlite3_file) -> c_int {
    let p = pending(file);
    if p.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let (start, bytes) = (p.start, p.bytes.clone());
    let rc = flush(file);
    if rc != ffi::SQLITE_OK {
        let p = pending(file);
        p.start = start;
        p.bytes = bytes;
    }
    rc
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    flushed(file, |m| {
        m.xShmUnmap
            .map_or(ffi::SQLITE_OK, |f| f(inner(file), delete))
    })
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    flushed(file, |m| match m.xFetch {
        Some(f) => f(inner(file), offset, amount, out),
        None => {
            *out = std::ptr::null_mut();
            ffi::SQLITE_OK
        }
    })
}

unsafe extern "C" fn unfetch(file: *mut ffi::sqlite3_file, offset: i64, p: *mut c_void) -> c_int {
    methods(file)
        .xUnfetch
        .map_or(ffi::SQLITE_OK, |f| f(inner(file), offset, p))
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    fn open_writer(path: &std::path::Path) -> Connection {
        assert!(super::register(), "the VFS registers");
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), super::NAME)
            .expect("opens through the VFS");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = 20;",
        )
        .expect("configured");
        conn
    }

    #[test]
    fn a_reader_on_another_connection_sees_every_committed_row() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("t.db");
        let writer = open_writer(&path);
        writer
            .execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY, pad TEXT NOT NULL)")
            .expect("created");
        let reader = Connection::open(&path).expect("a plain reader opens");
        let mut expected = 0i64;
        for round in 0..200i64 {
            // Small commits, and now and then one larger than the page
            // cache (20 pages), whose frames spill before its commit frame,
            // and whose run of frames is written in several calls.
            let rows = if round % 25 == 0 { 1000 } else { 1 + round % 7 };
            writer.execute_batch("BEGIN IMMEDIATE").expect("begins");
            for _ in 0..rows {
                expected += 1;
                writer
                    .execute(
                        "INSERT INTO t (x, pad) VALUES (?1, ?2)",
                        rusqlite::params![expected, "p".repeat(300)],
                    )
                    .expect("inserts");
            }
            writer.execute_batch("COMMIT").expect("commits");
            let (count, max): (i64, i64) = reader
                .query_row("SELECT count(*), max(x) FROM t", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .expect("reads");
            assert_eq!((count, max), (expected, expected), "after round {round}");
            if round % 50 == 49 {
                // A checkpoint and a restart of the WAL in between.
                writer
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .expect("checkpoints");
            }
        }
        // A rolled-back transaction leaves nothing behind.
        writer.execute_batch("BEGIN IMMEDIATE").expect("begins");
        writer
            .execute("INSERT INTO t (x, pad) VALUES (-1, 'gone')", [])
            .expect("inserts");
        writer.execute_batch("ROLLBACK").expect("rolls back");
        // Whatever the writer leaves in its WAL when the process dies
        // without closing it: a new process reads the file as it is now.
        std::mem::forget(writer);
        let fresh = Connection::open(&path).expect("reopens");
        let ok: String = fresh
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("checks");
        assert_eq!(ok, "ok");
        let count: i64 = fresh
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("counts");
        assert_eq!(count, expected);
    }
}
