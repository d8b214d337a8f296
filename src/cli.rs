//! The provisioning commands (`agent create`, `key create`, `key revoke`) and
//! the `serve --dev` seed. They open the database directly, so they work on a
//! file a running server is using (WAL mode and a busy timeout make that safe).
//! `agent create` creates a missing database (it is a new operator's first
//! command); every other command refuses one (a mistyped `--db` would
//! otherwise answer "no such account" from a new, empty file). The operator's
//! other commands are in [`admin`]; [`invocation`] names this binary the way
//! the user started it, for the commands it suggests.

mod admin;
mod invocation;
mod webhook;

pub use admin::{
    agent_list, agent_rename, backup, key_list, key_revoke_all, mark_restored, prune, thread_delete,
};
pub use invocation::{shell_quote, this_command};
pub use webhook::{
    webhook_attempts, webhook_create, webhook_delete, webhook_list, webhook_pause, webhook_resume,
    webhook_rotate,
};

use serde_json::json;

use crate::config::DbArg;
use crate::domain::text::AgentName;
use crate::domain::{Aid, LoginKey, Metadata, UserId};
use crate::store::db::accounts;
use crate::store::{self, pg, Db, Location};

/// A connection the command line opened, to either backend.
enum Opened {
    Sqlite(rusqlite::Connection),
    Pg(Box<pg::PgConn>),
}

impl Opened {
    fn db(&self) -> Db<'_> {
        match self {
            Opened::Sqlite(c) => Db::Sqlite(c),
            Opened::Pg(c) => Db::Pg(c),
        }
    }
}

/// Refuses a `--db` that names a directory, saying so (SQLite's own word
/// is "unable to open database file", and a command that needs the file
/// to exist said "no database at" the directory), and one this user may
/// not reach: run as another user than the server's (whose state
/// directory is its own, mode 0700), a command said "no database at" a
/// file that is there. (Only looked at, never opened: closing a
/// descriptor of the file would drop the locks SQLite holds on it in this
/// process, and a server calls this too.)
pub fn check_db_path(db: &DbArg) -> Result<(), String> {
    let Location::Sqlite(path) = db.location() else {
        return Ok(());
    };
    if path.is_dir() {
        return Err(format!(
            "--db {} is a directory: name the database file in it (such as {})",
            path.display(),
            path.join("threadline.db").display()
        ));
    }
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(permission_denied(path)),
        _ => Ok(()),
    }
}

/// The refusal of a database this user may not reach or write.
fn permission_denied(path: &std::path::Path) -> String {
    format!(
        "cannot open database {}: permission denied; run threadline as the user that \
         owns it (the service's: sudo -u threadline threadline ...)",
        path.display()
    )
}

/// What `serve` holds of its SQLite file: see [`lock_for_serving`].
pub struct ServingLock {
    /// The file, when `serve` created it: removed again if the server does
    /// not start and it is still empty.
    made: Option<std::path::PathBuf>,
}

impl ServingLock {
    /// The server started: the file is its database.
    pub fn started(mut self) {
        self.made = None;
    }
}

impl Drop for ServingLock {
    fn drop(&mut self) {
        // The server did not start (a port in use, a bad setting): leave no
        // empty file where there was no database.
        if let Some(path) = self.made.take() {
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Locks the SQLite file for as long as this process serves it (an
/// exclusive `flock`, which SQLite's own locks do not use), so that a
/// second `serve` on it is refused: two servers on one file would each
/// push only their own commits to their sockets, and both would deliver
/// every webhook event. The commands take no such lock and work beside
/// the server. The file is opened once and kept open to the end of the
/// process (closing another descriptor of a database file would drop the
/// locks SQLite holds on it). PostgreSQL takes any number of nodes.
pub fn lock_for_serving(db: &DbArg) -> Result<ServingLock, String> {
    static HELD: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    let unlocked = ServingLock { made: None };
    let Location::Sqlite(path) = db.location() else {
        return Ok(unlocked);
    };
    let existed = path.exists();
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(permission_denied(path));
        }
        // A missing directory, say: opening the database says what is wrong.
        Err(_) => return Ok(unlocked),
    };
    let made = (!existed).then(|| path.to_path_buf());
    match file.try_lock() {
        Ok(()) => {
            let _ = HELD.set(file);
            Ok(ServingLock { made })
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another threadline serve is using {}: stop it first (two servers on one \
             SQLite file would not see each other's messages live, and both would deliver \
             every webhook event); several nodes serve one PostgreSQL database \
             (--database-url)",
            path.display()
        )),
        // A file system without locks: served as before, unguarded.
        Err(std::fs::TryLockError::Error(e)) => {
            log::warn!(
                "cannot lock {} against a second server: {e}",
                path.display()
            );
            Ok(ServingLock { made })
        }
    }
}

/// Refuses an empty file where a command needs an existing database: SQLite
/// takes a file of no bytes for a new database, so a command would write
/// the whole schema into it and answer from it (`{"agents": []}`) as if it
/// were the server's (a `touch`ed or truncated file, a copy that failed).
pub(crate) fn refuse_empty(path: &std::path::Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() == 0 => Err(format!(
            "{} is an empty file, not a threadline database (check --db or THREADLINE_DB)",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// What a command does with the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Lists: works on a file this user may only read (SQLite opens it
    /// read-only).
    Read,
    /// Changes something: a file this user may not write is refused first
    /// (see [`refuse_read_only`]).
    Write,
}

/// Refuses a database file this process may read but not write (its
/// mode, its owner, a read-only file system) to a command that writes,
/// saying so and what to do, before anything is written: SQLite opens
/// such a file read-only, and the command failed on its first write
/// ("internal error", or SQLite's "attempt to write a readonly
/// database"). SQLite itself opens the file to find out, so no lock this
/// process holds on it is dropped (closing a descriptor of our own would).
pub(crate) fn refuse_read_only(path: &std::path::Path) -> Result<(), String> {
    use rusqlite::OpenFlags;
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if !meta.is_file() {
        return Ok(());
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    // A file SQLite cannot open at all: opening it for the command says why.
    let Ok(conn) = rusqlite::Connection::open_with_flags(path, flags) else {
        return Ok(());
    };
    if !conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
        return Ok(());
    }
    // SQLite makes its -shm and -wal with the file's mode: those left by a
    // command that listed while it was read-only need the same change.
    let shown = path.display().to_string();
    let files: Vec<String> = std::iter::once(shown.clone())
        .chain(
            ["-shm", "-wal"]
                .iter()
                .map(|side| format!("{shown}{side}"))
                .filter(|side| std::path::Path::new(side).exists()),
        )
        .map(|f| shell_quote(&f))
        .collect();
    Err(format!(
        "cannot write to database {shown}: it is read-only to this process (mode {:04o}, \
         owner uid {}, or a read-only file system); make it writable (chmod u+w {}) \
         or run threadline as the user that owns it (the service's: sudo -u threadline \
         threadline ...); commands that only list work on it as it is",
        meta.mode() & 0o7777,
        meta.uid(),
        files.join(" "),
    ))
}

/// The refusal of a database whose own file is writable but whose WAL
/// index (`-shm`) or WAL (`-wal`) is not: SQLite makes them with the
/// database file's mode, so a command that read the file while it was
/// read-only (or one run as another user) leaves them so, and making the
/// file writable again is not enough.
fn read_only_side_files(path: &str) -> String {
    let (shm, wal) = (format!("{path}-shm"), format!("{path}-wal"));
    format!(
        "cannot write to database {path}: its files {shm} and {wal} (SQLite's WAL index \
         and log) are read-only to this process; make them writable (chmod u+w {} {}) or \
         run threadline as the user that owns them (the service's: sudo -u threadline \
         threadline ...)",
        shell_quote(&shm),
        shell_quote(&wal)
    )
}

/// Opens the database, migrated. A SQLite file must exist (and not be
/// empty) unless `create`, and be writable for `Access::Write`.
fn open(db: &DbArg, create: bool, access: Access) -> Result<Opened, String> {
    check_db_path(db)?;
    Ok(match db.location() {
        Location::Pg(url) => Opened::Pg(Box::new(pg::open_connection(url)?)),
        Location::Sqlite(path) => {
            if !create {
                refuse_empty(path)?;
            }
            if access == Access::Write {
                refuse_read_only(path)?;
            }
            match create {
                true => Opened::Sqlite(store::open_connection(path)?),
                false => Opened::Sqlite(store::open_existing(path)?),
            }
        }
    })
}

/// Runs `f`, which writes, in one transaction on the database, which must
/// exist.
fn in_transaction<T: Send>(
    db: &DbArg,
    f: impl FnOnce(Db<'_>) -> crate::error::ApiResult<T> + Send,
) -> Result<T, String> {
    transaction(db, false, Access::Write, f)
}

/// Runs `f`, which only reads, in one transaction on the database, which
/// must exist (and may be read-only to this user).
fn reading<T: Send>(
    db: &DbArg,
    f: impl FnOnce(Db<'_>) -> crate::error::ApiResult<T> + Send,
) -> Result<T, String> {
    transaction(db, false, Access::Read, f)
}

/// Opens the database (see [`open`]) and runs `f` in one transaction
/// (immediate, on SQLite). On a thread of its own: these functions are
/// also called from async code (tests, the dev seed), where the
/// PostgreSQL client cannot block.
pub(super) fn transaction<T: Send>(
    db: &DbArg,
    create: bool,
    access: Access,
    f: impl FnOnce(Db<'_>) -> crate::error::ApiResult<T> + Send,
) -> Result<T, String> {
    pg::off_runtime(|| {
        let conn = open(db, create, access)?;
        in_transaction_on(conn, f)
    })
}

/// Runs `f` in one transaction (immediate, on SQLite) on `conn`.
fn in_transaction_on<T>(
    conn: Opened,
    f: impl FnOnce(Db<'_>) -> crate::error::ApiResult<T>,
) -> Result<T, String> {
    // SQLite's "read-only" here is not the database file's (refused before
    // it was opened) but its -shm or -wal file's.
    let run = |sql: &str, what: &str| -> Result<(), String> {
        match &conn {
            Opened::Sqlite(c) => {
                c.execute_batch(sql)
                    .map_err(|e| match (e.sqlite_error_code(), c.path()) {
                        (Some(rusqlite::ErrorCode::ReadOnly), Some(path)) => {
                            read_only_side_files(path)
                        }
                        _ => format!("{what}: {e}"),
                    })
            }
            Opened::Pg(c) => c.batch(sql).map_err(|e| format!("{what}: {e}")),
        }
    };
    run(
        match conn {
            Opened::Sqlite(_) => "BEGIN IMMEDIATE",
            Opened::Pg(_) => "BEGIN",
        },
        "database is busy",
    )?;
    match f(conn.db()) {
        Ok(v) => {
            run("COMMIT", "could not commit")?;
            Ok(v)
        }
        Err(e) => {
            let _ = run("ROLLBACK", "");
            Err(e.public_message())
        }
    }
}

fn new_agent(name: &str) -> Result<accounts::NewAgent, String> {
    let name = AgentName::parse("name", name.to_owned()).map_err(|e| e.public_message())?;
    Ok(accounts::NewAgent {
        aid: Aid::random(),
        name: name.into_string(),
        capabilities: Vec::new(),
        description: None,
        metadata: Metadata::parse("metadata", None).map_err(|e| e.public_message())?,
    })
}

/// `agent create`: prints `{"user_id", "aid", "name", "login_key"}`.
pub fn agent_create(db: &DbArg, name: &str, user: Option<&str>) -> Result<String, String> {
    let agent = new_agent(name)?;
    let user = user.map(UserId::parse).transpose()?;
    // Only a new account may start a new database: with --user, the account
    // must already be in an existing one.
    let (user_id, key) = transaction(db, user.is_none(), Access::Write, |conn| {
        let (account_id, user_id, key) = match &user {
            Some(u) => {
                let id = accounts::account_by_user_id(conn, u)?.ok_or_else(|| {
                    crate::error::ApiError::invalid(format!("no account {}", u.as_str()))
                })?;
                (id, u.clone(), None)
            }
            None => {
                let (id, user_id) = accounts::create_account(conn)?;
                let key = accounts::create_key(conn, id)?;
                (id, user_id, Some(key))
            }
        };
        accounts::create_agent(conn, account_id, &agent)?;
        Ok((user_id, key))
    })?;
    Ok(json!({
        "user_id": user_id.as_str(),
        "aid": agent.aid.as_str(),
        "name": agent.name,
        "login_key": key.as_ref().map(LoginKey::reveal),
    })
    .to_string())
}

/// `key create`: prints `{"user_id", "login_key"}`.
pub fn key_create(db: &DbArg, user: &str) -> Result<String, String> {
    let user = UserId::parse(user)?;
    let key = in_transaction(db, |conn| {
        let id = accounts::account_by_user_id(conn, &user)?.ok_or_else(|| {
            crate::error::ApiError::invalid(format!("no account {}", user.as_str()))
        })?;
        accounts::create_key(conn, id)
    })?;
    Ok(json!({"user_id": user.as_str(), "login_key": key.reveal()}).to_string())
}

/// The key a command was given: the argument, or with `-` or none the
/// first line of `stdin` (a key on the command line shows in `ps` and in
/// the shell's history).
pub fn key_argument(arg: Option<&str>, stdin: impl std::io::BufRead) -> Result<String, String> {
    match arg {
        Some(key) if key != "-" => Ok(key.to_owned()),
        _ => {
            let mut line = String::new();
            // A key is 46 characters: a few hundred bytes is plenty.
            std::io::BufRead::read_line(&mut std::io::Read::take(stdin, 1024), &mut line)
                .map_err(|e| format!("cannot read the key from stdin: {e}"))?;
            Ok(line.trim().to_owned())
        }
    }
}

/// `key revoke`: prints `{"revoked": true}`; an unknown or already revoked
/// key is an error.
pub fn key_revoke(db: &DbArg, key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("no login key given: pass it as LOGIN_KEY, or its first line on stdin".into());
    }
    let key = LoginKey::parse(key).ok_or("that is not a login key (nk_ + 43 characters)")?;
    let revoked = in_transaction(db, |conn| accounts::revoke_key(conn, &key))?;
    if revoked {
        Ok(json!({"revoked": true}).to_string())
    } else {
        Err("no live key matches (unknown, or already revoked)".into())
    }
}

/// What `serve --dev` seeded.
pub struct DevSeed {
    pub user_id: String,
    pub login_key: String,
    pub alice: String,
    pub bob: String,
}

/// On an empty database, creates one account with agents `alice` and `bob`.
/// Returns `None` when the database already has accounts.
pub fn dev_seed(db: &DbArg) -> Result<Option<DevSeed>, String> {
    let alice = new_agent("alice")?;
    let bob = new_agent("bob")?;
    transaction(db, true, Access::Write, |conn| {
        if !accounts::is_empty(conn)? {
            return Ok(None);
        }
        let (id, user_id) = accounts::create_account(conn)?;
        let key = accounts::create_key(conn, id)?;
        accounts::create_agent(conn, id, &alice)?;
        accounts::create_agent(conn, id, &bob)?;
        Ok(Some(DevSeed {
            user_id: user_id.as_str().to_owned(),
            login_key: key.reveal().to_owned(),
            alice: alice.aid.as_str().to_owned(),
            bob: bob.aid.as_str().to_owned(),
        }))
    })
}

/// Whether the database has no account (to tell a new operator what to do).
pub fn is_empty(db: &DbArg) -> Result<bool, String> {
    transaction(db, true, Access::Read, accounts::is_empty)
}

/// An account as the `--dev` banner shows it again.
pub struct FirstAccount {
    pub user_id: String,
    /// (AID, name), oldest first.
    pub agents: Vec<(String, String)>,
}

/// The oldest account and its agents: on a dev database, the demo account
/// with alice and bob.
pub fn first_account(db: &DbArg) -> Result<Option<FirstAccount>, String> {
    pg::off_runtime(|| first_account_on(&open(db, true, Access::Read)?))
}

fn first_account_on(conn: &Opened) -> Result<Option<FirstAccount>, String> {
    let first = match conn {
        Opened::Sqlite(c) => store::optional_row(c.query_row(
            "SELECT id, user_id FROM accounts ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )),
        Opened::Pg(c) => c
            .opt("SELECT id, user_id FROM accounts ORDER BY id LIMIT 1", &[])
            .and_then(|r| {
                r.map(|r| Ok((pg::conn::get(&r, 0)?, pg::conn::get(&r, 1)?)))
                    .transpose()
            }),
    };
    let Some((id, user_id)) = first.map_err(|e| e.public_message())? else {
        return Ok(None);
    };
    let agents = accounts::agents_of_account(conn.db(), id, 100)
        .map_err(|e| e.public_message())?
        .into_iter()
        .map(|a| (a.aid, a.name))
        .collect();
    Ok(Some(FirstAccount { user_id, agents }))
}
