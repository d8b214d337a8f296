//! Process-level tests: the real `threadline` binary in a child process, on a
//! temp database. Durability across `kill -9`, graceful shutdown on
//! SIGTERM/SIGINT, the provisioning commands against a running server, bad
//! invocations, concurrent writers, `serve --dev`, and keys and grants kept
//! out of the logs. The child processes come from the shared harness
//! (`helpers::process`); the kill, shutdown, provisioning and log tests run
//! on the harness's backend (PostgreSQL too, with
//! THREADLINE_TEST_DATABASE_URL).

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::db::TestDb;
use crate::helpers::process::{
    cli_json, non_log_lines, provision_on, run_cli, Account, Api, Server, DEADLINE,
};
use crate::helpers::{json_of, spawn_app_with, POLL};

/// Asserts the stored seqs are exactly 1..=N, and every acknowledged message
/// (id → seq) is stored under the same seq.
fn assert_all_acknowledged_stored(stored: &BTreeMap<i64, String>, acked: &HashMap<String, i64>) {
    let seqs: Vec<i64> = stored.keys().copied().collect();
    let expected: Vec<i64> = (1..=stored.len() as i64).collect();
    assert_eq!(
        seqs, expected,
        "stored seqs have a gap or do not start at 1"
    );
    for (id, seq) in acked {
        assert_eq!(
            stored.get(seq),
            Some(id),
            "message {id} was answered 201 with seq {seq} but is not stored so"
        );
    }
}

/// Posts from `tasks` concurrent tasks until `stop` is set or a request fails
/// (the server died); returns every message answered 201 (id → seq). Any
/// other complete answer than 201 fails the test, unless `allow_503` (a
/// server shutting down may answer 503 UNAVAILABLE).
fn spawn_posters(
    api: &Api,
    account: &Account,
    thread: &str,
    tasks: usize,
    stop: &Arc<AtomicBool>,
    acked: &Arc<AtomicUsize>,
    allow_503: bool,
) -> Vec<tokio::task::JoinHandle<HashMap<String, i64>>> {
    (0..tasks)
        .map(|t| {
            let (api, stop, acked) = (api.clone(), stop.clone(), acked.clone());
            let key = account.key.clone();
            let aid = if t % 2 == 0 {
                account.alice.clone()
            } else {
                account.bob.clone()
            };
            let thread = thread.to_owned();
            tokio::spawn(async move {
                let mut mine = HashMap::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let Some((status, body)) = api
                        .say(&key, &aid, &thread, &format!("task {t} #{i}"))
                        .await
                    else {
                        break;
                    };
                    if status == 503 && allow_503 {
                        assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
                        break;
                    }
                    assert_eq!(status, 201, "{body}");
                    let m = &body["message"];
                    let id = m["id"].as_str().expect("id").to_owned();
                    let seq = m["seq"].as_i64().expect("seq");
                    assert!(mine.insert(id, seq).is_none(), "message id answered twice");
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                mine
            })
        })
        .collect()
}

/// Waits (bounded) until `counter` reaches `n`.
async fn wait_for_count(counter: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    while counter.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} posts acknowledged",
            counter.load(Ordering::SeqCst)
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn join_all(
    handles: Vec<tokio::task::JoinHandle<HashMap<String, i64>>>,
) -> HashMap<String, i64> {
    let mut all = HashMap::new();
    for h in handles {
        for (id, seq) in h.await.expect("poster task") {
            assert!(all.insert(id, seq).is_none(), "message id answered twice");
        }
    }
    let distinct: std::collections::HashSet<i64> = all.values().copied().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "two messages were answered with one seq"
    );
    all
}

/// Bytes in the database's `-wal` file (0 when absent): 0 after a checkpoint.
/// On PostgreSQL there is no file of ours: 0.
fn wal_len(db: &TestDb) -> u64 {
    if db.on_postgres() {
        return 0;
    }
    let mut wal = db.path.as_os_str().to_owned();
    wal.push("-wal");
    match std::fs::metadata(PathBuf::from(wal)) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => panic!("cannot read the -wal file: {e}"),
    }
}

// ---------------------------------------------------------------- durability

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_answered_201_survives_kill_9_with_its_seq() {
    // On the harness's backend: a SQLite file, or a PostgreSQL database.
    let db = TestDb::new();
    let account = provision_on(&db);
    let args = ["--rate-limit-per-minute", "0"];
    let mut server = Server::start_on(&db, &args, "warn").await;
    let thread = server.api.thread(&account).await;

    // Posters keep going (`stop` is never set) while the server is killed, so
    // some requests are in flight at the moment of death; they end on the
    // broken connection. Only the answered ones must survive.
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let posters = spawn_posters(&server.api, &account, &thread, 4, &stop, &acked, false);
    wait_for_count(&acked, 200).await;
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reap");
    let acked = join_all(posters).await;
    assert!(acked.len() >= 200, "{} acknowledged", acked.len());
    drop(server);

    let server = Server::start_on(&db, &args, "warn").await;
    let (stored, count) = server.api.messages(&account, &thread).await;
    assert_all_acknowledged_stored(&stored, &acked);
    assert_eq!(
        count,
        stored.len() as i64,
        "message_count matches the stored messages"
    );
}

// ---------------------------------------------------------- graceful shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_closes_sockets_with_1001_checkpoints_the_wal_and_exits_0() {
    // On the harness's backend: a SQLite file, or a PostgreSQL database.
    let db = TestDb::new();
    let account = provision_on(&db);
    let args = ["--rate-limit-per-minute", "0"];
    let mut server = Server::start_on(&db, &args, "warn").await;
    let thread = server.api.thread(&account).await;

    // A subscriber on the thread sees the shutdown as a 1001 close.
    let body = server.api.open_thread(&account.key, Some(&thread)).await;
    let url = body["realtime"]["connect_url"]
        .as_str()
        .expect("connect_url");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");

    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let posters = spawn_posters(&server.api, &account, &thread, 4, &stop, &acked, true);
    wait_for_count(&acked, 50).await;
    // The posters stop starting new requests; the ones in flight get their
    // answer (201, or 503 while shutting down) or, when they raced the
    // signal onto a closing connection, an I/O error. Whatever was answered
    // 201 must be stored.
    stop.store(true, Ordering::SeqCst);
    server.signal("TERM");

    let close = tokio::time::timeout(DEADLINE, async {
        while let Some(frame) = ws.next().await {
            match frame {
                Ok(WsMessage::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the socket was not closed at shutdown");
    assert_eq!(close, Some(1001), "close code at shutdown");

    let status = server.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status; stderr: {}",
        server.stderr()
    );
    let acked = join_all(posters).await;
    // The checkpoint is SQLite's (PostgreSQL has no file of ours).
    assert_eq!(
        wal_len(&db),
        0,
        "the -wal file still holds frames after a clean stop; stderr: {}",
        server.stderr()
    );
    drop(server);

    // The data is there on restart; SIGINT stops it cleanly too.
    let mut server = Server::start_on(&db, &args, "warn").await;
    let (stored, _) = server.api.messages(&account, &thread).await;
    assert!(stored.len() >= 50, "{} stored", stored.len());
    assert_all_acknowledged_stored(&stored, &acked);
    server.signal("INT");
    let status = server.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status on SIGINT; stderr: {}",
        server.stderr()
    );
    assert_eq!(
        wal_len(&db),
        0,
        "the -wal file still holds frames after SIGINT; stderr: {}",
        server.stderr()
    );
}

// ------------------------------------------------ the CLI on a running server

#[tokio::test]
async fn provisioning_commands_take_effect_on_a_running_server_at_once() {
    // On the harness's backend: a SQLite file, or a PostgreSQL database.
    let db = TestDb::new();
    let db_args = db.args();
    let account = provision_on(&db);
    let server = Server::start_on(&db, &[], "warn").await;
    let list = format!("/api/acsp/threads?aid={}", account.alice);
    assert_eq!(server.api.get(&list, &account.key).await.status(), 200);

    // key create: the new key works on the very next request.
    let created = cli_json(&db.with_args(&["key", "create", "--user", &account.user_id], &db_args));
    assert_eq!(created["user_id"], account.user_id.as_str());
    let new_key = created["login_key"].as_str().expect("login_key").to_owned();
    assert!(
        new_key.starts_with("nk_") && new_key.len() == 46,
        "{new_key}"
    );
    let (status, body) = json_of(server.api.get(&list, &new_key).await).await;
    assert_eq!(status, 200, "a new key works at once: {body}");

    // agent create --user: the account's keys act as the new agent at once.
    let carol = cli_json(&db.with_args(
        &[
            "agent",
            "create",
            "--name",
            "carol",
            "--user",
            &account.user_id,
        ],
        &db_args,
    ));
    let carol = carol["aid"].as_str().expect("aid").to_owned();
    let body = json!({"aid": carol, "target_aid": account.bob, "subject": "new agent"});
    let res = server
        .api
        .post("/api/acsp/thread/create", &new_key, &body)
        .await
        .expect("request");
    let (status, body) = json_of(res).await;
    assert_eq!(
        status, 201,
        "the account acts as its new agent at once: {body}"
    );

    // A final page, read often enough to be kept and its lookup remembered
    // by every read connection.
    let thread = server.api.thread(&account).await;
    for i in 0..3 {
        let said = server
            .api
            .say(&account.key, &account.alice, &thread, &format!("m{i}"))
            .await;
        assert_eq!(said.expect("answer").0, 201);
    }
    let page = format!("/api/acsp/thread/{thread}?aid={}&limit=2", account.bob);
    for _ in 0..20 {
        assert_eq!(server.api.get(&page, &account.key).await.status(), 200);
    }

    // key revoke: the running server refuses the key on the very next request,
    // and the account's other key still works.
    let revoked = cli_json(&db.with_args(&["key", "revoke", &account.key], &db_args));
    assert_eq!(revoked["revoked"], true);
    let (status, body) = json_of(server.api.get(&page, &account.key).await).await;
    assert_eq!(status, 401, "the kept page, refused at once: {body}");
    assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{body}");
    let (status, body) = json_of(server.api.get(&list, &account.key).await).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{body}");
    assert_eq!(
        server.api.get(&list, &new_key).await.status(),
        200,
        "other keys are untouched"
    );

    // Revoking it again is an error: one line, non-zero exit.
    let again = run_cli(&db.with_args(&["key", "revoke", &account.key], &db_args));
    assert!(!again.status.success(), "revoking twice succeeds");
    assert_eq!(String::from_utf8_lossy(&again.stderr).lines().count(), 1);
}

// ----------------------------------------------------------- bad invocations

/// Asserts a failed run: non-zero exit, no panic, and exactly one line on
/// stderr besides env_logger records (lines starting with `[`). Logging stays
/// at its default (INFO) on purpose: an operator sees exactly that, and a log
/// line such as "the database has no agents yet" is not an error line.
fn assert_one_line_failure(what: &str, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what}: exit status {}", out.status);
    assert!(
        !stderr.contains("panicked")
            && !stderr.contains("RUST_BACKTRACE")
            && !stderr.contains("stack backtrace"),
        "{what}: a panic trace on stderr: {stderr}"
    );
    let lines = non_log_lines(&stderr);
    assert_eq!(
        lines.len(),
        1,
        "{what}: one error line on stderr, got: {stderr}"
    );
    lines[0].to_owned()
}

#[test]
fn bad_invocations_fail_with_one_line_and_no_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let db_arg = db.to_str().expect("UTF-8 path");

    let help = run_cli(&["--help"]);
    assert!(help.status.success(), "--help exits 0");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("serve"),
        "--help lists the commands"
    );

    // Command-line mistakes get clap's message (exit 2): what is wrong,
    // what would be right, and which --help to read.
    let clap_error = |what: &str, args: &[&str], needles: &[&str]| {
        let out = run_cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{what}: no {needle:?} in {stderr}");
        }
    };
    clap_error(
        "unknown flag",
        &["serve", "--no-such-flag", "--db", db_arg],
        &["--no-such-flag", "try 'threadline serve --help'"],
    );
    clap_error(
        "mistyped flag",
        &["serve", "--dbb", db_arg],
        &["--dbb", "similar argument exists", "--db"],
    );
    clap_error(
        "mistyped command",
        &["serv"],
        &["serv", "similar subcommand exists", "'serve'"],
    );
    clap_error(
        "missing arguments",
        &["key", "create", "--db", db_arg],
        &["required arguments were not provided", "--user <USER>"],
    );
    clap_error(
        "bad value",
        &["serve", "--rate-limit-per-minute", "lots", "--db", db_arg],
        &["invalid value 'lots'", "--rate-limit-per-minute"],
    );
    clap_error(
        "value not allowed",
        &["serve", "--turn-policy", "sometimes", "--db", db_arg],
        &["possible values: always, heuristic"],
    );
    clap_error(
        "no subcommand",
        &[],
        &["Usage: threadline", "<COMMAND>", "serve", "backup"],
    );
    assert!(!db.exists(), "a command-line mistake created the database");

    // A port in use: the error names the address.
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr").to_string();
    let out = run_cli(&["serve", "--bind", &addr, "--db", db_arg]);
    let line = assert_one_line_failure("port in use", &out);
    assert!(line.contains(&addr), "names the address {addr}: {line}");
    drop(held);

    // A database path that cannot be created: under /proc, and under a file.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let under_file = file.join("x.db");
    for path in [Path::new("/proc/nonexistent/x.db"), under_file.as_path()] {
        let path = path.to_str().expect("UTF-8 path");
        let out = run_cli(&["serve", "--bind", "127.0.0.1:0", "--db", path]);
        let line = assert_one_line_failure("unusable database path", &out);
        assert!(line.contains("database"), "says what is wrong: {line}");
        let out = run_cli(&["agent", "create", "--name", "x", "--db", path]);
        assert_one_line_failure("agent create on an unusable path", &out);
    }

    assert_one_line_failure(
        "revoke a non-key",
        &run_cli(&["key", "revoke", "not-a-key", "--db", db_arg]),
    );
    assert_one_line_failure(
        "key create, bad user",
        &run_cli(&["key", "create", "--user", "nobody", "--db", db_arg]),
    );
    assert_one_line_failure(
        "key create, unknown user",
        &run_cli(&[
            "key",
            "create",
            "--user",
            "usr_0000000000000000",
            "--db",
            db_arg,
        ]),
    );
    assert_one_line_failure(
        "agent create, empty name",
        &run_cli(&["agent", "create", "--name", "", "--db", db_arg]),
    );
    assert_one_line_failure(
        "invalid --public-url",
        &run_cli(&[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--public-url",
            "ftp://x",
            "--db",
            db_arg,
        ]),
    );
}

// ---------------------------------------------------------------- concurrency

/// `tasks` × `per_task` posts on one thread, alternating alice and bob;
/// asserts every answer is 201 and returns the acknowledged seqs.
async fn concurrent_posts(
    app: &crate::helpers::TestApp,
    thread: &str,
    tasks: usize,
    per_task: usize,
) -> Vec<i64> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (client, url) = (app.client.clone(), app.url("/api/acsp/thread/message"));
        let key = app.key.clone();
        let aid = if t % 2 == 0 {
            app.alice.aid.clone()
        } else {
            app.bob.aid.clone()
        };
        let thread = thread.to_owned();
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let body =
                    json!({"aid": aid, "thread_id": thread, "content": format!("task {t} #{i}")});
                let res = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                let (status, body) = json_of(res).await;
                assert_eq!(status, 201, "task {t} post {i}: {body}");
                seqs.push(body["message"]["seq"].as_i64().expect("seq"));
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("poster task"));
    }
    all.sort_unstable();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_get_201_and_gapless_unique_seqs() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let acked = concurrent_posts(&app, &thread, 8, 50).await;
    let expected: Vec<i64> = (1..=400).collect();
    assert_eq!(acked, expected, "answered seqs: a duplicate or a gap");
    assert_eq!(app.stored_seqs(&thread), expected, "stored seqs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_and_a_concurrent_cli_process_share_the_database_without_failures() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let agents_before = app.db_count("SELECT COUNT(*) FROM agents");

    // The CLI writes the same file in a loop for as long as the posts run
    // (at least 3 times), so the two writers overlap.
    let done = Arc::new(AtomicBool::new(false));
    let db = app.db_args();
    let cli_done = done.clone();
    let cli = tokio::task::spawn_blocking(move || {
        let mut runs = 0;
        while runs < 3 || !cli_done.load(Ordering::SeqCst) {
            runs += 1;
            let name = format!("cli {runs}");
            let mut args = vec!["agent", "create", "--name", &name];
            args.extend(db.iter().map(String::as_str));
            let out = run_cli(&args);
            assert!(
                out.status.success(),
                "agent create #{runs} failed while the server writes: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        runs
    });
    let acked = concurrent_posts(&app, &thread, 8, 50).await;
    done.store(true, Ordering::SeqCst);
    let runs = cli.await.expect("cli loop");

    let expected: Vec<i64> = (1..=400).collect();
    assert_eq!(acked, expected, "answered seqs: a duplicate or a gap");
    assert_eq!(app.stored_seqs(&thread), expected, "stored seqs");
    assert_eq!(
        app.db_count("SELECT COUNT(*) FROM agents"),
        agents_before + runs as i64,
        "every CLI run stored its agent"
    );
}

// ----------------------------------------------------------------- serve --dev

/// The word after `label` on the stdout line that starts with it (trimmed).
fn field_after(stdout: &str, label: &str) -> Option<String> {
    stdout
        .lines()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

#[tokio::test]
async fn serve_dev_prints_a_working_key_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let db_arg = db.to_str().expect("UTF-8 path");

    // A start that fails (port in use) must not seed: the key it would print
    // is shown only once, next to an error.
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr").to_string();
    let out = run_cli(&["serve", "--dev", "--bind", &addr, "--db", db_arg]);
    assert!(!out.status.success(), "serve on a busy port succeeded");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !printed.contains("nk_"),
        "a failed start printed a key: {printed}"
    );
    drop(held);

    let mut server = Server::start(dir.path(), &db, &["--dev"], "warn").await;
    let stdout = server.wait_for_stdout("curl").await;
    let key =
        field_after(&stdout, "login key").unwrap_or_else(|| panic!("no login key line: {stdout}"));
    let alice = field_after(&stdout, "alice").unwrap_or_else(|| panic!("no alice line: {stdout}"));
    let bob = field_after(&stdout, "bob").unwrap_or_else(|| panic!("no bob line: {stdout}"));
    assert!(
        key.starts_with("nk_") && key.len() == 46,
        "login key: {key}"
    );
    for aid in [&alice, &bob] {
        assert!(
            aid.len() == 50 && aid.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "AID: {aid}"
        );
    }
    let curl = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("curl"))
        .unwrap_or_else(|| panic!("no curl line: {stdout}"));
    for part in [
        server.api.base.as_str(),
        key.as_str(),
        alice.as_str(),
        bob.as_str(),
    ] {
        assert!(curl.contains(part), "the curl line lacks {part}: {curl}");
    }

    // The printed key acts as alice (and sees bob).
    let body =
        json!({"aid": alice, "target_aid": bob, "subject": "hello", "first_message": "Hi Bob!"});
    let res = server
        .api
        .post("/api/acsp/thread/create", &key, &body)
        .await
        .expect("request");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "the printed key works: {body}");

    server.signal("TERM");
    assert_eq!(server.wait_exit().await.code(), Some(0));
    drop(server);

    // A second start on the same database prints no key, and the first key still works.
    let mut server = Server::start(dir.path(), &db, &["--dev"], "warn").await;
    let again = server.wait_for_stdout("already has accounts").await;
    assert!(!again.contains("nk_"), "a key printed again: {again}");
    assert!(!again.contains(&key), "the key printed again: {again}");
    // ... but the demo agents' AIDs, which a new terminal needs again.
    assert_eq!(
        field_after(&again, "alice").as_deref(),
        Some(alice.as_str()),
        "{again}"
    );
    assert_eq!(
        field_after(&again, "bob").as_deref(),
        Some(bob.as_str()),
        "{again}"
    );
    let list = format!("/api/acsp/threads?aid={alice}");
    assert_eq!(server.api.get(&list, &key).await.status(), 200);
}

#[tokio::test]
async fn serve_dev_on_port_0_prints_a_curl_line_with_the_bound_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let mut server = Server::spawn(dir.path(), &db, "127.0.0.1:0", &["--dev"], "warn");
    let stdout = server.wait_for_stdout("curl").await;
    let key = field_after(&stdout, "login key").expect("login key line");
    let alice = field_after(&stdout, "alice").expect("alice line");
    let url = stdout
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.ends_with("/api/acsp/thread/create"))
        .unwrap_or_else(|| panic!("no URL in the curl line: {stdout}"));
    let base = url
        .strip_suffix("/api/acsp/thread/create")
        .unwrap_or_else(|| panic!("curl URL: {url}"));
    assert!(!base.ends_with(":0"), "the curl line names port 0: {url}");
    // The inspector's URL, ready for a browser, on the bound port too.
    assert_eq!(
        field_after(&stdout, "inspector").as_deref(),
        Some(format!("{base}/").as_str()),
        "{stdout}"
    );

    // That URL is the running server, and the key works there.
    server.api.base = base.to_owned();
    server.wait_ready().await;
    let list = format!("/api/acsp/threads?aid={alice}");
    assert_eq!(server.api.get(&list, &key).await.status(), 200);
}

// --------------------------------------------------------------- secrets in logs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_never_contain_a_key_or_a_grant() {
    // On the harness's backend: a SQLite file, or a PostgreSQL database.
    let db = TestDb::new();
    let account = provision_on(&db);
    // The most verbose level, dependencies included: if a key or a grant
    // shows up at any level, it shows up here.
    let mut server = Server::start_on(&db, &[], "trace").await;

    // Authenticated requests, good and bad, on several routes.
    server.api.thread_with_a_post(&account).await;
    let list = format!("/api/acsp/threads?aid={}", account.alice);
    assert_eq!(server.api.get(&list, &account.key).await.status(), 200);
    let unknown_key = format!("nk_{}", "A".repeat(43));
    assert_eq!(server.api.get(&list, &unknown_key).await.status(), 401);

    // A grant: redeemed once, then refused (used) — both paths logged.
    let body = server.api.open_thread(&account.key, None).await;
    let url = body["realtime"]["connect_url"]
        .as_str()
        .expect("connect_url")
        .to_owned();
    let grant = url
        .split("c=")
        .nth(1)
        .expect("c= in the connect url")
        .to_owned();
    assert!(grant.len() >= 16, "grant: {grant}");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("ws connect");
    let first = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("connection.ready in time")
        .expect("a frame")
        .expect("a good frame");
    let WsMessage::Text(first) = first else {
        panic!("not a text frame: {first:?}")
    };
    assert!(first.contains("connection.ready"), "{first}");
    ws.close(None).await.expect("close");
    assert!(
        tokio_tungstenite::connect_async(&url).await.is_err(),
        "a grant is good once"
    );

    // Stop cleanly so everything logged is on disk.
    server.signal("TERM");
    assert_eq!(server.wait_exit().await.code(), Some(0));
    let logs = server.stderr();
    assert!(
        logs.contains("GET /v1/ws"),
        "the capture holds the request lines: {logs}"
    );
    assert!(
        logs.contains("POST /api/acsp/thread/message"),
        "request lines: {logs}"
    );
    for (what, secret) in [
        ("login key", &account.key),
        ("unknown key", &unknown_key),
        ("grant", &grant),
    ] {
        assert!(
            !logs.contains(secret.as_str()),
            "the {what} is in the log: {logs}"
        );
    }
}

// ------------------------------------------------------------ request lines

#[tokio::test]
async fn request_lines_reach_the_log_while_the_server_runs_in_order() {
    // Request lines wait in a buffer for a few milliseconds; the flush
    // thread must write them without a later line or a shutdown to push
    // them out.
    let db = TestDb::new();
    let account = provision_on(&db);
    let mut server = Server::start_on(&db, &[], "info").await;
    let list = format!("/api/acsp/threads?aid={}", account.alice);
    for _ in 0..3 {
        assert_eq!(server.api.get(&list, &account.key).await.status(), 200);
    }
    let unknown_key = format!("nk_{}", "A".repeat(43));
    assert_eq!(server.api.get(&list, &unknown_key).await.status(), 401);
    let deadline = Instant::now() + DEADLINE;
    let requests = loop {
        let log = server.stderr();
        let requests: Vec<String> = log
            .lines()
            .filter(|l| l.contains("] req_") && l.contains(" GET /api/acsp/threads "))
            .map(str::to_owned)
            .collect();
        if requests.len() == 4 {
            break requests;
        }
        assert!(
            server.child.try_wait().expect("try_wait").is_none(),
            "the server exited: {log}"
        );
        assert!(
            Instant::now() < deadline,
            "request lines not written: {log}"
        );
        tokio::time::sleep(POLL).await;
    };
    // env_logger's format, in the order the requests were answered.
    for line in &requests[..3] {
        assert!(line.starts_with('[') && line.contains(" INFO  threadline::request] req_"));
        assert!(line.contains(" 200 "), "{line}");
    }
    assert!(requests[3].contains(" 401 "), "{}", requests[3]);
    // Lines logged after them, at shutdown, come after them.
    server.signal("TERM");
    assert_eq!(server.wait_exit().await.code(), Some(0));
    let log = server.stderr();
    let last_request = log
        .rfind(" GET /api/acsp/threads ")
        .expect("a request line");
    let stopped = log.rfind("stopped cleanly").expect("the shutdown line");
    assert!(last_request < stopped, "{log}");
}
