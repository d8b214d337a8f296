//! Turn-taking decisions recorded with their batch and read back by any
//! client of the account: GET /v1/turn-taking/threads/{thread_id}/turns.

use serde_json::{json, Value};

use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with, TestApp};

/// The turns page, read by a client other than the one that submitted (its
/// own HTTP connection pool; the same account's key).
async fn turns(app: &TestApp, thread_id: &str, query: &str) -> Value {
    let other = reqwest::Client::new();
    let res = other
        .get(app.url(&format!(
            "/v1/turn-taking/threads/{thread_id}/turns?{query}"
        )))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    body
}

const REPLY: &str = "Thanks for asking, I had a look at the figures this morning. \
    Revenue is up four percent on the quarter, mostly from the new region. \
    Costs are flat, which is better than the plan expected.";

#[tokio::test]
async fn each_batch_is_read_back_with_its_decision_tags_messages_and_delivered_parts() {
    let app = spawn_app_with(|c| c.pace_scale = 0.0).await;
    let (thread_id, mut ws) = app
        .open_and_listen(Some(json!({"social_signals": {}})))
        .await;

    let silent = app
        .submit(
            &thread_id,
            json!([{"sender": "dana", "content": "ok"}, {"sender": "dana", "content": "thanks!"}]),
        )
        .await;
    assert_eq!(silent["decision"], "stay_silent");
    let burst = app
        .submit(
            &thread_id,
            json!([
                {"sender": "dana", "content": "How did Q1 go?"},
                {"sender": "eli", "content": "and Q2?"},
                {"sender": "eli", "content": "numbers please"}
            ]),
        )
        .await;
    assert_eq!(burst["decision"], "speak");
    let tags = burst["tags"].clone();
    assert!(tags.as_array().unwrap().contains(&json!("burst")), "{tags}");

    let answer = app.respond(&thread_id, REPLY, 2).await;
    let scheduled = answer["scheduled"].as_array().unwrap().clone();
    assert!(scheduled.len() >= 2, "{answer}");
    for _ in &scheduled {
        ws.event_of("turn_taking.message").await;
    }

    let page = turns(&app, &thread_id, "").await;
    assert_eq!(page["has_more"], false);
    let list = page["turns"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{page}");
    // Newest first, exactly as submit_messages answered.
    let (second, first) = (&list[0], &list[1]);
    assert_eq!(second["turn_epoch"], 2);
    assert_eq!(second["decision"], "speak");
    assert_eq!(second["tags"], tags);
    assert_eq!(
        (&second["first_seq"], &second["last_seq"]),
        (&json!(3), &json!(5))
    );
    assert!(second["created_at"].is_string());
    assert_eq!(first["turn_epoch"], 1);
    assert_eq!(first["decision"], "stay_silent");
    assert_eq!(first["tags"], json!([]));
    assert_eq!(
        (&first["first_seq"], &first["last_seq"]),
        (&json!(1), &json!(2))
    );
    assert_eq!(first["parts"], json!([]));

    let parts = second["parts"].as_array().unwrap();
    assert_eq!(parts.len(), scheduled.len());
    for (i, (part, sent)) in parts.iter().zip(&scheduled).enumerate() {
        assert_eq!(part["id"], sent["id"]);
        assert_eq!(part["index"], i);
        assert_eq!(part["count"], scheduled.len());
        assert_eq!(part["content"], sent["content"]);
        assert_eq!(part["deliver_at"], sent["deliver_at"]);
        assert_eq!(part["status"], "delivered", "{part}");
        // Delivered after the batch's five messages, in order.
        assert_eq!(part["seq"], 6 + i as i64, "{part}");
    }
}

#[tokio::test]
async fn parts_show_scheduled_then_cancelled_when_a_newer_batch_interrupts() {
    // Slow pacing: nothing falls due while the test runs.
    let app = spawn_app_with(|c| c.pace_scale = 100.0).await;
    let (thread_id, _ws) = app.open_and_listen(None).await;
    app.submit(
        &thread_id,
        json!([{"sender": "dana", "content": "Tell me"}]),
    )
    .await;
    let answer = app.respond(&thread_id, REPLY, 1).await;
    let count = answer["scheduled"].as_array().unwrap().len();

    let page = turns(&app, &thread_id, "").await;
    let parts = page["turns"][0]["parts"].as_array().unwrap().clone();
    assert_eq!(parts.len(), count);
    assert!(
        parts
            .iter()
            .all(|p| p["status"] == "scheduled" && p["seq"].is_null()),
        "{page}"
    );

    app.submit(&thread_id, json!([{"sender": "dana", "content": "Stop!"}]))
        .await;
    let page = turns(&app, &thread_id, "").await;
    assert_eq!(page["turns"][0]["turn_epoch"], 2);
    assert_eq!(page["turns"][0]["parts"], json!([]));
    let old = page["turns"][1]["parts"].as_array().unwrap();
    assert_eq!(old.len(), count);
    assert!(old.iter().all(|p| p["status"] == "cancelled"), "{page}");
}

#[tokio::test]
async fn turns_page_newest_first_with_before_and_limit() {
    let app = spawn_app().await;
    let (thread_id, _ws) = app.open_and_listen(None).await;
    for n in 1..=3 {
        let body = app
            .submit(
                &thread_id,
                json!([{"sender": "dana", "content": format!("question {n}?")}]),
            )
            .await;
        assert_eq!(body["turn_epoch"], n);
    }
    let epochs = |page: &Value| -> Vec<i64> {
        page["turns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["turn_epoch"].as_i64().unwrap())
            .collect()
    };
    let page = turns(&app, &thread_id, "limit=2").await;
    assert_eq!(epochs(&page), [3, 2]);
    assert_eq!(page["has_more"], true);
    let page = turns(&app, &thread_id, "limit=2&before=2").await;
    assert_eq!(epochs(&page), [1]);
    assert_eq!(page["has_more"], false);
    let page = turns(&app, &thread_id, "before=1").await;
    assert_eq!(page["turns"], json!([]));
    assert_eq!(page["has_more"], false);
}

#[tokio::test]
async fn a_reply_before_any_batch_is_listed_without_a_decision() {
    let app = spawn_app_with(|c| c.pace_scale = 100.0).await;
    let (thread_id, _ws) = app.open_and_listen(None).await;
    app.respond(&thread_id, "Hello there, how can I help?", 0)
        .await;
    let page = turns(&app, &thread_id, "").await;
    let turn = &page["turns"][0];
    assert_eq!(turn["turn_epoch"], 0);
    assert!(
        turn["decision"].is_null() && turn["first_seq"].is_null(),
        "{page}"
    );
    assert_eq!(turn["parts"][0]["status"], "scheduled");
}

#[tokio::test]
async fn reading_turns_checks_key_thread_and_query_and_a_refused_batch_records_nothing() {
    let app = spawn_app().await;
    let (thread_id, _ws) = app.open_and_listen(None).await;
    app.submit(&thread_id, json!([{"sender": "dana", "content": "hi?"}]))
        .await;
    let path = |id: &str, q: &str| format!("/v1/turn-taking/threads/{id}/turns{q}");

    let stranger = app.new_agent("stranger");
    let res = app.get(&path(&thread_id, ""), &stranger.key).await;
    assert_error(res, 404, "NOT_FOUND").await;
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_error(
        app.get(&path(&unknown, ""), &app.key).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        app.get(&path(&thread_id, ""), "nk_bad").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    // An ACSP thread: what the other turn-taking routes answer (422 on thread_id).
    let acsp = app.thread_between(&app.alice, &app.bob).await;
    let err = assert_error(
        app.get(&path(&acsp, ""), &app.key).await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert!(err.to_string().contains("thread_id"), "{err}");

    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=abc", "limit"),
        ("?before=0", "before"),
        ("?before=-3", "before"),
        ("?before=x", "before"),
    ] {
        let res = app.get(&path(&thread_id, query), &app.key).await;
        let err = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert!(err.to_string().contains(field), "{query}: {err}");
    }
    let res = app.get(&path("not-a-thread-id", ""), &app.key).await;
    assert_error(res, 422, "VALIDATION_ERROR").await;

    // A refused batch (one bad message) stores neither messages nor a decision.
    let res = app
        .post_json(
            "/v1/turn-taking/actions/submit_messages",
            &app.key,
            &json!({"thread_id": thread_id, "messages": [
                {"sender": "dana", "content": "fine"}, {"sender": "", "content": "x"}]}),
        )
        .await;
    assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(app.db_count("SELECT COUNT(*) FROM turn_decisions"), 1);
    assert_eq!(app.db_count("SELECT COUNT(*) FROM messages WHERE thread_id = (SELECT id FROM threads WHERE kind = 'turn')"), 1);
}

#[tokio::test]
async fn deleting_a_turn_taking_thread_deletes_its_decisions_too() {
    let app = spawn_app_with(|c| c.pace_scale = 100.0).await;
    let (doomed, _ws) = app.open_and_listen(None).await;
    let (kept, _ws2) = app.open_and_listen(None).await;
    for thread in [&doomed, &kept] {
        app.submit(thread, json!([{"sender": "dana", "content": "hi?"}]))
            .await;
        app.respond(thread, "Hello. How can I help today?", 1).await;
    }
    assert_eq!(app.db_count("SELECT COUNT(*) FROM turn_decisions"), 2);
    let out = threadline::cli::thread_delete(&app.db, &doomed).expect("deleted");
    assert!(out.contains("\"threads\":1"), "{out}");
    assert_eq!(app.db_count("SELECT COUNT(*) FROM turn_decisions"), 1);
    let res = app
        .get(&format!("/v1/turn-taking/threads/{doomed}/turns"), &app.key)
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    let page = turns(&app, &kept, "").await;
    assert_eq!(page["turns"][0]["decision"], "speak");
}

#[tokio::test]
async fn a_turn_lists_only_its_newest_fifty_parts() {
    let app = spawn_app_with(|c| {
        c.pace_scale = 100.0;
        c.rate_limit_per_minute = 0;
    })
    .await;
    let (thread_id, _ws) = app.open_and_listen(None).await;
    app.submit(
        &thread_id,
        json!([{"sender": "dana", "content": "Talk to me?"}]),
    )
    .await;
    let five = "This first sentence is long enough to stand alone as a part. \
        The second sentence is also long enough to stand on its own. \
        A third sentence follows, again long enough to be its own part. \
        The fourth sentence keeps going for more than forty characters. \
        And the fifth sentence closes this reply with enough characters.";
    let mut ids = Vec::new();
    while ids.len() <= 50 {
        let answer = app.respond(&thread_id, five, 1).await;
        for part in answer["scheduled"].as_array().unwrap() {
            ids.push(part["id"].clone());
        }
    }
    let page = turns(&app, &thread_id, "").await;
    let listed: Vec<Value> = page["turns"][0]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(listed, ids[ids.len() - 50..], "the newest 50, oldest first");
}

#[tokio::test]
async fn reading_turns_counts_against_the_keys_read_quota() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 2).await;
    let (thread_id, _ws) = app.open_and_listen(None).await;
    let path = format!("/v1/turn-taking/threads/{thread_id}/turns");
    for _ in 0..2 {
        assert_eq!(app.get(&path, &app.key).await.status(), 200);
    }
    assert_error(app.get(&path, &app.key).await, 429, "RATE_LIMITED").await;
    // The same quota as a thread's history.
    let res = app.get_thread(&app.key, &thread_id, "").await;
    assert_error(res, 429, "RATE_LIMITED").await;
}
