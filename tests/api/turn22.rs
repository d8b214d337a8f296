//! A fresh-eyes sweep of the turn-taking half of the contract. Findings,
//! each test failing before its fix: keycap emoji, acknowledgements in a
//! row and long laughter, CJK replies never split, a typing signal after
//! social signals were turned off, a failing delivery retried in a tight
//! loop, two replies of one turn interleaved.
//! Probes that held up stay as pins: concurrent epochs, a raced grant,
//! open_thread's shape, every submit_messages limit, the quotas, a reply
//! cut by SIGKILL, a reply's events key by key, inbox and open races.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with, TestApp};

async fn submit_raw(app: &TestApp, body: Value) -> reqwest::Response {
    app.post_json("/v1/turn-taking/actions/submit_messages", &app.key, &body)
        .await
}

async fn record(app: &TestApp, thread_id: &str, kind: &str, sender: &str) {
    let body = json!({"thread_id": thread_id, "type": kind, "sender": sender});
    let (status, body) = json_of(
        app.post_json("/v1/turn-taking/actions/record_event", &app.key, &body)
            .await,
    )
    .await;
    assert_eq!((status.as_u16(), body), (200, json!({"tags": []})));
}

/// A keycap (`1️⃣`, `#️⃣`, `*️⃣`) is an emoji like any other: a batch of
/// emoji only, keycaps among them, stays silent. The keycap's base is an
/// ASCII digit, `#` or `*`: the digit was read as a word ("1"), so the
/// batch spoke.
#[tokio::test]
async fn emoji_only_batches_stay_silent_keycaps_included() {
    let app = spawn_app().await;
    let (thread_id, _) = app.grant_for(&app.key, None).await;
    let emoji_only = [
        "1️⃣",
        "#️⃣",
        "*️⃣",
        "1\u{20e3}",
        " 🔟 ",
        "👍🏽",
        "🇯🇵",
        "🏴\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}",
        "🏳️‍🌈",
        "👩‍💻",
        "❤️",
        "\t🙂 🙂\n",
    ];
    for content in emoji_only {
        let answer = app
            .submit(&thread_id, json!([{"sender": "dana", "content": content}]))
            .await;
        assert_eq!(answer["decision"], "stay_silent", "{content:?}: {answer}");
    }
    // A digit, `#` or `*` alone is text, and so is one a keycap does not
    // close.
    for content in ["1", "#", "*", "1\u{fe0f}", "42 👍", "1 1️⃣"] {
        let answer = app
            .submit(&thread_id, json!([{"sender": "dana", "content": content}]))
            .await;
        assert_eq!(answer["decision"], "speak", "{content:?}: {answer}");
    }
}

/// Sentences that end with a full-width stop (`。`, `！`, `？`), which
/// CJK text follows with no space, are sentence boundaries: a long reply
/// in Japanese or Chinese is split like one in English, with no space put
/// into the seams (the text had none).
#[tokio::test]
async fn a_reply_in_cjk_sentences_is_split_at_its_full_stops() {
    let app = spawn_app_with(|c| c.pace_scale = 0.0).await;
    let (thread_id, mut ws) = app.open_and_listen(None).await;
    let epoch = app
        .submit(&thread_id, json!([{"sender": "dana", "content": "元気？"}]))
        .await["turn_epoch"]
        .as_i64()
        .unwrap();
    ws.event_of("thread.message").await;
    let sentence =
        "今日は朝から雨が降っていて、駅まで歩くのが少し大変でしたが、会議には間に合いました。";
    let reply = format!(
        "{sentence}{sentence}「本当に？」と聞かれました！{sentence}{sentence}{sentence}{sentence}"
    );
    let answer = app.respond(&thread_id, &reply, epoch).await;
    let parts: Vec<String> = answer["scheduled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["content"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        (2..=5).contains(&parts.len()),
        "{} parts: {parts:?}",
        parts.len()
    );
    // Nothing lost, reordered or added: the seams had no space.
    assert_eq!(parts.concat(), reply);
    for part in &parts {
        assert!(
            part.ends_with('。') || part.ends_with('！'),
            "a part ends mid-sentence: {part:?}"
        );
    }
    // Delivered as split, each part stored once.
    let mut delivered = Vec::new();
    while delivered.len() < parts.len() {
        let e = ws.event_of("turn_taking.message").await;
        delivered.push(e["data"]["content"].as_str().unwrap().to_owned());
    }
    assert_eq!(delivered, parts);
}

/// A typing watch signals only if social signals are still on when its
/// time comes: a re-open that turned them off (`integrations` replaced)
/// silences the watches started before it. It did not: the watch only
/// looked at the thread as it was at the `typing_start`.
#[tokio::test]
async fn no_typing_signal_once_social_signals_are_turned_off() {
    let app = spawn_app_with(|c| c.typing_signal_secs = 1).await;
    let (thread_id, mut ws) = app
        .open_and_listen(Some(json!({"social_signals": {}})))
        .await;
    let reopen = |integrations: Value| {
        let body = json!({"thread_id": thread_id, "integrations": integrations});
        let app = &app;
        async move {
            let res = app.open_thread(&app.key, body).await;
            assert_eq!(res.status(), 200);
        }
    };
    let started = tokio::time::Instant::now();
    record(&app, &thread_id, "typing_start", "dana").await;
    reopen(json!({})).await;
    // dana's watch comes due (after 1 s) while social signals are off.
    // Waiting out its window is what this test is about; the 2 s more
    // leave room for a loaded machine to finish what the watch does then.
    while started.elapsed() < Duration::from_millis(3_000) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // On again: erin's watch starts after dana's ended, and its signal is
    // the first the socket hears.
    reopen(json!({"social_signals": {"channel_id": "c1"}})).await;
    record(&app, &thread_id, "typing_start", "erin").await;
    let signal = ws.event_of("turn_taking.signal").await;
    assert_eq!(
        signal["data"],
        json!({"signal": "typing_without_sending", "sender": "erin"})
    );
}

/// Concurrent submit_messages on one thread each start a turn of their
/// own: epochs 1..=n, none twice, none skipped; every message stored.
#[tokio::test]
async fn concurrent_submits_get_consecutive_epochs() {
    let app = spawn_app().await;
    let (thread_id, _) = app.grant_for(&app.key, None).await;
    let n = 12;
    let calls = (0..n).map(|i| {
        let body = json!({"thread_id": thread_id,
            "messages": [{"sender": format!("s{i}"), "content": format!("question {i}")}]});
        let app = &app;
        async move { json_of(submit_raw(app, body).await).await }
    });
    let mut epochs: Vec<i64> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, 200, "{body}");
            body["turn_epoch"].as_i64().unwrap()
        })
        .collect();
    epochs.sort_unstable();
    assert_eq!(epochs, (1..=n).collect::<Vec<i64>>());
    assert_eq!(app.stored_seqs(&thread_id), (1..=n).collect::<Vec<i64>>());
}

/// Two handshakes with one grant at once: exactly one socket opens; the
/// other is 401 in the envelope.
#[tokio::test]
async fn one_grant_opens_one_socket_when_two_race_for_it() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let (_, url) = app.grant_for(&app.key, None).await;
        let (a, b) = tokio::join!(
            tokio_tungstenite::connect_async(url.clone()),
            tokio_tungstenite::connect_async(url.clone())
        );
        let opened = [a.is_ok(), b.is_ok()];
        assert_eq!(opened.iter().filter(|o| **o).count(), 1, "{opened:?}");
        let refused = if a.is_ok() { b } else { a };
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status(), 401)
            }
            other => panic!("not refused with a status: {other:?}"),
        }
    }
}

/// open_thread answers the seed's shape exactly, times in the contract's
/// form, and a connect URL under the public URL's path (https → wss, a
/// trailing slash not doubled).
#[tokio::test]
async fn open_thread_answers_the_seeds_shape_under_the_public_url() {
    let app = spawn_app_with(|c| c.public_url = Some("https://chat.example.com/tl/".into())).await;
    let before = chrono::Utc::now();
    let (status, body) = json_of(app.open_thread(&app.key, json!({})).await).await;
    assert_eq!(status, 200, "{body}");
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&body), ["channel", "realtime", "thread"]);
    assert_eq!(
        keys(&body["thread"]),
        ["created_at", "id", "updated_at", "user_id"]
    );
    assert_eq!(keys(&body["realtime"]), ["connect_url", "expires_at"]);
    let id = body["thread"]["id"].as_str().unwrap();
    assert_eq!(body["channel"], format!("turn-taking-thread/{id}"));
    assert_eq!(body["thread"]["user_id"], app.user_id);
    let url = body["realtime"]["connect_url"].as_str().unwrap();
    let grant = url
        .strip_prefix("wss://chat.example.com/tl/v1/ws?c=")
        .unwrap_or_else(|| panic!("{url}"));
    assert!(grant.len() >= 22, "{grant}");
    for field in [
        &body["thread"]["created_at"],
        &body["thread"]["updated_at"],
        &body["realtime"]["expires_at"],
    ] {
        let t = field.as_str().unwrap();
        assert_eq!(t.len(), "2026-06-16T12:00:00.123Z".len(), "{t}");
        assert!(t.ends_with('Z'), "{t}");
    }
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["realtime"]["expires_at"].as_str().unwrap())
            .unwrap();
    let ttl = expires.signed_duration_since(before).num_seconds();
    assert!((29..=31).contains(&ttl), "{ttl}");
}

/// The limits of every field of submit_messages, at and past each edge;
/// a refused batch stores nothing, even when only its last item is bad.
#[tokio::test]
async fn submit_messages_fields_at_their_limits() {
    let app = spawn_app().await;
    let (thread_id, _) = app.grant_for(&app.key, None).await;
    let item = |sender: Value, content: Value, ts: Value| json!({"sender": sender, "content": content, "client_ts": ts});
    let ok = |m: Value| json!({"thread_id": thread_id, "messages": [m]});
    let accepted = [
        ok(item(json!("s".repeat(255)), json!("c"), Value::Null)),
        ok(item(
            json!("é".repeat(255)),
            json!("👍".repeat(4000)),
            Value::Null,
        )),
        ok(item(
            json!("d"),
            json!("x".repeat(4000)),
            json!("2026-06-16T12:00:00+05:30"),
        )),
        ok(item(
            json!("d"),
            json!("x"),
            json!("2026-06-16T12:00:00.123456789Z"),
        )),
        ok(item(json!("d"), json!("x"), json!("2026-06-16t12:00:00z"))),
        ok(item(json!("d"), json!("x"), json!("2016-12-31T23:59:60Z"))),
        ok(item(
            json!("d"),
            json!("x"),
            json!("2026-06-16 12:00:00-00:00"),
        )),
        json!({"thread_id": thread_id, "system_prompt": "p".repeat(8000),
               "messages": vec![item(json!("d"), json!("x"), Value::Null); 20]}),
    ];
    let mut stored = 0;
    for body in accepted {
        let (status, answer) = json_of(submit_raw(&app, body.clone()).await).await;
        assert_eq!(status, 200, "{answer}");
        stored += body["messages"].as_array().unwrap().len() as i64;
    }
    assert_eq!(app.stored_messages(), stored);
    let good = item(json!("d"), json!("fine"), Value::Null);
    let batch = |bad: Value| json!({"thread_id": thread_id, "messages": [good, good, bad]});
    let refused = [
        (
            batch(item(json!("s".repeat(256)), json!("c"), Value::Null)),
            "messages[2].sender",
        ),
        (
            batch(item(json!(""), json!("c"), Value::Null)),
            "messages[2].sender",
        ),
        (
            batch(item(json!(5), json!("c"), Value::Null)),
            "messages[2].sender",
        ),
        (
            batch(item(json!("d"), json!("x".repeat(4001)), Value::Null)),
            "messages[2].content",
        ),
        (
            batch(item(json!("d"), json!(""), Value::Null)),
            "messages[2].content",
        ),
        (
            batch(item(json!("d"), json!(["x"]), Value::Null)),
            "messages[2].content",
        ),
        (
            batch(item(json!("d"), json!("x"), json!("2026-06-16T12:00:00"))),
            "messages[2].client_ts",
        ),
        (
            batch(item(json!("d"), json!("x"), json!("2026-02-30T12:00:00Z"))),
            "messages[2].client_ts",
        ),
        (
            batch(item(
                json!("d"),
                json!("x"),
                json!("2026-06-16T12:00:00+24:00"),
            )),
            "messages[2].client_ts",
        ),
        (
            batch(item(json!("d"), json!("x"), json!("2026-06-16"))),
            "messages[2].client_ts",
        ),
        (
            batch(item(json!("d"), json!("x"), json!(1750000000))),
            "messages[2].client_ts",
        ),
        (batch(json!("just text")), "messages[2]"),
        (json!({"thread_id": thread_id, "messages": []}), "messages"),
        (
            json!({"thread_id": thread_id, "messages": vec![good.clone(); 21]}),
            "messages",
        ),
        (
            json!({"thread_id": thread_id, "messages": good}),
            "messages",
        ),
        (
            json!({"thread_id": thread_id, "messages": [good], "system_prompt": "p".repeat(8001)}),
            "system_prompt",
        ),
        (
            json!({"thread_id": thread_id, "messages": [good], "system_prompt": 1}),
            "system_prompt",
        ),
    ];
    for (body, field) in refused {
        let error = assert_error(
            submit_raw(&app, body.clone()).await,
            422,
            "VALIDATION_ERROR",
        )
        .await;
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    // The most a batch may hold, 20 messages of 4,000 characters, is
    // over the contract's 64 KiB for a body: 413, as the README says.
    let full = json!({"thread_id": thread_id,
        "messages": vec![item(json!("d"), json!("x".repeat(4000)), Value::Null); 20]});
    assert_error(submit_raw(&app, full).await, 413, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(app.stored_messages(), stored);
    // Nor did a refusal start a turn.
    let answer = app.submit(&thread_id, json!([good])).await;
    assert_eq!(answer["turn_epoch"], 9);
}

/// The three actions have a quota each, per key, answered 429 with
/// `Retry-After` and `retry_after` when spent.
#[tokio::test]
async fn each_action_has_its_own_quota() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 2).await;
    let (thread_id, _) = app.grant_for(&app.key, None).await;
    let routes = [
        (
            "submit_messages",
            json!({"thread_id": thread_id, "messages": [{"sender": "d", "content": "hi"}]}),
        ),
        (
            "respond",
            json!({"thread_id": thread_id, "content": "hello there", "turn_epoch": 0}),
        ),
        (
            "record_event",
            json!({"thread_id": thread_id, "type": "typing_stop", "sender": "d"}),
        ),
    ];
    for (route, body) in &routes {
        let path = format!("/v1/turn-taking/actions/{route}");
        for left in [1, 0] {
            let res = app.post_json(&path, &app.key, body).await;
            assert_eq!(res.status(), 200, "{route}");
            assert_eq!(res.headers()["x-ratelimit-limit"], "2", "{route}");
            assert_eq!(
                res.headers()["x-ratelimit-remaining"],
                left.to_string().as_str(),
                "{route}"
            );
            assert!(res.headers().contains_key("x-ratelimit-reset"), "{route}");
        }
        let res = app.post_json(&path, &app.key, body).await;
        assert_eq!(res.headers()["x-ratelimit-remaining"], "0", "{route}");
        let retry: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let error = assert_error(res, 429, "RATE_LIMITED").await;
        assert_eq!(error["error"]["retry_after"], retry, "{route}: {error}");
    }
    // The refused submit stored nothing: two batches of one message, and
    // two replies delivered or pending.
    assert_eq!(
        app.db_count("SELECT COUNT(*) FROM messages WHERE msg_type = 'text'"),
        2
    );
}

/// A server killed (SIGKILL) in the middle of a paced reply: restarted
/// after every part's `deliver_at` has passed, it delivers the parts still
/// due, late, and none of them twice; the part delivered before the kill
/// is not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_cut_by_sigkill_is_delivered_after_the_restart_once() {
    use crate::helpers::db::TestDb;
    use crate::helpers::process::{provision_on, Server};

    let db = TestDb::new();
    let account = provision_on(&db);
    let args = ["--rate-limit-per-minute", "0", "--pace-scale", "0.5"];
    let mut server = Server::start_on(&db, &args, "warn").await;
    let opened = server.api.open_thread(&account.key, None).await;
    let thread = opened["thread"]["id"].as_str().unwrap().to_owned();
    let post = |api: crate::helpers::process::Api, path: &'static str, body: Value| {
        let key = account.key.clone();
        async move { json_of(api.post(path, &key, &body).await.unwrap()).await }
    };
    let (_, submitted) = post(
        server.api.clone(),
        "/v1/turn-taking/actions/submit_messages",
        json!({"thread_id": thread, "messages": [{"sender": "dana", "content": "how did Q1 go?"}]}),
    )
    .await;
    let reply = "Thanks for asking, I had a look at the figures this morning. \
        Revenue is up four percent on the quarter, mostly from the new region. \
        Costs are flat, which is better than the plan expected. \
        I would still double-check the currency conversion in the March numbers.";
    let (status, answer) = post(
        server.api.clone(),
        "/v1/turn-taking/actions/respond",
        json!({"thread_id": thread, "content": reply, "turn_epoch": submitted["turn_epoch"]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let scheduled: Vec<Value> = answer["scheduled"].as_array().unwrap().clone();
    assert!(scheduled.len() >= 3, "{answer}");
    let agent_parts = || {
        db.count(&format!(
            "SELECT COUNT(*) FROM messages m JOIN threads t ON t.id = m.thread_id
             WHERE t.uuid = '{thread}' AND m.sender = 'agent'"
        ))
    };
    // Kill as soon as the first part is stored, before the others are due.
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    while agent_parts() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no part delivered");
        tokio::time::sleep(crate::helpers::POLL).await;
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reap");
    let before_restart = agent_parts();
    assert!(
        before_restart < scheduled.len() as i64,
        "every part went out before the kill: the test proves nothing"
    );
    drop(server);
    // Restart once the last part is overdue: the rest go out late.
    let last = chrono::DateTime::parse_from_rfc3339(
        scheduled.last().unwrap()["deliver_at"].as_str().unwrap(),
    )
    .unwrap();
    while chrono::Utc::now() <= last + chrono::Duration::milliseconds(200) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = Server::start_on(&db, &args, "warn").await;
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    while agent_parts() < scheduled.len() as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} parts after the restart",
            agent_parts(),
            scheduled.len()
        );
        tokio::time::sleep(crate::helpers::POLL).await;
    }
    // Nothing is pending, so nothing more can come: each part once, in order.
    assert_eq!(
        db.count("SELECT COUNT(*) FROM scheduled_replies WHERE state <> 'delivered'"),
        0
    );
    let (status, history) = json_of(
        server
            .api
            .get(
                &format!("/api/acsp/thread/{thread}?limit=200"),
                &account.key,
            )
            .await,
    )
    .await;
    assert_eq!(status, 200, "{history}");
    let delivered: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["sender"] == "agent")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = scheduled
        .iter()
        .map(|p| p["content"].as_str().unwrap())
        .collect();
    assert_eq!(delivered, want);
}

/// A delivery that keeps failing (here triggers refuse the agent's
/// messages and any change to the scheduled parts, as a full disk would
/// refuse every write) is retried with a growing pause, not in a loop as
/// fast as the writer goes: that wrote an error line to the log per
/// attempt, thousands a second, and kept the writer busy for everyone.
/// Once the fault is gone the part goes out. A fault of the store counts
/// against no part (sched23: a part the database refuses while it records
/// the refusal is the part's fault, and is given up after 5 attempts), so
/// no attempt was spent on any part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_keeps_failing_is_retried_with_a_pause_not_in_a_loop() {
    use crate::helpers::process::{provision, Server};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threadline.db");
    let account = provision(&path);
    let args = ["--rate-limit-per-minute", "0", "--pace-scale", "0"];
    let server = Server::start(dir.path(), &path, &args, "error").await;
    let opened = server.api.open_thread(&account.key, None).await;
    let thread = opened["thread"]["id"].as_str().unwrap().to_owned();
    let post = |path: &'static str, body: Value| {
        let api = server.api.clone();
        let key = account.key.clone();
        async move { json_of(api.post(path, &key, &body).await.unwrap()).await }
    };
    let (_, submitted) = post(
        "/v1/turn-taking/actions/submit_messages",
        json!({"thread_id": thread, "messages": [{"sender": "dana", "content": "hi?"}]}),
    )
    .await;
    let db = rusqlite::Connection::open(&path).unwrap();
    db.busy_timeout(crate::helpers::WAIT).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_agent BEFORE INSERT ON messages WHEN NEW.sender = 'agent'
         BEGIN SELECT RAISE(ABORT, 'no room for the agent'); END;
         CREATE TRIGGER refuse_count BEFORE UPDATE ON scheduled_replies
         BEGIN SELECT RAISE(ABORT, 'no room to count the failure'); END;",
    )
    .unwrap();
    let (status, answer) = post(
        "/v1/turn-taking/actions/respond",
        json!({"thread_id": thread, "content": "Hello there.", "turn_epoch": submitted["turn_epoch"]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let failures = || {
        server
            .stderr()
            .matches("delivering scheduled replies failed")
            .count()
    };
    // The first attempt fails at once; then count the attempts of 1.5 s.
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    while failures() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            server.stderr()
        );
        tokio::time::sleep(crate::helpers::POLL).await;
    }
    // New replies meanwhile wake the scheduler: it tries again sooner,
    // but not more than once a second.
    let first = tokio::time::Instant::now();
    let mut parts = 1;
    while first.elapsed() < Duration::from_millis(1_500) {
        let (status, answer) = post(
            "/v1/turn-taking/actions/respond",
            json!({"thread_id": thread, "content": "And more.", "turn_epoch": submitted["turn_epoch"]}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        parts += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let attempts = failures();
    assert!(attempts <= 3, "{attempts} failed attempts in 1.5 s");
    // The fault cleared, the parts are delivered (within the longest pause).
    db.execute_batch("DROP TRIGGER refuse_agent; DROP TRIGGER refuse_count")
        .unwrap();
    let delivered = || {
        db.query_row(
            "SELECT COUNT(*) FROM messages WHERE sender = 'agent'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while delivered() < parts {
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(crate::helpers::POLL).await;
    }
    assert_eq!(delivered(), parts);
    let spent: i64 = db
        .query_row("SELECT max(failures) FROM scheduled_replies", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(spent, 0, "a fault of the store spent a part's attempts");
}

/// Two replies in one turn queue one behind the other: with
/// `--pace-scale 0` every part is due at the same instant, and the parts
/// went out ordered by their index, the two replies interleaved (A0, B0,
/// A1, B1, ...). Each reply's parts must go out together, in order.
#[tokio::test]
async fn two_replies_in_one_turn_are_delivered_one_after_the_other() {
    let app = spawn_app_with(|c| c.pace_scale = 0.0).await;
    let (thread_id, mut ws) = app.open_and_listen(None).await;
    let first = "Alpha one is the first sentence of the first reply here. \
        Alpha two is the second sentence of the first reply here. \
        Alpha three is the third sentence of the first reply here.";
    let second = "Beta one is the first sentence of the second reply here. \
        Beta two is the second sentence of the second reply here. \
        Beta three is the third sentence of the second reply here.";
    for round in 0..5 {
        let epoch = app
            .submit(&thread_id, json!([{"sender": "dana", "content": "go on"}]))
            .await["turn_epoch"]
            .as_i64()
            .unwrap();
        let (a, b) = tokio::join!(
            app.respond(&thread_id, first, epoch),
            app.respond(&thread_id, second, epoch)
        );
        let total =
            a["scheduled"].as_array().unwrap().len() + b["scheduled"].as_array().unwrap().len();
        let mut got = Vec::new();
        while got.len() < total {
            let e = ws.event_of("turn_taking.message").await;
            got.push(e["data"]["content"].as_str().unwrap().to_owned());
        }
        let a_first: Vec<String> = [&a, &b]
            .iter()
            .flat_map(|r| r["scheduled"].as_array().unwrap().iter())
            .map(|p| p["content"].as_str().unwrap().to_owned())
            .collect();
        let b_first: Vec<String> = [&b, &a]
            .iter()
            .flat_map(|r| r["scheduled"].as_array().unwrap().iter())
            .map(|p| p["content"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            got == a_first || got == b_first,
            "round {round}: the replies interleaved: {got:#?}"
        );
        ws.event_of("turn_taking.typing").await;
    }
}

/// The answers and events of a reply, key by key as the contract gives
/// them: `respond`'s parts, `turn_taking.typing`, `turn_taking.message`
/// (with the stored message's `seq`), every event on the thread's channel
/// with an id of its own, deliver_at never decreasing.
#[tokio::test]
async fn a_replys_answer_and_events_have_the_contracts_fields() {
    let app = spawn_app_with(|c| c.pace_scale = 0.0).await;
    let (thread_id, mut ws) = app.open_and_listen(None).await;
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let submitted = app
        .submit(&thread_id, json!([{"sender": "dana", "content": "and?"}]))
        .await;
    assert_eq!(keys(&submitted), ["decision", "tags", "turn_epoch"]);
    let inbound = ws.event_of("thread.message").await;
    assert_eq!(inbound["data"]["sender_name"], "dana");
    assert_eq!(inbound["data"]["msg_type"], "text");
    let reply = "The first part of the answer is long enough to stand alone. \
        The second part of the answer is long enough to stand alone too.";
    let answer = app.respond(&thread_id, reply, 1).await;
    assert_eq!(keys(&answer), ["scheduled", "superseded"]);
    let parts = answer["scheduled"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{answer}");
    let mut last_at = String::new();
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(keys(p), ["content", "deliver_at", "id", "index"]);
        assert_eq!(p["index"], i);
        let at = p["deliver_at"].as_str().unwrap().to_owned();
        assert!(at.ends_with('Z') && at.len() == 24, "{at}");
        assert!(at >= last_at, "{at} before {last_at}");
        last_at = at;
    }
    let channel = format!("turn-taking-thread/{thread_id}");
    let mut ids = std::collections::HashSet::new();
    let mut seen = Vec::new();
    loop {
        let e = ws.event().await;
        assert_eq!(keys(&e), ["channel", "data", "id", "seq", "type"], "{e}");
        assert_eq!(e["channel"], channel.as_str());
        assert!(ids.insert(e["id"].as_str().unwrap().to_owned()), "{e}");
        let kind = e["type"].as_str().unwrap().to_owned();
        match kind.as_str() {
            "turn_taking.typing" => {
                assert_eq!(keys(&e["data"]), ["state", "turn_epoch"], "{e}");
                seen.push(format!("typing {}", e["data"]["state"].as_str().unwrap()));
                if e["data"]["state"] == "stop" {
                    break;
                }
            }
            "turn_taking.message" => {
                assert_eq!(
                    keys(&e["data"]),
                    [
                        "content",
                        "count",
                        "deliver_at",
                        "id",
                        "index",
                        "seq",
                        "turn_epoch"
                    ],
                    "{e}"
                );
                let i = e["data"]["index"].as_u64().unwrap() as usize;
                assert_eq!(e["data"]["id"], parts[i]["id"]);
                assert_eq!(e["data"]["deliver_at"], parts[i]["deliver_at"]);
                assert_eq!(e["data"]["count"], 2);
                assert_eq!(e["seq"], e["data"]["seq"]);
                seen.push(format!("message {i}"));
            }
            other => panic!("unexpected {other}: {e}"),
        }
    }
    assert_eq!(
        seen,
        [
            "typing start",
            "message 0",
            "typing start",
            "message 1",
            "typing stop"
        ]
    );
}

/// An inbox for an AID no agent has is refused like one of another
/// account's agents (403 on `aid`): which AIDs exist is not told.
#[tokio::test]
async fn an_inbox_for_an_unknown_aid_is_403_like_a_foreign_one() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    for aid in ["0".repeat(50), carol.aid.clone()] {
        let res = app
            .post_json("/api/acsp/realtime/open", &app.key, &json!({"aid": aid}))
            .await;
        let error = assert_error(res, 403, "FORBIDDEN").await;
        assert_eq!(error["error"]["field"], "aid", "{error}");
    }
}

/// Several open_thread calls at once with one new id (a client retrying
/// its create): one thread is made, every call gets it and a grant of
/// its own.
#[tokio::test]
async fn concurrent_opens_of_one_new_id_make_one_thread() {
    let app = spawn_app().await;
    let id = "0190f5a4-0000-7000-8000-00000000c0de";
    let calls = (0..6).map(|_| {
        let app = &app;
        async move { json_of(app.open_thread(&app.key, json!({"thread_id": id})).await).await }
    });
    let answers = futures_util::future::join_all(calls).await;
    let mut grants = std::collections::HashSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["thread"]["id"], id);
        assert!(grants.insert(body["realtime"]["connect_url"].as_str().unwrap().to_owned()));
    }
    assert_eq!(app.stored_threads(), 1);
    let created = answers
        .iter()
        .map(|(_, b)| b["thread"]["created_at"].clone())
        .collect::<std::collections::HashSet<_>>();
    assert_eq!(created.len(), 1, "{created:?}");
}

/// A message of several acknowledgements ("ok, thanks"), or of laughter
/// longer than "haha" ("hahaha", "lolol"), is as bare an acknowledgement
/// as "ok": each spoke, as only a single entry of the list was silent.
#[tokio::test]
async fn acknowledgements_in_a_row_and_long_laughter_stay_silent() {
    let app = spawn_app().await;
    let (thread_id, _) = app.grant_for(&app.key, None).await;
    let answer = app
        .submit(
            &thread_id,
            json!([
                {"sender": "dana", "content": "ok, thanks!"},
                {"sender": "dana", "content": "hahaha"},
                {"sender": "erin", "content": "lolol 😂"},
                {"sender": "erin", "content": "Thank you. Sounds good."}
            ]),
        )
        .await;
    assert_eq!(answer["decision"], "stay_silent", "{answer}");
    // A word off the list among them still speaks.
    let answer = app
        .submit(
            &thread_id,
            json!([{"sender": "dana", "content": "ok thanks, but why?"}]),
        )
        .await;
    assert_eq!(answer["decision"], "speak", "{answer}");
}
