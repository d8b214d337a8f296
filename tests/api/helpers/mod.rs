//! The one test harness: `spawn_app()` (the server in this process) and one
//! helper per endpoint; `process` runs the real binary as a child process.

#![allow(dead_code)]

pub mod db;
pub mod pg;
pub mod process;
pub mod sse;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use threadline::config::{DbArg, ServeConfig};
use threadline::realtime::Hub;
use threadline::startup::{Application, ShutdownHandle};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);
/// Pause between two polls of a condition.
pub const POLL: Duration = Duration::from_millis(20);

/// An agent and the login key of its account.
#[derive(Debug, Clone)]
pub struct Agent {
    pub aid: String,
    pub key: String,
    pub user_id: String,
}

pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub client: reqwest::Client,
    /// The SQLite file (absent when the tests run on PostgreSQL).
    pub db_path: PathBuf,
    /// Where the data is, as the command-line functions take it: the
    /// SQLite file, or this test's own PostgreSQL database.
    pub db: DbArg,
    pub hub: Arc<Hub>,
    pub shutdown: ShutdownHandle,
    /// The dev seed: one account (key) owning alice and bob.
    pub key: String,
    pub user_id: String,
    pub alice: Agent,
    pub bob: Agent,
    /// A connection to it for the reads below, kept for the test.
    pg_session: Option<pg::Session>,
    /// This test's PostgreSQL database, dropped with the app.
    _pg: Option<pg::TestDatabase>,
    _dir: tempfile::TempDir,
}

/// A server with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose settings `tweak` adjusts (port 0 and a temp database are kept).
pub async fn spawn_app_with(tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("threadline.db");
    // THREADLINE_TEST_DATABASE_URL set: a PostgreSQL database of its own.
    let pg = pg::TestDatabase::migrated();
    let db = DbArg {
        path: db_path.clone(),
        database_url: pg.as_ref().map(|d| d.url.clone()),
    };
    let seed = threadline::cli::dev_seed(&db)
        .expect("seed")
        .expect("empty database");
    let mut config = ServeConfig::for_tests(db_path.clone());
    config.db = db.clone();
    tweak(&mut config);
    let app = Application::build(config).await.expect("server builds");
    let base = app.base_url().to_owned();
    let hub = app.hub();
    let shutdown = app.shutdown_handle();
    tokio::spawn(app.run_until_stopped());
    let agent = |aid: String| Agent {
        aid,
        key: seed.login_key.clone(),
        user_id: seed.user_id.clone(),
    };
    TestApp {
        base,
        client: reqwest::Client::new(),
        db_path,
        db,
        hub,
        shutdown,
        key: seed.login_key.clone(),
        user_id: seed.user_id.clone(),
        alice: agent(seed.alice.clone()),
        bob: agent(seed.bob.clone()),
        pg_session: pg.as_ref().map(|d| pg::Session::new(d.url())),
        _pg: pg,
        _dir: dir,
    }
}

impl TestApp {
    /// A second server on this app's PostgreSQL database (another node
    /// behind the same load balancer), with the same seed; its settings
    /// are `tweak`ed like `spawn_app_with`'s. The first app owns the
    /// database: keep it alive as long as this one.
    pub async fn another_node(&self, tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
        assert!(
            self.db.database_url.is_some(),
            "another node needs PostgreSQL (THREADLINE_TEST_DATABASE_URL)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = ServeConfig::for_tests(self.db_path.clone());
        config.db = self.db.clone();
        tweak(&mut config);
        let app = Application::build(config).await.expect("server builds");
        let base = app.base_url().to_owned();
        let hub = app.hub();
        let shutdown = app.shutdown_handle();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            base,
            client: reqwest::Client::new(),
            db_path: self.db_path.clone(),
            db: self.db.clone(),
            hub,
            shutdown,
            key: self.key.clone(),
            user_id: self.user_id.clone(),
            alice: self.alice.clone(),
            bob: self.bob.clone(),
            pg_session: self.db.database_url.as_deref().map(pg::Session::new),
            _pg: None,
            _dir: dir,
        }
    }
}

/// The command line's database argument for a SQLite file.
pub fn sqlite_db(path: &std::path::Path) -> DbArg {
    DbArg {
        path: path.to_owned(),
        database_url: None,
    }
}

/// A response's status and JSON body.
pub async fn json_of(res: Response) -> (StatusCode, Value) {
    let status = res.status();
    let text = res.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

/// Asserts a response is the error envelope with this status and code.
pub async fn assert_error(res: Response, status: u16, code: &str) -> Value {
    let request_id = res
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .expect("X-Request-Id header");
    let (got, body) = json_of(res).await;
    assert_eq!(got.as_u16(), status, "status; body: {body}");
    assert_eq!(body["error"]["code"], code, "code; body: {body}");
    assert_eq!(
        body["error"]["request_id"],
        request_id.as_str(),
        "request id in body"
    );
    assert!(
        body["error"]["message"].is_string(),
        "message; body: {body}"
    );
    body
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A WebSocket handshake sent with reqwest, to read a refusal's envelope.
    pub async fn ws_handshake(&self, connect_url: &str) -> Response {
        self.client
            .get(connect_url.replacen("ws://", "http://", 1))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .expect("request")
    }

    /// The served OpenAPI document (checked to be a 200 of JSON).
    pub async fn openapi_document(&self) -> Value {
        let res = self
            .client
            .get(self.url("/openapi.json"))
            .send()
            .await
            .expect("request");
        assert_eq!(res.headers()["content-type"], "application/json");
        let (status, doc) = json_of(res).await;
        assert_eq!(status, 200);
        doc
    }

    /// A new account with one agent, made through the command-line code path.
    pub fn new_agent(&self, name: &str) -> Agent {
        let out = threadline::cli::agent_create(&self.db, name, None).expect("agent create");
        let v: Value = serde_json::from_str(&out).unwrap();
        Agent {
            aid: v["aid"].as_str().unwrap().to_owned(),
            key: v["login_key"].as_str().unwrap().to_owned(),
            user_id: v["user_id"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
    }

    pub async fn create_thread(&self, key: &str, body: Value) -> Response {
        self.post_json("/api/acsp/thread/create", key, &body).await
    }

    /// Creates a thread from `from` to `to` and returns its id.
    pub async fn thread_between(&self, from: &Agent, to: &Agent) -> String {
        let res = self
            .create_thread(
                &from.key,
                json!({"aid": from.aid, "target_aid": to.aid, "subject": "test"}),
            )
            .await;
        let (status, body) = json_of(res).await;
        assert_eq!(status, 201, "{body}");
        body["thread"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn post_message(&self, key: &str, body: Value) -> Response {
        self.post_json("/api/acsp/thread/message", key, &body).await
    }

    /// Posts `content` as `from` and returns the message.
    pub async fn say(&self, from: &Agent, thread_id: &str, content: &str) -> Value {
        let res = self
            .post_message(
                &from.key,
                json!({"aid": from.aid, "thread_id": thread_id, "content": content}),
            )
            .await;
        let (status, body) = json_of(res).await;
        assert_eq!(status, 201, "{body}");
        body["message"].clone()
    }

    pub async fn get_thread(&self, key: &str, thread_id: &str, query: &str) -> Response {
        self.get(&format!("/api/acsp/thread/{thread_id}?{query}"), key)
            .await
    }

    pub async fn list_threads(&self, key: &str, query: &str) -> Response {
        self.get(&format!("/api/acsp/threads?{query}"), key).await
    }

    pub async fn set_status(&self, key: &str, body: Value) -> Response {
        self.post_json("/api/acsp/thread/status", key, &body).await
    }

    pub async fn open_thread(&self, key: &str, body: Value) -> Response {
        self.post_json("/v1/turn-taking/actions/open_thread", key, &body)
            .await
    }

    /// Opens (or re-opens) a thread and returns (thread id, connect url).
    pub async fn grant_for(&self, key: &str, thread_id: Option<&str>) -> (String, String) {
        let body = match thread_id {
            Some(id) => json!({"thread_id": id}),
            None => json!({}),
        };
        let (status, body) = json_of(self.open_thread(key, body).await).await;
        assert_eq!(status, 200, "{body}");
        (
            body["thread"]["id"].as_str().unwrap().to_owned(),
            body["realtime"]["connect_url"].as_str().unwrap().to_owned(),
        )
    }

    /// Opens a turn-taking thread (with `integrations` if given) and a
    /// socket on it, past its connection.ready.
    pub async fn open_and_listen(&self, integrations: Option<Value>) -> (String, Ws) {
        let body = match integrations {
            Some(i) => json!({ "integrations": i }),
            None => json!({}),
        };
        let (status, opened) = json_of(self.open_thread(&self.key, body).await).await;
        assert_eq!(status, 200, "{opened}");
        let mut ws = Ws::connect(opened["realtime"]["connect_url"].as_str().unwrap()).await;
        assert_eq!(ws.event().await["type"], "connection.ready");
        (opened["thread"]["id"].as_str().unwrap().to_owned(), ws)
    }

    /// submit_messages with the app's key; asserts 200 and returns the body.
    pub async fn submit(&self, thread_id: &str, messages: Value) -> Value {
        let res = self
            .post_json(
                "/v1/turn-taking/actions/submit_messages",
                &self.key,
                &json!({"thread_id": thread_id, "messages": messages}),
            )
            .await;
        let (status, body) = json_of(res).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// respond with the app's key; asserts 200 and returns the body.
    pub async fn respond(&self, thread_id: &str, content: &str, epoch: i64) -> Value {
        let res = self
            .post_json(
                "/v1/turn-taking/actions/respond",
                &self.key,
                &json!({"thread_id": thread_id, "content": content, "turn_epoch": epoch}),
            )
            .await;
        let (status, body) = json_of(res).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Messages stored in the database (all threads), read directly.
    pub fn stored_messages(&self) -> i64 {
        self.db_count("SELECT COUNT(*) FROM messages")
    }

    /// Threads stored in the database, read directly.
    pub fn stored_threads(&self) -> i64 {
        self.db_count("SELECT COUNT(*) FROM threads")
    }

    /// The one integer `sql` (no parameters) selects, from either backend.
    pub fn db_count(&self, sql: &str) -> i64 {
        if let Some(pg) = &self.pg_session {
            return pg.scalar(sql);
        }
        let conn = rusqlite::Connection::open(&self.db_path).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Runs statements that return nothing (test setup, e.g. ageing rows).
    pub fn db_exec(&self, sql: &str) {
        match &self.pg_session {
            Some(pg) => pg.exec(sql),
            None => rusqlite::Connection::open(&self.db_path)
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
        }
    }

    /// The one text (or NULL) `sql` selects, from either backend.
    pub fn db_text(&self, sql: &str) -> Option<String> {
        if let Some(pg) = &self.pg_session {
            return pg.text(sql);
        }
        let conn = rusqlite::Connection::open(&self.db_path).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// The seqs stored for a thread, oldest first, read directly.
    pub fn stored_seqs(&self, thread: &str) -> Vec<i64> {
        let sql = format!(
            "SELECT m.seq FROM messages m JOIN threads t ON t.id = m.thread_id
             WHERE t.uuid = '{thread}' ORDER BY m.seq"
        );
        if let Some(pg) = &self.pg_session {
            return pg.ints(&sql);
        }
        let conn = rusqlite::Connection::open(&self.db_path).unwrap();
        let mut stmt = conn.prepare(&sql).unwrap();
        let seqs = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<Vec<i64>, _>>()
            .unwrap();
        seqs
    }

    /// The whole event log, read back as a consumer would.
    pub fn read_log(&self) -> Vec<threadline::events::Event> {
        if let Some(url) = &self.db.database_url {
            return pg::log(url);
        }
        let conn = rusqlite::Connection::open(&self.db_path).unwrap();
        threadline::store::events::events_after(&conn, 0, 10_000).expect("the log reads")
    }

    /// The server's retention pass over the log with this cutoff, run
    /// directly on either backend; returns how many events went and the
    /// newest position.
    pub fn prune_log(&self, cutoff: &str) -> (usize, i64) {
        if let Some(url) = &self.db.database_url {
            return pg::prune_log(url, cutoff);
        }
        let conn = rusqlite::Connection::open(&self.db_path).unwrap();
        conn.busy_timeout(WAIT).unwrap();
        let pruned = threadline::store::events::prune(&conn, cutoff, 1000).unwrap();
        let newest = threadline::store::events::last_position(&conn).unwrap();
        (pruned, newest)
    }

    /// A SQL literal of these bytes (given as hex), for either backend.
    pub fn blob_literal(&self, hex: &str) -> String {
        match &self.db.database_url {
            Some(_) => format!("'\\x{hex}'::bytea"),
            None => format!("X'{hex}'"),
        }
    }

    /// The arguments that point a `threadline` command at this database.
    pub fn db_args(&self) -> Vec<String> {
        match &self.db.database_url {
            Some(url) => vec!["--database-url".into(), url.clone()],
            None => vec!["--db".into(), self.db_path.display().to_string()],
        }
    }

    /// Waits (polling /healthz, bounded) until the live actor count is `n`.
    pub async fn wait_for_live_actors(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, body) =
                json_of(self.client.get(self.url("/healthz")).send().await.unwrap()).await;
            if body["realtime"]["live_actors"] == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "live actors stayed at {} (want {n})",
                body["realtime"]["live_actors"]
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A WebSocket client reading JSON events.
pub struct Ws {
    pub stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// What the socket yielded next.
#[derive(Debug)]
pub enum WsNext {
    Event(Value),
    Closed(Option<u16>),
}

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        Ws { stream }
    }

    /// The next JSON event or the close, within `WAIT`.
    pub async fn next(&mut self) -> WsNext {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("timed out waiting for a WebSocket frame");
            match msg {
                Some(Ok(WsMessage::Text(t))) => {
                    return WsNext::Event(serde_json::from_str(&t).unwrap())
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return WsNext::Closed(frame.map(|f| f.code.into()))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return WsNext::Closed(None),
            }
        }
    }

    /// The next event; panics on close.
    pub async fn event(&mut self) -> Value {
        match self.next().await {
            WsNext::Event(v) => v,
            WsNext::Closed(code) => panic!("socket closed ({code:?}) while waiting for an event"),
        }
    }

    /// The next event of type `kind`, skipping others.
    pub async fn event_of(&mut self, kind: &str) -> Value {
        loop {
            let e = self.event().await;
            if e["type"] == kind {
                return e;
            }
        }
    }

    /// The contents of the `thread.message` events up to the close, and the
    /// close code.
    pub async fn messages_until_closed(&mut self) -> (Vec<String>, Option<u16>) {
        let mut contents = Vec::new();
        loop {
            match self.next().await {
                WsNext::Event(e) if e["type"] == "thread.message" => {
                    contents.push(e["data"]["content"].as_str().unwrap_or_default().to_owned());
                }
                WsNext::Event(_) => {}
                WsNext::Closed(code) => return (contents, code),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// Everything the server sends on a new connection to `addr` after
/// `request`, up to the connection's end (within `WAIT`).
pub async fn until_closed(addr: impl tokio::net::ToSocketAddrs, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut seen))
        .await
        .unwrap_or_else(|_| panic!("kept open: {:?}", String::from_utf8_lossy(&seen)))
        .expect("read");
    seen
}
