//! PostgreSQL storage, for several threadline nodes on one database
//! (`--database-url postgres://…`). The same operations as the SQLite store
//! (each submodule mirrors one of `store`'s), behind the same neutral face
//! (`store::db`), with what changes when several processes write at once:
//!
//! - each node's writes go through its writer ([`PgWriter`]), which commits
//!   what is queued as one transaction holding the `log_head` row from its
//!   BEGIN: batches of all nodes run one after the other, a thread's seq is
//!   counted under its row lock (1, 2, 3 … with no gap), and the batch's
//!   events are numbered from `log_head` ([`events::append`]), so
//!   positions follow commit order across nodes; COMMIT NOTIFYs the nodes;
//! - every node runs a follower ([`start_follower`]) that reads the log after
//!   the last position it saw and hands the events to the local consumers
//!   (realtime hub, webhooks). A NOTIFY only wakes it; it also polls, so a
//!   lost notification delays an event by at most [`POLL`], never loses it.
//!   A node's own commit is published by its writer at once when every
//!   position before it is published already (nothing can come between);
//!   its NOTIFY carries its last position, so the follower skips the read.
//! - signals (typing) are not logged; a write parks them at the position of
//!   the last event its job logged, and the follower publishes them right
//!   after that event ([`Signals`]), so a socket sees them in the order the
//!   job raised them, as on SQLite. The other nodes hear of them in a
//!   NOTIFY payload after the COMMIT ([`relay`]) and publish each after the
//!   same event.
//!
//! The driver is the synchronous `postgres` crate: the store's functions
//! are synchronous and already run off the async workers (`web::block`),
//! so each handler's closure runs unchanged on either backend.

pub mod accounts;
pub mod admin;
pub mod conn;
mod deferred;
pub mod events;
pub mod generation;
pub mod grants;
mod migrate;
mod relay;
pub mod threads;
pub mod turn;
pub mod webhooks;
mod writer;

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;

pub use conn::{ConnectError, PgConn};
pub use writer::PgWriter;

use super::writer::Refs;
use super::{Durability, LogSettings, WriteHint};
use crate::error::ApiResult;
use crate::events::{CommitListener, Committed, Event};

/// The `application_name` of a node's follower connection, followed by the
/// node's id: while that session is in `pg_stat_activity`, the node is up
/// (a killed node's session ends with its socket), so what it holds, such
/// as a webhook's delivery lease, passes on at once rather than on expiry.
pub const NODE_SESSION: &str = "threadline-node-";

/// How long the follower waits for a NOTIFY before reading the log anyway.
pub const POLL: Duration = Duration::from_millis(500);
/// Events the follower reads per query.
const FOLLOW_PAGE: i64 = 1000;
/// How long a write waits, after its COMMIT, for this node's follower to
/// have published its events (see [`Signals::wait_published`]).
const PUBLISH_WAIT: Duration = Duration::from_secs(1);
/// How long a request waits for a pooled connection while the database
/// answers (all of them busy): then it is answered 503.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long it waits while the pool's attempts to connect fail (the
/// database is down or restarting): a connection the pool opens meanwhile
/// still serves it, else it is answered 503 at once rather than after
/// [`POOL_WAIT`] (a load balancer's health check gave up before that).
const DOWN_WAIT: Duration = Duration::from_millis(500);
/// The pool's own connection timeout, which only sets how often it tries
/// to connect while the database is away (every request uses
/// [`PgStore::pooled`]'s waits): r2d2 retries a failed connection after a
/// pause that doubles up to half of it, so the pool has a connection again
/// within 250 ms of the database's return, inside one [`DOWN_WAIT`].
const POOL_RETRY: Duration = Duration::from_millis(500);

/// What a write's closure gathers besides its statements: its events, in
/// the order raised (logged ones and signals interleaved).
#[derive(Default)]
pub struct PgCtx {
    events: Vec<(Event, Option<Refs>)>,
    /// What the write (or its batch) has looked up already.
    pub(crate) known: writer::Known,
}

impl PgCtx {
    /// A logged event: its row is written in this transaction.
    pub(crate) fn log(&mut self, event: Event, refs: Refs) {
        self.events.push((event, Some(refs)));
    }

    /// A signal (typing): reported after the commit, never stored.
    pub fn signal(&mut self, event: Event) {
        self.events.push((event, None));
    }
}

/// Signals waiting for the follower to publish the event they follow.
pub struct Signals {
    inner: Mutex<Parked>,
    /// Notified whenever `published` moves.
    moved: Condvar,
    /// The local consumers (hub, webhooks) the follower publishes to.
    consumers: Arc<dyn CommitListener>,
    /// This node's name on the signal channel (a fresh UUID per start), so
    /// it skips its own signals there: it publishes them in place.
    node: String,
    /// `published`, for writes answered on the async workers.
    published: tokio::sync::watch::Sender<i64>,
}

struct Parked {
    /// The follower has published every event up to here.
    published: i64,
    /// Signals to publish right after the event at each position.
    after: BTreeMap<i64, Vec<Arc<Event>>>,
}

impl Signals {
    fn new(published: i64, consumers: Arc<dyn CommitListener>, node: String) -> Signals {
        Signals {
            inner: Mutex::new(Parked {
                published,
                after: BTreeMap::new(),
            }),
            moved: Condvar::new(),
            consumers,
            node,
            published: tokio::sync::watch::Sender::new(published),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Parked> {
        self.inner
            .lock()
            .expect("expect: the signal lock is never held across a panic")
    }

    /// Publishes `signals` after the event at `position`: at once if there
    /// is none (or it is published already), else when the follower
    /// publishes it. Called before the write's COMMIT (the follower cannot
    /// have published a position that is not committed yet), so a signal
    /// never comes after the events its job raised after it.
    fn park(&self, position: Option<i64>, signals: Vec<Arc<Event>>) {
        let mut parked = self.lock();
        match position {
            Some(p) if p > parked.published => parked.after.entry(p).or_default().extend(signals),
            _ => self.consumers.committed(Committed {
                upto: parked.published,
                events: &signals,
                jobs: 0,
                took: Duration::ZERO,
            }),
        }
    }

    /// Drops what was parked at these positions (their COMMIT failed; the
    /// positions are reused once the transaction has rolled back, and
    /// `log_head` stays locked until then).
    fn unpark(&self, positions: &[i64]) {
        let mut parked = self.lock();
        for p in positions {
            parked.after.remove(p);
        }
    }

    /// Publishes a page of the log read by the follower, each event
    /// followed by the signals parked at its position.
    fn publish(&self, page: Vec<Event>) {
        let mut parked = self.lock();
        self.publish_locked(&mut parked, page);
    }

    /// Publishes the events a COMMIT on this node just logged (their
    /// positions contiguous, in order) if the follower has published every
    /// position before theirs: positions follow commit order, so nothing
    /// can come between, and the write is answered without waiting for the
    /// follower to read them back. Else they are left to the follower.
    fn publish_committed(&self, events: Vec<Event>) {
        let Some(first) = events.first().and_then(|e| e.position) else {
            return;
        };
        let mut parked = self.lock();
        if parked.published == first - 1 {
            self.publish_locked(&mut parked, events);
        }
    }

    /// The position up to which every event is published.
    fn published_upto(&self) -> i64 {
        self.lock().published
    }

    fn publish_locked(&self, parked: &mut Parked, mut page: Vec<Event>) {
        // Each event goes once: the writer publishes its own commits, and
        // the follower may have read them before it learnt so.
        page.retain(|e| e.position.is_none_or(|p| p > parked.published));
        let Some(upto) = page.last().and_then(|e| e.position) else {
            return;
        };
        let mut events = Vec::with_capacity(page.len());
        for event in page {
            let position = event.position.unwrap_or(upto);
            events.push(Arc::new(event));
            // Also any parked at a position that is no longer in the log.
            while let Some(entry) = parked.after.first_entry() {
                if *entry.key() > position {
                    break;
                }
                events.extend(entry.remove());
            }
        }
        parked.published = upto;
        self.consumers.committed(Committed {
            upto,
            events: &events,
            jobs: 0,
            took: Duration::ZERO,
        });
        self.moved.notify_all();
        self.published.send_replace(upto);
    }

    /// [`Signals::wait_published`] for a write answered on the async
    /// workers: resolves once the follower has published `position` (or
    /// after [`PUBLISH_WAIT`], logged).
    async fn published(&self, position: i64) {
        let mut published = self.published.subscribe();
        let waited =
            tokio::time::timeout(PUBLISH_WAIT, published.wait_for(|p| *p >= position)).await;
        if waited.is_err() {
            log::warn!(
                "the log follower is behind: answering before position {position} is published"
            );
        }
    }

    /// Parks a signal another node raised (a notification's payload), to
    /// go out after the event it follows; this node's own are skipped.
    fn receive(&self, payload: &str) {
        if let Some((after, event)) = relay::receive(payload, &self.node) {
            self.park(after, vec![Arc::new(event)]);
        }
    }

    /// Waits (at most [`PUBLISH_WAIT`]) until the follower has published
    /// `position`. A write answers only then, as on SQLite, where the
    /// writer hands a batch to the hub before answering: a client that got
    /// its 201 from a node finds the event queued for that node's sockets,
    /// and a fast poster is paced by delivery instead of running ahead of it
    /// (and flooding sockets with one burst per follower page).
    fn wait_published(&self, position: i64) {
        let parked = self.lock();
        let waited = self
            .moved
            .wait_timeout_while(parked, PUBLISH_WAIT, |p| p.published < position);
        if waited.is_ok_and(|(_, timeout)| timeout.timed_out()) {
            log::warn!(
                "the log follower is behind: answering before position {position} is published"
            );
        }
    }
}

/// The server's handle on a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: r2d2::Pool<conn::Manager>,
    /// Whether the pool's last attempt to connect failed.
    reach: Arc<conn::Reach>,
    /// This node's group-commit writer: every write but connect grants.
    writer: PgWriter,
    /// The writer connection's `synchronous_commit`, read back.
    durability: Durability,
    /// Hears of each write's commit: its timing (for the metrics).
    writes: Arc<dyn CommitListener>,
    /// Where a write's signals wait for the event they follow.
    signals: Arc<Signals>,
    /// The follower and the pruner run while any clone is alive.
    _alive: Arc<()>,
}

/// Runs `f` on a thread of its own and waits for it. The `postgres` client
/// blocks on a runtime of its own, which cannot start on a thread that
/// runs async tasks (the server's startup, a test); the command line and
/// startup call PostgreSQL through this. (Pooled reads and writes already
/// run on blocking threads, `web::block`.)
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Connects to `url`, applies the migrations it lacks, and hands back the
/// connection (for the command line).
pub fn open_connection(url: &str) -> Result<PgConn, String> {
    let conn = PgConn::connect(url).map_err(|e| connect_error(url, &e))?;
    migrate::migrate(&conn)?;
    Ok(conn)
}

/// Waits, up to `wait`, until the database at `url` takes a connection:
/// for `serve`, whose PostgreSQL may be starting too. What waiting may cure
/// (nothing listening yet, a host not reachable yet, PostgreSQL starting
/// up or shutting down, its connections all taken) is retried four times
/// a second, logged once; a refusal by a database that answers (no such
/// database, a bad password) is returned at once, as is the last failure
/// once `wait` is over. A URL that does not parse is left to the store's
/// own first connection, which says why.
pub fn wait_until_reachable(url: &str, wait: Duration) -> Result<(), String> {
    use postgres::error::SqlState;
    // A URL that does not parse: its message, from the first connect.
    if url.parse::<postgres::Config>().is_err() {
        return Ok(());
    }
    off_runtime(|| {
        let started = Instant::now();
        let mut waiting = false;
        loop {
            let e = match PgConn::connect(url) {
                Ok(_) => {
                    if waiting {
                        log::warn!(
                            "the database answers, after {:.1} s: starting",
                            started.elapsed().as_secs_f64()
                        );
                    }
                    return Ok(());
                }
                Err(e) => e,
            };
            let curable = match e.code() {
                Some(c) => {
                    *c == SqlState::CANNOT_CONNECT_NOW
                        || *c == SqlState::ADMIN_SHUTDOWN
                        || *c == SqlState::TOO_MANY_CONNECTIONS
                }
                // Refused, unreachable, timed out, a name not resolved.
                None => true,
            };
            let why = connect_error(url, &e);
            let left = wait.saturating_sub(started.elapsed());
            if !curable || left.is_zero() {
                return Err(if waiting {
                    format!("{why} (after waiting {} s for it)", wait.as_secs())
                } else {
                    why
                });
            }
            if !waiting {
                waiting = true;
                log::warn!(
                    "{why}; waiting up to {} s for it (--pg-start-wait-secs)",
                    wait.as_secs()
                );
            }
            std::thread::sleep(left.min(Duration::from_millis(250)));
        }
    })
}

/// The message for a failed connection, without the password.
fn connect_error(url: &str, e: &ConnectError) -> String {
    let e = match e {
        ConnectError::Driver(e) => e,
        ConnectError::NoAnswer(limit) => {
            return format!(
                "cannot connect to {}: no answer within {} s (the URL's connect_timeout= sets how long to wait)",
                shown_url(url),
                limit.as_secs_f64()
            )
        }
        ConnectError::Thread(why) => return format!("cannot connect to {}: {why}", shown_url(url)),
    };
    if let Some(missing) = missing_database(url, e) {
        return missing;
    }
    // The server's own words ("password authentication failed for user
    // ..."): the error's text alone is "db error".
    let why = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        // "error connecting to server", and why (refused, no such host).
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    };
    format!("cannot connect to {}: {why}", shown_url(url))
}

/// `url` as a message shows it: without the user name and password, and
/// without the query, which may carry `password=` too. A connection
/// string of `key=value` words is not shown at all.
fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "the database URL".to_owned();
    };
    if scheme != "postgres" && scheme != "postgresql" {
        return "the database URL".to_owned();
    }
    let rest = rest.split('?').next().unwrap_or_default();
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://…@{host}"),
        None => format!("{scheme}://{rest}"),
    }
}

/// When the server says the database `url` names does not exist: which one,
/// where, and how to create it (its owner the URL's user, who then makes
/// the tables), never the password.
fn missing_database(url: &str, e: &postgres::Error) -> Option<String> {
    use postgres::config::Host;
    use postgres::error::SqlState;
    e.as_db_error()
        .filter(|d| *d.code() == SqlState::INVALID_CATALOG_NAME)?;
    let config: postgres::Config = url.parse().ok()?;
    // PostgreSQL's default database is the user's name.
    let user = config.get_user().unwrap_or("postgres");
    let name = config.get_dbname().unwrap_or(user);
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(dir)) => dir.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b))
    };
    let ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let how = if plain(name) && plain(user) && plain(&host) {
        format!(
            "createdb -h {host} -p {port} -O {user} {name} (as a PostgreSQL user allowed \
             to create databases; or in psql: CREATE DATABASE {} OWNER {};)",
            ident(name),
            ident(user)
        )
    } else {
        format!(
            "in psql, as a PostgreSQL user allowed to create databases: \
             CREATE DATABASE {} OWNER {};",
            ident(name),
            ident(user)
        )
    };
    Some(format!(
        "the PostgreSQL database {} does not exist on {host}:{port}; create it, empty \
         (threadline makes its tables at start): {how}",
        ident(name)
    ))
}

impl PgStore {
    /// Opens the database for serving: migrates it, fills the pool, starts
    /// the follower (which reports the log's events, and the signals of
    /// local writes, to `follow`, starting after the position the log holds
    /// now) and the pruner. `writes` hears of every local commit's timing.
    /// Returns it with the database's generation (given one now if it has
    /// none).
    pub fn open(
        url: &str,
        log: LogSettings,
        writes: Arc<dyn CommitListener>,
        follow: Arc<dyn CommitListener>,
        durability: Durability,
        pool_size: u32,
    ) -> Result<(PgStore, String), String> {
        let node = uuid::Uuid::new_v4().simple().to_string();
        let session = format!("{NODE_SESSION}{node}");
        let (first, from, generation) = off_runtime(|| {
            let first = PgConn::connect_as(url, &session).map_err(|e| connect_error(url, &e))?;
            migrate::migrate(&first)?;
            let generation = generation::settle(&first)
                .map(|settled| crate::store::generation::announce(settled, "the database"))
                .map_err(|e| format!("cannot read the database's generation: {e:?}"))?;
            listen(&first).map_err(|e| format!("cannot listen for commits: {e}"))?;
            let from = events::last_position(&first).map_err(|e| e.to_string())?;
            Ok::<_, String>((first, from, generation))
        })?;
        let reach = Arc::new(conn::Reach::new("pooled connections"));
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(2))
            .test_on_check_out(false)
            .connection_timeout(POOL_RETRY)
            // The manager logs a failed attempt, once per outage.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build(conn::Manager {
                url: url.to_owned(),
                reach: reach.clone(),
            })
            .map_err(|e| format!("cannot open a pool on the database: {e}"))?;
        let alive = Arc::new(());
        let signals = Arc::new(Signals::new(from, follow, node));
        let (writer, durability) =
            off_runtime(|| PgWriter::start(url, durability, signals.clone(), writes.clone()))?;
        start_follower(
            first,
            url.to_owned(),
            session,
            from,
            signals.clone(),
            Arc::downgrade(&alive),
        )?;
        let store = PgStore {
            pool,
            reach,
            writer,
            durability,
            writes,
            signals,
            _alive: alive,
        };
        store.start_pruner(log.retention);
        Ok((store, generation))
    }

    /// Runs `f` in a read-only transaction (one snapshot for all its
    /// statements). Blocking: call it off the async workers.
    pub fn read_blocking<T>(&self, f: impl FnOnce(&PgConn) -> ApiResult<T>) -> ApiResult<T> {
        let conn = self.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        let result = f(&conn);
        match conn.batch("COMMIT") {
            Ok(()) => result,
            Err(e) => result.and(Err(e)),
        }
    }

    /// Runs `f` in its own transaction on a pooled connection, logs its
    /// events, commits, and waits until the follower has published them.
    /// For what does not go through the writer (connect grants).
    /// Blocking: call it off the async workers.
    pub fn write_blocking<T>(
        &self,
        f: impl FnOnce(&PgConn, &mut PgCtx) -> ApiResult<T>,
    ) -> ApiResult<T> {
        let started = Instant::now();
        let conn = self.begin("BEGIN")?;
        let mut ctx = PgCtx::default();
        let result = f(&conn, &mut ctx).and_then(|v| {
            let upto = log_and_commit(&conn, &self.signals, std::mem::take(&mut ctx.events))?;
            self.writes.committed(Committed {
                upto,
                events: &[],
                jobs: 1,
                took: started.elapsed(),
            });
            if upto > 0 {
                self.signals.wait_published(upto);
            }
            Ok(v)
        });
        if result.is_err() {
            // Also after a failed COMMIT: the connection goes back clean.
            let _ = conn.batch("ROLLBACK");
        }
        result
    }

    /// This node's id (fresh at each start), which its follower's session
    /// carries (see [`NODE_SESSION`]).
    pub fn node(&self) -> &str {
        &self.signals.node
    }

    /// Tells the other nodes of a signal raised outside a write (this node
    /// publishes it itself). Blocking: call it off the async workers.
    pub fn share_signal_blocking(&self, event: Event) -> ApiResult<()> {
        let conn = self.pooled()?;
        relay::share(&conn, &self.signals.node, &[(None, vec![Arc::new(event)])])
    }

    /// A pooled connection: within [`POOL_WAIT`] while the database
    /// answers, [`DOWN_WAIT`] while the pool cannot connect; else 503
    /// (the pool's timeout was a 500 `INTERNAL`, after 10 s even with the
    /// database down).
    fn pooled(&self) -> ApiResult<r2d2::PooledConnection<conn::Manager>> {
        let started = Instant::now();
        loop {
            // Asked again at each slice: the attempt this wait starts may
            // be the one that finds the database gone.
            let limit = if self.reach.is_down() {
                DOWN_WAIT
            } else {
                POOL_WAIT
            };
            let left = limit.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(crate::error::ApiError::Unavailable);
            }
            if let Ok(conn) = self.pool.get_timeout(left.min(Duration::from_millis(100))) {
                return Ok(conn);
            }
        }
    }

    /// A pooled connection with `begin` run on it. A pooled connection
    /// whose session ended while it was idle (PostgreSQL restarted, or an
    /// operator's `pg_terminate_backend`) is found out only by using it:
    /// the BEGIN fails, the pool drops it, and the next is tried (nothing
    /// ran on it). Each such connection used to cost a request a 503 after
    /// the database was back.
    fn begin(&self, begin: &str) -> ApiResult<r2d2::PooledConnection<conn::Manager>> {
        let mut tries = self.pool.max_size();
        loop {
            let conn = self.pooled()?;
            match conn.batch(begin) {
                Ok(()) => return Ok(conn),
                Err(_) if conn.is_closed() && tries > 0 => tries -= 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `f` in the node writer's next batch ([`PgWriter`]); resolves
    /// after its COMMIT, once this node's follower has published the
    /// batch's events (as on SQLite, where the writer hands a batch to the
    /// hub before answering: a client that got its 201 finds the event
    /// queued for this node's sockets, and a fast poster is paced by
    /// delivery).
    pub async fn write<T, F>(&self, hint: WriteHint, f: F) -> ApiResult<T>
    where
        F: FnOnce(&PgConn, &mut PgCtx) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (value, upto) = self.writer.write(hint, f).await?;
        if upto > 0 {
            self.signals.published(upto).await;
        }
        Ok(value)
    }

    /// [`PgStore::write`] for a write that may run more than once, only
    /// its last run counting ([`PgWriter::write_repeatable`]): posts.
    pub async fn write_repeatable<T, F>(&self, hint: WriteHint, f: F) -> ApiResult<T>
    where
        F: Fn(&PgConn, &mut PgCtx) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (value, upto) = self.writer.write_repeatable(hint, f).await?;
        if upto > 0 {
            self.signals.published(upto).await;
        }
        Ok(value)
    }

    /// When a write is durable: the writer connection's
    /// `synchronous_commit`, read back at start.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Whether a pooled connection answers.
    pub fn ping(&self) -> bool {
        self.read_blocking(|c| c.one("SELECT 1", &[]).map(|_| ()))
            .is_ok()
    }

    fn start_pruner(&self, retention: Duration) {
        let pool = self.pool.clone();
        let alive = Arc::downgrade(&self._alive);
        let spawned = std::thread::Builder::new()
            .name("threadline-prune".into())
            .spawn(move || prune_loop(pool, alive, retention));
        if let Err(e) = spawned {
            log::warn!("the event log will not be pruned (cannot start a thread: {e})");
        }
    }
}

/// Logs a transaction's events (a write's, or a writer batch's, in the
/// order raised), parks its signals, and COMMITs; returns the position of
/// its last logged event (0 if none). A signal that follows a logged event
/// waits for it, parked before COMMIT (the follower cannot have published a
/// position not yet committed); those before any go out after COMMIT.
fn log_and_commit(
    conn: &PgConn,
    signals: &Signals,
    events: Vec<(Event, Option<Refs>)>,
) -> ApiResult<i64> {
    // Each signal, with the index of the logged event it follows.
    let mut logged: Vec<(Event, Refs)> = Vec::new();
    let mut raised: Vec<(Option<usize>, Arc<Event>)> = Vec::new();
    for (event, refs) in events {
        match refs {
            Some(refs) => logged.push((event, refs)),
            None => raised.push((logged.len().checked_sub(1), Arc::new(event))),
        }
    }
    events::append(conn, &mut logged)?;
    let mut runs: Vec<(Option<i64>, Vec<Arc<Event>>)> = Vec::new();
    for (after, signal) in raised {
        let position = after.and_then(|i| logged[i].0.position);
        match runs.last_mut() {
            Some((p, batch)) if *p == position => batch.push(signal),
            _ => runs.push((position, vec![signal])),
        }
    }
    // The other nodes' copy, told after COMMIT (see `relay`).
    let shared = runs.clone();
    let (unlogged, parked): (Vec<_>, Vec<_>) = runs.into_iter().partition(|(p, _)| p.is_none());
    let parked_at: Vec<i64> = parked.iter().filter_map(|(p, _)| *p).collect();
    for (p, batch) in parked {
        signals.park(p, batch);
    }
    if let Err(e) = conn.batch("COMMIT") {
        signals.unpark(&parked_at);
        return Err(e);
    }
    for (p, batch) in unlogged {
        signals.park(p, batch);
    }
    let upto = logged.last().and_then(|(e, _)| e.position).unwrap_or(0);
    signals.publish_committed(logged.into_iter().map(|(e, _)| e).collect());
    if !shared.is_empty() {
        // Committed already: a signal the others miss is not a failure.
        if let Err(e) = relay::share(conn, &signals.node, &shared) {
            log::warn!("typing signals not shared with the other nodes: {e:?}");
        }
    }
    Ok(upto)
}

/// How soon the pruner tries again after a pass the database was away for
/// (503: down, restarting, its session ended): it waited the whole
/// five minutes, and a node whose first pass met a restart kept its old
/// events that long.
const PRUNE_RETRY: Duration = Duration::from_secs(2);

/// Prunes the log every five minutes (the same rule as on SQLite), until
/// the store is gone; a pass the database was away for is tried again
/// every [`PRUNE_RETRY`] until it goes through (logged once, and once when
/// it does). Nodes pruning at once delete the same rows once.
fn prune_loop(pool: r2d2::Pool<conn::Manager>, alive: Weak<()>, retention: Duration) {
    let mut next = Instant::now() + Duration::from_secs(1);
    let reach = conn::Reach::new("pruning the event log");
    while alive.strong_count() > 0 {
        std::thread::sleep(Duration::from_secs(1));
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + Duration::from_secs(300);
        let Some(cutoff) = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
        else {
            continue;
        };
        let cutoff = crate::domain::format_time(cutoff);
        loop {
            let pruned = pool
                .get_timeout(POOL_WAIT)
                // No connection within the wait: the database is away.
                .map_err(|_| crate::error::ApiError::Unavailable)
                .and_then(|c| events::prune(&c, &cutoff, 1000));
            match pruned {
                Ok(1000) if alive.strong_count() > 0 => continue,
                Ok(_) => {
                    reach.answered();
                    break;
                }
                // A pooled connection whose session ended is dropped by the
                // pool; the next pass takes another.
                Err(crate::error::ApiError::Unavailable) => {
                    reach.failed("the database is away");
                    next = Instant::now() + PRUNE_RETRY;
                    break;
                }
                Err(e) => {
                    log::warn!("pruning the event log failed: {e:?}");
                    break;
                }
            }
        }
    }
}

/// Starts this node's log follower on `conn`, which LISTENs already
/// (reconnecting to `url` as `session` when it breaks): reads every event
/// after `from` in position order, and reports each page to `listener`.
fn start_follower(
    conn: PgConn,
    url: String,
    session: String,
    from: i64,
    signals: Arc<Signals>,
    alive: Weak<()>,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("threadline-follow".into())
        .spawn(move || {
            let mut conn = Some(conn);
            let mut last = from;
            // Logs once when the database goes, once when it is back.
            let reach = conn::Reach::new("the log follower");
            while alive.strong_count() > 0 {
                let c = match conn.take() {
                    Some(c) if !c.is_closed() => c,
                    _ => {
                        let connected = PgConn::connect_as(&url, &session)
                            .map_err(|e| connect_error(&url, &e))
                            .and_then(|c| match listen(&c) {
                                Ok(()) => Ok(c),
                                Err(e) => Err(format!("cannot listen for commits: {e:?}")),
                            });
                        match connected {
                            Ok(c) => {
                                reach.answered();
                                c
                            }
                            Err(why) => {
                                reach.failed(&why);
                                std::thread::sleep(POLL);
                                continue;
                            }
                        }
                    }
                };
                // It carries on after `last`, the last position it
                // published: nothing committed meanwhile is skipped.
                match follow_once(&c, &mut last, &signals) {
                    Ok(()) => conn = Some(c),
                    // Its session ended (PostgreSQL restarting, or the
                    // session terminated): connect again at once.
                    Err(e) if c.is_closed() => {
                        reach.failed(&format!("its connection broke ({e:?})"));
                    }
                    Err(e) => {
                        log::warn!("log follower: {e:?}");
                        std::thread::sleep(POLL);
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the log follower: {e}"))?;
    Ok(())
}

/// Subscribes `c` to the commits' wake-ups and the other nodes' signals.
fn listen(c: &PgConn) -> ApiResult<()> {
    c.batch(&format!(
        "LISTEN {}; LISTEN {}",
        events::CHANNEL,
        relay::CHANNEL
    ))
}

/// Publishes every event after `last`, then waits for a NOTIFY or [`POLL`]
/// (a NOTIFY of a commit whose events are published already, this node's
/// writer having published them itself, needs no read: it waits on).
fn follow_once(c: &PgConn, last: &mut i64, signals: &Signals) -> ApiResult<()> {
    loop {
        // What this node's writer published itself is not read again.
        *last = (*last).max(signals.published_upto());
        // An event that cannot be rebuilt is left out and read past (see
        // `store::events::LogPage`): it stopped the follower for good.
        let page = events::page_after(c, *last, FOLLOW_PAGE)?;
        // Signals that came in meanwhile are parked before the page goes
        // out, so each follows its own event rather than the whole page.
        let woken = take_notes(c, signals, None)? == Wake::Read;
        let full = page.rows as i64 == FOLLOW_PAGE;
        if let Some(upto) = page.read_upto {
            *last = upto;
            signals.publish(page.events);
        }
        // A wake-up taken above may be for a commit after the read.
        if !full && !woken {
            break;
        }
    }
    let deadline = Instant::now() + POLL;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || take_notes(c, signals, Some(left))? != Wake::Published {
            return Ok(());
        }
    }
}

/// What the notifications [`take_notes`] took call for.
#[derive(PartialEq, Eq)]
enum Wake {
    /// No commit's: none came, or only the other nodes' signals.
    Nothing,
    /// Commits whose events are all published already.
    Published,
    /// A commit whose events may not be published yet: read the log.
    Read,
}

/// Takes the notifications that arrived (waiting up to `wait` for the
/// first): parks the other nodes' signals and tells whether a commit calls
/// for a read. One wake-up is enough: whatever else committed is read with
/// it. A commit's notification carries the position of its last event
/// (one that does not, from a node of an older version, is always read).
fn take_notes(c: &PgConn, signals: &Signals, wait: Option<Duration>) -> ApiResult<Wake> {
    let mut client = c.client();
    let mut notes = client.notifications();
    let mut wake = Wake::Nothing;
    let mut take = |note: postgres::Notification| {
        if note.channel() == relay::CHANNEL {
            signals.receive(note.payload());
        } else if wake != Wake::Read {
            wake = match note.payload().parse::<i64>() {
                Ok(upto) if upto <= signals.published_upto() => Wake::Published,
                _ => Wake::Read,
            };
        }
    };
    if let Some(wait) = wait {
        if let Some(note) = notes.timeout_iter(wait).next()? {
            take(note);
        }
    }
    while let Some(note) = notes.iter().next()? {
        take(note);
    }
    Ok(wake)
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn a_shown_url_carries_no_password_in_its_user_part_or_its_query() {
        assert_eq!(
            shown_url("postgres://tl:s3cret@db.internal:5432/threadline"),
            "postgres://…@db.internal:5432/threadline"
        );
        // An unencoded @ in the password: the host is after the last one.
        assert_eq!(
            shown_url("postgresql://tl:p@ss@db:5432/tl?sslmode=disable"),
            "postgresql://…@db:5432/tl"
        );
        assert_eq!(
            shown_url("postgres://db:5432/tl?user=tl&password=s3cret"),
            "postgres://db:5432/tl"
        );
        assert_eq!(
            shown_url("postgres://tl@db/tl?password=s3@cret"),
            "postgres://…@db/tl"
        );
        // key=value words may hold a password anywhere: not shown.
        assert_eq!(
            shown_url("host=db user=tl password=p@ss dbname=tl"),
            "the database URL"
        );
        assert_eq!(shown_url("mysql://u:p@h/db"), "the database URL");
    }
}
