//! Several nodes on one PostgreSQL database (run with
//! THREADLINE_TEST_DATABASE_URL; on SQLite each test says it skips): what
//! one node commits reaches the subscribers of another, once and in order;
//! seqs stay gap-free under posts from both; grants, revocation and the
//! turn-taking scheduler work across nodes; a deleted thread's sockets
//! close on every node.

use std::collections::BTreeMap;

use serde_json::json;

use crate::helpers::process::Server;
use crate::helpers::{json_of, spawn_app_with, TestApp, Ws, WsNext, WAIT};

/// Whether to skip: these tests need a database two servers share.
fn skip() -> bool {
    crate::helpers::pg::needs_postgres()
}

/// Two nodes on one database, without quotas in the way.
async fn two_nodes() -> (TestApp, TestApp) {
    let a = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let b = a.another_node(|c| c.rate_limit_per_minute = 0).await;
    (a, b)
}

/// A socket on `thread` opened through `app` (after `after`), past its
/// connection.ready.
async fn listen(app: &TestApp, thread: &str, after: Option<i64>) -> Ws {
    let (_, url) = app.grant_for(&app.key, Some(thread)).await;
    let url = match after {
        Some(seq) => format!("{url}&after={seq}"),
        None => url,
    };
    let mut ws = Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    ws
}

/// The next `n` thread.message events' seqs and contents.
async fn messages(ws: &mut Ws, n: usize) -> Vec<(i64, String)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let e = ws.event().await;
        if e["type"] == "thread.message" {
            out.push((
                e["seq"].as_i64().expect("seq"),
                e["data"]["content"].as_str().expect("content").to_owned(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn a_subscriber_on_node_a_gets_every_message_posted_on_node_b_once_in_order() {
    if skip() {
        return;
    }
    let (a, b) = two_nodes().await;
    let thread = b.thread_between(&b.alice, &b.bob).await;
    let mut ws = listen(&a, &thread, None).await;
    for i in 1..=30 {
        b.say(&b.alice, &thread, &format!("from b {i}")).await;
    }
    let got = messages(&mut ws, 30).await;
    let expected: Vec<(i64, String)> = (1..=30).map(|i| (i, format!("from b {i}"))).collect();
    assert_eq!(got, expected, "every message once, in order");
    // Nothing more: the next event is the next message, not a repeat.
    b.say(&b.bob, &thread, "sentinel").await;
    assert_eq!(
        messages(&mut ws, 1).await,
        vec![(31, "sentinel".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_from_both_nodes_to_one_thread_get_seqs_1_to_n() {
    if skip() {
        return;
    }
    let (a, b) = two_nodes().await;
    let thread = a.thread_between(&a.alice, &a.bob).await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let node = if t % 2 == 0 { &a } else { &b };
        let (client, url, key) = (
            node.client.clone(),
            node.url("/api/acsp/thread/message"),
            node.key.clone(),
        );
        let aid = if t % 4 < 2 {
            a.alice.aid.clone()
        } else {
            a.bob.aid.clone()
        };
        let thread = thread.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                let res = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"aid": aid, "thread_id": thread, "content": format!("{t}/{i}")}))
                    .send()
                    .await
                    .expect("request");
                let (status, body) = json_of(res).await;
                assert_eq!(status, 201, "task {t} post {i}: {body}");
                seqs.push(body["message"]["seq"].as_i64().expect("seq"));
            }
            seqs
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("poster"));
    }
    acked.sort_unstable();
    let expected: Vec<i64> = (1..=200).collect();
    assert_eq!(acked, expected, "answered seqs: a duplicate or a gap");
    assert_eq!(a.stored_seqs(&thread), expected, "stored seqs");
}

#[tokio::test]
async fn a_grant_minted_on_node_a_connects_on_node_b_once() {
    if skip() {
        return;
    }
    let (a, b) = two_nodes().await;
    let thread = a.thread_between(&a.alice, &a.bob).await;
    let (_, url) = a.grant_for(&a.key, Some(&thread)).await;
    let on_b = url.replace(
        &a.base.replace("http://", "ws://"),
        &b.base.replace("http://", "ws://"),
    );
    assert_ne!(on_b, url, "the grant names node a");
    let mut ws = Ws::connect(&on_b).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    a.say(&a.alice, &thread, "hello b").await;
    assert_eq!(messages(&mut ws, 1).await, vec![(1, "hello b".to_owned())]);
    // Used up: neither node takes it again.
    for node in [&a, &b] {
        let http = url.replace(&a.base.replace("http://", "ws://"), &node.base);
        let res = node.client.get(&http).send().await.expect("request");
        assert_eq!(res.status(), 401, "a used grant on {}", node.base);
    }
}

#[tokio::test]
async fn a_key_revoked_through_node_a_is_refused_by_node_b_and_its_socket_there_closes() {
    if skip() {
        return;
    }
    let (a, b) = two_nodes().await;
    let carol = a.new_agent("carol");
    let me = |node: &TestApp| {
        let (client, url, key) = (
            node.client.clone(),
            node.url("/api/acsp/me"),
            carol.key.clone(),
        );
        async move {
            client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .expect("request")
                .status()
        }
    };
    assert_eq!(me(&b).await, 200, "the key works on b");
    let (status, opened) = json_of(
        b.post_json(
            "/api/acsp/realtime/open",
            &carol.key,
            &json!({"aid": carol.aid}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{opened}");
    let mut ws = Ws::connect(opened["realtime"]["connect_url"].as_str().unwrap()).await;
    assert_eq!(ws.event().await["type"], "connection.ready");

    // Revoked through the command line, on the shared database.
    threadline::cli::key_revoke(&a.db, &carol.key).expect("revoke");
    assert_eq!(me(&b).await, 401, "b refuses the revoked key at once");
    assert_eq!(me(&a).await, 401, "a too");
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if let WsNext::Closed(code) = ws.next().await {
                return code;
            }
        }
    })
    .await
    .expect("the socket on b closes");
    assert_eq!(closed, Some(4001), "closed as revoked");
}

#[tokio::test]
async fn a_thread_deleted_on_the_shared_database_closes_its_sockets_on_both_nodes() {
    if skip() {
        return;
    }
    let (a, b) = two_nodes().await;
    let doomed = a.thread_between(&a.alice, &a.bob).await;
    let kept = a.thread_between(&a.alice, &a.bob).await;
    let mut on_a = listen(&a, &doomed, None).await;
    let mut on_b = listen(&b, &doomed, None).await;
    let mut kept_on_b = listen(&b, &kept, None).await;

    threadline::cli::thread_delete(&a.db, &doomed).expect("delete");
    for (node, ws) in [("a", &mut on_a), ("b", &mut on_b)] {
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                if let WsNext::Closed(code) = ws.next().await {
                    return code;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the socket on {node} stays open"));
        assert_eq!(
            closed,
            Some(4004),
            "the socket on {node}: closed as deleted"
        );
    }
    // The other thread's socket on b carries on.
    a.say(&a.alice, &kept, "still here").await;
    assert_eq!(
        messages(&mut kept_on_b, 1).await[0].1,
        "still here",
        "the other thread's socket on b"
    );
}

#[tokio::test]
async fn a_due_reply_is_delivered_exactly_once_with_both_nodes_running() {
    if skip() {
        return;
    }
    let a = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.pace_scale = 0.0;
    })
    .await;
    let b = a
        .another_node(|c| {
            c.rate_limit_per_minute = 0;
            c.pace_scale = 0.0;
        })
        .await;
    let (status, opened) = json_of(a.open_thread(&a.key, json!({})).await).await;
    assert_eq!(status, 200, "{opened}");
    let thread = opened["thread"]["id"].as_str().unwrap().to_owned();
    let mut ws_a = listen(&a, &thread, None).await;
    let mut ws_b = listen(&b, &thread, None).await;
    let (status, _) = json_of(
        a.post_json(
            "/v1/turn-taking/actions/submit_messages",
            &a.key,
            &json!({"thread_id": thread, "messages": [{"sender": "dana", "content": "How did Q1 go?"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let reply = "I had a look this morning. Revenue is up four percent on the quarter. \
                 Costs are flat, better than planned. The currency conversion needs a check.";
    let (status, answer) = json_of(
        b.post_json(
            "/v1/turn-taking/actions/respond",
            &b.key,
            &json!({"thread_id": thread, "content": reply, "turn_epoch": 1}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let parts = answer["scheduled"].as_array().unwrap().len();
    assert!(parts >= 2, "{answer}");
    for ws in [&mut ws_a, &mut ws_b] {
        let mut delivered = BTreeMap::new();
        while delivered.len() < parts {
            let e = ws.event_of("turn_taking.message").await;
            let index = e["data"]["index"].as_i64().unwrap();
            assert!(
                delivered
                    .insert(index, e["seq"].as_i64().unwrap())
                    .is_none(),
                "part {index} delivered twice"
            );
        }
        let seqs: Vec<i64> = delivered.values().copied().collect();
        assert_eq!(seqs, (2..2 + parts as i64).collect::<Vec<_>>());
    }
    // Stored once each, with both schedulers running.
    assert_eq!(
        a.db_count("SELECT COUNT(*) FROM messages WHERE sender = 'agent'"),
        parts as i64
    );
    assert_eq!(
        a.db_count("SELECT COUNT(*) FROM scheduled_replies WHERE state = 'delivered'"),
        parts as i64
    );
}

/// Posts a turn-taking action through `node` and returns the answer.
async fn action(node: &TestApp, name: &str, body: serde_json::Value) -> serde_json::Value {
    let path = format!("/v1/turn-taking/actions/{name}");
    let (status, answer) = json_of(node.post_json(&path, &node.key, &body).await).await;
    assert_eq!(status, 200, "{name}: {answer}");
    answer
}

#[tokio::test]
async fn a_subscriber_on_node_a_sees_the_typing_signals_of_a_write_on_node_b_in_order() {
    if skip() {
        return;
    }
    // Slow pacing on b: its reply stays pending, so the only typing
    // signals are those of b's own writes (respond, then the interruption).
    let a = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let b = a
        .another_node(|c| {
            c.rate_limit_per_minute = 0;
            c.pace_scale = 50.0;
        })
        .await;
    let (status, opened) = json_of(a.open_thread(&a.key, json!({})).await).await;
    assert_eq!(status, 200, "{opened}");
    let thread = opened["thread"]["id"].as_str().unwrap().to_owned();
    let mut on_a = listen(&a, &thread, None).await;
    let submit = |text: &str| json!({"thread_id": thread, "messages": [{"sender": "dana", "content": text}]});
    let first = action(&b, "submit_messages", submit("How did Q1 go?")).await;
    let reply = "I had a look this morning. Revenue is up four percent on the quarter. \
                 Costs are flat, better than planned. The currency conversion needs a check.";
    let epoch = first["turn_epoch"].clone();
    let answer = action(
        &b,
        "respond",
        json!({"thread_id": thread, "content": reply, "turn_epoch": epoch}),
    )
    .await;
    assert!(
        answer["scheduled"].as_array().unwrap().len() >= 2,
        "{answer}"
    );
    // On a: the message b stored, then b's typing start, nothing between.
    let message = on_a.event().await;
    assert_eq!(message["type"], "thread.message", "{message}");
    assert_eq!(message["seq"], 1);
    let typing = on_a.event().await;
    assert_eq!(typing["type"], "turn_taking.typing", "{typing}");
    assert_eq!(
        typing["data"],
        json!({"state": "start", "turn_epoch": epoch})
    );
    assert_eq!(typing["seq"], 1, "it follows the message");
    // A new turn through b cancels the pending reply: a hears the stop too.
    action(&b, "submit_messages", submit("Wait, one more thing")).await;
    let stop = on_a.event_of("turn_taking.typing").await;
    assert_eq!(stop["data"], json!({"state": "stop", "turn_epoch": epoch}));
    assert_eq!(
        a.db_count("SELECT COUNT(*) FROM messages WHERE sender = 'agent'"),
        0,
        "nothing was delivered: every signal came from b's writes"
    );
}

#[tokio::test]
async fn typing_without_sending_raised_on_node_a_reaches_node_b_unless_the_sender_spoke_on_b() {
    if skip() {
        return;
    }
    // quiet's message (through b) must land within the window after its
    // typing_start on a: 3 s leaves room for a loaded machine.
    let a = spawn_app_with(|c| c.typing_signal_secs = 3).await;
    let b = a.another_node(|c| c.typing_signal_secs = 3).await;
    let body = json!({"integrations": {"social_signals": {}}});
    let (status, opened) = json_of(a.open_thread(&a.key, body).await).await;
    assert_eq!(status, 200, "{opened}");
    let thread = opened["thread"]["id"].as_str().unwrap().to_owned();
    let mut on_b = listen(&b, &thread, None).await;
    let typing =
        |sender: &str| json!({"thread_id": thread, "type": "typing_start", "sender": sender});
    // quiet starts typing on a and speaks through b: a's watch is satisfied.
    action(&a, "record_event", typing("quiet")).await;
    let spoke = json!({"thread_id": thread, "messages": [{"sender": "quiet", "content": "done"}]});
    action(&b, "submit_messages", spoke).await;
    // shy starts typing on a later and never sends: the first signal b's
    // subscriber sees is shy's (quiet's would have come first).
    action(&a, "record_event", typing("shy")).await;
    let signal = on_b.event_of("turn_taking.signal").await;
    assert_eq!(
        signal["data"],
        json!({"signal": "typing_without_sending", "sender": "shy"})
    );
}

#[tokio::test]
async fn parts_scheduled_by_a_node_that_stops_are_delivered_by_the_other() {
    if skip() {
        return;
    }
    // Real pacing: the first part falls due about two seconds after respond.
    let a = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let b = a.another_node(|c| c.rate_limit_per_minute = 0).await;
    let (status, opened) = json_of(a.open_thread(&a.key, json!({})).await).await;
    assert_eq!(status, 200, "{opened}");
    let thread = opened["thread"]["id"].as_str().unwrap().to_owned();
    let mut on_a = listen(&a, &thread, None).await;
    let submit = json!({"thread_id": thread, "messages": [{"sender": "dana", "content": "Q1?"}]});
    let first = action(&a, "submit_messages", submit).await;
    let reply = "Revenue is up four percent on the quarter, mostly from the new region. \
                 Costs are flat, which is better than the plan expected.";
    let body = json!({"thread_id": thread, "content": reply, "turn_epoch": first["turn_epoch"]});
    let answer = action(&b, "respond", body).await;
    let parts = answer["scheduled"].as_array().unwrap().len();
    // b stops before anything is due; a, which scheduled nothing, delivers.
    b.shutdown.shutdown().await;
    let mut delivered = Vec::new();
    while delivered.len() < parts {
        let e = on_a.event_of("turn_taking.message").await;
        delivered.push(e["data"]["index"].as_i64().unwrap());
    }
    assert_eq!(delivered, (0..parts as i64).collect::<Vec<_>>());
    assert_eq!(
        a.db_count("SELECT COUNT(*) FROM scheduled_replies WHERE state = 'delivered'"),
        parts as i64
    );
}

#[tokio::test]
async fn a_subscriber_whose_node_is_killed_resumes_on_the_other_with_after_and_misses_nothing() {
    if skip() {
        return;
    }
    // The in-process app only owns the test database; two child processes
    // serve it, so that one can be SIGKILLed.
    let app = spawn_app_with(|_| {}).await;
    let url = app.db.database_url.clone().expect("PostgreSQL");
    let dir = tempfile::tempdir().expect("temp dir");
    let unused = dir.path().join("unused.db");
    let args = [
        "--database-url",
        url.as_str(),
        "--rate-limit-per-minute",
        "0",
    ];
    let node_a = Server::start(dir.path(), &unused, &args, "warn").await;
    let node_b = Server::start(dir.path(), &unused, &args, "warn").await;
    let (key, alice) = (app.key.clone(), app.alice.aid.clone());
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let say = |i: usize| {
        let (api, key, alice, thread) = (
            node_b.api.clone(),
            key.clone(),
            alice.clone(),
            thread.clone(),
        );
        async move {
            let (status, body) = api
                .say(&key, &alice, &thread, &format!("m{i}"))
                .await
                .expect("an answer");
            assert_eq!(status, 201, "{body}");
        }
    };
    let grant = |node: &Server, after: Option<i64>| {
        let (api, key, thread) = (node.api.clone(), key.clone(), thread.clone());
        async move {
            let opened = api.open_thread(&key, Some(&thread)).await;
            let url = opened["realtime"]["connect_url"]
                .as_str()
                .unwrap()
                .to_owned();
            match after {
                Some(seq) => format!("{url}&after={seq}"),
                None => url,
            }
        }
    };
    let mut ws = Ws::connect(&grant(&node_a, None).await).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    // Posts go to b throughout; a is killed once the first ten reached it.
    for i in 1..=10 {
        say(i).await;
    }
    let mut seen = messages(&mut ws, 10).await;
    node_a.signal("KILL");
    for i in 11..=20 {
        say(i).await;
    }
    // The socket ends with its node; resume on b after the last seq seen.
    let last = seen.last().map(|(seq, _)| *seq).expect("ten seen");
    let mut ws = Ws::connect(&grant(&node_b, Some(last)).await).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    for i in 21..=25 {
        say(i).await;
    }
    seen.extend(messages(&mut ws, 15).await);
    let expected: Vec<(i64, String)> = (1..=25).map(|i| (i, format!("m{i}"))).collect();
    assert_eq!(
        seen, expected,
        "every message once, in order, across the kill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_sent_to_both_nodes_at_once_stores_one_message() {
    if skip() {
        return;
    }
    let (a, b) = two_nodes().await;
    let thread = a.thread_between(&a.alice, &a.bob).await;
    let post = |node: &TestApp, key: String| {
        let request = node
            .client
            .post(node.url("/api/acsp/thread/message"))
            .bearer_auth(&node.key)
            .header("Idempotency-Key", key)
            .json(&json!({"aid": node.alice.aid, "thread_id": thread, "content": "once"}));
        async move {
            let (status, body) = json_of(request.send().await.expect("request")).await;
            assert_eq!(status, 201, "{body}");
            body["message"]["id"].as_str().expect("id").to_owned()
        }
    };
    for round in 0..5 {
        let key = format!("retry-{round}");
        let (on_a, on_b) = tokio::join!(post(&a, key.clone()), post(&b, key));
        assert_eq!(
            on_a, on_b,
            "round {round}: both answers name the one message"
        );
    }
    assert_eq!(a.stored_seqs(&thread), (1..=5).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_and_retried_posts_in_a_batch_spoil_none_of_the_others() {
    if skip() {
        return;
    }
    // Each node's writer commits concurrent posts as one batch. Mixed into
    // them: posts to a closed thread (409, refused before writing) and
    // retries of one idempotency key (a lookup and a write between the
    // held-back posts). Every other post must stand, with gap-free seqs.
    let (a, b) = two_nodes().await;
    let open: Vec<String> = vec![
        a.thread_between(&a.alice, &a.bob).await,
        a.thread_between(&a.bob, &a.alice).await,
    ];
    let closed = a.thread_between(&a.alice, &a.bob).await;
    a.say(&a.alice, &closed, "before closing").await;
    let res = a
        .set_status(
            &a.key,
            json!({"aid": a.alice.aid, "thread_id": closed, "status": "closed"}),
        )
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let node = if t % 2 == 0 { &a } else { &b };
        let (client, url, key) = (
            node.client.clone(),
            node.url("/api/acsp/thread/message"),
            node.key.clone(),
        );
        let aid = a.alice.aid.clone();
        let (open, closed) = (open.clone(), closed.clone());
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..30 {
                let (thread, idem) = match i % 3 {
                    0 => (closed.clone(), None),
                    1 => (open[t % 2].clone(), Some(format!("same-{}", t % 2))),
                    _ => (open[t % 2].clone(), None),
                };
                let mut request = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"aid": aid, "thread_id": thread, "content": format!("{t}/{i}")}));
                if let Some(k) = &idem {
                    request = request.header("Idempotency-Key", k.as_str());
                }
                let (status, body) = json_of(request.send().await.expect("request")).await;
                answers.push((thread, idem.is_some(), status, body));
            }
            answers
        }));
    }
    let mut seqs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut retried: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for task in tasks {
        for (thread, idem, status, body) in task.await.expect("poster") {
            if thread == closed {
                assert_eq!(status, 409, "{body}");
                assert_eq!(body["error"]["code"], "THREAD_NOT_ACTIVE", "{body}");
                continue;
            }
            assert_eq!(status, 201, "{body}");
            let message = &body["message"];
            if idem {
                let id = message["id"].as_str().expect("id").to_owned();
                retried.entry(thread.clone()).or_default().push(id);
            }
            seqs.entry(thread)
                .or_default()
                .push(message["seq"].as_i64().expect("seq"));
        }
    }
    assert_eq!(
        a.stored_seqs(&closed),
        vec![1],
        "nothing stored on the closed thread"
    );
    for thread in &open {
        let ids = &retried[thread];
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "every retry of one key names the one message"
        );
        let mut distinct = seqs[thread].clone();
        distinct.sort_unstable();
        distinct.dedup();
        let expected: Vec<i64> = (1..=distinct.len() as i64).collect();
        assert_eq!(distinct, expected, "answered seqs of {thread}: a gap");
        assert_eq!(a.stored_seqs(thread), expected, "stored seqs of {thread}");
    }
}

#[test]
fn help_never_prints_the_database_password_from_the_environment() {
    // Runs on either backend: it only reads `--help`.
    for args in [&["serve", "--help"][..], &["key", "create", "--help"][..]] {
        let out = std::process::Command::new(crate::helpers::process::BIN)
            .args(args)
            .env(
                "THREADLINE_DATABASE_URL",
                "postgres://threadline:hunter2secret@db.internal/threadline",
            )
            .output()
            .expect("the binary runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {text}");
        assert!(text.contains("--database-url"), "{args:?} lists the flag");
        assert!(
            !text.contains("hunter2secret"),
            "{args:?} shows the password: {text}"
        );
    }
}

#[tokio::test]
async fn a_thread_opened_again_on_node_a_under_a_deleted_id_reaches_only_its_own_sockets_on_b() {
    if skip() {
        return;
    }
    let (a, b) = two_nodes().await;
    let (thread, url) = b.grant_for(&b.key, None).await;
    let mut old_on_b = Ws::connect(&url).await;
    assert_eq!(old_on_b.event().await["type"], "connection.ready");
    threadline::cli::thread_delete(&a.db, &thread).expect("delete");

    // Another account opens a thread under the deleted id on a, listens on
    // both nodes and writes in it, most often before b's watcher looks.
    let carol = a.new_agent("carol");
    let mut carols = Vec::new();
    for node in [&a, &b] {
        let (again, url) = node.grant_for(&carol.key, Some(&thread)).await;
        assert_eq!(again, thread);
        let mut ws = Ws::connect(&url).await;
        assert_eq!(ws.event().await["type"], "connection.ready");
        carols.push(ws);
    }
    let say = |content: &'static str| {
        let body =
            json!({"thread_id": thread, "messages": [{"sender": "carol", "content": content}]});
        let a = &a;
        let key = carol.key.clone();
        async move {
            let res = a
                .post_json("/v1/turn-taking/actions/submit_messages", &key, &body)
                .await;
            assert_eq!(res.status(), 200, "submit refused");
        }
    };
    say("secret").await;
    assert_eq!(
        old_on_b.messages_until_closed().await,
        (vec![], Some(4004)),
        "the old thread's socket on b"
    );

    // Once b's watcher has closed a later deletion's socket, it has acted
    // on the first deletion too.
    let (other, url) = b.grant_for(&b.key, None).await;
    let mut other_on_b = Ws::connect(&url).await;
    assert_eq!(other_on_b.event().await["type"], "connection.ready");
    threadline::cli::thread_delete(&a.db, &other).expect("delete");
    assert_eq!(other_on_b.messages_until_closed().await.1, Some(4004));
    say("after").await;
    for (node, ws) in ["a", "b"].into_iter().zip(&mut carols) {
        assert_eq!(
            messages(ws, 2).await,
            [(1, "secret".to_owned()), (2, "after".to_owned())],
            "the new thread's socket on {node}"
        );
    }
}
