//! The OpenAPI document at `/openapi.json`: it is 3.1, every documented
//! (path, method) is served and every other method on those paths is 405,
//! the routes it leaves out are named in it and exist, and real responses
//! match their documented schemas (checked strictly: a field the server
//! sends that the document does not list fails too). That every route the
//! server registers is in the document is the unit test beside it
//! (`http::openapi`), which sees the registrations themselves.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{json_of, spawn_app_with, TestApp};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// A server with no per-key rate limit (the probes ask every route).
async fn app() -> TestApp {
    spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.status_rate_limit_per_minute = 0;
        c.ip_rate_limit_per_minute = 0;
        c.allow_private_webhooks = true;
        c.open_registration = true;
    })
    .await
}

/// The path with each `{param}` filled in.
fn concrete(path: &str) -> String {
    path.replace("{thread_id}", "x").replace("{id}", "x")
}

/// Whether a response is the router's own "no such route" 404.
async fn is_no_such_route(res: reqwest::Response) -> bool {
    if res.status() != 404 {
        return false;
    }
    let (_, body) = json_of(res).await;
    body["error"]["message"] == "no such route"
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_documented_route_is_served() {
    let app = app().await;
    let doc = app.openapi_document().await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() > 20, "{:?}", paths.keys());
    for (path, item) in paths {
        for method in METHODS {
            let res = app
                .client
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    app.url(&concrete(path)),
                )
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            if item.get(method).is_some() {
                assert_ne!(status, 405, "{method} {path} is documented but not served");
                assert!(
                    !is_no_such_route(res).await,
                    "{method} {path} is documented but not routed"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is served but not documented");
                // And the 405 lists exactly the documented methods.
                let allow = res.headers().get("allow").map(|v| v.to_str().unwrap());
                let mut listed: Vec<String> = allow
                    .unwrap_or_default()
                    .split(',')
                    .map(|m| m.trim().to_lowercase())
                    .filter(|m| !m.is_empty())
                    .collect();
                let mut documented: Vec<String> = METHODS
                    .iter()
                    .filter(|m| item.get(**m).is_some())
                    .map(|m| m.to_string())
                    .collect();
                // HEAD comes with GET and is left implied by the document
                // (tests/api/head.rs), but on the WebSocket upgrade.
                if item.get("get").is_some() && path != "/v1/ws" {
                    documented.push("head".into());
                }
                listed.sort();
                documented.sort();
                assert_eq!(listed, documented, "Allow of {method} {path}: {allow:?}");
            }
        }
    }
}

#[tokio::test]
async fn the_routes_left_out_are_named_in_the_document_and_exist() {
    let app = app().await;
    let doc = app.openapi_document().await;
    let description = doc["info"]["description"].as_str().unwrap();
    let left_out: Vec<&str> = description
        .lines()
        .filter_map(|l| l.strip_prefix("- `")?.split('`').next())
        .collect();
    for path in ["/mcp", "/", "/inspect"] {
        assert!(left_out.contains(&path), "{path} in {left_out:?}");
    }
    for path in left_out {
        assert!(
            doc["paths"].get(path).is_none(),
            "{path} is both documented and left out"
        );
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert!(
            !is_no_such_route(res).await,
            "{path} is left out but not served"
        );
    }
}

/// A validator for the schema documented for `status` of `method path`,
/// strict: objects with listed properties may have no others.
fn validator(doc: &Value, method: &str, path: &str, status: u16) -> jsonschema::Validator {
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path}: no JSON schema documented for {status}"
    );
    let mut components = doc["components"].clone();
    for s in components["schemas"].as_object_mut().unwrap().values_mut() {
        if s.get("properties").is_some() {
            s["additionalProperties"] = json!(false);
        }
    }
    let mut root = schema.clone();
    root["components"] = components;
    jsonschema::draft202012::new(&root).expect("a valid JSON schema")
}

/// Asserts `body` is what the document promises for `status`.
fn conforms(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let v = validator(doc, method, path, status);
    let errors: Vec<String> = v.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {errors:?}\n{body}"
    );
}

/// A request: method, documented path, concrete path, body.
struct Call<'a>(&'a str, &'a str, &'a str, Option<Value>);

/// Sends a request, checks its status is `expect` and its answer is what
/// the document promises for that status.
async fn check(
    app: &TestApp,
    doc: &Value,
    Call(method, template, path, body): Call<'_>,
    expect: u16,
) -> Value {
    let mut req = app
        .client
        .request(
            Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
            app.url(path),
        )
        .bearer_auth(&app.key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let (status, answer) = json_of(req.send().await.unwrap()).await;
    assert_eq!(status, expect, "{method} {path}: {answer}");
    conforms(doc, method, template, status.as_u16(), &answer);
    answer
}

#[tokio::test]
async fn real_responses_match_their_documented_schemas() {
    let app = app().await;
    let doc = app.openapi_document().await;
    let (alice, bob) = (app.alice.aid.clone(), app.bob.aid.clone());

    let create = "/api/acsp/thread/create";
    let body = json!({"aid": alice, "target_aid": bob, "subject": "s", "first_message": "hi"});
    let created = check(&app, &doc, Call("post", create, create, Some(body)), 201).await;
    let thread = created["thread"]["id"].as_str().unwrap().to_owned();
    let body = json!({"aid": bob, "thread_id": thread, "content": "yo", "metadata": {"k": 1}});
    check(
        &app,
        &doc,
        Call(
            "post",
            "/api/acsp/thread/message",
            "/api/acsp/thread/message",
            Some(body),
        ),
        201,
    )
    .await;
    let t = "/api/acsp/thread/{thread_id}";
    check(
        &app,
        &doc,
        Call(
            "get",
            t,
            &format!("/api/acsp/thread/{thread}?aid={alice}"),
            None,
        ),
        200,
    )
    .await;
    let q = format!("/api/acsp/thread?thread_id={thread}&aid={alice}");
    check(&app, &doc, Call("get", "/api/acsp/thread", &q, None), 200).await;
    let q = format!("/api/acsp/threads?aid={alice}&status=all");
    check(&app, &doc, Call("get", "/api/acsp/threads", &q, None), 200).await;
    let body = json!({"aid": alice, "thread_id": thread, "status": "closed"});
    check(
        &app,
        &doc,
        Call(
            "post",
            "/api/acsp/thread/status",
            "/api/acsp/thread/status",
            Some(body),
        ),
        200,
    )
    .await;
    check(
        &app,
        &doc,
        Call("get", "/api/acsp/me", "/api/acsp/me", None),
        200,
    )
    .await;
    let body = json!({"aid": alice});
    check(
        &app,
        &doc,
        Call(
            "post",
            "/api/acsp/realtime/open",
            "/api/acsp/realtime/open",
            Some(body),
        ),
        200,
    )
    .await;
    let body = json!({"agent_name": "Newcomer", "capabilities": ["x"], "metadata": {"a": [1]}});
    check(
        &app,
        &doc,
        Call(
            "post",
            "/api/acsp/agent-init",
            "/api/acsp/agent-init",
            Some(body),
        ),
        201,
    )
    .await;

    let open = "/v1/turn-taking/actions/open_thread";
    let opened = check(&app, &doc, Call("post", open, open, Some(json!({}))), 200).await;
    let tt = opened["thread"]["id"].as_str().unwrap().to_owned();
    let submit = "/v1/turn-taking/actions/submit_messages";
    let body =
        json!({"thread_id": tt, "messages": [{"sender": "dana", "content": "How did Q1 go?"}]});
    let decided = check(&app, &doc, Call("post", submit, submit, Some(body)), 200).await;
    let respond = "/v1/turn-taking/actions/respond";
    let body = json!({"thread_id": tt, "turn_epoch": decided["turn_epoch"], "content": "Fine. Better than planned, in fact."});
    check(&app, &doc, Call("post", respond, respond, Some(body)), 200).await;
    let record = "/v1/turn-taking/actions/record_event";
    let body = json!({"thread_id": tt, "type": "typing_start", "sender": "dana"});
    check(&app, &doc, Call("post", record, record, Some(body)), 200).await;
    let turns = format!("/v1/turn-taking/threads/{tt}/turns?limit=5");
    let template = "/v1/turn-taking/threads/{thread_id}/turns";
    let page = check(&app, &doc, Call("get", template, &turns, None), 200).await;
    assert_eq!(page["turns"][0]["decision"], "speak", "{page}");

    let hooks = "/api/acsp/webhooks";
    let body = json!({"url": "http://127.0.0.1:9/hook", "events": ["thread.message"]});
    let made = check(&app, &doc, Call("post", hooks, hooks, Some(body)), 201).await;
    let id = made["webhook"]["id"].as_str().unwrap().to_owned();
    check(&app, &doc, Call("get", hooks, hooks, None), 200).await;
    for action in ["rotate", "pause", "resume"] {
        let template = format!("/api/acsp/webhooks/{{id}}/{action}");
        check(
            &app,
            &doc,
            Call("post", &template, &format!("{hooks}/{id}/{action}"), None),
            200,
        )
        .await;
    }
    let attempts = format!("{hooks}/{id}/attempts?limit=5");
    check(
        &app,
        &doc,
        Call("get", "/api/acsp/webhooks/{id}/attempts", &attempts, None),
        200,
    )
    .await;
    check(
        &app,
        &doc,
        Call(
            "delete",
            "/api/acsp/webhooks/{id}",
            &format!("{hooks}/{id}"),
            None,
        ),
        200,
    )
    .await;
    check(&app, &doc, Call("get", "/healthz", "/healthz", None), 200).await;

    // Errors: the one envelope, under the status each route documents.
    let posted = "/api/acsp/thread/message";
    let body = json!({"aid": bob, "thread_id": thread, "content": "closed now"});
    let err = check(&app, &doc, Call("post", posted, posted, Some(body)), 409).await;
    assert_eq!(err["error"]["code"], "THREAD_NOT_ACTIVE");
    let err = check(
        &app,
        &doc,
        Call("post", posted, posted, Some(json!({"aid": bob}))),
        422,
    )
    .await;
    assert_eq!(err["error"]["field"], "thread_id");
    let err = check(
        &app,
        &doc,
        Call(
            "get",
            t,
            "/api/acsp/thread/00000000-0000-4000-8000-000000000000",
            None,
        ),
        404,
    )
    .await;
    assert_eq!(err["error"]["code"], "NOT_FOUND");
    let res = app
        .client
        .get(app.url("/api/acsp/me"))
        .send()
        .await
        .unwrap();
    let (status, err) = json_of(res).await;
    conforms(&doc, "get", "/api/acsp/me", status.as_u16(), &err);
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_strict_check_refuses_a_body_that_strays_from_the_document() {
    let app = app().await;
    let doc = app.openapi_document().await;
    let me = "/api/acsp/me";
    let v = validator(&doc, "get", me, 200);
    let good = json!({"user_id": "usr_1", "agents": []});
    assert!(v.is_valid(&good));
    for bad in [
        json!({"agents": []}),
        json!({"user_id": 7, "agents": []}),
        json!({"user_id": "usr_1", "agents": [], "extra": true}),
    ] {
        assert!(!v.is_valid(&bad), "{bad}");
    }
}

/// Where a probed input goes in a request.
#[derive(Clone, Copy, Debug)]
enum At {
    Body,
    Query,
    Header,
}

/// One input of one documented operation, probed at the edges its
/// documented schema draws (lengths, counts, bounds, enum values), and
/// with `extra` values (for patterns, whose edges cannot be derived).
struct Probe {
    method: &'static str,
    path: &'static str,
    name: &'static str,
    at: At,
    extra: Vec<Value>,
}

/// The ids a probe's otherwise valid request needs.
struct Fixture {
    alice: String,
    bob: String,
    /// An ACSP thread between them, kept active.
    thread: String,
    /// Another, whose status the probes change.
    other_thread: String,
    turn_thread: String,
    webhook: String,
}

/// The documented schema of `name` in `method path` (as written: it may
/// be a `$ref` or a `oneOf` with null).
fn input_schema(doc: &Value, method: &str, path: &str, name: &str, at: At) -> Value {
    let op = &doc["paths"][path][method];
    let schema = match at {
        At::Body => {
            let body = &op["requestBody"]["content"]["application/json"]["schema"];
            resolve(doc, body)["properties"][name].clone()
        }
        At::Query | At::Header => op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} documents no {name}"))["schema"]
            .clone(),
    };
    assert!(schema.is_object(), "{method} {path}: no schema for {name}");
    schema
}

/// A schema with its `$ref`s and a `oneOf` with null followed to what
/// a present value must be.
fn resolve(doc: &Value, schema: &Value) -> Value {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        return resolve(doc, &doc["components"]["schemas"][name]);
    }
    if let Some(branches) = schema["oneOf"].as_array() {
        let present: Vec<&Value> = branches.iter().filter(|b| b["type"] != "null").collect();
        if let [only] = present.as_slice() {
            return resolve(doc, only);
        }
    }
    schema.clone()
}

/// The values on either side of each limit `schema` states. Strings are
/// of `fill`, whose bytes outnumber its characters in a body (the limits
/// count characters).
fn edges(doc: &Value, schema: &Value, fill: &str) -> Vec<Value> {
    let s = resolve(doc, schema);
    let mut out = Vec::new();
    let n = |k: &str| s[k].as_i64();
    if let Some(values) = s["enum"].as_array() {
        out.extend(values.iter().cloned());
        out.push(json!("not_one_of_them"));
    }
    if let Some(min) = n("minLength") {
        out.push(json!(fill.repeat(min as usize)));
        if min > 0 {
            out.push(json!(fill.repeat(min as usize - 1)));
        }
    }
    if let Some(max) = n("maxLength") {
        out.push(json!(fill.repeat(max as usize)));
        out.push(json!(fill.repeat(max as usize + 1)));
    }
    for (bound, step) in [("minimum", -1), ("maximum", 1)] {
        if let Some(b) = n(bound) {
            out.extend([json!(b), json!(b + step)]);
        }
    }
    if s["type"] == "array" {
        for item in edges(doc, &s["items"], fill) {
            out.push(json!([item]));
        }
        if n("minItems").is_some_and(|min| min > 0) {
            out.push(json!([]));
        }
        // Arrays of objects take their counts from the probe's `extra`.
        let strings = resolve(doc, &s["items"])["type"] != "object";
        if let Some(max) = n("maxItems").filter(|_| strings) {
            let one = json!(fill);
            out.push(Value::Array(vec![one.clone(); max as usize]));
            out.push(Value::Array(vec![one; max as usize + 1]));
        }
    }
    out
}

/// A valid request for `method path` with `name` set to `value`.
fn request(app: &TestApp, fx: &Fixture, p: &Probe, value: &Value) -> reqwest::RequestBuilder {
    let (mut body, mut query, url) = match (p.method, p.path) {
        ("post", "/api/acsp/thread/create") => (
            json!({"aid": fx.alice, "target_aid": fx.bob, "subject": "s", "first_message": "m"}),
            json!({}),
            p.path.to_owned(),
        ),
        ("post", "/api/acsp/thread/message") => (
            json!({"aid": fx.alice, "thread_id": fx.thread, "content": "c"}),
            json!({}),
            p.path.to_owned(),
        ),
        ("post", "/api/acsp/thread/status") => (
            json!({"aid": fx.alice, "thread_id": fx.other_thread, "status": "active"}),
            json!({}),
            p.path.to_owned(),
        ),
        ("get", "/api/acsp/threads") => (json!(null), json!({"aid": fx.alice}), p.path.to_owned()),
        ("get", "/api/acsp/thread/{thread_id}") => (
            json!(null),
            json!({"aid": fx.alice}),
            format!("/api/acsp/thread/{}", fx.thread),
        ),
        ("post", "/api/acsp/agent-init") => (
            json!({"agent_name": "probe", "capabilities": []}),
            json!({}),
            p.path.to_owned(),
        ),
        ("post", "/v1/turn-taking/actions/record_event") => (
            json!({"thread_id": fx.turn_thread, "type": "typing_stop", "sender": "s"}),
            json!({}),
            p.path.to_owned(),
        ),
        ("post", "/v1/turn-taking/actions/submit_messages") => (
            json!({"thread_id": fx.turn_thread, "messages": [{"sender": "s", "content": "c"}]}),
            json!({}),
            p.path.to_owned(),
        ),
        ("post", "/v1/turn-taking/actions/respond") => (
            json!({"thread_id": fx.turn_thread, "content": "c", "turn_epoch": 0}),
            json!({}),
            p.path.to_owned(),
        ),
        ("get", "/v1/turn-taking/threads/{thread_id}/turns") => (
            json!(null),
            json!({}),
            format!("/v1/turn-taking/threads/{}/turns", fx.turn_thread),
        ),
        ("post", "/api/acsp/realtime/open") => {
            (json!({"aid": fx.alice}), json!({}), p.path.to_owned())
        }
        ("post", "/api/acsp/webhooks") => (
            json!({"url": "http://127.0.0.1:9/hook", "events": ["thread.message"]}),
            json!({}),
            p.path.to_owned(),
        ),
        ("get", "/api/acsp/webhooks/{id}/attempts") => (
            json!(null),
            json!({}),
            format!("/api/acsp/webhooks/{}/attempts", fx.webhook),
        ),
        other => panic!("no valid request for {other:?}"),
    };
    match p.at {
        At::Body => body[p.name] = value.clone(),
        At::Query => query[p.name] = value.clone(),
        At::Header => {}
    }
    let query: Vec<(String, String)> = query
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_owned)))
        .collect();
    let method = Method::from_bytes(p.method.to_uppercase().as_bytes()).unwrap();
    let mut req = app
        .client
        .request(method, app.url(&url))
        .bearer_auth(&app.key)
        .query(&query);
    if !body.is_null() {
        req = req.json(&body);
    }
    if let At::Header = p.at {
        let text = value.as_str().unwrap();
        let header = reqwest::header::HeaderValue::from_bytes(text.as_bytes()).unwrap();
        req = req.header(p.name, header);
    }
    req
}

/// What the document says of each probed input must be what the server
/// does: every value the documented schema allows passes validation (the
/// answer is not 422; it may be 403 or 404 where only the shape is
/// stated, an AID the account does not own), and every value it forbids
/// is 422 naming that input, with nothing stored. The values are the
/// edges of each documented limit, so a limit that drifts on either side
/// (in the document or in the server) fails here.
#[tokio::test]
async fn the_documented_input_limits_are_the_ones_the_server_enforces() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.status_rate_limit_per_minute = 0;
        c.ip_rate_limit_per_minute = 0;
        c.registration_rate_limit_per_minute = 0;
        c.open_registration = true;
        c.allow_private_webhooks = true;
    })
    .await;
    let doc = app.openapi_document().await;
    let (alice, bob) = (app.alice.aid.clone(), app.bob.aid.clone());
    let (status, opened) = json_of(app.open_thread(&app.key, json!({})).await).await;
    assert_eq!(status, 200, "{opened}");
    let hook = json!({"url": "http://127.0.0.1:9/hook", "events": ["thread.status"]});
    let (status, made) = json_of(app.post_json("/api/acsp/webhooks", &app.key, &hook).await).await;
    assert_eq!(status, 201, "{made}");
    let fx = Fixture {
        webhook: made["webhook"]["id"].as_str().unwrap().to_owned(),
        thread: app.thread_between(&app.alice, &app.bob).await,
        other_thread: app.thread_between(&app.alice, &app.bob).await,
        turn_thread: opened["thread"]["id"].as_str().unwrap().to_owned(),
        alice: alice.clone(),
        bob: bob.clone(),
    };
    let aid_shapes = |aid: &str| {
        vec![
            json!(aid),
            json!("0".repeat(50)),
            json!(aid.to_uppercase()),
            json!(&aid[..49]),
            json!(format!("{aid}0")),
            json!("g".repeat(50)),
        ]
    };
    let probe = |method, path, name, at, extra| Probe {
        method,
        path,
        name,
        at,
        extra,
    };
    let (create, message) = ("/api/acsp/thread/create", "/api/acsp/thread/message");
    let (list, read) = ("/api/acsp/threads", "/api/acsp/thread/{thread_id}");
    let (submit, respond) = (
        "/v1/turn-taking/actions/submit_messages",
        "/v1/turn-taking/actions/respond",
    );
    let record = "/v1/turn-taking/actions/record_event";
    let turns = "/v1/turn-taking/threads/{thread_id}/turns";
    let hooks = "/api/acsp/webhooks";
    let batch = |n| json!(vec![json!({"sender": "s", "content": "c"}); n]);
    let batches = vec![batch(1), batch(20), batch(21)];
    let probes = [
        probe("post", create, "aid", At::Body, aid_shapes(&alice)),
        probe("post", create, "target_aid", At::Body, aid_shapes(&bob)),
        probe("post", create, "subject", At::Body, vec![json!(null)]),
        probe("post", create, "first_message", At::Body, vec![]),
        probe(
            "post",
            create,
            "metadata",
            At::Body,
            vec![json!({"k": [1]}), json!([1])],
        ),
        probe("post", message, "aid", At::Body, aid_shapes(&alice)),
        probe("post", message, "content", At::Body, vec![]),
        probe(
            "post",
            message,
            "msg_type",
            At::Body,
            vec![json!(null), json!("TEXT")],
        ),
        probe(
            "post",
            message,
            "metadata",
            At::Body,
            vec![json!(null), json!("x")],
        ),
        probe(
            "post",
            message,
            "Idempotency-Key",
            At::Header,
            vec![json!("tab\there"), json!("é"), json!("a b~")],
        ),
        probe(
            "post",
            "/api/acsp/thread/status",
            "status",
            At::Body,
            vec![],
        ),
        probe("get", list, "aid", At::Query, aid_shapes(&bob)),
        probe("get", list, "status", At::Query, vec![json!("ALL")]),
        probe("get", list, "limit", At::Query, vec![json!("ten")]),
        probe("get", list, "offset", At::Query, vec![json!(i64::MAX)]),
        probe("get", read, "aid", At::Query, aid_shapes(&alice)),
        probe("get", read, "limit", At::Query, vec![json!("1.5")]),
        probe("get", read, "offset", At::Query, vec![]),
        probe("get", read, "after", At::Query, vec![]),
        probe(
            "post",
            "/api/acsp/agent-init",
            "capabilities",
            At::Body,
            vec![json!([])],
        ),
        probe(
            "post",
            "/api/acsp/agent-init",
            "ed25519_pubkey",
            At::Body,
            vec![
                json!("ab".repeat(32)),
                json!("CD".repeat(32)),
                json!(&"ef".repeat(32)[..63]),
                json!("ab".repeat(33)),
                json!("zz".repeat(32)),
            ],
        ),
        probe(
            "post",
            "/api/acsp/agent-init",
            "agent_name",
            At::Body,
            vec![],
        ),
        probe(
            "post",
            "/api/acsp/agent-init",
            "description",
            At::Body,
            vec![],
        ),
        probe(
            "post",
            "/api/acsp/realtime/open",
            "aid",
            At::Body,
            aid_shapes(&bob),
        ),
        probe("post", record, "type", At::Body, vec![]),
        probe("post", record, "sender", At::Body, vec![]),
        probe("post", submit, "messages", At::Body, batches),
        probe("post", submit, "system_prompt", At::Body, vec![json!("")]),
        probe(
            "post",
            respond,
            "content",
            At::Body,
            vec![
                json!(" \t\n"),
                json!("\u{85}\u{3000}"),
                json!("\u{feff}"),
                json!(" a "),
            ],
        ),
        probe("post", respond, "turn_epoch", At::Body, vec![json!(1.5)]),
        probe("post", respond, "system_prompt", At::Body, vec![]),
        probe("get", turns, "limit", At::Query, vec![]),
        probe("get", turns, "before", At::Query, vec![]),
        probe(
            "post",
            hooks,
            "events",
            At::Body,
            vec![json!(["thread.status", "thread.status"])],
        ),
        probe("post", hooks, "description", At::Body, vec![json!("")]),
        probe(
            "get",
            "/api/acsp/webhooks/{id}/attempts",
            "limit",
            At::Query,
            vec![],
        ),
    ];
    let components = doc["components"].clone();
    for p in &probes {
        let schema = input_schema(&doc, p.method, p.path, p.name, p.at);
        let mut root = schema.clone();
        root["components"] = components.clone();
        let documented = jsonschema::draft202012::new(&root).expect("a valid JSON schema");
        let fill = if let At::Header = p.at { "k" } else { "é" };
        let mut values = edges(&doc, &schema, fill);
        values.extend(p.extra.iter().cloned());
        let (mut allowed, mut forbidden) = (0, 0);
        for value in &values {
            let label = format!(
                "{} {} {} = {:.60}",
                p.method,
                p.path,
                p.name,
                value.to_string()
            );
            // Query values arrive as text; the document types them.
            let integer = resolve(&doc, &schema)["type"] == "integer";
            let typed = match value.as_str().and_then(|s| s.parse::<i64>().ok()) {
                Some(n) if integer => json!(n),
                _ => value.clone(),
            };
            let allows = documented.is_valid(&typed);
            let stored = (app.stored_threads(), app.stored_messages());
            let res = request(&app, &fx, p, value).send().await.unwrap();
            let (status, answer) = json_of(res).await;
            if allows {
                allowed += 1;
                assert!(
                    status != 422 && status.as_u16() < 500,
                    "{label}: documented as allowed, answered {status} {answer}"
                );
            } else {
                forbidden += 1;
                assert_eq!(status, 422, "{label}: documented as refused: {answer}");
                // An array's item is named by its index (`capabilities[1]`).
                let field = answer["error"]["field"].as_str().unwrap_or_default();
                let field = field.split('[').next().unwrap_or_default();
                assert_eq!(field, p.name, "{label}: {answer}");
                assert_eq!(
                    (app.stored_threads(), app.stored_messages()),
                    stored,
                    "{label}: refused, yet stored"
                );
            }
        }
        assert!(
            allowed > 0 && forbidden > 0,
            "{} {} {}: {allowed} allowed and {forbidden} refused values probed; \
             the document states no limit to probe",
            p.method,
            p.path,
            p.name
        );
    }
}
