//! The error envelope on every non-2xx answer: unknown routes, wrong methods,
//! authentication, malformed and invalid bodies, size limits. Every failure
//! also proves that nothing was stored.

use std::collections::HashSet;

use reqwest::{Method, Response};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with, TestApp};

/// A well-formed thread id that no thread has.
const NO_THREAD: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

/// A request with an optional `Authorization` header value and a raw body.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<String>,
) -> Response {
    let mut req = app.client.request(method, app.url(path));
    if let Some(auth) = authorization {
        req = req.header("Authorization", auth);
    }
    if let Some(body) = body {
        req = req.header("Content-Type", "application/json").body(body);
    }
    req.send().await.expect("request")
}

/// Posts a raw body with the seed key.
async fn post_raw(app: &TestApp, path: &str, body: String) -> Response {
    let auth = format!("Bearer {}", app.key);
    send(app, Method::POST, path, Some(&auth), Some(body)).await
}

/// Asserts that nothing at all was stored: no thread, no message.
fn assert_nothing_stored(app: &TestApp, case: &str) {
    assert_eq!(app.stored_threads(), 0, "a thread was stored: {case}");
    assert_eq!(app.stored_messages(), 0, "a message was stored: {case}");
}

/// The X-Request-Id of a response, checked for shape.
fn request_id(res: &Response) -> String {
    let id = res
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on a {}", res.status()))
        .to_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("req_") && id.len() > 8, "request id {id}");
    id
}

#[tokio::test]
async fn unknown_routes_are_404_in_the_envelope() {
    let app = spawn_app().await;
    let auth = format!("Bearer {}", app.key);
    let cases = [
        (Method::GET, "/nope", None),
        (Method::GET, "/api/acsp/nope", Some(auth.as_str())),
        (
            Method::POST,
            "/api/acsp/thread/create/extra",
            Some(auth.as_str()),
        ),
        (Method::GET, "/api/acsp/threads/extra", Some(auth.as_str())),
        (Method::DELETE, "/v1/turn-taking/nope", None),
        (Method::GET, "/inspect/nope", None),
    ];
    for (method, path, auth) in cases {
        let res = send(&app, method.clone(), path, auth, None).await;
        assert_eq!(res.status(), 404, "{method} {path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/json",
            "{method} {path}"
        );
        assert_error(res, 404, "NOT_FOUND").await;
    }
}

#[tokio::test]
async fn a_wrong_method_on_a_known_path_is_405_in_the_envelope() {
    let app = spawn_app().await;
    let auth = format!("Bearer {}", app.key);
    let thread = format!("/api/acsp/thread/{NO_THREAD}");
    let cases = [
        (Method::GET, "/api/acsp/thread/create"),
        (Method::GET, "/api/acsp/thread/message"),
        (Method::GET, "/api/acsp/thread/status"),
        (Method::PUT, "/api/acsp/thread/create"),
        (Method::DELETE, "/api/acsp/threads"),
        (Method::POST, "/api/acsp/threads"),
        (Method::POST, thread.as_str()),
        (Method::DELETE, thread.as_str()),
        (Method::GET, "/api/acsp/agent-init"),
        (Method::POST, "/healthz"),
    ];
    for (method, path) in cases {
        let body = Some(json!({"aid": app.alice.aid, "target_aid": app.bob.aid}).to_string());
        let res = send(&app, method.clone(), path, Some(&auth), body).await;
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_error(res, 405, "METHOD_NOT_ALLOWED").await;
    }
    assert_nothing_stored(&app, "405");
}

/// RFC 9110: a 405 lists in `Allow` the methods the resource does serve.
#[tokio::test]
async fn a_405_names_in_allow_the_methods_the_path_serves() {
    let app = spawn_app().await;
    let auth = format!("Bearer {}", app.key);
    let thread = format!("/api/acsp/thread/{NO_THREAD}");
    let cases = [
        // POST only.
        (Method::GET, "/api/acsp/thread/create", vec!["POST"]),
        (Method::PUT, "/api/acsp/agent-init", vec!["POST"]),
        // GET only (and HEAD, which comes with GET).
        (Method::POST, "/healthz", vec!["GET", "HEAD"]),
        (Method::DELETE, thread.as_str(), vec!["GET", "HEAD"]),
        (Method::POST, "/v1/ws", vec!["GET"]),
        // Several.
        (
            Method::PUT,
            "/api/acsp/webhooks",
            vec!["GET", "HEAD", "POST"],
        ),
        (
            Method::PATCH,
            "/api/acsp/webhooks",
            vec!["GET", "HEAD", "POST"],
        ),
        (Method::GET, "/api/acsp/webhooks/wh_x", vec!["DELETE"]),
    ];
    for (method, path, expected) in cases {
        let res = send(&app, method.clone(), path, Some(&auth), None).await;
        let allow = res
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"))
            .to_str()
            .unwrap()
            .to_owned();
        let mut listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        listed.sort_unstable();
        assert_eq!(listed, expected, "{method} {path}: Allow: {allow}");
        assert_error(res, 405, "METHOD_NOT_ALLOWED").await;
    }
    // A served method is not refused, whatever Allow says.
    let res = send(&app, Method::GET, "/api/acsp/webhooks", Some(&auth), None).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("allow").is_none());
}

#[tokio::test]
async fn a_missing_or_bad_key_is_401_and_stores_nothing() {
    let app = spawn_app().await;
    let unknown = format!("nk_{}", "A".repeat(43));
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("Basic credentials", Some("Basic dXNlcjpwYXNz".into())),
        ("Bearer without a key", Some("Bearer".into())),
        ("Bearer and a space", Some("Bearer ".into())),
        ("the key without Bearer", Some(app.key.clone())),
        ("another scheme", Some(format!("Token {}", app.key))),
        ("a key too short", Some("Bearer nk_short".into())),
        (
            "a key with a character added",
            Some(format!("Bearer {}x", app.key)),
        ),
        (
            "a well-formed unknown key",
            Some(format!("Bearer {unknown}")),
        ),
    ];
    let create = json!({"aid": app.alice.aid, "target_aid": app.bob.aid, "first_message": "x"});
    for (case, auth) in &cases {
        let res = send(
            &app,
            Method::POST,
            "/api/acsp/thread/create",
            auth.as_deref(),
            Some(create.to_string()),
        )
        .await;
        assert_eq!(res.status(), 401, "create: {case}");
        assert_error(res, 401, "UNAUTHORIZED").await;
        let res = send(
            &app,
            Method::GET,
            "/api/acsp/threads",
            auth.as_deref(),
            None,
        )
        .await;
        assert_eq!(res.status(), 401, "list: {case}");
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
    assert_nothing_stored(&app, "401");
}

#[tokio::test]
async fn a_key_revoked_after_writing_is_refused_on_its_next_write() {
    // A write caches the key's account in the writer; a revocation from the
    // command line (another connection) must still win on the next write.
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let thread = app.thread_between(&carol, &app.alice).await;
    app.say(&carol, &thread, "before the revocation").await;
    threadline::cli::key_revoke(&app.db, &carol.key).expect("revoke");
    let res = app
        .post_message(
            &carol.key,
            json!({"aid": carol.aid, "thread_id": thread, "content": "after"}),
        )
        .await;
    assert_error(res, 401, "UNAUTHORIZED").await;
    assert_eq!(app.stored_messages(), 1);
}

#[tokio::test]
async fn a_revoked_key_is_refused_from_its_next_request() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    assert_eq!(app.list_threads(&carol.key, "").await.status(), 200);
    threadline::cli::key_revoke(&app.db, &carol.key).expect("revoke");
    assert_error(app.list_threads(&carol.key, "").await, 401, "UNAUTHORIZED").await;
    let res = app
        .create_thread(
            &carol.key,
            json!({"aid": carol.aid, "target_aid": app.alice.aid}),
        )
        .await;
    assert_error(res, 401, "UNAUTHORIZED").await;
    assert_nothing_stored(&app, "revoked key");
    // Other keys are unaffected.
    assert_eq!(
        app.list_threads(&app.key, &format!("aid={}", app.alice.aid))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn malformed_json_and_bodies_that_are_not_objects_are_422() {
    let app = spawn_app().await;
    let (a, b) = (app.alice.aid.as_str(), app.bob.aid.as_str());
    let cases: Vec<(&str, String)> = vec![
        ("an empty body", String::new()),
        ("not JSON", "hello".into()),
        (
            "truncated JSON",
            format!(r#"{{"aid": "{a}", "target_aid": "#),
        ),
        (
            "a trailing comma",
            format!(r#"{{"aid": "{a}", "target_aid": "{b}",}}"#),
        ),
        (
            "trailing garbage",
            format!(r#"{{"aid": "{a}", "target_aid": "{b}"}} x"#),
        ),
        ("an empty array", "[]".into()),
        // serde would read a struct from a sequence, field by field: the API
        // takes objects only.
        (
            "an array of the fields in order",
            json!([a, b, "subject", "hello", {}]).to_string(),
        ),
        ("a string", json!("a string").to_string()),
        ("a number", "42".into()),
        ("true", "true".into()),
        ("null", "null".into()),
    ];
    for (case, body) in cases {
        let res = post_raw(&app, "/api/acsp/thread/create", body).await;
        assert_eq!(res.status(), 422, "{case}");
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(
            body["error"].get("field"),
            None,
            "no single field is at fault: {case}"
        );
        assert_nothing_stored(&app, case);
    }
}

#[tokio::test]
async fn missing_required_fields_are_422_naming_the_field() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (a, b) = (app.alice.aid.as_str(), app.bob.aid.as_str());
    let cases = [
        (
            "create without aid",
            "/api/acsp/thread/create",
            json!({"target_aid": b}),
            "aid",
        ),
        (
            "create without target_aid",
            "/api/acsp/thread/create",
            json!({"aid": a}),
            "target_aid",
        ),
        (
            "create with a null aid",
            "/api/acsp/thread/create",
            json!({"aid": null, "target_aid": b}),
            "aid",
        ),
        (
            "create with an empty object",
            "/api/acsp/thread/create",
            json!({}),
            "aid",
        ),
        (
            "message without aid",
            "/api/acsp/thread/message",
            json!({"thread_id": thread, "content": "x"}),
            "aid",
        ),
        (
            "message without thread_id",
            "/api/acsp/thread/message",
            json!({"aid": a, "content": "x"}),
            "thread_id",
        ),
        (
            "message without content",
            "/api/acsp/thread/message",
            json!({"aid": a, "thread_id": thread}),
            "content",
        ),
        (
            "message with null content",
            "/api/acsp/thread/message",
            json!({"aid": a, "thread_id": thread, "content": null}),
            "content",
        ),
        (
            "status without aid",
            "/api/acsp/thread/status",
            json!({"thread_id": thread, "status": "closed"}),
            "aid",
        ),
        (
            "status without thread_id",
            "/api/acsp/thread/status",
            json!({"aid": a, "status": "closed"}),
            "thread_id",
        ),
        (
            "status without status",
            "/api/acsp/thread/status",
            json!({"aid": a, "thread_id": thread}),
            "status",
        ),
    ];
    for (case, path, body, field) in cases {
        let res = app.post_json(path, &app.key, &body).await;
        assert_eq!(res.status(), 422, "{case}");
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], field, "{case}");
    }
    assert_eq!(app.stored_threads(), 1, "only the setup thread");
    assert_eq!(app.stored_messages(), 0);
}

#[tokio::test]
async fn wrong_types_and_malformed_ids_are_422_naming_the_field() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (a, b) = (app.alice.aid.as_str(), app.bob.aid.as_str());
    let create = "/api/acsp/thread/create";
    let message = "/api/acsp/thread/message";
    let cases = [
        (
            "aid a number",
            create,
            json!({"aid": 5, "target_aid": b}),
            "aid",
        ),
        (
            "aid uppercase hex",
            create,
            json!({"aid": a.to_uppercase(), "target_aid": b}),
            "aid",
        ),
        (
            "aid 49 characters",
            create,
            json!({"aid": &a[..49], "target_aid": b}),
            "aid",
        ),
        (
            "target_aid not hex",
            create,
            json!({"aid": a, "target_aid": "z".repeat(50)}),
            "target_aid",
        ),
        (
            "subject a number",
            create,
            json!({"aid": a, "target_aid": b, "subject": 5}),
            "subject",
        ),
        (
            "first_message an object",
            create,
            json!({"aid": a, "target_aid": b, "first_message": {}}),
            "first_message",
        ),
        (
            "thread_id not a UUID",
            message,
            json!({"aid": a, "thread_id": "t1", "content": "x"}),
            "thread_id",
        ),
        (
            "thread_id a number",
            message,
            json!({"aid": a, "thread_id": 7, "content": "x"}),
            "thread_id",
        ),
        (
            "content a number",
            message,
            json!({"aid": a, "thread_id": thread, "content": 5}),
            "content",
        ),
        (
            "content an array",
            message,
            json!({"aid": a, "thread_id": thread, "content": ["x"]}),
            "content",
        ),
        (
            "msg_type a number",
            message,
            json!({"aid": a, "thread_id": thread, "content": "x", "msg_type": 1}),
            "msg_type",
        ),
    ];
    for (case, path, body, field) in cases {
        let res = app.post_json(path, &app.key, &body).await;
        assert_eq!(res.status(), 422, "{case}");
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], field, "{case}");
    }
    assert_eq!(app.stored_threads(), 1, "only the setup thread");
    assert_eq!(app.stored_messages(), 0);
}

#[tokio::test]
async fn a_post_with_a_wrong_type_is_refused_in_the_same_words_as_a_thread_create() {
    // The post route reads its body into borrowed strings, the create route
    // into owned ones: a wrong type must read the same either way.
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (a, b) = (app.alice.aid.as_str(), app.bob.aid.as_str());
    let cases = [
        (
            "aid",
            json!({"aid": 5, "target_aid": b}),
            json!({"aid": 5, "thread_id": thread, "content": "x"}),
        ),
        (
            "aid",
            json!({"aid": [a], "target_aid": b}),
            json!({"aid": [a], "thread_id": thread, "content": "x"}),
        ),
        (
            "first_message/content",
            json!({"aid": a, "target_aid": b, "first_message": {"x": 1}}),
            json!({"aid": a, "thread_id": thread, "content": {"x": 1}}),
        ),
        (
            "subject/msg_type",
            json!({"aid": a, "target_aid": b, "subject": true}),
            json!({"aid": a, "thread_id": thread, "content": "x", "msg_type": true}),
        ),
    ];
    for (case, create, post) in cases {
        let created = app
            .post_json("/api/acsp/thread/create", &app.key, &create)
            .await;
        let created = assert_error(created, 422, "VALIDATION_ERROR").await;
        let posted = app
            .post_json("/api/acsp/thread/message", &app.key, &post)
            .await;
        let posted = assert_error(posted, 422, "VALIDATION_ERROR").await;
        let words = |body: &serde_json::Value, field: &str| {
            let message = body["error"]["message"].as_str().expect("a message");
            assert_eq!(body["error"]["field"], field, "{case}: {body}");
            message
                .strip_prefix(field)
                .expect("names the field")
                .to_owned()
        };
        let (create_field, post_field) = case.split_once('/').unwrap_or((case, case));
        assert_eq!(
            words(&created, create_field),
            words(&posted, post_field),
            "{case}"
        );
    }
    let thread = json!({"aid": a, "thread_id": 5, "content": "x"});
    let res = app
        .post_json("/api/acsp/thread/message", &app.key, &thread)
        .await;
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(
        body["error"]["message"],
        "thread_id must be a string, not an integer"
    );
    assert_eq!(app.stored_threads(), 1, "only the setup thread");
    assert_eq!(app.stored_messages(), 0);
}

#[tokio::test]
async fn text_lengths_are_counted_in_unicode_scalars_at_the_exact_boundaries() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (a, b) = (app.alice.aid.as_str(), app.bob.aid.as_str());

    // (case, content, accepted)
    let contents = [
        ("2048 ASCII characters", "x".repeat(2048), true),
        ("2049 ASCII characters", "x".repeat(2049), false),
        ("2048 emoji (8192 bytes)", "😀".repeat(2048), true),
        ("2049 emoji", "😀".repeat(2049), false),
        ("2048 two-byte characters", "é".repeat(2048), true),
        ("empty", String::new(), false),
    ];
    for (case, content, accepted) in contents {
        let before = app.stored_messages();
        let res = app
            .post_message(
                &app.key,
                json!({"aid": a, "thread_id": thread, "content": content}),
            )
            .await;
        if accepted {
            let (status, body) = json_of(res).await;
            assert_eq!(status, 201, "content {case}: {body}");
            assert_eq!(
                body["message"]["content"],
                content.as_str(),
                "stored as sent: {case}"
            );
            assert_eq!(app.stored_messages(), before + 1, "{case}");
        } else {
            assert_eq!(res.status(), 422, "content {case}");
            let body = assert_error(res, 422, "VALIDATION_ERROR").await;
            assert_eq!(body["error"]["field"], "content", "{case}");
            assert_eq!(app.stored_messages(), before, "nothing stored: {case}");
        }
    }

    // (case, extra fields of create, accepted, field at fault)
    let creates = [
        (
            "subject of 256",
            json!({"subject": "s".repeat(256)}),
            true,
            "",
        ),
        (
            "subject of 256 emoji",
            json!({"subject": "🧵".repeat(256)}),
            true,
            "",
        ),
        (
            "subject of 257",
            json!({"subject": "s".repeat(257)}),
            false,
            "subject",
        ),
        (
            "subject of 257 emoji",
            json!({"subject": "🧵".repeat(257)}),
            false,
            "subject",
        ),
        ("empty subject", json!({"subject": ""}), false, "subject"),
        (
            "first_message of 2048 emoji",
            json!({"first_message": "😀".repeat(2048)}),
            true,
            "",
        ),
        (
            "first_message of 2049",
            json!({"first_message": "x".repeat(2049)}),
            false,
            "first_message",
        ),
        (
            "empty first_message",
            json!({"first_message": ""}),
            false,
            "first_message",
        ),
    ];
    for (case, extra, accepted, field) in creates {
        let mut body = json!({"aid": a, "target_aid": b});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (threads, messages) = (app.stored_threads(), app.stored_messages());
        let res = app.create_thread(&app.key, body).await;
        if accepted {
            let (status, created) = json_of(res).await;
            assert_eq!(status, 201, "{case}: {created}");
            if let Some(subject) = extra.get("subject") {
                assert_eq!(&created["thread"]["subject"], subject, "{case}");
            }
            assert_eq!(app.stored_threads(), threads + 1, "{case}");
        } else {
            assert_eq!(res.status(), 422, "{case}");
            let err = assert_error(res, 422, "VALIDATION_ERROR").await;
            assert_eq!(err["error"]["field"], field, "{case}");
            assert_eq!(app.stored_threads(), threads, "no thread stored: {case}");
            assert_eq!(app.stored_messages(), messages, "no message stored: {case}");
        }
    }
}

#[tokio::test]
async fn metadata_must_be_an_object_of_at_most_16_kib() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (a, b) = (app.alice.aid.as_str(), app.bob.aid.as_str());
    // {"k":"…"} is 8 bytes around the string.
    let exactly_16_kib = json!({"k": "m".repeat(16 * 1024 - 8)});
    assert_eq!(exactly_16_kib.to_string().len(), 16 * 1024);
    let one_byte_over = json!({"k": "m".repeat(16 * 1024 - 7)});

    let cases = [
        ("an array", json!([1]), false),
        ("a string", json!("x"), false),
        ("a number", json!(5), false),
        ("a boolean", json!(true), false),
        ("exactly 16 KiB", exactly_16_kib, true),
        ("16 KiB and one byte", one_byte_over, false),
    ];
    for (case, metadata, accepted) in cases {
        let (threads, messages) = (app.stored_threads(), app.stored_messages());
        let on_create = app
            .create_thread(
                &app.key,
                json!({"aid": a, "target_aid": b, "metadata": metadata}),
            )
            .await;
        let on_message = app
            .post_message(
                &app.key,
                json!({"aid": a, "thread_id": thread, "content": "x", "metadata": metadata}),
            )
            .await;
        if accepted {
            let (s1, t) = json_of(on_create).await;
            assert_eq!(s1, 201, "create, {case}");
            assert_eq!(t["thread"]["metadata"], metadata, "echoed: {case}");
            let (s2, m) = json_of(on_message).await;
            assert_eq!(s2, 201, "message, {case}");
            assert_eq!(m["message"]["metadata"], metadata, "echoed: {case}");
        } else {
            for res in [on_create, on_message] {
                assert_eq!(res.status(), 422, "{case}");
                let err = assert_error(res, 422, "VALIDATION_ERROR").await;
                assert_eq!(err["error"]["field"], "metadata", "{case}");
            }
            assert_eq!(app.stored_threads(), threads, "no thread stored: {case}");
            assert_eq!(app.stored_messages(), messages, "no message stored: {case}");
        }
    }
}

/// A valid thread/message body padded (with an ignored field) to exactly `len` bytes.
fn message_body_of_len(app: &TestApp, thread: &str, len: usize) -> String {
    let body = |pad: usize| {
        let padding = "p".repeat(pad);
        json!({"aid": app.alice.aid, "thread_id": thread, "content": "padded", "pad": padding})
            .to_string()
    };
    let base = body(0).len();
    let text = body(len - base);
    assert_eq!(text.len(), len);
    text
}

#[tokio::test]
async fn a_body_over_64_kib_is_413_and_stores_nothing() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;

    let over = message_body_of_len(&app, &thread, 64 * 1024 + 1);
    let res = post_raw(&app, "/api/acsp/thread/message", over).await;
    assert_error(res, 413, "PAYLOAD_TOO_LARGE").await;
    let big = json!({"aid": app.alice.aid, "target_aid": app.bob.aid, "pad": "p".repeat(100_000)});
    let res = post_raw(&app, "/api/acsp/thread/create", big.to_string()).await;
    assert_error(res, 413, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(app.stored_messages(), 0);
    assert_eq!(app.stored_threads(), 1, "only the setup thread");

    // Exactly 64 KiB is still accepted.
    let exact = message_body_of_len(&app, &thread, 64 * 1024);
    let (status, body) = json_of(post_raw(&app, "/api/acsp/thread/message", exact).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(app.stored_messages(), 1);
}

#[tokio::test]
async fn a_chunked_body_over_64_kib_is_413_too() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let body = message_body_of_len(&app, &thread, 64 * 1024 + 1000);
    let addr = app.base.trim_start_matches("http://").to_owned();

    // No Content-Length: the size is only known while reading.
    let mut request = format!(
        "POST /api/acsp/thread/message HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.key
    )
    .into_bytes();
    for chunk in body.as_bytes().chunks(4096) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // The server may answer (and stop reading) before the whole body is sent.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(crate::helpers::WAIT, stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "got: {response}");
    assert!(response.contains("PAYLOAD_TOO_LARGE"), "got: {response}");
    assert!(
        response.to_ascii_lowercase().contains("x-request-id: req_"),
        "got: {response}"
    );
    assert_eq!(app.stored_messages(), 0);
}

#[tokio::test]
async fn every_response_carries_a_distinct_request_id() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let closed = app.thread_between(&app.alice, &app.bob).await;
    let res = app
        .set_status(
            &app.key,
            json!({"aid": app.alice.aid, "thread_id": closed, "status": "closed"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let a = app.alice.aid.as_str();
    let mut responses = vec![
        app.create_thread(&app.key, json!({"aid": a, "target_aid": app.bob.aid}))
            .await,
        app.post_message(
            &app.key,
            json!({"aid": a, "thread_id": thread, "content": "x"}),
        )
        .await,
        app.get_thread(&app.key, &thread, &format!("aid={a}")).await,
        app.list_threads(&app.key, &format!("aid={a}")).await,
        app.client.get(app.url("/healthz")).send().await.unwrap(),
        app.get("/nowhere", &app.key).await,
        app.get("/api/acsp/thread/create", &app.key).await,
        app.list_threads("nk_wrong", "").await,
        app.list_threads(&app.key, "").await,
        app.post_message(
            &app.key,
            json!({"aid": a, "thread_id": closed, "content": "x"}),
        )
        .await,
        app.post_json("/api/acsp/agent-init", &app.key, &json!({}))
            .await,
    ];
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses,
        vec![201, 201, 200, 200, 200, 404, 405, 401, 422, 409, 403]
    );
    let mut seen = HashSet::new();
    for res in responses.drain(..) {
        let id = request_id(&res);
        assert!(seen.insert(id.clone()), "request id {id} repeated");
        if !res.status().is_success() {
            let (_, body) = json_of(res).await;
            assert_eq!(
                body["error"]["request_id"],
                id.as_str(),
                "same id in the body"
            );
        }
    }
}

/// A sanity check of the harness: a check for the wrong error code must fail,
/// or every "is 4xx with code X" assertion above could pass vacuously.
#[tokio::test]
#[should_panic(expected = "code; body")]
async fn checking_for_the_wrong_error_code_fails() {
    let app = spawn_app().await;
    let res = app.get("/nowhere", &app.key).await;
    assert_error(res, 404, "FORBIDDEN").await;
}

/// The same for the status: a 404 is not a 403.
#[tokio::test]
#[should_panic(expected = "status; body")]
async fn checking_for_the_wrong_status_fails() {
    let app = spawn_app().await;
    let res = app.get("/nowhere", &app.key).await;
    assert_error(res, 403, "NOT_FOUND").await;
}

/// And "nothing was stored" really reads the database: after a successful
/// create, the check must fail.
#[tokio::test]
#[should_panic(expected = "a thread was stored")]
async fn the_nothing_stored_check_sees_a_stored_thread() {
    let app = spawn_app().await;
    app.thread_between(&app.alice, &app.bob).await;
    assert_nothing_stored(&app, "deliberate");
}
