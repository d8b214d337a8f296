//! On PostgreSQL a post the database refuses fails alone (`pg_batch14`),
//! and so must every write that shared its batch, not only the other
//! posts: a thread created (with its first message), a read mark, a status
//! change and a webhook registered by other clients in the same batch are
//! each committed exactly once and answered with success, while the
//! refused post gets its 500 and stores nothing. Two ways of refusing:
//! a constraint trigger checked at COMMIT (deferred), and a plain trigger
//! that refuses when the held-back posts are sent.

use std::time::Duration;

use reqwest::Response;
use serde_json::json;
use threadline::events::Kind;

use crate::helpers::{assert_error, json_of, pg, spawn_app_with, Agent, TestApp};
use crate::pg_batch14::{lock_log_head, post, warm, writer_waits, REFUSED};

/// Sequences that note the (top-level) transaction that last did each kind
/// of write, and which one refused a post: sequences ignore rollbacks, so
/// a transaction that is undone still leaves its mark. A write committed
/// in the transaction that last refused the post shared its batch.
const NOTES: &str = "
    CREATE SEQUENCE test_txid_refused;
    CREATE SEQUENCE test_txid_created;
    CREATE SEQUENCE test_txid_status;
    CREATE SEQUENCE test_txid_read;
    CREATE SEQUENCE test_txid_webhook;
    CREATE FUNCTION test_note_txid() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM setval(TG_ARGV[0]::regclass, txid_current());
        RETURN NULL;
    END $$;
    CREATE TRIGGER test_note_created AFTER INSERT ON threads
        FOR EACH STATEMENT EXECUTE FUNCTION test_note_txid('test_txid_created');
    CREATE TRIGGER test_note_status AFTER UPDATE OF status ON threads
        FOR EACH STATEMENT EXECUTE FUNCTION test_note_txid('test_txid_status');
    CREATE TRIGGER test_note_read AFTER INSERT OR UPDATE ON read_marks
        FOR EACH STATEMENT EXECUTE FUNCTION test_note_txid('test_txid_read');
    CREATE TRIGGER test_note_webhook AFTER INSERT ON webhooks
        FOR EACH STATEMENT EXECUTE FUNCTION test_note_txid('test_txid_webhook');
    CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.content LIKE '%REFUSE-ME%' THEN
            PERFORM setval('test_txid_refused', txid_current());
            RAISE EXCEPTION 'refused by the test trigger';
        END IF;
        RETURN NULL;
    END $$;";

/// Refuses the post when its transaction commits (or its constraints are
/// made immediate).
const AT_COMMIT: &str = "
    CREATE CONSTRAINT TRIGGER test_refuse AFTER INSERT ON messages
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_refuse();";

/// Refuses the post when its row is sent (the writer holds posts back
/// until the next statement or COMMIT).
const WHEN_SENT: &str = "
    CREATE TRIGGER test_refuse AFTER INSERT ON messages
        FOR EACH ROW EXECUTE FUNCTION test_refuse();";

/// The app on PostgreSQL with the notes and `refusal` installed, or `None`
/// (said) on SQLite.
async fn app_refusing(refusal: &str) -> Option<(TestApp, String)> {
    if !pg::on_postgres() {
        eprintln!(
            "skipped on SQLite: the writer's commit-time batch is PostgreSQL's \
             (THREADLINE_TEST_DATABASE_URL)"
        );
        return None;
    }
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.allow_private_webhooks = true;
    })
    .await;
    let url = app.db.database_url.clone().expect("a PostgreSQL database");
    pg::exec(&url, &format!("{NOTES}{refusal}"));
    Some((app, url))
}

/// A request in a task, so that several are in flight at once.
fn send(req: reqwest::RequestBuilder) -> tokio::task::JoinHandle<Response> {
    tokio::spawn(async move { req.send().await.expect("request") })
}

/// Reads of the kinds the round's writes do before they join the writer's
/// queue (a thread list, the webhook list, a page), answered: the requests
/// sent before them have most likely reached the queue by then. The rounds
/// check that they did (see [`round`]).
async fn settle(app: &TestApp, o: &Others) {
    let reads = [
        app.client
            .get(app.url("/api/acsp/threads"))
            .query(&[("aid", &o.creator.aid)])
            .bearer_auth(&o.creator.key),
        app.client
            .get(app.url("/api/acsp/webhooks"))
            .bearer_auth(&o.hooker.key),
        app.client.get(app.url("/healthz")),
    ];
    for read in reads.map(send) {
        assert_eq!(
            read.await.unwrap().status(),
            200,
            "a read while the writer waits"
        );
    }
}

/// The other clients: each does one kind of write that is not a post.
struct Others {
    creator: Agent,
    reader: Agent,
    closer: Agent,
    hooker: Agent,
    /// The reader's thread with alice, where alice posts before each round.
    read_thread: String,
}

/// What one round's writes were, to check once it is over.
struct Round {
    subject: String,
    closed: String,
    read_seq: i64,
    description: String,
}

/// One round: while the writer waits for `log_head`, the other clients'
/// writes are sent first, then alice's refused post and bob's posts, so
/// that they all queue for one batch; then everything is answered. Returns
/// whether the writes shared the refused post's committed transaction
/// (see [`NOTES`]), once each is checked.
async fn round(app: &TestApp, url: &str, o: &Others, shared: &str, n: usize) -> bool {
    // Each round's fresh objects: a thread to close, a message to read.
    let closed = app.thread_between(&o.closer, &app.alice).await;
    let read_seq = app.say(&app.alice, &o.read_thread, "read me").await["seq"]
        .as_i64()
        .expect("a seq");
    let r = Round {
        subject: format!("round {n}: created"),
        closed,
        read_seq,
        description: format!("round {n}: webhook"),
    };
    warm(app, 12).await;
    let release = lock_log_head(url);
    let blocker = post(app, &app.bob, shared, &format!("round {n}: first"), None);
    writer_waits(url).await;
    // The writes that are not posts first; the reads and the webhook's
    // check come before their writes, so reads of the same kind are
    // answered before the posts go (see [`settle`]).
    let read = send(
        app.client
            .get(app.url(&format!("/api/acsp/thread/{}", o.read_thread)))
            .query(&[("aid", &o.reader.aid)])
            .bearer_auth(&o.reader.key),
    );
    let api = |path: &str| app.client.post(app.url(path));
    let hook = send(
        api("/api/acsp/webhooks")
            .bearer_auth(&o.hooker.key)
            .json(&json!({
                "url": "http://127.0.0.1:9/hook", "events": ["thread.message"],
                "description": r.description,
            })),
    );
    let create = send(
        api("/api/acsp/thread/create")
            .bearer_auth(&o.creator.key)
            .json(&json!({
                "aid": o.creator.aid, "target_aid": app.alice.aid,
                "subject": r.subject, "first_message": "hello",
            })),
    );
    let close = send(
        api("/api/acsp/thread/status")
            .bearer_auth(&o.closer.key)
            .json(&json!({
                "aid": o.closer.aid, "thread_id": r.closed, "status": "closed",
            })),
    );
    settle(app, o).await;
    let bad = post(
        app,
        &app.alice,
        shared,
        &format!("round {n}: {REFUSED}"),
        None,
    );
    let goods: Vec<_> = (0..3)
        .map(|i| post(app, &app.bob, shared, &format!("round {n}: bob {i}"), None))
        .collect();
    settle(app, o).await;
    drop(release);

    assert_eq!(
        blocker.await.unwrap().status(),
        201,
        "the post before the batch"
    );
    // Every answer first, so that a failure shows them all.
    let mut answers = Vec::new();
    for (what, res) in [
        ("thread created", create),
        ("status changed", close),
        ("read (marked)", read),
        ("webhook registered", hook),
    ]
    .into_iter()
    .chain(goods.into_iter().map(|g| ("another post", g)))
    {
        let (status, body) = json_of(res.await.unwrap()).await;
        answers.push((what, status.as_u16(), body));
    }
    let statuses: Vec<(&str, u16)> = answers.iter().map(|(w, s, _)| (*w, *s)).collect();
    let expected = [
        ("thread created", 201),
        ("status changed", 200),
        ("read (marked)", 200),
        ("webhook registered", 201),
        ("another post", 201),
        ("another post", 201),
        ("another post", 201),
    ];
    assert_eq!(
        statuses, expected,
        "the other writes of the batch: {answers:?}"
    );
    let created = &answers[0].2;
    let body = assert_error(bad.await.unwrap(), 500, "INTERNAL").await;
    let text = body.to_string();
    assert!(
        !text.contains("trigger") && !text.contains("postgres"),
        "no internals in the body: {text}"
    );

    let notes: Vec<i64> = ["refused", "created", "status", "read", "webhook"]
        .iter()
        .map(|k| pg::scalar(url, &format!("SELECT last_value FROM test_txid_{k}")))
        .collect();
    let together = notes.iter().all(|&t| t == notes[0]);
    eprintln!("round {n}: refusing and writing transactions {notes:?}");
    check_once(
        app,
        url,
        o,
        &r,
        created["thread"]["id"].as_str().expect("an id"),
    );
    together
}

/// Each of the round's writes is stored exactly once, with its event.
fn check_once(app: &TestApp, url: &str, o: &Others, r: &Round, created_id: &str) {
    let subject = &r.subject;
    let count = |sql: String| pg::scalar(url, &sql);
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM threads WHERE subject = '{subject}'"
        )),
        1,
        "one thread created"
    );
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM messages m JOIN threads t ON t.id = m.thread_id
             WHERE t.uuid = '{created_id}'"
        )),
        1,
        "its first message, once"
    );
    assert_eq!(
        pg::text(
            url,
            &format!("SELECT status FROM threads WHERE uuid = '{}'", r.closed)
        ),
        Some("closed".into())
    );
    assert_eq!(
        count(format!(
            "SELECT r.last_read_seq FROM read_marks r JOIN agents a ON a.id = r.agent_id
             JOIN threads t ON t.id = r.thread_id
             WHERE a.aid = '{}' AND t.uuid = '{}'",
            o.reader.aid, o.read_thread
        )),
        r.read_seq,
        "the read mark"
    );
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM webhooks WHERE description = '{}'",
            r.description
        )),
        1,
        "one webhook"
    );
    let log = app.read_log();
    let events = |kind: Kind, thread: &str| {
        log.iter()
            .filter(|e| e.kind == kind && e.thread_id == thread)
            .count()
    };
    assert_eq!(
        events(Kind::ThreadCreated, created_id),
        1,
        "one thread.created"
    );
    assert_eq!(
        events(Kind::ThreadMessage, created_id),
        1,
        "one first message"
    );
    assert_eq!(
        events(Kind::ThreadStatus, &r.closed),
        1,
        "one thread.status"
    );
}

/// Runs rounds until the other clients' writes shared the refused post's
/// batch (at most 10), then checks the thread it was refused in.
async fn writes_survive(refusal: &str) {
    let Some((app, url)) = app_refusing(refusal).await else {
        return;
    };
    let shared = app.thread_between(&app.alice, &app.bob).await;
    let others = Others {
        creator: app.new_agent("creator"),
        reader: app.new_agent("reader"),
        closer: app.new_agent("closer"),
        hooker: app.new_agent("hooker"),
        read_thread: String::new(),
    };
    let others = Others {
        read_thread: app.thread_between(&others.reader, &app.alice).await,
        ..others
    };
    let mut together = false;
    let mut n = 0;
    while !together && n < 10 {
        n += 1;
        together = round(&app, &url, &others, &shared, n).await;
    }
    assert!(
        together,
        "the writes never shared the refused post's batch ({n} rounds)"
    );

    let refused = format!("SELECT count(*) FROM messages WHERE content LIKE '%{REFUSED}%'");
    assert_eq!(app.db_count(&refused), 0, "nothing of the refused post");
    let seqs = app.stored_seqs(&shared);
    assert_eq!(seqs.len(), 4 * n, "the blocker and bob's three, each round");
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "gap-free"
    );
    let logged = app
        .read_log()
        .iter()
        .filter(|e| e.kind == Kind::ThreadMessage)
        .count() as i64;
    assert_eq!(logged, app.stored_messages(), "an event for each message");
    // The writer goes on.
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        app.say(&app.alice, &shared, "after the rounds"),
    )
    .await
    .expect("answered");
    assert_eq!(next["seq"], seqs.len() as i64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_writes_in_a_batch_whose_post_is_refused_at_commit_succeed_once() {
    writes_survive(AT_COMMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_writes_queued_before_a_refused_post_succeed_once() {
    writes_survive(WHEN_SENT).await;
}
