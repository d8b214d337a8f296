//! SQLite storage, the ground floor: it imports nothing from the layers
//! above it (http, realtime, turn). Reads go through an r2d2 pool of
//! connections, always off the async workers (`Store::read`); every write
//! goes through the one [`Writer`] thread, which commits concurrent writes in
//! small batches, logs their events in the same transactions (`events`), and
//! reports each committed batch to the listener wired at startup.
//!
//! The functions in the submodules are synchronous and take a `&Connection`;
//! handlers never see SQL.

pub mod accounts;
pub mod admin;
pub mod backup;
pub mod db;
pub mod events;
pub mod generation;
pub mod identities;
mod lookup;
pub mod messages;
pub mod migrate;
pub mod model;
pub mod pages;
pub mod pg;
mod readers;
mod row;
pub mod threads;
pub mod turn;
mod walvfs;
pub mod webhooks;
mod writer;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use crate::domain::{Aid, ThreadId};
use crate::error::{ApiError, ApiResult};
use crate::events::CommitListener;

pub use db::{Db, Tx};
pub use writer::{answer_here, WriteCtx, Writer};

/// How long a statement waits for another connection's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections in the pool.
const READ_POOL_SIZE: u32 = 8;
/// The page size of a database this server creates (SQLite's default is
/// 4096).
const NEW_PAGE_SIZE: u32 = 2048;

/// What a connection is for: each role gets its PRAGMAs from [`init`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The one writer thread's connection.
    Writer,
    /// A pooled read-only connection.
    Reader,
    /// The checkpointer, the revocation watcher and the command line.
    Maintenance,
}

/// Sets a connection's PRAGMAs: the one place they are chosen.
pub fn init(conn: &Connection, role: Role) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // For a new database only (an existing file keeps its page size), and
    // before journal_mode = WAL, which fixes it. Every commit writes each
    // page it dirtied to the WAL whole, and a post dirties pages of which it
    // changes a few bytes (its thread's tail of the (thread_id, seq) index,
    // the thread's row): half the page, about half the bytes per frame and
    // checksum. 2 KiB still holds several messages of ordinary length.
    conn.execute_batch(&format!("PRAGMA page_size = {NEW_PAGE_SIZE}"))?;
    match role {
        // A page cache per reader (16 MiB) and the file mapped for reads.
        Role::Reader => conn.execute_batch(
            "PRAGMA foreign_keys = ON; PRAGMA query_only = ON;
             PRAGMA cache_size = -16384; PRAGMA mmap_size = 268435456;",
        )?,
        // WAL: readers never block the writer. A 64 MiB page cache keeps the
        // indexes a write touches in memory as the database grows. NORMAL: a commit is durable against
        // a crash of this process (the WAL is written before COMMIT returns); only
        // an OS crash or power loss can lose the last transactions.
        Role::Writer | Role::Maintenance => conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -65536;",
        )?,
    }
    if role == Role::Writer {
        // Checkpoints copy the WAL into the database and sync it: tens of
        // milliseconds that would stall every write queued behind the commit
        // that triggered one. The writer never checkpoints; a background
        // thread does, without blocking it.
        // After a restart of the WAL, its file is cut back to 256 MiB: more
        // than a busy second of posts writes (~180 MB at 40,000 posts/s), so
        // under load a restart reuses the file's blocks instead of freeing
        // them in an `ftruncate` (~20 ms on the writer, measured) and
        // allocating them again. A quiet WAL is truncated to nothing anyway.
        conn.execute_batch(
            "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 268435456;",
        )?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// When a commit is durable: the writer connection's `PRAGMA synchronous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// `synchronous = NORMAL`: the WAL is written before COMMIT returns, so
    /// a commit survives a crash (or `kill -9`) of the process; the last
    /// commits before an OS crash or power loss may be lost.
    Normal,
    /// `synchronous = FULL`: the WAL is also synced to disk at every commit,
    /// so a commit survives an OS crash or power loss too.
    Full,
}

impl Durability {
    /// The name `--durability` and `/healthz` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Normal => "normal",
            Durability::Full => "full",
        }
    }

    /// Sets this level on the writer's connection (over `init`'s NORMAL),
    /// then reads the PRAGMA back: what is returned is what SQLite applies,
    /// not what was asked for.
    fn apply(self, conn: &Connection) -> rusqlite::Result<Option<Durability>> {
        conn.execute_batch(match self {
            Durability::Normal => "PRAGMA synchronous = NORMAL",
            Durability::Full => "PRAGMA synchronous = FULL",
        })?;
        let level: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        // 1 = NORMAL, 2 = FULL (0 = OFF and 3 = EXTRA are never set here).
        Ok(match level {
            1 => Some(Durability::Normal),
            2 => Some(Durability::Full),
            _ => None,
        })
    }
}

/// Like [`open_connection`], but refuses a file that does not exist instead
/// of creating an empty database there (for every command but `serve` and
/// `agent create`: a mistyped `--db` must not answer "no such agent").
pub fn open_existing(path: &Path) -> Result<Connection, String> {
    if !path.is_file() {
        return Err(format!(
            "no database at {} (check --db or THREADLINE_DB)",
            path.display()
        ));
    }
    open_connection(path)
}

/// Opens (creating if needed) the database file for maintenance work,
/// configures it and applies the migrations it lacks. Used by the command
/// line and the server's helper threads. A database written by a newer
/// threadline is refused before it is touched.
pub fn open_connection(path: &Path) -> Result<Connection, String> {
    open_as(path, Role::Maintenance)
}

/// [`open_connection`], for a connection of the given role.
fn open_as(path: &Path, role: Role) -> Result<Connection, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            return Err(format!(
                "cannot open database {}: the directory {} does not exist",
                path.display(),
                dir.display()
            ));
        }
    }
    // The writer's WAL frames go to the file one run per commit (`walvfs`).
    let conn = if role == Role::Writer && walvfs::register() {
        let flags = rusqlite::OpenFlags::default();
        Connection::open_with_flags_and_vfs(path, flags, walvfs::NAME)
    } else {
        Connection::open(path)
    }
    .map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
    migrate::refuse_newer_database(&conn, path)?;
    init(&conn, role).map_err(|e| format!("cannot use database {}: {e}", path.display()))?;
    migrate::migrate(&conn, path)?;
    Ok(conn)
}

/// How the store keeps its event log.
#[derive(Debug, Clone, Copy)]
pub struct LogSettings {
    /// Events older than this are pruned.
    pub retention: Duration,
}

/// The server's handle on its database, SQLite or PostgreSQL: what the
/// layers above call. Reads get a [`Db`], writes a [`Tx`].
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// The database's generation, settled when the store opened (see
    /// [`generation`]): it changes only while no server serves the data.
    generation: Arc<str>,
    /// Final pages of history, assembled (see [`pages`]).
    pages: Arc<pages::PageCache>,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqliteStore),
    Pg(pg::PgStore),
}

/// What a write will look up, said before it runs: PostgreSQL's writer
/// finds what its batch's jobs name in one statement per kind, instead of
/// one per job (SQLite's writer keeps a cache and ignores it). Only a
/// hint: the write still looks each up itself.
#[derive(Debug, Clone, Default)]
pub struct WriteHint {
    /// The SHA-256 of the caller's login key.
    pub key: Option<[u8; 32]>,
    /// The acting agent's AID.
    pub agent: Option<crate::domain::Aid>,
    /// The thread written to.
    pub thread: Option<crate::domain::ThreadId>,
}

/// Where the server keeps its data.
#[derive(Debug, Clone)]
pub enum Location<'a> {
    /// One SQLite file.
    Sqlite(&'a Path),
    /// A PostgreSQL database shared by every node (`postgres://…`).
    Pg(&'a str),
}

impl Store {
    /// Opens the database for serving. On SQLite, the writer reports each
    /// committed batch (events and timing) to `listener`, and `follower` is
    /// not used;
    /// on PostgreSQL, each local commit's signals and timing go to
    /// `listener`, while the logged events of every node's commits reach
    /// `follower` from the log, in position order. A background thread
    /// prunes the log by `log.retention`. The SQLite writer thread asks for
    /// `writer_slice` (the PostgreSQL writer does not: not measured there).
    pub fn open(
        at: Location<'_>,
        log: LogSettings,
        listener: Arc<dyn CommitListener>,
        follower: Arc<dyn CommitListener>,
        durability: Durability,
        pg_pool_size: u32,
        writer_slice: crate::sched::ThreadSlice,
    ) -> Result<Store, String> {
        let (backend, generation) = match at {
            Location::Sqlite(path) => {
                drop(follower);
                let (store, generation) =
                    SqliteStore::open(path, log, listener, durability, writer_slice)?;
                (Backend::Sqlite(store), generation)
            }
            Location::Pg(url) => {
                let (store, generation) =
                    pg::PgStore::open(url, log, listener, follower, durability, pg_pool_size)?;
                (Backend::Pg(store), generation)
            }
        };
        Ok(Store {
            backend,
            generation: generation.into(),
            pages: Arc::new(pages::PageCache::new(pages::DEFAULT_BUDGET)),
        })
    }

    /// The database's generation: an opaque id that changes exactly when
    /// the data may have gone back (a restore), which `connection.ready`
    /// tells every socket (see [`generation`]).
    pub fn generation(&self) -> &str {
        &self.generation
    }

    /// The store's cache of final history pages.
    pub fn pages(&self) -> &Arc<pages::PageCache> {
        &self.pages
    }

    /// This node's id on a shared store (PostgreSQL), the one its database
    /// session shows; `None` on SQLite.
    pub fn node(&self) -> Option<String> {
        match &self.backend {
            Backend::Pg(p) => Some(p.node().to_owned()),
            Backend::Sqlite(_) => None,
        }
    }

    /// Hands a signal raised outside a write (`typing_without_sending`) to
    /// the other nodes, which publish it to their sockets; nothing to do on
    /// SQLite (one process). The caller publishes it on this node.
    pub async fn share_signal(&self, event: crate::events::Event) -> ApiResult<()> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Pg(p) => {
                let p = p.clone();
                actix_web::web::block(move || p.share_signal_blocking(event)).await?
            }
        }
    }

    /// Whether this store is on PostgreSQL (shared by several nodes).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Pg(_))
    }

    /// Runs `f` on a PostgreSQL connection, in its own transaction, for
    /// what only a shared store keeps in the database (connect grants);
    /// `None` on SQLite, where the caller keeps it in memory.
    pub async fn shared<T, F>(&self, f: F) -> Option<ApiResult<T>>
    where
        F: FnOnce(&pg::PgConn) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Pg(p) => {
                let p = p.clone();
                let done = actix_web::web::block(move || p.write_blocking(|c, _| f(c))).await;
                Some(done.map_err(ApiError::from).and_then(|r| r))
            }
        }
    }

    /// Runs `f` in one read transaction, off the async workers.
    pub async fn read<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(Db<'_>) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(s) => s.read(move |c| f(Db::Sqlite(c))).await,
            Backend::Pg(p) => {
                let p = p.clone();
                actix_web::web::block(move || p.read_blocking(|c| f(Db::Pg(c)))).await?
            }
        }
    }

    /// [`Store::read`] for short, indexed reads on a hot path: on SQLite,
    /// when a pooled connection is free at once, `f` runs right here on the
    /// calling async worker instead of hopping to a blocking thread and
    /// back (the hop cost more than such a read itself, measured); when
    /// none is free, and on PostgreSQL (a network round trip), as
    /// [`Store::read`] does. Only for reads of a few rows by key.
    pub async fn read_here<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(Db<'_>) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(s) => {
                s.on_reader(true, move |reader| {
                    in_read_transaction(reader, move |c| f(Db::Sqlite(c)))
                })
                .await
            }
            Backend::Pg(_) => self.read(f).await,
        }
    }

    /// Looks up what a read of thread `id` checks (the key's account, the
    /// agent `aid`, the thread, the agent's read mark: `None` when the key
    /// is unknown or revoked), then runs `f` with it on the same
    /// connection, on the worker as [`Store::read_here`] does. With
    /// `single` (for an `f` that reads nothing the lookup must agree with),
    /// without `BEGIN` and `COMMIT` around it: a statement outside a
    /// transaction reads its own snapshot, and those two statements cost as
    /// much as a short read itself. On
    /// SQLite the connection answers the lookup from memory while nobody
    /// has committed since it made it (see `store::readers`).
    pub async fn read_reader_view<T, F>(
        &self,
        single: bool,
        key_hash: [u8; 32],
        aid: Option<Aid>,
        id: ThreadId,
        f: F,
    ) -> ApiResult<T>
    where
        F: FnOnce(Db<'_>, Option<readers::Found>) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let s = match &self.backend {
            Backend::Sqlite(s) => s,
            Backend::Pg(_) => {
                return self
                    .read(move |db| {
                        let found = db::threads::reader_view(db, &key_hash, aid.as_ref(), id)?;
                        f(db, found.map(Arc::new))
                    })
                    .await
            }
        };
        s.on_reader(true, move |reader| {
            let read = |_: &Connection| {
                let found = reader.reader_view(&key_hash, aid.as_ref(), id, !single)?;
                f(Db::Sqlite(reader), found)
            };
            if single {
                outside_transaction(reader, read)
            } else {
                in_read_transaction(reader, read)
            }
        })
        .await
    }

    /// Runs `f` as a write; resolves after its commit (so a success means
    /// durable), or with the error. It joins the writer's next batch (on
    /// PostgreSQL, this node's writer).
    pub async fn write<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut Tx<'_, '_>) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.write_hinted(WriteHint::default(), f).await
    }

    /// [`Store::write`], saying what `f` will look up ([`WriteHint`]).
    pub async fn write_hinted<T, F>(&self, hint: WriteHint, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut Tx<'_, '_>) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(s) => s.write(move |ctx| f(&mut Tx::sqlite(ctx))).await,
            Backend::Pg(p) => p.write(hint, move |c, ctx| f(&mut Tx::pg(c, ctx))).await,
        }
    }

    /// [`Store::write_hinted`] for a write that may run more than once,
    /// only its last run counting: on PostgreSQL a post runs without a
    /// savepoint of its own, and runs again when a row of another job
    /// undoes its batch (at COMMIT, say), rather than failing with it.
    pub async fn write_repeatable<T, F>(&self, hint: WriteHint, f: F) -> ApiResult<T>
    where
        F: Fn(&mut Tx<'_, '_>) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(s) => s.write(move |ctx| f(&mut Tx::sqlite(ctx))).await,
            Backend::Pg(p) => {
                p.write_repeatable(hint, move |c, ctx| f(&mut Tx::pg(c, ctx)))
                    .await
            }
        }
    }

    /// When a commit is durable, as the writer's database reported it
    /// (SQLite's `synchronous`, PostgreSQL's `synchronous_commit`).
    pub fn durability(&self) -> Durability {
        match &self.backend {
            Backend::Sqlite(s) => s.durability,
            Backend::Pg(p) => p.durability(),
        }
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        self.read(|db| match db {
            Db::Sqlite(c) => Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?),
            Db::Pg(c) => Ok(c.one("SELECT 1::bigint", &[])?.get::<_, i64>(0)),
        })
        .await
        .is_ok()
    }

    /// Folds the WAL back into the main file (at shutdown; SQLite only).
    pub async fn checkpoint(&self) -> ApiResult<()> {
        match &self.backend {
            Backend::Sqlite(s) => s.checkpoint().await,
            Backend::Pg(_) => Ok(()),
        }
    }
}

/// The SQLite store: a read pool and the writer.
#[derive(Clone)]
struct SqliteStore {
    pool: r2d2::Pool<readers::ReaderManager>,
    writer: Writer,
    /// The writer connection's `synchronous` level, read back at open.
    durability: Durability,
    /// The checkpointer thread runs while any clone of the store is alive.
    _alive: Arc<()>,
}

impl SqliteStore {
    /// Opens the database at `path` for serving, and returns it with its
    /// generation (given one now if it has none). The writer reports each
    /// committed batch's events to `listener`; a background thread prunes
    /// the log by `log.retention`.
    pub fn open(
        path: &Path,
        log: LogSettings,
        listener: Arc<dyn CommitListener>,
        durability: Durability,
        writer_slice: crate::sched::ThreadSlice,
    ) -> Result<(SqliteStore, String), String> {
        let writer_conn = open_as(path, Role::Writer)?;
        let generation = generation::settle(&writer_conn)
            .map(|settled| generation::announce(settled, &path.display().to_string()))
            .map_err(|e| format!("cannot read the generation of {}: {e:?}", path.display()))?;
        // A file created before new files got 2 KiB pages keeps its own
        // size; `threadline backup` writes a copy with the new one.
        if let Ok(size) = writer_conn.query_row("PRAGMA page_size", [], |r| r.get::<_, u32>(0)) {
            if size != NEW_PAGE_SIZE {
                log::info!(
                    "database {} has {size}-byte pages; posts cost less with {NEW_PAGE_SIZE} \
                     (a `threadline backup` copy has them: docs/operations.md, \"Page size\")",
                    path.display()
                );
            }
        }
        // Only the writer commits, so its level is the server's.
        let durability = durability
            .apply(&writer_conn)
            .map_err(|e| format!("cannot configure database {}: {e}", path.display()))?
            .ok_or_else(|| format!("database {} ignored PRAGMA synchronous", path.display()))?;
        let alive = Arc::new(());
        let progress = Arc::new(writer::WalProgress::default());
        start_checkpointer(
            open_connection(path)?,
            Arc::downgrade(&alive),
            progress.clone(),
        );
        let manager = readers::ReaderManager(
            SqliteConnectionManager::file(path).with_init(|c| init(c, Role::Reader)),
        );
        let pool = r2d2::Pool::builder()
            .max_size(READ_POOL_SIZE)
            // A file-backed connection does not go stale; checking each one
            // on checkout costs a statement parse per request.
            .test_on_check_out(false)
            .build(manager)
            .map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
        let writer = Writer::start(writer_conn, listener, progress, writer_slice)?;
        start_pruner(writer.clone(), Arc::downgrade(&alive), log.retention);
        Ok((
            SqliteStore {
                pool,
                writer,
                durability,
                _alive: alive,
            },
            generation,
        ))
    }

    /// Runs `f` on a pooled read connection, off the async workers.
    pub async fn read<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&Connection) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.on_reader(false, move |reader| in_read_transaction(reader, f))
            .await
    }

    /// Runs `f` on a pooled read connection: with `here`, right on the
    /// calling async worker when one is free at once (see
    /// [`Store::read_here`]); otherwise on a blocking thread.
    async fn on_reader<T, F>(&self, here: bool, f: F) -> ApiResult<T>
    where
        F: FnOnce(&readers::Reader) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        if here {
            if let Some(reader) = self.pool.try_get() {
                return f(&reader);
            }
        }
        let pool = self.pool.clone();
        actix_web::web::block(move || {
            let reader = pool.get()?;
            f(&reader)
        })
        .await?
    }

    /// Runs `f` in the writer's current transaction batch; resolves after the
    /// batch has committed (so a success means durable), or with the error.
    pub async fn write<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.writer.write(f).await
    }

    /// Folds the WAL back into the main file (at shutdown).
    pub async fn checkpoint(&self) -> ApiResult<()> {
        self.write(|ctx| {
            // A checkpoint cannot run inside the batch's transaction, so ask
            // the writer to run it after the commit.
            ctx.checkpoint_after_commit();
            Ok(())
        })
        .await
    }
}

/// Runs `f` on `conn` in one read transaction: one snapshot for all of
/// its statements, and one file lock instead of one per statement.
fn in_read_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> ApiResult<T>,
) -> ApiResult<T> {
    outside_transaction(conn, |conn| {
        conn.prepare_cached("BEGIN")?.execute([])?;
        let result = f(conn);
        conn.prepare_cached("COMMIT")?.execute([])?;
        result
    })
}

/// Runs `f` on `conn` in autocommit mode: each statement its own snapshot
/// (after rolling back a transaction a read that never finished left open).
fn outside_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> ApiResult<T>,
) -> ApiResult<T> {
    if !conn.is_autocommit() {
        // Left open by a read that never finished (a panic): reset.
        conn.execute_batch("ROLLBACK")?;
    }
    f(conn)
}

/// How often the background thread looks at the WAL.
const CHECKPOINT_TICK: Duration = Duration::from_millis(100);
/// How long without a commit before a WAL is truncated.
const TRUNCATE_WHEN_QUIET: Duration = Duration::from_secs(1);

/// Checkpoints the WAL in the background (PASSIVE: never blocks the writer or
/// readers), until the store is gone. `progress` counts the writer's committed
/// batches; the checkpointer records in it how far it copied.
///
/// - After `CHECKPOINT_AFTER_COMMITS` batches, it copies the WAL into the
///   database, so a busy WAL stays short. Not sooner: once a WAL is fully
///   copied, the next commit starts it over, and SQLite syncs the new WAL
///   header to disk, a few hundred microseconds on that commit. Checkpointing
///   every few commits made every other commit of a slow trickle pay that.
/// - Once writes have stopped for `TRUNCATE_WHEN_QUIET`, it truncates the WAL:
///   otherwise it stays full until the next write, and every page a reader
///   fetches is first looked up in it.
/// - It leaves the writer's catch-up (see `writer::run`) as little to do as
///   it can: see [`copy_back`].
fn start_checkpointer(
    conn: Connection,
    alive: std::sync::Weak<()>,
    progress: Arc<writer::WalProgress>,
) {
    let spawned = std::thread::Builder::new()
        .name("threadline-checkpoint".into())
        .spawn(move || {
            // The database file's own handle, to sync what the checkpoints
            // copied (SQLite's PASSIVE checkpoint does not while the writer
            // commits). Without one, the writer's catch-up syncs it all.
            let db_file = conn.path().and_then(|p| std::fs::File::open(p).ok());
            let mut at_checkpoint = 0;
            let mut seen = 0;
            let mut changed = Instant::now();
            let mut truncated = true;
            while alive.strong_count() > 0 {
                std::thread::sleep(CHECKPOINT_TICK);
                let now = progress.commits.load(Ordering::Relaxed);
                if now != seen {
                    (seen, changed, truncated) = (now, Instant::now(), false);
                }
                if now - at_checkpoint >= writer::CHECKPOINT_AFTER_COMMITS {
                    at_checkpoint = now;
                    // All of the WAL copied means every batch counted
                    // before is in the database, and the writer's catch-up
                    // has only the rest.
                    if let Some(start) = copy_back(&conn, db_file.as_ref(), &progress, now) {
                        progress.copied.fetch_max(start, Ordering::Relaxed);
                    }
                } else if !truncated && changed.elapsed() >= TRUNCATE_WHEN_QUIET {
                    at_checkpoint = now;
                    truncated = true;
                    truncate_quiet_wal(&conn);
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("no background checkpoints (cannot start a thread: {e})");
    }
}

/// Most rounds of one background checkpoint (see [`copy_back`]).
const COPY_BACK_ROUNDS: u32 = 3;
/// A round during which no more than this many batches were committed is
/// the last (see [`copy_back`]).
const COPY_BACK_SHORT: u64 = 16;

/// One background checkpoint, `started` batches committed when it began:
/// copies the WAL into the database, then syncs the database file, in
/// rounds; the batches committed when its last complete round began (every
/// one before is in the database), or `None` if no round got all it saw.
///
/// What the writer's catch-up cannot leave to anyone (it must restart the
/// WAL) is syncing the WAL's tail, copying the tail's pages, and syncing the
/// database file: every write waits meanwhile (14–63 ms under `post` load;
/// 84% of its requests over 10 ms waited for it or the commit after it:
/// docs/performance.md, round nine). So each round here syncs the database file
/// too (SQLite's own PASSIVE checkpoint skips that while the writer
/// commits, so the catch-up's sync had all the background's copies to
/// flush), and a round that ran while many batches were committed is
/// followed by another that copies those, so the tail left for the writer
/// is short. Only how long the writer waits depends on this: the catch-up
/// syncs what it needs itself, so a failed sync here costs time, never data.
fn copy_back(
    conn: &Connection,
    db_file: Option<&std::fs::File>,
    progress: &writer::WalProgress,
    started: u64,
) -> Option<u64> {
    let mut complete = None;
    let mut start = started;
    for _ in 0..COPY_BACK_ROUNDS {
        match passive_checkpoint(conn) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                log::warn!("background WAL checkpoint failed: {e}");
                break;
            }
        }
        if let Some(Err(e)) = db_file.map(std::fs::File::sync_data) {
            log::warn!("background sync of the database file failed: {e}");
            break;
        }
        complete = Some(start);
        let now = progress.commits.load(Ordering::Relaxed);
        if now.saturating_sub(start) <= COPY_BACK_SHORT {
            break;
        }
        start = now;
    }
    complete
}

/// Copies the WAL into the database and, if that got all of it (no reader
/// in the way), truncates it.
fn truncate_quiet_wal(conn: &Connection) {
    match passive_checkpoint(conn) {
        Ok(Some(frames)) if frames > 0 => {
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                log::warn!("background WAL truncate failed: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => log::warn!("background WAL checkpoint failed: {e}"),
    }
}

/// Copies the WAL into the database without blocking anyone; the number
/// of frames in the WAL if all of them were copied, `None` if a reader's
/// snapshot (or the writer) left some behind.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    // The row is (blocked, frames in the WAL, frames copied); PASSIVE is
    // never blocked.
    let (blocked, frames, copied) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    Ok((blocked == 0 && frames == copied).then_some(frames))
}

/// How often the pruner looks whether the store is still alive.
const PRUNE_TICK: Duration = Duration::from_secs(1);
/// How often the log is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// Most events deleted in one write: a short job among the posts.
const PRUNE_BATCH: i64 = 1000;

/// Prunes events older than `retention` through the writer, in small
/// batches, until the store is gone: first shortly after start, then every
/// `PRUNE_EVERY`.
fn start_pruner(writer: Writer, alive: std::sync::Weak<()>, retention: Duration) {
    let spawned = std::thread::Builder::new()
        .name("threadline-prune".into())
        .spawn(move || {
            let mut next = Instant::now() + PRUNE_TICK;
            while alive.strong_count() > 0 {
                std::thread::sleep(PRUNE_TICK);
                if Instant::now() < next {
                    continue;
                }
                next = Instant::now() + PRUNE_EVERY;
                // A retention beyond the calendar: nothing is ever old enough.
                let Some(cutoff) = chrono::Duration::from_std(retention)
                    .ok()
                    .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
                else {
                    continue;
                };
                let cutoff = crate::domain::format_time(cutoff);
                loop {
                    let cut = cutoff.clone();
                    match writer
                        .write_blocking(move |ctx| events::prune(ctx.conn, &cut, PRUNE_BATCH))
                    {
                        Ok(n) if n as i64 == PRUNE_BATCH && alive.strong_count() > 0 => continue,
                        Ok(_) => break,
                        Err(e) => {
                            log::warn!("pruning the event log failed: {e}");
                            break;
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("the event log will not be pruned (cannot start a thread: {e})");
    }
}

/// The connection's `PRAGMA data_version`: it moves whenever another
/// connection (another process included) commits to the database.
pub fn data_version(conn: &Connection) -> ApiResult<i64> {
    Ok(conn
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))?)
}

/// Maps "no row" to `None` (for callers outside the store).
pub fn optional_row<T>(r: rusqlite::Result<T>) -> ApiResult<Option<T>> {
    row::optional(r)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rusqlite::params;

    use super::*;

    /// The writer's connection and the checkpointer's, on a fresh file
    /// with a table; the directory goes when the test ends.
    fn writer_and_checkpointer() -> (tempfile::TempDir, PathBuf, Connection, Connection) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("t.db");
        let writer = open_as(&path, Role::Writer).expect("the writer's connection opens");
        writer
            .execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY, pad TEXT NOT NULL)")
            .expect("created");
        let checkpointer = open_connection(&path).expect("the checkpointer's connection opens");
        (dir, path, writer, checkpointer)
    }

    fn insert(writer: &Connection, rows: std::ops::Range<i64>) {
        for x in rows {
            writer
                .execute(
                    "INSERT INTO t (x, pad) VALUES (?1, ?2)",
                    params![x, "p".repeat(500)],
                )
                .expect("inserted");
        }
    }

    /// (frames in the WAL, frames of it copied into the database).
    fn wal_frames(conn: &Connection) -> (i64, i64) {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })
        .expect("the checkpoint runs")
    }

    #[test]
    fn a_background_checkpoint_copies_the_wal_and_says_from_which_batch() {
        let (_dir, path, writer, checkpointer) = writer_and_checkpointer();
        insert(&writer, 0..50);
        let db_file = std::fs::File::open(&path).expect("the database file opens");
        let progress = writer::WalProgress::default();
        // No batch committed while it ran: one round, from where it began.
        progress.commits.store(5, Ordering::Relaxed);
        assert_eq!(
            copy_back(&checkpointer, Some(&db_file), &progress, 5),
            Some(5)
        );
        let (frames, copied) = wal_frames(&writer);
        assert!(
            frames > 0 && copied == frames,
            "{copied} of {frames} frames copied"
        );
        // Many batches committed during its first round (as if): it copies
        // again, and the writer's tail is counted from the later round.
        insert(&writer, 50..60);
        progress
            .commits
            .store(5 + COPY_BACK_SHORT + 100, Ordering::Relaxed);
        assert_eq!(
            copy_back(&checkpointer, Some(&db_file), &progress, 5),
            Some(5 + COPY_BACK_SHORT + 100)
        );
        // Without a handle on the file it still copies (the writer's
        // catch-up then syncs what it copied).
        insert(&writer, 60..70);
        progress.commits.store(7, Ordering::Relaxed);
        assert_eq!(copy_back(&checkpointer, None, &progress, 7), Some(7));
        let (frames, copied) = wal_frames(&writer);
        assert_eq!(copied, frames);
    }

    #[test]
    fn a_background_checkpoint_that_a_reader_holds_back_claims_nothing() {
        let (_dir, path, writer, checkpointer) = writer_and_checkpointer();
        insert(&writer, 0..20);
        // A reader's snapshot from before the next rows: their frames
        // cannot be copied while it lasts.
        let reader = Connection::open(&path).expect("a reader opens");
        reader.execute_batch("BEGIN").expect("begins");
        let seen: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("reads");
        assert_eq!(seen, 20);
        insert(&writer, 20..40);
        let db_file = std::fs::File::open(&path).expect("the database file opens");
        let progress = writer::WalProgress::default();
        assert_eq!(copy_back(&checkpointer, Some(&db_file), &progress, 3), None);
        reader.execute_batch("COMMIT").expect("ends");
        assert_eq!(
            copy_back(&checkpointer, Some(&db_file), &progress, 3),
            Some(3)
        );
    }
}
