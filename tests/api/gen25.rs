//! Round 25: the generation reaches every client that resumes, and a replay
//! of the event log survives one bad row.
//!
//! Round 24 named the database's generation (it changes exactly when the
//! data may have gone back: a `threadline backup` copy restored, a database
//! marked with `threadline mark-restored`) in a socket's `connection.ready`
//! only. A client that read over HTTP, followed `/v1/sse` or waited through
//! MCP could not tell a restored server from the one it left. Now every
//! answer carries it in `Threadline-Generation`, an event stream starts
//! with the socket's `connection.ready` (no `id:`), and MCP's reads and
//! `wait_for_messages` say it. The restore tests drive the real binary as
//! docs/operations.md says (backup, SIGTERM, the copy put in place; or
//! `mark-restored` with the server stopped), with real clients.
//!
//! And a row of the log whose event cannot be rebuilt (a reply part whose
//! content no longer reads back, a status event whose payload is not JSON)
//! ended every `/v1/sse` stream resumed from before it ("could not read
//! the event log"), and stopped webhooks and the PostgreSQL log follower at
//! it, until retention pruned it: it is now left out, logged once with its
//! position, and read past.

use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::db::TestDb;
use crate::helpers::process::{cli_json, provision, provision_on, Account, Api, Server};
use crate::helpers::sse::{EventStream, StreamEvent};
use crate::helpers::{json_of, spawn_app, spawn_app_with, Ws, WAIT};
use crate::inspector23::{backup, restore, stop};

/// The generation an answer names: a UUID in its usual text form.
fn generation_of(res: &reqwest::Response) -> String {
    let value = res
        .headers()
        .get("threadline-generation")
        .unwrap_or_else(|| panic!("{} {}: no Threadline-Generation", res.status(), res.url()))
        .to_str()
        .expect("ASCII")
        .to_owned();
    let parsed = uuid::Uuid::parse_str(&value).expect("the generation is a UUID");
    assert_eq!(parsed.to_string(), value, "hyphenated, lowercase");
    assert_eq!(
        res.headers()
            .get_all("threadline-generation")
            .iter()
            .count(),
        1,
        "named once"
    );
    value
}

/// The generation a new socket on `thread` is told (`connection.ready`).
async fn socket_generation(api: &Api, account: &Account, thread: &str) -> String {
    let opened = api.open_thread(&account.key, Some(thread)).await;
    let url = opened["realtime"]["connect_url"].as_str().expect("url");
    let mut ws = Ws::connect(url).await;
    let ready = ws.event().await;
    assert_eq!(ready["type"], "connection.ready", "{ready}");
    ws.close().await;
    ready["data"]["generation"]
        .as_str()
        .expect("a generation")
        .to_owned()
}

/// The generation every kind of answer names, which must be one: reads
/// (a thread's page, the thread list, a turn-taking thread's turns), a
/// post's `201`, a refusal (`404`, and a `401` without a key) and
/// `/healthz`.
async fn answers_generation(api: &Api, account: &Account, thread: &str) -> String {
    let mut seen = Vec::new();
    let path = format!("/api/acsp/thread/{thread}?aid={}", account.alice);
    let res = api.get(&path, &account.key).await;
    assert_eq!(res.status(), 200);
    seen.push(("a thread's page", generation_of(&res)));
    let path = format!("/api/acsp/threads?aid={}", account.alice);
    let res = api.get(&path, &account.key).await;
    assert_eq!(res.status(), 200);
    seen.push(("the thread list", generation_of(&res)));
    let turns = api.open_thread(&account.key, None).await;
    let turns = turns["thread"]["id"].as_str().expect("thread id");
    let res = api
        .get(
            &format!("/v1/turn-taking/threads/{turns}/turns"),
            &account.key,
        )
        .await;
    assert_eq!(res.status(), 200);
    seen.push(("a thread's turns", generation_of(&res)));
    let res = api
        .post(
            "/api/acsp/thread/message",
            &account.key,
            &json!({"aid": account.alice, "thread_id": thread, "content": "a post"}),
        )
        .await
        .expect("an answer");
    assert_eq!(res.status(), 201);
    seen.push(("a post", generation_of(&res)));
    let path = format!(
        "/api/acsp/thread/{}?aid={}",
        uuid::Uuid::new_v4(),
        account.alice
    );
    let res = api.get(&path, &account.key).await;
    assert_eq!(res.status(), 404);
    seen.push(("a 404", generation_of(&res)));
    let res = api
        .client
        .get(api.url("/api/acsp/threads"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401);
    seen.push(("a 401", generation_of(&res)));
    let res = api
        .client
        .get(api.url("/healthz"))
        .send()
        .await
        .expect("request");
    seen.push(("/healthz", generation_of(&res)));
    let first = seen[0].1.clone();
    for (what, generation) in &seen {
        assert_eq!(generation, &first, "{what} names another generation");
    }
    first
}

/// A `/v1/sse` stream being read.
struct Stream(EventStream);

impl Stream {
    /// `/v1/sse?QUERY` with the key, resumed after `last_id` when given.
    async fn open(api: &Api, key: &str, query: &str, last_id: Option<i64>) -> Stream {
        let url = api.url(&format!("/v1/sse?{query}"));
        Stream(EventStream::open(&api.client, url, key, last_id).await)
    }

    async fn event(&mut self) -> StreamEvent {
        self.0.event().await
    }

    /// The stream's first event, which must be its `connection.ready`
    /// (without an `id:`): its frame.
    async fn ready(&mut self) -> Value {
        let first = self.event().await;
        assert_eq!(first.kind, "connection.ready", "{first:?}");
        assert_eq!(first.id, None, "no position: Last-Event-ID stays");
        assert_eq!(first.data["type"], "connection.ready", "{first:?}");
        first.data
    }

    /// The events up to and including the first whose `data` holds `content`.
    async fn until_content(&mut self, content: &str) -> Vec<StreamEvent> {
        let mut seen = Vec::new();
        loop {
            let e = self.event().await;
            let done = e.data["data"]["content"] == content;
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

/// The generation a new event stream on `thread` starts with.
async fn stream_generation(api: &Api, account: &Account, thread: &str) -> String {
    let mut stream = Stream::open(api, &account.key, &format!("thread_id={thread}"), None).await;
    let ready = stream.ready().await;
    assert_eq!(ready["data"]["thread_id"], thread, "{ready}");
    generation_of(stream.0.response());
    assert_eq!(
        ready["data"]["generation"].as_str(),
        Some(generation_of(stream.0.response()).as_str()),
        "the stream's header and its first event agree"
    );
    ready["data"]["generation"]
        .as_str()
        .expect("a generation")
        .to_owned()
}

/// Calls an MCP tool over the server's `/mcp` with `key`: its structured result.
async fn mcp_tool(api: &Api, key: &str, tool: &str, args: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": tool, "arguments": args}});
    let res = api
        .client
        .post(api.url("/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(&body)
        .send()
        .await
        .expect("request");
    let answer = crate::tidy16::jsonrpc_answer(res).await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    answer["result"]["structuredContent"].clone()
}

/// The generation MCP's tools say: `read_thread`, `list_threads`, and
/// `wait_for_messages` (on the thread, with messages after `after_seq`,
/// and on the inbox, which times out), which must be one.
async fn mcp_generation(api: &Api, account: &Account, thread: &str) -> String {
    let read = mcp_tool(
        api,
        &account.key,
        "read_thread",
        json!({"aid": account.alice, "thread_id": thread}),
    )
    .await;
    assert!(read["messages"].is_array(), "{read}");
    let listed = mcp_tool(
        api,
        &account.key,
        "list_threads",
        json!({"aid": account.alice}),
    )
    .await;
    let waited = mcp_tool(
        api,
        &account.key,
        "wait_for_messages",
        json!({"aid": account.alice, "thread_id": thread, "after_seq": 0, "timeout_secs": 1}),
    )
    .await;
    assert_eq!(waited["timed_out"], false, "{waited}");
    let inbox = mcp_tool(
        api,
        &account.key,
        "wait_for_messages",
        json!({"aid": account.bob, "timeout_secs": 1}),
    )
    .await;
    let generation = read["generation"]
        .as_str()
        .expect("read_thread's generation");
    for (what, answer) in [
        ("list_threads", &listed),
        ("wait_for_messages in a thread", &waited),
        ("wait_for_messages on the inbox", &inbox),
    ] {
        assert_eq!(answer["generation"], generation, "{what}: {answer}");
    }
    generation.to_owned()
}

/// Every way a client can learn the generation, which must agree: the
/// socket's `connection.ready`, every kind of answer's header, the event
/// stream's first event, MCP's tools.
async fn the_generation(api: &Api, account: &Account, thread: &str) -> String {
    let socket = socket_generation(api, account, thread).await;
    assert_eq!(answers_generation(api, account, thread).await, socket);
    assert_eq!(stream_generation(api, account, thread).await, socket);
    assert_eq!(mcp_generation(api, account, thread).await, socket);
    socket
}

/// Point 1–3 with a `threadline backup` copy: the header of every answer,
/// the event stream's `connection.ready` and MCP's answers name the
/// socket's generation; a plain restart keeps it; the restored copy comes
/// up under a new one, said the same everywhere. A consumer of the event
/// stream that comes back with the old server's `Last-Event-ID` is told
/// the new generation before anything the restored server logged.
#[tokio::test]
async fn every_answer_the_stream_and_mcp_name_the_generation_and_a_restored_copy_changes_it() {
    if crate::helpers::pg::skip("a restore copies the SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let account = provision(&db);
    let server = Server::start(dir.path(), &db, &[], "warn").await;
    let thread = server.api.thread(&account).await;
    let (status, _) = server
        .api
        .say(&account.key, &account.alice, &thread, "kept")
        .await
        .expect("an answer");
    assert_eq!(status, 201);
    let first = the_generation(&server.api, &account, &thread).await;

    let copy = dir.path().join("backup.db");
    backup(&db, &copy);
    let (status, _) = server
        .api
        .say(&account.key, &account.bob, &thread, "lost")
        .await
        .expect("an answer");
    assert_eq!(status, 201);
    // A consumer of the stream that has read to the log's end.
    let mut stream = Stream::open(
        &server.api,
        &account.key,
        &format!("thread_id={thread}"),
        Some(0),
    )
    .await;
    assert_eq!(stream.ready().await["data"]["generation"], first.as_str());
    let seen = stream.until_content("lost").await;
    let held = seen.last().and_then(|e| e.id).expect("a position");
    drop(stream);

    // A plain restart keeps it, everywhere.
    stop(server).await;
    let server = Server::start(dir.path(), &db, &[], "warn").await;
    assert_eq!(the_generation(&server.api, &account, &thread).await, first);

    stop(server).await;
    restore(&db, &copy, 1);
    let server = Server::start(dir.path(), &db, &[], "warn").await;
    let second = the_generation(&server.api, &account, &thread).await;
    assert_ne!(second, first, "a restored copy comes up under a new one");

    // The stream's consumer comes back with its last id: the restored log
    // numbers what it logs past any position of the old one, so the
    // consumer hears what was posted since (the_generation's post), then
    // the live events; the generation, first, says that what it held of
    // the old server ("lost") may be gone.
    let mut stream = Stream::open(
        &server.api,
        &account.key,
        &format!("thread_id={thread}"),
        Some(held),
    )
    .await;
    let ready = stream.ready().await;
    assert_eq!(ready["data"]["generation"], second.as_str(), "{ready}");
    let replayed = stream.event().await;
    assert_eq!(replayed.data["data"]["content"], "a post", "{replayed:?}");
    assert!(replayed.id > Some(held), "{replayed:?}");
    let (status, _) = server
        .api
        .say(&account.key, &account.alice, &thread, "after the restore")
        .await
        .expect("an answer");
    assert_eq!(status, 201);
    let next = stream.until_content("after the restore").await;
    assert_eq!(next.len(), 1, "{next:?}");
    drop(stream);

    // Restarted again: the restored server's generation stays.
    stop(server).await;
    let server = Server::start(dir.path(), &db, &[], "warn").await;
    assert_eq!(the_generation(&server.api, &account, &thread).await, second);
    drop(server);
}

/// Points 1–3 with `threadline mark-restored` (how a PostgreSQL restore is
/// marked), on either backend: the new generation it prints is the one
/// every answer, the stream and MCP name once the server is back, and a
/// restart keeps it.
#[tokio::test]
async fn mark_restored_gives_every_answer_the_stream_and_mcp_its_new_generation() {
    let db = TestDb::new();
    let account = provision_on(&db);
    let server = Server::start_on(&db, &[], "warn").await;
    let thread = server.api.thread(&account).await;
    let first = the_generation(&server.api, &account, &thread).await;
    stop(server).await;

    let marked = cli_json(&db.with_args(&["mark-restored"], &db.args()));
    assert_eq!(marked["previous"], first.as_str(), "{marked}");
    let second = marked["generation"]
        .as_str()
        .expect("generation")
        .to_owned();
    assert_ne!(second, first);
    let server = Server::start_on(&db, &[], "warn").await;
    assert_eq!(the_generation(&server.api, &account, &thread).await, second);
    stop(server).await;
    let server = Server::start_on(&db, &[], "warn").await;
    assert_eq!(the_generation(&server.api, &account, &thread).await, second);
    drop(server);
}

/// A stream's `connection.ready` is the socket's: a thread's names the
/// thread, its last seq when the stream joined and the generation; an
/// inbox's the agent and the generation. It comes first, without an `id:`,
/// before a resume's replay (whose ids are the log's positions, as
/// before) and before a `reset`; a HEAD of the stream names the generation
/// in its header too.
#[tokio::test]
async fn a_stream_starts_with_the_socket_s_connection_ready_before_its_replay_and_resets() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let generation = app
        .db_text("SELECT id FROM generation")
        .expect("a generation");
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "one").await;
    app.say(&app.bob, &thread, "two").await;
    let log = app.read_log();
    let two = log.last().and_then(|e| e.position).expect("a position");

    // A thread's stream, resumed from before "two".
    let api = Api {
        base: app.base.clone(),
        client: app.client.clone(),
    };
    let mut stream = Stream::open(
        &api,
        &app.key,
        &format!("thread_id={thread}"),
        Some(two - 1),
    )
    .await;
    assert_eq!(generation_of(stream.0.response()), generation);
    let ready = stream.ready().await;
    assert_eq!(
        ready["data"],
        json!({"thread_id": thread, "last_seq": 2, "generation": generation})
    );
    assert_eq!(ready["seq"], 2);
    assert_eq!(ready["channel"], format!("turn-taking-thread/{thread}"));
    let replayed = stream.event().await;
    assert_eq!(replayed.id, Some(two), "{replayed:?}");
    assert_eq!(replayed.data["data"]["content"], "two");
    app.say(&app.alice, &thread, "three").await;
    let live = stream.event().await;
    assert_eq!(live.data["data"]["content"], "three", "{live:?}");
    assert!(live.id > Some(two));
    drop(stream);

    // An inbox's stream.
    let mut inbox = Stream::open(&api, &app.key, &format!("aid={}", app.bob.aid), None).await;
    let ready = inbox.ready().await;
    assert_eq!(
        ready["data"],
        json!({"aid": app.bob.aid, "generation": generation})
    );
    assert_eq!(ready["channel"], format!("agent/{}", app.bob.aid));
    app.say(&app.alice, &thread, "four").await;
    assert_eq!(inbox.event().await.data["data"]["content"], "four");
    drop(inbox);

    // A resume from beyond the log: the ready, then the reset.
    let mut ahead = Stream::open(
        &api,
        &app.key,
        &format!("thread_id={thread}"),
        Some(two + 1000),
    )
    .await;
    assert_eq!(ahead.ready().await["data"]["last_seq"], 4);
    let reset = ahead.event().await;
    assert_eq!(reset.kind, "reset", "{reset:?}");
    assert_eq!(reset.id, None);
    drop(ahead);

    let res = app
        .client
        .head(app.url(&format!("/v1/sse?thread_id={thread}")))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(generation_of(&res), generation);
}

/// The positions of the log's rows that point at a reply part, read from
/// the SQLite file.
fn reply_part_positions(db: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    let mut stmt = conn
        .prepare("SELECT position FROM events WHERE reply_id IS NOT NULL ORDER BY position")
        .unwrap();
    let positions = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<i64>, _>>()
        .unwrap();
    positions
}

/// Submits a turn-taking batch from "dana" to `thread`: its turn epoch.
async fn submit(api: &Api, key: &str, thread: &str, content: &str) -> i64 {
    let res = api
        .post(
            "/v1/turn-taking/actions/submit_messages",
            key,
            &json!({"thread_id": thread, "messages": [{"sender": "dana", "content": content}]}),
        )
        .await
        .expect("request");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    body["turn_epoch"].as_i64().expect("turn_epoch")
}

/// Point 4, the case sched24 found: a delivered reply part whose stored
/// content no longer reads back (SQLite: a corrupt row) makes its two log
/// events (`reply_scheduled`, and the delivered part's `turn_taking.message`)
/// unreadable.
/// A stream resumed from before them got "could not read the event log"
/// and ended, every time; now it gets every other event, in order, with
/// its position, and then the live ones. The same read serves webhooks and
/// the PostgreSQL follower (`events_after`): it leaves them out too. Each
/// bad event is logged once, with its position, however often it is read.
#[tokio::test]
async fn a_stream_resumed_from_before_an_unreadable_reply_part_goes_on_past_it() {
    if crate::helpers::pg::skip("a PostgreSQL text column cannot hold the corrupt bytes") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let account = provision(&db);
    let server = Server::start(dir.path(), &db, &["--pace-scale", "0"], "warn").await;
    let api = &server.api;
    let opened = api.open_thread(&account.key, None).await;
    let thread = opened["thread"]["id"]
        .as_str()
        .expect("thread id")
        .to_owned();
    let query = format!("thread_id={thread}");

    let mut live = Stream::open(api, &account.key, &query, None).await;
    live.ready().await;
    let epoch = submit(api, &account.key, &thread, "before the reply").await;
    let res = api
        .post(
            "/v1/turn-taking/actions/respond",
            &account.key,
            &json!({"thread_id": thread, "content": "A reply whose row goes bad.", "turn_epoch": epoch}),
        )
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    // Delivered (pace 0): the part's message is stored and its event sent.
    let heard = live.until_content("A reply whose row goes bad.").await;
    assert_eq!(
        heard.last().unwrap().kind,
        "turn_taking.message",
        "{heard:?}"
    );
    drop(live);
    submit(api, &account.key, &thread, "after the reply").await;

    // Every event the log holds so far, as a resume from 0 sent them.
    let mut whole = Stream::open(api, &account.key, &query, Some(0)).await;
    whole.ready().await;
    let before = whole.until_content("after the reply").await;
    drop(whole);
    // Two rows point at the part: its `reply_scheduled` (in the log for
    // webhooks; a stream does not carry it) and its delivery, which the
    // stream sent as `turn_taking.message`.
    let bad = reply_part_positions(&db);
    assert_eq!(
        bad.len(),
        2,
        "reply_scheduled and the delivered part: {bad:?}"
    );
    let delivered = heard.last().and_then(|e| e.id).expect("a position");
    assert_eq!(bad[1], delivered);
    assert!(before.iter().any(|e| e.id == Some(delivered)), "{before:?}");

    // The part's row goes bad, under the running server.
    let conn = rusqlite::Connection::open(&db).expect("open the database");
    conn.busy_timeout(WAIT).unwrap();
    let changed = conn
        .execute("UPDATE scheduled_replies SET content = X'FF00FF'", [])
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    // Twice: the same events each time, the bad ones left out, then live.
    let expected: Vec<StreamEvent> = before
        .iter()
        .filter(|e| !e.id.is_some_and(|p| bad.contains(&p)))
        .cloned()
        .collect();
    assert_eq!(expected.len(), before.len() - 1);
    for round in 0..2 {
        let mut resumed = Stream::open(api, &account.key, &query, Some(0)).await;
        resumed.ready().await;
        let replayed = resumed.until_content("after the reply").await;
        assert_eq!(replayed, expected, "round {round}");
        let later = format!("later {round}");
        submit(api, &account.key, &thread, &later).await;
        // Round 1's replay holds round 0's later message too.
        let next: Vec<Value> = resumed
            .until_content(&later)
            .await
            .iter()
            .map(|e| e.data["data"]["content"].clone())
            .collect();
        let laters: Vec<Value> = (0..=round).map(|r| json!(format!("later {r}"))).collect();
        assert_eq!(next, laters);
    }

    // The log's other readers (webhooks, the PostgreSQL follower) read it
    // as the stream does: every event but the two, none refused.
    let conn = rusqlite::Connection::open(&db).expect("open the database");
    let log = threadline::store::events::events_after(&conn, 0, 10_000).expect("the log reads");
    let positions: Vec<i64> = log.iter().filter_map(|e| e.position).collect();
    assert!(positions.iter().all(|p| !bad.contains(p)), "{positions:?}");
    assert!(log.iter().any(|e| e.data.get().contains("later 1")));
    let page = threadline::store::events::page_after(&conn, bad[0] - 1, 1).unwrap();
    assert_eq!((page.rows, page.read_upto), (1, Some(bad[0])));
    assert!(page.events.is_empty(), "read past, left out");
    drop(conn);

    let stderr = stop(server).await;
    for p in &bad {
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(&format!("event at position {p} ")))
            .collect();
        assert_eq!(lines.len(), 1, "logged once: {stderr}");
        assert!(lines[0].contains(&thread), "{}", lines[0]);
    }
    assert!(!stderr.contains("could not read the event log"), "{stderr}");
}

/// Point 4 on either backend (PostgreSQL's twin has the same shape): a
/// status event whose stored payload is not JSON is left out of a replay,
/// which goes on to the events after it and then the live ones; an
/// inbox's stream as well as the thread's.
#[tokio::test]
async fn a_status_event_whose_payload_is_not_json_is_read_past_by_thread_and_inbox_streams() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "one").await;
    for status in ["closed", "active"] {
        let res = app
            .set_status(
                &app.key,
                json!({"aid": app.alice.aid, "thread_id": thread, "status": status}),
            )
            .await;
        assert_eq!(res.status(), 200);
    }
    app.say(&app.bob, &thread, "two").await;
    let log = app.read_log();
    let statuses: Vec<i64> = log
        .iter()
        .filter(|e| e.kind == threadline::events::Kind::ThreadStatus)
        .filter_map(|e| e.position)
        .collect();
    assert_eq!(statuses.len(), 2, "{log:?}");
    let bad = statuses[0];
    app.db_exec(&format!(
        "UPDATE events SET data = 'not JSON' WHERE position = {bad}"
    ));
    let left: Vec<i64> = app.read_log().iter().filter_map(|e| e.position).collect();
    let all: Vec<i64> = log.iter().filter_map(|e| e.position).collect();
    assert_eq!(
        left,
        all.iter()
            .copied()
            .filter(|p| *p != bad)
            .collect::<Vec<_>>(),
        "the log's readers leave it out and nothing else"
    );

    let api = Api {
        base: app.base.clone(),
        client: app.client.clone(),
    };
    for query in [
        format!("thread_id={thread}"),
        format!("aid={}", app.alice.aid),
    ] {
        let mut stream = Stream::open(&api, &app.key, &query, Some(0)).await;
        stream.ready().await;
        let replayed = stream.until_content("two").await;
        let ids: Vec<i64> = replayed.iter().filter_map(|e| e.id).collect();
        assert!(!ids.contains(&bad), "{query}: {replayed:?}");
        assert!(ids.contains(&statuses[1]), "{query}: {replayed:?}");
        let reopened = replayed
            .iter()
            .find(|e| e.id == Some(statuses[1]))
            .expect("the other status event");
        assert_eq!(reopened.kind, "thread.status");
        assert_eq!(reopened.data["data"]["status"], "active");
        let later = format!("later on {query}");
        app.say(&app.alice, &thread, &later).await;
        let live = stream.until_content(&later).await;
        assert!(live.iter().all(|e| e.id > Some(bad)), "{query}: {live:?}");
    }
}

/// Point 4 on PostgreSQL's live path: every node publishes the log as its
/// follower reads it back (the writer's own commits too, once the follower
/// has caught up to them). A row no reader can rebuild stopped the
/// follower at it for good ("log follower: ..." every poll), so no node
/// published anything live after it. Here such a row is committed as a
/// writer commits one (the next position, the head moved, the nodes
/// notified); a message posted after it still reaches a stream on each
/// node, live.
#[tokio::test]
async fn on_postgresql_the_log_follower_reads_past_an_unreadable_event() {
    if !crate::helpers::pg::on_postgres() {
        eprintln!("skipped on SQLite: PostgreSQL's log follower");
        return;
    }
    let app = spawn_app().await;
    let other = app.another_node(|_| {}).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let query = format!("thread_id={thread}");
    let mut streams = Vec::new();
    for node in [&app, &other] {
        let api = Api {
            base: node.base.clone(),
            client: node.client.clone(),
        };
        let mut stream = Stream::open(&api, &app.key, &query, None).await;
        stream.ready().await;
        streams.push(stream);
    }
    app.say(&app.alice, &thread, "before").await;
    for stream in &mut streams {
        stream.until_content("before").await;
    }
    let bad = app.db_count("SELECT position + 1 FROM log_head");
    app.db_exec(&format!(
        "BEGIN;
         INSERT INTO events (position, kind, thread_id, seq, data, created_at)
           SELECT {bad}, 'thread.status', id, 0, 'not JSON', '2026-01-01T00:00:00Z'
           FROM threads WHERE uuid = '{thread}';
         UPDATE log_head SET position = {bad};
         SELECT pg_notify('threadline_events', '{bad}');
         COMMIT;"
    ));
    app.say(&app.bob, &thread, "after").await;
    for stream in &mut streams {
        let heard = stream.until_content("after").await;
        assert_eq!(heard.len(), 1, "{heard:?}");
        assert!(heard[0].id > Some(bad), "{heard:?}");
    }
}

/// A receiver on port 0 that answers every delivery `200` and hands its
/// JSON body to the test.
async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use tokio::io::{AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                while let Some((_, _, body)) =
                    crate::helpers::webhook::read_request(&mut conn).await
                {
                    let json: Value = serde_json::from_slice(&body).expect("a JSON body");
                    if tx.send(json).is_err() {
                        return;
                    }
                    let head = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if conn.get_mut().write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

/// The next delivery's body, within `WAIT`.
async fn delivered(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for a delivery")
        .expect("the receiver runs")
}

/// Point 4 for webhooks, on either backend: an endpoint paused while a
/// message and a delivered reply part were stored, whose stored JSON then
/// stops reading back, gets every other `thread.message` once resumed, in
/// order, and its cursor moves past the two. (A message's event is rebuilt
/// from its row, so it is left out by the log's read; a delivered part
/// goes out as its stored message, read by the webhook's own second read,
/// which leaves it out too.) Before, the endpoint's deliveries stopped at
/// the first of them for good.
#[tokio::test]
async fn a_webhook_endpoint_goes_on_past_messages_whose_stored_json_is_unreadable() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.allow_private_webhooks = true;
        c.pace_scale = 0.0;
    })
    .await;
    let (url, mut rx) = receiver().await;
    let res = app
        .post_json(
            "/api/acsp/webhooks",
            &app.key,
            &json!({"url": url, "events": ["thread.message"]}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let id = body["webhook"]["id"].as_str().unwrap().to_owned();
    let res = app
        .post_json(
            &format!("/api/acsp/webhooks/{id}/pause"),
            &app.key,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);

    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "one").await;
    let bad = app.say(&app.bob, &thread, "two goes bad").await;
    // A turn-taking reply, delivered at once (pace 0), read on the socket.
    let (turns, mut ws) = app.open_and_listen(None).await;
    let epoch = crate::sched23::turn(&app, &turns).await;
    app.respond(&turns, "A part whose message goes bad.", epoch)
        .await;
    let part = ws.event_of("turn_taking.message").await;
    let part_message = part["id"]
        .as_str()
        .expect("the stored message's id")
        .to_owned();
    app.say(&app.alice, &thread, "three").await;
    let last = app.read_log().last().and_then(|e| e.position).unwrap();

    for message in [bad["id"].as_str().unwrap(), &part_message] {
        app.db_exec(&format!(
            "UPDATE messages SET json = 'not JSON' WHERE uuid = '{message}'"
        ));
    }
    let res = app
        .post_json(
            &format!("/api/acsp/webhooks/{id}/resume"),
            &app.key,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);

    // The submitted batch's message ("go on") is a thread.message too.
    let mut contents = Vec::new();
    while contents.last().map(String::as_str) != Some("three") {
        let body = delivered(&mut rx).await;
        contents.push(body["data"]["content"].as_str().unwrap_or("?").to_owned());
    }
    assert_eq!(contents, ["one", "go on", "three"]);
    // The cursor moves once the receiver's answer is in: waited for.
    let cursor = format!("SELECT position FROM event_cursors WHERE consumer = 'webhook:{id}'");
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.db_count(&cursor) != last {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cursor stays at {}, not {last}",
            app.db_count(&cursor)
        );
        tokio::time::sleep(crate::helpers::POLL).await;
    }
}

/// The OpenAPI document lists `Threadline-Generation` on every response of
/// every operation (a UUID), as the server sends it on every answer.
#[tokio::test]
async fn the_openapi_document_lists_the_generation_header_on_every_response() {
    let app = spawn_app().await;
    let doc = app.openapi_document().await;
    let mut responses = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let Some(by_status) = op["responses"].as_object() else {
                continue;
            };
            for (status, response) in by_status {
                let header = &response["headers"]["Threadline-Generation"];
                assert_eq!(
                    header["schema"],
                    json!({"type": "string", "format": "uuid"}),
                    "{method} {path} {status}: {response}"
                );
                responses += 1;
            }
        }
    }
    assert!(responses > 100, "{responses} responses");
}
