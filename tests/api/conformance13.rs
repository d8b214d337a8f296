//! Conformance, round 13: what a client written from the contract (and the
//! hosted services' docs it comes from) relies on, found by walking every
//! route against a running server. One test per divergence found.

use serde_json::{json, Value};

use crate::helpers::{assert_error, json_of, spawn_app_with, TestApp, Ws};

/// Opens a new turn-taking thread and a socket on it, past its
/// `connection.ready`.
async fn listening_turn_thread(app: &TestApp) -> (String, Ws) {
    let (thread_id, url) = app.grant_for(&app.key, None).await;
    let mut ws = Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    (thread_id, ws)
}

/// `POST` on a turn-taking action with the dev key; its 200 body.
async fn action(app: &TestApp, name: &str, body: Value) -> Value {
    let res = app
        .post_json(&format!("/v1/turn-taking/actions/{name}"), &app.key, &body)
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{name}: {body}");
    body
}

/// The contract: an event's `id` "is the same if the event is sent again on
/// replay", and a resume replays a delivered reply part as `thread.message`.
/// So the live `turn_taking.message` of a part carries the stored message's
/// id, as a live `thread.message` does: a client that drops repeats by event
/// id across a reconnect must not show the part twice.
#[tokio::test]
async fn a_delivered_reply_part_keeps_its_event_id_when_a_resume_replays_it() {
    let app = spawn_app_with(|c| c.pace_scale = 0.0).await;
    let (thread_id, mut ws) = listening_turn_thread(&app).await;
    let batch = json!([{"sender": "dana", "content": "How did Q1 go?"}]);
    let submitted = action(
        &app,
        "submit_messages",
        json!({"thread_id": thread_id, "messages": batch}),
    )
    .await;
    action(
        &app,
        "respond",
        json!({"thread_id": thread_id, "turn_epoch": submitted["turn_epoch"],
               "content": "Q1 went well."}),
    )
    .await;
    let live = ws.event_of("turn_taking.message").await;
    let seq = live["seq"].as_i64().expect("a delivered part has a seq");
    ws.close().await;

    let (_, url) = app.grant_for(&app.key, Some(&thread_id)).await;
    let mut resumed = Ws::connect(&format!("{url}&after={}", seq - 1)).await;
    assert_eq!(resumed.event().await["type"], "connection.ready");
    let replayed = resumed.event().await;
    assert_eq!(replayed["type"], "thread.message", "{replayed}");
    assert_eq!(replayed["seq"], seq, "{replayed}");
    assert_eq!(replayed["data"]["content"], "Q1 went well.");
    assert_eq!(
        live["id"], replayed["id"],
        "the part's live event and its replay carry one id"
    );
    assert_eq!(
        replayed["id"], replayed["data"]["id"],
        "a message's event id is its id"
    );
}

/// A grant for a thread deleted since it was issued is refused with `404`
/// (README: "an unused grant for it is refused with 404"); the OpenAPI
/// document must list that answer for `/v1/ws`, or a client generated from
/// it has no case for the one refusal that says "do not retry".
#[tokio::test]
async fn the_websocket_route_documents_the_404_it_gives_a_deleted_threads_grant() {
    let app = spawn_app_with(|_| {}).await;
    let (thread_id, url) = app.grant_for(&app.key, None).await;
    threadline::cli::thread_delete(&app.db, &thread_id).expect("thread delete");
    let res = app.ws_handshake(&url).await;
    assert_error(res, 404, "NOT_FOUND").await;

    let doc = app.openapi_document().await;
    let answer = &doc["paths"]["/v1/ws"]["get"]["responses"]["404"];
    assert_eq!(
        answer["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorEnvelope",
        "GET /v1/ws documents its 404: {answer}"
    );
}

/// API.md: `stay_silent` when every message is a bare acknowledgement ("a
/// short fixed list … or emoji only"), `speak` otherwise; the README: "`...`
/// speaks". Punctuation that is not emoji must not pass for an emoji: the
/// one-character ellipsis (what phones make of "..."), a full-width question
/// mark (how CJK keyboards type "?"), a dash or an arrow is a message that
/// wants an answer as much as "..." or "?" does. Emoji, with their
/// modifiers and flags, still stay silent.
#[tokio::test]
async fn punctuation_beyond_ascii_is_not_taken_for_an_emoji() {
    let app = spawn_app_with(|_| {}).await;
    let (thread_id, _) = app.grant_for(&app.key, None).await;
    for (content, decision) in [
        ("…", "speak"),
        ("？", "speak"),
        ("！？", "speak"),
        ("—", "speak"),
        ("→", "speak"),
        ("「」", "speak"),
        ("★", "speak"),
        ("👍", "stay_silent"),
        ("👍🏽", "stay_silent"),
        ("❤️", "stay_silent"),
        ("🇺🇸", "stay_silent"),
        ("👨‍👩‍👧", "stay_silent"),
        ("ok 👌", "stay_silent"),
        ("thanks…", "stay_silent"),
    ] {
        let batch = json!([{"sender": "dana", "content": content}]);
        let answer = action(
            &app,
            "submit_messages",
            json!({"thread_id": thread_id, "messages": batch}),
        )
        .await;
        assert_eq!(answer["decision"], decision, "{content:?}: {answer}");
    }
}

/// API.md fixes the values of a batch's `decision` ("speak" |
/// "stay_silent") and `tags` (`fast`, `burst`, `comeback`); the OpenAPI
/// document gave both as free strings, so a generated client had no closed
/// type for them and schemathesis could not hold an answer to them. Both
/// answers that carry them (`submit_messages`, the turns route) name the
/// enums, and the values a live batch gets are among them.
#[tokio::test]
async fn the_document_lists_the_decisions_and_tags_a_batch_can_get() {
    let app = spawn_app_with(|_| {}).await;
    let doc = app.openapi_document().await;
    let schemas = &doc["components"]["schemas"];
    let named = |r: &Value| -> Value {
        let name = r["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("not a $ref: {r}"));
        schemas[name.trim_start_matches("#/components/schemas/")]["enum"].clone()
    };
    let decisions = json!(["speak", "stay_silent"]);
    let tags = json!(["fast", "burst", "comeback"]);
    let submit = &schemas["SubmitAnswer"]["properties"];
    assert_eq!(named(&submit["decision"]), decisions, "{submit}");
    assert_eq!(named(&submit["tags"]["items"]), tags, "{submit}");
    let turn = &schemas["TurnView"]["properties"];
    let decision = turn["decision"]["oneOf"]
        .as_array()
        .and_then(|alts| alts.iter().find(|a| a.get("$ref").is_some()))
        .unwrap_or_else(|| panic!("TurnView.decision: an enum or null: {turn}"));
    assert_eq!(named(decision), decisions, "{turn}");
    assert_eq!(named(&turn["tags"]["items"]), tags, "{turn}");

    let thread_id = {
        let body = json!({"integrations": {"social_signals": {}}});
        let (status, opened) = json_of(app.open_thread(&app.key, body).await).await;
        assert_eq!(status, 200, "{opened}");
        opened["thread"]["id"].as_str().unwrap().to_owned()
    };
    let batch = json!([{"sender": "a", "content": "one?"}, {"sender": "a", "content": "two?"},
                       {"sender": "a", "content": "three?"}]);
    let answer = action(
        &app,
        "submit_messages",
        json!({"thread_id": thread_id, "messages": batch}),
    )
    .await;
    assert_eq!(answer["decision"], "speak");
    assert_eq!(answer["tags"], json!(["burst"]));
}

/// `open_thread` with the id of a thread that no longer exists creates a new
/// thread under that id (API.md: "the id is an idempotency key"), and a
/// deleted thread no longer exists. The new thread is empty: a read must not
/// be answered from pages of history kept for the deleted thread under the
/// same id, least of all to another account.
#[tokio::test]
async fn a_thread_created_under_a_deleted_threads_id_shows_none_of_its_history() {
    let app = spawn_app_with(|_| {}).await;
    let (thread_id, _) = app.grant_for(&app.key, None).await;
    let batch = json!([{"sender": "dana", "content": "the old secret"},
                       {"sender": "dana", "content": "and another"}]);
    action(
        &app,
        "submit_messages",
        json!({"thread_id": thread_id, "messages": batch}),
    )
    .await;
    // A first page with a message after it: final, so the server keeps it.
    for _ in 0..2 {
        let (status, page) = json_of(app.get_thread(&app.key, &thread_id, "limit=1").await).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["messages"][0]["content"], "the old secret");
    }
    threadline::cli::thread_delete(&app.db, &thread_id).expect("thread delete");

    let other = app.new_agent("mallory");
    let (status, opened) = json_of(
        app.open_thread(&other.key, json!({"thread_id": thread_id}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{opened}");
    assert_eq!(opened["thread"]["user_id"], other.user_id.as_str());
    let (status, page) = json_of(app.get_thread(&other.key, &thread_id, "limit=1").await).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["thread"]["message_count"], 0, "{page}");
    assert_eq!(
        page["messages"],
        json!([]),
        "a new thread has no history: {page}"
    );
    assert_eq!(page["has_more"], false, "{page}");
}

/// The same for a typing watch: a `typing_start` on a thread that is then
/// deleted must not yield a `typing_without_sending` signal on a new thread
/// opened under its id (by another account here: the signal would hand it
/// a sender name from the deleted thread).
#[tokio::test]
async fn a_typing_watch_dies_with_its_thread_and_never_signals_a_new_one_under_its_id() {
    let app = spawn_app_with(|c| c.typing_signal_secs = 1).await;
    let signals = json!({"social_signals": {}});
    let (status, opened) = json_of(
        app.open_thread(&app.key, json!({"integrations": signals}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{opened}");
    let thread_id = opened["thread"]["id"].as_str().unwrap().to_owned();
    let typing = |key: String, sender: &'static str| {
        let body = json!({"thread_id": thread_id, "type": "typing_start", "sender": sender});
        let app = &app;
        async move {
            let res = app
                .post_json("/v1/turn-taking/actions/record_event", &key, &body)
                .await;
            assert_eq!(res.status(), 200);
        }
    };
    typing(app.key.clone(), "dana").await;
    threadline::cli::thread_delete(&app.db, &thread_id).expect("thread delete");

    let other = app.new_agent("mallory");
    let body = json!({"thread_id": thread_id, "integrations": signals});
    let (status, reopened) = json_of(app.open_thread(&other.key, body).await).await;
    assert_eq!(status, 200, "{reopened}");
    let mut ws = Ws::connect(reopened["realtime"]["connect_url"].as_str().unwrap()).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    // The new thread's own watch starts after the old one: its signal comes
    // after the old one's would have.
    typing(other.key.clone(), "eve").await;
    loop {
        let signal = ws.event_of("turn_taking.signal").await;
        assert_ne!(signal["data"]["sender"], "dana", "{signal}");
        if signal["data"]["sender"] == "eve" {
            break;
        }
    }
}
