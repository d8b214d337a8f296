//! `thread.deleted`: a thread deleted by another process (`threadline thread
//! delete`, `prune --threads-older-than-days`, run as real child processes
//! on the server's database while it runs) is told to those who follow it
//! from outside it: the account's webhook endpoints that subscribed to the
//! type (signed, in log order; not those that did not), the inbox sockets of
//! its agents (after their earlier events, and not another account's), and
//! `aid=` SSE streams (with an `id:` a resume starts after). The log keeps
//! that one event of the thread, and retention prunes it like any other.

use serde_json::{json, Value};

use crate::helpers::process::run_cli;
use crate::helpers::sse::EventStream;
use crate::helpers::{
    assert_error, json_of, spawn_app, spawn_app_with, Agent, TestApp, Ws, POLL, WAIT,
};
use crate::webhooks::{app_with_retries, register, Delivery, Receiver, Reply};

/// Runs `threadline ARGS` on the app's database as a child process; its
/// JSON output.
fn cli(app: &TestApp, args: &[&str]) -> Value {
    let db = app.db_args();
    let all: Vec<&str> = args
        .iter()
        .copied()
        .chain(db.iter().map(String::as_str))
        .collect();
    let out = run_cli(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "threadline {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

/// A server (its settings `tweak`ed) whose event-log pruner has made its
/// first pass by the time this returns; the next is five minutes away. The
/// pruner's pass is a batch of the writer, which reports what another
/// process logged: without this, a pass a second after the start would
/// report a deletion too, and hide whether the deletion's own report works.
/// (Nothing else here writes on its own within 30 s of the start.) On
/// SQLite; on PostgreSQL the log follower reports it, and this waits for
/// nothing.
async fn quiet_app(tweak: impl FnOnce(&mut threadline::config::ServeConfig)) -> TestApp {
    let app = spawn_app_with(|c| {
        tweak(c);
        if c.db.database_url.is_none() {
            // Two rows of no thread (no reader returns them): an old one
            // the first pass prunes, and a newer one it keeps.
            let conn = rusqlite::Connection::open(&c.db.path).unwrap();
            conn.execute_batch(
                "INSERT INTO events (kind, thread_id, seq, uuid, data, created_at)
                 VALUES ('thread.status', 0, 0, 'old', '{}', '2000-01-01T00:00:00.000Z'),
                        ('thread.status', 0, 0, 'new', '{}', '2999-01-01T00:00:00.000Z');",
            )
            .unwrap();
        }
    })
    .await;
    if app.db.database_url.is_none() {
        let deadline = tokio::time::Instant::now() + WAIT;
        while app.db_count("SELECT COUNT(*) FROM events WHERE uuid = 'old'") != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pruner made no pass"
            );
            tokio::time::sleep(POLL).await;
        }
    }
    app
}

/// Registers an endpoint for `events` with `key`; returns its secret.
async fn register_as(app: &TestApp, key: &str, url: &str, events: &[&str]) -> String {
    let res = app
        .post_json(
            "/api/acsp/webhooks",
            key,
            &json!({"url": url, "events": events}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    body["secret"].as_str().unwrap().to_owned()
}

/// Closes a thread (a `thread.status` event) as `agent`.
async fn close(app: &TestApp, agent: &Agent, thread: &str) {
    let res = app
        .set_status(
            &agent.key,
            json!({"aid": agent.aid, "thread_id": thread, "status": "closed"}),
        )
        .await;
    assert_eq!(res.status(), 200);
}

/// Checks a delivery is a signed `thread.deleted` of `thread` for `reason`.
fn assert_deleted(d: &Delivery, secret: &str, thread: &str, reason: &str) {
    assert!(d.verifies_with(secret), "unsigned: {}", d.json);
    assert_eq!(d.json["type"], "thread.deleted", "{}", d.json);
    assert_eq!(d.json["data"]["thread_id"], thread, "{}", d.json);
    assert_eq!(d.json["data"]["reason"], reason, "{}", d.json);
    assert!(d.json["position"].as_i64().is_some(), "{}", d.json);
    assert!(d.json["data"]["deleted_at"].is_string(), "{}", d.json);
}

#[tokio::test]
async fn webhooks_that_subscribed_hear_a_deletion_and_a_prune_and_the_others_do_not() {
    // As `app_with_retries`, past the pruner's first pass.
    let app = quiet_app(|c| {
        c.rate_limit_per_minute = 0;
        c.webhook_retry_schedule = vec![1; 3];
        c.allow_private_webhooks = true;
    })
    .await;
    let carol = app.new_agent("carol");
    let mut wants = Receiver::start(&[], Reply::Status(200)).await;
    let mut status_only = Receiver::start(&[], Reply::Status(200)).await;
    let mut carols = Receiver::start(&[], Reply::Status(200)).await;
    let (_, secret) = register(&app, &wants.url, &["thread.deleted", "thread.status"]).await;
    register(&app, &status_only.url, &["thread.status"]).await;
    let carol_secret = register_as(
        &app,
        &carol.key,
        &carols.url,
        &["thread.deleted", "thread.status"],
    )
    .await;

    // Deleted by the command line while the server runs.
    let doomed = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &doomed, "soon gone").await;
    let out = cli(&app, &["thread", "delete", &doomed]);
    assert_eq!(out["deleted"]["threads"], 1, "{out}");
    let d = wants.next().await;
    assert_deleted(&d, &secret, &doomed, "deleted");
    assert_eq!(d.json["data"]["creator_aid"], app.alice.aid.as_str());
    assert_eq!(d.json["data"]["target_aid"], app.bob.aid.as_str());
    let deleted_at = d.json["position"].as_i64().unwrap();

    // A later event: the endpoint without thread.deleted gets it first,
    // and the other account's endpoint nothing of this account's threads.
    let pruned = app.thread_between(&app.alice, &app.bob).await;
    close(&app, &app.alice, &pruned).await;
    let d = status_only.next().await;
    assert_eq!(d.json["type"], "thread.status", "{}", d.json);
    assert_eq!(d.json["data"]["thread_id"], pruned.as_str());
    let d = wants.next().await;
    assert_eq!(d.json["type"], "thread.status", "{}", d.json);
    assert!(d.json["position"].as_i64().unwrap() > deleted_at);

    // Pruned by the command line while the server runs.
    app.db_exec(&format!(
        "UPDATE threads SET updated_at = '2000-01-01T00:00:00.000Z' WHERE uuid = '{pruned}'"
    ));
    let out = cli(&app, &["prune", "--threads-older-than-days", "30"]);
    assert_eq!(out["pruned"]["threads"], 1, "{out}");
    assert_deleted(&wants.next().await, &secret, &pruned, "pruned");

    // A turn-taking thread (no agents: the account that opened it sees it).
    let (turn, _) = app.grant_for(&app.key, None).await;
    cli(&app, &["thread", "delete", &turn]);
    let d = wants.next().await;
    assert_deleted(&d, &secret, &turn, "deleted");
    assert_eq!(d.json["data"]["creator_aid"], Value::Null);

    // The next events of each: still nothing of thread.deleted.
    let mine = app.thread_between(&app.bob, &app.alice).await;
    close(&app, &app.bob, &mine).await;
    let d = status_only.next().await;
    assert_eq!(d.json["type"], "thread.status", "{}", d.json);
    assert_eq!(d.json["data"]["thread_id"], mine.as_str());
    let theirs = app.thread_between(&carol, &app.bob).await;
    close(&app, &carol, &theirs).await;
    let d = carols.next().await;
    assert!(d.verifies_with(&carol_secret));
    assert_eq!(d.json["type"], "thread.status", "{}", d.json);
    assert_eq!(d.json["data"]["thread_id"], theirs.as_str(), "{}", d.json);
    // Carol's thread with bob is bob's account's too; bob's endpoints hear
    // it after their own thread's status.
    let d = wants.next().await;
    assert_eq!(d.json["data"]["thread_id"], mine.as_str(), "{}", d.json);
}

/// A connect URL for `agent`'s inbox.
async fn inbox(app: &TestApp, agent: &Agent) -> Ws {
    let res = app
        .post_json(
            "/api/acsp/realtime/open",
            &agent.key,
            &json!({"aid": agent.aid}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    let mut ws = Ws::connect(body["realtime"]["connect_url"].as_str().unwrap()).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    ws
}

#[tokio::test]
async fn the_agents_inbox_sockets_hear_a_deletion_after_its_messages_and_no_one_else_does() {
    let app = quiet_app(|_| {}).await;
    let carol = app.new_agent("carol");
    let mut bob = inbox(&app, &app.bob).await;
    let mut alice = inbox(&app, &app.alice).await;
    let mut carols = inbox(&app, &carol).await;

    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "one").await;
    app.say(&app.bob, &thread, "two").await;
    cli(&app, &["thread", "delete", &thread]);

    let mut kinds = Vec::new();
    loop {
        let e = bob.event().await;
        kinds.push(e["type"].as_str().unwrap().to_owned());
        if e["type"] == "thread.deleted" {
            assert_eq!(e["channel"], format!("agent/{}", app.bob.aid));
            assert_eq!(e["data"]["thread_id"], thread.as_str());
            assert_eq!(e["data"]["reason"], "deleted");
            assert_eq!(e["seq"], 2, "the thread's last seq: {e}");
            break;
        }
    }
    assert_eq!(
        kinds,
        [
            "thread.created",
            "thread.message",
            "thread.message",
            "thread.deleted"
        ]
    );
    let e = alice.event_of("thread.deleted").await;
    assert_eq!(e["data"]["thread_id"], thread.as_str());

    // Carol's inbox: the first thing it hears is her own new thread.
    let hers = app.thread_between(&carol, &app.alice).await;
    let e = carols.event().await;
    assert_eq!(e["type"], "thread.created", "{e}");
    assert_eq!(e["data"]["id"], hers.as_str());
    // Nor did the deletion close anyone's inbox: bob hears the next one.
    let next = app.thread_between(&app.alice, &app.bob).await;
    let e = bob.event().await;
    assert_eq!(e["type"], "thread.created", "{e}");
    assert_eq!(e["data"]["id"], next.as_str());
}

#[tokio::test]
async fn a_pruned_thread_reaches_a_live_inbox_socket_and_the_thread_socket_closes() {
    let app = quiet_app(|_| {}).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    close(&app, &app.alice, &thread).await;
    app.db_exec(&format!(
        "UPDATE threads SET updated_at = '2000-01-01T00:00:00.000Z' WHERE uuid = '{thread}'"
    ));
    let mut bob = inbox(&app, &app.bob).await;
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut on_thread = Ws::connect(&url).await;
    assert_eq!(on_thread.event().await["type"], "connection.ready");

    cli(&app, &["prune", "--threads-older-than-days", "30"]);
    let e = bob.event_of("thread.deleted").await;
    assert_eq!(e["data"]["thread_id"], thread.as_str());
    assert_eq!(e["data"]["reason"], "pruned");
    // The thread's own socket is closed as before, without the event.
    let mut seen = Vec::new();
    let code = loop {
        match on_thread.next().await {
            crate::helpers::WsNext::Event(e) => seen.push(e["type"].clone()),
            crate::helpers::WsNext::Closed(code) => break code,
        }
    };
    assert_eq!(code, Some(4004));
    assert!(!seen.contains(&json!("thread.deleted")), "{seen:?}");
}

/// An agent's `/v1/sse` stream.
struct Sse(EventStream);

impl Sse {
    async fn open(app: &TestApp, aid: &str, last_id: Option<i64>) -> Sse {
        let url = app.url(&format!("/v1/sse?aid={aid}"));
        Sse(EventStream::open(&app.client, url, &app.key, last_id).await)
    }

    /// The next event with an `event:` line: (id, type, frame).
    async fn event(&mut self) -> (Option<i64>, String, Value) {
        let e = self.0.event().await;
        (e.id, e.kind, e.data)
    }

    /// The next event of type `kind`, skipping others (connection.ready).
    async fn event_of(&mut self, kind: &str) -> (Option<i64>, Value) {
        loop {
            let (id, k, frame) = self.event().await;
            if k == kind {
                return (id, frame);
            }
        }
    }
}

#[tokio::test]
async fn an_aid_stream_hears_the_deletion_with_an_id_and_a_resume_after_it_does_not_repeat_it() {
    let app = quiet_app(|_| {}).await;
    let mut sse = Sse::open(&app, &app.bob.aid, None).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "hello").await;
    let (message_id, _) = sse.event_of("thread.message").await;
    let message_id = message_id.expect("a message has an id");
    cli(&app, &["thread", "delete", &thread]);
    let (id, frame) = sse.event_of("thread.deleted").await;
    let id = id.expect("the deletion has an id");
    assert!(id > message_id);
    assert_eq!(frame["data"]["thread_id"], thread.as_str());
    drop(sse);

    // Resumed after the message: the deletion is replayed from the log,
    // with the same id (the message itself went with its thread).
    let mut replayed = Sse::open(&app, &app.bob.aid, Some(message_id)).await;
    let (again, frame) = replayed.event_of("thread.deleted").await;
    assert_eq!(again, Some(id));
    assert_eq!(frame["data"]["thread_id"], thread.as_str());
    drop(replayed);

    // Resumed after the deletion: the next event is a new one.
    let mut resumed = Sse::open(&app, &app.bob.aid, Some(id)).await;
    let next = app.thread_between(&app.alice, &app.bob).await;
    let (next_id, kind, frame) = loop {
        let (i, k, f) = resumed.event().await;
        if k != "connection.ready" {
            break (i, k, f);
        }
    };
    assert_eq!(kind, "thread.created", "{frame}");
    assert_eq!(frame["data"]["id"], next.as_str());
    assert!(next_id.unwrap() > id);
}

#[tokio::test]
async fn the_log_keeps_only_the_deleted_event_of_a_deleted_thread_and_retention_prunes_it() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "gone").await;
    cli(&app, &["thread", "delete", &thread]);
    let of_thread: Vec<_> = app
        .read_log()
        .into_iter()
        .filter(|e| e.thread_id == thread)
        .collect();
    assert_eq!(of_thread.len(), 1, "{of_thread:?}");
    let deleted = &of_thread[0];
    assert_eq!(deleted.kind.as_str(), "thread.deleted");
    assert_eq!(
        deleted.participants,
        [app.alice.aid.clone(), app.bob.aid.clone()]
    );
    let data: Value = serde_json::from_str(deleted.data.get()).unwrap();
    assert_eq!(data["thread_id"], thread.as_str());
    assert_eq!(data["reason"], "deleted");

    // A later event, then retention with a cutoff after both: only the
    // newest stays (it always does), and the deletion is gone.
    let later = app.thread_between(&app.alice, &app.bob).await;
    let (pruned, newest) = app.prune_log("2999-01-01T00:00:00.000Z");
    assert!(pruned >= 1);
    let log = app.read_log();
    assert!(log.iter().all(|e| e.thread_id != thread), "{log:?}");
    assert_eq!(log.last().unwrap().position, Some(newest));
    assert_eq!(log.last().unwrap().thread_id, later);
}

#[tokio::test]
async fn thread_deleted_is_an_event_type_endpoints_may_take_and_unknown_ones_are_still_refused() {
    let app = app_with_retries(1).await;
    for events in [json!(["thread.removed"]), json!(["thread.deleted", "nope"])] {
        let res = app
            .post_json(
                "/api/acsp/webhooks",
                &app.key,
                &json!({"url": "http://127.0.0.1:9/hook", "events": events}),
            )
            .await;
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], "events", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("thread.deleted"),
            "the message names the types: {body}"
        );
    }
    assert_eq!(app.db_count("SELECT COUNT(*) FROM webhooks"), 0);

    let res = app
        .post_json(
            "/api/acsp/webhooks",
            &app.key,
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["thread.deleted"]}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["webhook"]["events"], json!(["thread.deleted"]));

    // The command line's default list takes it too.
    let out = cli(
        &app,
        &[
            "webhook",
            "create",
            "--user",
            &app.user_id,
            "--url",
            "http://127.0.0.1:9/other",
            "--allow-private",
        ],
    );
    let text = out.to_string();
    assert!(text.contains("thread.deleted"), "{out}");
}

#[tokio::test]
async fn on_postgresql_every_nodes_inbox_sockets_hear_a_deletion_once() {
    if crate::helpers::pg::needs_postgres() {
        return;
    }
    let a = spawn_app().await;
    let b = a.another_node(|_| {}).await;
    let mut on_a = inbox(&a, &a.bob).await;
    let mut on_b = inbox(&b, &b.bob).await;
    let thread = a.thread_between(&a.alice, &a.bob).await;
    b.say(&b.alice, &thread, "from b").await;
    cli(&a, &["thread", "delete", &thread]);
    // Each socket hears the deletion, then (not the deletion again) a
    // thread made on b.
    for ws in [&mut on_a, &mut on_b] {
        let e = ws.event_of("thread.deleted").await;
        assert_eq!(e["data"]["thread_id"], thread.as_str());
    }
    let next = b.thread_between(&b.alice, &b.bob).await;
    for ws in [&mut on_a, &mut on_b] {
        let e = ws.event().await;
        assert_eq!(e["type"], "thread.created", "heard twice? {e}");
        assert_eq!(e["data"]["id"], next.as_str());
    }
}

#[tokio::test]
async fn the_real_server_tells_a_live_inbox_socket_of_a_deletion_made_by_the_command_line() {
    use crate::helpers::process::{provision, Server};
    // The `threadline serve` binary (its own runtime, not the test's), on a
    // SQLite file; the watcher's report must reach its writer there.
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let account = provision(&db);
    // As `quiet_app`: wait out the pruner's first pass.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "INSERT INTO events (kind, thread_id, seq, uuid, data, created_at)
         VALUES ('thread.status', 0, 0, 'old', '{}', '2000-01-01T00:00:00.000Z'),
                ('thread.status', 0, 0, 'new', '{}', '2999-01-01T00:00:00.000Z');",
    )
    .unwrap();
    let server = Server::start(dir.path(), &db, &[], "warn").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let old = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("SELECT COUNT(*) FROM events WHERE uuid = 'old'", [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    while old(&conn) != 0 {
        assert!(tokio::time::Instant::now() < deadline, "no pruner pass");
        tokio::time::sleep(POLL).await;
    }
    drop(conn);

    let post = |path: &str, body: Value| {
        server
            .api
            .client
            .post(server.api.url(path))
            .bearer_auth(&account.key)
            .json(&body)
            .send()
    };
    let (status, opened) = json_of(
        post("/api/acsp/realtime/open", json!({"aid": account.bob}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{opened}");
    let mut bob = Ws::connect(opened["realtime"]["connect_url"].as_str().unwrap()).await;
    assert_eq!(bob.event().await["type"], "connection.ready");
    let (status, created) = json_of(
        post(
            "/api/acsp/thread/create",
            json!({"aid": account.alice, "target_aid": account.bob}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let thread = created["thread"]["id"].as_str().unwrap().to_owned();
    assert_eq!(bob.event().await["type"], "thread.created");

    let out = run_cli(&["thread", "delete", &thread, "--db", db.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let e = bob.event().await;
    assert_eq!(e["type"], "thread.deleted", "{e}");
    assert_eq!(e["data"]["thread_id"], thread.as_str());
}
