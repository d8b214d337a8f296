//! Schema migrations: a database written by the schema-1 release is
//! upgraded and reads back unchanged through the API; a database newer
//! than the binary is refused, untouched, by the server and the commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use threadline::config::ServeConfig;
use threadline::startup::Application;

use crate::helpers::{json_of, Ws, WsNext, WAIT};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema-v1.db");
const EXPECTED: &str = include_str!("../fixtures/schema-v1.expected.json");
const SCHEMA_SQL: &str = include_str!("../../schema.sql");
/// The fixture's keys (tests/fixtures/README.md).
const K1: &str = "nk_PeyBU0o92mFN3AZwg0uhVZFYyxMKUaKeXSnmKcc9Ch0";
const KC: &str = "nk_3bCfOMe6DVkusFB9H8CHPcgcneJJ1uelPxnXJUBnUe4";
/// T3: the turn-taking thread with a pending (overdue) scheduled reply.
const T3: &str = "01a220f8-b40e-7648-be82-e70c1ee6ad80";

/// A copy of the fixture in a fresh temp dir.
fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("threadline.db");
    std::fs::copy(FIXTURE, &db).expect("copy the fixture");
    (dir, db)
}

fn user_version(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// The schema objects of a database, as `threadline::store::migrate` lists them.
fn schema_of(conn: &rusqlite::Connection) -> Vec<threadline::store::migrate::SchemaObject> {
    threadline::store::migrate::schema_objects(conn).unwrap()
}

#[tokio::test]
async fn a_schema_1_database_is_upgraded_and_reads_back_unchanged() {
    let (_dir, db) = fixture_copy();
    assert_eq!(user_version(&db), 1, "the fixture is schema 1");
    let app = Application::build(ServeConfig::for_tests(db.clone()))
        .await
        .expect("server starts on the old database");
    let base = app.base_url().to_owned();
    let stop = app.shutdown_handle();
    let running = tokio::spawn(app.run_until_stopped());
    assert_eq!(user_version(&db), threadline::store::migrate::LATEST);

    // Every request the schema-1 release answered, in order, answered the
    // same: lists with unread counts, thread pages, an idempotent retry.
    let client = reqwest::Client::new();
    let expected: Vec<Value> = serde_json::from_str(EXPECTED).unwrap();
    assert!(expected.len() >= 7, "the recorded requests");
    for (i, step) in expected.iter().enumerate() {
        let key = match step["key"].as_str().unwrap() {
            "K1" => K1,
            "KC" => KC,
            other => panic!("unknown key {other}"),
        };
        let url = format!("{base}{}", step["path"].as_str().unwrap());
        let mut req = match step["method"].as_str().unwrap() {
            "GET" => client.get(url),
            "POST" => client.post(url).json(&step["body"]),
            other => panic!("unknown method {other}"),
        };
        for (name, value) in step["headers"].as_object().unwrap() {
            req = req.header(name.as_str(), value.as_str().unwrap());
        }
        let (status, body) = json_of(req.bearer_auth(key).send().await.unwrap()).await;
        assert_eq!(status.as_u16(), step["status"], "step {i}: {body}");
        assert_eq!(body, step["response"], "step {i}: {}", step["path"]);
    }

    // The reply that was pending when the old release stopped is delivered
    // (replayed from history or live, whichever comes first).
    let res = client
        .post(format!("{base}/v1/turn-taking/actions/open_thread"))
        .bearer_auth(K1)
        .json(&serde_json::json!({"thread_id": T3}))
        .send()
        .await
        .unwrap();
    let (status, opened) = json_of(res).await;
    assert_eq!(status, 200, "{opened}");
    let url = opened["realtime"]["connect_url"].as_str().unwrap();
    let mut ws = Ws::connect(&format!("{url}&after=0")).await;
    let delivered = loop {
        match ws.next().await {
            WsNext::Event(e) => {
                let agent_message = e["type"] == "thread.message" && e["data"]["sender"] == "agent";
                if agent_message || e["type"] == "turn_taking.message" {
                    break e;
                }
            }
            WsNext::Closed(code) => panic!("socket closed ({code:?}) before the reply came"),
        }
    };
    assert_eq!(delivered["seq"], 2, "after dana's message: {delivered}");
    ws.close().await;

    // Its turn predates recorded decisions: listed with its part, no decision.
    let res = client
        .get(format!("{base}/v1/turn-taking/threads/{T3}/turns"))
        .bearer_auth(K1)
        .send()
        .await
        .unwrap();
    let (status, page) = json_of(res).await;
    assert_eq!(status, 200, "{page}");
    let turn = &page["turns"][0];
    assert_eq!(turn["turn_epoch"], 1, "{page}");
    assert!(
        turn["decision"].is_null() && turn["first_seq"].is_null(),
        "{page}"
    );
    assert_eq!(turn["parts"][0]["status"], "delivered", "{page}");
    assert_eq!(turn["parts"][0]["seq"], 2, "{page}");

    stop.shutdown().await;
    running.await.unwrap().unwrap();
    // The upgraded file has exactly the schema that schema.sql describes.
    let upgraded = rusqlite::Connection::open(&db).unwrap();
    let documented = rusqlite::Connection::open_in_memory().unwrap();
    documented.execute_batch(SCHEMA_SQL).unwrap();
    assert_eq!(schema_of(&upgraded), schema_of(&documented));
}

/// The file's bytes and modification time.
fn snapshot(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
    let bytes = std::fs::read(path).unwrap();
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    (bytes, mtime)
}

/// A copy of the fixture that claims a schema version from the future.
fn newer_database() -> (tempfile::TempDir, PathBuf, i64) {
    let (dir, db) = fixture_copy();
    let future = threadline::store::migrate::LATEST + 7;
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(&format!("PRAGMA user_version = {future}"))
        .unwrap();
    drop(conn);
    (dir, db, future)
}

/// Runs the binary; one that has not exited within `WAIT` (a server that
/// started serving) is killed and fails the test.
fn run_binary(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_threadline"))
        .args(args)
        .env_remove("THREADLINE_DB")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} did not exit: it did not refuse the database");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_database_newer_than_the_binary_is_refused_and_left_untouched() {
    let (dir, db, future) = newer_database();
    let before = snapshot(&db);
    let db_arg = db.to_str().unwrap();
    let cases: [&[&str]; 3] = [
        &["serve", "--bind", "127.0.0.1:0", "--db", db_arg],
        &["agent", "create", "--name", "eve", "--db", db_arg],
        &[
            "key",
            "create",
            "--user",
            "usr_7029cd2b5bf0e397",
            "--db",
            db_arg,
        ],
    ];
    for args in cases {
        let out = run_binary(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} must fail; stderr: {stderr}"
        );
        assert!(
            stderr.contains(&format!("schema version {future}"))
                && stderr.contains("newer threadline"),
            "{args:?}: a clear message; stderr: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed nothing else");
        assert!(
            snapshot(&db) == before,
            "{args:?} changed the database file"
        );
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["threadline.db"], "{args:?} left no WAL or journal");
    }
}
