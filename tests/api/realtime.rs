//! Realtime: open_thread, connect grants, the WebSocket event stream (ready,
//! fan-out, resume, slow subscribers, shutdown) and the agent inbox.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::MaybeTlsStream;

use crate::helpers::{
    assert_error, json_of, spawn_app, spawn_app_with, Agent, TestApp, Ws, WsNext, WAIT,
};

// ---------------------------------------------------------------- helpers

/// open_thread that must answer 200; returns the body.
async fn open_ok(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, body) = json_of(app.open_thread(key, body).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The `integrations` column of a thread, parsed, read straight from the database.
fn stored_integrations(app: &TestApp, thread_id: &str) -> Option<Value> {
    let text = app.db_text(&format!(
        "SELECT integrations FROM threads WHERE uuid = '{thread_id}'"
    ));
    text.map(|t| serde_json::from_str(&t).unwrap())
}

/// The `http://` form of a `ws://` connect URL (to see the refusal's body).
fn http_form(connect_url: &str) -> String {
    connect_url.replacen("ws://", "http://", 1)
}

/// A grant for an agent's inbox; returns (channel, connect url).
async fn inbox_grant(app: &TestApp, agent: &Agent) -> (String, String) {
    let res = app
        .post_json(
            "/api/acsp/realtime/open",
            &agent.key,
            &json!({"aid": agent.aid}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    (
        body["channel"].as_str().unwrap().to_owned(),
        body["realtime"]["connect_url"].as_str().unwrap().to_owned(),
    )
}

/// Connects and reads `connection.ready`, which must come first.
async fn subscribe(url: &str) -> (Ws, Value) {
    let mut ws = Ws::connect(url).await;
    let ready = ws.event().await;
    assert_eq!(ready["type"], "connection.ready", "first event: {ready}");
    (ws, ready)
}

/// Subscribes to a thread (a fresh grant from `key`), after `after` if given.
async fn subscribe_thread(
    app: &TestApp,
    key: &str,
    thread_id: &str,
    after: Option<i64>,
) -> (Ws, Value) {
    let (_, url) = app.grant_for(key, Some(thread_id)).await;
    let url = match after {
        Some(seq) => format!("{url}&after={seq}"),
        None => url,
    };
    subscribe(&url).await
}

/// The next `n` events, each of which must be a `thread.message`.
async fn messages(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let e = ws.event().await;
        assert_eq!(e["type"], "thread.message", "unexpected event: {e}");
        out.push(e);
    }
    out
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

/// Posts `n` messages to `thread_id` as `from`, one at a time.
async fn post_n(app: &TestApp, from: &Agent, thread_id: &str, label: &str, n: usize) {
    for i in 0..n {
        app.say(from, thread_id, &format!("{label} {i}")).await;
    }
}

/// A server whose quotas do not get in the way of bulk posting.
async fn unlimited_app() -> TestApp {
    spawn_app_with(|c| c.rate_limit_per_minute = 0).await
}

fn parse_time(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("not RFC 3339: {s} ({e})"))
        .with_timezone(&chrono::Utc)
}

// ---------------------------------------------------------------- open_thread

#[tokio::test]
async fn open_thread_without_an_id_creates_a_turn_taking_thread_and_a_grant() {
    let app = spawn_app().await;
    let before = chrono::Utc::now();
    let body = open_ok(&app, &app.key, json!({})).await;

    let id = body["thread"]["id"].as_str().unwrap();
    uuid::Uuid::parse_str(id).expect("thread id is a UUID");
    assert_eq!(body["thread"]["user_id"], app.user_id.as_str());
    assert!(body["thread"]["created_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(body["channel"], format!("turn-taking-thread/{id}"));
    let port = app.base.rsplit(':').next().unwrap();
    let url = body["realtime"]["connect_url"].as_str().unwrap();
    let prefix = format!("ws://127.0.0.1:{port}/v1/ws?c=");
    assert!(url.starts_with(&prefix), "{url}");
    assert!(url.len() >= prefix.len() + 22, "grant too short: {url}");
    let expires_at = body["realtime"]["expires_at"].as_str().unwrap();
    assert!(expires_at.ends_with('Z'), "{expires_at}");
    let ttl = parse_time(expires_at) - before;
    assert!(
        (29_000..=31_000).contains(&ttl.num_milliseconds()),
        "expires_at {expires_at} is not ~30 s ahead"
    );
    assert_eq!(app.stored_threads(), 1);

    // The thread is the account's, without agents.
    let (status, got) = json_of(app.get_thread(&app.key, id, "").await).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["thread"]["creator_aid"], Value::Null);
    assert_eq!(got["thread"]["target_aid"], Value::Null);
}

#[tokio::test]
async fn open_thread_with_an_empty_body_creates_a_thread() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/v1/turn-taking/actions/open_thread"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["thread"]["id"].is_string());
    assert_eq!(app.stored_threads(), 1);
}

#[tokio::test]
async fn open_thread_with_a_new_client_chosen_id_creates_that_thread() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4().to_string();
    let body = open_ok(&app, &app.key, json!({"thread_id": id})).await;
    assert_eq!(body["thread"]["id"], id.as_str());
    assert_eq!(body["channel"], format!("turn-taking-thread/{id}"));
    assert_eq!(app.stored_threads(), 1);
}

#[tokio::test]
async fn reopening_a_thread_issues_a_new_grant_and_creates_nothing() {
    let app = spawn_app().await;
    let first = open_ok(&app, &app.key, json!({})).await;
    let id = first["thread"]["id"].as_str().unwrap();
    let again = open_ok(&app, &app.key, json!({"thread_id": id})).await;
    assert_eq!(again["thread"]["id"], id);
    assert_eq!(again["thread"]["created_at"], first["thread"]["created_at"]);
    assert_ne!(
        again["realtime"]["connect_url"], first["realtime"]["connect_url"],
        "each open issues a fresh grant"
    );
    assert_eq!(app.stored_threads(), 1);

    // Both grants work (each once), and both lead to the same thread.
    for body in [&first, &again] {
        let (ws, ready) = subscribe(body["realtime"]["connect_url"].as_str().unwrap()).await;
        assert_eq!(ready["data"]["thread_id"], id);
        ws.close().await;
    }
}

#[tokio::test]
async fn an_acsp_thread_of_ones_own_agent_can_be_opened() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let own = app.thread_between(&app.alice, &app.bob).await;
    // A thread another account started with one of our agents counts too.
    let incoming = app.thread_between(&carol, &app.bob).await;
    for id in [&own, &incoming] {
        let body = open_ok(&app, &app.key, json!({"thread_id": id})).await;
        assert_eq!(body["thread"]["id"], id.as_str());
        assert_eq!(body["thread"]["user_id"], app.user_id.as_str());
        assert_eq!(body["channel"], format!("turn-taking-thread/{id}"));
    }
    assert_eq!(app.stored_threads(), 2);
}

#[tokio::test]
async fn integrations_are_stored_replaced_when_given_and_kept_when_omitted() {
    let app = spawn_app().await;
    let first = json!({"social_signals": {"channel_id": "c-1"}});
    let body = open_ok(&app, &app.key, json!({"integrations": first})).await;
    let id = body["thread"]["id"].as_str().unwrap().to_owned();
    assert_eq!(stored_integrations(&app, &id), Some(first.clone()));

    open_ok(&app, &app.key, json!({"thread_id": id})).await;
    assert_eq!(
        stored_integrations(&app, &id),
        Some(first),
        "kept when omitted"
    );

    let second = json!({"social_signals": {}});
    open_ok(
        &app,
        &app.key,
        json!({"thread_id": id, "integrations": second}),
    )
    .await;
    assert_eq!(
        stored_integrations(&app, &id),
        Some(second),
        "replaced when given"
    );

    // A new thread without integrations stores none.
    let body = open_ok(&app, &app.key, json!({})).await;
    assert_eq!(
        stored_integrations(&app, body["thread"]["id"].as_str().unwrap()),
        None
    );
}

#[tokio::test]
async fn malformed_open_thread_bodies_are_422_and_create_nothing() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"integrations": []}),
            "integrations",
            "integrations is an array",
        ),
        (
            json!({"integrations": "x"}),
            "integrations",
            "integrations is a string",
        ),
        (
            json!({"integrations": 5}),
            "integrations",
            "integrations is a number",
        ),
        (
            json!({"integrations": {"social_signals": 1}}),
            "integrations.social_signals",
            "social_signals is a number",
        ),
        (
            json!({"integrations": {"social_signals": []}}),
            "integrations.social_signals",
            "social_signals is an array",
        ),
        (
            json!({"integrations": {"social_signals": {"channel_id": 7}}}),
            "integrations.social_signals.channel_id",
            "channel_id is a number",
        ),
        (
            json!({"thread_id": "not-a-uuid"}),
            "thread_id",
            "thread_id is not a UUID",
        ),
        (json!({"thread_id": ""}), "thread_id", "thread_id is empty"),
        (
            json!({"thread_id": 42}),
            "thread_id",
            "thread_id is a number",
        ),
    ];
    for (body, field, why) in cases {
        let res = app.open_thread(&app.key, body).await;
        let err = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(err["error"]["field"], field, "{why}: {err}");
    }
    let res = app
        .client
        .post(app.url("/v1/turn-taking/actions/open_thread"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body("[1, 2]")
        .send()
        .await
        .unwrap();
    assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(app.stored_threads(), 0);
}

#[tokio::test]
async fn opening_someone_elses_thread_is_404_and_changes_nothing() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let signals = json!({"social_signals": {"channel_id": "mine"}});
    let body = open_ok(&app, &carol.key, json!({"integrations": signals})).await;
    let carols_turn_thread = body["thread"]["id"].as_str().unwrap().to_owned();
    let acsp = app.thread_between(&app.alice, &app.bob).await;

    let res = app
        .open_thread(
            &app.key,
            json!({"thread_id": carols_turn_thread, "integrations": {}}),
        )
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    assert_eq!(
        stored_integrations(&app, &carols_turn_thread),
        Some(signals)
    );

    let res = app
        .open_thread(&carol.key, json!({"thread_id": acsp}))
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    assert_eq!(app.stored_threads(), 2);
}

#[tokio::test]
async fn open_thread_without_a_valid_key_is_401() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/v1/turn-taking/actions/open_thread"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "UNAUTHORIZED").await;
    let bogus = format!("nk_{}", "A".repeat(43));
    let res = app.open_thread(&bogus, json!({})).await;
    assert_error(res, 401, "UNAUTHORIZED").await;
    assert_eq!(app.stored_threads(), 0);
}

#[tokio::test]
async fn connect_urls_follow_the_public_url() {
    let cases = [
        ("https://example.test", "wss://example.test/v1/ws?c="),
        ("https://example.test/", "wss://example.test/v1/ws?c="),
        (
            "http://chat.example.test:9000",
            "ws://chat.example.test:9000/v1/ws?c=",
        ),
    ];
    for (public, want) in cases {
        let app = spawn_app_with(|c| c.public_url = Some(public.into())).await;
        let body = open_ok(&app, &app.key, json!({})).await;
        let url = body["realtime"]["connect_url"].as_str().unwrap();
        assert!(url.starts_with(want), "--public-url {public}: {url}");
    }
}

// ---------------------------------------------------------------- grants

#[tokio::test]
async fn a_grant_works_once() {
    let app = spawn_app().await;
    let (_, url) = app.grant_for(&app.key, None).await;
    let (_ws, _) = subscribe(&url).await;

    // Plain HTTP shows the refusal's envelope.
    let res = app.client.get(http_form(&url)).send().await.unwrap();
    assert_error(res, 401, "UNAUTHORIZED").await;
    // And a WebSocket client is refused before the upgrade.
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 401)
        }
        other => panic!(
            "a used grant connected: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
}

#[tokio::test]
async fn a_request_that_is_not_a_handshake_does_not_use_up_the_grant() {
    let app = spawn_app().await;
    let (_, url) = app.grant_for(&app.key, None).await;
    let res = app.client.get(http_form(&url)).send().await.unwrap();
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("WebSocket"));
    // The same grant still connects.
    let (_ws, ready) = subscribe(&url).await;
    assert_eq!(ready["data"]["last_seq"], 0);
}

#[tokio::test]
async fn unknown_or_missing_grants_are_401() {
    let app = spawn_app().await;
    for path in ["/v1/ws?c=nonsense", "/v1/ws?c=", "/v1/ws"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
    let ws_url = format!(
        "{}/v1/ws?c=nonsense",
        app.base.replacen("http://", "ws://", 1)
    );
    match tokio_tungstenite::connect_async(&ws_url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 401)
        }
        other => panic!(
            "an unknown grant connected: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
}

#[tokio::test]
async fn an_expired_grant_is_401() {
    // The fresh grant below must connect within its lifetime: 3 s leaves
    // room for a loaded machine between minting and the handshake.
    let app = spawn_app_with(|c| c.grant_ttl_secs = 3).await;
    let body = open_ok(&app, &app.key, json!({})).await;
    let url = body["realtime"]["connect_url"].as_str().unwrap();
    // A grant used in time works.
    let (_, fresh) = app.grant_for(&app.key, None).await;
    subscribe(&fresh).await;
    let expires_at = parse_time(body["realtime"]["expires_at"].as_str().unwrap());
    // Waiting out the grant's lifetime is what this test is about.
    while chrono::Utc::now() <= expires_at + chrono::Duration::milliseconds(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = app.client.get(http_form(url)).send().await.unwrap();
    assert_error(res, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn a_bad_after_is_422_and_does_not_use_up_the_grant() {
    let app = spawn_app().await;
    let (_, url) = app.grant_for(&app.key, None).await;
    for after in ["-1", "x", "1.5"] {
        let res = app
            .client
            .get(format!("{}&after={after}", http_form(&url)))
            .send()
            .await
            .unwrap();
        let err = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(err["error"]["field"], "after", "after={after}: {err}");
    }
    subscribe(&url).await;
}

// ---------------------------------------------------------------- the stream

#[tokio::test]
async fn the_first_event_is_connection_ready_with_the_last_seq() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    post_n(&app, &app.alice, &thread, "before", 3).await;

    let (mut ws, ready) = subscribe_thread(&app, &app.key, &thread, None).await;
    assert_eq!(ready["channel"], format!("turn-taking-thread/{thread}"));
    assert_eq!(ready["data"]["thread_id"], thread.as_str());
    assert_eq!(ready["data"]["last_seq"], 3);
    assert!(ready["id"].is_string());

    // Frames the client sends are ignored; the stream goes on.
    ws.stream
        .send(WsMessage::Text("hello?".into()))
        .await
        .unwrap();
    ws.stream
        .send(WsMessage::Binary(vec![1, 2, 3]))
        .await
        .unwrap();
    let sent = app.say(&app.bob, &thread, "after").await;
    let e = ws.event().await;
    assert_eq!(e["type"], "thread.message", "{e}");
    assert_eq!(e["seq"], 4);
    assert_eq!(e["data"]["id"], sent["id"]);
}

#[tokio::test]
async fn a_message_committed_right_after_the_handshake_is_delivered() {
    let app = unlimited_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    // The handshake is all a client waits for; it may act at once, before
    // reading connection.ready. Repeated, since this is about a race.
    for i in 0..30 {
        let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
        let mut ws = Ws::connect(&url).await;
        app.say(&app.alice, &thread, &format!("m{i}")).await;
        let ready = ws.event().await;
        assert_eq!(ready["type"], "connection.ready", "{ready}");
        assert_eq!(ready["data"]["last_seq"], i, "round {i}");
        assert_eq!(seqs(&messages(&mut ws, 1).await), [i + 1], "round {i}");
    }
}

#[tokio::test]
async fn every_subscriber_gets_every_message_once_in_seq_order() {
    const SUBSCRIBERS: usize = 50;
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 50;
    const TOTAL: usize = WRITERS * PER_WRITER;

    let app = unlimited_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let channel = format!("turn-taking-thread/{thread}");
    let mut sockets = Vec::new();
    for _ in 0..SUBSCRIBERS {
        // `connection.ready` means the socket has joined the channel.
        let (ws, ready) = subscribe_thread(&app, &app.key, &thread, None).await;
        assert_eq!(ready["data"]["last_seq"], 0);
        sockets.push(ws);
    }
    // The readers start once every socket has joined: a reader waits for
    // each frame at most `WAIT`, and on a slow machine joining the other
    // sockets took longer than that, before any message was posted.
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { messages(&mut ws, TOTAL).await }))
        .collect();

    let writers = (0..WRITERS).map(|w| {
        let (app, thread) = (&app, &thread);
        async move {
            let from = if w % 2 == 0 { &app.alice } else { &app.bob };
            let mut sent = Vec::new();
            for i in 0..PER_WRITER {
                sent.push(app.say(from, thread, &format!("w{w} m{i}")).await);
            }
            sent
        }
    });
    let sent: Vec<Value> = join_all(writers).await.into_iter().flatten().collect();
    let mut by_seq: Vec<&Value> = sent.iter().collect();
    by_seq.sort_by_key(|m| m["seq"].as_i64().unwrap());
    assert_eq!(
        by_seq
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        (1..=TOTAL as i64).collect::<Vec<_>>(),
        "stored seqs are 1..N"
    );

    for reader in readers {
        let events = reader.await.expect("reader task");
        assert_eq!(seqs(&events), (1..=TOTAL as i64).collect::<Vec<_>>());
        for (e, m) in events.iter().zip(&by_seq) {
            assert_eq!(e["id"], m["id"], "event id is the message id");
            assert_eq!(e["channel"], channel.as_str());
            assert_eq!(e["data"]["id"], m["id"]);
            assert_eq!(e["data"]["seq"], e["seq"]);
            assert_eq!(e["data"]["content"], m["content"]);
            assert_eq!(e["data"]["sender_aid"], m["sender_aid"]);
            let name = if m["sender_aid"] == app.alice.aid.as_str() {
                "alice"
            } else {
                "bob"
            };
            assert_eq!(e["data"]["sender_name"], name, "{e}");
        }
    }
}

#[tokio::test]
async fn resuming_with_after_replays_exactly_the_missed_messages_then_goes_live() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (mut ws, _) = subscribe_thread(&app, &app.key, &thread, None).await;
    post_n(&app, &app.alice, &thread, "first", 5).await;
    let seen = messages(&mut ws, 5).await;
    assert_eq!(seqs(&seen), [1, 2, 3, 4, 5]);
    ws.close().await;

    post_n(&app, &app.bob, &thread, "missed", 4).await;
    // The client says it has 1..=3: it gets 4..=9 replayed, then live ones.
    let (mut ws, ready) = subscribe_thread(&app, &app.key, &thread, Some(3)).await;
    assert_eq!(ready["data"]["last_seq"], 9);
    let replayed = messages(&mut ws, 6).await;
    assert_eq!(seqs(&replayed), [4, 5, 6, 7, 8, 9]);
    // A replayed event carries the same id as when it was sent live.
    assert_eq!(replayed[0]["id"], seen[3]["id"]);
    assert_eq!(replayed[1]["id"], seen[4]["id"]);
    assert_eq!(replayed[2]["data"]["content"], "missed 0");
    assert_eq!(replayed[2]["data"]["sender_name"], "bob");

    post_n(&app, &app.alice, &thread, "live", 3).await;
    let live = messages(&mut ws, 3).await;
    assert_eq!(seqs(&live), [10, 11, 12]);
    assert_eq!(live[0]["data"]["content"], "live 0");

    // `after` at or past the end: nothing replayed, live only.
    let (mut ws, ready) = subscribe_thread(&app, &app.key, &thread, Some(12)).await;
    assert_eq!(ready["data"]["last_seq"], 12);
    app.say(&app.bob, &thread, "next").await;
    assert_eq!(seqs(&messages(&mut ws, 1).await), [13]);
}

#[tokio::test]
async fn a_resume_from_beyond_the_last_seq_hears_every_message_that_follows() {
    // What a client that followed a server past a backup's moment asks of
    // the restored server: `after` beyond the thread's last seq. Every
    // message committed after it joined is sent, from the thread's last seq
    // on (the contract: a subscriber sees every message committed after it
    // connected); `last_seq` below its `after` tells it the rest is gone.
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    post_n(&app, &app.alice, &thread, "kept", 3).await;
    let (mut ws, ready) = subscribe_thread(&app, &app.key, &thread, Some(7)).await;
    assert_eq!(ready["data"]["last_seq"], 3);
    post_n(&app, &app.bob, &thread, "new", 5).await;
    let live = messages(&mut ws, 5).await;
    assert_eq!(seqs(&live), [4, 5, 6, 7, 8]);
    assert_eq!(live[0]["data"]["content"], "new 0");
}

#[tokio::test]
async fn frames_far_larger_than_an_idle_sockets_buffers_arrive_intact_then_small_ones_follow() {
    // An upgraded connection writes through a buffer of ~1 KiB, released
    // after a larger write (vendor/actix-http/PATCHES.md): 8 KiB frames,
    // replayed together in chunks of up to 64 KiB or sent live, and the
    // small frames after them must all arrive whole and in order.
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let big = |i: usize| format!("{i}{}", "😀".repeat(2040));
    for i in 0..12 {
        app.say(&app.alice, &thread, &big(i)).await;
    }
    let (mut ws, ready) = subscribe_thread(&app, &app.key, &thread, Some(0)).await;
    assert_eq!(ready["data"]["last_seq"], 12);
    let replayed = messages(&mut ws, 12).await;
    assert_eq!(seqs(&replayed), (1..=12).collect::<Vec<_>>());
    for (i, m) in replayed.iter().enumerate() {
        assert_eq!(m["data"]["content"], big(i), "replayed message {i}");
    }

    app.say(&app.bob, &thread, "small").await;
    app.say(&app.alice, &thread, &big(99)).await;
    app.say(&app.bob, &thread, "small again").await;
    let live = messages(&mut ws, 3).await;
    assert_eq!(seqs(&live), [13, 14, 15]);
    assert_eq!(live[0]["data"]["content"], "small");
    assert_eq!(live[1]["data"]["content"], big(99));
    assert_eq!(live[2]["data"]["content"], "small again");
}

#[tokio::test]
async fn resuming_while_messages_keep_coming_has_no_gap_and_no_duplicate() {
    const RECONNECTS: usize = 12;
    let app = unlimited_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (first, _) = subscribe_thread(&app, &app.key, &thread, None).await;
    let stop = AtomicBool::new(false);
    let (total_tx, total_rx) = tokio::sync::oneshot::channel::<i64>();

    // Two posters, so that commits land while a replay is being read.
    let poster = |from: &'static str| {
        let (app, thread, stop) = (&app, &thread, &stop);
        async move {
            let agent = if from == "alice" {
                &app.alice
            } else {
                &app.bob
            };
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                app.say(agent, thread, &format!("{from} {n}")).await;
                n += 1;
            }
            n
        }
    };
    let posting = async {
        let (a, b) = tokio::join!(poster("alice"), poster("bob"));
        total_tx.send(a + b).unwrap();
    };
    let reader = async {
        let mut ws = first;
        let mut seen: Vec<i64> = Vec::new();
        for _ in 0..RECONNECTS {
            let want = seen.len() + 10;
            while seen.len() < want {
                seen.extend(seqs(&messages(&mut ws, 1).await));
            }
            ws.close().await;
            // Reconnect while the posters keep going.
            let last = *seen.last().unwrap();
            let (next, ready) = subscribe_thread(&app, &app.key, &thread, Some(last)).await;
            assert!(ready["data"]["last_seq"].as_i64().unwrap() >= last);
            ws = next;
        }
        let want = seen.len() + 10;
        while seen.len() < want {
            seen.extend(seqs(&messages(&mut ws, 1).await));
        }
        stop.store(true, Ordering::SeqCst);
        let total = total_rx.await.unwrap();
        while *seen.last().unwrap() < total {
            seen.extend(seqs(&messages(&mut ws, 1).await));
        }
        (seen, total)
    };
    let ((), (seen, total)) = tokio::join!(posting, reader);
    // Every seam continued at last + 1: the whole is exactly 1..=total.
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
}

// The normal subscriber reads on its own thread, so the poster cannot starve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_closed_with_4008_and_slows_nobody() {
    // The queue is the slack the *normal* subscriber has against the
    // server's own scheduling: when the thread that writes its socket (or
    // the channel's actor) is held off the CPU while posts go on, frames
    // pile up in its queue as if it were slow. With 16 slots (128 KB) a
    // busy machine cut the normal subscriber off with 4008; 256 slots (2 MB)
    // absorb such pauses, and the stalled socket still overflows because
    // `posts` counts the queue too.
    const QUEUE: usize = 256;
    let posts = posts_to_stall_a_socket(QUEUE);
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.ws_queue = QUEUE;
        // Pings every second queue up behind the stalled socket's frames,
        // and the read-back below answers each with a pong, sent while the
        // server's 4008 is still on its way: the server reads them (a
        // lingering close) instead of resetting the connection on them,
        // which would discard the 4008 before the client reads it.
        c.ws_ping_secs = 1;
        // Never dropped for silence, however long the posts take on a slow
        // machine: a client that does not read answers no ping, and its
        // 1008 would then replace the 4008 this test is about.
        c.ws_timeout_secs = 3600;
    })
    .await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let mut stalled = stalled_socket(&app, &thread).await;
    let (mut normal, _) = subscribe_thread(&app, &app.key, &thread, None).await;

    // 2000 four-byte characters: 8 KB a frame, within the 2048-char limit.
    let big = "\u{1D11E}".repeat(2000);
    let reader = tokio::spawn(async move { seqs(&messages(&mut normal, posts).await) });
    for i in 0..posts {
        app.say(&app.alice, &thread, &format!("{i} {big}")).await;
    }
    let got = reader.await.expect("normal reader");
    assert_eq!(
        got,
        (1..=posts as i64).collect::<Vec<_>>(),
        "the normal subscriber"
    );

    // Now read the stalled socket: a gap-free prefix, then 4008.
    let mut prefix = Vec::new();
    let code = loop {
        match stalled.next().await {
            WsNext::Event(e) => prefix.push(e["seq"].as_i64().unwrap()),
            WsNext::Closed(code) => break code,
        }
    };
    assert_eq!(code, Some(4008), "after {} messages", prefix.len());
    let k = prefix.len() as i64;
    assert!(k < posts as i64, "the stalled socket was never cut off");
    assert_eq!(
        prefix,
        (1..=k).collect::<Vec<_>>(),
        "nothing dropped silently"
    );

    // It resumes where it stopped.
    let (mut resumed, _) = subscribe_thread(&app, &app.key, &thread, Some(k)).await;
    let rest = seqs(&messages(&mut resumed, posts - k as usize).await);
    assert_eq!(rest, (k + 1..=posts as i64).collect::<Vec<_>>());
}

/// How many 8 KB messages surely overflow everything between the server and
/// a client that does not read: the kernel's send buffer (autotuned up to
/// `tcp_wmem`'s maximum), the client's receive buffer and the socket's queue
/// of `queue` frames.
fn posts_to_stall_a_socket(queue: usize) -> usize {
    let wmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    ((wmem_max + (2 << 20)) / 8000 + queue).clamp(500, 3500)
}

/// A thread subscriber with a tiny receive buffer that, once it has read
/// `connection.ready` (so it has joined), the test does not read until it
/// chooses to, so the server's writes back up.
async fn stalled_socket(app: &TestApp, thread_id: &str) -> Ws {
    let (_, url) = app.grant_for(&app.key, Some(thread_id)).await;
    let addr = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let (stream, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
        .await
        .expect("ws handshake");
    let mut ws = Ws { stream };
    let ready = ws.event().await;
    assert_eq!(ready["type"], "connection.ready", "{ready}");
    assert_eq!(ready["data"]["last_seq"], 0);
    ws
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed_and_one_that_answers_is_not() {
    let app = spawn_app_with(|c| {
        c.ws_ping_secs = 1;
        c.ws_timeout_secs = 2;
    })
    .await;
    let quiet_thread = app.thread_between(&app.alice, &app.bob).await;
    let live_thread = app.thread_between(&app.alice, &app.bob).await;
    // Not read from now on, so its pings go unanswered.
    let (mut quiet, _) = subscribe_thread(&app, &app.key, &quiet_thread, None).await;
    let (mut live, _) = subscribe_thread(&app, &app.key, &live_thread, None).await;
    // Reading answers pings (tungstenite pongs as it reads).
    let reader = tokio::spawn(async move {
        let event = live.event_of("thread.message").await;
        (live, event)
    });

    // The quiet socket's session ends (its channel's actor with it) after
    // the timeout, a few pings in.
    app.wait_for_live_actors(1).await;
    let code = loop {
        if let WsNext::Closed(code) = quiet.next().await {
            break code;
        }
    };
    assert_eq!(code, Some(1008), "closed for not answering pings");

    app.say(&app.alice, &live_thread, "still there?").await;
    let (_live, event) = reader.await.expect("reader task");
    assert_eq!(event["data"]["content"], "still there?");
}

#[tokio::test]
async fn sockets_joining_a_new_channel_at_once_share_one_actor() {
    let app = unlimited_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let mut urls = Vec::new();
    for _ in 0..20 {
        urls.push(app.grant_for(&app.key, Some(&thread)).await.1);
    }
    let mut sockets: Vec<Ws> = join_all(urls.iter().map(|u| subscribe(u)))
        .await
        .into_iter()
        .map(|(ws, _)| ws)
        .collect();
    app.wait_for_live_actors(1).await;
    app.say(&app.alice, &thread, "to all").await;
    for ws in &mut sockets {
        assert_eq!(seqs(&messages(ws, 1).await), [1]);
    }
}

/// A channel's sockets are served by one actor per worker (the test server
/// has two, and accepted connections go to them in turn): every socket,
/// whichever worker it is on, gets every message of a burst once, in order,
/// and the channel counts as one live channel.
#[tokio::test]
async fn every_socket_of_a_channel_gets_every_message_in_order_whatever_its_worker() {
    let app = unlimited_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let mut sockets = Vec::new();
    for _ in 0..12 {
        sockets.push(subscribe_thread(&app, &app.key, &thread, None).await.0);
    }
    app.wait_for_live_actors(1).await;
    for i in 1..=15 {
        app.say(&app.alice, &thread, &format!("m{i}")).await;
    }
    let want: Vec<i64> = (1..=15).collect();
    for ws in &mut sockets {
        assert_eq!(seqs(&messages(ws, 15).await), want);
    }
}

#[tokio::test]
async fn a_socket_joining_while_the_channels_actor_stops_misses_nothing() {
    let app = unlimited_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let mut previous: Option<Ws> = None;
    for i in 0..30 {
        let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
        // The last socket leaves as the next one joins: the actor may be
        // on its way out when the join reaches it.
        let ((mut ws, ready), ()) = tokio::join!(subscribe(&url), async {
            drop(previous.take());
        });
        assert_eq!(ready["data"]["last_seq"], i);
        app.say(&app.alice, &thread, &format!("m{i}")).await;
        assert_eq!(seqs(&messages(&mut ws, 1).await), [i + 1]);
        previous = Some(ws);
    }
    drop(previous);
    app.wait_for_live_actors(0).await;
}

#[tokio::test]
async fn actors_stop_when_their_last_socket_closes() {
    let app = spawn_app().await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let thread = app.thread_between(&app.alice, &app.bob).await;
        for _ in 0..4 {
            sockets.push(subscribe_thread(&app, &app.key, &thread, None).await.0);
        }
    }
    let (_, url) = inbox_grant(&app, &app.bob).await;
    sockets.push(subscribe(&url).await.0);
    app.wait_for_live_actors(4).await;

    // Half close politely, half just drop the connection.
    for (i, ws) in sockets.into_iter().enumerate() {
        if i % 2 == 0 {
            ws.close().await;
        } else {
            drop(ws);
        }
    }
    app.wait_for_live_actors(0).await;

    // A channel whose actor stopped works again.
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (mut ws, _) = subscribe_thread(&app, &app.key, &thread, None).await;
    app.wait_for_live_actors(1).await;
    app.say(&app.alice, &thread, "hi").await;
    assert_eq!(seqs(&messages(&mut ws, 1).await), [1]);
}

#[tokio::test]
async fn status_changes_arrive_on_the_thread_channel() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (mut ws, _) = subscribe_thread(&app, &app.key, &thread, None).await;

    let mut expect = Vec::new();
    for status in ["closed", "closed", "active"] {
        let res = app
            .set_status(
                &app.key,
                json!({"aid": app.alice.aid, "thread_id": thread, "status": status}),
            )
            .await;
        let (code, body) = json_of(res).await;
        assert_eq!(code, 200, "{body}");
        expect.push((status, body["updated_at"].clone()));
    }
    // Setting the current status again is a no-op: no event for it.
    expect.remove(1);
    for (status, updated_at) in expect {
        let e = ws.event().await;
        assert_eq!(e["type"], "thread.status", "{e}");
        assert_eq!(e["channel"], format!("turn-taking-thread/{thread}"));
        assert_eq!(
            e["data"],
            json!({"thread_id": thread, "status": status, "updated_at": updated_at})
        );
    }
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (mut on_thread, _) = subscribe_thread(&app, &app.key, &thread, None).await;
    let (_, url) = inbox_grant(&app, &app.alice).await;
    let (mut inbox, _) = subscribe(&url).await;

    let shutdown = app.shutdown.clone();
    let stopping = tokio::spawn(async move { shutdown.shutdown().await });
    for ws in [&mut on_thread, &mut inbox] {
        match ws.next().await {
            WsNext::Closed(code) => assert_eq!(code, Some(1001)),
            WsNext::Event(e) => panic!("expected a close, got {e}"),
        }
    }
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("shutdown finishes")
        .unwrap();
}

// ---------------------------------------------------------------- inbox

#[tokio::test]
async fn an_agents_inbox_streams_its_threads_events() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let (channel, url) = inbox_grant(&app, &app.bob).await;
    assert_eq!(channel, format!("agent/{}", app.bob.aid));
    let (mut bob, ready) = subscribe(&url).await;
    assert_eq!(ready["channel"], channel.as_str());
    let (_, url) = inbox_grant(&app, &app.alice).await;
    let (mut alice, _) = subscribe(&url).await;

    // Another account starts a thread with bob, with a first message.
    let res = app
        .create_thread(
            &carol.key,
            json!({"aid": carol.aid, "target_aid": app.bob.aid, "subject": "hello bob",
                   "first_message": "are you there?"}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let thread = body["thread"]["id"].as_str().unwrap().to_owned();

    let created = bob.event().await;
    assert_eq!(created["type"], "thread.created", "{created}");
    assert_eq!(created["channel"], channel.as_str());
    assert_eq!(created["data"]["id"], thread.as_str());
    assert_eq!(created["data"]["creator_aid"], carol.aid.as_str());
    assert_eq!(created["data"]["target_aid"], app.bob.aid.as_str());
    assert_eq!(created["data"]["subject"], "hello bob");
    let first = bob.event().await;
    assert_eq!(first["type"], "thread.message", "{first}");
    assert_eq!(first["seq"], 1);
    assert_eq!(first["data"]["content"], "are you there?");
    assert_eq!(first["data"]["sender_name"], "carol");
    assert_eq!(first["data"]["thread_id"], thread.as_str());

    app.say(&app.bob, &thread, "yes").await;
    let reply = bob.event().await;
    assert_eq!(reply["type"], "thread.message", "{reply}");
    assert_eq!(reply["seq"], 2);
    assert_eq!(reply["data"]["sender_name"], "bob");

    let res = app
        .set_status(
            &carol.key,
            json!({"aid": carol.aid, "thread_id": thread, "status": "archived"}),
        )
        .await;
    let (code, body) = json_of(res).await;
    assert_eq!(code, 200, "{body}");
    let status = bob.event().await;
    assert_eq!(status["type"], "thread.status", "{status}");
    assert_eq!(
        status["data"],
        json!({"thread_id": thread, "status": "archived", "updated_at": body["updated_at"]})
    );

    // Alice (same account, not in that thread) saw none of it: her next
    // event is about her own new thread.
    let own = app.thread_between(&app.alice, &carol).await;
    let e = alice.event().await;
    assert_eq!(e["type"], "thread.created", "{e}");
    assert_eq!(e["data"]["id"], own.as_str());
}

#[tokio::test]
async fn an_inbox_needs_an_agent_the_key_owns() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let res = app
        .post_json(
            "/api/acsp/realtime/open",
            &carol.key,
            &json!({"aid": app.bob.aid}),
        )
        .await;
    assert_error(res, 403, "FORBIDDEN").await;
    let res = app
        .post_json("/api/acsp/realtime/open", &carol.key, &json!({}))
        .await;
    let err = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(err["error"]["field"], "aid");
    let res = app
        .post_json(
            "/api/acsp/realtime/open",
            &carol.key,
            &json!({"aid": "nope"}),
        )
        .await;
    let err = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(err["error"]["field"], "aid");
    let res = app
        .client
        .post(app.url("/api/acsp/realtime/open"))
        .json(&json!({"aid": app.bob.aid}))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn pings_get_pongs_and_a_client_close_is_answered_and_leaves_the_channel() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (mut ws, _) = subscribe_thread(&app, &app.key, &thread, None).await;
    app.wait_for_live_actors(1).await;

    ws.stream
        .send(WsMessage::Ping(b"are you there".to_vec()))
        .await
        .unwrap();
    let pong = loop {
        let msg = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws.stream))
            .await
            .expect("a pong in time");
        match msg {
            Some(Ok(WsMessage::Pong(payload))) => break payload,
            Some(Ok(WsMessage::Ping(_))) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    };
    assert_eq!(&pong[..], b"are you there");

    ws.stream
        .send(WsMessage::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: 1000.into(),
                reason: "bye".into(),
            },
        )))
        .await
        .unwrap();
    match ws.next().await {
        WsNext::Closed(code) => assert_eq!(code, Some(1000)),
        WsNext::Event(e) => panic!("expected the close answered, got {e}"),
    }
    app.wait_for_live_actors(0).await;
}
