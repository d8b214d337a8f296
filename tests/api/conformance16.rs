//! Conformance, round 16: the seeds' own requests, sent as a client written
//! from them would send them, and which answer wins when a request is wrong
//! in more than one way. One test per divergence found, and the order of
//! the answers pinned route by route.

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with, Agent, TestApp};

/// A well-formed thread id that no thread has.
const NO_THREAD: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

/// A request with a raw body (sent as given, `Content-Type:
/// application/json`) and, if given, an `Authorization: Bearer` key.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<String>,
) -> Response {
    let mut req = app.client.request(method, app.url(path));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.header("Content-Type", "application/json").body(body);
    }
    req.send().await.expect("request")
}

/// What a refused request must leave as it was: threads, messages, the
/// event log, turns (epochs, decisions, scheduled replies), read marks,
/// idempotency keys, webhooks and accounts.
pub(crate) fn stored(app: &TestApp) -> Vec<i64> {
    [
        "SELECT COUNT(*) FROM threads",
        "SELECT COUNT(*) FROM messages",
        "SELECT COUNT(*) FROM events",
        "SELECT CAST(COALESCE(SUM(turn_epoch), 0) AS BIGINT) FROM threads",
        "SELECT COUNT(*) FROM turn_decisions",
        "SELECT COUNT(*) FROM scheduled_replies",
        "SELECT COUNT(*) FROM read_marks",
        "SELECT COUNT(*) FROM idempotency_keys",
        "SELECT COUNT(*) FROM webhooks",
        "SELECT COUNT(*) FROM accounts",
    ]
    .iter()
    .map(|sql| app.db_count(sql))
    .collect()
}

/// One request of every route that takes a login key, each wrong in what
/// it sends (body or query), as (name, method, path, body).
fn wrong_content(
    thread: &str,
    turn: &str,
    aid: &str,
) -> Vec<(&'static str, Method, String, Option<String>)> {
    let post = |name, path: &str, body: Value| {
        (name, Method::POST, path.to_owned(), Some(body.to_string()))
    };
    let get = |name, path: String| (name, Method::GET, path, None);
    vec![
        (
            "create, malformed JSON",
            Method::POST,
            "/api/acsp/thread/create".into(),
            Some("{\"aid\": ".into()),
        ),
        (
            "create, empty subject",
            Method::POST,
            "/api/acsp/thread/create".into(),
            Some(json!({"aid": aid, "target_aid": aid, "subject": ""}).to_string()),
        ),
        post(
            "message, empty content",
            "/api/acsp/thread/message",
            json!({"aid": aid, "thread_id": thread, "content": ""}),
        ),
        post(
            "status, unknown status",
            "/api/acsp/thread/status",
            json!({"aid": aid, "thread_id": thread, "status": "deleted"}),
        ),
        get("get, limit 0", format!("/api/acsp/thread/{thread}?limit=0")),
        get(
            "get by query, not a uuid",
            "/api/acsp/thread?thread_id=42".into(),
        ),
        get(
            "list, unknown status",
            "/api/acsp/threads?status=open".into(),
        ),
        post(
            "realtime/open, no aid",
            "/api/acsp/realtime/open",
            json!({}),
        ),
        post(
            "open_thread, not a uuid",
            "/v1/turn-taking/actions/open_thread",
            json!({"thread_id": "42"}),
        ),
        post(
            "submit_messages, no messages",
            "/v1/turn-taking/actions/submit_messages",
            json!({"thread_id": turn, "messages": []}),
        ),
        post(
            "respond, no turn_epoch",
            "/v1/turn-taking/actions/respond",
            json!({"thread_id": turn, "content": "hi"}),
        ),
        post(
            "record_event, unknown type",
            "/v1/turn-taking/actions/record_event",
            json!({"thread_id": turn, "type": "typing", "sender": "dana"}),
        ),
        get(
            "turns, limit 0",
            format!("/v1/turn-taking/threads/{turn}/turns?limit=0"),
        ),
        get("event stream, not a uuid", "/v1/sse?thread_id=42".into()),
        get(
            "event stream, bad position",
            format!("/v1/sse?thread_id={turn}&after_position=x"),
        ),
        post(
            "webhook create, no url",
            "/api/acsp/webhooks",
            json!({"events": ["thread.message"]}),
        ),
        (
            "create, over 64 KiB",
            Method::POST,
            "/api/acsp/thread/create".into(),
            Some(json!({"aid": aid, "metadata": {"pad": "x".repeat(70_000)}}).to_string()),
        ),
    ]
}

/// The login key is checked before what a request sends: a key that was
/// revoked (or never existed) is `401` whatever is wrong with the body or
/// the query. The key is looked up in the same store call as the request's
/// work, so a request refused before that call (`422`, `413`) was answered
/// for its body: a revoked client was sent to fix a body that was fine but
/// for the key, while a malformed `Authorization` header was `401` first.
/// Every one of these requests is `422`/`413` with a live key, `401` with a
/// revoked or made-up one, and nothing is stored.
#[tokio::test]
async fn a_revoked_or_unknown_key_is_refused_before_what_the_request_sends() {
    let app = spawn_app_with(|c| c.ip_rate_limit_per_minute = 1_000).await;
    let carol = app.new_agent("carol");
    let thread = app.thread_between(&carol, &app.alice).await;
    let (turn, _) = app.grant_for(&carol.key, None).await;
    let before = stored(&app);
    let cases = wrong_content(&thread, &turn, &carol.aid);

    for (case, method, path, body) in &cases {
        let res = send(&app, method.clone(), path, Some(&carol.key), body.clone()).await;
        let status = res.status().as_u16();
        assert!(
            status == 422 || status == 413,
            "live key, {case}: {status} {}",
            res.text().await.unwrap()
        );
    }
    threadline::cli::key_revoke(&app.db, &carol.key).expect("revoke");
    let made_up = format!("nk_{}", "Q".repeat(43));
    for key in [carol.key.as_str(), made_up.as_str()] {
        for (case, method, path, body) in &cases {
            let res = send(&app, method.clone(), path, Some(key), body.clone()).await;
            let error = assert_error(res, 401, "UNAUTHORIZED").await;
            assert_eq!(error["error"].get("field"), None, "{case}: {error}");
        }
    }
    // And without a key at all, as before.
    for (case, method, path, body) in &cases {
        let res = send(&app, method.clone(), path, None, body.clone()).await;
        let status = res.status();
        assert_eq!(status, 401, "no key, {case}: {}", res.text().await.unwrap());
    }
    assert_eq!(stored(&app), before);
}

/// The expected answer to one request of [`answers_in_order`].
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    key: Option<String>,
    body: Option<String>,
    status: u16,
    code: &'static str,
}

/// Sends every case and checks its status and code; nothing is stored.
async fn answers_in_order(app: &TestApp, cases: Vec<Case>) {
    let before = stored(app);
    for case in cases {
        let res = send(app, case.method, &case.path, case.key.as_deref(), case.body).await;
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        assert_eq!(status, case.status, "{}: {text}", case.name);
        let body: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(body["error"]["code"], case.code, "{}: {text}", case.name);
    }
    assert_eq!(stored(app), before, "a refused request stored something");
}

/// The order the README's API notes give ("Which answer wins"), route by
/// route: the route (404, 405), then the key (401, 429), then what was
/// sent (413, 422), then what is stored, in turn: the acting agent (403),
/// the thread or target (404), and last the thread's state (its kind 422,
/// 409 not active). Each request here is wrong in two ways or more and gets
/// the first answer of that order.
#[tokio::test]
async fn a_request_wrong_in_several_ways_gets_the_first_answer_in_the_documented_order() {
    let app = spawn_app_with(|c| c.ip_rate_limit_per_minute = 1_000).await;
    let key = Some(app.key.clone());
    let alice = &app.alice.aid;
    let (carol, dave) = (app.new_agent("carol"), app.new_agent("dave"));
    let revoked = app.new_agent("eve");
    threadline::cli::key_revoke(&app.db, &revoked.key).expect("revoke");
    let foreign = app.thread_between(&carol, &dave).await;
    let closed = app.thread_between(&app.alice, &app.bob).await;
    let res = app
        .set_status(
            &app.key,
            json!({"aid": alice, "thread_id": closed, "status": "closed"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let (own_turn, _) = app.grant_for(&app.key, None).await;
    let (foreign_turn, _) = app.grant_for(&carol.key, None).await;
    let long = "x".repeat(2049);
    let over = json!({"aid": alice, "metadata": {"pad": "x".repeat(70_000)}}).to_string();
    let case = |name,
                method: Method,
                path: &str,
                key: &Option<String>,
                body: Option<Value>,
                status,
                code| Case {
        name,
        method,
        path: path.to_owned(),
        key: key.clone(),
        body: body.map(|b| b.to_string()),
        status,
        code,
    };
    let none: Option<String> = None;
    let eve = Some(revoked.key.clone());
    let create = "/api/acsp/thread/create";
    let message = "/api/acsp/thread/message";
    let status = "/api/acsp/thread/status";
    let submit = "/v1/turn-taking/actions/submit_messages";
    let respond = "/v1/turn-taking/actions/respond";
    let mut cases = vec![
        // The route first: it needs no key.
        case(
            "405 without a key",
            Method::GET,
            create,
            &none,
            None,
            405,
            "METHOD_NOT_ALLOWED",
        ),
        case(
            "405 with a revoked key",
            Method::PUT,
            message,
            &eve,
            Some(json!({})),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        case(
            "unknown route, revoked key",
            Method::POST,
            "/api/acsp/threads/archive",
            &eve,
            None,
            404,
            "NOT_FOUND",
        ),
        case(
            "trailing slash, revoked key",
            Method::GET,
            "/api/acsp/threads/",
            &eve,
            None,
            404,
            "NOT_FOUND",
        ),
        // The key before what was sent.
        case(
            "no key, bad JSON",
            Method::POST,
            message,
            &none,
            None,
            401,
            "UNAUTHORIZED",
        ),
        case(
            "revoked key, wrong types",
            Method::POST,
            message,
            &eve,
            Some(json!({"aid": 7, "thread_id": [], "content": {}})),
            401,
            "UNAUTHORIZED",
        ),
        // What was sent before what is stored.
        case(
            "foreign aid, empty content",
            Method::POST,
            message,
            &key,
            Some(json!({"aid": carol.aid, "thread_id": closed, "content": ""})),
            422,
            "VALIDATION_ERROR",
        ),
        case(
            "unknown thread, unknown msg_type",
            Method::POST,
            message,
            &key,
            Some(
                json!({"aid": alice, "thread_id": NO_THREAD, "content": "hi", "msg_type": "note"}),
            ),
            422,
            "VALIDATION_ERROR",
        ),
        case(
            "foreign thread, content over 2048",
            Method::POST,
            message,
            &key,
            Some(json!({"aid": alice, "thread_id": foreign, "content": long})),
            422,
            "VALIDATION_ERROR",
        ),
        case(
            "closed thread, content over 2048",
            Method::POST,
            message,
            &key,
            Some(json!({"aid": alice, "thread_id": closed, "content": long})),
            422,
            "VALIDATION_ERROR",
        ),
        case(
            "foreign aid, unknown target, subject over 256",
            Method::POST,
            create,
            &key,
            Some(
                json!({"aid": carol.aid, "target_aid": "0".repeat(50), "subject": "s".repeat(257)}),
            ),
            422,
            "VALIDATION_ERROR",
        ),
        case(
            "foreign thread, unknown status",
            Method::POST,
            status,
            &key,
            Some(json!({"aid": alice, "thread_id": foreign, "status": "open"})),
            422,
            "VALIDATION_ERROR",
        ),
        case(
            "foreign turn thread, no messages",
            Method::POST,
            submit,
            &key,
            Some(json!({"thread_id": foreign_turn, "messages": []})),
            422,
            "VALIDATION_ERROR",
        ),
        case(
            "foreign turn thread, turn_epoch a string",
            Method::POST,
            respond,
            &key,
            Some(json!({"thread_id": foreign_turn, "content": "hi", "turn_epoch": "1"})),
            422,
            "VALIDATION_ERROR",
        ),
        case(
            "unknown thread, limit 0",
            Method::GET,
            &format!("/api/acsp/thread/{NO_THREAD}?aid={}&limit=0", carol.aid),
            &key,
            None,
            422,
            "VALIDATION_ERROR",
        ),
        // The acting agent before the thread or the target.
        case(
            "foreign aid, unknown thread",
            Method::POST,
            message,
            &key,
            Some(json!({"aid": carol.aid, "thread_id": NO_THREAD, "content": "hi"})),
            403,
            "FORBIDDEN",
        ),
        case(
            "foreign aid, closed thread",
            Method::POST,
            message,
            &key,
            Some(json!({"aid": carol.aid, "thread_id": closed, "content": "hi"})),
            403,
            "FORBIDDEN",
        ),
        case(
            "foreign aid, unknown target",
            Method::POST,
            create,
            &key,
            Some(json!({"aid": carol.aid, "target_aid": "0".repeat(50)})),
            403,
            "FORBIDDEN",
        ),
        case(
            "foreign aid, unknown thread read",
            Method::GET,
            &format!("/api/acsp/thread/{NO_THREAD}?aid={}", carol.aid),
            &key,
            None,
            403,
            "FORBIDDEN",
        ),
        case(
            "foreign aid, foreign thread status",
            Method::POST,
            status,
            &key,
            Some(json!({"aid": carol.aid, "thread_id": foreign, "status": "closed"})),
            403,
            "FORBIDDEN",
        ),
        // The thread before its state.
        case(
            "a closed thread the agent is not in",
            Method::POST,
            message,
            &Some(carol.key.clone()),
            Some(json!({"aid": carol.aid, "thread_id": closed, "content": "hi"})),
            404,
            "NOT_FOUND",
        ),
        case(
            "an ACSP thread of another account, to submit_messages",
            Method::POST,
            submit,
            &Some(carol.key.clone()),
            Some(json!({"thread_id": closed, "messages": [{"sender": "c", "content": "hi"}]})),
            404,
            "NOT_FOUND",
        ),
        case(
            "a foreign turn thread, an epoch ahead",
            Method::POST,
            respond,
            &key,
            Some(json!({"thread_id": foreign_turn, "content": "hi", "turn_epoch": 99})),
            404,
            "NOT_FOUND",
        ),
        // The thread's state last.
        case(
            "own ACSP thread, closed, to submit_messages",
            Method::POST,
            submit,
            &key,
            Some(json!({"thread_id": closed, "messages": [{"sender": "a", "content": "hi"}]})),
            422,
            "VALIDATION_ERROR",
        ),
        case(
            "own turn thread, to thread/message",
            Method::POST,
            message,
            &key,
            Some(json!({"aid": alice, "thread_id": own_turn, "content": "hi"})),
            422,
            "VALIDATION_ERROR",
        ),
        case(
            "closed thread",
            Method::POST,
            message,
            &key,
            Some(json!({"aid": alice, "thread_id": closed, "content": "hi"})),
            409,
            "THREAD_NOT_ACTIVE",
        ),
    ];
    cases.push(Case {
        name: "no key, over 64 KiB",
        method: Method::POST,
        path: create.into(),
        key: None,
        body: Some(over.clone()),
        status: 401,
        code: "UNAUTHORIZED",
    });
    cases.push(Case {
        name: "revoked key, over 64 KiB",
        method: Method::POST,
        path: create.into(),
        key: eve.clone(),
        body: Some(over),
        status: 401,
        code: "UNAUTHORIZED",
    });
    cases.push(Case {
        name: "no key, bad JSON, no Content-Type",
        method: Method::POST,
        path: message.into(),
        key: None,
        body: Some("{".into()),
        status: 401,
        code: "UNAUTHORIZED",
    });
    answers_in_order(&app, cases).await;
}

/// Over its quota, a live key is `429` whatever it sends: the quota is
/// counted with the key, before the body is read.
#[tokio::test]
async fn a_key_over_its_quota_is_429_before_what_it_sends() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 1).await;
    let res = app
        .list_threads(&app.key, &format!("aid={}", app.alice.aid))
        .await;
    assert_eq!(res.status(), 200);
    let res = send(
        &app,
        Method::GET,
        "/api/acsp/threads?limit=0",
        Some(&app.key),
        None,
    )
    .await;
    assert_error(res, 429, "RATE_LIMITED").await;
    // On the message route, the first (wrong) request is within the quota.
    let wrong = json!({"aid": app.alice.aid, "thread_id": NO_THREAD, "content": ""});
    let res = app.post_message(&app.key, wrong.clone()).await;
    assert_error(res, 422, "VALIDATION_ERROR").await;
    let res = app.post_message(&app.key, wrong).await;
    assert_error(res, 429, "RATE_LIMITED").await;
    let res = send(
        &app,
        Method::POST,
        "/api/acsp/thread/message",
        Some(&app.key),
        Some("{".into()),
    )
    .await;
    assert_error(res, 429, "RATE_LIMITED").await;
    assert_eq!(app.stored_messages(), 0);
}

/// The same for a grant: `/v1/ws` and `/v1/sse` read their query (`after`,
/// `after_position`, a `thread_id` beside `c`) before the grant, so a
/// used or made-up grant with a wrong query was `422`, and `401` once the
/// query was fixed. The grant now answers first; a live grant with a wrong
/// query is still `422`, and is not used up by it.
#[tokio::test]
async fn a_used_or_unknown_grant_is_refused_before_the_query() {
    let app = spawn_app().await;
    let (thread, url) = app.grant_for(&app.key, None).await;
    let live = url.split("c=").nth(1).expect("c= in the url").to_owned();
    let mut used = crate::helpers::Ws::connect(&url).await;
    assert_eq!(used.event().await["type"], "connection.ready");
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let unused = url.split("c=").nth(1).unwrap().to_owned();
    let wrong = |grant: &str| {
        [
            format!("/v1/ws?c={grant}&after=x"),
            format!("/v1/ws?c={grant}&after=1&after=2"),
            format!("/v1/sse?c={grant}&after_position=-1"),
            format!("/v1/sse?c={grant}&thread_id={thread}"),
        ]
    };
    // No grant at all is refused as a bad one.
    for path in ["/v1/ws?after=x", "/v1/ws?after=1&after=2"] {
        let res = send(&app, Method::GET, path, None, None).await;
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
    for grant in [live.as_str(), "made-up"] {
        for path in wrong(grant) {
            let res = send(&app, Method::GET, &path, None, None).await;
            let error = assert_error(res, 401, "UNAUTHORIZED").await;
            assert!(
                error["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("grant"),
                "{path}: {error}"
            );
        }
    }
    for path in wrong(&unused) {
        let res = send(&app, Method::GET, &path, None, None).await;
        assert_error(res, 422, "VALIDATION_ERROR").await;
    }
    let mut ws = crate::helpers::Ws::connect(&url).await;
    assert_eq!(
        ws.event().await["type"],
        "connection.ready",
        "the refusals left the grant usable"
    );
}

/// A client written from seeds/acsp-threads.txt, run against threadline
/// with only the base URL and key changed: each route's request with every
/// field of its table (and again with the optional ones left out or
/// `null`), the headers such clients send, and the response fields the
/// seed shows. The headers vary the way HTTP libraries vary them:
/// `Authorization` scheme in any case and with extra spaces, a `Content-Type`
/// with a charset, `text/plain` (what `fetch` sends for a string body) or
/// none, `Accept` and `User-Agent` of common clients.
#[tokio::test]
async fn the_acsp_seeds_requests_run_as_written() {
    let app = spawn_app().await;
    let carol: Agent = app.new_agent("ResearchBot");
    let alice = &app.alice.aid;
    let request = |method: Method, path: &str, auth: String, content_type: Option<&str>| {
        let mut req = app
            .client
            .request(method, app.url(path))
            .header("Authorization", auth)
            .header("Accept", "application/json")
            .header("User-Agent", "python-requests/2.31.0");
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        req
    };
    let auths = [
        format!("Bearer {}", app.key),
        format!("bearer {}", app.key),
        format!("BEARER  {}", app.key),
        format!("Bearer {} ", app.key),
    ];
    let content_types = [
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("text/plain;charset=UTF-8"),
        None,
    ];

    // thread-create: every field, then the required ones, then nulls.
    let mut threads = Vec::new();
    for (auth, ct) in auths.iter().zip(content_types) {
        for body in [
            json!({"aid": alice, "target_aid": carol.aid, "subject": "Collaboration on Q4 analysis",
                   "first_message": "Let's discuss the Q4 data.", "metadata": {"quarter": 4}}),
            json!({"aid": alice, "target_aid": carol.aid}),
            json!({"aid": alice, "target_aid": carol.aid, "subject": null, "first_message": null,
                   "metadata": null}),
        ] {
            let res = request(Method::POST, "/api/acsp/thread/create", auth.clone(), ct)
                .body(body.to_string())
                .send()
                .await
                .expect("request");
            let (status, created) = json_of(res).await;
            assert_eq!(status, 201, "{auth:?} {ct:?} {body}: {created}");
            let thread = &created["thread"];
            for field in [
                "id",
                "creator_aid",
                "target_aid",
                "subject",
                "status",
                "message_count",
                "created_at",
            ] {
                assert!(thread.get(field).is_some(), "create: no {field}: {created}");
            }
            assert_eq!(thread["status"], "active");
            let first = body.get("first_message").is_some_and(|m| !m.is_null());
            assert_eq!(
                thread["message_count"],
                if first { 1 } else { 0 },
                "{created}"
            );
            threads.push(thread["id"].as_str().unwrap().to_owned());
        }
    }
    let thread = &threads[0];

    // thread-message: the seed's example, each msg_type, and nulls.
    for (i, (auth, ct)) in auths.iter().zip(content_types).enumerate() {
        let msg_type = ["text", "request", "response", "system"][i];
        for body in [
            json!({"aid": alice, "thread_id": thread, "content": "Here are the Q4 findings...",
                   "msg_type": msg_type, "metadata": {}}),
            json!({"aid": alice, "thread_id": thread, "content": "no type", "msg_type": null,
                   "metadata": null}),
        ] {
            let res = request(Method::POST, "/api/acsp/thread/message", auth.clone(), ct)
                .body(body.to_string())
                .send()
                .await
                .expect("request");
            let (status, posted) = json_of(res).await;
            assert_eq!(status, 201, "{auth:?} {ct:?} {body}: {posted}");
            let message = &posted["message"];
            for field in [
                "id",
                "thread_id",
                "sender_aid",
                "content",
                "msg_type",
                "created_at",
            ] {
                assert!(
                    message.get(field).is_some(),
                    "message: no {field}: {posted}"
                );
            }
            let expected = if body["msg_type"].is_null() {
                "text"
            } else {
                msg_type
            };
            assert_eq!(message["msg_type"], expected, "{posted}");
            assert_eq!(&message["thread_id"], thread.as_str());
            assert_eq!(&message["sender_aid"], alice.as_str());
        }
    }

    // Get thread: the seed's query parameters; the peer reads as its own key.
    let read = format!(
        "/api/acsp/thread/{thread}?aid={}&limit=50&offset=0",
        carol.aid
    );
    let res = request(Method::GET, &read, format!("bearer {}", carol.key), None)
        .send()
        .await
        .expect("request");
    let (status, page) = json_of(res).await;
    assert_eq!(status, 200, "{page}");
    for field in [
        "id",
        "creator_aid",
        "target_aid",
        "subject",
        "status",
        "message_count",
        "created_at",
        "updated_at",
    ] {
        assert!(
            page["thread"].get(field).is_some(),
            "get: no thread.{field}: {page}"
        );
    }
    assert_eq!(page["thread"]["message_count"], 9, "{page}");
    let messages = page["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 9, "{page}");
    assert_eq!(
        messages[0]["content"], "Let's discuss the Q4 data.",
        "oldest first"
    );
    assert_eq!(messages[0]["sender_name"], "alice", "{page}");
    for field in [
        "id",
        "sender_aid",
        "sender_name",
        "content",
        "msg_type",
        "created_at",
    ] {
        assert!(
            messages[0].get(field).is_some(),
            "get: no messages[0].{field}: {page}"
        );
    }
    assert_eq!(page["has_more"], false);
    let res = request(
        Method::GET,
        &format!(
            "/api/acsp/thread/{thread}?aid={}&limit=2&offset=1",
            carol.aid
        ),
        format!("Bearer {}", carol.key),
        None,
    )
    .send()
    .await
    .expect("request");
    let (_, page) = json_of(res).await;
    assert_eq!(
        page["messages"][0]["content"], "Here are the Q4 findings...",
        "{page}"
    );
    assert_eq!(page["has_more"], true, "{page}");

    // threads-list: the seed's parameters, from the peer's side.
    let res = request(
        Method::GET,
        &format!(
            "/api/acsp/threads?aid={}&status=active&limit=20&offset=0",
            carol.aid
        ),
        format!("Bearer {}", carol.key),
        None,
    )
    .send()
    .await
    .expect("request");
    let (status, list) = json_of(res).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 12, "{list}");
    assert_eq!(list["has_more"], false, "{list}");
    let listed = &list["threads"][0];
    for field in [
        "id",
        "peer_aid",
        "peer_name",
        "subject",
        "status",
        "message_count",
        "last_message_at",
        "unread_count",
    ] {
        assert!(listed.get(field).is_some(), "list: no {field}: {list}");
    }
    assert_eq!(
        &listed["id"],
        thread.as_str(),
        "most recent activity first: {list}"
    );
    assert_eq!(&listed["peer_aid"], alice.as_str());
    assert_eq!(listed["peer_name"], "alice");

    // thread-status: each status, the seed's fields; the list filters by it.
    for status in ["closed", "archived", "active", "archived"] {
        let res = request(
            Method::POST,
            "/api/acsp/thread/status",
            format!("Bearer {}", app.key),
            Some("application/json"),
        )
        .body(json!({"aid": alice, "thread_id": thread, "status": status}).to_string())
        .send()
        .await
        .expect("request");
        let (code, changed) = json_of(res).await;
        assert_eq!(code, 200, "{changed}");
        assert_eq!(&changed["session_id"], thread.as_str(), "{changed}");
        assert_eq!(changed["status"], status, "{changed}");
        assert!(changed["updated_at"].is_string(), "{changed}");
    }
    let res = app
        .list_threads(&carol.key, &format!("aid={}&status=archived", carol.aid))
        .await;
    let (_, list) = json_of(res).await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(&list["threads"][0]["id"], thread.as_str());
}

/// seeds/turn-taking-open-thread.txt: its curl example as written, the
/// reconnect with the same `thread_id` (a fresh URL, no new thread), a
/// fresh UUID the client mints itself, and the errors the seed lists (401
/// for a missing or invalid token, 422 for a `thread_id` that is not a
/// UUID or malformed `integrations`); an empty body opens a thread too.
#[tokio::test]
async fn the_turn_taking_seeds_requests_run_as_written() {
    let app = spawn_app().await;
    let open = |auth: Option<String>, body: Option<&str>| {
        let mut req = app
            .client
            .post(app.url("/v1/turn-taking/actions/open_thread"))
            .header("Content-Type", "application/json");
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        if let Some(body) = body {
            req = req.body(body.to_owned());
        }
        req.send()
    };
    let bearer = format!("Bearer {}", app.key);
    let res = open(
        Some(bearer.clone()),
        Some(r#"{"integrations": {"social_signals": {}}}"#),
    )
    .await
    .expect("request");
    let (status, opened) = json_of(res).await;
    assert_eq!(status, 200, "{opened}");
    let id = opened["thread"]["id"]
        .as_str()
        .expect("thread.id")
        .to_owned();
    for field in ["id", "user_id", "created_at", "updated_at"] {
        assert!(
            opened["thread"][field].is_string(),
            "no thread.{field}: {opened}"
        );
    }
    assert_eq!(opened["thread"]["user_id"], app.user_id.as_str());
    assert_eq!(opened["channel"], format!("turn-taking-thread/{id}"));
    let url = opened["realtime"]["connect_url"]
        .as_str()
        .expect("connect_url");
    assert!(url.contains("/v1/ws?c="), "{url}");
    assert!(opened["realtime"]["expires_at"].is_string(), "{opened}");

    let threads = app.stored_threads();
    let again = json!({"thread_id": id}).to_string();
    let res = open(Some(bearer.clone()), Some(&again))
        .await
        .expect("request");
    let (status, reopened) = json_of(res).await;
    assert_eq!(status, 200, "{reopened}");
    assert_eq!(reopened["thread"]["id"], id.as_str());
    assert_ne!(reopened["realtime"]["connect_url"], url, "a fresh URL");
    assert_eq!(app.stored_threads(), threads, "no new thread");

    let minted = "6f9619ff-8b86-4011-b42d-00c04fc964ff";
    let body = json!({"thread_id": minted}).to_string();
    let (status, created) = json_of(
        open(Some(bearer.clone()), Some(&body))
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["thread"]["id"], minted);
    for body in [None, Some(""), Some("{}"), Some("null")] {
        let (status, answer) =
            json_of(open(Some(bearer.clone()), body).await.expect("request")).await;
        assert_eq!(status, 200, "{body:?}: {answer}");
    }

    let threads = app.stored_threads();
    for (auth, body, status, code, field) in [
        (
            None,
            r#"{"integrations": {"social_signals": {}}}"#,
            401,
            "UNAUTHORIZED",
            None,
        ),
        (
            Some(format!("Bearer nk_{}", "x".repeat(43))),
            "{}",
            401,
            "UNAUTHORIZED",
            None,
        ),
        (
            Some(bearer.clone()),
            r#"{"thread_id": "b9c1e4f0"}"#,
            422,
            "VALIDATION_ERROR",
            Some("thread_id"),
        ),
        (
            Some(bearer.clone()),
            r#"{"integrations": []}"#,
            422,
            "VALIDATION_ERROR",
            Some("integrations"),
        ),
        (
            Some(bearer.clone()),
            r#"{"integrations": {"social_signals": true}}"#,
            422,
            "VALIDATION_ERROR",
            Some("integrations.social_signals"),
        ),
    ] {
        let res = open(auth, Some(body)).await.expect("request");
        let error = assert_error(res, status, code).await;
        assert_eq!(error["error"]["field"].as_str(), field, "{body}: {error}");
    }
    assert_eq!(app.stored_threads(), threads);
}

/// Paths are matched exactly, so a trailing slash (a client that joins
/// `base + "/threads/"`) or a doubled one (`base/` + `/api/...`) is `404`
/// for a path the API has. The answer said only "no such route"; it now
/// says what was wrong with it. Nothing is stored.
#[tokio::test]
async fn a_path_with_a_trailing_or_doubled_slash_is_404_saying_so() {
    let app = spawn_app().await;
    let before = stored(&app);
    let create = json!({"aid": app.alice.aid, "target_aid": app.bob.aid}).to_string();
    for (method, path, body) in [
        (Method::GET, "/api/acsp/threads/", None),
        (Method::GET, "/api/acsp/me/", None),
        (
            Method::POST,
            "/api/acsp/thread/create/",
            Some(create.clone()),
        ),
        (
            Method::POST,
            "//api/acsp/thread/create",
            Some(create.clone()),
        ),
        (
            Method::POST,
            "/v1/turn-taking//actions/open_thread",
            Some("{}".into()),
        ),
    ] {
        let res = send(&app, method.clone(), path, Some(&app.key), body).await;
        let error = assert_error(res, 404, "NOT_FOUND").await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("trailing or doubled slash"),
            "{method} {path}: {error}"
        );
    }
    // Any other unknown path keeps the short answer.
    let res = send(&app, Method::GET, "/api/acsp/nope", Some(&app.key), None).await;
    let error = assert_error(res, 404, "NOT_FOUND").await;
    assert_eq!(error["error"]["message"], "no such route");
    assert_eq!(stored(&app), before);
}

/// A post refused for any reason, at any step of the order, leaves its
/// `Idempotency-Key` unused: the same key then stores the message (a new
/// one, seq 1), rather than replaying a refusal or a message never stored.
#[tokio::test]
async fn a_refused_post_leaves_its_idempotency_key_unused() {
    let app = spawn_app().await;
    let (carol, eve) = (app.new_agent("carol"), app.new_agent("eve"));
    threadline::cli::key_revoke(&app.db, &eve.key).expect("revoke");
    let thread = app.thread_between(&app.alice, &carol).await;
    let alice = app.alice.aid.as_str();
    let close = |status: &'static str| {
        app.set_status(
            &app.key,
            json!({"aid": alice, "thread_id": thread, "status": status}),
        )
    };
    assert_eq!(close("closed").await.status(), 200);
    let post = |key: &str, body: Value| {
        app.client
            .post(app.url("/api/acsp/thread/message"))
            .bearer_auth(key)
            .header("Idempotency-Key", "retry-1")
            .json(&body)
            .send()
    };
    let before = stored(&app);
    for (key, body, status) in [
        (
            &eve.key,
            json!({"aid": alice, "thread_id": thread, "content": "hi"}),
            401,
        ),
        (
            &app.key,
            json!({"aid": alice, "thread_id": thread, "content": ""}),
            422,
        ),
        (
            &app.key,
            json!({"aid": carol.aid, "thread_id": thread, "content": "hi"}),
            403,
        ),
        (
            &app.key,
            json!({"aid": app.bob.aid, "thread_id": thread, "content": "hi"}),
            404,
        ),
        (
            &app.key,
            json!({"aid": alice, "thread_id": thread, "content": "hi"}),
            409,
        ),
    ] {
        let res = post(key, body.clone()).await.expect("request");
        assert_eq!(res.status(), status, "{body}");
    }
    assert_eq!(stored(&app), before);
    assert_eq!(close("active").await.status(), 200);
    let res = post(
        &app.key,
        json!({"aid": alice, "thread_id": thread, "content": "stored now"}),
    )
    .await
    .expect("request");
    let (status, posted) = json_of(res).await;
    assert_eq!(status, 201, "{posted}");
    assert_eq!(posted["message"]["content"], "stored now");
    assert_eq!(posted["message"]["seq"], 1);
}
