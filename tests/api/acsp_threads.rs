//! The ACSP threads API: success paths and every documented error.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with, Agent, TestApp};

/// A well-formed AID that no agent has.
const NOBODY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef01";
/// A well-formed thread id that no thread has.
const NO_THREAD: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

/// Asserts the API's time format: RFC 3339, UTC, milliseconds, `Z`.
fn assert_time(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    assert!(
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3fZ").is_ok() && s.len() == 24,
        "not RFC 3339 UTC with milliseconds: {s}"
    );
}

/// Asserts a UUID (the server mints v7).
fn assert_uuid_v7(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not an id: {v}"));
    let id = uuid::Uuid::parse_str(s).unwrap_or_else(|_| panic!("not a UUID: {s}"));
    assert_eq!(id.get_version_num(), 7, "not a v7 UUID: {s}");
}

/// Waits until the server clock (the same wall clock) has moved past `t`, so
/// that the next write gets a later timestamp than `t`.
async fn wait_until_after(t: &Value) {
    let t = t.as_str().expect("a time").to_owned();
    while threadline::domain::now() <= t {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The thread list as `agent` sees it (`aid` named explicitly).
async fn list_of(app: &TestApp, agent: &Agent, query: &str) -> Value {
    let res = app
        .list_threads(&agent.key, &format!("aid={}&{query}", agent.aid))
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The row of thread `id` in `agent`'s list of all threads.
async fn row_of(app: &TestApp, agent: &Agent, id: &str) -> Value {
    let body = list_of(app, agent, "status=all&limit=100").await;
    body["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("thread {id} not in the list: {body}"))
        .clone()
}

/// The ids of a list response, in order.
fn ids(body: &Value) -> Vec<String> {
    body["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The seqs of a GET thread response, in order.
fn seqs(body: &Value) -> Vec<i64> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

/// GET thread as `agent`, expecting 200.
async fn read_as(app: &TestApp, agent: &Agent, thread_id: &str, query: &str) -> Value {
    let res = app
        .get_thread(&agent.key, thread_id, &format!("aid={}&{query}", agent.aid))
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Sets a thread's status as `agent`, expecting 200; returns the body.
async fn set_status_as(app: &TestApp, agent: &Agent, thread_id: &str, status: &str) -> Value {
    let res = app
        .set_status(
            &agent.key,
            json!({"aid": agent.aid, "thread_id": thread_id, "status": status}),
        )
        .await;
    let (code, body) = json_of(res).await;
    assert_eq!(code, 200, "{body}");
    body
}

// ---------------------------------------------------------------- thread/create

#[tokio::test]
async fn creating_a_thread_with_a_first_message_stores_both() {
    let app = spawn_app().await;
    let res = app
        .create_thread(
            &app.key,
            json!({"aid": app.alice.aid, "target_aid": app.bob.aid,
                   "subject": "Q4", "first_message": "Let's talk", "metadata": {"k": 1}}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let t = &body["thread"];
    assert_eq!(t["creator_aid"], app.alice.aid.as_str());
    assert_eq!(t["target_aid"], app.bob.aid.as_str());
    assert_eq!(t["subject"], "Q4");
    assert_eq!(t["status"], "active");
    assert_eq!(t["message_count"], 1);
    assert_eq!(t["metadata"], json!({"k": 1}));
    assert!(t["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(app.stored_messages(), 1);
}

#[tokio::test]
async fn a_wrong_type_is_422_naming_the_field_and_stores_nothing() {
    let app = spawn_app().await;
    let res = app
        .create_thread(
            &app.key,
            json!({"aid": app.alice.aid, "target_aid": app.bob.aid, "subject": 5}),
        )
        .await;
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["field"], "subject");
    assert_eq!(app.stored_threads(), 0);
}

#[tokio::test]
async fn a_created_thread_has_a_v7_id_times_and_the_first_message_as_seq_1() {
    let app = spawn_app().await;
    let res = app
        .create_thread(
            &app.key,
            json!({"aid": app.alice.aid, "target_aid": app.bob.aid, "first_message": "hello bob"}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let t = &body["thread"];
    assert_uuid_v7(&t["id"]);
    assert_time(&t["created_at"]);
    assert_time(&t["updated_at"]);
    let id = t["id"].as_str().unwrap();

    let got = read_as(&app, &app.bob, id, "").await;
    assert_eq!(got["thread"]["id"], id);
    assert_eq!(got["thread"]["message_count"], 1);
    let first = &got["messages"][0];
    assert_eq!(first["seq"], 1);
    assert_eq!(first["content"], "hello bob");
    assert_eq!(first["msg_type"], "text", "the first message is text");
    assert_eq!(first["sender_aid"], app.alice.aid.as_str(), "sent by aid");
    assert_eq!(first["sender_name"], "alice");
    assert_eq!(first["metadata"], json!({}));
}

#[tokio::test]
async fn a_thread_without_first_message_or_subject_has_no_messages() {
    let app = spawn_app().await;
    let res = app
        .create_thread(
            &app.key,
            json!({"aid": app.alice.aid, "target_aid": app.bob.aid}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let t = &body["thread"];
    assert_eq!(t["message_count"], 0);
    assert_eq!(t["subject"], Value::Null, "subject is optional");
    assert_eq!(
        t["metadata"],
        json!({}),
        "metadata defaults to an empty object"
    );
    assert_eq!(t["status"], "active");
    assert_eq!(app.stored_threads(), 1);
    assert_eq!(app.stored_messages(), 0);
}

#[tokio::test]
async fn a_thread_may_target_an_agent_of_another_account() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let id = app.thread_between(&app.alice, &carol).await;
    // Carol (a one-agent account) sees it without naming her aid.
    let (status, body) = json_of(app.list_threads(&carol.key, "").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), vec![id]);
    assert_eq!(body["threads"][0]["peer_aid"], app.alice.aid.as_str());
}

#[tokio::test]
async fn creating_a_thread_with_an_unknown_target_is_404_and_stores_nothing() {
    let app = spawn_app().await;
    let res = app
        .create_thread(
            &app.key,
            json!({"aid": app.alice.aid, "target_aid": NOBODY, "first_message": "hi"}),
        )
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    assert_eq!(app.stored_threads(), 0);
    assert_eq!(app.stored_messages(), 0);
}

#[tokio::test]
async fn a_thread_with_oneself_is_422_on_target_aid_and_stores_nothing() {
    let app = spawn_app().await;
    let res = app
        .create_thread(
            &app.key,
            json!({"aid": app.alice.aid, "target_aid": app.alice.aid}),
        )
        .await;
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["field"], "target_aid");
    assert_eq!(app.stored_threads(), 0);
}

#[tokio::test]
async fn acting_as_an_agent_the_key_does_not_own_is_403_and_stores_nothing() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let cases = [
        (
            "the seed key acting as carol",
            &app.key,
            carol.aid.as_str(),
            app.bob.aid.as_str(),
        ),
        (
            "carol's key acting as alice",
            &carol.key,
            app.alice.aid.as_str(),
            app.bob.aid.as_str(),
        ),
        (
            "an aid no agent has",
            &app.key,
            NOBODY,
            app.bob.aid.as_str(),
        ),
        (
            "an aid no agent has, unknown target too",
            &app.key,
            NOBODY,
            &NOBODY.replace('0', "f"),
        ),
    ];
    for (case, key, aid, target) in cases {
        let res = app
            .create_thread(
                key,
                json!({"aid": aid, "target_aid": target, "first_message": "x"}),
            )
            .await;
        let status = res.status();
        assert_eq!(status, 403, "{case}");
        assert_error(res, 403, "FORBIDDEN").await;
    }
    assert_eq!(app.stored_threads(), 0);
    assert_eq!(app.stored_messages(), 0);
}

// --------------------------------------------------------------- thread/message

#[tokio::test]
async fn a_posted_message_has_the_documented_shape() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    let res = app
        .post_message(
            &app.key,
            json!({"aid": app.bob.aid, "thread_id": id, "content": "Here are the Q4 findings",
                   "metadata": {"source": "sheet", "n": [1, 2]}}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let m = &body["message"];
    assert_uuid_v7(&m["id"]);
    assert_eq!(m["thread_id"], id.as_str());
    assert_eq!(m["seq"], 1);
    assert_eq!(m["sender_aid"], app.bob.aid.as_str());
    assert_eq!(
        m["sender"],
        app.bob.aid.as_str(),
        "sender is the AID for ACSP messages"
    );
    assert_eq!(m["content"], "Here are the Q4 findings");
    assert_eq!(m["msg_type"], "text", "msg_type defaults to text");
    assert_eq!(m["metadata"], json!({"source": "sheet", "n": [1, 2]}));
    assert_time(&m["created_at"]);
    assert_eq!(app.stored_messages(), 1);

    // The thread reflects it.
    let got = read_as(&app, &app.alice, &id, "").await;
    assert_eq!(got["thread"]["message_count"], 1);
    assert_eq!(got["messages"][0]["id"], m["id"]);
    assert_eq!(got["messages"][0]["metadata"], m["metadata"]);
}

#[tokio::test]
async fn a_post_whose_strings_hold_escapes_is_stored_decoded_and_answered_as_read_back() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    // Every string of the body written with escapes (the AID's first digit,
    // the id's first dash, a letter of the type): the server decodes each
    // before it checks it, as for a plain body.
    let aid = &app.bob.aid;
    let escaped_aid = format!("\\u{:04x}{}", aid.as_bytes()[0], &aid[1..]);
    let dash = id.find('-').expect("a UUID has dashes");
    let escaped_id = format!("{}\\u002d{}", &id[..dash], &id[dash + 1..]);
    let body = format!(
        r#"{{"aid":"{escaped_aid}","thread_id":"{escaped_id}","msg_type":"requ\u0065st","content":"line\nbreak \"quoted\" caf\u00e9 \ud83d\ude00 back\\slash"}}"#
    );
    let res = app
        .client
        .post(app.url("/api/acsp/thread/message"))
        .bearer_auth(&app.key)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 201);
    let answer = res.text().await.expect("body");
    let m: Value = serde_json::from_str(&answer).expect("JSON");
    let m = &m["message"];
    assert_eq!(m["content"], "line\nbreak \"quoted\" café 😀 back\\slash");
    assert_eq!(m["msg_type"], "request");
    assert_eq!(m["sender_aid"], aid.as_str());
    assert_eq!(m["thread_id"], id.as_str());
    assert_eq!(app.stored_messages(), 1);
    // The 201's message is, byte for byte, the message as a read shows it.
    let page = raw_page(&app, &app.alice, &id, "").await;
    let message = answer
        .strip_prefix("{\"message\":")
        .and_then(|rest| rest.strip_suffix("}\n"))
        .unwrap_or_else(|| panic!("not a message body: {answer}"));
    assert!(
        page.contains(&format!("\"messages\":[{message}]")),
        "201 {answer} not in the page {page}"
    );
}

#[tokio::test]
async fn seq_numbers_each_threads_messages_1_2_3_without_gaps() {
    let app = spawn_app().await;
    let a = app.thread_between(&app.alice, &app.bob).await;
    let b = app.thread_between(&app.bob, &app.alice).await;
    let mut got = Vec::new();
    for i in 0..5 {
        let from = if i % 2 == 0 { &app.alice } else { &app.bob };
        got.push(
            app.say(from, &a, &format!("a{i}")).await["seq"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(got, vec![1, 2, 3, 4, 5]);
    // Another thread has its own numbering.
    assert_eq!(app.say(&app.alice, &b, "b0").await["seq"], 1);
    let body = read_as(&app, &app.alice, &a, "").await;
    assert_eq!(seqs(&body), vec![1, 2, 3, 4, 5]);
    assert_eq!(body["thread"]["message_count"], 5);
}

#[tokio::test]
async fn concurrent_posts_get_distinct_gap_free_seqs() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    let posts = (0..20).map(|i| {
        let from = if i % 2 == 0 { &app.alice } else { &app.bob };
        let id = id.clone();
        let app = &app;
        async move {
            app.say(from, &id, &format!("m{i}")).await["seq"]
                .as_i64()
                .unwrap()
        }
    });
    let got: BTreeSet<i64> = futures_util::future::join_all(posts)
        .await
        .into_iter()
        .collect();
    assert_eq!(got, (1..=20).collect::<BTreeSet<i64>>());
    let body = read_as(&app, &app.alice, &id, "").await;
    assert_eq!(
        seqs(&body),
        (1..=20).collect::<Vec<i64>>(),
        "history in seq order"
    );
}

#[tokio::test]
async fn every_msg_type_is_accepted_and_an_unknown_one_is_422() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    for t in ["text", "request", "response", "system"] {
        let res = app
            .post_message(
                &app.key,
                json!({"aid": app.alice.aid, "thread_id": id, "content": "x", "msg_type": t}),
            )
            .await;
        let (status, body) = json_of(res).await;
        assert_eq!(status, 201, "{t}: {body}");
        assert_eq!(body["message"]["msg_type"], t);
    }
    let before = app.stored_messages();
    for bad in [json!("note"), json!("TEXT"), json!(""), json!(1)] {
        let res = app
            .post_message(
                &app.key,
                json!({"aid": app.alice.aid, "thread_id": id, "content": "x", "msg_type": bad}),
            )
            .await;
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], "msg_type", "msg_type {bad}");
    }
    assert_eq!(app.stored_messages(), before);
    let got = read_as(&app, &app.bob, &id, "").await;
    let types: Vec<&str> = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["text", "request", "response", "system"]);
}

#[tokio::test]
async fn posting_to_a_closed_or_archived_thread_is_409_and_stores_nothing() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    for status in ["closed", "archived"] {
        set_status_as(&app, &app.alice, &id, status).await;
        for from in [&app.alice, &app.bob] {
            let res = app
                .post_message(
                    &from.key,
                    json!({"aid": from.aid, "thread_id": id, "content": "x"}),
                )
                .await;
            assert_error(res, 409, "THREAD_NOT_ACTIVE").await;
        }
        assert_eq!(
            app.stored_messages(),
            0,
            "nothing stored on a {status} thread"
        );
    }
    // Reactivated, it takes messages again, numbered from 1.
    set_status_as(&app, &app.bob, &id, "active").await;
    assert_eq!(app.say(&app.alice, &id, "back").await["seq"], 1);
}

#[tokio::test]
async fn an_agent_outside_the_thread_gets_404_like_for_a_missing_thread() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let id = app.thread_between(&app.alice, &app.bob).await;
    let res = app
        .post_message(
            &carol.key,
            json!({"aid": carol.aid, "thread_id": id, "content": "hi"}),
        )
        .await;
    let foreign = assert_error(res, 404, "NOT_FOUND").await;
    let res = app
        .post_message(
            &carol.key,
            json!({"aid": carol.aid, "thread_id": NO_THREAD, "content": "hi"}),
        )
        .await;
    let missing = assert_error(res, 404, "NOT_FOUND").await;
    assert_eq!(
        foreign["error"]["message"], missing["error"]["message"],
        "a foreign thread must look exactly like a missing one"
    );
    assert_eq!(app.stored_messages(), 0);
}

#[tokio::test]
async fn an_agent_of_the_same_account_outside_the_thread_gets_404() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    // The seed account owns alice and bob; only alice takes part here.
    let id = app.thread_between(&app.alice, &carol).await;
    let res = app
        .post_message(
            &app.key,
            json!({"aid": app.bob.aid, "thread_id": id, "content": "hi"}),
        )
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    let res = app
        .get_thread(&app.key, &id, &format!("aid={}", app.bob.aid))
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    let res = app
        .set_status(
            &app.key,
            json!({"aid": app.bob.aid, "thread_id": id, "status": "closed"}),
        )
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    assert_eq!(app.stored_messages(), 0);
    assert_eq!(
        read_as(&app, &app.alice, &id, "").await["thread"]["status"],
        "active"
    );
    assert_eq!(list_of(&app, &app.bob, "status=all").await["total"], 0);
}

/// Refused on `thread_id` (the account can read the thread: "not found"
/// would contradict that), and nothing stored.
#[tokio::test]
async fn a_turn_taking_thread_takes_no_acsp_messages() {
    let app = spawn_app().await;
    let (id, _) = app.grant_for(&app.key, None).await;
    let res = app
        .post_message(
            &app.key,
            json!({"aid": app.alice.aid, "thread_id": id, "content": "hi"}),
        )
        .await;
    let error = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(error["error"]["field"], "thread_id", "{error}");
    assert_eq!(app.stored_messages(), 0);
}

/// Posts with an `Idempotency-Key` header as alice (the seed key).
async fn post_with_key(
    app: &TestApp,
    thread_id: &str,
    key: &str,
    content: &str,
) -> reqwest::Response {
    app.client
        .post(app.url("/api/acsp/thread/message"))
        .bearer_auth(&app.key)
        .header("Idempotency-Key", key)
        .json(&json!({"aid": app.alice.aid, "thread_id": thread_id, "content": content}))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn an_idempotent_retry_returns_the_original_message_and_stores_nothing() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    let first = post_with_key(&app, &id, "retry-1", "once").await;
    assert_eq!(first.status(), 201);
    let first = first.text().await.unwrap();
    let retry = post_with_key(&app, &id, "retry-1", "once").await;
    assert_eq!(retry.status(), 201, "a retry answers 201 too");
    assert_eq!(retry.text().await.unwrap(), first, "identical body");
    assert_eq!(app.stored_messages(), 1, "the retry stored nothing");

    // Another key stores a new message.
    let (status, body) = json_of(post_with_key(&app, &id, "retry-2", "twice").await).await;
    assert_eq!(status, 201);
    assert_eq!(body["message"]["seq"], 2);
    assert_eq!(app.stored_messages(), 2);
    let got = read_as(&app, &app.bob, &id, "").await;
    assert_eq!(seqs(&got), vec![1, 2]);
}

#[tokio::test]
async fn an_idempotency_key_is_scoped_to_its_thread_and_account() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let a = app.thread_between(&app.alice, &carol).await;
    let b = app.thread_between(&app.alice, &app.bob).await;
    let (s1, m1) = json_of(post_with_key(&app, &a, "k", "from alice").await).await;
    assert_eq!(s1, 201);
    // Same key, same account, another thread: a new message.
    let (s2, m2) = json_of(post_with_key(&app, &b, "k", "other thread").await).await;
    assert_eq!(s2, 201);
    assert_ne!(m1["message"]["id"], m2["message"]["id"]);
    // Same key, same thread, another account: a new message.
    let res = app
        .client
        .post(app.url("/api/acsp/thread/message"))
        .bearer_auth(&carol.key)
        .header("Idempotency-Key", "k")
        .json(&json!({"aid": carol.aid, "thread_id": a, "content": "from carol"}))
        .send()
        .await
        .unwrap();
    let (s3, m3) = json_of(res).await;
    assert_eq!(s3, 201, "{m3}");
    assert_eq!(m3["message"]["seq"], 2);
    assert_eq!(m3["message"]["sender_aid"], carol.aid.as_str());
    assert_eq!(app.stored_messages(), 3);
}

#[tokio::test]
async fn an_invalid_idempotency_key_is_422_and_stores_nothing() {
    use reqwest::header::HeaderValue;
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    let long = "k".repeat(129);
    let cases: [(&str, HeaderValue); 4] = [
        ("129 characters", HeaderValue::from_str(&long).unwrap()),
        ("empty", HeaderValue::from_static("")),
        ("a tab inside", HeaderValue::from_static("tab\there")),
        (
            "a non-ASCII byte",
            HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        ),
    ];
    for (case, value) in cases {
        let res = app
            .client
            .post(app.url("/api/acsp/thread/message"))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", value)
            .json(&json!({"aid": app.alice.aid, "thread_id": id, "content": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{case}");
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], "Idempotency-Key", "{case}");
    }
    assert_eq!(app.stored_messages(), 0);
    // 128 printable characters (spaces included) is the longest valid key.
    let longest = format!("a b{}", "~".repeat(125));
    assert_eq!(post_with_key(&app, &id, &longest, "x").await.status(), 201);
}

// ------------------------------------------------------------ GET thread/{id}

#[tokio::test]
async fn getting_a_thread_returns_it_with_messages_oldest_first() {
    let app = spawn_app().await;
    let res = app
        .create_thread(
            &app.key,
            json!({"aid": app.alice.aid, "target_aid": app.bob.aid, "subject": "Q4",
                   "first_message": "one", "metadata": {"p": true}}),
        )
        .await;
    let (_, created) = json_of(res).await;
    let id = created["thread"]["id"].as_str().unwrap().to_owned();
    app.say(&app.bob, &id, "two").await;
    app.say(&app.alice, &id, "three").await;

    let body = read_as(&app, &app.alice, &id, "").await;
    let t = &body["thread"];
    assert_eq!(t["id"], id.as_str());
    assert_eq!(t["creator_aid"], app.alice.aid.as_str());
    assert_eq!(t["target_aid"], app.bob.aid.as_str());
    assert_eq!(t["subject"], "Q4");
    assert_eq!(t["status"], "active");
    assert_eq!(t["message_count"], 3);
    assert_eq!(t["metadata"], json!({"p": true}));
    assert_eq!(t["created_at"], created["thread"]["created_at"]);
    assert_time(&t["updated_at"]);
    assert_eq!(body["has_more"], false);
    let contents: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, vec!["one", "two", "three"]);
    assert_eq!(seqs(&body), vec![1, 2, 3]);
    let names: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sender_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alice", "bob", "alice"]);

    // The query-string form answers the same.
    let res = app
        .get(
            &format!("/api/acsp/thread?thread_id={id}&aid={}", app.alice.aid),
            &app.key,
        )
        .await;
    let (status, alias) = json_of(res).await;
    assert_eq!(status, 200, "{alias}");
    assert_eq!(alias["thread"], body["thread"]);
    assert_eq!(alias["messages"], body["messages"]);
    assert_eq!(alias["has_more"], false);
}

#[tokio::test]
async fn limit_offset_and_after_page_through_history() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    for i in 1..=7 {
        app.say(&app.alice, &id, &format!("m{i}")).await;
    }
    // (query, expected seqs, expected has_more)
    let cases: [(&str, Vec<i64>, bool); 10] = [
        ("limit=3", vec![1, 2, 3], true),
        ("limit=3&offset=3", vec![4, 5, 6], true),
        ("limit=3&offset=6", vec![7], false),
        ("limit=7", vec![1, 2, 3, 4, 5, 6, 7], false),
        ("after=5", vec![6, 7], false),
        ("after=2&limit=2", vec![3, 4], true),
        ("after=2&offset=1&limit=2", vec![4, 5], true),
        ("after=7", vec![], false),
        ("after=0", vec![1, 2, 3, 4, 5, 6, 7], false),
        ("offset=100", vec![], false),
    ];
    for (query, want, more) in cases {
        let body = read_as(&app, &app.bob, &id, query).await;
        assert_eq!(seqs(&body), want, "{query}");
        assert_eq!(body["has_more"], more, "has_more for {query}");
        assert_eq!(body["thread"]["message_count"], 7, "{query}");
    }
}

/// The body of a page read as `agent`, as text (byte for byte).
async fn raw_page(app: &TestApp, agent: &Agent, thread_id: &str, query: &str) -> String {
    let res = app
        .get_thread(&agent.key, thread_id, &format!("aid={}&{query}", agent.aid))
        .await;
    assert_eq!(res.status(), 200);
    res.text().await.expect("body")
}

#[tokio::test]
async fn a_final_page_reads_the_same_and_an_open_page_grows_with_new_messages() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    for i in 1..=5 {
        app.say(&app.alice, &id, &format!("m{i}")).await;
    }
    // Final (a message follows it): the same answer every time.
    let first = raw_page(&app, &app.bob, &id, "limit=3").await;
    assert_eq!(first, raw_page(&app, &app.bob, &id, "limit=3").await);
    let body: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        (seqs(&body), body["has_more"].clone()),
        (vec![1, 2, 3], json!(true))
    );

    // Open (nothing follows yet): never served as it was once new
    // messages arrive, whether the page grows or only its has_more flips.
    let body = read_as(&app, &app.bob, &id, "limit=3&offset=3").await;
    assert_eq!(
        (seqs(&body), body["has_more"].clone()),
        (vec![4, 5], json!(false))
    );
    app.say(&app.alice, &id, "m6").await;
    let body = read_as(&app, &app.bob, &id, "limit=3&offset=3").await;
    assert_eq!(
        (seqs(&body), body["has_more"].clone()),
        (vec![4, 5, 6], json!(false))
    );
    app.say(&app.alice, &id, "m7").await;
    let body = read_as(&app, &app.bob, &id, "limit=3&offset=3").await;
    assert_eq!(
        (seqs(&body), body["has_more"].clone()),
        (vec![4, 5, 6], json!(true))
    );
    let contents: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["m4", "m5", "m6"]);

    // A final page read again still carries the thread as it is now.
    let body = read_as(&app, &app.bob, &id, "limit=3").await;
    assert_eq!(seqs(&body), vec![1, 2, 3]);
    assert_eq!(body["thread"]["message_count"], 7);
    // And the same range with another limit is its own page.
    let body = read_as(&app, &app.bob, &id, "limit=2").await;
    assert_eq!(seqs(&body), vec![1, 2]);
}

#[tokio::test]
async fn a_final_page_once_read_is_still_refused_to_an_outsider_and_a_revoked_key() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let id = app.thread_between(&app.alice, &carol).await;
    for i in 1..=3 {
        app.say(&app.alice, &id, &format!("m{i}")).await;
    }
    let page = read_as(&app, &carol, &id, "limit=2").await;
    assert_eq!(
        (seqs(&page), page["has_more"].clone()),
        (vec![1, 2], json!(true))
    );
    // The same page, asked for by an agent of another account.
    let dave = app.new_agent("dave");
    let res = app
        .get_thread(&dave.key, &id, &format!("aid={}&limit=2", dave.aid))
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    // And by its reader once her key is revoked (from another process).
    threadline::cli::key_revoke(&app.db, &carol.key).expect("key revoke");
    let res = app
        .get_thread(&carol.key, &id, &format!("aid={}&limit=2", carol.aid))
        .await;
    assert_error(res, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn a_kept_page_answers_401_then_403_then_404_in_that_order() {
    // A kept page is read with one lookup of key, agent and thread: the
    // answers keep the order of the separate checks.
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let dave = app.new_agent("dave");
    let id = app.thread_between(&app.alice, &carol).await;
    for i in 1..=3 {
        app.say(&app.alice, &id, &format!("m{i}")).await;
    }
    let page = read_as(&app, &carol, &id, "limit=2").await;
    assert_eq!(seqs(&page), vec![1, 2], "the page is final, so kept");
    let unknown_key = format!("nk_{}", "A".repeat(43));
    let other_thread = "01a222ed-0ad9-702c-9596-342faedb0c76";
    let cases = [
        // (key, aid, thread, status, code, case)
        (
            &unknown_key,
            &dave.aid,
            other_thread,
            401,
            "UNAUTHORIZED",
            "an unknown key first",
        ),
        (
            &unknown_key,
            &carol.aid,
            id.as_str(),
            401,
            "UNAUTHORIZED",
            "an unknown key, the reader's aid",
        ),
        (
            &carol.key,
            &dave.aid,
            id.as_str(),
            403,
            "FORBIDDEN",
            "another account's aid",
        ),
        (
            &carol.key,
            &dave.aid,
            other_thread,
            403,
            "FORBIDDEN",
            "a foreign aid before a missing thread",
        ),
        (
            &dave.key,
            &dave.aid,
            id.as_str(),
            404,
            "NOT_FOUND",
            "an outsider's own aid",
        ),
        (
            &carol.key,
            &carol.aid,
            other_thread,
            404,
            "NOT_FOUND",
            "no such thread",
        ),
    ];
    for (key, aid, thread, status, code, case) in cases {
        let res = app
            .get_thread(key, thread, &format!("aid={aid}&limit=2"))
            .await;
        assert_eq!(res.status(), status, "{case}");
        assert_error(res, status, code).await;
    }
    // Without an aid, the account's only agent reads the kept page.
    let res = app.get_thread(&carol.key, &id, "limit=2").await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seqs(&body), vec![1, 2]);
}

#[tokio::test]
async fn a_page_read_again_and_again_still_sees_every_commit_at_once() {
    // Each read connection remembers its lookups until someone commits:
    // a post by this server, a revocation by another process.
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let carol = app.new_agent("carol");
    let id = app.thread_between(&app.alice, &carol).await;
    for i in 1..=3 {
        app.say(&app.alice, &id, &format!("m{i}")).await;
    }
    // Often enough for every read connection to remember the lookup.
    for _ in 0..20 {
        let page = read_as(&app, &carol, &id, "limit=2").await;
        assert_eq!(page["thread"]["message_count"], 3);
    }
    // A post (the thread's count is in every page).
    app.say(&app.alice, &id, "m4").await;
    let page = read_as(&app, &carol, &id, "limit=2").await;
    assert_eq!(
        page["thread"]["message_count"], 4,
        "the next read sees the post"
    );
    for _ in 0..20 {
        read_as(&app, &carol, &id, "limit=2").await;
    }
    // A revocation from another connection, as `threadline key revoke`
    // makes it: refused from the very next request, on every connection.
    threadline::cli::key_revoke(&app.db, &carol.key).expect("key revoke");
    for _ in 0..20 {
        let res = app
            .get_thread(&carol.key, &id, &format!("aid={}&limit=2", carol.aid))
            .await;
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
}

#[tokio::test]
async fn a_page_holds_50_messages_by_default_and_up_to_200() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    for i in 0..55 {
        app.say(&app.alice, &id, &format!("m{i}")).await;
    }
    let body = read_as(&app, &app.bob, &id, "").await;
    assert_eq!(seqs(&body), (1..=50).collect::<Vec<i64>>());
    assert_eq!(body["has_more"], true);
    let body = read_as(&app, &app.bob, &id, "limit=200").await;
    assert_eq!(seqs(&body), (1..=55).collect::<Vec<i64>>());
    assert_eq!(body["has_more"], false);
}

#[tokio::test]
async fn page_parameters_are_percent_decoded_and_unknown_ones_ignored() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    for text in ["m1", "m2", "m3"] {
        app.say(&app.alice, &id, text).await;
    }
    let body = read_as(&app, &app.bob, &id, "%6Cimit=%32&after=1&unknown=x").await;
    assert_eq!(seqs(&body), vec![2, 3]);
    assert_eq!(body["has_more"], false);
}

#[tokio::test]
async fn out_of_range_page_parameters_are_422_naming_the_parameter() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &id, "m").await;
    let cases = [
        ("limit=0", "limit", "limit below 1"),
        ("limit=201", "limit", "limit above 200"),
        ("limit=abc", "limit", "limit not a number"),
        ("limit=1.5", "limit", "limit not an integer"),
        ("limit=", "limit", "limit empty"),
        ("offset=-1", "offset", "negative offset"),
        ("offset=x", "offset", "offset not a number"),
        ("after=-1", "after", "negative after"),
        ("after=abc", "after", "after not a number"),
        ("aid=ALICE", "aid", "aid not lowercase hex"),
        ("limit=5&limit=5", "limit", "limit given twice"),
        ("foo=1&foo=2", "foo", "an unknown parameter given twice"),
    ];
    for (query, field, case) in cases {
        let res = app.get_thread(&app.key, &id, query).await;
        assert_eq!(res.status(), 422, "{case}");
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], field, "{case}");
    }
    // The query-string form needs its thread_id, and a thread id is a UUID.
    let res = app
        .get(&format!("/api/acsp/thread?aid={}", app.bob.aid), &app.key)
        .await;
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["field"], "thread_id");
    let res = app
        .get_thread(&app.key, "not-a-uuid", &format!("aid={}", app.bob.aid))
        .await;
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["field"], "thread_id");
    // None of these marked anything read.
    assert_eq!(row_of(&app, &app.bob, &id).await["unread_count"], 1);
}

#[tokio::test]
async fn a_thread_of_others_is_404_exactly_like_a_missing_one() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let id = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &id, "private").await;

    let foreign = assert_error(app.get_thread(&carol.key, &id, "").await, 404, "NOT_FOUND").await;
    let missing = assert_error(
        app.get_thread(&carol.key, NO_THREAD, "").await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(foreign["error"]["message"], missing["error"]["message"]);
    let alias = app
        .get(&format!("/api/acsp/thread?thread_id={id}"), &carol.key)
        .await;
    assert_error(alias, 404, "NOT_FOUND").await;
    // Naming an agent the key does not own is 403, before any thread lookup.
    let res = app
        .get_thread(&carol.key, &id, &format!("aid={}", app.alice.aid))
        .await;
    assert_error(res, 403, "FORBIDDEN").await;
}

#[tokio::test]
async fn omitting_aid_when_the_account_owns_two_agents_is_422_on_aid() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    let body = assert_error(
        app.get_thread(&app.key, &id, "").await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(body["error"]["field"], "aid");
    let body = assert_error(
        app.list_threads(&app.key, "").await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(body["error"]["field"], "aid");
}

#[tokio::test]
async fn omitting_aid_with_a_single_agent_uses_it_and_marks_read() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let id = app.thread_between(&app.alice, &carol).await;
    app.say(&app.alice, &id, "one").await;
    app.say(&app.alice, &id, "two").await;
    assert_eq!(row_of(&app, &carol, &id).await["unread_count"], 2);

    let (status, body) = json_of(app.get_thread(&carol.key, &id, "").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seqs(&body), vec![1, 2]);
    assert_eq!(
        row_of(&app, &carol, &id).await["unread_count"],
        0,
        "the inferred agent read them"
    );
}

#[tokio::test]
async fn reading_a_thread_marks_the_messages_shown_as_read_by_that_agent() {
    let app = spawn_app().await;
    let res = app
        .create_thread(
            &app.key,
            json!({"aid": app.alice.aid, "target_aid": app.bob.aid, "first_message": "1"}),
        )
        .await;
    let id = json_of(res).await.1["thread"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.say(&app.alice, &id, "2").await;
    app.say(&app.alice, &id, "3").await;
    app.say(&app.bob, &id, "4").await;
    assert_eq!(row_of(&app, &app.bob, &id).await["unread_count"], 3);
    assert_eq!(row_of(&app, &app.alice, &id).await["unread_count"], 1);

    // Bob is shown seqs 1–2: only alice's third message stays unread.
    read_as(&app, &app.bob, &id, "limit=2").await;
    assert_eq!(row_of(&app, &app.bob, &id).await["unread_count"], 1);
    // Re-reading older messages never lowers the mark.
    read_as(&app, &app.bob, &id, "limit=3").await;
    read_as(&app, &app.bob, &id, "limit=1").await;
    assert_eq!(row_of(&app, &app.bob, &id).await["unread_count"], 0);
    // Alice's unread count is hers alone.
    assert_eq!(row_of(&app, &app.alice, &id).await["unread_count"], 1);
    // A new message from alice is unread again for bob.
    app.say(&app.alice, &id, "5").await;
    assert_eq!(row_of(&app, &app.bob, &id).await["unread_count"], 1);
}

#[tokio::test]
async fn a_turn_taking_thread_of_ones_own_account_is_readable_without_aid() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let (id, _) = app.grant_for(&app.key, None).await;
    // The seed account owns two agents, yet needs no aid here.
    let (status, body) = json_of(app.get_thread(&app.key, &id, "").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["thread"]["id"], id.as_str());
    assert_eq!(body["thread"]["creator_aid"], Value::Null);
    assert_eq!(body["messages"], json!([]));
    assert_error(app.get_thread(&carol.key, &id, "").await, 404, "NOT_FOUND").await;
}

// ---------------------------------------------------------------- thread/status

#[tokio::test]
async fn setting_a_status_answers_with_the_documented_body() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    let created = read_as(&app, &app.alice, &id, "").await["thread"]["updated_at"].clone();
    wait_until_after(&created).await;
    let body = set_status_as(&app, &app.alice, &id, "closed").await;
    assert_eq!(body["thread_id"], id.as_str());
    assert_eq!(
        body["session_id"],
        id.as_str(),
        "session_id repeats thread_id"
    );
    assert_eq!(body["status"], "closed");
    assert_time(&body["updated_at"]);
    assert!(
        body["updated_at"].as_str() > created.as_str(),
        "updated_at moved"
    );
    let got = read_as(&app, &app.alice, &id, "").await;
    assert_eq!(got["thread"]["status"], "closed");
    assert_eq!(got["thread"]["updated_at"], body["updated_at"]);
}

#[tokio::test]
async fn any_status_moves_to_any_other_by_either_participant() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    let walk = [
        "closed", "archived", "active", "archived", "closed", "active",
    ];
    for (i, status) in walk.into_iter().enumerate() {
        let who = if i % 2 == 0 { &app.alice } else { &app.bob };
        assert_eq!(
            set_status_as(&app, who, &id, status).await["status"],
            status
        );
        let got = read_as(&app, &app.alice, &id, "").await;
        assert_eq!(got["thread"]["status"], status, "after step {i}");
    }
}

#[tokio::test]
async fn setting_the_current_status_again_is_a_200_no_op() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    let first = set_status_as(&app, &app.alice, &id, "closed").await;
    // Let the clock move on, so that a needless write would show.
    wait_until_after(&first["updated_at"]).await;
    let again = set_status_as(&app, &app.bob, &id, "closed").await;
    assert_eq!(again["status"], "closed");
    assert_eq!(
        again["updated_at"], first["updated_at"],
        "updated_at unchanged"
    );
    let got = read_as(&app, &app.alice, &id, "").await;
    assert_eq!(got["thread"]["updated_at"], first["updated_at"]);
    // Also for a thread that was always active.
    let other = app.thread_between(&app.alice, &app.bob).await;
    let created = read_as(&app, &app.alice, &other, "").await["thread"]["updated_at"].clone();
    wait_until_after(&created).await;
    let body = set_status_as(&app, &app.alice, &other, "active").await;
    assert_eq!(body["updated_at"], created);
}

#[tokio::test]
async fn an_invalid_status_request_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    let a = app.alice.aid.as_str();
    let cases = [
        (
            "unknown status",
            json!({"aid": a, "thread_id": id, "status": "deleted"}),
            "status",
        ),
        (
            "wrong case",
            json!({"aid": a, "thread_id": id, "status": "Closed"}),
            "status",
        ),
        (
            "empty status",
            json!({"aid": a, "thread_id": id, "status": ""}),
            "status",
        ),
        (
            "status missing",
            json!({"aid": a, "thread_id": id}),
            "status",
        ),
        (
            "status a number",
            json!({"aid": a, "thread_id": id, "status": 2}),
            "status",
        ),
        (
            "thread_id missing",
            json!({"aid": a, "status": "closed"}),
            "thread_id",
        ),
        (
            "thread_id not a uuid",
            json!({"aid": a, "thread_id": "x", "status": "closed"}),
            "thread_id",
        ),
        (
            "aid missing",
            json!({"thread_id": id, "status": "closed"}),
            "aid",
        ),
    ];
    for (case, body, field) in cases {
        let res = app.set_status(&app.key, body).await;
        assert_eq!(res.status(), 422, "{case}");
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], field, "{case}");
    }
    assert_eq!(
        read_as(&app, &app.alice, &id, "").await["thread"]["status"],
        "active"
    );
}

#[tokio::test]
async fn the_status_of_a_thread_of_others_is_404_and_unchanged() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let id = app.thread_between(&app.alice, &app.bob).await;
    for thread_id in [id.as_str(), NO_THREAD] {
        let res = app
            .set_status(
                &carol.key,
                json!({"aid": carol.aid, "thread_id": thread_id, "status": "archived"}),
            )
            .await;
        assert_error(res, 404, "NOT_FOUND").await;
    }
    let res = app
        .set_status(
            &carol.key,
            json!({"aid": app.alice.aid, "thread_id": id, "status": "archived"}),
        )
        .await;
    assert_error(res, 403, "FORBIDDEN").await;
    assert_eq!(
        read_as(&app, &app.alice, &id, "").await["thread"]["status"],
        "active"
    );
}

// ---------------------------------------------------------------- GET threads

#[tokio::test]
async fn the_list_shows_the_other_participant_as_peer() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let res = app
        .create_thread(
            &app.key,
            json!({"aid": app.alice.aid, "target_aid": carol.aid, "subject": "Q4 Analysis",
                   "first_message": "hi"}),
        )
        .await;
    let (_, created) = json_of(res).await;
    let id = created["thread"]["id"].as_str().unwrap().to_owned();

    let from_alice = row_of(&app, &app.alice, &id).await;
    assert_eq!(from_alice["peer_aid"], carol.aid.as_str());
    assert_eq!(from_alice["peer_name"], "carol");
    assert_eq!(from_alice["subject"], "Q4 Analysis");
    assert_eq!(from_alice["status"], "active");
    assert_eq!(from_alice["message_count"], 1);
    assert_eq!(
        from_alice["unread_count"], 0,
        "alice's own message is not unread"
    );
    assert_eq!(from_alice["created_at"], created["thread"]["created_at"]);
    assert_time(&from_alice["last_message_at"]);
    assert_time(&from_alice["updated_at"]);

    let from_carol = row_of(&app, &carol, &id).await;
    assert_eq!(from_carol["peer_aid"], app.alice.aid.as_str());
    assert_eq!(from_carol["peer_name"], "alice");
    assert_eq!(from_carol["unread_count"], 1);
}

#[tokio::test]
async fn last_message_at_is_null_until_a_message_arrives() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    let row = row_of(&app, &app.bob, &id).await;
    assert_eq!(row["last_message_at"], Value::Null);
    assert_eq!(row["message_count"], 0);
    assert_eq!(row["unread_count"], 0);
    let m = app.say(&app.alice, &id, "hi").await;
    let row = row_of(&app, &app.bob, &id).await;
    assert_eq!(row["last_message_at"], m["created_at"]);
    assert_eq!(row["message_count"], 1);
}

#[tokio::test]
async fn unread_count_counts_only_the_peers_unread_messages() {
    let app = spawn_app().await;
    let id = app.thread_between(&app.alice, &app.bob).await;
    for i in 0..3 {
        app.say(&app.alice, &id, &format!("a{i}")).await;
    }
    for i in 0..2 {
        app.say(&app.bob, &id, &format!("b{i}")).await;
    }
    assert_eq!(row_of(&app, &app.bob, &id).await["unread_count"], 3);
    assert_eq!(row_of(&app, &app.alice, &id).await["unread_count"], 2);
    read_as(&app, &app.bob, &id, "").await;
    assert_eq!(row_of(&app, &app.bob, &id).await["unread_count"], 0);
    assert_eq!(row_of(&app, &app.alice, &id).await["unread_count"], 2);
}

#[tokio::test]
async fn the_list_puts_the_most_recent_activity_first() {
    let app = spawn_app().await;
    let t1 = app.thread_between(&app.alice, &app.bob).await;
    let t2 = app.thread_between(&app.bob, &app.alice).await;
    let t3 = app.thread_between(&app.alice, &app.bob).await;
    let body = list_of(&app, &app.alice, "").await;
    assert_eq!(
        ids(&body),
        vec![t3.clone(), t2.clone(), t1.clone()],
        "newest creation first"
    );

    // A message makes the oldest thread the most recent one.
    let newest = body["threads"][0]["created_at"].clone();
    wait_until_after(&newest).await;
    app.say(&app.bob, &t1, "bump").await;
    let body = list_of(&app, &app.alice, "").await;
    assert_eq!(ids(&body), vec![t1.clone(), t3.clone(), t2.clone()]);
    let body = list_of(&app, &app.bob, "").await;
    assert_eq!(ids(&body), vec![t1, t3, t2], "the same order for the peer");
}

#[tokio::test]
async fn the_status_filter_defaults_to_active() {
    let app = spawn_app().await;
    let a1 = app.thread_between(&app.alice, &app.bob).await;
    let a2 = app.thread_between(&app.alice, &app.bob).await;
    let closed = app.thread_between(&app.alice, &app.bob).await;
    let archived = app.thread_between(&app.alice, &app.bob).await;
    set_status_as(&app, &app.alice, &closed, "closed").await;
    set_status_as(&app, &app.alice, &archived, "archived").await;

    let as_set = |body: &Value| ids(body).into_iter().collect::<BTreeSet<_>>();
    let set = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let cases = [
        ("", set(&[&a1, &a2])),
        ("status=active", set(&[&a1, &a2])),
        ("status=closed", set(&[&closed])),
        ("status=archived", set(&[&archived])),
        ("status=all", set(&[&a1, &a2, &closed, &archived])),
    ];
    for (query, want) in cases {
        let body = list_of(&app, &app.bob, query).await;
        assert_eq!(as_set(&body), want, "{query:?}");
        assert_eq!(body["total"], want.len(), "total for {query:?}");
        assert_eq!(body["has_more"], false);
        for t in body["threads"].as_array().unwrap() {
            if let Some(s) = query.strip_prefix("status=").filter(|s| *s != "all") {
                assert_eq!(t["status"], s);
            }
        }
    }
    for bad in ["status=deleted", "status=ALL", "status="] {
        let res = app
            .list_threads(&app.key, &format!("aid={}&{bad}", app.bob.aid))
            .await;
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], "status", "{bad}");
    }
}

#[tokio::test]
async fn limit_and_offset_page_the_list_and_total_counts_every_match() {
    let app = spawn_app().await;
    let mut made = Vec::new();
    for _ in 0..21 {
        made.push(app.thread_between(&app.alice, &app.bob).await);
    }
    made.reverse(); // the list shows the newest first

    let body = list_of(&app, &app.alice, "").await;
    assert_eq!(ids(&body), made[..20].to_vec(), "20 by default");
    assert_eq!(body["total"], 21);
    assert_eq!(body["has_more"], true);

    let body = list_of(&app, &app.alice, "limit=5&offset=5").await;
    assert_eq!(ids(&body), made[5..10].to_vec());
    assert_eq!(body["total"], 21);
    assert_eq!(body["has_more"], true);

    let body = list_of(&app, &app.alice, "limit=5&offset=20").await;
    assert_eq!(ids(&body), made[20..].to_vec());
    assert_eq!(body["has_more"], false);

    let body = list_of(&app, &app.alice, "limit=100").await;
    assert_eq!(ids(&body), made);
    assert_eq!(body["has_more"], false);

    let body = list_of(&app, &app.alice, "offset=30").await;
    assert_eq!(body["threads"], json!([]));
    assert_eq!(body["total"], 21);
    assert_eq!(body["has_more"], false);

    let cases = [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
    ];
    for (query, field) in cases {
        let res = app
            .list_threads(&app.key, &format!("aid={}&{query}", app.alice.aid))
            .await;
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], field, "{query}");
    }
}

#[tokio::test]
async fn listing_as_an_agent_the_key_does_not_own_is_403() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let res = app
        .list_threads(&carol.key, &format!("aid={}", app.alice.aid))
        .await;
    assert_error(res, 403, "FORBIDDEN").await;
    let res = app.list_threads(&app.key, &format!("aid={NOBODY}")).await;
    assert_error(res, 403, "FORBIDDEN").await;
}
