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

async fn document(app: &TestApp) -> Value {
    let res = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "application/json");
    let (status, doc) = json_of(res).await;
    assert_eq!(status, 200);
    doc
}

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
    let doc = document(&app).await;
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
    let doc = document(&app).await;
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
    let doc = document(&app).await;
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
    let doc = document(&app).await;
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
