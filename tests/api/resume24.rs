//! A client can tell a restored server from the one it left (round 24).
//!
//! A restore goes back in time, and the restored server gives a thread's
//! lost seqs out again, to new messages: a client that resumes with
//! `after=SEQ` once those exist sees `last_seq` at (or past) its `after`
//! and cannot tell by seqs. `connection.ready` names the database's
//! generation, which changes exactly when the data may have gone back: a
//! `threadline backup` copy served for the first time (each restore of the
//! same copy anew), or a database marked with `threadline mark-restored`
//! (PostgreSQL's restore, a file copy). A restart, a SIGKILL and a second
//! node keep it. The restore tests drive the real binary as
//! docs/operations.md says (backup, SIGTERM, files moved away, the copy put
//! in place) with a real WebSocket client; every wait is bounded.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::helpers::db::TestDb;
use crate::helpers::process::{cli_json, provision, provision_on, run_cli, Account, Server};
use crate::helpers::{json_of, spawn_app, Ws};
use crate::inspector23::{backup, restore, stop};
use crate::operations::first_sse_event;

/// A generation as the server gives it: a UUID, in its usual text form.
fn assert_generation(ready: &Value) -> String {
    assert_eq!(ready["type"], "connection.ready", "{ready}");
    let generation = ready["data"]["generation"]
        .as_str()
        .unwrap_or_else(|| panic!("connection.ready names no generation: {ready}"));
    let parsed = uuid::Uuid::parse_str(generation).expect("the generation is a UUID");
    assert_eq!(parsed.to_string(), generation, "hyphenated, lowercase");
    generation.to_owned()
}

#[tokio::test]
async fn connection_ready_names_the_databases_generation_on_thread_and_inbox_sockets() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;

    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = Ws::connect(&url).await;
    let ready = ws.event().await;
    let generation = assert_generation(&ready);
    // Beside what it carried before.
    assert_eq!(ready["data"]["thread_id"], thread.as_str());
    assert_eq!(ready["data"]["last_seq"], 0);
    assert_eq!(
        app.db_text("SELECT id FROM generation").as_deref(),
        Some(generation.as_str()),
        "the generation is the database's, as stored"
    );

    let res = app
        .post_json(
            "/api/acsp/realtime/open",
            &app.key,
            &json!({"aid": app.alice.aid}),
        )
        .await;
    let (status, opened) = json_of(res).await;
    assert_eq!(status, 200, "{opened}");
    let mut inbox = Ws::connect(opened["realtime"]["connect_url"].as_str().unwrap()).await;
    let ready = inbox.event().await;
    assert_eq!(ready["data"]["aid"], app.alice.aid.as_str());
    assert_eq!(
        assert_generation(&ready),
        generation,
        "an inbox socket names the same generation"
    );

    // A socket that resumes on the same server names it too.
    app.say(&app.alice, &thread, "one").await;
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut resumed = Ws::connect(&format!("{url}&after=0")).await;
    assert_eq!(assert_generation(&resumed.event().await), generation);
    assert_eq!(resumed.event_of("thread.message").await["seq"], 1);
}

#[tokio::test]
async fn two_nodes_on_one_database_name_one_generation() {
    if crate::helpers::pg::needs_postgres() {
        return;
    }
    let first = spawn_app().await;
    let second = first.another_node(|_| {}).await;
    let thread = first.thread_between(&first.alice, &first.bob).await;
    let mut generations = Vec::new();
    for node in [&first, &second] {
        let (_, url) = node.grant_for(&node.key, Some(&thread)).await;
        let mut ws = Ws::connect(&url).await;
        generations.push(assert_generation(&ws.event().await));
    }
    assert_eq!(
        generations[0], generations[1],
        "the second node took the first's"
    );
}

/// A new socket on `thread` (a fresh grant of alice's account), resuming
/// after `after` when given; its `connection.ready` is still to be read.
async fn connect(server: &Server, account: &Account, thread: &str, after: Option<i64>) -> Ws {
    let opened = server.api.open_thread(&account.key, Some(thread)).await;
    let url = opened["realtime"]["connect_url"]
        .as_str()
        .expect("connect_url");
    let url = match after {
        Some(after) => format!("{url}&after={after}"),
        None => url.to_owned(),
    };
    Ws::connect(&url).await
}

/// The generation a new socket on `thread` is told.
async fn generation_of(server: &Server, account: &Account, thread: &str) -> String {
    let mut ws = connect(server, account, thread, None).await;
    let generation = assert_generation(&ws.event().await);
    ws.close().await;
    generation
}

/// Posts `content` as `aid`; returns the stored message's seq and id.
async fn post(
    server: &Server,
    account: &Account,
    aid: &str,
    thread: &str,
    content: &str,
) -> (i64, String) {
    let (status, body) = server
        .api
        .say(&account.key, aid, thread, content)
        .await
        .expect("an answer");
    assert_eq!(status, 201, "{body}");
    let message = &body["message"];
    (
        message["seq"].as_i64().expect("seq"),
        message["id"].as_str().expect("id").to_owned(),
    )
}

/// A `/v1/sse` stream of `thread` resumed after log position `position`.
async fn sse_after(
    server: &Server,
    account: &Account,
    thread: &str,
    position: i64,
) -> reqwest::Response {
    let res = server
        .api
        .client
        .get(server.api.url(&format!("/v1/sse?thread_id={thread}")))
        .bearer_auth(&account.key)
        .header("Last-Event-ID", position.to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    res
}

#[tokio::test]
async fn the_generation_stays_through_restarts_and_a_sigkill_and_changes_with_mark_restored() {
    let db = TestDb::new();
    let account = provision_on(&db);
    let server = Server::start_on(&db, &[], "warn").await;
    let thread = server.api.thread(&account).await;
    let first = generation_of(&server, &account, &thread).await;

    stop(server).await;
    let server = Server::start_on(&db, &[], "warn").await;
    assert_eq!(
        generation_of(&server, &account, &thread).await,
        first,
        "a restart keeps it"
    );

    // SIGKILL mid-life: nothing is lost, and nothing went back.
    let (seq, id) = post(&server, &account, &account.alice, &thread, "acknowledged").await;
    drop(server);
    let server = Server::start_on(&db, &[], "warn").await;
    let mut ws = connect(&server, &account, &thread, Some(0)).await;
    assert_eq!(
        assert_generation(&ws.event().await),
        first,
        "a crash keeps it"
    );
    let replayed = ws.event_of("thread.message").await;
    assert_eq!(
        (replayed["seq"].as_i64(), replayed["id"].as_str()),
        (Some(seq), Some(id.as_str()))
    );
    ws.close().await;
    stop(server).await;

    // What the restore procedure runs where the data came back some other
    // way than from a `threadline backup` copy (PostgreSQL's pg_restore).
    let head = db.count(match db.on_postgres() {
        true => "SELECT position FROM log_head",
        false => "SELECT max(position) FROM events",
    });
    let marked = cli_json(&db.with_args(&["mark-restored"], &db.args()));
    let second = marked["generation"]
        .as_str()
        .expect("generation")
        .to_owned();
    assert_eq!(marked["previous"], first.as_str(), "{marked}");
    assert_ne!(second, first);
    let from = head + (1 << 32) + 1;
    assert_eq!(marked["restored_positions_from"], from, "{marked}");
    let server = Server::start_on(&db, &[], "warn").await;
    assert_eq!(generation_of(&server, &account, &thread).await, second);
    // As after a `threadline backup` copy, the log numbers what comes
    // next past anything a consumer of the old log can hold.
    let mut stream = sse_after(&server, &account, &thread, head).await;
    post(&server, &account, &account.alice, &thread, "after the mark").await;
    let (position, event) = first_sse_event(&mut stream).await;
    assert_eq!(event["data"]["content"], "after the mark", "{event}");
    assert_eq!(position, from);
    drop(stream);
    stop(server).await;
    let server = Server::start_on(&db, &[], "warn").await;
    assert_eq!(
        generation_of(&server, &account, &thread).await,
        second,
        "and keeps the new one from then on"
    );
    drop(server);
}

/// The thread's messages as the server has them: `(seq, id)` in order.
async fn served(server: &Server, account: &Account, thread: &str) -> Vec<(i64, String)> {
    let path = format!("/api/acsp/thread/{thread}?aid={}&limit=200", account.alice);
    let (status, body) = json_of(server.api.get(&path, &account.key).await).await;
    assert_eq!(status, 200, "{body}");
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["seq"].as_i64().unwrap(),
                m["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The `thread.message` events up to seq `last`: `(seq, id)` each.
async fn messages_through(ws: &mut Ws, last: i64) -> Vec<(i64, String)> {
    let mut seen = Vec::new();
    while seen.last().is_none_or(|(seq, _)| *seq < last) {
        let event = ws.event_of("thread.message").await;
        seen.push((
            event["seq"].as_i64().unwrap(),
            event["id"].as_str().unwrap().to_owned(),
        ));
    }
    seen
}

#[tokio::test]
async fn a_restored_backup_comes_up_under_a_new_generation_every_time_it_is_restored() {
    if crate::helpers::pg::skip("a restore copies the SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let account = provision(&db);
    let server = Server::start(dir.path(), &db, &[], "warn").await;
    let thread = server.api.thread(&account).await;
    for i in 1..=2 {
        post(
            &server,
            &account,
            &account.alice,
            &thread,
            &format!("kept {i}"),
        )
        .await;
    }

    // The client: a socket from the start, holding what it is sent.
    let mut ws = connect(&server, &account, &thread, Some(0)).await;
    let ready = ws.event().await;
    let first = assert_generation(&ready);
    let mut held = messages_through(&mut ws, 2).await;

    let copy = dir.path().join("backup.db");
    backup(&db, &copy);
    for i in 3..=4 {
        post(
            &server,
            &account,
            &account.bob,
            &thread,
            &format!("lost {i}"),
        )
        .await;
    }
    held.extend(messages_through(&mut ws, 4).await);
    assert_eq!(held, served(&server, &account, &thread).await);

    // The operator restores the copy; the client is away meanwhile, and
    // two new messages take seqs 3 and 4 on the restored server.
    stop(server).await;
    assert_eq!(ws.messages_until_closed().await.1, Some(1001));
    restore(&db, &copy, 1);
    let server = Server::start(dir.path(), &db, &[], "warn").await;
    for i in 3..=4 {
        let (seq, _) = post(
            &server,
            &account,
            &account.alice,
            &thread,
            &format!("new {i}"),
        )
        .await;
        assert_eq!(seq, i, "the restored server gives the lost seqs out again");
    }
    let now = served(&server, &account, &thread).await;
    assert_eq!(now[..2], held[..2], "the copy's messages are the ones held");
    assert_ne!(now[2..], held[2..], "seqs 3 and 4 are other messages now");

    // The client comes back, resuming after its last seq: the seqs alone
    // say nothing happened (the thread's last seq is its `after`, nothing
    // to replay), the generation says the data went back.
    let mut ws = connect(&server, &account, &thread, Some(4)).await;
    let ready = ws.event().await;
    assert_eq!(ready["data"]["last_seq"], 4, "{ready}");
    let second = assert_generation(&ready);
    assert_ne!(
        second, first,
        "a restored copy comes up under a new generation"
    );
    ws.close().await;
    // The README's rule: drop what is held, read the thread again (here by
    // resuming from 0), and keep the new generation.
    let mut ws = connect(&server, &account, &thread, Some(0)).await;
    assert_eq!(assert_generation(&ws.event().await), second);
    assert_eq!(messages_through(&mut ws, 4).await, now);
    ws.close().await;

    // A plain restart of the restored server keeps the new generation.
    stop(server).await;
    let server = Server::start(dir.path(), &db, &[], "warn").await;
    assert_eq!(generation_of(&server, &account, &thread).await, second);

    // The same copy restored again: yet another generation, though the
    // file is the same.
    stop(server).await;
    restore(&db, &copy, 2);
    let server = Server::start(dir.path(), &db, &[], "warn").await;
    let third = generation_of(&server, &account, &thread).await;
    assert_ne!(third, first);
    assert_ne!(
        third, second,
        "each restore of one copy is a generation of its own"
    );
    assert_eq!(served(&server, &account, &thread).await, held[..2]);
    drop(server);
}

#[tokio::test]
async fn mark_restored_on_a_missing_database_says_so_and_creates_nothing() {
    if crate::helpers::pg::skip("about a SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.db");
    let out = run_cli(&["mark-restored", "--db", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no database at") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(!missing.exists(), "no database was made");

    // An empty file (a failed copy) is no database either, and stays empty.
    std::fs::write(&missing, b"").expect("an empty file");
    let out = run_cli(&["mark-restored", "--db", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("empty file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::metadata(&missing).unwrap().len(), 0);
}

/// `pg_dump` or `pg_restore`: on the PATH, or in Debian's
/// /usr/lib/postgresql/VERSION/bin (newest first).
fn pg_tool(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e.ok()?.path().join("bin").join(name)))
        .collect();
    debian.sort();
    debian.reverse();
    on_path.chain(debian).find(|p| p.is_file())
}

/// Runs a PostgreSQL tool, which must succeed.
fn run_tool(tool: &Path, args: &[&str]) {
    let out = crate::helpers::process::output_within({
        let mut cmd = std::process::Command::new(tool);
        cmd.args(args);
        cmd
    });
    assert!(
        out.status.success(),
        "{} failed: {}",
        tool.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_pg_dump_restored_and_marked_as_the_docs_say_comes_up_under_a_new_generation() {
    if !crate::helpers::pg::on_postgres() {
        eprintln!("skipped on SQLite: a PostgreSQL restore (THREADLINE_TEST_DATABASE_URL)");
        return;
    }
    let (Some(pg_dump), Some(pg_restore)) = (pg_tool("pg_dump"), pg_tool("pg_restore")) else {
        eprintln!("skipped: pg_dump and pg_restore not found");
        return;
    };
    let db = TestDb::new();
    let url = db.arg.database_url.clone().expect("a PostgreSQL database");
    let account = provision_on(&db);
    let server = Server::start_on(&db, &[], "warn").await;
    let thread = server.api.thread(&account).await;
    post(&server, &account, &account.alice, &thread, "kept 1").await;
    let mut ws = connect(&server, &account, &thread, Some(0)).await;
    let first = assert_generation(&ws.event().await);
    let mut held = messages_through(&mut ws, 1).await;

    let dump = db.dir.path().join("threadline.dump");
    run_tool(
        &pg_dump,
        &["--format=custom", "--file", dump.to_str().unwrap(), &url],
    );
    for i in 2..=3 {
        post(
            &server,
            &account,
            &account.bob,
            &thread,
            &format!("lost {i}"),
        )
        .await;
    }
    held.extend(messages_through(&mut ws, 3).await);
    // A consumer of the event log has followed it to its end.
    let seen = db.count("SELECT position FROM log_head");
    stop(server).await;
    assert_eq!(ws.messages_until_closed().await.1, Some(1001));

    // docs/operations.md, "Restore on PostgreSQL": pg_restore into an empty
    // database, then mark-restored, then start.
    let restored = crate::helpers::pg::TestDatabase::create().expect("a PostgreSQL cluster");
    run_tool(
        &pg_restore,
        &[
            "--no-owner",
            "--dbname",
            &restored.url,
            dump.to_str().unwrap(),
        ],
    );
    let marked = cli_json(&["mark-restored", "--database-url", &restored.url]);
    assert_eq!(
        marked["previous"],
        first.as_str(),
        "the dump carried the generation: {marked}"
    );
    let second = marked["generation"]
        .as_str()
        .expect("generation")
        .to_owned();
    let server = Server::start(
        db.dir.path(),
        &db.path,
        &["--database-url", &restored.url],
        "warn",
    )
    .await;
    for i in 2..=3 {
        let (seq, _) = post(
            &server,
            &account,
            &account.alice,
            &thread,
            &format!("new {i}"),
        )
        .await;
        assert_eq!(seq, i, "the lost seqs are given out again");
    }
    let now = served(&server, &account, &thread).await;
    assert_eq!(now[..1], held[..1]);
    assert_ne!(now[1..], held[1..]);

    let mut ws = connect(&server, &account, &thread, Some(3)).await;
    let ready = ws.event().await;
    assert_eq!(
        ready["data"]["last_seq"], 3,
        "seqs alone say nothing: {ready}"
    );
    assert_eq!(assert_generation(&ready), second);
    assert_ne!(second, first);
    ws.close().await;

    // The log's consumer hears the restored server's messages too.
    let mut stream = sse_after(&server, &account, &thread, seen).await;
    let (position, event) = first_sse_event(&mut stream).await;
    assert_eq!(event["data"]["content"], "new 2", "{event}");
    assert_eq!(marked["restored_positions_from"], position, "{marked}");
    drop(stream);
    drop(server);
}
