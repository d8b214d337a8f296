//! The scheduler when one reply part cannot be delivered: a fault injected
//! into the real database (a trigger that refuses one part's message) holds
//! back that part alone. Every other thread's parts go out, the bad part is
//! retried a few times and given up (`failed`), its thread's later parts
//! follow it in order, and nothing is stored twice. Also: a socket that
//! connects while the agent is typing is told so at once. Both backends
//! (the trigger is written for each).

use serde_json::{json, Value};

use crate::helpers::{json_of, spawn_app_with, TestApp, Ws};

/// What the injected trigger refuses: a message whose content holds it.
pub(crate) const POISON: &str = "POISON";

/// A server that delivers at once (`--pace-scale 0`) and retries a failed
/// part after 20 ms (doubling), so its attempts run out in well under a
/// second.
async fn app() -> TestApp {
    spawn_app_with(|c| {
        c.pace_scale = 0.0;
        c.reply_retry_pause_ms = 20;
    })
    .await
}

/// Makes the database refuse every message whose content holds [`POISON`],
/// as a constraint would: a trigger on `messages`, for either backend.
pub(crate) fn refuse_poisoned_messages(app: &TestApp) {
    if app.db.database_url.is_some() {
        app.db_exec(&format!(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.content LIKE '%{POISON}%' THEN RAISE EXCEPTION 'injected'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_poison BEFORE INSERT ON messages
                 FOR EACH ROW EXECUTE FUNCTION refuse_poison();"
        ));
    } else {
        app.db_exec(&format!(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON messages
             WHEN NEW.content LIKE '%{POISON}%'
             BEGIN SELECT RAISE(ABORT, 'injected'); END;"
        ));
    }
}

/// Submits one message to the thread and returns the turn it started.
pub(crate) async fn turn(app: &TestApp, thread_id: &str) -> i64 {
    app.submit(thread_id, json!([{"sender": "dana", "content": "go on"}]))
        .await["turn_epoch"]
        .as_i64()
        .unwrap()
}

/// Three sentences long enough to be three parts; the second holds
/// `middle`.
pub(crate) fn three_parts(middle: &str) -> String {
    format!(
        "Alpha one is the first sentence of this reply, long enough. \
         {middle} two is the second sentence of this reply, long enough. \
         Gamma three is the third sentence of this reply, long enough."
    )
}

/// The `turn_taking.message` events' indexes up to the typing indicator's
/// `stop`, which ends the reply (each wait bounded by the socket's).
async fn indexes_until_typing_stops(ws: &mut Ws) -> Vec<i64> {
    let mut indexes = Vec::new();
    loop {
        let e = ws.event().await;
        match e["type"].as_str().unwrap() {
            "turn_taking.message" => indexes.push(e["data"]["index"].as_i64().unwrap()),
            "turn_taking.typing" if e["data"]["state"] == "stop" => return indexes,
            _ => {}
        }
    }
}

/// The statuses of the newest turn's parts, as the turns route shows them.
async fn part_statuses(app: &TestApp, thread_id: &str) -> Vec<String> {
    let res = app
        .get(
            &format!("/v1/turn-taking/threads/{thread_id}/turns"),
            &app.key,
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    body["turns"][0]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap().to_owned())
        .collect()
}

/// The part at `idx` of the thread: its state and failed attempts.
fn part_row(app: &TestApp, thread_id: &str, idx: i64) -> (Option<String>, i64) {
    let which = format!(
        "FROM scheduled_replies s JOIN threads t ON t.id = s.thread_id
         WHERE t.uuid = '{thread_id}' AND s.idx = {idx}"
    );
    (
        app.db_text(&format!("SELECT s.state {which}")),
        app.db_count(&format!("SELECT s.failures {which}")),
    )
}

/// The agent's stored messages in the thread.
fn agent_messages(app: &TestApp, thread_id: &str) -> i64 {
    app.db_count(&format!(
        "SELECT COUNT(*) FROM messages m JOIN threads t ON t.id = m.thread_id
         WHERE t.uuid = '{thread_id}' AND m.sender = 'agent'"
    ))
}

/// The main case. A reply whose middle part the database refuses: the part
/// is tried 5 times and given up, the part after it still goes out after
/// it (never before: the thread's order holds), and another thread's reply,
/// due at the same moment, is delivered whole. Before, the refused part
/// undid the scheduler's whole write, every time: no thread got another
/// part.
#[tokio::test]
async fn a_refused_part_is_given_up_alone_and_every_other_part_is_delivered() {
    let app = app().await;
    let (bad, mut bad_ws) = app.open_and_listen(None).await;
    let (good, mut good_ws) = app.open_and_listen(None).await;
    refuse_poisoned_messages(&app);
    let (bad_epoch, good_epoch) = (turn(&app, &bad).await, turn(&app, &good).await);
    let (bad_text, good_text) = (three_parts(POISON), three_parts("Beta"));
    let (bad_reply, good_reply) = tokio::join!(
        app.respond(&bad, &bad_text, bad_epoch),
        app.respond(&good, &good_text, good_epoch),
    );
    assert_eq!(bad_reply["scheduled"].as_array().unwrap().len(), 3);
    assert_eq!(good_reply["scheduled"].as_array().unwrap().len(), 3);

    // The other thread hears its whole reply, in order.
    assert_eq!(indexes_until_typing_stops(&mut good_ws).await, [0, 1, 2]);
    // The bad thread hears parts 0 and 2: the gap is in the events'
    // `index` (of `count` 3), for a client to see.
    assert_eq!(indexes_until_typing_stops(&mut bad_ws).await, [0, 2]);

    assert_eq!(part_row(&app, &bad, 1), (Some("failed".into()), 5));
    assert_eq!(part_row(&app, &bad, 2), (Some("delivered".into()), 0));
    assert_eq!(
        part_statuses(&app, &bad).await,
        ["delivered", "failed", "delivered"]
    );
    assert_eq!(
        part_statuses(&app, &good).await,
        ["delivered", "delivered", "delivered"]
    );
    // Nothing stored twice, nothing of the refused part, no seq skipped by
    // the attempts that were undone.
    assert_eq!(agent_messages(&app, &bad), 2);
    assert_eq!(agent_messages(&app, &good), 3);
    assert_eq!(app.stored_seqs(&bad), [1, 2, 3]);
    assert_eq!(app.stored_seqs(&good), [1, 2, 3, 4]);
    assert_eq!(
        app.db_count(&format!(
            "SELECT COUNT(*) FROM messages WHERE content LIKE '%{POISON}%'"
        )),
        0
    );
    // The event log holds one delivery per delivered part, none for the
    // failed one.
    let delivered = app
        .read_log()
        .into_iter()
        .filter(|e| e.kind == threadline::events::Kind::ReplyDelivered)
        .count();
    assert_eq!(delivered, 5);
    assert_eq!(
        metric(&app, "threadline_failed_scheduled_replies").await,
        1.0
    );
    assert_eq!(
        metric(&app, "threadline_pending_scheduled_replies").await,
        0.0
    );
}

/// A gauge's value on `/metrics`.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in {text}"))
}

/// A stored part that no longer reads back (its content turned into bytes
/// that are not text: a corrupt row) fails alone too. The scheduler's read
/// of the due parts failed as a whole on it, before any was delivered.
/// SQLite only: PostgreSQL's typed columns cannot hold such a row.
#[tokio::test]
async fn a_part_that_does_not_read_back_is_given_up_and_the_others_are_delivered() {
    let app = spawn_app_with(|c| {
        c.pace_scale = 100.0;
        c.reply_retry_pause_ms = 20;
    })
    .await;
    if app.db.database_url.is_some() {
        return;
    }
    let (bad, mut bad_ws) = app.open_and_listen(None).await;
    let (good, mut good_ws) = app.open_and_listen(None).await;
    let (bad_epoch, good_epoch) = (turn(&app, &bad).await, turn(&app, &good).await);
    app.respond(&bad, "A reply whose stored row gets corrupted.", bad_epoch)
        .await;
    app.respond(&good, "A reply that stays as it was stored.", good_epoch)
        .await;
    // Paced minutes ahead; made due now, the bad one first, and unreadable.
    app.db_exec(&format!(
        "UPDATE scheduled_replies SET deliver_at_ms = 0 WHERE state = 'pending';
         UPDATE scheduled_replies SET content = X'FF00FF'
         WHERE thread_id = (SELECT id FROM threads WHERE uuid = '{bad}');"
    ));
    // A reply in a third thread wakes the scheduler.
    let (third, _) = app.grant_for(&app.key, None).await;
    let third_epoch = turn(&app, &third).await;
    app.respond(&third, "Just to wake the scheduler up.", third_epoch)
        .await;

    let message = good_ws.event_of("turn_taking.message").await;
    assert_eq!(
        message["data"]["content"],
        "A reply that stays as it was stored."
    );
    assert_eq!(good_ws.event().await["data"]["state"], "stop");
    assert_eq!(
        bad_ws.event_of("turn_taking.typing").await["data"]["state"],
        "start"
    );
    // Its failure is told (sched24), then the typing stops.
    let failed = bad_ws.event().await;
    assert_eq!(failed["type"], "turn_taking.reply_failed", "{failed}");
    let stop = bad_ws.event().await;
    assert_eq!(
        stop["data"],
        json!({"state": "stop", "turn_epoch": bad_epoch}),
        "{stop}"
    );
    assert_eq!(part_row(&app, &bad, 0), (Some("failed".into()), 5));
    assert_eq!(agent_messages(&app, &bad), 0);
    assert_eq!(app.stored_seqs(&good), [1, 2]);
}

/// A thread whose only pending part is given up stops typing: clients
/// showed "typing..." for good (no part was left to stop it). The next
/// reply in the thread goes out as usual.
#[tokio::test]
async fn a_part_given_up_with_nothing_after_it_stops_the_typing_indicator() {
    let app = app().await;
    let (thread, mut ws) = app.open_and_listen(None).await;
    refuse_poisoned_messages(&app);
    let epoch = turn(&app, &thread).await;
    app.respond(
        &thread,
        &format!("{POISON}: a reply of one part that the database refuses."),
        epoch,
    )
    .await;
    let start = ws.event_of("turn_taking.typing").await;
    assert_eq!(
        start["data"],
        json!({"state": "start", "turn_epoch": epoch})
    );
    // The next events are the part's failure (sched24) and the stop: no
    // message went out.
    let failed = ws.event().await;
    assert_eq!(failed["type"], "turn_taking.reply_failed", "{failed}");
    let stop = ws.event().await;
    assert_eq!(stop["type"], "turn_taking.typing", "{stop}");
    assert_eq!(stop["data"], json!({"state": "stop", "turn_epoch": epoch}));
    assert_eq!(part_row(&app, &thread, 0), (Some("failed".into()), 5));
    assert_eq!(agent_messages(&app, &thread), 0);

    let epoch = turn(&app, &thread).await;
    app.respond(&thread, "A reply the database takes.", epoch)
        .await;
    let message = ws.event_of("turn_taking.message").await;
    assert_eq!(message["data"]["content"], "A reply the database takes.");
    assert_eq!(app.stored_seqs(&thread), [1, 2, 3]);
}

/// A socket that connects (or resumes) while a reply part is pending is
/// told that the agent is typing right after `connection.ready` (and the
/// replay), with the reply's turn: it used to hear nothing until the next
/// part, and showed no indicator meanwhile. One that connects when nothing
/// is pending is told nothing.
#[tokio::test]
async fn a_socket_that_connects_while_the_agent_is_typing_is_told_at_once() {
    // Parts paced minutes apart: the reply stays pending.
    let app = spawn_app_with(|c| c.pace_scale = 100.0).await;
    let (thread, mut first) = app.open_and_listen(None).await;
    let epoch = turn(&app, &thread).await;
    app.respond(&thread, &three_parts("Beta"), epoch).await;
    assert_eq!(
        first.event_of("turn_taking.typing").await["data"]["state"],
        "start"
    );

    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut joined = Ws::connect(&url).await;
    assert_eq!(joined.event().await["type"], "connection.ready");
    let typing = joined.event().await;
    assert_eq!(typing["type"], "turn_taking.typing", "{typing}");
    assert_eq!(
        typing["data"],
        json!({"state": "start", "turn_epoch": epoch})
    );
    assert_eq!(typing["channel"], format!("turn-taking-thread/{thread}"));
    assert_eq!(typing["seq"], 1);

    // A resume replays first, then says so.
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut resumed = Ws::connect(&format!("{url}&after=0")).await;
    let kinds: Vec<Value> = [
        resumed.event().await,
        resumed.event().await,
        resumed.event().await,
    ]
    .iter()
    .map(|e| e["type"].clone())
    .collect();
    assert_eq!(
        kinds,
        ["connection.ready", "thread.message", "turn_taking.typing"]
    );

    // A new turn cancels the reply: typing stops, on every socket.
    turn(&app, &thread).await;
    for ws in [&mut first, &mut joined, &mut resumed] {
        let stop = ws.event_of("turn_taking.typing").await;
        assert_eq!(stop["data"]["state"], "stop");
    }
    // Nothing pending: a socket that connects now hears no indicator; the
    // next event after its ready is the next message.
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut idle = Ws::connect(&url).await;
    assert_eq!(idle.event().await["type"], "connection.ready");
    turn(&app, &thread).await;
    let next = idle.event().await;
    assert_eq!(next["type"], "thread.message", "{next}");
}
