//! The operator's side, tried as a newcomer would: the command line and
//! webhook administration, through the real binary and the real server.

use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::helpers::process::{cli_json, non_log_lines, output_within, run_cli, Server, BIN};
use crate::helpers::webhook::read_request;
use crate::helpers::{json_of, spawn_app_with, TestApp, WAIT};

/// A receiver that answers every request 200 and reports each one's
/// headers (names lowercased) and body.
async fn receiver() -> (
    String,
    mpsc::UnboundedReceiver<(HashMap<String, String>, Value)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hook",
        listener.local_addr().unwrap().port()
    );
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                let Some((_, headers, body)) = read_request(&mut conn).await else {
                    return;
                };
                let _ = conn
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tx.send((
                    headers,
                    serde_json::from_slice(&body).unwrap_or(Value::Null),
                ));
            });
        }
    });
    (url, rx)
}

/// The app's database arguments for the binary, after `args`.
fn cli_on(app: &TestApp, args: &[&str]) -> Value {
    let db = app.db_args();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(db.iter().map(String::as_str));
    cli_json(&all)
}

/// An endpoint stored with a user name and password in its URL (as the API
/// and the command line took them before they refused them) is listed with
/// them masked, by the API's list and changes and by `webhook list`, and is
/// still delivered to with them (as HTTP Basic credentials).
#[tokio::test]
async fn a_stored_webhook_url_with_a_password_is_listed_masked_and_still_delivered_to() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.allow_private_webhooks = true;
    })
    .await;
    let (url, mut deliveries) = receiver().await;
    let (status, created) = json_of(
        app.post_json(
            "/api/acsp/webhooks",
            &app.key,
            &json!({"url": url, "events": ["thread.message"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    // What an older version stored for `http://olduser:hunter2pass@…`.
    let with_password = url.replace("http://", "http://olduser:hunter2pass@");
    app.db_exec(&format!(
        "UPDATE webhooks SET url = '{with_password}' WHERE public_id = '{id}'"
    ));
    let masked = url.replace("http://", "http://***@");
    let leaks = |what: &str, body: &Value| {
        let text = body.to_string();
        assert!(
            !text.contains("hunter2pass") && !text.contains("olduser"),
            "{what} shows the credentials: {text}"
        );
    };

    let (status, list) = json_of(app.get("/api/acsp/webhooks", &app.key).await).await;
    assert_eq!(status, 200, "{list}");
    leaks("the API's list", &list);
    assert_eq!(list["webhooks"][0]["url"], masked.as_str(), "{list}");
    for change in ["rotate", "pause", "resume"] {
        let path = format!("/api/acsp/webhooks/{id}/{change}");
        let (status, body) = json_of(app.post_json(&path, &app.key, &json!({})).await).await;
        assert_eq!(status, 200, "{change}: {body}");
        leaks(change, &body);
        assert_eq!(body["webhook"]["url"], masked.as_str(), "{body}");
    }
    let path = format!("/api/acsp/webhooks/{id}/attempts");
    let (status, body) = json_of(app.get(&path, &app.key).await).await;
    assert_eq!(status, 200, "{body}");
    leaks("attempts", &body);
    let listed = cli_on(&app, &["webhook", "list", "--user", &app.user_id]);
    leaks("webhook list", &listed);
    assert_eq!(listed["webhooks"][0]["url"], masked.as_str(), "{listed}");

    // Delivered to, with the stored credentials as Basic authorization.
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let message = app.say(&app.alice, &thread, "still delivered").await;
    let (headers, body) = loop {
        let (headers, body) = tokio::time::timeout(WAIT, deliveries.recv())
            .await
            .expect("a delivery within the wait")
            .expect("the receiver runs");
        if body["data"]["id"] == message["id"] {
            break (headers, body);
        }
    };
    assert_eq!(body["type"], "thread.message");
    let basic = base64::engine::general_purpose::STANDARD.encode("olduser:hunter2pass");
    assert_eq!(
        headers.get("authorization").map(String::as_str),
        Some(format!("Basic {basic}").as_str()),
        "{headers:?}"
    );
}

/// A command that needs an existing database refuses an empty file (a
/// `touch`ed placeholder, a truncated or failed copy) in one line, as it
/// refuses a missing one, and leaves it empty: SQLite takes a file of no
/// bytes for a new database, so `agent list` wrote the whole schema into
/// it and answered `{"agents": []}` as if that were the server's.
#[test]
fn commands_refuse_an_empty_database_file_and_leave_it_empty() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::File::create(&empty).unwrap();
    let db = empty.to_str().unwrap();
    let to = dir.path().join("copy.db");
    let user = "usr_0123456789abcdef";
    for args in [
        vec!["agent", "list", "--db", db],
        vec!["key", "list", "--user", user, "--db", db],
        vec!["key", "create", "--user", user, "--db", db],
        vec!["webhook", "list", "--user", user, "--db", db],
        vec![
            "thread",
            "delete",
            "0190f5a4-0000-7000-8000-000000000000",
            "--db",
            db,
        ],
        vec!["prune", "--db", db],
        vec!["backup", "--db", db, "--to", to.to_str().unwrap()],
    ] {
        let out = run_cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(
            stderr.trim_end(),
            format!("error: {db} is an empty file, not a threadline database (check --db or THREADLINE_DB)"),
            "{args:?}"
        );
        assert_eq!(
            std::fs::metadata(&empty).unwrap().len(),
            0,
            "{args:?} wrote into it"
        );
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "{args:?} left files beside it");
    }
    // The commands that start a database take the empty file as a new one.
    let made = cli_json(&["agent", "create", "--name", "first", "--db", db]);
    assert!(made["login_key"].is_string(), "{made}");
    let listed = cli_json(&["agent", "list", "--db", db]);
    assert_eq!(listed["agents"][0]["name"], "first", "{listed}");
}

/// A database this user may not reach (the unit's state directory is its
/// service user's, mode 0700: an operator who leaves out `sudo -u
/// threadline`) is not missing: every command, `serve` and `agent create`
/// included, says permission denied and whose it is, in one line. The
/// admin commands said `no database at PATH (check --db ...)` of a file
/// that was there; `serve`, SQLite's "unable to open database file". A
/// file it may read but not write: `serve` says the same (the commands
/// still give SQLite's "attempt to write a readonly database").
#[test]
fn a_database_this_user_may_not_reach_is_permission_denied_not_missing() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threadline.db");
    let db = path.to_str().unwrap();
    let made = cli_json(&["agent", "create", "--name", "alice", "--db", db]);
    let user = made["user_id"].as_str().unwrap();
    // Another user: `nobody` when the tests run as root (the files are
    // root's); else this one, with the permissions taken from it.
    let root = rustix::process::getuid().is_root();
    let run = |args: &[&str]| {
        let mut cmd = match root {
            true => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", "nobody", "--", BIN]);
                c
            }
            false => std::process::Command::new(BIN),
        };
        cmd.args(args).env_remove("RUST_LOG");
        output_within(cmd)
    };
    let denied = format!(
        "error: cannot open database {db}: permission denied; run threadline as the \
         user that owns it (the service's: sudo -u threadline threadline ...)"
    );
    let copy = format!("{db}.copy");
    mode(dir.path(), if root { 0o700 } else { 0o000 });
    for args in [
        vec!["agent", "list", "--db", db],
        vec!["key", "list", "--user", user, "--db", db],
        vec!["backup", "--db", db, "--to", &copy],
        vec!["agent", "create", "--name", "bob", "--db", db],
        vec!["serve", "--bind", "127.0.0.1:0", "--db", db],
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(non_log_lines(&stderr), [denied.as_str()], "{args:?}");
    }
    // The directory open, the file read-only to this user.
    mode(dir.path(), 0o755);
    mode(&path, 0o444);
    let out = run(&["serve", "--bind", "127.0.0.1:0", "--db", db]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(non_log_lines(&stderr), [denied.as_str()]);
    mode(&path, 0o644);
    mode(dir.path(), 0o700);
    let listed = cli_json(&["agent", "list", "--db", db]);
    assert_eq!(listed["agents"].as_array().unwrap().len(), 1, "{listed}");
    assert!(!std::path::Path::new(&copy).exists());
}

/// A backup that dies midway (here: past the file-size limit it was given,
/// as a full disk, a cron timeout or a Ctrl-C would stop it) leaves nothing
/// at `--to`. It left the part it had written there, a file that SQLite's
/// `integrity_check` calls `ok` and that holds no table at all: restored,
/// it would start an empty server, and the next backup to that name was
/// refused as "already exists".
#[test]
fn a_backup_that_dies_midway_leaves_nothing_at_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threadline.db");
    let db = path.to_str().unwrap();
    cli_json(&["agent", "create", "--name", "alice", "--db", db]);
    // ~1 MiB of data, so the copy outgrows the limit below.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE padding (x BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 256)
             INSERT INTO padding SELECT randomblob(4096) FROM n;",
        )
        .unwrap();
    let to = dir.path().join("backup.db");
    let to_arg = to.to_str().unwrap();
    // bash's `ulimit -f` counts KiB: writing past 256 KiB kills the process.
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-c", "ulimit -f 256 && exec \"$0\" \"$@\""])
        .args([BIN, "backup", "--db", db, "--to", to_arg])
        .env_remove("RUST_LOG");
    let out = output_within(cmd);
    assert!(!out.status.success(), "the copy outgrew the limit");
    assert!(!to.exists(), "a partial copy was left at --to");

    // The next try writes the whole copy there, and it serves.
    let report = cli_json(&["backup", "--db", db, "--to", to_arg]);
    assert_eq!(report["path"], to_arg, "{report}");
    let listed = cli_json(&["agent", "list", "--db", to_arg]);
    assert_eq!(listed["agents"][0]["name"], "alice", "{listed}");
    let pages: i64 = rusqlite::Connection::open(&to)
        .unwrap()
        .query_row("SELECT count(*) FROM padding", [], |r| r.get(0))
        .unwrap();
    assert_eq!(pages, 256);
}

/// A second `serve` on the SQLite file a server is serving is refused in
/// one line, and the first goes on. It used to start: its posts never
/// reached the first server's sockets (nothing tells one process of
/// another's commits on SQLite), and both delivered every webhook event.
/// A `serve` that fails (a port in use) leaves no empty file where there
/// was no database.
#[tokio::test]
async fn a_second_serve_on_the_same_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threadline.db");
    let db = path.to_str().unwrap();
    let account = crate::helpers::process::provision(&path);
    let first = Server::start(dir.path(), &path, &[], "warn").await;

    let out = run_cli(&["serve", "--bind", "127.0.0.1:0", "--db", db]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines = non_log_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("error: another threadline serve is using {db}")),
        "{stderr}"
    );
    let list = format!("/api/acsp/threads?aid={}", account.alice);
    assert_eq!(first.api.get(&list, &account.key).await.status(), 200);
    // The commands still work beside it.
    let listed = cli_json(&["agent", "list", "--db", db]);
    assert_eq!(listed["agents"].as_array().unwrap().len(), 2, "{listed}");
    drop(first);

    // Once it is gone, a server starts there again.
    let again = Server::start(dir.path(), &path, &[], "warn").await;
    assert_eq!(again.api.get(&list, &account.key).await.status(), 200);

    // A serve that cannot listen creates no database.
    let port = again.api.base.rsplit(':').next().unwrap().to_owned();
    let fresh = dir.path().join("fresh.db");
    let bind = format!("127.0.0.1:{port}");
    let out = run_cli(&["serve", "--bind", &bind, "--db", fresh.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!fresh.exists(), "an empty database file was left behind");
}

/// A bad `--metrics-token` (or `THREADLINE_METRICS_TOKEN`) is refused
/// without echoing it: stderr goes to the journal, and a token one
/// character short is most of the real one. Other bad values are still
/// quoted.
#[test]
fn a_bad_metrics_token_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("threadline.db");
    let db = db.to_str().unwrap();
    let check = |out: std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "the token was echoed: {stderr}"
        );
        assert!(
            stderr.starts_with("error: invalid value for '--metrics-token': "),
            "{stderr}"
        );
    };
    check(run_cli(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--db",
        db,
        "--metrics-token",
        "hunter2 with space",
    ]));
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--db", db])
        .env("THREADLINE_METRICS_TOKEN", "hunter2-short")
        .env_remove("RUST_LOG");
    check(output_within(cmd));
    assert!(!std::path::Path::new(db).exists());
    // Another flag's bad value is still shown.
    let out = run_cli(&["serve", "--db", db, "--pace-scale", "fast"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'fast'"), "{stderr}");
}

/// `key revoke` without a key, on a terminal, says it is waiting for one:
/// it sat silent, so someone who left the key out saw a command that
/// hangs. (`script` gives the command a terminal; the key is typed into it.)
#[test]
fn key_revoke_on_a_terminal_asks_for_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threadline.db");
    let db = path.to_str().unwrap();
    let made = cli_json(&["agent", "create", "--name", "alice", "--db", db]);
    let key = made["login_key"].as_str().unwrap();
    let mut cmd = std::process::Command::new("script");
    cmd.args([
        "-qec",
        &format!("'{BIN}' key revoke --db '{db}'"),
        "/dev/null",
    ])
    .env_remove("RUST_LOG");
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script runs");
    use std::io::Write as _;
    writeln!(child.stdin.take().unwrap(), "{key}").unwrap();
    let out = child.wait_with_output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("Paste the login key to revoke and press Enter (Ctrl-D to cancel):"),
        "{shown}"
    );
    assert!(shown.contains(r#"{"revoked":true}"#), "{shown}");
    // Piped, as the README shows it (< key.txt), it asks nothing.
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["key", "revoke", "--db", db])
        .env_remove("RUST_LOG");
    let out = output_within(cmd);
    assert!(
        out.stderr.starts_with(b"error: no login key given"),
        "{out:?}"
    );
}
