//! Turn-taking reply parts, round 24: a part given up is heard
//! (`turn_taking.reply_failed`, logged, on the thread's socket and SSE
//! stream, replayed by an SSE resume); a thread holds at most 1,000
//! pending parts (`409 TOO_MANY_PENDING_PARTS`, nothing stored, a new
//! turn still cancels them); a full disk counts against no part (on
//! PostgreSQL, where a trigger can raise `disk_full`); a thread's parts
//! stay in order while one of them is held locked (PostgreSQL, two nodes).
//! Faults are injected into the real database with triggers, as in
//! sched23.

use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::sse::{EventStream, StreamEvent};
use crate::helpers::{assert_error, json_of, spawn_app_with, TestApp, WAIT};
use crate::sched23::{refuse_poisoned_messages, three_parts, turn, POISON};

/// A thread's `/v1/sse` stream.
struct Sse(EventStream);

impl Sse {
    async fn open(app: &TestApp, thread_id: &str, last_id: Option<i64>) -> Sse {
        let url = app.url(&format!("/v1/sse?thread_id={thread_id}"));
        let mut sse = Sse(EventStream::open(&app.client, url, &app.key, last_id).await);
        // Every stream starts with the socket's connection.ready (round 25).
        let ready = sse.event().await;
        assert_eq!((ready.id, ready.kind.as_str()), (None, "connection.ready"));
        sse
    }

    async fn event(&mut self) -> StreamEvent {
        self.0.event().await
    }

    /// The events up to and including the first of `kind`.
    async fn until(&mut self, kind: &str) -> Vec<StreamEvent> {
        let mut seen = Vec::new();
        loop {
            let e = self.event().await;
            let done = e.kind == kind;
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

/// The main case of point 1. A reply whose middle part the database
/// refuses: when it is given up, `turn_taking.reply_failed` (its id,
/// index, count, turn and failed attempts; no content) is sent on the
/// thread's socket and SSE stream between the parts around it, is in the
/// event log with a position, and a stream that resumes from before it
/// gets it again, the same event. Before, only the typing indicator's
/// `stop` (a signal, and only when nothing else was pending) said
/// anything, and nothing of it was logged.
#[tokio::test]
async fn a_part_given_up_is_logged_and_heard_on_the_socket_and_the_stream() {
    let app = spawn_app_with(|c| {
        c.pace_scale = 0.0;
        c.reply_retry_pause_ms = 20;
    })
    .await;
    let (thread, mut ws) = app.open_and_listen(None).await;
    let mut sse = Sse::open(&app, &thread, None).await;
    refuse_poisoned_messages(&app);
    let epoch = turn(&app, &thread).await;
    let reply = app.respond(&thread, &three_parts(POISON), epoch).await;
    let bad_id = reply["scheduled"][1]["id"].as_str().unwrap().to_owned();

    // The socket: part 0, then the failure of part 1, then part 2, then
    // the typing indicator stops.
    let mut heard = Vec::new();
    let failed = loop {
        let e = ws.event().await;
        match e["type"].as_str().unwrap() {
            "turn_taking.message" => heard.push(format!("message {}", e["data"]["index"])),
            "turn_taking.reply_failed" => {
                heard.push(format!("failed {}", e["data"]["index"]));
                break e;
            }
            _ => {}
        }
    };
    assert_eq!(
        failed["data"],
        json!({"id": bad_id, "index": 1, "count": 3, "turn_epoch": epoch, "failures": 5}),
        "{failed}"
    );
    assert!(failed["data"].get("content").is_none(), "no content");
    assert_eq!(failed["channel"], format!("turn-taking-thread/{thread}"));
    // The thread's last seq then: the submitted message and part 0.
    assert_eq!(failed["seq"], 2);
    let next = ws.event_of("turn_taking.message").await;
    assert_eq!(next["data"]["index"], 2);
    assert_eq!(ws.event().await["data"]["state"], "stop");
    assert_eq!(heard, ["message 0", "failed 1"]);

    // The stream: the same event, with a position.
    let seen = sse.until("turn_taking.reply_failed").await;
    let live = seen.last().unwrap().clone();
    assert_eq!(live.data, failed, "the stream's frame is the socket's");
    let position = live.id.expect("a logged event has a position");
    let before = seen
        .iter()
        .rev()
        .skip(1)
        .find_map(|e| e.id)
        .expect("part 0 was logged before it");

    // The log holds it once, with the same id and payload.
    let logged: Vec<_> = app
        .read_log()
        .into_iter()
        .filter(|e| e.kind == threadline::events::Kind::ReplyFailed)
        .collect();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].position, Some(position));
    assert_eq!(logged[0].id, failed["id"].as_str().unwrap());
    assert_eq!(
        serde_json::from_str::<Value>(logged[0].data.get()).unwrap(),
        failed["data"]
    );

    // A stream that resumes from before it is told again: same id, same
    // frame; then part 2.
    let mut resumed = Sse::open(&app, &thread, Some(before)).await;
    let replayed = resumed.event().await;
    assert_eq!(replayed, live);
    let after = resumed.event().await;
    assert_eq!(after.kind, "turn_taking.message");
    assert_eq!(after.data["data"]["index"], 2);
}

/// A part given up with nothing after it: `reply_failed` first, then the
/// typing indicator's `stop` (sched23's case, now with the event). Its
/// stored row's content no longer reading back (SQLite: a corrupt row)
/// does not keep it from being told: the event carries no content, and
/// its payload is kept in the log row itself.
#[tokio::test]
async fn a_part_given_up_is_told_before_the_typing_stops_even_when_its_row_is_corrupt() {
    let app = spawn_app_with(|c| {
        c.pace_scale = 100.0;
        c.reply_retry_pause_ms = 20;
    })
    .await;
    let (thread, mut ws) = app.open_and_listen(None).await;
    let epoch = turn(&app, &thread).await;
    let reply = app
        .respond(&thread, "A reply whose stored row goes bad.", epoch)
        .await;
    let id = reply["scheduled"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        ws.event_of("turn_taking.typing").await["data"]["state"],
        "start"
    );
    // Paced minutes ahead; made due now, and (on SQLite) unreadable; on
    // PostgreSQL, whose typed columns cannot hold such a row, refused.
    if app.db.database_url.is_some() {
        refuse_poisoned_messages(&app);
        app.db_exec(&format!(
            "UPDATE scheduled_replies SET deliver_at_ms = 0, content = '{POISON}'"
        ));
    } else {
        app.db_exec("UPDATE scheduled_replies SET deliver_at_ms = 0, content = X'FF00FF'");
    }
    // A reply in another thread wakes the scheduler.
    let (other, _) = app.grant_for(&app.key, None).await;
    let other_epoch = turn(&app, &other).await;
    app.respond(&other, "Just to wake the scheduler up.", other_epoch)
        .await;

    let failed = ws.event().await;
    assert_eq!(failed["type"], "turn_taking.reply_failed", "{failed}");
    assert_eq!(
        failed["data"],
        json!({"id": id, "index": 0, "count": 1, "turn_epoch": epoch, "failures": 5})
    );
    let stop = ws.event().await;
    assert_eq!(
        stop["data"],
        json!({"state": "stop", "turn_epoch": epoch}),
        "{stop}"
    );
}

/// `respond` with the app's key, the answer as it is.
async fn try_respond(app: &TestApp, thread_id: &str, content: &str, epoch: i64) -> Response {
    app.post_json(
        "/v1/turn-taking/actions/respond",
        &app.key,
        &json!({"thread_id": thread_id, "content": content, "turn_epoch": epoch}),
    )
    .await
}

/// Five sentences long enough to be five parts (the most a reply has).
fn five_parts(n: usize) -> String {
    (0..5)
        .map(|i| format!("Sentence {i} of reply {n} is long enough to be a part of its own."))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a refused `respond` must leave as it was, read directly.
fn stored(app: &TestApp) -> [i64; 4] {
    [
        app.db_count("SELECT COUNT(*) FROM scheduled_replies"),
        app.db_count("SELECT COUNT(*) FROM scheduled_replies WHERE state = 'pending'"),
        app.stored_messages(),
        app.db_count("SELECT COUNT(*) FROM events"),
    ]
}

/// Point 2: a thread takes replies up to 1,000 pending parts (the 200th
/// five-part reply reaches it exactly), and a reply past that is refused
/// whole with `409 TOO_MANY_PENDING_PARTS`: nothing stored, nothing
/// logged. Another thread is not held by it; a new turn cancels the
/// thousand in one write (each logged, the typing indicator stopped), and
/// the thread takes replies again. Before, parts piled up without bound
/// (with the rate limit off), and the cancel held the single writer a
/// little longer for each.
#[tokio::test]
async fn a_thread_holds_at_most_a_thousand_pending_parts_and_a_new_turn_still_cancels_them() {
    let app = spawn_app_with(|c| {
        c.pace_scale = 100.0;
        c.rate_limit_per_minute = 0;
    })
    .await;
    let (thread, mut ws) = app.open_and_listen(None).await;
    let epoch = turn(&app, &thread).await;
    for n in 0..200 {
        let reply = app.respond(&thread, &five_parts(n), epoch).await;
        assert_eq!(reply["scheduled"].as_array().unwrap().len(), 5);
    }
    let before = stored(&app);
    assert_eq!(before[1], 1000);

    // One part more is one too many, as is a whole reply.
    for content in ["One more sentence.", &five_parts(200)] {
        let res = try_respond(&app, &thread, content, epoch).await;
        let body = assert_error(res, 409, "TOO_MANY_PENDING_PARTS").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("1000"), "{message}");
        assert!(body["error"].get("field").is_none(), "{body}");
        assert_eq!(stored(&app), before, "nothing stored");
    }
    // A superseded reply still answers as before: nothing to refuse.
    let res = try_respond(&app, &thread, "Too late.", epoch - 1).await;
    let (status, body) = json_of(res).await;
    assert_eq!((status.as_u16(), &body["superseded"]), (200, &json!(true)));

    // Another thread is not held by this one's parts.
    let (other, _) = app.grant_for(&app.key, None).await;
    let other_epoch = turn(&app, &other).await;
    app.respond(&other, "Another thread, another reply.", other_epoch)
        .await;

    // A new turn cancels the thousand, in one write.
    let new_epoch = turn(&app, &thread).await;
    let start = ws.event_of("turn_taking.typing").await;
    assert_eq!(start["data"]["state"], "start", "the first reply's start");
    let stop = ws.event_of("turn_taking.typing").await;
    assert_eq!(
        stop["data"],
        json!({"state": "stop", "turn_epoch": epoch}),
        "{stop}"
    );
    let pending = format!(
        "SELECT COUNT(*) FROM scheduled_replies s JOIN threads t ON t.id = s.thread_id
         WHERE t.uuid = '{thread}' AND s.state = 'pending'"
    );
    assert_eq!(app.db_count(&pending), 0);
    assert_eq!(
        app.db_count("SELECT COUNT(*) FROM events WHERE kind = 'turn_taking.reply_cancelled'"),
        1000
    );
    let reply = app
        .respond(&thread, "The thread takes replies again.", new_epoch)
        .await;
    assert_eq!(reply["scheduled"].as_array().unwrap().len(), 1);
    assert_eq!(app.db_count(&pending), 1);
}

/// Point 3, on PostgreSQL: a delivery that fails because the database is
/// out of disk (a trigger raises `disk_full`, SQLSTATE 53100, as the
/// server would) is the store's fault, not the part's: however often it
/// is tried, the part's failed attempts stay 0 and it stays pending (it
/// was counted, and given up after 5 tries, when the error lost its
/// code), and once there is room it goes out. On SQLite a trigger cannot
/// raise SQLITE_FULL; `error::tests` checks that mapping.
#[tokio::test]
async fn a_full_disk_counts_against_no_part_and_the_part_goes_out_once_there_is_room() {
    let app = spawn_app_with(|c| {
        c.pace_scale = 0.0;
        c.reply_retry_pause_ms = 20;
    })
    .await;
    if app.db.database_url.is_none() {
        return;
    }
    let (thread, mut ws) = app.open_and_listen(None).await;
    // A sequence counts the attempts: nextval() is not undone with the
    // statement the trigger fails.
    app.db_exec(&format!(
        "CREATE SEQUENCE poison_attempts;
         CREATE FUNCTION disk_full_on_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.content LIKE '%{POISON}%' THEN
                 PERFORM nextval('poison_attempts');
                 RAISE EXCEPTION 'could not extend file: No space left on device'
                     USING ERRCODE = 'disk_full';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER disk_full_on_poison BEFORE INSERT ON messages
             FOR EACH ROW EXECUTE FUNCTION disk_full_on_poison();"
    ));
    let epoch = turn(&app, &thread).await;
    app.respond(
        &thread,
        &format!("{POISON}: a reply of one part that finds the disk full."),
        epoch,
    )
    .await;
    // Three attempts (the scheduler's own back-off: 1 s, then 2 s).
    let attempts = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM poison_attempts";
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.db_count(attempts) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduler did not try again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let part = format!(
        "FROM scheduled_replies s JOIN threads t ON t.id = s.thread_id WHERE t.uuid = '{thread}'"
    );
    assert_eq!(
        app.db_text(&format!("SELECT s.state {part}")).as_deref(),
        Some("pending")
    );
    assert_eq!(app.db_count(&format!("SELECT s.failures {part}")), 0);

    // Room again: the part goes out (a new reply elsewhere wakes the
    // scheduler early).
    app.db_exec("DROP TRIGGER disk_full_on_poison ON messages");
    let (other, _) = app.grant_for(&app.key, None).await;
    let other_epoch = turn(&app, &other).await;
    app.respond(&other, "Just to wake the scheduler up.", other_epoch)
        .await;
    let message = ws.event_of("turn_taking.message").await;
    assert_eq!(message["data"]["index"], 0);
    assert_eq!(
        app.db_text(&format!("SELECT s.state {part}")).as_deref(),
        Some("delivered")
    );
    assert_eq!(app.db_count(&format!("SELECT s.failures {part}")), 0);
}

/// Point 4, with two real nodes sharing PostgreSQL. A round claims due
/// parts `FOR UPDATE SKIP LOCKED`; it took a thread's later parts while it
/// skipped a locked one before them, and they went out first: the thread's
/// messages out of order. Two nodes' rounds cannot hold parts at the same
/// time today (every writer batch takes the `log_head` lock first), so the
/// lock here is the test's own transaction, standing for whatever else
/// holds a part (an operator's session, a writer that no longer
/// serializes): it holds part 0 while parts 0–2 fall due and both
/// servers' schedulers run. A reply in another thread, due just after,
/// marks a round that would have taken parts 1 and 2: they must still be
/// pending. Once part 0 is let go, the three go out in order.
#[tokio::test]
async fn a_threads_next_part_waits_while_the_part_before_it_is_held_with_two_nodes_running() {
    let a = spawn_app_with(|c| c.pace_scale = 100.0).await;
    let Some(url) = a.db.database_url.clone() else {
        return;
    };
    let b = a.another_node(|c| c.pace_scale = 100.0).await;
    let (thread, mut ws) = a.open_and_listen(None).await;
    let (marker, mut marker_ws) = b.open_and_listen(None).await;
    let epoch = turn(&a, &thread).await;
    let reply = a.respond(&thread, &three_parts("Beta"), epoch).await;
    let ids: Vec<String> = reply["scheduled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    let marker_epoch = turn(&b, &marker).await;
    b.respond(&marker, "The reply that marks a round.", marker_epoch)
        .await;

    // Paced minutes ahead; made due in a moment, the thread's parts in
    // their order, the marker just after.
    let due = chrono::Utc::now().timestamp_millis() + 1_500;
    a.db_exec(&format!(
        "UPDATE scheduled_replies SET deliver_at_ms = {due} + idx
         WHERE thread_id = (SELECT id FROM threads WHERE uuid = '{thread}');
         UPDATE scheduled_replies SET deliver_at_ms = {due} + 50
         WHERE thread_id = (SELECT id FROM threads WHERE uuid = '{marker}');"
    ));
    // Part 0 locked, in a transaction left open.
    let holder = crate::helpers::pg::Session::new(&url);
    holder.exec("BEGIN");
    assert_eq!(
        holder
            .text(&format!(
                "SELECT state FROM scheduled_replies WHERE uuid = '{}' FOR UPDATE",
                ids[0]
            ))
            .as_deref(),
        Some("pending"),
        "part 0 went out before it could be held (the machine stalled 1.5 s?)"
    );

    let delivered = marker_ws.event_of("turn_taking.message").await;
    assert_eq!(
        delivered["data"]["content"],
        "The reply that marks a round."
    );
    let states = |which: &str| {
        a.db_text(&format!(
            "SELECT string_agg(state, ',' ORDER BY idx) FROM scheduled_replies
             WHERE uuid IN ({which})"
        ))
    };
    let later = format!("'{}', '{}'", ids[1], ids[2]);
    assert_eq!(
        states(&later).as_deref(),
        Some("pending,pending"),
        "a later part went out while part 0 was held"
    );

    holder.exec("ROLLBACK");
    let mut indexes = Vec::new();
    while indexes.len() < 3 {
        let e = ws.event_of("turn_taking.message").await;
        indexes.push(e["data"]["index"].as_i64().unwrap());
    }
    assert_eq!(indexes, [0, 1, 2]);
    let all = format!("'{}', {later}", ids[0]);
    assert_eq!(
        states(&all).as_deref(),
        Some("delivered,delivered,delivered")
    );
    // Stored in order: the parts' messages by seq.
    assert_eq!(
        a.db_text(&format!(
            "SELECT string_agg(s.idx::text, ',' ORDER BY m.seq) FROM scheduled_replies s
             JOIN messages m ON m.id = s.message_id WHERE s.uuid IN ({all})"
        ))
        .as_deref(),
        Some("0,1,2")
    );
}

/// On two nodes, a socket on either hears a part given up, whichever node
/// delivered the reply: the other node reads the event from the log (its
/// payload from the log row), in order between the parts around it.
#[tokio::test]
async fn a_part_given_up_is_heard_on_every_node() {
    let a = spawn_app_with(|c| {
        c.pace_scale = 0.0;
        c.reply_retry_pause_ms = 20;
    })
    .await;
    if a.db.database_url.is_none() {
        return;
    }
    let b = a
        .another_node(|c| {
            c.pace_scale = 0.0;
            c.reply_retry_pause_ms = 20;
        })
        .await;
    let (thread, mut on_a) = a.open_and_listen(None).await;
    let (_, url) = b.grant_for(&b.key, Some(&thread)).await;
    let mut on_b = crate::helpers::Ws::connect(&url).await;
    assert_eq!(on_b.event().await["type"], "connection.ready");
    refuse_poisoned_messages(&a);
    let epoch = turn(&a, &thread).await;
    let reply = a.respond(&thread, &three_parts(POISON), epoch).await;
    let want = json!({
        "id": reply["scheduled"][1]["id"], "index": 1, "count": 3,
        "turn_epoch": epoch, "failures": 5,
    });
    for ws in [&mut on_a, &mut on_b] {
        let mut heard = Vec::new();
        loop {
            let e = ws.event().await;
            match e["type"].as_str().unwrap() {
                "turn_taking.message" => heard.push(format!("message {}", e["data"]["index"])),
                "turn_taking.reply_failed" => {
                    assert_eq!(e["data"], want, "{e}");
                    heard.push("failed 1".to_owned());
                }
                "turn_taking.typing" if e["data"]["state"] == "stop" => break,
                _ => {}
            }
        }
        assert_eq!(heard, ["message 0", "failed 1", "message 2"]);
    }
}
