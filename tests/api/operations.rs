//! Running it for a team: a backup taken under writes restores every
//! acknowledged message, durable mode reaches the writer's PRAGMA, and JSON
//! bodies end with a newline.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use threadline::config::{DbArg, Durability, ServeConfig};
use threadline::startup::Application;

use crate::helpers::{json_of, spawn_app_with, WAIT};

/// Every message id a server serves on `thread`, read page by page with `after`.
async fn served_ids(base: &str, key: &str, thread: &str, aid: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let res = client
            .get(format!(
                "{base}/api/acsp/thread/{thread}?aid={aid}&limit=200&after={after}"
            ))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        let (status, body) = json_of(res).await;
        assert_eq!(status, 200, "{body}");
        let page = body["messages"].as_array().expect("messages").clone();
        for m in &page {
            ids.push(m["id"].as_str().expect("id").to_owned());
            after = m["seq"].as_i64().expect("seq");
        }
        if page.is_empty() || body["has_more"] == false {
            return ids;
        }
    }
}

/// `threadline backup` of `db` to `to`, run off the async threads.
async fn take_backup(db: &DbArg, to: &Path) -> Result<String, String> {
    let (db, to) = (db.clone(), to.to_path_buf());
    tokio::task::spawn_blocking(move || threadline::cli::backup(&db, &to))
        .await
        .expect("backup task")
}

/// Starts a server on an existing database file (rate limits off).
async fn serve_existing(db: &Path) -> Application {
    let mut config = ServeConfig::for_tests(db.to_path_buf());
    config.rate_limit_per_minute = 0;
    Application::build(config).await.expect("server builds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_writes_restores_every_message_acknowledged_before_it_began() {
    if crate::helpers::pg::skip("backup copies the SQLite file") {
        return;
    }
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (key, alice) = (app.key.clone(), app.alice.aid.clone());

    // Four posters write until told to stop; each 201 is recorded at once.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> = (0..4)
        .map(|t| {
            let (client, url) = (app.client.clone(), app.url("/api/acsp/thread/message"));
            let (acked, stop, key, aid, thread) = (
                acked.clone(),
                stop.clone(),
                key.clone(),
                alice.clone(),
                thread.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let body =
                        json!({"aid": aid, "thread_id": thread, "content": format!("{t}/{i}")});
                    let res = client.post(&url).bearer_auth(&key).json(&body).send().await;
                    let (status, body) = json_of(res.expect("request")).await;
                    assert_eq!(status, 201, "{body}");
                    let id = body["message"]["id"].as_str().expect("id").to_owned();
                    acked.lock().expect("not poisoned").push(id);
                }
                i
            })
        })
        .collect();

    // Let some writes land, then note what was acknowledged before the
    // backup began and take it while the posters go on.
    let deadline = tokio::time::Instant::now() + WAIT;
    while acked.lock().expect("not poisoned").len() < 300 {
        assert!(tokio::time::Instant::now() < deadline, "posts too slow");
        tokio::time::sleep(crate::helpers::POLL).await;
    }
    // On a busy machine a backup of this small file may end before any
    // poster hears back; then the copy proves nothing about concurrent
    // writes, so another is taken (to a new file), up to a bound.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut overlapped = None;
    for attempt in 1..=10 {
        let before: Vec<String> = acked.lock().expect("not poisoned").clone();
        let backup = dir.path().join(format!("threadline-{attempt}.db"));
        let report = take_backup(&app.db, &backup)
            .await
            .expect("backup succeeds");
        if acked.lock().expect("not poisoned").len() > before.len() {
            overlapped = Some((before, backup, report));
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for p in posters {
        p.await.expect("poster");
    }
    let (before, backup, report) = overlapped.expect(
        "no post was acknowledged while any of 10 backups ran; the test proves less than it says",
    );

    // The report: one JSON object with the size, the time and the newest
    // message the copy holds.
    let report: Value = serde_json::from_str(&report).expect("the report is JSON");
    let bytes = std::fs::metadata(&backup).expect("backup file").len();
    assert_eq!(report["bytes"], bytes, "{report}");
    assert!(report["millis"].is_u64(), "{report}");
    assert!(report["last_message_at"].is_string(), "{report}");
    let last_id = report["last_message_id"].as_i64().expect("last_message_id");

    // A second backup to the same file is refused and leaves it alone.
    let again = take_backup(&app.db, &backup).await;
    assert!(
        again.as_ref().is_err_and(|e| e.contains("already exists")),
        "{again:?}"
    );
    assert_eq!(std::fs::metadata(&backup).expect("backup").len(), bytes);

    // Restore: a fresh server on the copy serves every message acknowledged
    // before the backup began (and the report's newest one is the copy's).
    let restored = serve_existing(&backup).await;
    let base = restored.base_url().to_owned();
    let handle = restored.shutdown_handle();
    tokio::spawn(restored.run_until_stopped());
    let served = served_ids(&base, &key, &thread, &alice).await;
    let served_set: HashSet<&String> = served.iter().collect();
    let missing: Vec<&String> = before
        .iter()
        .filter(|id| !served_set.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages missing from the restore",
        missing.len(),
        before.len()
    );
    let newest: i64 = rusqlite::Connection::open(&backup)
        .expect("open backup")
        .query_row("SELECT MAX(id) FROM messages", [], |r| r.get(0))
        .expect("max id");
    assert_eq!(
        newest, last_id,
        "the report names the copy's newest message"
    );
    let last_position: i64 = rusqlite::Connection::open(&backup)
        .expect("open backup")
        .query_row(
            "SELECT MAX(position) FROM events WHERE thread_id != 0",
            [],
            |r| r.get(0),
        )
        .expect("max position");
    assert_eq!(report["last_event_position"], last_position, "{report}");
    handle.shutdown().await;
}

/// Reads a `text/event-stream` until its first event with an `id:`;
/// returns the id and the `data:` object.
pub(crate) async fn first_sse_event(res: &mut reqwest::Response) -> (i64, Value) {
    let mut buf = String::new();
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let id = block.lines().find_map(|l| l.strip_prefix("id: "));
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(id), Some(data)) = (id, data) {
                let data = serde_json::from_str(data).expect("JSON data");
                return (id.parse().expect("numeric id"), data);
            }
            continue;
        }
        let chunk = tokio::time::timeout(WAIT, res.chunk())
            .await
            .expect("timed out waiting for an event")
            .expect("stream read")
            .expect("the stream ended");
        buf.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
    }
}

#[tokio::test]
async fn a_consumer_that_read_past_the_backup_hears_what_the_restored_server_logs() {
    if crate::helpers::pg::skip("backup copies the SQLite file") {
        return;
    }
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "in the backup").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let backup = dir.path().join("threadline.db");
    let report = take_backup(&app.db, &backup)
        .await
        .expect("backup succeeds");
    let report: Value = serde_json::from_str(&report).expect("the report is JSON");
    let in_copy = report["last_event_position"].as_i64().expect("a position");

    // The old server goes on, and a consumer follows it past the copy.
    for i in 0..3 {
        app.say(&app.alice, &thread, &format!("lost {i}")).await;
    }
    let seen = app
        .read_log()
        .last()
        .and_then(|e| e.position)
        .expect("logged");
    assert!(
        seen > in_copy,
        "the consumer is past the copy: {seen} vs {in_copy}"
    );

    // Restored, the consumer resumes from its cursor and hears the next message.
    let restored = serve_existing(&backup).await;
    let base = restored.base_url().to_owned();
    let handle = restored.shutdown_handle();
    tokio::spawn(restored.run_until_stopped());
    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!("{base}/v1/sse?thread_id={thread}"))
        .bearer_auth(&app.key)
        .header("Last-Event-ID", seen.to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(stream.status(), 200);
    let body = json!({"aid": app.alice.aid, "thread_id": thread, "content": "after the restore"});
    let res = client
        .post(format!("{base}/api/acsp/thread/message"))
        .bearer_auth(&app.key)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 201);
    let (id, frame) = first_sse_event(&mut stream).await;
    assert_eq!(frame["data"]["content"], "after the restore", "{frame}");
    assert!(id > seen, "{id} must be past the consumer's {seen}");
    assert_eq!(report["restored_positions_from"], id, "{report}");

    // The gap itself is no event: the restored log reads back only the
    // thread, the copied message and the new one.
    let log = threadline::store::events::events_after(
        &rusqlite::Connection::open(&backup).expect("open backup"),
        0,
        100,
    )
    .expect("the log reads");
    let contents: Vec<String> = log.iter().map(|e| e.data.get().to_owned()).collect();
    assert_eq!(log.len(), 3, "{contents:?}");
    handle.shutdown().await;
}

/// `PRAGMA page_size` of the SQLite file at `path`.
fn page_size(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .expect("the file opens")
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("the page size reads")
}

/// The agents' AIDs in the SQLite file at `path`, oldest first.
fn aids(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).expect("the file opens");
    let mut stmt = conn
        .prepare("SELECT aid FROM agents ORDER BY id")
        .expect("the query compiles");
    let rows = stmt.query_map([], |r| r.get(0)).expect("the query runs");
    rows.collect::<Result<_, _>>().expect("the rows read")
}

#[tokio::test]
async fn new_files_get_2_kib_pages_and_a_backup_of_an_older_file_has_them_too() {
    if crate::helpers::pg::skip("page sizes are SQLite's") {
        return;
    }
    // A file the server creates.
    let app = spawn_app_with(|_| {}).await;
    assert_eq!(page_size(&app.db_path), 2048);
    app.shutdown.shutdown().await;

    // A file made with SQLite's default 4 KiB pages (as threadline made
    // them before), in WAL mode, with data in it; a server on it migrates
    // it and leaves its page size alone.
    let dir = tempfile::tempdir().expect("temp dir");
    let old = dir.path().join("old.db");
    rusqlite::Connection::open(&old)
        .expect("the file is created")
        .execute_batch(
            "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; PRAGMA user_version = 0;",
        )
        .expect("the old file is set up");
    let seed = threadline::cli::dev_seed(&crate::helpers::sqlite_db(&old))
        .expect("seeded")
        .expect("an empty file");
    let server = serve_existing(&old).await;
    let handle = server.shutdown_handle();
    let running = tokio::spawn(server.run_until_stopped());
    handle.shutdown().await;
    running
        .await
        .expect("the server task")
        .expect("the server stops");
    assert_eq!(
        page_size(&old),
        4096,
        "an existing file keeps its page size"
    );

    // The backup is the way to the new size: the copy has 2 KiB pages and
    // the same rows, and a server starts on it.
    let copy = dir.path().join("copy.db");
    take_backup(&crate::helpers::sqlite_db(&old), &copy)
        .await
        .expect("backup succeeds");
    assert_eq!(page_size(&copy), 2048);
    assert_eq!(
        page_size(&old),
        4096,
        "the backup leaves the original alone"
    );
    assert_eq!(aids(&copy), vec![seed.alice.clone(), seed.bob.clone()]);
    assert_eq!(aids(&copy), aids(&old));
    let restored = serve_existing(&copy).await;
    let (base, handle) = (restored.base_url().to_owned(), restored.shutdown_handle());
    tokio::spawn(restored.run_until_stopped());
    let res = reqwest::get(format!("{base}/healthz"))
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    handle.shutdown().await;
    assert_eq!(page_size(&copy), 2048, "the server keeps the copy's pages");
}

#[test]
fn a_backup_of_a_missing_database_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("missing.db");
    let to = dir.path().join("copy.db");
    let err = threadline::cli::backup(&crate::helpers::sqlite_db(&db), &to)
        .expect_err("a missing database");
    assert!(err.contains("no database"), "{err}");
    assert!(!db.exists() && !to.exists(), "a file was created");
}

#[tokio::test]
async fn durability_full_is_read_back_from_the_writer_connection() {
    // SQLite's PRAGMA synchronous, or PostgreSQL's synchronous_commit.
    for (setting, expected) in [(Durability::Full, "full"), (Durability::Normal, "normal")] {
        let app = spawn_app_with(|c| c.durability = setting).await;
        let (status, body) =
            json_of(app.client.get(app.url("/healthz")).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(body["durability"], expected, "{body}");
        // And writes still commit in that mode.
        let thread = app.thread_between(&app.alice, &app.bob).await;
        app.say(&app.bob, &thread, "durable?").await;
        app.shutdown.shutdown().await;
    }
}

#[tokio::test]
async fn json_bodies_end_with_a_newline() {
    let app = spawn_app_with(|_| {}).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let key = app.key.clone();
    let cases = [
        (
            "healthz",
            app.client.get(app.url("/healthz")).send().await.unwrap(),
        ),
        (
            "message",
            app.post_message(
                &key,
                json!({"aid": app.alice.aid, "thread_id": thread, "content": "hi"}),
            )
            .await,
        ),
        (
            "thread page",
            app.get_thread(&key, &thread, &format!("aid={}", app.alice.aid))
                .await,
        ),
        ("me", app.get("/api/acsp/me", &key).await),
        ("error", app.get("/api/acsp/me", "nk_bad").await),
        ("unknown route", app.get("/no/such/route", &key).await),
    ];
    for (what, res) in cases {
        let text = res.text().await.expect("body");
        assert!(text.ends_with("}\n"), "{what}: {text:?}");
        let _: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
    }
}
