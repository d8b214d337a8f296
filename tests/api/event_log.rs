//! The durable event log: every change gets one position, in commit order,
//! and a consumer reading from storage after the server has restarted sees
//! each change once, with the same id, type, seq and data as the live frame.
//! The restarts run on the harness's backend (SQLite, or PostgreSQL with
//! THREADLINE_TEST_DATABASE_URL).

use std::collections::HashMap;

use serde_json::{json, Value};
use threadline::startup::{Application, ShutdownHandle};
use threadline::store::db::events::{cursor, events_after, save_cursor};

use crate::helpers::db::TestDb;
use crate::helpers::{json_of, Ws};

/// A server running on a test's database.
struct Running {
    base: String,
    stop: ShutdownHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(db: &TestDb, pace_scale: f64) -> Running {
    let mut config = db.config();
    config.pace_scale = pace_scale;
    config.rate_limit_per_minute = 0;
    config.status_rate_limit_per_minute = 0;
    let app = Application::build(config).await.expect("server builds");
    let base = app.base_url().to_owned();
    let stop = app.shutdown_handle();
    let task = tokio::spawn(app.run_until_stopped());
    Running { base, stop, task }
}

impl Running {
    async fn post(&self, key: &str, path: &str, body: Value) -> Value {
        let res = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(res).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn stop(self) {
        self.stop.shutdown().await;
        self.task.await.unwrap().unwrap();
    }
}

/// Reads every frame until `stop` says the last one has come.
async fn frames_until(ws: &mut Ws, seen: &mut Vec<Value>, stop: impl Fn(&Value) -> bool) {
    loop {
        let frame = ws.event().await;
        let done = stop(&frame);
        seen.push(frame);
        if done {
            return;
        }
    }
}

/// A reply that splits into two parts.
const REPLY: &str = "I looked at the numbers you sent over this morning. \
                     They look right to me, with one exception that I will explain.";

/// Reads the whole log as a consumer that keeps its cursor in the database
/// and "restarts" (a fresh connection) after every page of three.
fn consume(db: &TestDb, consumer: &str) -> Vec<threadline::events::Event> {
    let mut all = Vec::new();
    loop {
        let page = db.with_conn(|conn| {
            let from = cursor(conn, consumer).unwrap().unwrap_or(0);
            let page = events_after(conn, from, 3).unwrap();
            if let Some(last) = page.last() {
                save_cursor(conn, consumer, last.position.unwrap()).unwrap();
            }
            page
        });
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

#[tokio::test]
async fn a_consumer_reads_every_change_once_in_order_after_a_restart() {
    let db = TestDb::new();
    let seed = db.seed();
    let key = seed.login_key.as_str();
    let mut live = Vec::new();

    // Server 1, slow pacing: nothing scheduled gets delivered here.
    let app = start(&db, 100.0).await;
    let inbox = app
        .post(key, "/api/acsp/realtime/open", json!({"aid": seed.bob}))
        .await;
    let mut bob = Ws::connect(inbox["realtime"]["connect_url"].as_str().unwrap()).await;
    let created = app
        .post(
            key,
            "/api/acsp/thread/create",
            json!({"aid": seed.alice, "target_aid": seed.bob, "subject": "log", "first_message": "one"}),
        )
        .await;
    let t1 = created["thread"]["id"].as_str().unwrap().to_owned();
    for (from, text) in [(&seed.alice, "two"), (&seed.bob, "three")] {
        let body = json!({"aid": from, "thread_id": t1, "content": text});
        app.post(key, "/api/acsp/thread/message", body).await;
    }
    for status in ["closed", "active"] {
        let body = json!({"aid": seed.alice, "thread_id": t1, "status": status});
        app.post(key, "/api/acsp/thread/status", body).await;
    }
    frames_until(&mut bob, &mut live, |f| {
        f["type"] == "thread.status" && f["data"]["status"] == "active"
    })
    .await;

    let opened = app
        .post(key, "/v1/turn-taking/actions/open_thread", json!({}))
        .await;
    let t2 = opened["thread"]["id"].as_str().unwrap().to_owned();
    let mut turn = Ws::connect(opened["realtime"]["connect_url"].as_str().unwrap()).await;
    let submit =
        |text: &str| json!({"thread_id": t2, "messages": [{"sender": "dana", "content": text}]});
    let first = app
        .post(
            key,
            "/v1/turn-taking/actions/submit_messages",
            submit("hello?"),
        )
        .await;
    let answer = app
        .post(
            key,
            "/v1/turn-taking/actions/respond",
            json!({"thread_id": t2, "content": REPLY, "turn_epoch": first["turn_epoch"]}),
        )
        .await;
    assert_eq!(answer["scheduled"].as_array().unwrap().len(), 2, "{answer}");
    // A new turn cancels both pending parts.
    let second = app
        .post(
            key,
            "/v1/turn-taking/actions/submit_messages",
            submit("wait"),
        )
        .await;
    frames_until(&mut turn, &mut live, |f| f["seq"] == 2).await;
    app.stop().await;

    // Server 2 on the same file, no pacing: a reply is delivered at once.
    let app = start(&db, 0.0).await;
    let opened = app
        .post(
            key,
            "/v1/turn-taking/actions/open_thread",
            json!({"thread_id": t2}),
        )
        .await;
    let mut turn = Ws::connect(opened["realtime"]["connect_url"].as_str().unwrap()).await;
    app.post(
        key,
        "/v1/turn-taking/actions/respond",
        json!({"thread_id": t2, "content": "Sure.", "turn_epoch": second["turn_epoch"]}),
    )
    .await;
    frames_until(&mut turn, &mut live, |f| {
        f["type"] == "turn_taking.typing" && f["data"]["state"] == "stop"
    })
    .await;
    app.stop().await;

    // The consumer reads from position 0 after the restart, page by page.
    let events = consume(&db, "test-consumer");
    let positions: Vec<i64> = events.iter().map(|e| e.position.unwrap()).collect();
    assert_eq!(
        positions,
        (1..=positions.len() as i64).collect::<Vec<_>>(),
        "each position once, in order"
    );
    let got: Vec<(&str, &str, i64)> = events
        .iter()
        .map(|e| {
            let thread = if e.thread_id == t1 { "T1" } else { "T2" };
            (e.kind.as_str(), thread, e.seq)
        })
        .collect();
    let want = [
        ("thread.created", "T1", 0),
        ("thread.message", "T1", 1),
        ("thread.message", "T1", 2),
        ("thread.message", "T1", 3),
        ("thread.status", "T1", 3),
        ("thread.status", "T1", 3),
        ("thread.created", "T2", 0),
        ("thread.message", "T2", 1),
        ("turn_taking.reply_scheduled", "T2", 1),
        ("turn_taking.reply_scheduled", "T2", 1),
        ("turn_taking.reply_cancelled", "T2", 1),
        ("turn_taking.reply_cancelled", "T2", 1),
        ("thread.message", "T2", 2),
        ("turn_taking.reply_scheduled", "T2", 2),
        ("turn_taking.message", "T2", 3),
    ];
    assert_eq!(got, want);
    // The cancelled parts are the scheduled ones; the delivered part is
    // the later reply's.
    let data: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(e.data.get()).unwrap())
        .collect();
    assert_eq!(data[8]["id"], answer["scheduled"][0]["id"]);
    assert_eq!(data[8]["content"], answer["scheduled"][0]["content"]);
    assert_eq!(data[10]["id"], data[8]["id"]);
    assert_eq!(data[11]["id"], data[9]["id"]);
    assert_eq!(data[14]["content"], "Sure.");
    assert_eq!(data[14]["id"], data[13]["id"]);
    assert_eq!(
        events[1].participants,
        [seed.alice.clone(), seed.bob.clone()]
    );

    // Whatever went out live as a frame comes back from the log the same.
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    for frame in &live {
        if frame["type"] != "turn_taking.typing" && frame["type"] != "connection.ready" {
            assert!(
                by_id.insert(frame["id"].as_str().unwrap(), frame).is_none(),
                "one frame per event: {frame}"
            );
        }
    }
    assert_eq!(by_id.len(), 9, "frames seen live: {live:?}");
    for (event, data) in events.iter().zip(&data) {
        let Some(frame) = by_id.remove(event.id.as_str()) else {
            continue;
        };
        assert_eq!(frame["type"], event.kind.as_str());
        assert_eq!(frame["seq"], event.seq);
        assert_eq!(&frame["data"], data, "{}", event.kind.as_str());
    }
    assert!(
        by_id.is_empty(),
        "live frames missing from the log: {by_id:?}"
    );

    // One more change after another restart: the consumer, from its saved
    // cursor, sees exactly that.
    let app = start(&db, 0.0).await;
    let body = json!({"aid": seed.alice, "thread_id": t1, "content": "four"});
    let message = app.post(key, "/api/acsp/thread/message", body).await;
    app.stop().await;
    let next = consume(&db, "test-consumer");
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].position, Some(positions.len() as i64 + 1));
    assert_eq!(next[0].id, message["message"]["id"].as_str().unwrap());
    assert_eq!(
        serde_json::from_str::<Value>(next[0].data.get()).unwrap(),
        message["message"]
    );
}

#[tokio::test]
async fn the_server_prunes_events_past_retention_but_keeps_the_newest() {
    let db = TestDb::new();
    let seed = db.seed();
    let key = seed.login_key.as_str();
    let app = start(&db, 0.0).await;
    let created = app
        .post(
            key,
            "/api/acsp/thread/create",
            json!({"aid": seed.alice, "target_aid": seed.bob, "first_message": "old"}),
        )
        .await;
    let thread = created["thread"]["id"].as_str().unwrap().to_owned();
    let body = json!({"aid": seed.bob, "thread_id": thread, "content": "also old"});
    app.post(key, "/api/acsp/thread/message", body).await;
    app.stop().await;
    // Three events, all far older than the 7-day retention.
    let aged = db.execute("UPDATE events SET created_at = '2000-01-01T00:00:00.000Z'");
    assert_eq!(aged, 3);

    // A restarted server prunes them in the background, all but the newest.
    let app = start(&db, 0.0).await;
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    let positions = || -> Vec<i64> {
        db.with_conn(|conn| events_after(conn, 0, 10).unwrap())
            .iter()
            .map(|e| e.position.unwrap())
            .collect()
    };
    loop {
        let left = positions();
        if left == [3] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not pruned: {left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // New events continue the order: no position is reused. Once the new
    // event is the newest, the aged event 3 is no longer protected, and the
    // background pruner may or may not have removed it by now.
    let body = json!({"aid": seed.alice, "thread_id": thread, "content": "new"});
    app.post(key, "/api/acsp/thread/message", body).await;
    app.stop().await;
    let left = positions();
    assert!(left == [3, 4] || left == [4], "positions left: {left:?}");
}
