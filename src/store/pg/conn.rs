//! One PostgreSQL connection as the store uses it: the synchronous client
//! (the store's functions are synchronous and run off the async workers, as
//! on SQLite), a cache of prepared statements, and four query shapes that
//! turn driver errors into `ApiError`. The pool is r2d2's, as for SQLite.

use std::cell::RefCell;
use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

use crate::error::{ApiError, ApiResult};

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
}

impl PgConn {
    /// Connects to `url`.
    pub fn connect(url: &str) -> Result<PgConn, postgres::Error> {
        Ok(PgConn::new(Client::connect(url, NoTls)?))
    }

    /// Connects to `url` under `application_name` (how the other nodes see
    /// that this node is alive, in `pg_stat_activity`).
    pub fn connect_as(url: &str, application_name: &str) -> Result<PgConn, postgres::Error> {
        let mut config: postgres::Config = url.parse()?;
        config.application_name(application_name);
        Ok(PgConn::new(config.connect(NoTls)?))
    }

    fn new(client: Client) -> PgConn {
        PgConn {
            client: RefCell::new(Some(client)),
            statements: RefCell::new(HashMap::new()),
        }
    }

    /// The statement for `sql`, prepared once per connection.
    fn statement(&self, sql: &'static str) -> ApiResult<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = self.client().prepare(sql)?;
        self.statements.borrow_mut().insert(sql, s.clone());
        Ok(s)
    }

    /// Runs a statement; returns how many rows it changed.
    pub fn exec(&self, sql: &'static str, params: Params<'_>) -> ApiResult<u64> {
        let s = self.statement(sql)?;
        Ok(self.client().execute(&s, params)?)
    }

    /// Every row.
    pub fn all(&self, sql: &'static str, params: Params<'_>) -> ApiResult<Vec<Row>> {
        let s = self.statement(sql)?;
        Ok(self.client().query(&s, params)?)
    }

    /// The one row (an error if there is none).
    pub fn one(&self, sql: &'static str, params: Params<'_>) -> ApiResult<Row> {
        let s = self.statement(sql)?;
        Ok(self.client().query_one(&s, params)?)
    }

    /// The row, if there is one.
    pub fn opt(&self, sql: &'static str, params: Params<'_>) -> ApiResult<Option<Row>> {
        let s = self.statement(sql)?;
        Ok(self.client().query_opt(&s, params)?)
    }

    /// Runs statements without parameters (BEGIN, COMMIT, a migration).
    pub fn batch(&self, sql: &str) -> ApiResult<()> {
        Ok(self.client().batch_execute(sql)?)
    }

    /// The client itself (LISTEN and its notifications).
    pub fn client(&self) -> std::cell::RefMut<'_, Client> {
        std::cell::RefMut::map(self.client.borrow_mut(), |c| {
            c.as_mut().expect("expect: only Drop takes the client")
        })
    }

    /// Whether the connection is broken (the pool drops it).
    pub fn is_closed(&self) -> bool {
        self.client.borrow().as_ref().is_none_or(Client::is_closed)
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

/// Opens pooled connections to one database.
pub struct Manager {
    pub url: String,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        PgConn::connect(&self.url)
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        conn.client().simple_query("").map(|_| ())
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
                    || *c == SqlState::TOO_MANY_CONNECTIONS =>
            {
                ApiError::Unavailable
            }
            _ if e.is_closed() => ApiError::Unavailable,
            _ => ApiError::Internal(format!("postgres: {e}")),
        }
    }
}

/// A column of `row` (a mismatch between schema and code is a 500).
pub fn get<'r, T: postgres::types::FromSql<'r>>(row: &'r Row, idx: usize) -> ApiResult<T> {
    row.try_get(idx)
        .map_err(|e| ApiError::Internal(format!("postgres column {idx}: {e}")))
}
