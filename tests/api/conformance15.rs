//! Conformance, round 15: a second walk of every route, as a client written
//! from the contract would make it. One test per divergence found.

use serde_json::{json, Value};

use crate::helpers::{assert_error, json_of, spawn_app_with, TestApp};

/// `respond` with a raw JSON body (to send `-0` and numbers past 64 bits;
/// tidy16 uses it too).
pub(crate) async fn respond_raw(app: &TestApp, body: String) -> reqwest::Response {
    app.client
        .post(app.url("/v1/turn-taking/actions/respond"))
        .bearer_auth(&app.key)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request")
}

/// The contract types `turn_epoch` as an integer that starts at 0; the
/// server keeps it in 64 bits. A negative epoch, or one past 2^63 - 1, was
/// refused as "an integer ≥ 0" (as if any larger number would do) and "out
/// of range for an integer" (no range at all): both now give the range the
/// server takes, as the other ranges' messages do. The largest epoch passes
/// the range check (and is then ahead of the thread's turn), and nothing
/// is stored or scheduled for any of them.
#[tokio::test]
async fn a_turn_epoch_out_of_range_is_refused_with_the_range_in_words() {
    let app = spawn_app_with(|c| c.pace_scale = 0.0).await;
    let (thread_id, _) = app.grant_for(&app.key, None).await;
    app.submit(
        &thread_id,
        json!([{"sender": "dana", "content": "How did Q1 go?"}]),
    )
    .await;
    let stored = app.stored_messages();
    let range = "turn_epoch must be an integer from 0 to 9223372036854775807";
    for epoch in ["-1", "-9223372036854775808", "9223372036854775808"] {
        let body = format!(
            r#"{{"thread_id": "{thread_id}", "content": "Q1 went well.", "turn_epoch": {epoch}}}"#
        );
        let error = assert_error(respond_raw(&app, body).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(error["error"]["message"], range, "{epoch}: {error}");
        assert_eq!(error["error"]["field"], "turn_epoch", "{epoch}: {error}");
    }

    // Other types keep their words.
    for (epoch, words) in [
        (json!("1"), "turn_epoch must be an integer, not a string"),
        (
            json!(1.5),
            "turn_epoch must be an integer, not a number with a fraction or exponent",
        ),
        (
            json!(true),
            "turn_epoch must be an integer, not true or false",
        ),
        (json!([1]), "turn_epoch must be an integer, not an array"),
        (
            json!({"n": 1}),
            "turn_epoch must be an integer, not an object",
        ),
        (Value::Null, "turn_epoch is required"),
    ] {
        let body = json!({"thread_id": thread_id, "content": "x", "turn_epoch": epoch});
        let error = assert_error(
            respond_raw(&app, body.to_string()).await,
            422,
            "VALIDATION_ERROR",
        )
        .await;
        assert_eq!(error["error"]["message"], words, "{epoch}: {error}");
        assert_eq!(error["error"]["field"], "turn_epoch", "{epoch}: {error}");
    }

    // The top of the range is an epoch: ahead of this thread's turn (1).
    let body = format!(
        r#"{{"thread_id": "{thread_id}", "content": "x", "turn_epoch": 9223372036854775807}}"#
    );
    let error = assert_error(respond_raw(&app, body).await, 422, "VALIDATION_ERROR").await;
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("ahead of the thread's current turn"),
        "{error}"
    );
    assert_eq!(app.stored_messages(), stored);
    assert_eq!(app.db_count("SELECT COUNT(*) FROM scheduled_replies"), 0);

    // And the turn itself is still answered.
    let answer = app.respond(&thread_id, "Q1 went well.", 1).await;
    assert_eq!(answer["superseded"], false, "{answer}");
}

/// `agent-init` names a capability of the wrong type by its index
/// (`capabilities[1]`), like every array item the API refuses
/// (`messages[2].content`); a capability too long, empty, or not one line
/// was refused as `capabilities` as a whole, so a client could not tell
/// which one to fix. Nothing is registered.
#[tokio::test]
async fn agent_init_names_the_capability_at_fault_by_its_index() {
    let app = spawn_app_with(|c| {
        c.open_registration = true;
        c.registration_rate_limit_per_minute = 100;
    })
    .await;
    let accounts = app.db_count("SELECT COUNT(*) FROM accounts");
    let long = "c".repeat(101);
    for (capabilities, field) in [
        (json!(["search", long]), "capabilities[1]"),
        (json!([""]), "capabilities[0]"),
        (json!(["a", "b", "two\nlines"]), "capabilities[2]"),
        (json!(["a", 7]), "capabilities[1]"),
    ] {
        let res = app
            .client
            .post(app.url("/api/acsp/agent-init"))
            .json(&json!({"agent_name": "bot", "capabilities": capabilities}))
            .send()
            .await
            .expect("request");
        let error = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(error["error"]["field"], field, "{capabilities}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{capabilities}: {error}");
    }
    assert_eq!(app.db_count("SELECT COUNT(*) FROM accounts"), accounts);

    // The longest capability is taken.
    let res = app
        .client
        .post(app.url("/api/acsp/agent-init"))
        .json(&json!({"agent_name": "bot", "capabilities": ["c".repeat(100)]}))
        .send()
        .await
        .expect("request");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
}

/// A turn-taking thread is readable by the account that opened it (`GET
/// /api/acsp/thread/{id}`), but `thread/message` and `thread/status` act on
/// ACSP threads only. Sent one of the account's own turn-taking threads,
/// they answered `404 thread not found` for a thread the same key had just
/// read. Now `422` on `thread_id` says why, as the turn-taking actions do
/// for an ACSP thread; nothing is stored, and another account's
/// turn-taking thread is still `404` (its existence is not revealed).
#[tokio::test]
async fn acsp_routes_say_a_readable_turn_taking_thread_is_not_theirs() {
    let app = spawn_app_with(|_| {}).await;
    let (thread_id, _) = app.grant_for(&app.key, None).await;
    let res = app.get_thread(&app.key, &thread_id, "").await;
    assert_eq!(
        res.status(),
        200,
        "the account reads its turn-taking thread"
    );
    let stored = app.stored_messages();

    let res = app
        .post_message(
            &app.key,
            json!({"aid": app.alice.aid, "thread_id": thread_id, "content": "hello"}),
        )
        .await;
    let error = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(error["error"]["field"], "thread_id", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("turn-taking thread"), "{error}");
    assert!(message.contains("submit_messages"), "{error}");

    let res = app
        .set_status(
            &app.key,
            json!({"aid": app.alice.aid, "thread_id": thread_id, "status": "closed"}),
        )
        .await;
    let error = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(error["error"]["field"], "thread_id", "{error}");
    assert_eq!(app.stored_messages(), stored);
    let res = app.get_thread(&app.key, &thread_id, "").await;
    let (_, page) = json_of(res).await;
    assert_eq!(page["thread"]["status"], "active", "{page}");

    // Another account's turn-taking thread stays invisible.
    let carol = app.new_agent("carol");
    let res = app
        .post_message(
            &carol.key,
            json!({"aid": carol.aid, "thread_id": thread_id, "content": "hello"}),
        )
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    let res = app
        .set_status(
            &carol.key,
            json!({"aid": carol.aid, "thread_id": thread_id, "status": "closed"}),
        )
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    assert_eq!(app.stored_messages(), stored);
}

/// The turns of an ACSP thread are refused like the turn-taking actions
/// (`422` on `thread_id`), but the reason read "turn-taking actions do not
/// write to it": to a client that only read, it named neither what it did
/// nor where to read instead. It now covers the read too.
#[tokio::test]
async fn the_turns_of_an_acsp_thread_are_refused_with_a_reason_that_fits_a_read() {
    let app = spawn_app_with(|_| {}).await;
    let thread_id = app.thread_between(&app.alice, &app.bob).await;
    let res = app
        .get(
            &format!("/v1/turn-taking/threads/{thread_id}/turns"),
            &app.key,
        )
        .await;
    let error = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(error["error"]["field"], "thread_id", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(!message.contains("write"), "{error}");
    assert!(message.contains("GET /api/acsp/thread/"), "{error}");
    assert!(message.contains("POST /api/acsp/thread/message"), "{error}");
}

/// The next `text/event-stream` event of `res` (id, type, data), skipping
/// comments and the `retry:` hint; `buf` holds what was read past it.
async fn next_sse_event(
    res: &mut reqwest::Response,
    buf: &mut String,
) -> (Option<i64>, String, Value) {
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (None, None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse().expect("a numeric id"));
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).expect("JSON data"));
                }
            }
            if let (Some(kind), Some(data)) = (kind, data) {
                return (id, kind, data);
            }
        }
        let chunk = tokio::time::timeout(crate::helpers::WAIT, res.chunk())
            .await
            .expect("timed out waiting for an event")
            .expect("stream read")
            .expect("the stream ended");
        buf.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
    }
}

/// An SSE stream resumed from a position beyond the event log's newest (a
/// `Last-Event-ID` EventSource kept from another server, or from before the
/// database was replaced) skipped every live event up to that position: it
/// stayed silent, with nothing to say why, until the log caught up. It now
/// starts with an `event: reset` naming the newest position (as a resume
/// from a pruned position does) and then hears every new event.
#[tokio::test]
async fn an_sse_resume_from_beyond_the_log_is_reset_and_hears_what_follows() {
    let app = spawn_app_with(|_| {}).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let newest = app
        .read_log()
        .last()
        .and_then(|e| e.position)
        .expect("the thread's creation is logged");
    let ahead = newest + 1_000_000;
    let mut res = app
        .client
        .get(app.url(&format!("/v1/sse?thread_id={thread}")))
        .bearer_auth(&app.key)
        .header("Last-Event-ID", ahead.to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let mut buf = String::new();
    // The socket's connection.ready first (round 25), then the reset.
    let (id, kind, ready) = next_sse_event(&mut res, &mut buf).await;
    assert_eq!((id, kind.as_str()), (None, "connection.ready"), "{ready}");
    let (id, kind, data) = next_sse_event(&mut res, &mut buf).await;
    assert_eq!(kind, "reset", "{data}");
    assert_eq!(id, None, "a reset does not move Last-Event-ID");
    assert_eq!(data["after_position"], ahead, "{data}");
    assert_eq!(data["newest_position"], newest, "{data}");

    app.say(&app.alice, &thread, "after the reset").await;
    let (id, kind, frame) = next_sse_event(&mut res, &mut buf).await;
    assert_eq!(kind, "thread.message", "{frame}");
    assert_eq!(frame["data"]["content"], "after the reset");
    assert!(id.is_some_and(|p| p > newest && p < ahead), "{id:?}");
}

/// An inbox grant is renewed with `POST /api/acsp/realtime/open`, not
/// `open_thread`. Refused at `/v1/sse` (used, unknown or expired, which
/// look alike), the message named only `open_thread`; it now names both
/// routes, as the WebSocket's refusal does.
#[tokio::test]
async fn a_refused_sse_grant_names_the_route_for_either_kind_of_channel() {
    let app = spawn_app_with(|_| {}).await;
    let res = app
        .post_json(
            "/api/acsp/realtime/open",
            &app.key,
            &json!({"aid": app.bob.aid}),
        )
        .await;
    let (status, opened) = json_of(res).await;
    assert_eq!(status, 200, "{opened}");
    let url = opened["realtime"]["connect_url"].as_str().unwrap();
    let grant = url.split("c=").nth(1).expect("c= in the url");
    let stream = |grant: String| {
        app.client
            .get(app.url(&format!("/v1/sse?c={grant}")))
            .send()
    };
    let first = stream(grant.to_owned()).await.expect("request");
    assert_eq!(first.status(), 200);
    drop(first);
    for grant in [grant.to_owned(), "not-a-grant".to_owned()] {
        let res = stream(grant).await.expect("request");
        let error = assert_error(res, 401, "UNAUTHORIZED").await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("/api/acsp/realtime/open"), "{error}");
        assert!(message.contains("open_thread"), "{error}");
    }
}
