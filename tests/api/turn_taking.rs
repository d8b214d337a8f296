//! Turn-taking actions: submit_messages, respond and record_event, with the
//! paced, interruptible delivery seen through a real WebSocket.

use serde_json::{json, Value};
use threadline::startup::Application;

use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with, TestApp, Ws};

const REPLY: &str = "Thanks for asking, I had a look at the figures this morning. \
    Revenue is up four percent on the quarter, mostly from the new region. \
    Costs are flat, which is better than the plan expected. \
    I would still double-check the currency conversion in the March numbers.";

async fn history(app: &TestApp, thread_id: &str) -> Vec<Value> {
    let (status, body) = json_of(app.get_thread(&app.key, thread_id, "limit=200").await).await;
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_full_turn_is_submitted_answered_and_delivered_in_order() {
    let app = spawn_app_with(|c| c.pace_scale = 0.0).await;
    let (thread_id, mut ws) = app.open_and_listen(None).await;

    let submitted = app
        .submit(
            &thread_id,
            json!([{"sender": "dana", "content": "How did Q1 go?"}]),
        )
        .await;
    assert_eq!(submitted["decision"], "speak");
    assert_eq!(submitted["turn_epoch"], 1);
    assert_eq!(submitted["tags"], json!([]));
    let inbound = ws.event_of("thread.message").await;
    assert_eq!(inbound["data"]["sender"], "dana");
    assert_eq!(inbound["seq"], 1);

    let answer = app.respond(&thread_id, REPLY, 1).await;
    assert_eq!(answer["superseded"], false);
    let scheduled = answer["scheduled"].as_array().unwrap().clone();
    assert!((2..=5).contains(&scheduled.len()), "{answer}");
    let joined: Vec<&str> = scheduled
        .iter()
        .map(|s| s["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        joined.join(" "),
        REPLY.split_whitespace().collect::<Vec<_>>().join(" ")
    );

    // typing start, message, (typing start, message)*, typing stop.
    for (i, part) in scheduled.iter().enumerate() {
        let typing = ws.event().await;
        assert_eq!(typing["type"], "turn_taking.typing", "{typing}");
        assert_eq!(typing["data"]["state"], "start");
        let message = ws.event().await;
        assert_eq!(message["type"], "turn_taking.message", "{message}");
        assert_eq!(message["data"]["index"], i);
        assert_eq!(message["data"]["count"], scheduled.len());
        assert_eq!(message["data"]["id"], part["id"]);
        assert_eq!(message["data"]["content"], part["content"]);
        assert_eq!(message["data"]["turn_epoch"], 1);
        assert_eq!(message["seq"], 2 + i as i64);
        assert_eq!(message["data"]["seq"], 2 + i as i64);
    }
    let stop = ws.event().await;
    assert_eq!(stop["type"], "turn_taking.typing");
    assert_eq!(stop["data"]["state"], "stop");

    // History and resume see the delivered parts as stored messages.
    let stored = history(&app, &thread_id).await;
    assert_eq!(stored.len(), 1 + scheduled.len());
    for (m, part) in stored[1..].iter().zip(&scheduled) {
        assert_eq!(m["sender"], "agent");
        assert_eq!(m["sender_aid"], Value::Null);
        assert_eq!(m["msg_type"], "response");
        assert_eq!(m["content"], part["content"]);
    }
    let (_, url) = app.grant_for(&app.key, Some(&thread_id)).await;
    let mut resumed = Ws::connect(&format!("{url}&after=1")).await;
    assert_eq!(
        resumed.event().await["data"]["last_seq"],
        1 + scheduled.len() as i64
    );
    for i in 0..scheduled.len() {
        let replayed = resumed.event().await;
        assert_eq!(replayed["type"], "thread.message");
        assert_eq!(replayed["seq"], 2 + i as i64);
    }
}

#[tokio::test]
async fn an_acknowledgement_only_batch_stays_silent_under_heuristic() {
    let app = spawn_app().await;
    let (thread_id, _ws) = app.open_and_listen(None).await;
    let body = app.submit(&thread_id,
        json!([{"sender": "dana", "content": "ok"}, {"sender": "dana", "content": "thanks! 👍"}]),
    )
    .await;
    assert_eq!(body["decision"], "stay_silent");
    let body = app
        .submit(
            &thread_id,
            json!([{"sender": "dana", "content": "ok, but why?"}]),
        )
        .await;
    assert_eq!(body["decision"], "speak");
    assert_eq!(body["turn_epoch"], 2);
}

#[tokio::test]
async fn the_always_policy_speaks_even_to_acknowledgements() {
    let app = spawn_app_with(|c| c.turn_policy = threadline::config::TurnPolicy::Always).await;
    let (thread_id, _ws) = app.open_and_listen(None).await;
    let body = app
        .submit(&thread_id, json!([{"sender": "dana", "content": "ok"}]))
        .await;
    assert_eq!(body["decision"], "speak");
}

#[tokio::test]
async fn a_stale_respond_is_superseded_and_sends_nothing() {
    let app = spawn_app_with(|c| c.pace_scale = 0.0).await;
    let (thread_id, mut ws) = app.open_and_listen(None).await;
    app.submit(
        &thread_id,
        json!([{"sender": "dana", "content": "first question"}]),
    )
    .await;
    app.submit(
        &thread_id,
        json!([{"sender": "dana", "content": "actually, another"}]),
    )
    .await;
    let stale = app.respond(&thread_id, REPLY, 1).await;
    assert_eq!(stale, json!({"scheduled": [], "superseded": true}));
    assert_eq!(app.db_count("SELECT COUNT(*) FROM scheduled_replies"), 0);

    // The next thing on the socket after the two inbound messages is the
    // current turn's reply, not anything from the stale one.
    assert_eq!(ws.event_of("thread.message").await["seq"], 1);
    assert_eq!(ws.event_of("thread.message").await["seq"], 2);
    app.respond(&thread_id, "Short answer.", 2).await;
    let next = ws.event().await;
    assert_eq!(next["type"], "turn_taking.typing");
    let message = ws.event().await;
    assert_eq!(message["data"]["content"], "Short answer.");
    assert_eq!(message["data"]["turn_epoch"], 2);
    assert_eq!(history(&app, &thread_id).await.len(), 3);
}

#[tokio::test]
async fn a_respond_ahead_of_the_current_turn_is_rejected() {
    let app = spawn_app().await;
    let (thread_id, _ws) = app.open_and_listen(None).await;
    let res = app
        .post_json(
            "/v1/turn-taking/actions/respond",
            &app.key,
            &json!({"thread_id": thread_id, "content": "hi", "turn_epoch": 7}),
        )
        .await;
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["field"], "turn_epoch");
    assert_eq!(app.db_count("SELECT COUNT(*) FROM scheduled_replies"), 0);
}

#[tokio::test]
async fn a_new_submit_interrupts_a_reply_mid_delivery() {
    // Real pacing: parts arrive seconds apart, so the interruption lands
    // between the first and the second.
    let app = spawn_app_with(|c| c.pace_scale = 1.0).await;
    let (thread_id, mut ws) = app.open_and_listen(None).await;
    app.submit(
        &thread_id,
        json!([{"sender": "dana", "content": "Tell me everything."}]),
    )
    .await;
    let answer = app.respond(&thread_id, REPLY, 1).await;
    let count = answer["scheduled"].as_array().unwrap().len();
    assert!(count >= 2);

    let first = ws.event_of("turn_taking.message").await;
    assert_eq!(first["data"]["index"], 0);
    app.submit(
        &thread_id,
        json!([{"sender": "dana", "content": "Stop, new question!"}]),
    )
    .await;
    // The typing indicator stops, then the interrupting message arrives.
    let stop = ws.event_of("turn_taking.typing").await;
    let stop = if stop["data"]["state"] == "start" {
        ws.event_of("turn_taking.typing").await
    } else {
        stop
    };
    assert_eq!(stop["data"]["state"], "stop", "{stop}");
    let interrupting = ws.event_of("thread.message").await;
    assert_eq!(interrupting["data"]["content"], "Stop, new question!");

    assert_eq!(
        app.db_count("SELECT COUNT(*) FROM scheduled_replies WHERE state = 'cancelled'"),
        count as i64 - 1
    );
    assert_eq!(
        app.db_count("SELECT COUNT(*) FROM scheduled_replies WHERE state = 'pending'"),
        0
    );
    assert_eq!(
        app.db_count("SELECT COUNT(*) FROM messages WHERE sender = 'agent'"),
        1
    );
}

#[tokio::test]
async fn a_pending_schedule_is_delivered_after_a_restart() {
    // On the harness's backend: a SQLite file, or a PostgreSQL database.
    let db = crate::helpers::db::TestDb::new();
    let seed = db.seed();
    let start = |scale: f64| {
        let mut config = db.config();
        config.pace_scale = scale;
        Application::build(config)
    };
    let client = reqwest::Client::new();
    let post = |base: String, path: &'static str, body: Value| {
        let req = client
            .post(format!("{base}{path}"))
            .bearer_auth(&seed.login_key)
            .json(&body);
        async move { json_of(req.send().await.unwrap()).await }
    };

    // Slow pacing: nothing is due before the server stops.
    let app = start(20.0).await.unwrap();
    let base = app.base_url().to_owned();
    let stop = app.shutdown_handle();
    let running = tokio::spawn(app.run_until_stopped());
    let (_, opened) = post(
        base.clone(),
        "/v1/turn-taking/actions/open_thread",
        json!({}),
    )
    .await;
    let thread_id = opened["thread"]["id"].as_str().unwrap().to_owned();
    let (_, submitted) = post(
        base.clone(),
        "/v1/turn-taking/actions/submit_messages",
        json!({"thread_id": thread_id, "messages": [{"sender": "dana", "content": "hello?"}]}),
    )
    .await;
    let (status, answer) = post(
        base.clone(),
        "/v1/turn-taking/actions/respond",
        json!({"thread_id": thread_id, "content": REPLY, "turn_epoch": submitted["turn_epoch"]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let parts = answer["scheduled"].as_array().unwrap().len();
    stop.shutdown().await;
    running.await.unwrap().unwrap();

    // The parts are stored; a restarted server (fast clock now, but the
    // stored deliver_at stands) delivers them, late rather than never. To
    // avoid waiting out the slow schedule, pull the stored times to now.
    let pending = db.count("SELECT COUNT(*) FROM scheduled_replies WHERE state = 'pending'");
    assert_eq!(pending, parts as i64);
    db.execute("UPDATE scheduled_replies SET deliver_at_ms = deliver_at_ms - 3600000");

    let app = start(0.0).await.unwrap();
    let base = app.base_url().to_owned();
    tokio::spawn(app.run_until_stopped());
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    loop {
        let (_, body) = json_of(
            client
                .get(format!("{base}/api/acsp/thread/{thread_id}"))
                .bearer_auth(&seed.login_key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let agent = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["sender"] == "agent")
            .count();
        if agent == parts {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {agent} of {parts} delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tags_follow_timing_when_social_signals_are_on() {
    let app = spawn_app().await;
    let (thread_id, _ws) = app
        .open_and_listen(Some(json!({"social_signals": {}})))
        .await;
    let now = chrono::Utc::now();
    let ts = |secs_ago: i64| (now - chrono::Duration::seconds(secs_ago)).to_rfc3339();

    // dana speaks; 11 minutes later she is back in a burst of three.
    let first = app
        .submit(
            &thread_id,
            json!([{"sender": "dana", "content": "hello", "client_ts": ts(700)}]),
        )
        .await;
    assert_eq!(first["tags"], json!([]));
    let burst = app
        .submit(
            &thread_id,
            json!([
                {"sender": "dana", "content": "I'm back", "client_ts": ts(40)},
                {"sender": "eli", "content": "hi all", "client_ts": ts(39)},
                {"sender": "eli", "content": "what's up", "client_ts": ts(38)}
            ]),
        )
        .await;
    assert_eq!(burst["tags"], json!(["burst", "comeback"]));
    // A batch within 3 s of the previous one is fast.
    let fast = app
        .submit(
            &thread_id,
            json!([{"sender": "eli", "content": "?", "client_ts": ts(37)}]),
        )
        .await;
    assert_eq!(fast["tags"], json!(["fast"]));
}

#[tokio::test]
async fn tags_stay_empty_without_social_signals() {
    let app = spawn_app().await;
    let (thread_id, _ws) = app.open_and_listen(None).await;
    let three = json!([
        {"sender": "a", "content": "one"}, {"sender": "a", "content": "two"}, {"sender": "a", "content": "three"}
    ]);
    assert_eq!(
        app.submit(&thread_id, three.clone()).await["tags"],
        json!([])
    );
    assert_eq!(app.submit(&thread_id, three).await["tags"], json!([]));
}

#[tokio::test]
async fn typing_without_sending_is_signalled_unless_the_sender_speaks() {
    // quiet's message must reach the server within the window after its
    // typing_start: 3 s leaves room for a loaded machine (1 s did not
    // leave much for two requests).
    let app = spawn_app_with(|c| c.typing_signal_secs = 3).await;
    let (thread_id, mut ws) = app
        .open_and_listen(Some(json!({"social_signals": {}})))
        .await;
    let record = |sender: &str, kind: &str| {
        let body = json!({"thread_id": thread_id, "type": kind, "sender": sender});
        let app = &app;
        async move {
            app.post_json("/v1/turn-taking/actions/record_event", &app.key, &body)
                .await
        }
    };
    // quiet starts typing and then speaks: no signal for quiet.
    let (status, body) = json_of(record("quiet", "typing_start").await).await;
    assert_eq!((status.as_u16(), body), (200, json!({"tags": []})));
    app.submit(
        &thread_id,
        json!([{"sender": "quiet", "content": "done typing"}]),
    )
    .await;
    // shy starts typing later and never sends: the first signal is for shy.
    json_of(record("shy", "typing_start").await).await;
    let signal = ws.event_of("turn_taking.signal").await;
    assert_eq!(
        signal["data"],
        json!({"signal": "typing_without_sending", "sender": "shy"})
    );
}

#[tokio::test]
async fn turn_taking_inputs_are_validated_and_nothing_is_stored() {
    let app = spawn_app().await;
    let (thread_id, _ws) = app.open_and_listen(None).await;
    let msg = |content: Value| json!([{"sender": "dana", "content": content}]);
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"sender": "s", "content": format!("m{i}")}))
        .collect();
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "submit: messages missing",
            "submit_messages",
            json!({"thread_id": thread_id}),
            "messages",
        ),
        (
            "submit: no messages",
            "submit_messages",
            json!({"thread_id": thread_id, "messages": []}),
            "messages",
        ),
        (
            "submit: 21 messages",
            "submit_messages",
            json!({"thread_id": thread_id, "messages": many}),
            "messages",
        ),
        (
            "submit: content 4001",
            "submit_messages",
            json!({"thread_id": thread_id, "messages": msg(json!("x".repeat(4001)))}),
            "messages[0].content",
        ),
        (
            "submit: empty content",
            "submit_messages",
            json!({"thread_id": thread_id, "messages": msg(json!(""))}),
            "messages[0].content",
        ),
        (
            "submit: content not a string",
            "submit_messages",
            json!({"thread_id": thread_id, "messages": msg(json!(5))}),
            "messages[0].content",
        ),
        (
            "submit: sender 256",
            "submit_messages",
            json!({"thread_id": thread_id, "messages": [{"sender": "s".repeat(256), "content": "x"}]}),
            "messages[0].sender",
        ),
        (
            "submit: sender missing",
            "submit_messages",
            json!({"thread_id": thread_id, "messages": [{"content": "x"}]}),
            "messages[0].sender",
        ),
        (
            "submit: bad client_ts",
            "submit_messages",
            json!({"thread_id": thread_id, "messages": [{"sender": "s", "content": "x", "client_ts": "yesterday"}]}),
            "messages[0].client_ts",
        ),
        (
            "submit: system_prompt 8001",
            "submit_messages",
            json!({"thread_id": thread_id, "messages": msg(json!("x")), "system_prompt": "p".repeat(8001)}),
            "system_prompt",
        ),
        (
            "submit: thread_id not a uuid",
            "submit_messages",
            json!({"thread_id": "nope", "messages": msg(json!("x"))}),
            "thread_id",
        ),
        (
            "respond: content missing",
            "respond",
            json!({"thread_id": thread_id, "turn_epoch": 0}),
            "content",
        ),
        (
            "respond: content 4001",
            "respond",
            json!({"thread_id": thread_id, "turn_epoch": 0, "content": "x".repeat(4001)}),
            "content",
        ),
        (
            "respond: blank content",
            "respond",
            json!({"thread_id": thread_id, "turn_epoch": 0, "content": "   "}),
            "content",
        ),
        (
            "respond: epoch missing",
            "respond",
            json!({"thread_id": thread_id, "content": "x"}),
            "turn_epoch",
        ),
        (
            "respond: epoch a string",
            "respond",
            json!({"thread_id": thread_id, "content": "x", "turn_epoch": "1"}),
            "turn_epoch",
        ),
        (
            "respond: epoch negative",
            "respond",
            json!({"thread_id": thread_id, "content": "x", "turn_epoch": -1}),
            "turn_epoch",
        ),
        (
            "record: unknown type",
            "record_event",
            json!({"thread_id": thread_id, "type": "waving", "sender": "s"}),
            "type",
        ),
        (
            "record: sender missing",
            "record_event",
            json!({"thread_id": thread_id, "type": "typing_start"}),
            "sender",
        ),
        (
            "record: bad client_ts",
            "record_event",
            json!({"thread_id": thread_id, "type": "typing_stop", "sender": "s", "client_ts": 5}),
            "client_ts",
        ),
    ];
    for (case, action, body, field) in cases {
        let res = app
            .post_json(
                &format!("/v1/turn-taking/actions/{action}"),
                &app.key,
                &body,
            )
            .await;
        let err = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(err["error"]["field"], field, "{case}: {err}");
    }
    assert_eq!(app.stored_messages(), 0);
    assert_eq!(app.db_count("SELECT turn_epoch FROM threads"), 0);
    assert_eq!(app.db_count("SELECT COUNT(*) FROM scheduled_replies"), 0);
}

#[tokio::test]
async fn turn_taking_actions_need_a_key_and_a_visible_thread() {
    let app = spawn_app().await;
    let (thread_id, _ws) = app.open_and_listen(None).await;
    let stranger = app.new_agent("stranger");
    let body = json!({"thread_id": thread_id, "messages": [{"sender": "s", "content": "x"}]});
    let res = app
        .post_json(
            "/v1/turn-taking/actions/submit_messages",
            &stranger.key,
            &body,
        )
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    let res = app
        .post_json("/v1/turn-taking/actions/submit_messages", "nk_bad", &body)
        .await;
    assert_error(res, 401, "UNAUTHORIZED").await;
    let unknown =
        json!({"thread_id": uuid::Uuid::new_v4().to_string(), "content": "x", "turn_epoch": 0});
    let res = app
        .post_json("/v1/turn-taking/actions/respond", &app.key, &unknown)
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    assert_eq!(app.stored_messages(), 0);
}
