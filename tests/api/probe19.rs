//! A hostile-input probe of the JSON routes, round nineteen: what earlier
//! rounds left open. A key given twice inside `metadata` or `integrations`,
//! an `Idempotency-Key` header sent twice, and a thread named twice (path
//! and query) with two different ids are refused: the server would
//! otherwise pick one of the two silently.

use serde_json::{json, Value};

use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with, TestApp};

/// Posts a raw JSON body with `key`.
async fn post_raw(app: &TestApp, path: &str, key: Option<&str>, body: String) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(path))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.expect("request")
}

/// Asserts a `422 VALIDATION_ERROR` naming `field`; returns the body.
async fn assert_422_on(res: reqwest::Response, field: &str, case: &str) -> Value {
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["field"], field, "{case}: {body}");
    body
}

#[tokio::test]
async fn a_key_given_twice_inside_metadata_or_integrations_is_422_and_nothing_is_stored() {
    let app = spawn_app_with(|c| c.open_registration = true).await;
    let (alice, bob) = (&app.alice.aid, &app.bob.aid);
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let messages_before = app.stored_messages();
    let threads_before = app.stored_threads();
    let agents_before = app.db_count("SELECT count(*) FROM agents");

    // The same key twice in one object, at the top of the value or deeper
    // (in an object inside an array too): which of the two was meant is a
    // guess, and JSON parsers differ on it (first wins, last wins).
    let twice = [
        r#"{"a":1,"a":2}"#,
        r#"{"k":{"a":1,"a":1}}"#,
        r#"{"k":[{"x":true},{"a":"1","a":"2"}]}"#,
        r#"{"a":1,"b":2,"a":null}"#,
    ];
    for meta in twice {
        let res = post_raw(
            &app,
            "/api/acsp/thread/message",
            Some(&app.key),
            format!(
                r#"{{"aid":"{alice}","thread_id":"{thread}","content":"hi","metadata":{meta}}}"#
            ),
        )
        .await;
        let body = assert_422_on(res, "metadata", meta).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("more than once"), "{meta}: {message}");

        let res = post_raw(
            &app,
            "/api/acsp/thread/create",
            Some(&app.key),
            format!(r#"{{"aid":"{alice}","target_aid":"{bob}","metadata":{meta}}}"#),
        )
        .await;
        assert_422_on(res, "metadata", meta).await;

        let res = post_raw(
            &app,
            "/api/acsp/agent-init",
            None,
            format!(r#"{{"agent_name":"Twice","capabilities":[],"metadata":{meta}}}"#),
        )
        .await;
        assert_422_on(res, "metadata", meta).await;
    }

    // `integrations` is read by the server: with social_signals given twice,
    // one order turned social signals on and the other was refused.
    for integrations in [
        r#"{"social_signals":3,"social_signals":{}}"#,
        r#"{"social_signals":{},"social_signals":3}"#,
        r#"{"social_signals":{"channel_id":"a","channel_id":"b"}}"#,
    ] {
        let res = post_raw(
            &app,
            "/v1/turn-taking/actions/open_thread",
            Some(&app.key),
            format!(r#"{{"integrations":{integrations}}}"#),
        )
        .await;
        assert_422_on(res, "integrations", integrations).await;
    }

    assert_eq!(
        app.stored_messages(),
        messages_before,
        "a message was stored"
    );
    assert_eq!(app.stored_threads(), threads_before, "a thread was stored");
    assert_eq!(
        app.db_count("SELECT count(*) FROM agents"),
        agents_before,
        "an agent was registered"
    );

    // One key in different objects is no repeat, and the value is kept as sent.
    let meta = r#"{"a":{"x":1},"b":{"x":1},"c":[{"x":1},{"x":2}]}"#;
    let res = post_raw(
        &app,
        "/api/acsp/thread/message",
        Some(&app.key),
        format!(r#"{{"aid":"{alice}","thread_id":"{thread}","content":"hi","metadata":{meta}}}"#),
    )
    .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let sent: Value = serde_json::from_str(meta).unwrap();
    assert_eq!(body["message"]["metadata"], sent);
    let res = post_raw(
        &app,
        "/v1/turn-taking/actions/open_thread",
        Some(&app.key),
        r#"{"integrations":{"social_signals":{"channel_id":"c"},"other":{"channel_id":"d"}}}"#
            .into(),
    )
    .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn an_idempotency_key_header_sent_twice_is_422_and_nothing_is_stored() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let body = json!({"aid": app.alice.aid, "thread_id": thread, "content": "once"});
    let post = |keys: &'static [&'static str]| {
        let mut req = app
            .client
            .post(app.url("/api/acsp/thread/message"))
            .bearer_auth(&app.key)
            .json(&body);
        for k in keys {
            req = req.header("Idempotency-Key", *k);
        }
        req.send()
    };

    // The first post under "k1" is stored.
    let (status, first) = json_of(post(&["k1"]).await.expect("request")).await;
    assert_eq!(status, 201, "{first}");
    let stored = app.stored_messages();

    // Two headers: which key the retry is meant under is a guess, and a
    // wrong guess stores a duplicate (or drops a new message).
    for keys in [&["k2", "k1"][..], &["k1", "k2"], &["k3", "k3"]] {
        let res = post(keys).await.expect("request");
        let body = assert_422_on(res, "Idempotency-Key", &format!("{keys:?}")).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("one Idempotency-Key"), "{message}");
    }
    assert_eq!(app.stored_messages(), stored, "a message was stored");

    // One header still works as before: a retry returns the original.
    let (status, again) = json_of(post(&["k1"]).await.expect("request")).await;
    assert_eq!(status, 201);
    assert_eq!(again, first);
    assert_eq!(app.stored_messages(), stored);
}

#[tokio::test]
async fn a_thread_named_in_the_path_and_the_query_must_be_one_thread() {
    let app = spawn_app().await;
    let one = app.thread_between(&app.alice, &app.bob).await;
    let other = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.bob, &one, "unread").await;
    let aid = &app.alice.aid;

    // Two different ids: which one is meant is a guess; the path's was
    // served, silently, and its page marked read.
    let res = app
        .get_thread(&app.key, &one, &format!("aid={aid}&thread_id={other}"))
        .await;
    let body = assert_422_on(res, "thread_id", "path and query differ").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("path"), "{message}");
    let res = app.list_threads(&app.key, &format!("aid={aid}")).await;
    let (_, list) = json_of(res).await;
    let row = list["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == one.as_str())
        .expect("the thread is listed");
    assert_eq!(row["unread_count"], 1, "the refused read marked it read");

    // The same thread twice (in either case) is that thread.
    for same in [one.clone(), one.to_uppercase()] {
        let res = app
            .get_thread(&app.key, &one, &format!("aid={aid}&thread_id={same}"))
            .await;
        let (status, page) = json_of(res).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["thread"]["id"], one.as_str());
    }
}

#[tokio::test]
async fn metadata_comes_back_as_it_was_sent_numbers_included() {
    let app = spawn_app_with(|c| c.open_registration = true).await;
    let (alice, bob) = (&app.alice.aid, &app.bob.aid);
    let thread = app.thread_between(&app.alice, &app.bob).await;
    // Read as a double and written again, these came back changed: an id
    // past 64 bits rounded, `-0` as `-0.0`, `1e2` as `100.0`, digits lost.
    // Whitespace between tokens is dropped; escapes stay as sent.
    let sent = r#"{ "id" : 18446744073709551617, "neg": -0, "e": 1e2,
        "pi": 3.141592653589793238462643383279, "low": -9223372036854775809,
        "s": "caf\u00e9 \ud83d\ude00 \"q\"", "nested": [ {"x": 1.50} ] }"#;
    let kept = r#"{"id":18446744073709551617,"neg":-0,"e":1e2,"pi":3.141592653589793238462643383279,"low":-9223372036854775809,"s":"caf\u00e9 \ud83d\ude00 \"q\"","nested":[{"x":1.50}]}"#;
    /// The text of `metadata` in a JSON answer, as written.
    fn metadata_text(answer: &str) -> &str {
        let start = answer.find(r#""metadata":"#).expect("metadata") + r#""metadata":"#.len();
        let rest = &answer[start..];
        let end = rest.find(r#","created_at""#).expect("after metadata");
        &rest[..end]
    }
    let res = post_raw(
        &app,
        "/api/acsp/thread/message",
        Some(&app.key),
        format!(r#"{{"aid":"{alice}","thread_id":"{thread}","content":"n","metadata":{sent}}}"#),
    )
    .await;
    assert_eq!(res.status(), 201);
    let answer = res.text().await.unwrap();
    assert_eq!(metadata_text(&answer), kept, "the 201");
    let page = app
        .get_thread(&app.key, &thread, &format!("aid={alice}"))
        .await
        .text()
        .await
        .unwrap();
    let message = &page[page.find(r#""messages":"#).unwrap()..];
    assert_eq!(metadata_text(message), kept, "the thread's page");

    let res = post_raw(
        &app,
        "/api/acsp/thread/create",
        Some(&app.key),
        format!(r#"{{"aid":"{alice}","target_aid":"{bob}","metadata":{sent}}}"#),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        metadata_text(&res.text().await.unwrap()),
        kept,
        "a new thread"
    );

    let res = post_raw(
        &app,
        "/api/acsp/agent-init",
        None,
        format!(r#"{{"agent_name":"Keeper","capabilities":[],"metadata":{sent}}}"#),
    )
    .await;
    assert_eq!(res.status(), 201);
    let answer = res.text().await.unwrap();
    let start = answer.find(r#""metadata":"#).unwrap() + r#""metadata":"#.len();
    let end = answer.find(r#","user_id""#).unwrap();
    assert_eq!(&answer[start..end], kept, "a registration");

    // The 16 KiB bound counts the text as kept: whitespace is not stored.
    let padded = format!(
        r#"{{"k":"{}"{}}}"#,
        "x".repeat(16 * 1024 - 8),
        " ".repeat(4000)
    );
    let res = post_raw(
        &app,
        "/api/acsp/thread/message",
        Some(&app.key),
        format!(r#"{{"aid":"{alice}","thread_id":"{thread}","content":"n","metadata":{padded}}}"#),
    )
    .await;
    assert_eq!(res.status(), 201);
    let over = format!(r#"{{"k":"{}"}}"#, "x".repeat(16 * 1024 - 7));
    let res = post_raw(
        &app,
        "/api/acsp/thread/message",
        Some(&app.key),
        format!(r#"{{"aid":"{alice}","thread_id":"{thread}","content":"n","metadata":{over}}}"#),
    )
    .await;
    assert_422_on(res, "metadata", "over 16 KiB").await;
}

#[tokio::test]
async fn names_of_nothing_visible_and_line_separators_in_one_line_text_are_422() {
    let app = spawn_app_with(|c| {
        c.open_registration = true;
        c.rate_limit_per_minute = 0;
        c.registration_rate_limit_per_minute = 0;
    })
    .await;
    let (alice, bob) = (&app.alice.aid, &app.bob.aid);
    let (tt, _) = app.grant_for(&app.key, None).await;
    let threads_before = app.stored_threads();
    let agents_before = app.db_count("SELECT count(*) FROM agents");
    let messages_before = app.stored_messages();

    // Unicode's default-ignorable code points show as nothing: a variation
    // selector, a tag character, a Mongolian variation selector, a Khmer
    // inherent vowel, a deprecated format character, a noncharacter-range
    // format, a shorthand format control, a musical formatting character.
    let blank = [
        "\u{FE0F}",
        "\u{E0020}\u{E0041}",
        "\u{180B}",
        "\u{17B4}",
        "\u{206A}",
        "\u{FFF0}",
        "\u{1BCA0}",
        "\u{1D173}",
        "\u{FE0F} \u{200B}",
    ];
    // One line: the line and paragraph separators break it as a newline does.
    let broken = ["a\u{2028}b", "a\u{2029}b"];
    for text in blank.iter().chain(&broken) {
        let case = format!("{text:?}");
        let res = app
            .create_thread(
                &app.key,
                json!({"aid": alice, "target_aid": bob, "subject": text}),
            )
            .await;
        assert_422_on(res, "subject", &case).await;
        let res = app
            .post_json(
                "/api/acsp/agent-init",
                &app.key,
                &json!({"agent_name": text, "capabilities": []}),
            )
            .await;
        assert_422_on(res, "agent_name", &case).await;
        let res = app
            .post_json(
                "/api/acsp/agent-init",
                &app.key,
                &json!({"agent_name": "ok", "capabilities": [text]}),
            )
            .await;
        assert_422_on(res, "capabilities[0]", &case).await;
        let res = app
            .post_json(
                "/v1/turn-taking/actions/submit_messages",
                &app.key,
                &json!({"thread_id": tt, "messages": [{"sender": text, "content": "hi"}]}),
            )
            .await;
        assert_422_on(res, "messages[0].sender", &case).await;
        let res = app
            .post_json(
                "/api/acsp/webhooks",
                &app.key,
                &json!({"url": "https://example.com/hook", "events": ["thread.message"], "description": text}),
            )
            .await;
        assert_422_on(res, "description", &case).await;
    }
    // A description of nothing visible is refused too (it may span lines).
    for text in blank {
        let res = app
            .post_json(
                "/api/acsp/agent-init",
                &app.key,
                &json!({"agent_name": "ok", "capabilities": [], "description": text}),
            )
            .await;
        assert_422_on(res, "description", &format!("{text:?}")).await;
    }
    assert_eq!(app.stored_threads(), threads_before, "a thread was stored");
    assert_eq!(
        app.stored_messages(),
        messages_before,
        "a message was stored"
    );
    assert_eq!(app.db_count("SELECT count(*) FROM agents"), agents_before);
    assert_eq!(app.db_count("SELECT count(*) FROM webhooks"), 0);

    // Beside something visible they stay allowed: an emoji's variation
    // selector, a flag's tags, a joiner.
    for text in [
        "❤\u{FE0F}",
        "🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}",
        "👨\u{200D}💻",
    ] {
        let res = app
            .create_thread(
                &app.key,
                json!({"aid": alice, "target_aid": bob, "subject": text}),
            )
            .await;
        let (status, body) = json_of(res).await;
        assert_eq!(status, 201, "{text:?}: {body}");
        assert_eq!(body["thread"]["subject"], text);
    }
}

#[tokio::test]
async fn a_turn_taking_message_sent_as_an_array_is_422_and_nothing_is_stored() {
    let app = spawn_app().await;
    let (thread, _) = app.grant_for(&app.key, None).await;
    // serde reads a struct from an array too, field by field: three items
    // were stored as sender, content and client_ts. The contract's
    // messages are objects; the body itself already had to be one.
    for (messages, field) in [
        (
            json!([["dana", "hello there", "2026-11-30T00:00:00Z"]]),
            "messages[0]",
        ),
        (json!([["dana", "hello there"]]), "messages[0]"),
        (
            json!([{"sender": "dana", "content": "hi"}, ["dana", "again", "2026-11-30T00:00:00Z", 4]]),
            "messages[1]",
        ),
    ] {
        let res = app
            .post_json(
                "/v1/turn-taking/actions/submit_messages",
                &app.key,
                &json!({"thread_id": thread, "messages": messages}),
            )
            .await;
        let body = assert_422_on(res, field, &messages.to_string()).await;
        assert_eq!(
            body["error"]["message"],
            format!("{field} must be a JSON object, not an array"),
            "{body}"
        );
    }
    assert_eq!(app.stored_messages(), 0, "a message was stored");

    // Objects, as before; a field given twice in one is still named.
    let res = app
        .post_json(
            "/v1/turn-taking/actions/submit_messages",
            &app.key,
            &json!({"thread_id": thread, "messages": [{"sender": "dana", "content": "hi", "client_ts": "2026-11-30T00:00:00Z"}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = post_raw(
        &app,
        "/v1/turn-taking/actions/submit_messages",
        Some(&app.key),
        format!(
            r#"{{"thread_id":"{thread}","messages":[{{"sender":"a","sender":"b","content":"x"}}]}}"#
        ),
    )
    .await;
    assert_422_on(res, "messages[0].sender", "sender twice").await;
    assert_eq!(app.stored_messages(), 1);
}

#[tokio::test]
async fn a_webhook_url_with_port_0_is_422_and_nothing_is_stored() {
    let app = spawn_app_with(|c| c.allow_private_webhooks = true).await;
    // Port 0 cannot be connected to: every delivery would fail, for the
    // 31 hours of retries, and then the endpoint be disabled.
    for url in [
        "https://example.com:0/hook",
        "http://127.0.0.1:0/hook",
        "http://[::1]:00/h",
    ] {
        let res = app
            .post_json(
                "/api/acsp/webhooks",
                &app.key,
                &json!({"url": url, "events": ["thread.message"]}),
            )
            .await;
        let body = assert_422_on(res, "url", url).await;
        assert!(
            body["error"]["message"].as_str().unwrap().contains("port"),
            "{body}"
        );
    }
    assert_eq!(app.db_count("SELECT count(*) FROM webhooks"), 0);
    let res = app
        .post_json(
            "/api/acsp/webhooks",
            &app.key,
            &json!({"url": "http://127.0.0.1:1/hook", "events": ["thread.message"]}),
        )
        .await;
    assert_eq!(res.status(), 201);
}
