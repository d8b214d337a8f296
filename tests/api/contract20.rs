//! Round twenty's contract loose ends: `field` on 403 and 404 (the input at
//! fault, when one is), re-opening a thread without creating it,
//! `client_ts` stamps in the future or out of order in the turn-taking
//! tags, and small items (`null` inside `integrations`, names padded with
//! white space, query integers not in plain decimal).

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Agent, TestApp};
use crate::tidy16::{jsonrpc_answer, mcp_post};

/// A refusal: its status, its body with the request id replaced by
/// `req_X` (two refusals that differ only there are byte-identical), and
/// its JSON.
async fn refusal(res: Response) -> (u16, String, Value) {
    let status = res.status().as_u16();
    let request_id = res
        .headers()
        .get("x-request-id")
        .expect("X-Request-Id")
        .to_str()
        .unwrap()
        .to_owned();
    let text = res.text().await.unwrap();
    assert!(status >= 400, "not a refusal: {status} {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["error"]["request_id"], request_id.as_str(), "{text}");
    (status, text.replace(&request_id, "req_X"), body)
}

async fn send(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.expect("request")
}

/// What is stored, read directly: threads, messages, statuses, turn epochs.
fn stored(app: &TestApp) -> (i64, i64, i64, i64) {
    (
        app.stored_threads(),
        app.stored_messages(),
        app.db_count("SELECT COUNT(*) FROM threads WHERE status <> 'active'"),
        app.db_count("SELECT CAST(COALESCE(SUM(turn_epoch), 0) AS BIGINT) FROM threads"),
    )
}

/// A server without quotas (these tests send many refused requests), and
/// carol and dave: another account each, with a thread between them and a
/// turn-taking thread of carol's.
async fn setup() -> (TestApp, Agent, String, String) {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.status_rate_limit_per_minute = 0;
    })
    .await;
    let carol = app.new_agent("carol");
    let dave = app.new_agent("dave");
    let acsp = app.thread_between(&carol, &dave).await;
    let (turn, _) = app.grant_for(&carol.key, None).await;
    (app, carol, acsp, turn)
}

/// Acting as an agent of another account is `403` on `aid`, whether the
/// body or the query named it, and whether or not the agent exists; the
/// `403` comes before anything about the thread. It had no `field`, though
/// the contract's envelope names the input at fault "when one input field
/// is at fault". Nothing is stored.
#[tokio::test]
async fn a_403_names_aid_whether_the_body_or_the_query_gave_it() {
    let (app, carol, _, _) = setup().await;
    let ours = app.thread_between(&app.alice, &app.bob).await;
    let absent = uuid::Uuid::new_v4().to_string();
    let nobody = "ab".repeat(25);
    let before = stored(&app);
    for aid in [carol.aid.as_str(), nobody.as_str()] {
        let cases: Vec<(&str, Method, String, Option<Value>)> = vec![
            (
                "create",
                Method::POST,
                "/api/acsp/thread/create".into(),
                Some(json!({"aid": aid, "target_aid": app.bob.aid, "subject": "s"})),
            ),
            (
                "message",
                Method::POST,
                "/api/acsp/thread/message".into(),
                Some(json!({"aid": aid, "thread_id": ours, "content": "hi"})),
            ),
            (
                "message to an absent thread",
                Method::POST,
                "/api/acsp/thread/message".into(),
                Some(json!({"aid": aid, "thread_id": absent, "content": "hi"})),
            ),
            (
                "status",
                Method::POST,
                "/api/acsp/thread/status".into(),
                Some(json!({"aid": aid, "thread_id": ours, "status": "closed"})),
            ),
            (
                "read by path",
                Method::GET,
                format!("/api/acsp/thread/{ours}?aid={aid}"),
                None,
            ),
            (
                "read by query",
                Method::GET,
                format!("/api/acsp/thread?thread_id={ours}&aid={aid}"),
                None,
            ),
            (
                "read an absent thread by query",
                Method::GET,
                format!("/api/acsp/thread?thread_id={absent}&aid={aid}"),
                None,
            ),
            (
                "list",
                Method::GET,
                format!("/api/acsp/threads?aid={aid}"),
                None,
            ),
            (
                "inbox socket",
                Method::POST,
                "/api/acsp/realtime/open".into(),
                Some(json!({"aid": aid})),
            ),
        ];
        for (case, method, path, body) in cases {
            let res = send(&app, &app.key, method, &path, body).await;
            let (status, text, body) = refusal(res).await;
            assert_eq!(status, 403, "{case}: {text}");
            assert_eq!(body["error"]["code"], "FORBIDDEN", "{case}: {text}");
            assert_eq!(body["error"]["field"], "aid", "{case}: {text}");
        }
    }
    assert_eq!(stored(&app), before, "a refused request stored something");
}

/// An unknown `target_aid` is `404` on `target_aid`; a thread the caller
/// may not see, or that does not exist, named by a body's or a query's
/// `thread_id`, is `404` on `thread_id`, on every route that takes one.
/// The two still answer byte for byte alike (but the request id): nothing
/// tells a foreign thread from an absent one. Nothing is stored.
#[tokio::test]
async fn a_404_names_target_aid_or_a_thread_id_given_in_the_body_or_query() {
    let (app, _, acsp, turn) = setup().await;
    let before = stored(&app);

    let res = send(
        &app,
        &app.key,
        Method::POST,
        "/api/acsp/thread/create",
        Some(json!({"aid": app.alice.aid, "target_aid": "cd".repeat(25), "subject": "s"})),
    )
    .await;
    let (status, text, body) = refusal(res).await;
    assert_eq!(status, 404, "{text}");
    assert_eq!(body["error"]["code"], "NOT_FOUND", "{text}");
    assert_eq!(body["error"]["field"], "target_aid", "{text}");

    let absent = uuid::Uuid::new_v4().to_string();
    let aid = app.alice.aid.clone();
    let cases = |id: &str| -> Vec<(&'static str, Method, String, Option<Value>)> {
        vec![
            (
                "message",
                Method::POST,
                "/api/acsp/thread/message".into(),
                Some(json!({"aid": aid, "thread_id": id, "content": "hi"})),
            ),
            (
                "status",
                Method::POST,
                "/api/acsp/thread/status".into(),
                Some(json!({"aid": aid, "thread_id": id, "status": "closed"})),
            ),
            (
                "read by query, as alice",
                Method::GET,
                format!("/api/acsp/thread?thread_id={id}&aid={aid}"),
                None,
            ),
            (
                "read by query",
                Method::GET,
                format!("/api/acsp/thread?thread_id={id}"),
                None,
            ),
            (
                "event stream by query",
                Method::GET,
                format!("/v1/sse?thread_id={id}"),
                None,
            ),
            (
                "submit_messages",
                Method::POST,
                "/v1/turn-taking/actions/submit_messages".into(),
                Some(json!({"thread_id": id, "messages": [{"sender": "s", "content": "hi"}]})),
            ),
            (
                "respond",
                Method::POST,
                "/v1/turn-taking/actions/respond".into(),
                Some(json!({"thread_id": id, "content": "Hello there.", "turn_epoch": 0})),
            ),
            (
                "record_event",
                Method::POST,
                "/v1/turn-taking/actions/record_event".into(),
                Some(json!({"thread_id": id, "type": "typing_start", "sender": "s"})),
            ),
            (
                "open_thread, re-open only",
                Method::POST,
                "/v1/turn-taking/actions/open_thread".into(),
                Some(json!({"thread_id": id, "create": false})),
            ),
        ]
    };
    for foreign in [&acsp, &turn] {
        for ((case, method, path, body), (_, m2, p2, b2)) in
            cases(foreign).into_iter().zip(cases(&absent))
        {
            let (status, text, body) =
                refusal(send(&app, &app.key, method, &path, body).await).await;
            assert_eq!(status, 404, "{case}: {text}");
            assert_eq!(body["error"]["code"], "NOT_FOUND", "{case}: {text}");
            assert_eq!(body["error"]["field"], "thread_id", "{case}: {text}");
            let (_, absent_text, _) = refusal(send(&app, &app.key, m2, &p2, b2).await).await;
            assert_eq!(
                text, absent_text,
                "{case}: a foreign thread answers unlike an absent one"
            );
        }
        // open_thread with a thread of another account (it exists: no
        // re-open-only needed to be refused).
        let res = send(
            &app,
            &app.key,
            Method::POST,
            "/v1/turn-taking/actions/open_thread",
            Some(json!({"thread_id": foreign})),
        )
        .await;
        let (status, text, body) = refusal(res).await;
        assert_eq!(status, 404, "{text}");
        assert_eq!(body["error"]["field"], "thread_id", "{text}");
    }
    assert_eq!(stored(&app), before, "a refused request stored something");
}

/// A thread named in the path is not an input field: its `404` names
/// none, like an unknown route's, and still reads alike for a foreign and
/// an absent thread.
#[tokio::test]
async fn a_thread_in_the_path_is_not_a_field_and_its_404_names_none() {
    let (app, _, acsp, turn) = setup().await;
    let absent = uuid::Uuid::new_v4().to_string();
    for foreign in [&acsp, &turn] {
        for (path, absent_path) in [
            (
                format!("/api/acsp/thread/{foreign}"),
                format!("/api/acsp/thread/{absent}"),
            ),
            (
                format!("/api/acsp/thread/{foreign}?aid={}", app.alice.aid),
                format!("/api/acsp/thread/{absent}?aid={}", app.alice.aid),
            ),
            (
                format!("/v1/turn-taking/threads/{foreign}/turns"),
                format!("/v1/turn-taking/threads/{absent}/turns"),
            ),
        ] {
            let (status, text, body) = refusal(app.get(&path, &app.key).await).await;
            assert_eq!(status, 404, "{path}: {text}");
            assert_eq!(body["error"].get("field"), None, "{path}: {text}");
            let (_, absent_text, _) = refusal(app.get(&absent_path, &app.key).await).await;
            assert_eq!(text, absent_text, "{path}");
        }
    }
    let (status, text, body) = refusal(app.get("/api/acsp/no-such-route", &app.key).await).await;
    assert_eq!(status, 404, "{text}");
    assert_eq!(body["error"].get("field"), None, "{text}");
}

/// The MCP tools' errors are the API's, `field` included: a thread the
/// agent is not in is `NOT_FOUND` on `thread_id`, an unknown `target_aid`
/// on `target_aid`, another account's agent `FORBIDDEN` on `aid`.
#[tokio::test]
async fn mcp_tool_errors_name_the_argument_at_fault() {
    let (app, carol, acsp, _) = setup().await;
    let alice = app.alice.aid.clone();
    for (tool, args, code, field) in [
        (
            "read_thread",
            json!({"thread_id": acsp, "aid": alice}),
            "NOT_FOUND",
            "thread_id",
        ),
        (
            "post_message",
            json!({"thread_id": acsp, "aid": alice, "content": "hi"}),
            "NOT_FOUND",
            "thread_id",
        ),
        (
            "wait_for_messages",
            json!({"thread_id": acsp, "aid": alice, "timeout_secs": 1}),
            "NOT_FOUND",
            "thread_id",
        ),
        (
            "create_thread",
            json!({"aid": alice, "target_aid": "cd".repeat(25), "subject": "s"}),
            "NOT_FOUND",
            "target_aid",
        ),
        (
            "list_threads",
            json!({"aid": carol.aid}),
            "FORBIDDEN",
            "aid",
        ),
    ] {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": tool, "arguments": args}});
        let answer = jsonrpc_answer(mcp_post(&app, &call, &[]).await).await;
        assert_eq!(answer["result"]["isError"], true, "{tool}: {answer}");
        let error = &answer["result"]["structuredContent"]["error"];
        assert_eq!(error["code"], code, "{tool}: {answer}");
        assert_eq!(error["field"], field, "{tool}: {answer}");
    }
}

// ------------------------------------------------------- re-open only

/// `open_thread` with `"create": false` re-opens a thread the caller can
/// see and never creates one: an absent id is `404` on `thread_id`, alike
/// to a foreign thread's (above), and stores nothing; without a
/// `thread_id` it is `422`. (MCP's `wait_for_messages` opens its socket
/// so: a thread deleted between its read and its socket is `NOT_FOUND`,
/// not made again, empty, under its id.) Without `create`, as before.
#[tokio::test]
async fn open_thread_without_create_reopens_only() {
    let (app, _, _, _) = setup().await;
    let (own, _) = app.grant_for(&app.key, None).await;
    let before = stored(&app);
    let open = |body: Value| app.open_thread(&app.key, body);

    let (status, body) =
        crate::helpers::json_of(open(json!({"thread_id": own, "create": false})).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["thread"]["id"], own.as_str());
    assert!(body["realtime"]["connect_url"].is_string(), "{body}");

    let absent = uuid::Uuid::new_v4().to_string();
    let (status, text, body) =
        refusal(open(json!({"thread_id": absent, "create": false})).await).await;
    assert_eq!(status, 404, "{text}");
    assert_eq!(body["error"]["code"], "NOT_FOUND", "{text}");
    assert_eq!(body["error"]["field"], "thread_id", "{text}");

    let (status, text, body) = refusal(open(json!({"create": false})).await).await;
    assert_eq!(status, 422, "{text}");
    assert_eq!(body["error"]["field"], "thread_id", "{text}");
    let (status, text, body) =
        refusal(open(json!({"thread_id": absent, "create": "no"})).await).await;
    assert_eq!(status, 422, "{text}");
    assert_eq!(body["error"]["field"], "create", "{text}");
    assert_eq!(stored(&app), before, "a refused open stored something");

    // A deleted thread is not re-opened either.
    threadline::cli::thread_delete(&app.db, &own).expect("delete");
    let (status, text, _) = refusal(open(json!({"thread_id": own, "create": false})).await).await;
    assert_eq!(status, 404, "{text}");
    assert_eq!(app.stored_threads(), before.0 - 1);

    // The contract's default is unchanged: an unknown id is created.
    let (status, body) =
        crate::helpers::json_of(open(json!({"thread_id": absent, "create": true})).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["thread"]["id"], absent.as_str());
}

// ------------------------------------------------------------- client_ts

/// submit_messages with social signals on; the tags.
async fn tags_of(app: &TestApp, thread: &str, messages: Value) -> Value {
    app.submit(thread, messages).await["tags"].clone()
}

/// A message stamped `9999-12-31` was timed at its stamp: its sender's
/// last time (which only moves forward) then lay in the future for good,
/// and no later message of hers was ever a `comeback`; and the next batch,
/// "before" that stamp by a negative gap, was `fast`. A stamp after the
/// server's receipt now counts as the receipt: twenty minutes on (the
/// stored times are aged, as if they had passed), she is back.
#[tokio::test]
async fn a_client_ts_in_the_future_counts_as_the_time_it_was_received() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let (thread, _ws) = app
        .open_and_listen(Some(json!({"social_signals": {}})))
        .await;
    let first = tags_of(
        &app,
        &thread,
        json!([{"sender": "dana", "content": "hello", "client_ts": "9999-12-31T23:59:59.999Z"}]),
    )
    .await;
    assert_eq!(first, json!([]));
    // Accepted as sent (the hosted API takes any RFC 3339 time), but timed
    // no later than now.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let last = app.db_count("SELECT MAX(last_ms) FROM turn_senders");
    assert!(
        last <= now_ms,
        "a sender's time {last} is after now ({now_ms})"
    );

    app.db_exec(
        "UPDATE turn_senders SET last_ms = last_ms - 1200000;
         UPDATE threads SET last_batch_ms = last_batch_ms - 1200000 WHERE last_batch_ms IS NOT NULL;",
    );
    let back = tags_of(
        &app,
        &thread,
        json!([{"sender": "dana", "content": "I'm back"}]),
    )
    .await;
    assert_eq!(back, json!(["comeback"]));
}

/// A sender's time stored in the future before that rule (from a stamp
/// such as `9999-12-31`) was kept as the maximum by every later message:
/// that sender was never a `comeback` again. Her next message replaces it
/// (when she last spoke is not known, so that one is no comeback), and
/// twenty minutes later (the stored times aged) she is back.
#[tokio::test]
async fn a_senders_time_stored_in_the_future_heals_at_her_next_message() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let (thread, _ws) = app
        .open_and_listen(Some(json!({"social_signals": {}})))
        .await;
    app.db_exec(&format!(
        "INSERT INTO turn_senders (thread_id, sender, last_ms)
         SELECT id, 'fay', 253402300799999 FROM threads WHERE uuid = '{thread}'"
    ));
    let say = json!([{"sender": "fay", "content": "hello again"}]);
    assert_eq!(tags_of(&app, &thread, say.clone()).await, json!([]));
    let now_ms = chrono::Utc::now().timestamp_millis();
    let last = app.db_count("SELECT MAX(last_ms) FROM turn_senders");
    assert!(
        last <= now_ms,
        "fay's time {last} is still after now ({now_ms})"
    );

    app.db_exec(
        "UPDATE turn_senders SET last_ms = last_ms - 1200000;
         UPDATE threads SET last_batch_ms = last_batch_ms - 1200000 WHERE last_batch_ms IS NOT NULL;",
    );
    assert_eq!(tags_of(&app, &thread, say).await, json!(["comeback"]));
}

/// A batch stamped before the previous batch (clocks out of step, or
/// history sent late) was `fast` whatever the gap, being "less than 3 s
/// after" it by a negative one: an hour before was fast. It is `fast` only
/// when the stamps are less than 3 s apart, either side.
#[tokio::test]
async fn a_batch_stamped_before_the_previous_one_is_fast_only_when_as_close() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let (thread, _ws) = app
        .open_and_listen(Some(json!({"social_signals": {}})))
        .await;
    let now = chrono::Utc::now();
    let ts = |secs_ago: i64| (now - chrono::Duration::seconds(secs_ago)).to_rfc3339();
    let say =
        |stamp: String| json!([{"sender": "eli", "content": "a thought", "client_ts": stamp}]);

    assert_eq!(tags_of(&app, &thread, say(ts(0))).await, json!([]));
    // An hour before the previous batch: not fast (nor a comeback: eli
    // spoke later than that).
    assert_eq!(tags_of(&app, &thread, say(ts(3600))).await, json!([]));
    // A second before the previous batch: as close as a fast one.
    assert_eq!(tags_of(&app, &thread, say(ts(3601))).await, json!(["fast"]));
    // And after: an hour after the previous batch, not fast.
    assert_eq!(tags_of(&app, &thread, say(ts(0))).await, json!([]));
}

// ------------------------------------------------------- small items

/// `null` counts as absent in a body, `integrations` itself included, but
/// `"social_signals": null` inside it was `422` ("must be a JSON object"),
/// and so was `"channel_id": null`. Both now read as absent: signals off
/// for the one, on without a channel id for the other.
#[tokio::test]
async fn a_null_inside_integrations_counts_as_absent() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    // Stamped a minute apart: the second batch is no `fast` however long
    // the calls between take.
    let now = chrono::Utc::now();
    let three = |secs_ago: i64| {
        let ts = (now - chrono::Duration::seconds(secs_ago)).to_rfc3339();
        json!([{"sender": "a", "content": "one", "client_ts": ts},
               {"sender": "a", "content": "two", "client_ts": ts},
               {"sender": "a", "content": "three", "client_ts": ts}])
    };
    let (status, opened) = crate::helpers::json_of(
        app.open_thread(&app.key, json!({"integrations": {"social_signals": null}}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{opened}");
    let thread = opened["thread"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        tags_of(&app, &thread, three(120)).await,
        json!([]),
        "signals off"
    );

    let (status, opened) = crate::helpers::json_of(
        app.open_thread(
            &app.key,
            json!({"thread_id": thread, "integrations": {"social_signals": {"channel_id": null}}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{opened}");
    assert_eq!(
        tags_of(&app, &thread, three(60)).await,
        json!(["burst"]),
        "signals on"
    );

    // What is not an object (or a string) is still refused.
    for (integrations, field) in [
        (json!({"social_signals": 1}), "integrations.social_signals"),
        (
            json!({"social_signals": {"channel_id": 1}}),
            "integrations.social_signals.channel_id",
        ),
    ] {
        let res = app
            .open_thread(
                &app.key,
                json!({"thread_id": thread, "integrations": integrations}),
            )
            .await;
        let (status, text, body) = refusal(res).await;
        assert_eq!(status, 422, "{text}");
        assert_eq!(body["error"]["field"], field, "{text}");
    }
}

/// An agent's name that starts or ends with white space (" dana",
/// "ada ") was stored as sent: side by side it shows like "dana" and is
/// another agent. It is `422` naming the field, refused rather than
/// trimmed, and nothing is stored; white space inside a name stays
/// allowed. A turn-taking `sender` is kept as given (API.md), padding
/// included: a chat app relays people's display names.
#[tokio::test]
async fn an_agent_name_that_starts_or_ends_with_white_space_is_422_a_sender_is_kept() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.open_registration = true;
    })
    .await;
    let (thread, _) = app.grant_for(&app.key, None).await;
    let agents = || app.db_count("SELECT COUNT(*) FROM agents");
    let agents_before = agents();
    let padded = [" dana", "dana ", "\u{3000}dana", "dana\u{a0}"];
    for bad in padded {
        let res = app
            .client
            .post(app.url("/api/acsp/agent-init"))
            .json(&json!({"agent_name": bad, "capabilities": []}))
            .send()
            .await
            .unwrap();
        let (status, text, body) = refusal(res).await;
        assert_eq!(status, 422, "{bad:?}: {text}");
        assert_eq!(body["error"]["field"], "agent_name", "{bad:?}: {text}");

        let err = threadline::cli::agent_create(&app.db, bad, None).expect_err("a padded name");
        assert!(err.contains("white space"), "{bad:?}: {err}");
    }
    assert_eq!(agents(), agents_before);
    // Inside a name, white space is fine.
    threadline::cli::agent_create(&app.db, "ada bot", None).expect("a name with a space inside");

    // Senders: stored exactly as sent, each its own sender.
    let messages_before = app.stored_messages();
    let batch: Vec<_> = padded
        .iter()
        .map(|s| json!({"sender": s, "content": "hi there"}))
        .collect();
    app.submit(&thread, json!(batch)).await;
    let res = app
        .post_json(
            "/v1/turn-taking/actions/record_event",
            &app.key,
            &json!({"thread_id": thread, "type": "typing_start", "sender": " dana"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.stored_messages(), messages_before + padded.len() as i64);
    for (sql, sender) in [
        (
            "SELECT COUNT(*) FROM messages WHERE sender = ' dana'",
            " dana",
        ),
        (
            "SELECT COUNT(*) FROM messages WHERE sender = 'dana '",
            "dana ",
        ),
    ] {
        assert_eq!(app.db_count(sql), 1, "{sender:?} kept as given");
    }
}

/// Query integers were read by Rust's parser, which takes `+1` (sent as
/// `%2B1`) and `01`: a proxy's cache key or a log search reads those
/// otherwise. Only plain decimal is an integer now; the rest is `422` on
/// the parameter, on every route that takes one. `-0` is still 0.
#[tokio::test]
async fn a_query_integer_is_plain_decimal() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "one").await;
    let (turn, _) = app.grant_for(&app.key, None).await;
    let aid = &app.alice.aid;
    for (path, name) in [
        (
            format!("/api/acsp/thread/{thread}?aid={aid}&after="),
            "after",
        ),
        (
            format!("/api/acsp/thread/{thread}?aid={aid}&limit="),
            "limit",
        ),
        (
            format!("/api/acsp/thread?thread_id={thread}&aid={aid}&offset="),
            "offset",
        ),
        (format!("/api/acsp/threads?aid={aid}&limit="), "limit"),
        (
            format!("/v1/turn-taking/threads/{turn}/turns?before="),
            "before",
        ),
    ] {
        for bad in ["%2B1", "01", "007", "-01"] {
            let (status, text, body) =
                refusal(app.get(&format!("{path}{bad}"), &app.key).await).await;
            assert_eq!(status, 422, "{path}{bad}: {text}");
            assert_eq!(body["error"]["field"], name, "{path}{bad}: {text}");
        }
        for good in ["1", "10"] {
            let res = app.get(&format!("{path}{good}"), &app.key).await;
            assert_eq!(res.status(), 200, "{path}{good}");
        }
    }
    let res = app
        .get(
            &format!("/api/acsp/thread/{thread}?aid={aid}&after=-0"),
            &app.key,
        )
        .await;
    let (status, page) = crate::helpers::json_of(res).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "{page}");
}

/// A `wait_for_messages` whose thread is deleted while it waits (its socket
/// closed with 4004) answered `NOT_FOUND` without `field`, where the same
/// thread's `NOT_FOUND` from the API names `thread_id`. It names it too.
#[tokio::test]
async fn a_wait_whose_thread_is_deleted_names_thread_id() {
    let (app, _, _, _) = setup().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "wait_for_messages",
                                 "arguments": {"aid": app.alice.aid, "thread_id": thread,
                                               "after_seq": 0, "timeout_secs": 30}}});
    let waiting = async { jsonrpc_answer(mcp_post(&app, &call, &[]).await).await };
    let cut = async {
        app.wait_for_live_actors(1).await;
        threadline::cli::thread_delete(&app.db, &thread).expect("delete");
    };
    let (answer, ()) =
        tokio::time::timeout(crate::helpers::WAIT, async { tokio::join!(waiting, cut) })
            .await
            .expect("the wait ended");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let error = &answer["result"]["structuredContent"]["error"];
    assert_eq!(error["code"], "NOT_FOUND", "{answer}");
    assert_eq!(error["field"], "thread_id", "{answer}");
    // Not made again by the wait.
    assert_eq!(
        app.db_count(&format!(
            "SELECT COUNT(*) FROM threads WHERE uuid = '{thread}'"
        )),
        0
    );
}
