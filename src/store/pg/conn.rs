//! One PostgreSQL connection as the store uses it: the synchronous client
//! (the store's functions are synchronous and run off the async workers, as
//! on SQLite), a cache of prepared statements, and four query shapes that
//! turn driver errors into `ApiError`. The pool is r2d2's, as for SQLite.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

use super::deferred::{Columns, Deferred, Post, ThreadState};
use crate::error::{ApiError, ApiResult};

/// Why an attempt to connect failed.
#[derive(Debug)]
pub enum ConnectError {
    /// What the driver said: refused, no such host or database, a bad
    /// password, or its own limit on the TCP connection.
    Driver(postgres::Error),
    /// The server took the connection but did not finish its greeting and
    /// the authentication within the limit (or too many earlier attempts
    /// still wait for it: see [`MAX_UNANSWERED`]).
    NoAnswer(Duration),
    /// The attempt's thread could not be started, or ended without a word.
    Thread(&'static str),
}

impl ConnectError {
    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<&postgres::error::SqlState> {
        match self {
            ConnectError::Driver(e) => e.code(),
            _ => None,
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Driver(e) => e.fmt(f),
            ConnectError::NoAnswer(limit) => {
                write!(f, "no answer within {} s", limit.as_secs_f64())
            }
            ConnectError::Thread(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Driver(e) => Some(e),
            _ => None,
        }
    }
}

impl From<postgres::Error> for ConnectError {
    fn from(e: postgres::Error) -> Self {
        ConnectError::Driver(e)
    }
}

/// A node that cannot reach its database answers 503, as when a pooled
/// connection fails.
impl From<ConnectError> for ApiError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Driver(e) => e.into(),
            ConnectError::NoAnswer(_) | ConnectError::Thread(_) => ApiError::Unavailable,
        }
    }
}

/// Parameters of one statement.
pub type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// A connection and its prepared statements. The client sits in a
/// `RefCell` so the store's functions can share `&PgConn` the way they share
/// `&rusqlite::Connection`; a connection is only ever used by one thread
/// at a time (pooled, or owned by the follower).
pub struct PgConn {
    /// `None` only once dropped (see `Drop`).
    client: RefCell<Option<Client>>,
    statements: RefCell<HashMap<&'static str, Statement>>,
    /// Rows written so far (see [`PgConn::changes`]).
    changes: Cell<u64>,
    /// Whether a statement has failed since [`PgConn::take_failed`]: the
    /// transaction is then aborted, and only a ROLLBACK (to a savepoint)
    /// makes the connection usable again.
    failed: Cell<bool>,
    /// Posts held back until the next statement or COMMIT: only on the
    /// writer's connection (see `deferred`).
    deferred: RefCell<Option<Deferred>>,
    /// Held-back posts sent so far.
    sent: Cell<u64>,
    /// Whether the server ended the session (a FATAL error: terminated,
    /// shutting down), which the client may not have noticed yet: the
    /// connection is closed as far as the pool and the writer go.
    ended: Cell<bool>,
}

impl PgConn {
    /// Connects to `url`, within its connect timeout ([`settings`]).
    pub fn connect(url: &str) -> Result<PgConn, ConnectError> {
        let (config, limit) = settings(url)?;
        Ok(PgConn::new(connect_within(config, limit)?))
    }

    /// Connects to `url` under `application_name` (how the other nodes see
    /// that this node is alive, in `pg_stat_activity`).
    pub fn connect_as(url: &str, application_name: &str) -> Result<PgConn, ConnectError> {
        let (mut config, limit) = settings(url)?;
        config.application_name(application_name);
        Ok(PgConn::new(connect_within(config, limit)?))
    }

    fn new(client: Client) -> PgConn {
        PgConn {
            client: RefCell::new(Some(client)),
            statements: RefCell::new(HashMap::new()),
            changes: Cell::new(0),
            failed: Cell::new(false),
            deferred: RefCell::new(None),
            sent: Cell::new(0),
            ended: Cell::new(false),
        }
    }

    /// The statement for `sql`, prepared once per connection.
    fn statement(&self, sql: &'static str) -> ApiResult<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = self.track(self.client().prepare(sql))?;
        self.statements.borrow_mut().insert(sql, s.clone());
        Ok(s)
    }

    /// Runs a statement; returns how many rows it changed.
    pub fn exec(&self, sql: &'static str, params: Params<'_>) -> ApiResult<u64> {
        self.before(sql)?;
        let s = self.statement(sql)?;
        let n = self.track(self.client().execute(&s, params))?;
        self.count(sql, n);
        Ok(n)
    }

    /// Every row.
    pub fn all(&self, sql: &'static str, params: Params<'_>) -> ApiResult<Vec<Row>> {
        self.before(sql)?;
        let s = self.statement(sql)?;
        let rows = self.track(self.client().query(&s, params))?;
        self.count(sql, rows.len() as u64);
        Ok(rows)
    }

    /// The one row (an error if there is none).
    pub fn one(&self, sql: &'static str, params: Params<'_>) -> ApiResult<Row> {
        self.before(sql)?;
        let s = self.statement(sql)?;
        let row = self.track(self.client().query_one(&s, params))?;
        self.count(sql, 1);
        Ok(row)
    }

    /// [`PgConn::one`] of `sql`; with posts held back, of `with_posts`
    /// instead: `sql` after the `store_posts!` that stores them (its
    /// `$1`–`$14`, `params` numbered from `$15`), so they go in the same
    /// round trip rather than one of their own before it.
    pub fn one_storing_held(
        &self,
        sql: &'static str,
        with_posts: &'static str,
        params: Params<'_>,
    ) -> ApiResult<Row> {
        let held = self.deferred.borrow_mut().as_mut().map(Deferred::take);
        let posts = match held {
            Some(posts) if !posts.is_empty() => posts,
            _ => return self.one(sql, params),
        };
        let n = posts.len() as u64;
        let s = self.statement(with_posts)?;
        let columns = Columns::new(&posts);
        let mut all = columns.params();
        all.extend_from_slice(params);
        let row = self.track(self.client().query_one(&s, &all))?;
        self.sent.set(self.sent.get() + n);
        self.count(with_posts, 1);
        Ok(row)
    }

    /// The row, if there is one.
    pub fn opt(&self, sql: &'static str, params: Params<'_>) -> ApiResult<Option<Row>> {
        self.before(sql)?;
        let s = self.statement(sql)?;
        let row = self.track(self.client().query_opt(&s, params))?;
        self.count(sql, u64::from(row.is_some()));
        Ok(row)
    }

    /// Rows written by the statements run on this connection so far (an
    /// `INSERT/UPDATE/DELETE … RETURNING` counts the rows it returned; a
    /// `SELECT` counts nothing; held-back posts count in [`PgConn::sent`]). The writer compares it around a job, as
    /// SQLite's `total_changes`: a job that failed without writing leaves
    /// its batch intact.
    pub fn changes(&self) -> u64 {
        self.changes.get()
    }

    /// Whether a statement failed since the last call (and forgets it).
    pub fn take_failed(&self) -> bool {
        self.failed.replace(false)
    }

    fn count(&self, sql: &str, rows: u64) {
        if !sql.trim_start().starts_with("SELECT") {
            self.changes.set(self.changes.get() + rows);
        }
    }

    fn track<T>(&self, r: Result<T, postgres::Error>) -> ApiResult<T> {
        if let Err(e) = &r {
            self.failed.set(true);
            // FATAL ends the session (57P01 when terminated or at a fast
            // shutdown); the client sees the socket close only later.
            let fatal = e.as_db_error().is_some_and(|d| {
                use postgres::error::Severity;
                matches!(d.parsed_severity(), Some(Severity::Fatal | Severity::Panic))
            });
            if fatal || e.is_closed() {
                self.ended.set(true);
            }
        }
        Ok(r?)
    }

    /// Runs statements without parameters (BEGIN, COMMIT, a migration).
    pub fn batch(&self, sql: &str) -> ApiResult<()> {
        self.before(sql)?;
        self.track(self.client().batch_execute(sql))
    }

    /// Holds back posts on this connection from now on (the writer's).
    pub fn defer_posts(&self) {
        *self.deferred.borrow_mut() = Some(Deferred::default());
    }

    /// Whether posts are held back here.
    pub fn deferring(&self) -> bool {
        self.deferred.borrow().is_some()
    }

    /// Before a statement: the held-back posts are sent (the statement
    /// sees them), and a statement that may write makes the counted thread
    /// states stale.
    fn before(&self, sql: &str) -> ApiResult<()> {
        let mut deferred = self.deferred.borrow_mut();
        let Some(d) = deferred.as_mut() else {
            return Ok(());
        };
        if !d.posts.is_empty() {
            let n = d.posts.len() as u64;
            self.track(d.flush(&mut self.client()))?;
            self.sent.set(self.sent.get() + n);
        }
        if !sql.trim_start().starts_with("SELECT") {
            d.threads.clear();
        }
        Ok(())
    }

    /// A thread's state as this transaction counts it, if its row is locked.
    pub fn thread_state(&self, thread_row: i64) -> Option<ThreadState> {
        self.deferred
            .borrow()
            .as_ref()
            .and_then(|d| d.threads.get(&thread_row).cloned())
    }

    /// Notes a thread's state (its row locked by this transaction).
    pub fn set_thread_state(&self, thread_row: i64, state: ThreadState) {
        if let Some(d) = self.deferred.borrow_mut().as_mut() {
            d.threads.insert(thread_row, state);
        }
    }

    /// A message row id from the sequence (reserved in blocks).
    pub fn next_message_id(&self) -> ApiResult<i64> {
        let mut deferred = self.deferred.borrow_mut();
        let d = deferred
            .as_mut()
            .ok_or_else(|| ApiError::Internal("no held-back posts here".into()))?;
        self.track(d.next_id(&mut self.client()))
    }

    /// Holds back a post.
    pub fn hold(&self, post: Post) {
        if let Some(d) = self.deferred.borrow_mut().as_mut() {
            d.posts.push(post);
        }
    }

    /// How many posts are held back (a mark for [`PgConn::undo_since`]).
    pub fn held(&self) -> usize {
        self.deferred.borrow().as_ref().map_or(0, |d| d.posts.len())
    }

    /// Drops the posts held back since `mark` (a failed job's), sends the
    /// others, and forgets the thread states (their seqs counted the
    /// dropped posts).
    pub fn undo_since(&self, mark: usize) -> ApiResult<()> {
        let mut deferred = self.deferred.borrow_mut();
        let Some(d) = deferred.as_mut() else {
            return Ok(());
        };
        d.posts.truncate(mark);
        d.threads.clear();
        let n = d.posts.len() as u64;
        self.track(d.flush(&mut self.client()))?;
        self.sent.set(self.sent.get() + n);
        Ok(())
    }

    /// Held-back posts sent so far (by the statements that followed them).
    pub fn sent(&self) -> u64 {
        self.sent.get()
    }

    /// Forgets every held-back post and thread state (before a ROLLBACK).
    pub fn forget_held(&self) {
        if let Some(d) = self.deferred.borrow_mut().as_mut() {
            d.posts.clear();
            d.threads.clear();
        }
    }

    /// The client itself (LISTEN and its notifications).
    pub fn client(&self) -> std::cell::RefMut<'_, Client> {
        std::cell::RefMut::map(self.client.borrow_mut(), |c| {
            c.as_mut().expect("expect: only Drop takes the client")
        })
    }

    /// Whether the connection is broken (the pool drops it).
    pub fn is_closed(&self) -> bool {
        self.ended.get() || self.client.borrow().as_ref().is_none_or(Client::is_closed)
    }
}

impl Drop for PgConn {
    /// Closing a client blocks on its runtime, which panics on a thread
    /// that runs async tasks (where the server's state, and with it the
    /// pool, may be dropped): the client is closed on a thread of its own.
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take() {
            let closing = std::thread::Builder::new()
                .name("threadline-pg-close".into())
                .spawn(move || drop(client));
            if closing.is_err() {
                log::warn!("cannot start a thread to close a database connection");
            }
        }
    }
}

/// How long one attempt to connect may take, whole: the TCP connection,
/// the server's greeting, authentication. A host that takes the connection
/// and never answers (a stuck server, a proxy whose backend is gone) or one
/// that drops the packets hung every attempt: at start, the pool's, the
/// writer's, the follower's, a command's. The URL's `connect_timeout=`
/// (seconds) overrides it; `connect_timeout=0` waits as long as it takes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection whose data the server has not acknowledged for this long is
/// closed (`TCP_USER_TIMEOUT`, Linux): a server that vanished (its host
/// powered off, the network cut) fails the statement that waits on it
/// instead of hanging it for the kernel's ~15 minutes of retransmissions.
/// The URL's `tcp_user_timeout=` overrides it.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalives on an idle connection (the follower's, waiting for a
/// NOTIFY; a pooled one): the first probe after this long, then every
/// [`KEEPALIVES_INTERVAL`], the connection closed after
/// [`KEEPALIVES_RETRIES`] unanswered (about 25 s in all, where the driver's
/// default starts probing after two hours). The URL's `keepalives_idle=`,
/// `keepalives_interval=`, `keepalives_retries=` override them.
pub const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
pub const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVES_RETRIES: u32 = 3;
/// Attempts given up on (past their timeout) that may still wait for the
/// server, each on a thread of its own with its socket: past this many, an
/// attempt fails at once, but for one every two timeouts (so that a node
/// whose database host is replaced while the old one holds them still
/// gets through). A host that never answers nor closes thus holds at most
/// this many, and one more every two timeouts.
const MAX_UNANSWERED: usize = 16;
static UNANSWERED: AtomicUsize = AtomicUsize::new(0);
/// When (ms since [`EPOCH`]) the last attempt past [`MAX_UNANSWERED`] went.
static OVERFLOW_AT: AtomicU64 = AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// `url` parsed, with the defaults above for what it does not say, and
/// the limit on one attempt (`None`: `connect_timeout=0`, no limit).
pub fn settings(url: &str) -> Result<(postgres::Config, Option<Duration>), postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    // A key=value word or a URL's query parameter.
    let says = |key: &str| url.contains(&format!("{key}="));
    let limit = match config.get_connect_timeout() {
        Some(t) => Some(*t),
        None if says("connect_timeout") => None,
        None => {
            config.connect_timeout(CONNECT_TIMEOUT);
            Some(CONNECT_TIMEOUT)
        }
    };
    if !says("tcp_user_timeout") {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if !says("keepalives_idle") {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if !says("keepalives_interval") {
        config.keepalives_interval(KEEPALIVES_INTERVAL);
    }
    if !says("keepalives_retries") {
        config.keepalives_retries(KEEPALIVES_RETRIES);
    }
    Ok((config, limit))
}

/// Connects with `config`, giving up after `limit`. The driver's own
/// `connect_timeout` bounds only the TCP connection, not the exchange that
/// follows, and its synchronous connect cannot be cancelled: the attempt
/// runs on a thread of its own, left to finish (its connection closed then)
/// if it outlives `limit`.
fn connect_within(
    config: postgres::Config,
    limit: Option<Duration>,
) -> Result<Client, ConnectError> {
    let Some(limit) = limit else {
        return Ok(config.connect(NoTls)?);
    };
    if UNANSWERED.load(Ordering::Relaxed) >= MAX_UNANSWERED {
        let epoch = *EPOCH.get_or_init(std::time::Instant::now);
        // +1: 0 is "never".
        let now = epoch.elapsed().as_millis() as u64 + 1;
        let last = OVERFLOW_AT.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= 2 * limit.as_millis() as u64;
        if !due
            || OVERFLOW_AT
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Err(ConnectError::NoAnswer(limit));
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    // Whether the caller gave up; the result is sent under this lock, so
    // that either the caller takes it or the thread knows it was given up.
    let given_up = Arc::new(Mutex::new(false));
    let flag = given_up.clone();
    std::thread::Builder::new()
        .name("threadline-pg-connect".into())
        .spawn(move || {
            let connected = config.connect(NoTls);
            let given_up = flag.lock().unwrap_or_else(|p| p.into_inner());
            if *given_up {
                UNANSWERED.fetch_sub(1, Ordering::Relaxed);
                // Dropped here, off any runtime: the connection closes.
                drop(connected);
            } else {
                let _ = tx.send(connected);
            }
        })
        .map_err(|_| ConnectError::Thread("cannot start a thread to connect"))?;
    // The driver's own limit on the TCP connection (the same timeout) says
    // only this; it has no other way to tell.
    let timed_out = |e: postgres::Error| match e.to_string() == "timeout waiting for server" {
        true => ConnectError::NoAnswer(limit),
        false => ConnectError::Driver(e),
    };
    match rx.recv_timeout(limit) {
        Ok(connected) => return connected.map_err(timed_out),
        // The thread ended without an answer (it panicked).
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            return Err(ConnectError::Thread(
                "the attempt to connect ended without an answer",
            ))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
    }
    let mut gave_up = given_up.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(connected) = rx.try_recv() {
        return connected.map_err(timed_out);
    }
    *gave_up = true;
    UNANSWERED.fetch_add(1, Ordering::Relaxed);
    Err(ConnectError::NoAnswer(limit))
}

/// Whether one of a node's parts (its pool, its writer, its follower)
/// reaches the database, as its connection attempts tell. It logs once when
/// they start failing and once when one succeeds again, not at every
/// attempt: a PostgreSQL restart used to write some ten lines a second per
/// node (each retry of each part, and r2d2's own "error connecting to
/// server" for every pooled connection it tried to open).
pub struct Reach {
    /// What is connecting, for the log lines ("the writer").
    what: &'static str,
    /// Since when its attempts fail (`None` while they succeed).
    down_since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Reach {
    pub fn new(what: &'static str) -> Reach {
        Reach {
            what,
            down_since: std::sync::Mutex::new(None),
        }
    }

    fn since(&self) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
        self.down_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether its last attempt failed.
    pub fn is_down(&self) -> bool {
        self.since().is_some()
    }

    /// An attempt failed (`why`: the message, without the password):
    /// logged if it is the first since one succeeded.
    pub fn failed(&self, why: &str) {
        let mut since = self.since();
        if since.is_none() {
            *since = Some(std::time::Instant::now());
            log::warn!(
                "{}: {why}; retrying (logged again once the database answers)",
                self.what
            );
        }
    }

    /// An attempt succeeded: logged if the ones before it failed.
    pub fn answered(&self) {
        if let Some(at) = self.since().take() {
            log::warn!(
                "{}: the database answers again ({:.1} s after the first failed attempt)",
                self.what,
                at.elapsed().as_secs_f64()
            );
        }
    }
}

/// Opens pooled connections to one database.
pub struct Manager {
    pub url: String,
    /// Whether the pool's last attempt to connect failed: then a request
    /// that finds no free connection is answered 503 at once rather than
    /// after the pool's whole wait (see `PgStore::pooled`).
    pub reach: std::sync::Arc<Reach>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnectError;

    fn connect(&self) -> Result<PgConn, ConnectError> {
        match PgConn::connect(&self.url) {
            Ok(c) => {
                self.reach.answered();
                Ok(c)
            }
            Err(e) => {
                self.reach.failed(&super::connect_error(&self.url, &e));
                Err(e)
            }
        }
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), ConnectError> {
        Ok(conn.client().simple_query("").map(|_| ())?)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.is_closed()
    }
}

impl From<postgres::Error> for ApiError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        match e.code() {
            // Another node's transaction held the lock past lock_timeout, or
            // the server is going away: retryable, not a bug.
            Some(c)
                if *c == SqlState::LOCK_NOT_AVAILABLE
                    || *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW
                    || *c == SqlState::TOO_MANY_CONNECTIONS =>
            {
                ApiError::Unavailable
            }
            _ if e.is_closed() => ApiError::Unavailable,
            // The server's resources or its files (class 53: a full disk,
            // out of memory; 58: I/O errors), or a server that takes no
            // writes (a standby): not the statement's fault.
            Some(c)
                if c.code().starts_with("53")
                    || c.code().starts_with("58")
                    || *c == SqlState::READ_ONLY_SQL_TRANSACTION =>
            {
                ApiError::Storage(format!("postgres: {e}"))
            }
            _ => ApiError::Internal(format!("postgres: {e}")),
        }
    }
}

/// A column of `row` (a mismatch between schema and code is a 500).
pub fn get<'r, T: postgres::types::FromSql<'r>>(row: &'r Row, idx: usize) -> ApiResult<T> {
    row.try_get(idx)
        .map_err(|e| ApiError::Internal(format!("postgres column {idx}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attempts on a host that takes the connection and never answers end
    /// at their limit; past [`MAX_UNANSWERED`] left waiting, one every two
    /// limits still goes out, the others fail at once; once the host closes them,
    /// the threads left waiting end.
    #[test]
    fn attempts_on_a_silent_host_end_in_time_and_leave_a_bounded_number_waiting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                keep.lock().unwrap().push(conn);
            }
        });
        let url = format!("postgres://x@127.0.0.1:{port}/x");
        let limit = Duration::from_millis(150);
        let attempt = || {
            let (config, _) = settings(&url).expect("a URL");
            let started = std::time::Instant::now();
            let result = connect_within(config, Some(limit));
            let failed = matches!(result, Err(ConnectError::NoAnswer(l)) if l == limit);
            (failed, started.elapsed())
        };
        for _ in 0..MAX_UNANSWERED {
            let (failed, took) = attempt();
            assert!(failed);
            assert!(took >= limit && took < limit * 10, "{took:?}");
        }
        assert_eq!(UNANSWERED.load(Ordering::Relaxed), MAX_UNANSWERED);
        // Past the cap: the first goes out (and waits its limit), the next
        // fails at once, and one goes out again two limits after the first.
        let (failed, took) = attempt();
        assert!(failed && took >= limit, "{took:?}");
        let (failed, took) = attempt();
        assert!(failed && took < limit, "{took:?}");
        std::thread::sleep(limit);
        let (failed, took) = attempt();
        assert!(failed && took >= limit, "{took:?}");
        assert_eq!(UNANSWERED.load(Ordering::Relaxed), MAX_UNANSWERED + 2);
        let (failed, took) = attempt();
        assert!(failed && took < limit, "{took:?}");
        // The host closes them: every thread left waiting ends.
        held.lock().unwrap().clear();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while UNANSWERED.load(Ordering::Relaxed) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "threads still waiting"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_url_overrides_the_connection_defaults() {
        let (c, limit) = settings("postgres://x@h/db").expect("a URL");
        assert_eq!(limit, Some(CONNECT_TIMEOUT));
        assert_eq!(c.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert_eq!(c.get_keepalives_idle(), KEEPALIVES_IDLE);
        let (c, limit) =
            settings("postgres://x@h/db?connect_timeout=9&tcp_user_timeout=7&keepalives_idle=60")
                .expect("a URL");
        assert_eq!(limit, Some(Duration::from_secs(9)));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(60));
        let (_, limit) = settings("postgres://x@h/db?connect_timeout=0").expect("a URL");
        assert_eq!(limit, None, "0 waits as long as it takes");
    }
}
