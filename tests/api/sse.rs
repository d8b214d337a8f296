//! Server-sent events (`GET /v1/sse`): live delivery, resume from
//! `Last-Event-ID` across a reconnect with no gap and no duplicate, the
//! heartbeat, grant reuse refused, and who may open which stream. Read with
//! a plain streaming HTTP client.

use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, TestApp, WAIT};

/// One item of the stream: an event, or a comment line.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Event {
        id: Option<i64>,
        kind: String,
        data: Value,
    },
    Comment(String),
}

/// A `text/event-stream` response read chunk by chunk.
struct Sse {
    res: Response,
    buf: String,
}

impl Sse {
    async fn open(app: &TestApp, query: &str, key: Option<&str>, last_id: Option<i64>) -> Sse {
        let mut req = app.client.get(app.url(&format!("/v1/sse?{query}")));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), 200, "stream refused");
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let mut sse = Sse {
            res,
            buf: String::new(),
        };
        // Every stream starts with the socket's `connection.ready` (round
        // 25), without an id; the tests here read what follows it.
        match sse.item().await {
            Item::Event { id: None, kind, .. } if kind == "connection.ready" => {}
            other => panic!("the stream did not start with connection.ready: {other:?}"),
        }
        sse
    }

    /// The next item (skipping the `retry:` hint), within `WAIT`.
    async fn item(&mut self) -> Item {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(item) = parse(&block) {
                    return item;
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.res.chunk())
                .await
                .expect("timed out waiting for the stream")
                .expect("stream read")
                .expect("the stream ended");
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// The next event, skipping comments.
    async fn event(&mut self) -> (Option<i64>, String, Value) {
        loop {
            if let Item::Event { id, kind, data } = self.item().await {
                return (id, kind, data);
            }
        }
    }
}

fn parse(block: &str) -> Option<Item> {
    let (mut id, mut kind, mut data) = (None, None, None);
    for line in block.lines() {
        if let Some(c) = line.strip_prefix(':') {
            return Some(Item::Comment(c.trim().to_owned()));
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse().expect("numeric id"));
        } else if let Some(v) = line.strip_prefix("event: ") {
            kind = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(serde_json::from_str(v).expect("JSON data"));
        }
    }
    Some(Item::Event {
        id,
        kind: kind?,
        data: data?,
    })
}

/// A grant's `c=` token for a new turn-taking thread.
async fn thread_grant(app: &TestApp) -> (String, String) {
    let (thread, url) = app.grant_for(&app.key, None).await;
    let token = url.split("c=").nth(1).expect("c= in url").to_owned();
    (thread, token)
}

#[tokio::test]
async fn a_thread_stream_delivers_messages_live_with_positions_as_ids() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let mut sse = Sse::open(&app, &format!("thread_id={thread}"), Some(&app.key), None).await;
    let m1 = app.say(&app.alice, &thread, "one").await;
    let m2 = app.say(&app.bob, &thread, "two").await;
    let (id1, kind, frame1) = sse.event().await;
    assert_eq!(kind, "thread.message");
    assert_eq!(frame1["type"], "thread.message");
    assert_eq!(frame1["channel"], format!("turn-taking-thread/{thread}"));
    assert_eq!(frame1["data"], m1, "the same object the API returned");
    let (id2, _, frame2) = sse.event().await;
    assert_eq!(frame2["data"], m2);
    assert!(id1.unwrap() < id2.unwrap(), "ids are increasing positions");
}

#[tokio::test]
async fn a_turn_taking_stream_carries_typing_after_the_message_even_from_another_node() {
    let app = spawn_app_with(|c| c.pace_scale = 50.0).await;
    // On PostgreSQL the writes go through a second node; on SQLite, the one.
    let other = match app.db.database_url {
        Some(_) => Some(app.another_node(|c| c.pace_scale = 50.0).await),
        None => None,
    };
    let writer = other.as_ref().unwrap_or(&app);
    let (thread, _) = app.grant_for(&app.key, None).await;
    let mut sse = Sse::open(&app, &format!("thread_id={thread}"), Some(&app.key), None).await;
    let post = |name: &str, body: Value| {
        let path = format!("/v1/turn-taking/actions/{name}");
        async move {
            let (status, answer) =
                crate::helpers::json_of(writer.post_json(&path, &writer.key, &body).await).await;
            assert_eq!(status, 200, "{answer}");
            answer
        }
    };
    let messages = json!([{"sender": "dana", "content": "How did Q1 go?"}]);
    let first = post(
        "submit_messages",
        json!({"thread_id": thread, "messages": messages}),
    )
    .await;
    let reply = "Revenue is up four percent on the quarter, mostly from the new region. \
                 Costs are flat, which is better than the plan expected.";
    let body = json!({"thread_id": thread, "content": reply, "turn_epoch": first["turn_epoch"]});
    post("respond", body).await;
    let (id, kind, frame) = sse.event().await;
    assert_eq!(kind, "thread.message");
    assert!(id.is_some(), "a logged event has a position");
    assert_eq!(frame["seq"], 1);
    let (id, kind, frame) = sse.event().await;
    assert_eq!(kind, "turn_taking.typing", "{frame}");
    assert_eq!(id, None, "a signal has no position");
    assert_eq!(
        frame["data"],
        json!({"state": "start", "turn_epoch": first["turn_epoch"]})
    );
}

/// A stream that joins a turn-taking thread while a reply part is pending
/// is told the agent is typing, after its replay, as a WebSocket is: it
/// heard nothing until the next part. A signal, so without an `id:`. One
/// that joins when nothing is pending is told nothing.
#[tokio::test]
async fn a_stream_that_joins_while_the_agent_is_typing_is_told_at_once() {
    // Parts paced minutes apart: the reply stays pending.
    let app = spawn_app_with(|c| c.pace_scale = 100.0).await;
    let (thread, _) = app.grant_for(&app.key, None).await;
    let post = |name: &str, body: Value| {
        let path = format!("/v1/turn-taking/actions/{name}");
        let app = &app;
        async move {
            let (status, answer) =
                crate::helpers::json_of(app.post_json(&path, &app.key, &body).await).await;
            assert_eq!(status, 200, "{answer}");
            answer
        }
    };
    let submit = |content: &'static str| {
        let body =
            json!({"thread_id": thread, "messages": [{"sender": "dana", "content": content}]});
        post("submit_messages", body)
    };
    let epoch = submit("How did Q1 go?").await["turn_epoch"].clone();
    let reply = "Revenue is up four percent on the quarter, mostly from the new region. \
                 Costs are flat, which is better than the plan expected. \
                 Hiring is on track for the second half.";
    let body = json!({"thread_id": thread, "content": reply, "turn_epoch": epoch});
    post("respond", body).await;

    let mut joined = Sse::open(&app, &format!("thread_id={thread}"), Some(&app.key), None).await;
    let (id, kind, frame) = joined.event().await;
    assert_eq!(kind, "turn_taking.typing", "{frame}");
    assert_eq!(id, None, "a signal has no position");
    assert_eq!(
        frame["data"],
        json!({"state": "start", "turn_epoch": epoch})
    );
    assert_eq!(frame["channel"], format!("turn-taking-thread/{thread}"));

    // A resume replays the log first, then says so.
    let query = format!("thread_id={thread}&after_position=0");
    let mut resumed = Sse::open(&app, &query, Some(&app.key), None).await;
    let mut replayed = Vec::new();
    let typing = loop {
        let (id, kind, frame) = resumed.event().await;
        match id {
            Some(_) => replayed.push(kind),
            None => break (kind, frame),
        }
    };
    assert!(
        replayed.first().is_some_and(|k| k == "thread.message"),
        "{replayed:?}"
    );
    assert_eq!(typing.0, "turn_taking.typing", "{}", typing.1);
    assert_eq!(typing.1["data"]["state"], "start");

    // A new turn cancels the reply: typing stops on both streams.
    submit("Never mind, what about Q2?").await;
    for sse in [&mut joined, &mut resumed] {
        let stop = loop {
            let (_, kind, frame) = sse.event().await;
            if kind == "turn_taking.typing" {
                break frame;
            }
        };
        assert_eq!(stop["data"]["state"], "stop", "{stop}");
    }
    // Nothing pending: a stream that joins now hears no indicator; the
    // next event is the next message.
    let mut idle = Sse::open(&app, &format!("thread_id={thread}"), Some(&app.key), None).await;
    submit("Still there?").await;
    let (id, kind, frame) = idle.event().await;
    assert_eq!(kind, "thread.message", "{frame}");
    assert!(id.is_some());
}

#[tokio::test]
async fn an_inbox_stream_hears_thread_creation_and_messages() {
    let app = spawn_app().await;
    let mut sse = Sse::open(&app, &format!("aid={}", app.bob.aid), Some(&app.key), None).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "hello bob").await;
    let (_, kind, frame) = sse.event().await;
    assert_eq!(kind, "thread.created");
    assert_eq!(frame["data"]["id"], thread.as_str());
    let (_, kind, frame) = sse.event().await;
    assert_eq!(kind, "thread.message");
    assert_eq!(frame["data"]["content"], "hello bob");
}

#[tokio::test]
async fn resuming_with_last_event_id_misses_nothing_and_repeats_nothing() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let mut sse = Sse::open(&app, &format!("thread_id={thread}"), Some(&app.key), None).await;
    for i in 0..3 {
        app.say(&app.alice, &thread, &format!("m{i}")).await;
    }
    let mut last = 0;
    for _ in 0..3 {
        last = sse.event().await.0.unwrap();
    }
    drop(sse);
    // Posted while disconnected (some in another thread, which must not
    // leak into this stream), then more while the new stream replays.
    let other = app.thread_between(&app.bob, &app.alice).await;
    for i in 3..8 {
        app.say(&app.alice, &thread, &format!("m{i}")).await;
        app.say(&app.bob, &other, "elsewhere").await;
    }
    let mut sse = Sse::open(
        &app,
        &format!("thread_id={thread}"),
        Some(&app.key),
        Some(last),
    )
    .await;
    let poster = {
        let (client, url, key, aid, thread) = (
            app.client.clone(),
            app.url("/api/acsp/thread/message"),
            app.key.clone(),
            app.alice.aid.clone(),
            thread.clone(),
        );
        tokio::spawn(async move {
            for i in 8..20 {
                let body = json!({"aid": aid, "thread_id": thread, "content": format!("m{i}")});
                let res = client.post(&url).bearer_auth(&key).json(&body).send().await;
                assert_eq!(res.unwrap().status(), 201);
            }
        })
    };
    let mut ids = Vec::new();
    for i in 3..20 {
        let (id, kind, frame) = sse.event().await;
        assert_eq!(kind, "thread.message");
        assert_eq!(
            frame["data"]["content"],
            format!("m{i}"),
            "in order, no gap"
        );
        ids.push(id.unwrap());
    }
    poster.await.unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "no duplicate: {ids:?}");
    assert!(ids[0] > last);
}

#[tokio::test]
async fn resuming_from_a_pruned_position_starts_with_a_reset_event() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    for i in 0..3 {
        app.say(&app.alice, &thread, &format!("m{i}")).await;
    }
    // The server's own retention pass, with a cutoff that makes every event
    // old enough: it removes all but the newest (position m2).
    let (pruned, newest) = app.prune_log("9999-01-01T00:00:00.000Z");
    assert_eq!(pruned as i64, newest - 1, "all but the newest went");

    let query = format!("thread_id={thread}");
    let mut sse = Sse::open(&app, &query, Some(&app.key), Some(1)).await;
    let (id, kind, data) = sse.event().await;
    assert_eq!(kind, "reset", "the gap is announced first");
    assert_eq!(id, None, "a reset does not move Last-Event-ID");
    assert_eq!(data["after_position"], 1);
    assert_eq!(data["oldest_position"], newest);
    let (id, kind, frame) = sse.event().await;
    assert_eq!((id, kind.as_str()), (Some(newest), "thread.message"));
    assert_eq!(
        frame["data"]["content"], "m2",
        "then what is left is replayed"
    );

    // Resuming from just before the oldest position left misses nothing: no reset.
    let mut sse = Sse::open(&app, &query, Some(&app.key), Some(newest - 1)).await;
    let (id, kind, _) = sse.event().await;
    assert_eq!((id, kind.as_str()), (Some(newest), "thread.message"));
}

#[tokio::test]
async fn after_position_in_the_url_resumes_too() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "before").await;
    let mut sse = Sse::open(
        &app,
        &format!("thread_id={thread}&after_position=0"),
        Some(&app.key),
        None,
    )
    .await;
    let (_, kind, frame) = sse.event().await;
    assert_eq!(kind, "thread.message");
    assert_eq!(frame["data"]["content"], "before");
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeat_comments() {
    let app = spawn_app_with(|c| c.sse_heartbeat_secs = 1).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let mut sse = Sse::open(&app, &format!("thread_id={thread}"), Some(&app.key), None).await;
    assert_eq!(sse.item().await, Item::Comment("heartbeat".into()));
    assert_eq!(sse.item().await, Item::Comment("heartbeat".into()));
}

#[tokio::test]
async fn a_grant_opens_one_stream_and_is_refused_the_second_time() {
    let app = spawn_app().await;
    let (thread, token) = thread_grant(&app).await;
    let mut sse = Sse::open(&app, &format!("c={token}"), None, None).await;
    let res = app
        .client
        .get(app.url(&format!("/v1/sse?c={token}")))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "UNAUTHORIZED").await;
    // The first stream works: a submitted turn-taking message reaches it.
    let res = app
        .post_json(
            "/v1/turn-taking/actions/submit_messages",
            &app.key,
            &json!({"thread_id": thread, "messages": [{"sender": "dana", "content": "hi"}]}),
        )
        .await;
    assert!(res.status().is_success(), "{:?}", res.text().await);
    let (id, kind, _) = sse.event().await;
    assert_eq!(kind, "thread.message");
    assert!(id.is_some());
}

#[tokio::test]
async fn streams_are_refused_to_strangers_and_bad_requests() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let stranger = app.new_agent("eve");
    let get = |query: String, key: Option<String>| {
        let mut req = app.client.get(app.url(&format!("/v1/sse?{query}")));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send()
    };
    let cases: Vec<(String, Option<String>, u16, &str, &str)> = vec![
        (
            format!("thread_id={thread}"),
            None,
            401,
            "UNAUTHORIZED",
            "no key",
        ),
        (
            format!("thread_id={thread}"),
            Some(stranger.key.clone()),
            404,
            "NOT_FOUND",
            "another account's thread",
        ),
        (
            format!("aid={}", app.alice.aid),
            Some(stranger.key.clone()),
            403,
            "FORBIDDEN",
            "another account's agent",
        ),
        (
            "".into(),
            Some(app.key.clone()),
            422,
            "VALIDATION_ERROR",
            "no channel",
        ),
        ("c=nope".into(), None, 401, "UNAUTHORIZED", "unknown grant"),
        (
            format!("thread_id={thread}&after_position=-1"),
            Some(app.key.clone()),
            422,
            "VALIDATION_ERROR",
            "negative position",
        ),
    ];
    for (query, key, status, code, why) in cases {
        let res = get(query, key).await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{why}");
        assert_error(res, status, code).await;
    }
    let res = app
        .client
        .get(app.url(&format!("/v1/sse?thread_id={thread}")))
        .bearer_auth(&app.key)
        .header("Last-Event-ID", "x")
        .send()
        .await
        .unwrap();
    assert_error(res, 422, "VALIDATION_ERROR").await;
}

#[tokio::test]
async fn revoking_the_key_ends_its_stream() {
    let app = spawn_app().await;
    let eve = app.new_agent("eve");
    let mut sse = Sse::open(&app, &format!("aid={}", eve.aid), Some(&eve.key), None).await;
    threadline::cli::key_revoke(&app.db, &eve.key).expect("revoke");
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match sse.res.chunk().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its key");
}
