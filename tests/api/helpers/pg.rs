//! PostgreSQL for the tests: with `THREADLINE_TEST_DATABASE_URL` (an admin
//! URL to a cluster, e.g. `postgres://postgres@127.0.0.1:5432/postgres`)
//! every `spawn_app()` gets a database of its own, made with the schema
//! (a copy of a template migrated once) and dropped with the app; without
//! it the tests run on SQLite files.
//!
//! The `postgres` client is synchronous and runs its own runtime, which
//! cannot start inside a test's; each call here runs on a thread of its own.

use postgres::{Client, NoTls};

/// The admin URL, if the tests run on PostgreSQL.
pub fn admin_url() -> Option<String> {
    std::env::var("THREADLINE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Whether the tests run on PostgreSQL (tests that are about the SQLite
/// file itself skip then, saying so).
pub fn on_postgres() -> bool {
    admin_url().is_some()
}

/// On PostgreSQL, says in one line that a test about the SQLite file
/// itself is skipped, and returns true.
pub fn skip(why: &str) -> bool {
    let skip = on_postgres();
    if skip {
        eprintln!("skipped on PostgreSQL: {why}");
    }
    skip
}

/// On SQLite, says in one line that a test of several nodes is skipped
/// (they need a database two servers share), and returns true.
pub fn needs_postgres() -> bool {
    let skip = !on_postgres();
    if skip {
        eprintln!(
            "skipped on SQLite: several nodes need PostgreSQL (THREADLINE_TEST_DATABASE_URL)"
        );
    }
    skip
}

/// Runs `f` on a thread of its own (outside the test's runtime).
fn detached<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// One test's database.
pub struct TestDatabase {
    admin: String,
    name: String,
    /// The URL the server and the command line use.
    pub url: String,
}

impl TestDatabase {
    /// A new empty database, if the tests run on PostgreSQL.
    pub fn create() -> Option<TestDatabase> {
        TestDatabase::copy_of("template1")
    }

    /// A new database holding the schema the migrations make, if the tests
    /// run on PostgreSQL: a copy of a database migrated once (see
    /// [`template`]), not migrated again in each test. The server starting
    /// on it finds every migration applied, as on any restart; the
    /// migrations from empty run when the template is made, and
    /// `schema_parity` runs them on an empty database every time.
    pub fn migrated() -> Option<TestDatabase> {
        TestDatabase::copy_of(template()?)
    }

    fn copy_of(source: &str) -> Option<TestDatabase> {
        let admin = admin_url()?;
        let name = format!("tl_{}", uuid::Uuid::new_v4().simple());
        let url = with_database(&admin, &name);
        detached(|| {
            let mut c = Client::connect(&admin, NoTls).expect("connect to the test cluster");
            c.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {source}"))
                .expect("create the test database");
        });
        Some(TestDatabase { admin, name, url })
    }

    /// Another database's URL (two-node tests share this one).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (&self.admin, &self.name);
        detached(|| {
            if let Ok(mut c) = Client::connect(admin, NoTls) {
                // The server's pool may still hold connections: closed
                // first, since DROP ... WITH (FORCE) waits 100 ms at a
                // time for them to go.
                disconnect(&mut c, name);
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        });
    }
}

/// Closes every connection to database `name` and lets no new one in (a
/// pool still running would reconnect), waiting for them to be gone.
fn disconnect(c: &mut Client, name: &str) {
    let _ = c.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
    let others =
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()";
    let _ = c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
        &[&name],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match c.query_one(others, &[&name]) {
            Ok(row) if row.get::<_, i64>(0) > 0 => {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
            _ => break,
        }
    }
}

/// The name of a database that holds what the migrations make and nothing
/// else, made once per cluster and schema: named after a hash of the
/// migrations, so that a run with other migrations makes its own.
/// It is built under a name of its own and renamed once migrated, so that
/// a run (or a test) starting meanwhile never copies it half made; it
/// takes no connections, so copies of it are never refused for one. It is
/// left on the cluster for the next run (CI's cluster is thrown away).
fn template() -> Option<&'static str> {
    static TEMPLATE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let admin = admin_url()?;
    Some(TEMPLATE.get_or_init(|| detached(|| make_template(&admin))))
}

fn make_template(admin: &str) -> String {
    let name = format!("tl_template_{:016x}", migrations_hash());
    let mut c = Client::connect(admin, NoTls).expect("connect to the test cluster");
    let exists = |c: &mut Client| {
        c.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .expect("list the databases")
            .is_some()
    };
    if exists(&mut c) {
        return name;
    }
    let building = format!("tl_{}", uuid::Uuid::new_v4().simple());
    c.batch_execute(&format!("CREATE DATABASE {building}"))
        .expect("create the template database");
    drop(
        threadline::store::pg::open_connection(&with_database(admin, &building))
            .expect("the PG migrations apply"),
    );
    let rename = format!("ALTER DATABASE {building} RENAME TO {name}");
    for attempt in 0.. {
        disconnect(&mut c, &building);
        match c.batch_execute(&rename) {
            Ok(()) => break,
            Err(_) if exists(&mut c) => {
                // Another run made it meanwhile.
                let _ =
                    c.batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"));
                break;
            }
            // A connection just closed may still be counted a moment.
            Err(_) if attempt < 50 => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => panic!("rename the template database: {e}"),
        }
    }
    name
}

/// FNV-1a over the names and contents of migrations/postgres/*.sql and of
/// the code that applies them (which makes `schema_version`).
fn migrations_hash() -> u64 {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("migrations/postgres"))
        .expect("migrations/postgres")
        .map(|e| e.expect("a migration").path())
        .collect();
    files.sort();
    files.push(root.join("src/store/pg/migrate.rs"));
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in files {
        let name = file
            .file_name()
            .expect("a file name")
            .as_encoded_bytes()
            .to_vec();
        let sql = std::fs::read(&file).expect("a migration reads");
        for byte in name.iter().chain(&[0]).chain(&sql).chain(&[0]) {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

/// The one integer `sql` selects.
pub fn scalar(url: &str, sql: &str) -> i64 {
    detached(|| {
        let mut c = Client::connect(url, NoTls).expect("connect to the test database");
        int_at(&c.query_one(sql, &[]).expect("query"), 0)
    })
}

/// Column `i` of `row`, a BIGINT or an INTEGER.
fn int_at(row: &postgres::Row, i: usize) -> i64 {
    row.try_get::<_, i64>(i)
        .or_else(|_| row.try_get::<_, i32>(i).map(i64::from))
        .expect("an integer")
}

/// One connection kept open for many statements: for tests that read the
/// database after every request, where a connection per read (a backend
/// started and stopped each time) costs more than the requests. It
/// connects at its first statement and again if the connection broke.
/// Like the functions above it runs its calls, and its close, on a thread
/// of their own.
pub struct Session {
    url: String,
    client: std::sync::Mutex<Option<Client>>,
}

impl Session {
    /// A session on `url` (no connection yet).
    pub fn new(url: &str) -> Session {
        Session {
            url: url.to_owned(),
            client: std::sync::Mutex::new(None),
        }
    }

    fn with<T: Send>(&self, f: impl FnOnce(&mut Client) -> T + Send) -> T {
        let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let (client, url) = (&mut *client, &self.url);
        detached(move || {
            if client.as_ref().is_none_or(Client::is_closed) {
                *client = Some(Client::connect(url, NoTls).expect("connect to the test database"));
            }
            f(client.as_mut().expect("expect: connected just above"))
        })
    }

    /// The one integer `sql` selects.
    pub fn scalar(&self, sql: &str) -> i64 {
        self.with(|c| int_at(&c.query_one(sql, &[]).expect("query"), 0))
    }

    /// The integers (BIGINT or INTEGER columns) of the one row `sql` selects.
    pub fn ints_of_row(&self, sql: &str) -> Vec<i64> {
        self.with(|c| {
            let row = c.query_one(sql, &[]).expect("query");
            (0..row.len()).map(|i| int_at(&row, i)).collect()
        })
    }

    /// The integers of the first column of every row `sql` selects.
    pub fn ints(&self, sql: &str) -> Vec<i64> {
        self.with(|c| {
            c.query(sql, &[])
                .expect("query")
                .iter()
                .map(|r| r.get(0))
                .collect()
        })
    }

    /// The one text (or NULL) `sql` selects.
    pub fn text(&self, sql: &str) -> Option<String> {
        self.with(|c| c.query_one(sql, &[]).expect("query").get(0))
    }

    /// Runs statements that return nothing.
    pub fn exec(&self, sql: &str) {
        self.with(|c| c.batch_execute(sql).expect("statements"))
    }

    /// Runs one statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str) -> u64 {
        self.with(|c| c.execute(sql, &[]).expect("statement"))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(client) = client {
            detached(move || drop(client));
        }
    }
}

/// Runs statements that return nothing (test setup, e.g. ageing rows).
pub fn exec(url: &str, sql: &str) {
    detached(|| {
        let mut c = Client::connect(url, NoTls).expect("connect to the test database");
        c.batch_execute(sql).expect("statements");
    })
}

/// Runs one statement; returns how many rows it changed.
pub fn execute(url: &str, sql: &str) -> u64 {
    detached(|| {
        let mut c = Client::connect(url, NoTls).expect("connect to the test database");
        c.execute(sql, &[]).expect("statement")
    })
}

/// The one text (or NULL) `sql` selects.
pub fn text(url: &str, sql: &str) -> Option<String> {
    detached(|| {
        let mut c = Client::connect(url, NoTls).expect("connect to the test database");
        c.query_one(sql, &[]).expect("query").get(0)
    })
}

/// The integers of the first column of every row `sql` selects.
pub fn ints(url: &str, sql: &str) -> Vec<i64> {
    detached(|| {
        let mut c = Client::connect(url, NoTls).expect("connect to the test database");
        c.query(sql, &[])
            .expect("query")
            .iter()
            .map(|r| r.get(0))
            .collect()
    })
}

/// The whole event log, read as a consumer would.
pub fn log(url: &str) -> Vec<threadline::events::Event> {
    detached(|| {
        let c = threadline::store::pg::PgConn::connect(url).expect("connect");
        threadline::store::db::events::events_after(threadline::store::Db::Pg(&c), 0, 10_000)
            .expect("the log reads")
    })
}

/// The server's retention pass over the log, run directly; returns how
/// many events went and the newest position.
pub fn prune_log(url: &str, cutoff: &str) -> (usize, i64) {
    detached(|| {
        use threadline::store::pg::{events, PgConn};
        let c = PgConn::connect(url).expect("connect");
        let pruned = events::prune(&c, cutoff, 1000).expect("prune");
        (pruned, events::last_position(&c).expect("newest"))
    })
}
