//! Hardening at the application level (issue #10): turn-taking actions cannot
//! write into ACSP threads (no posting under another agent's name),
//! revocation reaches the grants and sockets a key already opened, and a body
//! that is not valid JSON is refused wherever the defect sits, with messages
//! in the API's words.

use std::time::{Duration, Instant};

use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, json_of, spawn_app, spawn_app_with, Agent, TestApp, Ws, WsNext,
};

// ---------------------------------------------------------------- helpers

/// Words of Rust, not of the API, that no error message may carry.
const RUST_ISMS: [&str; 7] = [
    "struct",
    "::",
    "Option",
    "invalid type",
    "i64",
    "sequence",
    "expected a string",
];

/// Asserts a message speaks the API's language.
fn assert_api_words(message: &str, case: &str) {
    for rust in RUST_ISMS {
        assert!(
            !message.contains(rust),
            "{case}: message {message:?} carries {rust:?}"
        );
    }
}

/// POSTs raw bytes with the key.
async fn post_bytes(app: &TestApp, path: &str, key: &str, body: Vec<u8>) -> Response {
    app.client
        .post(app.url(path))
        .bearer_auth(key)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request")
}

/// A login key made for `user_id`'s account by the command-line code path.
fn second_key(app: &TestApp, user_id: &str) -> String {
    let out = threadline::cli::key_create(&app.db, user_id).expect("key create");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["login_key"].as_str().unwrap().to_owned()
}

/// Connects and reads `connection.ready`.
async fn subscribe(url: &str) -> Ws {
    let mut ws = Ws::connect(url).await;
    let ready = ws.event().await;
    assert_eq!(ready["type"], "connection.ready", "first event: {ready}");
    ws
}

/// A connect URL for `agent`'s inbox, minted with `key`.
async fn inbox_url(app: &TestApp, key: &str, agent: &Agent) -> String {
    let res = app
        .post_json("/api/acsp/realtime/open", key, &json!({"aid": agent.aid}))
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    body["realtime"]["connect_url"].as_str().unwrap().to_owned()
}

/// The next event (the socket must not close).
async fn next_event(ws: &mut Ws) -> Value {
    match ws.next().await {
        WsNext::Event(e) => e,
        WsNext::Closed(code) => panic!("socket closed ({code:?})"),
    }
}

// ------------------------------------------- 3. no posting as somebody else

/// Alice's account and Carol's account share a thread; Carol's key tries to
/// write into it through the turn-taking actions, as Alice (name or AID) or
/// as herself. Every try is 422 on `thread_id` pointing to thread/message;
/// nothing is stored and no event reaches the thread's subscribers (the
/// first event after the tries is a message posted the right way).
#[tokio::test]
async fn turn_taking_actions_cannot_write_into_an_acsp_thread() {
    // Typing signals fire at once, so a typing_start that got through would
    // show on the socket before the message that ends the test.
    let app = spawn_app_with(|c| c.typing_signal_secs = 0).await;
    let carol = app.new_agent("carol");
    let thread = app.thread_between(&app.alice, &carol).await;
    // Social signals on: record_event would raise a signal if it got in.
    let (status, body) = json_of(
        app.open_thread(
            &carol.key,
            json!({"thread_id": thread, "integrations": {"social_signals": {}}}),
        )
        .await,
    )
    .await;
    assert_eq!(
        status, 200,
        "open_thread on an ACSP thread stays allowed: {body}"
    );
    let url = body["realtime"]["connect_url"].as_str().unwrap().to_owned();
    let mut ws = subscribe(&url).await;
    let before = app.stored_messages();

    let submit = "/v1/turn-taking/actions/submit_messages";
    let respond = "/v1/turn-taking/actions/respond";
    let record = "/v1/turn-taking/actions/record_event";
    let cases = [
        (
            "submit as the other agent's name",
            submit,
            json!({"thread_id": thread, "messages": [{"sender": "alice", "content": "I resign"}]}),
        ),
        (
            "submit as the other agent's AID",
            submit,
            json!({"thread_id": thread, "messages": [{"sender": app.alice.aid, "content": "I resign"}]}),
        ),
        (
            "submit as oneself",
            submit,
            json!({"thread_id": thread, "messages": [{"sender": carol.aid, "content": "hi"}]}),
        ),
        (
            "respond",
            respond,
            json!({"thread_id": thread, "turn_epoch": 0, "content": "As alice: I resign."}),
        ),
        (
            "record_event as the other agent",
            record,
            json!({"thread_id": thread, "type": "typing_start", "sender": "alice"}),
        ),
    ];
    for (case, path, body) in &cases {
        let res = app.post_json(path, &carol.key, body).await;
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], "thread_id", "{case}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("/api/acsp/thread/message"),
            "{case}: the message points to thread/message: {message}"
        );
        assert_eq!(app.stored_messages(), before, "nothing stored: {case}");
    }
    // The account that owns Alice is refused just the same.
    let res = app.post_json(submit, &app.key, &cases[0].2).await;
    assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(app.stored_messages(), before);
    let scheduled = app.db_count("SELECT COUNT(*) FROM scheduled_replies");
    assert_eq!(scheduled, 0, "respond scheduled nothing");

    let sent = app.say(&carol, &thread, "posted the right way").await;
    let event = next_event(&mut ws).await;
    assert_eq!(
        event["type"], "thread.message",
        "first event after the tries: {event}"
    );
    assert_eq!(event["data"]["id"], sent["id"], "{event}");
    assert_eq!(event["data"]["sender_aid"], carol.aid.as_str());
}

/// An ACSP thread the caller cannot see stays invisible to these actions
/// (404, as for a thread that does not exist), not 422.
#[tokio::test]
async fn turn_taking_actions_on_someone_else_s_acsp_thread_are_404() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let dave = app.new_agent("dave");
    let thread = app.thread_between(&app.alice, &carol).await;
    let res = app
        .post_json(
            "/v1/turn-taking/actions/submit_messages",
            &dave.key,
            &json!({"thread_id": thread, "messages": [{"sender": "alice", "content": "x"}]}),
        )
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    assert_eq!(app.stored_messages(), 0);
}

/// The same actions on a turn-taking thread still work, and a typing_start
/// there does raise the signal the ACSP test above shows absent.
#[tokio::test]
async fn turn_taking_actions_still_work_on_turn_taking_threads() {
    let app = spawn_app_with(|c| {
        c.typing_signal_secs = 0;
        c.pace_scale = 0.0;
    })
    .await;
    let (status, body) = json_of(
        app.open_thread(&app.key, json!({"integrations": {"social_signals": {}}}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let thread = body["thread"]["id"].as_str().unwrap().to_owned();
    let url = body["realtime"]["connect_url"].as_str().unwrap().to_owned();
    let mut ws = subscribe(&url).await;

    let res = app
        .post_json(
            "/v1/turn-taking/actions/submit_messages",
            &app.key,
            &json!({"thread_id": thread, "messages": [{"sender": "alice", "content": "How did Q1 go?"}]}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    let epoch = body["turn_epoch"].as_i64().unwrap();
    let event = next_event(&mut ws).await;
    assert_eq!(event["type"], "thread.message", "{event}");
    assert_eq!(event["data"]["sender"], "alice");

    let res = app
        .post_json(
            "/v1/turn-taking/actions/respond",
            &app.key,
            &json!({"thread_id": thread, "turn_epoch": epoch, "content": "Well."}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["superseded"], false, "{body}");
    // (typing indicators come first, while the reply is "typed")
    let event = ws.event_of("turn_taking.message").await;
    assert_eq!(event["data"]["content"], "Well.", "{event}");

    let res = app
        .post_json(
            "/v1/turn-taking/actions/record_event",
            &app.key,
            &json!({"thread_id": thread, "type": "typing_start", "sender": "dana"}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    let event = ws.event_of("turn_taking.signal").await;
    assert_eq!(event["data"]["sender"], "dana", "{event}");
    assert_eq!(app.stored_messages(), 2);
}

// -------------------------------------- 4. revocation reaches open sockets

/// Waits for the socket's close and returns its code and how long it took.
async fn close_of(ws: &mut Ws, since: Instant) -> (Option<u16>, Duration) {
    loop {
        match ws.next().await {
            WsNext::Closed(code) => return (code, since.elapsed()),
            // Pings and events before the close are not what this waits for.
            WsNext::Event(_) => continue,
        }
    }
}

/// `key revoke` (the command line, its own connection to the file) closes
/// the sockets opened with that key, thread and inbox, with 4001 within a
/// second or two; a socket of another key of the same account stays open
/// and keeps receiving.
#[tokio::test]
async fn revoking_a_key_closes_its_sockets_with_4001_and_spares_other_keys() {
    let app = spawn_app().await;
    let doomed = second_key(&app, &app.user_id);
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (_, url) = app.grant_for(&doomed, Some(&thread)).await;
    let mut thread_ws = subscribe(&url).await;
    let mut inbox_ws = subscribe(&inbox_url(&app, &doomed, &app.bob).await).await;
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut spared = subscribe(&url).await;

    threadline::cli::key_revoke(&app.db, &doomed).expect("key revoke");
    // From the commit: what the command itself takes (opening the file,
    // its busy timeout on a loaded machine) is not the server's.
    let revoked_at = Instant::now();
    for (name, ws) in [("thread", &mut thread_ws), ("inbox", &mut inbox_ws)] {
        let (code, took) = close_of(ws, revoked_at).await;
        assert_eq!(code, Some(4001), "{name} socket's close code");
        assert!(
            took < Duration::from_secs(3),
            "{name} socket closed {took:?} after the revocation"
        );
    }

    let sent = app.say(&app.alice, &thread, "still here?").await;
    let event = next_event(&mut spared).await;
    assert_eq!(event["type"], "thread.message", "{event}");
    assert_eq!(event["data"]["id"], sent["id"]);
    // And the revoked key is refused over HTTP too.
    let res = app.open_thread(&doomed, json!({"thread_id": thread})).await;
    assert_error(res, 401, "UNAUTHORIZED").await;
}

/// A grant minted before the revocation no longer connects: refused with
/// 401 in the envelope, whether the connect comes right after the
/// revocation (the connect-time key check) or after the watcher has voided
/// the key's grants.
#[tokio::test]
async fn a_grant_minted_before_revocation_is_refused_with_401() {
    let app = spawn_app().await;
    let doomed = second_key(&app, &app.user_id);
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (_, at_once) = app.grant_for(&doomed, Some(&thread)).await;
    let (_, later) = app.grant_for(&doomed, Some(&thread)).await;
    let inbox = inbox_url(&app, &doomed, &app.alice).await;
    // A socket of the key, to know when the watcher has acted.
    let (_, url) = app.grant_for(&doomed, Some(&thread)).await;
    let mut watch_ws = subscribe(&url).await;
    let (_, other_key_grant) = app.grant_for(&app.key, Some(&thread)).await;

    threadline::cli::key_revoke(&app.db, &doomed).expect("key revoke");
    let body = assert_error(app.ws_handshake(&at_once).await, 401, "UNAUTHORIZED").await;
    assert!(
        !body["error"]["message"].as_str().unwrap().contains("nk_"),
        "the key is not echoed: {body}"
    );
    let (code, _) = close_of(&mut watch_ws, Instant::now()).await;
    assert_eq!(code, Some(4001));
    assert_error(app.ws_handshake(&later).await, 401, "UNAUTHORIZED").await;
    assert_error(app.ws_handshake(&inbox).await, 401, "UNAUTHORIZED").await;

    // Another key's grant, minted before as well, still connects.
    subscribe(&other_key_grant).await;
}

// ------------------------------------------------ 5. bad input, all of it

/// Nested arrays `depth` deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Each defect, inside a field the route ignores or one it reads, refused
/// with 422 (no field: the body as a whole is at fault), in the API's words,
/// and nothing stored. The same body without the defect is accepted, so the
/// defect alone is what is refused.
#[tokio::test]
async fn a_body_that_is_not_valid_json_anywhere_is_refused_and_nothing_stored() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let prefix = format!(
        r#"{{"aid": "{}", "thread_id": "{thread}", "content": "hello", "#,
        app.alice.aid
    );
    let with = |rest: &[u8]| -> Vec<u8> {
        let mut body = prefix.clone().into_bytes();
        body.extend_from_slice(rest);
        body.push(b'}');
        body
    };
    // (case, the end of the body, what the message names)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "invalid UTF-8 in an ignored field",
            with(b"\"extra\": \"ab\xff\xfe\""),
            "UTF-8",
        ),
        (
            "an overlong UTF-8 encoding",
            with(b"\"extra\": \"\xc0\xaf\""),
            "UTF-8",
        ),
        (
            "a UTF-8 encoded surrogate",
            with(b"\"extra\": \"\xed\xa0\x80\""),
            "UTF-8",
        ),
        (
            "invalid UTF-8 in a field name",
            with(b"\"ex\xfftra\": 1"),
            "UTF-8",
        ),
        (
            "a lone high surrogate escape",
            with(br#""extra": "\ud800""#),
            "surrogate",
        ),
        (
            "a lone low surrogate escape",
            with(br#""extra": "x\udc00y""#),
            "surrogate",
        ),
        (
            "a high surrogate and no low one",
            with(br#""extra": "\ud800\u0041""#),
            "surrogate",
        ),
        (
            "a lone surrogate in metadata",
            with(br#""metadata": {"k": "\udbff"}"#),
            "surrogate",
        ),
        (
            "1e400 in an ignored field",
            with(br#""extra": 1e400"#),
            "out of range",
        ),
        (
            "-1e400 deep in an ignored field",
            with(br#""extra": [{"a": [-1e400]}]"#),
            "out of range",
        ),
        (
            "a 400-digit integer",
            with(format!(r#""extra": {}"#, "9".repeat(400)).as_bytes()),
            "out of range",
        ),
        (
            "1e400 in metadata",
            with(br#""metadata": {"n": 1e400}"#),
            "out of range",
        ),
        (
            "32,000-deep arrays in an ignored field",
            with(format!(r#""extra": {}"#, nested(32_000)).as_bytes()),
            "64 levels",
        ),
        (
            "65 levels",
            with(format!(r#""extra": {}"#, nested(64)).as_bytes()),
            "64 levels",
        ),
        (
            "65 levels in metadata",
            with(format!(r#""metadata": {{"a": {}}}"#, nested(63)).as_bytes()),
            "64 levels",
        ),
        (
            "a raw control character in an ignored string",
            with(b"\"extra\": \"a\x01b\""),
            "control character",
        ),
        (
            "an invalid escape in an ignored string",
            with(br#""extra": "\x41""#),
            "escape",
        ),
    ];
    for (case, body, names) in &cases {
        let res = post_bytes(&app, "/api/acsp/thread/message", &app.key, body.clone()).await;
        let error = assert_error(res, 422, "VALIDATION_ERROR").await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{case}: {message}");
        assert!(message.starts_with("malformed JSON"), "{case}: {message}");
        assert_eq!(error["error"].get("field"), None, "{case}: {error}");
        assert_api_words(message, case);
        assert_eq!(app.stored_messages(), 0, "nothing stored: {case}");
    }

    // Controls: the defect removed, the body is accepted.
    let controls: Vec<(&str, Vec<u8>)> = vec![
        ("valid UTF-8", with("\"extra\": \"é😀\"".as_bytes())),
        ("a surrogate pair", with(br#""extra": "\ud83d\ude00""#)),
        (
            "the largest double",
            with(br#""extra": 1.7976931348623157e308"#),
        ),
        (
            "64 levels exactly",
            with(format!(r#""extra": {}"#, nested(63)).as_bytes()),
        ),
    ];
    for (n, (case, body)) in controls.into_iter().enumerate() {
        let res = post_bytes(&app, "/api/acsp/thread/message", &app.key, body).await;
        let (status, body) = json_of(res).await;
        assert_eq!(status, 201, "{case}: {body}");
        assert_eq!(app.stored_messages(), n as i64 + 1, "{case}");
    }
}

/// The same defects refused on every route that reads a body, before
/// anything else happens (a turn-taking batch, a thread creation).
#[tokio::test]
async fn every_route_with_a_body_refuses_the_defects() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let (turn, _) = app.grant_for(&app.key, None).await;
    let (a, b) = (app.alice.aid.as_str(), app.bob.aid.as_str());
    let routes = [
        (
            "/api/acsp/thread/create",
            format!(r#"{{"aid": "{a}", "target_aid": "{b}", "x": "#),
        ),
        (
            "/v1/turn-taking/actions/submit_messages",
            format!(
                r#"{{"thread_id": "{turn}", "messages": [{{"sender": "s", "content": "c"}}], "x": "#
            ),
        ),
        (
            "/v1/turn-taking/actions/open_thread",
            r#"{"x": "#.to_owned(),
        ),
        (
            "/api/acsp/realtime/open",
            format!(r#"{{"aid": "{a}", "x": "#),
        ),
    ];
    let defects: [&[u8]; 4] = [b"\"\xff\"", br#""\udfff""#, b"-1e999", b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"];
    for (path, start) in routes {
        for defect in defects {
            let mut body = start.clone().into_bytes();
            body.extend_from_slice(defect);
            body.push(b'}');
            let res = post_bytes(&app, path, &app.key, body).await;
            let error = assert_error(res, 422, "VALIDATION_ERROR").await;
            assert_api_words(error["error"]["message"].as_str().unwrap(), path);
        }
    }
    assert_eq!(app.stored_threads(), 1, "only the turn-taking thread");
    assert_eq!(app.stored_messages(), 0);
}

/// Wrong shapes and types: the message says what the body or field must
/// be, names no Rust type and does not echo the value; the field is named.
#[tokio::test]
async fn type_errors_speak_the_api_s_language() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (turn, _) = app.grant_for(&app.key, None).await;
    let a = app.alice.aid.as_str();
    let message = "/api/acsp/thread/message";
    let submit = "/v1/turn-taking/actions/submit_messages";
    let respond = "/v1/turn-taking/actions/respond";
    let long = "v".repeat(500);
    // (case, route, body, message, field)
    let cases: Vec<(&str, &str, String, &str, Option<&str>)> = vec![
        (
            "[]",
            message,
            "[]".into(),
            "request body must be a JSON object, not an array",
            None,
        ),
        (
            "a string",
            message,
            r#""x""#.into(),
            "request body must be a JSON object, not a string",
            None,
        ),
        (
            "a number",
            message,
            "5".into(),
            "request body must be a JSON object, not an integer",
            None,
        ),
        (
            "null",
            message,
            "null".into(),
            "request body must be a JSON object, not null",
            None,
        ),
        (
            "content a number",
            message,
            json!({"aid": a, "thread_id": thread, "content": 5}).to_string(),
            "content must be a string, not an integer",
            Some("content"),
        ),
        (
            "content a long array",
            message,
            json!({"aid": a, "thread_id": thread, "content": [long]}).to_string(),
            "content must be a string, not an array",
            Some("content"),
        ),
        (
            "aid an object",
            message,
            json!({"aid": {"x": 1}, "thread_id": thread, "content": "x"}).to_string(),
            "aid must be a string, not an object",
            Some("aid"),
        ),
        (
            "a duplicated field",
            message,
            format!(r#"{{"aid": "{a}", "thread_id": "{thread}", "content": "x", "content": "y"}}"#),
            "content is given more than once",
            Some("content"),
        ),
        (
            "messages an object",
            submit,
            json!({"thread_id": turn, "messages": {}}).to_string(),
            "messages must be an array, not an object",
            Some("messages"),
        ),
        (
            "a message a string",
            submit,
            json!({"thread_id": turn, "messages": [long]}).to_string(),
            "messages[0] must be a JSON object, not a string",
            Some("messages[0]"),
        ),
        (
            "a message's content true",
            submit,
            json!({"thread_id": turn, "messages": [{"sender": "s", "content": true}]}).to_string(),
            "messages[0].content must be a string, not true or false",
            Some("messages[0].content"),
        ),
        (
            "turn_epoch a string",
            respond,
            json!({"thread_id": turn, "content": "x", "turn_epoch": long}).to_string(),
            "turn_epoch must be an integer, not a string",
            Some("turn_epoch"),
        ),
        (
            "turn_epoch a fraction",
            respond,
            json!({"thread_id": turn, "content": "x", "turn_epoch": 1.5}).to_string(),
            "turn_epoch must be an integer, not a number with a fraction or exponent",
            Some("turn_epoch"),
        ),
        (
            "turn_epoch beyond 64 bits",
            respond,
            format!(
                r#"{{"thread_id": "{turn}", "content": "x", "turn_epoch": 9223372036854775808}}"#
            ),
            "turn_epoch must be an integer from 0 to 9223372036854775807",
            Some("turn_epoch"),
        ),
    ];
    for (case, path, body, want, field) in cases {
        let res = post_bytes(&app, path, &app.key, body.into_bytes()).await;
        let error = assert_error(res, 422, "VALIDATION_ERROR").await;
        let got = error["error"]["message"].as_str().unwrap();
        assert_eq!(got, want, "{case}");
        assert_eq!(error["error"]["field"].as_str(), field, "{case}");
        assert_api_words(got, case);
        assert!(!got.contains("vvv"), "{case}: the value is echoed: {got}");
    }
    assert_eq!(app.stored_messages(), 0);
}

/// Query parameters and the WebSocket endpoint answer in the API's words too.
#[tokio::test]
async fn query_and_websocket_errors_name_no_rust_type() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let http_url = url.replacen("ws://", "http://", 1);
    // (case, request, status, field)
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, Option<&str>)> = vec![
        (
            "after not a number",
            app.client.get(format!("{http_url}&after=abc")),
            422,
            Some("after"),
        ),
        (
            "after out of range",
            app.client.get(format!("{http_url}&after=1e400")),
            422,
            Some("after"),
        ),
        (
            "after negative",
            app.client.get(format!("{http_url}&after=-1")),
            422,
            Some("after"),
        ),
        (
            "after given twice",
            app.client.get(format!("{http_url}&after=1&after=2")),
            422,
            Some("after"),
        ),
        (
            "not a handshake",
            app.client.get(&http_url),
            422,
            Some("Upgrade"),
        ),
        ("no grant", app.client.get(app.url("/v1/ws")), 401, None),
        (
            "a grant of bad bytes",
            app.client.get(app.url("/v1/ws?c=%FF%FE%00")),
            401,
            None,
        ),
        (
            "limit not a number",
            app.client
                .get(app.url(&format!("/api/acsp/thread/{thread}?limit=x")))
                .bearer_auth(&app.key),
            422,
            Some("limit"),
        ),
        (
            "a thread id of bad bytes in the path",
            app.client
                .get(app.url("/api/acsp/thread/%FF%FE"))
                .bearer_auth(&app.key),
            422,
            Some("thread_id"),
        ),
    ];
    for (case, req, status, field) in cases {
        let res = req.send().await.expect("request");
        let code = if status == 401 {
            "UNAUTHORIZED"
        } else {
            "VALIDATION_ERROR"
        };
        let error = assert_error(res, status, code).await;
        assert_eq!(error["error"]["field"].as_str(), field, "{case}: {error}");
        assert_api_words(error["error"]["message"].as_str().unwrap(), case);
    }
    // The grant is still good: none of the refusals used it up.
    subscribe(&url).await;
}
