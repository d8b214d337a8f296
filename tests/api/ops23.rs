//! Operating without opening SQLite: the command line's webhook verbs
//! (rotate, pause, resume, attempts) beside a running server process and a
//! real receiver, on either backend; clear refusals of a read-only database
//! file and of a PostgreSQL database that does not exist; partial backups
//! that a killed backup left behind.

use std::collections::HashMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::helpers::db::TestDb;
use crate::helpers::process::{
    cli_json, non_log_lines, output_within, provision_on, run_cli, Account, Server, BIN,
};
use crate::helpers::webhook::read_request;
use crate::helpers::{json_of, pg, WAIT};

/// One request a receiver took: its path, headers (names lowercased) and
/// the raw body.
struct Delivery {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a delivery's body is JSON")
    }

    /// The event id (a message's id for `thread.message`).
    fn event_id(&self) -> String {
        self.json()["id"].as_str().expect("id").to_owned()
    }

    /// Verifies the signature as the README tells a receiver to: the HMAC
    /// key is the base64 after `whsec_`; the signed text is
    /// `{webhook-id}.{webhook-timestamp}.{raw body}`; the header holds
    /// space-separated `v1,<base64 HMAC-SHA256>`, compared in constant
    /// time; a timestamp more than 5 minutes off is refused.
    fn signed_with(&self, secret: &str) -> bool {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
            .expect("base64 key");
        let id = &self.headers["webhook-id"];
        let ts = &self.headers["webhook-timestamp"];
        let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().expect("Unix seconds");
        assert!(age.abs() <= 300, "timestamp {ts} is {age} s off");
        self.headers["webhook-signature"].split(' ').any(|sig| {
            let Some(tag) = sig
                .strip_prefix("v1,")
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
            else {
                return false;
            };
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
            mac.update(format!("{id}.{ts}.").as_bytes());
            mac.update(&self.body);
            mac.verify_slice(&tag).is_ok()
        })
    }
}

/// A receiver on port 0 that answers every request 200 and reports it;
/// the endpoints it serves are told apart by path.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                // One request per connection (`connection: close`).
                let Some((line, headers, body)) = read_request(&mut conn).await else {
                    return;
                };
                let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                let _ = conn
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tx.send(Delivery {
                    path,
                    headers,
                    body,
                });
            });
        }
    });
    (base, rx)
}

/// Deliveries in arrival order, sorted by endpoint (path) as they come.
struct Inbox {
    rx: mpsc::UnboundedReceiver<Delivery>,
    by_path: HashMap<String, Vec<Delivery>>,
}

impl Inbox {
    /// Waits (bounded) until `path` has received the event `id`; returns
    /// the ids it received up to that one, in order, and forgets them.
    async fn until(&mut self, path: &str, id: &str) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(got) = self.by_path.get_mut(path) {
                if let Some(i) = got.iter().position(|d| d.event_id() == id) {
                    return got.drain(..=i).collect();
                }
            }
            let next = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{path} did not receive event {id} within {WAIT:?}"))
                .expect("receiver running");
            self.by_path
                .entry(next.path.clone())
                .or_default()
                .push(next);
        }
    }

    /// Takes whatever has arrived, without waiting; returns what `path` got.
    fn arrived(&mut self, path: &str) -> Vec<String> {
        while let Ok(next) = self.rx.try_recv() {
            self.by_path
                .entry(next.path.clone())
                .or_default()
                .push(next);
        }
        self.by_path
            .get(path)
            .map(|got| got.iter().map(Delivery::event_id).collect())
            .unwrap_or_default()
    }
}

/// `threadline ARGS` on the test's database; must succeed with one JSON line.
fn cli_on(db: &TestDb, args: &[&str]) -> Value {
    let db_args = db.args();
    cli_json(&db.with_args(args, &db_args))
}

/// `threadline ARGS` on the test's database, whatever it answers.
fn run_on(db: &TestDb, args: &[&str]) -> std::process::Output {
    let db_args = db.args();
    run_cli(&db.with_args(args, &db_args))
}

/// Posts `content` as alice; returns the message's id (its event's id).
async fn post(server: &Server, account: &Account, thread: &str, content: &str) -> String {
    let (status, body) = server
        .api
        .say(&account.key, &account.alice, thread, content)
        .await
        .expect("an answer");
    assert_eq!(status, 201, "{body}");
    body["message"]["id"]
        .as_str()
        .expect("message id")
        .to_owned()
}

/// `webhook attempts` for the endpoint, once its newest attempt is at the
/// event `newest` (the server records an attempt just after the receiver
/// has it): polled, bounded.
async fn attempts_through(db: &TestDb, user: &str, id: &str, newest: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = cli_on(db, &["webhook", "attempts", "--user", user, id]);
        if answer["attempts"][0]["event_id"] == newest {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt at {newest} recorded: {answer}"
        );
        tokio::time::sleep(crate::helpers::POLL).await;
    }
}

/// The attempts' `(event_id, status, created_at)`, newest first.
fn tried(answer: &Value) -> Vec<(String, i64, String)> {
    answer["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            (
                a["event_id"].as_str().unwrap().to_owned(),
                a["status"].as_i64().unwrap(),
                a["created_at"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The endpoint `id` as the API lists it.
async fn listed(server: &Server, key: &str, id: &str) -> Value {
    let (status, body) = json_of(server.api.get("/api/acsp/webhooks", key).await).await;
    assert_eq!(status, 200, "{body}");
    body["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .find(|w| w["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not listed: {body}"))
}

/// `webhook pause`, `resume` and `rotate` run as commands beside a running
/// `serve` process take effect there: paused, the endpoint gets nothing
/// while a witness endpoint on the same events gets every message; resumed,
/// it gets what happened meanwhile, in order; rotated, the next delivery is
/// signed with the new secret (verified as the README says) and no longer
/// with the old. Each command prints what the API answers: the endpoint
/// object the API lists, and for `attempts` exactly the API's answer.
#[tokio::test]
async fn webhook_pause_resume_and_rotate_from_the_command_line_steer_a_running_server() {
    let db = TestDb::new();
    let account = provision_on(&db);
    let server = Server::start_on(&db, &["--allow-private-webhooks"], "warn").await;
    let (base, rx) = receiver().await;
    let mut inbox = Inbox {
        rx,
        by_path: HashMap::new(),
    };
    let user = account.user_id.as_str();
    let create = |path: &str| {
        cli_on(
            &db,
            &[
                "webhook",
                "create",
                "--user",
                user,
                "--url",
                &format!("{base}{path}"),
                "--events",
                "thread.message",
                "--allow-private",
            ],
        )
    };
    let made = create("/paused");
    let witness = create("/witness");
    let id = made["webhook"]["id"].as_str().unwrap().to_owned();
    let old_secret = made["secret"].as_str().unwrap().to_owned();
    let witness_secret = witness["secret"].as_str().unwrap().to_owned();

    let thread = server.api.thread(&account).await;
    let m1 = post(&server, &account, &thread, "one").await;
    let got = inbox.until("/paused", &m1).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].signed_with(&old_secret));
    assert!(inbox.until("/witness", &m1).await[0].signed_with(&witness_secret));

    // Paused from the command line: the witness gets the next messages, the
    // paused endpoint none of them.
    let paused = cli_on(&db, &["webhook", "pause", "--user", user, &id]);
    assert_eq!(paused["webhook"]["status"], "paused", "{paused}");
    assert!(paused.get("secret").is_none(), "{paused}");
    assert_eq!(paused["webhook"], listed(&server, &account.key, &id).await);
    let m2 = post(&server, &account, &thread, "two").await;
    let m3 = post(&server, &account, &thread, "three").await;
    let witnessed: Vec<String> = inbox
        .until("/witness", &m3)
        .await
        .iter()
        .map(Delivery::event_id)
        .collect();
    assert_eq!(witnessed, [m2.clone(), m3.clone()]);
    assert_eq!(
        inbox.arrived("/paused"),
        Vec::<String>::new(),
        "a paused endpoint got deliveries"
    );
    let attempts = attempts_through(&db, user, &id, &m1).await;
    assert_eq!(tried(&attempts).len(), 1, "{attempts}");

    // Resumed: what happened meanwhile, in order, then what follows.
    let resumed = cli_on(&db, &["webhook", "resume", "--user", user, &id]);
    assert_eq!(resumed["webhook"]["status"], "active", "{resumed}");
    assert_eq!(resumed["webhook"], listed(&server, &account.key, &id).await);
    let caught_up: Vec<String> = inbox
        .until("/paused", &m3)
        .await
        .iter()
        .map(Delivery::event_id)
        .collect();
    assert_eq!(caught_up, [m2.clone(), m3.clone()]);
    // Each was tried once, after the resume: none while paused (however
    // late the witness's deliveries had made them look).
    let resumed_at = resumed["webhook"]["updated_at"].as_str().unwrap();
    let attempts = tried(&attempts_through(&db, user, &id, &m3).await);
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    for (event, status, at) in &attempts[..2] {
        assert_eq!(*status, 200, "{attempts:?}");
        assert!(
            at.as_str() >= resumed_at,
            "{event} was tried at {at}, before the resume at {resumed_at}"
        );
    }
    assert_eq!(attempts[2].0, m1);

    // Rotated: a new secret, printed once, signs the next delivery.
    // With no window for the old secret (the default keeps it signing for
    // 24 hours: webhook24.rs).
    let rotated = cli_on(
        &db,
        &[
            "webhook",
            "rotate",
            "--user",
            user,
            &id,
            "--keep-previous-hours",
            "0",
        ],
    );
    let new_secret = rotated["secret"]
        .as_str()
        .expect("the new secret")
        .to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != old_secret);
    assert!(rotated["webhook"].get("secret").is_none(), "{rotated}");
    assert_eq!(rotated["webhook"], listed(&server, &account.key, &id).await);
    let listed_by_cli = cli_on(&db, &["webhook", "list", "--user", user]).to_string();
    assert!(!listed_by_cli.contains(&new_secret), "the secret is listed");
    let m4 = post(&server, &account, &thread, "four").await;
    let got = inbox.until("/paused", &m4).await;
    assert_eq!(got.len(), 1);
    assert!(
        got[0].signed_with(&new_secret),
        "not signed with the new secret"
    );
    assert!(
        !got[0].signed_with(&old_secret),
        "still signed with the old secret"
    );

    // `attempts` answers what the API answers, newest first.
    attempts_through(&db, user, &id, &m4).await;
    let by_cli = cli_on(
        &db,
        &["webhook", "attempts", "--user", user, &id, "--limit", "3"],
    );
    let path = format!("/api/acsp/webhooks/{id}/attempts?limit=3");
    let (status, by_api) = json_of(server.api.get(&path, &account.key).await).await;
    assert_eq!(status, 200, "{by_api}");
    assert_eq!(by_cli, by_api);
    let events: Vec<(String, i64)> = tried(&by_cli)
        .into_iter()
        .map(|(event, status, _)| (event, status))
        .collect();
    assert_eq!(events, [(m4, 200), (m3, 200), (m2, 200)]);
}

/// The verbs refuse an endpoint that is not there and another account's
/// alike (the API's 404 does not tell them apart either), in one line, exit
/// 1, and leave the other account's endpoint as it was; a bad `--limit` is
/// a usage error; `--help` describes each verb.
#[test]
fn webhook_verbs_refuse_unknown_and_other_accounts_endpoints_and_change_nothing() {
    let db = TestDb::new();
    let mine = provision_on(&db);
    let theirs = provision_on(&db);
    let made = cli_on(
        &db,
        &[
            "webhook",
            "create",
            "--user",
            &theirs.user_id,
            "--url",
            "http://127.0.0.1:9/hook",
            "--allow-private",
        ],
    );
    let their_id = made["webhook"]["id"].as_str().unwrap().to_owned();
    let before = cli_on(&db, &["webhook", "list", "--user", &theirs.user_id]);
    let unknown = "wh_00000000000000000000000000000000";
    for verb in ["rotate", "pause", "resume", "attempts", "delete"] {
        for id in [unknown, their_id.as_str()] {
            let out = run_on(&db, &["webhook", verb, "--user", &mine.user_id, id]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{verb} {id}: {stderr}");
            assert!(out.stdout.is_empty(), "{verb} {id}");
            assert_eq!(
                non_log_lines(&stderr),
                [format!(
                    "error: no webhook endpoint {id} in account {}",
                    mine.user_id
                )],
                "{verb} {id}"
            );
        }
        // An account that does not exist is named as such.
        let out = run_on(
            &db,
            &["webhook", verb, "--user", "usr_0123456789abcdef", &their_id],
        );
        assert_eq!(out.status.code(), Some(1), "{verb}");
        assert_eq!(
            non_log_lines(&String::from_utf8_lossy(&out.stderr)),
            ["error: no account usr_0123456789abcdef"],
            "{verb}"
        );
    }
    let after = cli_on(&db, &["webhook", "list", "--user", &theirs.user_id]);
    assert_eq!(before, after, "another account's endpoint changed");
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_attempts"),
        0,
        "attempts were written"
    );

    for limit in ["0", "101", "-1", "x"] {
        let out = run_on(
            &db,
            &[
                "webhook",
                "attempts",
                "--user",
                &theirs.user_id,
                &their_id,
                "--limit",
                limit,
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--limit {limit}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: invalid value '{limit}' for '--limit'")),
            "--limit {limit}: {stderr}"
        );
    }
    let listed = cli_on(
        &db,
        &[
            "webhook",
            "attempts",
            "--user",
            &theirs.user_id,
            &their_id,
            "--limit",
            "100",
        ],
    );
    assert_eq!(listed["attempts"], json!([]), "{listed}");

    let help = run_cli(&["webhook", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for verb in ["rotate", "pause", "resume", "attempts"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{verb} "))),
            "{verb} missing from webhook --help: {help}"
        );
    }
    for (verb, says) in [
        ("rotate", "printed once"),
        ("pause", "keeps its place"),
        ("resume", "fresh retry schedule"),
        ("attempts", "newest first"),
    ] {
        let out = run_cli(&["webhook", verb, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{verb} --help");
        assert!(text.contains(says), "{verb} --help: {text}");
        assert!(text.contains("--user <USER>"), "{verb} --help: {text}");
    }
}

/// Every file in `dir` with its bytes.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// A database file this process may read but not write: each command that
/// writes says so, which file, and what to do, in one line, exits 1, and
/// leaves every file in the directory as it was (they said "internal
/// error"); the commands that list still work. Made writable again but
/// for the WAL index and log a listing left read-only (SQLite makes them
/// with the file's mode), a writing command names those two and the
/// chmod that fixes them (it said "database is busy: attempt to write a
/// readonly database"); done, it works. As root (the tests' usual user) a
/// mode does not stop writes, so the commands run as `nobody` then, on
/// files `nobody` owns, in a directory `nobody` owns: the mode is all that
/// stands in the way.
#[test]
fn commands_on_a_read_only_database_file_say_so_and_change_nothing() {
    use std::os::unix::fs::PermissionsExt as _;
    if pg::skip("a read-only SQLite file") {
        return;
    }
    let db = TestDb::new();
    let account = provision_on(&db);
    let made = cli_on(
        &db,
        &[
            "webhook",
            "create",
            "--user",
            &account.user_id,
            "--url",
            "http://127.0.0.1:9/hook",
            "--allow-private",
        ],
    );
    let wh = made["webhook"]["id"].as_str().unwrap().to_owned();
    let path = db.path.to_str().unwrap().to_owned();
    let dir = db.dir.path();
    let root = rustix::process::getuid().is_root();
    let nobody = root.then(|| {
        let id = std::process::Command::new("id")
            .args(["-u", "nobody"])
            .output()
            .expect("id(1) runs");
        String::from_utf8_lossy(&id.stdout)
            .trim()
            .parse::<u32>()
            .expect("nobody's uid")
    });
    if let Some(uid) = nobody {
        for entry in std::fs::read_dir(dir).unwrap() {
            std::os::unix::fs::chown(entry.unwrap().path(), Some(uid), None).unwrap();
        }
        std::os::unix::fs::chown(dir, Some(uid), None).unwrap();
    }
    let set_mode = |path: &str, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set_mode(&path, 0o444);
    let run = |args: &[&str]| {
        let mut cmd = match root {
            true => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", "nobody", "--", BIN]);
                c
            }
            false => std::process::Command::new(BIN),
        };
        cmd.args(args).args(["--db", &path]).env_remove("RUST_LOG");
        output_within(cmd)
    };
    // One line on stderr, nothing on stdout, exit 1.
    let refused = |args: &[&str]| -> String {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
        let lines = non_log_lines(&stderr);
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(!lines[0].contains("attempt to write"), "{args:?}: {stderr}");
        lines[0].to_owned()
    };
    let before = snapshot(dir);
    let owner = nobody.unwrap_or_else(|| rustix::process::getuid().as_raw());
    let user = account.user_id.as_str();
    let writes: Vec<Vec<&str>> = vec![
        vec!["key", "create", "--user", user],
        vec!["key", "revoke-all", "--user", user],
        vec!["agent", "create", "--name", "carol"],
        vec!["agent", "create", "--name", "carol", "--user", user],
        vec!["agent", "rename", &account.bob, "--name", "robert"],
        vec![
            "webhook",
            "create",
            "--user",
            user,
            "--url",
            "http://127.0.0.1:9/other",
            "--allow-private",
        ],
        vec!["webhook", "pause", "--user", user, &wh],
        vec!["webhook", "resume", "--user", user, &wh],
        vec!["webhook", "rotate", "--user", user, &wh],
        vec!["webhook", "delete", "--user", user, &wh],
        vec!["prune"],
    ];
    for args in &writes {
        assert_eq!(
            refused(args),
            format!(
                "error: cannot write to database {path}: it is read-only to this process \
                 (mode 0444, owner uid {owner}, or a read-only file system); make it \
                 writable (chmod u+w {path}) or run threadline as the user that owns it \
                 (the service's: sudo -u threadline threadline ...); commands that only \
                 list work on it as it is"
            ),
            "{args:?}"
        );
        assert_eq!(snapshot(dir), before, "{args:?} changed the directory");
    }
    // Listing works on it as it is, and leaves the database file as it was.
    let file = std::fs::read(&db.path).unwrap();
    for args in [
        vec!["agent", "list"],
        vec!["key", "list", "--user", user],
        vec!["webhook", "list", "--user", user],
        vec!["webhook", "attempts", "--user", user, &wh],
    ] {
        let out = run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert!(listed.is_object(), "{args:?}: {listed}");
    }
    assert_eq!(std::fs::read(&db.path).unwrap(), file, "listing wrote");

    // The file writable again, but not the WAL index and log the listing
    // left (a read-only connection cannot remove them; SQLite made them with
    // the file's mode): named, with the chmod that fixes them.
    let (shm, wal) = (format!("{path}-shm"), format!("{path}-wal"));
    for side in [&shm, &wal] {
        let mode = std::fs::metadata(side)
            .unwrap_or_else(|_| panic!("listing left no {side}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444, "{side}");
    }
    set_mode(&path, 0o644);
    assert_eq!(
        refused(&["key", "create", "--user", user]),
        format!(
            "error: cannot write to database {path}: its files {shm} and {wal} \
             (SQLite's WAL index and log) are read-only to this process; make them \
             writable (chmod u+w {shm} {wal}) or run threadline as the user that owns \
             them (the service's: sudo -u threadline threadline ...)"
        )
    );
    assert_eq!(std::fs::read(&db.path).unwrap(), file, "the refusal wrote");
    for side in [&shm, &wal] {
        set_mode(side, 0o644);
    }
    // Nothing of the above happened; now a change works.
    let keys = cli_on(&db, &["key", "list", "--user", user]);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");
    assert!(keys["keys"][0]["revoked_at"].is_null(), "{keys}");
    let agents = cli_on(&db, &["agent", "list"]);
    let names: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"], "{agents}");
    let hooks = cli_on(&db, &["webhook", "list", "--user", user]);
    assert_eq!(hooks["webhooks"].as_array().unwrap().len(), 1, "{hooks}");
    assert_eq!(hooks["webhooks"][0]["status"], "active", "{hooks}");
    let out = run(&["key", "create", "--user", user]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The partial copy files (`NAME.<pid>-<n>.partial` and its journal) in `dir`.
fn partials(dir: &std::path::Path, name: &str) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{name}.")) && n.contains(".partial"))
        .collect();
    found.sort();
    found
}

/// A backup killed mid-copy (by the file-size limit's SIGXFSZ, which, like
/// SIGKILL, ends it before any cleanup of its own) leaves its partial copy;
/// the next backup to the same name removes it and says so, and leaves
/// alone, naming them, a partial copy whose process still runs and one
/// whose lock is held (a backup in progress, here under a dead pid as from
/// another PID namespace). The copy it makes is whole.
#[test]
fn the_next_backup_removes_a_killed_backups_partial_copy_and_no_live_ones() {
    use std::os::unix::process::ExitStatusExt as _;
    if pg::skip("backups copy the SQLite file") {
        return;
    }
    let db = TestDb::new();
    provision_on(&db);
    // ~1 MiB of data, so the copy outgrows the limit below.
    db.execute("CREATE TABLE padding (x BLOB)");
    db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 256)
         INSERT INTO padding SELECT randomblob(4096) FROM n",
    );
    let dir = db.dir.path();
    let to = dir.join("nightly.db");
    let to_arg = to.to_str().unwrap();
    let src = db.path.to_str().unwrap();
    // bash's `ulimit -f` counts KiB: writing past 256 KiB kills the process.
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-c", "ulimit -f 256 && exec \"$0\" \"$@\""])
        .args([BIN, "backup", "--db", src, "--to", to_arg])
        .env_remove("RUST_LOG");
    let out = output_within(cmd);
    assert_eq!(
        out.status.signal(),
        Some(25),
        "not killed by SIGXFSZ mid-copy: {out:?}"
    );
    assert!(!to.exists());
    let left = partials(dir, "nightly.db");
    assert!(
        !left.is_empty() && left.iter().all(|n| n.starts_with("nightly.db.")),
        "the killed backup left no partial copy: {left:?}"
    );
    let dead_pid: u32 = left[0]
        .strip_prefix("nightly.db.")
        .and_then(|r| r.split_once('-'))
        .and_then(|(pid, _)| pid.parse().ok())
        .expect("NAME.<pid>-<n>.partial");
    assert!(
        !std::path::Path::new(&format!("/proc/{dead_pid}")).exists(),
        "process {dead_pid} still runs"
    );
    // A partial copy of a process that runs (this test's), and one whose
    // lock a backup holds.
    let live = format!("nightly.db.{}-7.partial", std::process::id());
    std::fs::write(dir.join(&live), b"").unwrap();
    let locked = format!("nightly.db.{dead_pid}-9.partial");
    let held = std::fs::File::create(dir.join(&locked)).unwrap();
    held.lock().unwrap();
    // Another name's partial copy is not this backup's business.
    let other = format!("other.db.{dead_pid}-0.partial");
    std::fs::write(dir.join(&other), b"").unwrap();

    let out = run_cli(&["backup", "--db", src, "--to", to_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["path"], to_arg, "{report}");
    for gone in &left {
        assert!(!dir.join(gone).exists(), "{gone} was left");
        assert!(
            stderr.contains(&format!(
                "removed {}, a partial backup left by process {dead_pid}, which is no longer running",
                dir.join(gone).display()
            )),
            "{gone} not named: {stderr}"
        );
    }
    assert!(
        dir.join(&live).exists(),
        "a running process's copy was removed"
    );
    assert!(
        stderr.contains(&format!(
            "{} is a partial backup of process {}, which still runs",
            dir.join(&live).display(),
            std::process::id()
        )),
        "{stderr}"
    );
    assert!(dir.join(&locked).exists(), "a locked copy was removed");
    assert!(
        stderr.contains(&format!(
            "{}: a backup in progress (process {dead_pid}) is writing it; left alone",
            dir.join(&locked).display()
        )),
        "{stderr}"
    );
    assert!(dir.join(&other).exists(), "another name's copy was removed");
    assert_eq!(
        partials(dir, "nightly.db"),
        {
            let mut kept = vec![live.clone(), locked.clone()];
            kept.sort();
            kept
        },
        "the backup left its own partial copy"
    );
    drop(held);
    let rows: i64 = rusqlite::Connection::open(&to)
        .unwrap()
        .query_row("SELECT count(*) FROM padding", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 256);
}

/// `serve` and the commands pointed at a PostgreSQL database that does not
/// exist say which one, where, and how to create it, never the password
/// (in the URL's user part or in its query), exit 1 and create nothing.
/// They said only "cannot connect to postgres://…@host/db: db error", and a
/// password in the query was shown. Another refusal by the server (a role
/// that does not exist) is shown in the server's words, without the
/// password either.
#[test]
fn a_missing_postgres_database_is_named_with_how_to_create_it_and_no_password() {
    let Some(admin) = pg::admin_url() else {
        eprintln!("skipped on SQLite: needs a PostgreSQL cluster (THREADLINE_TEST_DATABASE_URL)");
        return;
    };
    let name = format!("tl_missing_{}", uuid::Uuid::new_v4().simple());
    let secret = format!("pw{}", uuid::Uuid::new_v4().simple());
    let mut in_userinfo = reqwest::Url::parse(&admin).expect("a URL");
    in_userinfo.set_path(&format!("/{name}"));
    in_userinfo
        .set_password(Some(&secret))
        .expect("a URL with a user");
    let mut in_query = reqwest::Url::parse(&admin).unwrap();
    in_query.set_path(&format!("/{name}"));
    in_query.set_query(Some(&format!("password={secret}")));
    let host = in_query.host_str().unwrap().to_owned();
    let port = in_query.port().unwrap_or(5432);
    let user = in_query.username().to_owned();
    for url in [in_userinfo.to_string(), in_query.to_string()] {
        for args in [
            vec!["serve", "--bind", "127.0.0.1:0"],
            vec!["agent", "create", "--name", "alice"],
            vec!["agent", "list"],
            vec!["webhook", "list", "--user", "usr_0123456789abcdef"],
        ] {
            let mut cmd = std::process::Command::new(BIN);
            cmd.args(&args)
                .args(["--database-url", &url])
                .env("RUST_LOG", "debug");
            let out = output_within(cmd);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(
                !stderr.contains(&secret) && !stdout.contains(&secret),
                "{args:?} echoed the password: {stderr}"
            );
            let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
            assert_eq!(
                error,
                [format!(
                    "error: the PostgreSQL database \"{name}\" does not exist on {host}:{port}; \
                     create it, empty (threadline makes its tables at start): createdb -h {host} \
                     -p {port} -O {user} {name} (as a PostgreSQL user allowed to create \
                     databases; or in psql: CREATE DATABASE \"{name}\" OWNER \"{user}\";)"
                )
                .as_str()],
                "{args:?}"
            );
        }
    }
    let exists = pg::text(
        &admin,
        &format!("SELECT count(*)::text FROM pg_database WHERE datname = '{name}'"),
    );
    assert_eq!(exists.as_deref(), Some("0"), "a database was created");

    let role = format!("tl_nobody_{}", uuid::Uuid::new_v4().simple());
    let mut no_role = reqwest::Url::parse(&admin).unwrap();
    no_role.set_username(&role).unwrap();
    no_role.set_password(Some(&secret)).unwrap();
    let out = run_cli(&["agent", "list", "--database-url", no_role.as_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        non_log_lines(&stderr),
        [format!(
            "error: cannot connect to postgres://…@{host}:{port}{}: FATAL: role \"{role}\" \
             does not exist",
            no_role.path()
        )]
    );
}
