//! A database that outlives the servers of one test (the restart tests):
//! a SQLite file in a temp directory, or, with
//! `THREADLINE_TEST_DATABASE_URL`, a PostgreSQL database of its own. The
//! harness picks the backend; a test reads the same on both, so a restart
//! is tested on each.

use std::path::PathBuf;

use threadline::cli::DevSeed;
use threadline::config::{DbArg, ServeConfig};
use threadline::store::pg::PgConn;
use threadline::store::Db;

use super::pg;

/// One test's database, kept across the servers it starts.
pub struct TestDb {
    /// Where a child server writes its output (and the SQLite file lives).
    pub dir: tempfile::TempDir,
    /// The SQLite file (unused on PostgreSQL).
    pub path: PathBuf,
    /// Where the data is, as the library's command-line functions take it.
    pub arg: DbArg,
    /// A connection to it for `count` and `execute`, kept for the test.
    session: Option<pg::Session>,
    /// This test's PostgreSQL database, dropped last.
    pg: Option<pg::TestDatabase>,
}

impl TestDb {
    /// A new database on the backend the harness runs on: no file yet on
    /// SQLite (the first server or command migrates it), a copy of the
    /// migrated template on PostgreSQL (see `pg::TestDatabase::migrated`).
    pub fn new() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("threadline.db");
        let pg = pg::TestDatabase::migrated();
        let arg = DbArg {
            path: path.clone(),
            database_url: pg.as_ref().map(|d| d.url.clone()),
        };
        let session = arg.database_url.as_deref().map(pg::Session::new);
        TestDb {
            dir,
            path,
            arg,
            session,
            pg,
        }
    }

    /// Whether it is a PostgreSQL database.
    pub fn on_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// The dev seed (one account owning alice and bob).
    pub fn seed(&self) -> DevSeed {
        threadline::cli::dev_seed(&self.arg)
            .expect("seed")
            .expect("empty database")
    }

    /// The test settings of a server in this process on this database.
    pub fn config(&self) -> ServeConfig {
        let mut config = ServeConfig::for_tests(self.path.clone());
        config.db = self.arg.clone();
        config
    }

    /// The arguments that point the `threadline` binary at this database.
    pub fn args(&self) -> Vec<String> {
        match &self.arg.database_url {
            Some(url) => vec!["--database-url".into(), url.clone()],
            None => vec!["--db".into(), self.path.display().to_string()],
        }
    }

    /// `args` followed by this database's arguments, for `cli_json`.
    pub fn with_args<'a>(&'a self, args: &[&'a str], db_args: &'a [String]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(db_args.iter().map(String::as_str));
        all
    }

    /// The one integer `sql` (no parameters) selects.
    pub fn count(&self, sql: &str) -> i64 {
        match &self.session {
            Some(pg) => pg.scalar(sql),
            None => rusqlite::Connection::open(&self.path)
                .expect("open the test database")
                .query_row(sql, [], |r| r.get(0))
                .expect("query"),
        }
    }

    /// Runs one statement (test setup, such as ageing rows); returns how
    /// many rows it changed.
    pub fn execute(&self, sql: &str) -> u64 {
        match &self.session {
            Some(pg) => pg.execute(sql),
            None => rusqlite::Connection::open(&self.path)
                .expect("open the test database")
                .execute(sql, [])
                .expect("statement") as u64,
        }
    }

    /// Runs `f` on a fresh connection (a consumer that has just started),
    /// through the store's functions for either backend.
    pub fn with_conn<T: Send>(&self, f: impl FnOnce(Db<'_>) -> T + Send) -> T {
        match &self.arg.database_url {
            // The postgres client cannot start on the test's runtime.
            Some(url) => std::thread::scope(|s| {
                s.spawn(|| {
                    let c = PgConn::connect(url).expect("connect to the test database");
                    f(Db::Pg(&c))
                })
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
            }),
            None => {
                let conn = rusqlite::Connection::open(&self.path).expect("open the test database");
                conn.busy_timeout(super::WAIT).expect("busy timeout");
                f(Db::Sqlite(&conn))
            }
        }
    }
}
