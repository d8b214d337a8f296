//! On PostgreSQL a node's writer sends a batch's posts together, when the
//! batch commits. A post the database refuses there (here: a trigger the
//! test installs in its own database) must fail alone: the other posts of
//! its batch, other clients' among them, are committed and answered 201,
//! with their seqs gap-free and their idempotency keys right. A failure
//! that is not one row's (the writer's connection dies) is answered 503,
//! without a loop or a hang.

use std::sync::mpsc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::helpers::{assert_error, json_of, pg, spawn_app, Agent, TestApp, POLL, WAIT};

/// Content the test's trigger refuses.
pub(crate) const REFUSED: &str = "REFUSE-ME";
/// Content on which the test's trigger ends the writer's session.
const FATAL: &str = "DROP-MY-CONNECTION";

/// A statement-level trigger on `messages`: it refuses a statement that
/// inserts a message containing [`REFUSED`], after noting in a sequence
/// (which a rollback does not undo) the most threads its transaction had
/// locked then: more than one means the refused post shared its batch with
/// another thread's post (a batch locks the threads its jobs name as it
/// begins). A message containing [`FATAL`] ends the session that inserts it.
const TRIGGER: &str = "
    CREATE SEQUENCE test_refused_threads;
    CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE refused bigint; total bigint;
    BEGIN
        IF EXISTS (SELECT 1 FROM new_rows WHERE content LIKE '%DROP-MY-CONNECTION%') THEN
            PERFORM pg_terminate_backend(pg_backend_pid());
        END IF;
        SELECT count(*) INTO refused FROM new_rows WHERE content LIKE '%REFUSE-ME%';
        IF refused > 0 THEN
            -- The threads this transaction has locked (a batch locks
            -- those its jobs post to as it begins) or written.
            SELECT count(*) INTO total FROM threads
             WHERE (txid_current() % 4294967296)::text IN (xmin::text, xmax::text);
            PERFORM setval('test_refused_threads',
                           greatest(total, (SELECT last_value FROM test_refused_threads)));
            RAISE EXCEPTION 'refused by the test trigger';
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER test_refuse AFTER INSERT ON messages REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION test_refuse();";

/// The app on PostgreSQL with the trigger installed, or `None` (said) on SQLite.
async fn app_with_trigger() -> Option<(TestApp, String)> {
    if !pg::on_postgres() {
        eprintln!(
            "skipped on SQLite: the writer's commit-time batch is PostgreSQL's \
             (THREADLINE_TEST_DATABASE_URL)"
        );
        return None;
    }
    let app = spawn_app().await;
    let url = app.db.database_url.clone().expect("a PostgreSQL database");
    pg::exec(&url, TRIGGER);
    Some((app, url))
}

/// Holds the `log_head` row locked in a transaction of its own until the
/// returned sender is dropped: the writer's next batch waits at its BEGIN,
/// and what is posted meanwhile queues for the batch after it.
pub(crate) fn lock_log_head(url: &str) -> mpsc::Sender<()> {
    let (locked_tx, locked_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.batch_execute("BEGIN; SELECT 1 FROM log_head FOR UPDATE")
            .expect("lock log_head");
        locked_tx.send(()).expect("the test waits");
        // Dropped sender: release.
        let _ = release_rx.recv();
        c.batch_execute("COMMIT").expect("release log_head");
    });
    locked_rx.recv_timeout(WAIT).expect("log_head locked");
    release_tx
}

/// Waits until a session of the test's database waits for a lock (the
/// writer, at its batch's BEGIN).
pub(crate) async fn writer_waits(url: &str) {
    let sql = "SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let started = Instant::now();
    loop {
        let url = url.to_owned();
        let waiting = tokio::task::spawn_blocking(move || pg::scalar(&url, sql))
            .await
            .expect("query");
        if waiting > 0 {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "the writer never waited for log_head"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Opens `n` connections to the server in the client's pool (concurrent
/// requests), so that the posts of a round go out without a handshake.
pub(crate) async fn warm(app: &TestApp, n: usize) {
    let gets: Vec<_> = (0..n)
        .map(|_| {
            let req = app.client.get(app.url("/healthz"));
            tokio::spawn(async move { req.send().await.expect("request").status() })
        })
        .collect();
    for get in gets {
        assert_eq!(get.await.unwrap(), 200);
    }
}

/// Posts `content` as `from` (with an idempotency key if given), in a task.
pub(crate) fn post(
    app: &TestApp,
    from: &Agent,
    thread: &str,
    content: &str,
    key: Option<&str>,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let mut req = app
        .client
        .post(app.url("/api/acsp/thread/message"))
        .bearer_auth(&from.key)
        .json(&json!({"aid": from.aid, "thread_id": thread, "content": content}));
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    tokio::spawn(async move { req.send().await.expect("request") })
}

/// The contents stored for a thread, in seq order.
fn stored_contents(url: &str, thread: &str) -> Vec<String> {
    let url = url.to_owned();
    let sql = format!(
        "SELECT string_agg(m.content, '|' ORDER BY m.seq) FROM messages m
         JOIN threads t ON t.id = m.thread_id WHERE t.uuid = '{thread}'"
    );
    pg::text(&url, &sql)
        .map(|s| s.split('|').map(str::to_owned).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_refused_at_commit_fails_alone_and_the_rest_of_its_batch_commits() {
    let Some((app, url)) = app_with_trigger().await else {
        return;
    };
    // Alice's thread with bob, where the refused post goes among others;
    // and four other clients (accounts), each posting to a thread of its own.
    let shared = app.thread_between(&app.alice, &app.bob).await;
    let mut others = Vec::new();
    for i in 0..4 {
        let agent = app.new_agent(&format!("other{i}"));
        let thread = app.thread_between(&agent, &app.alice).await;
        others.push((agent, thread));
    }
    // The refused post shares its batch with the others in the first round
    // as a rule (they queue while the writer waits for log_head); rounds
    // repeat until it has (the trigger says so), at most 10.
    let mut rounds = 0;
    let mut expected_shared: Vec<String> = Vec::new();
    let mut expected_other: Vec<Vec<String>> = vec![Vec::new(); others.len()];
    while rounds < 10 && pg::scalar(&url, "SELECT last_value FROM test_refused_threads") < 2 {
        rounds += 1;
        warm(&app, 8).await;
        let release = lock_log_head(&url);
        let first = format!("round {rounds}: first, alone in its batch");
        let blocker = post(&app, &app.bob, &shared, &first, None);
        writer_waits(&url).await;
        let before = format!("round {rounds}: bob before");
        let bad = format!("round {rounds}: {REFUSED}");
        let after = format!("round {rounds}: bob after");
        let mut posts = vec![
            post(&app, &app.bob, &shared, &before, None),
            post(&app, &app.alice, &shared, &bad, None),
            post(&app, &app.bob, &shared, &after, None),
        ];
        for (agent, thread) in &others {
            posts.push(post(&app, agent, thread, &format!("round {rounds}"), None));
        }
        drop(release);
        let res = blocker.await.unwrap();
        assert_eq!(res.status(), 201, "the post before the batch");
        let mut answers = Vec::new();
        for p in posts {
            answers.push(p.await.unwrap());
        }
        let bad_res = answers.remove(1);
        for res in answers {
            let (status, body) = json_of(res).await;
            assert_eq!(status, 201, "another client's post in the batch: {body}");
        }
        let body = assert_error(bad_res, 500, "INTERNAL").await;
        let text = body.to_string();
        assert!(
            !text.contains("trigger") && !text.contains("postgres"),
            "no internals in the body: {text}"
        );
        // Stored in the order committed: the blocker first; the others in
        // their batch's order, which their arrival decided.
        expected_shared.push(first);
        expected_shared.extend([before, after]);
        for (i, _) in others.iter().enumerate() {
            expected_other[i].push(format!("round {rounds}"));
        }
    }
    let shared_threads = pg::scalar(&url, "SELECT last_value FROM test_refused_threads");
    eprintln!("the refused post's batch named {shared_threads} threads (round {rounds})");
    assert!(
        shared_threads >= 2,
        "the refused post never shared its batch ({rounds} rounds)"
    );

    // Nothing of the refused post is stored, its thread's seqs have no gap,
    // and every other post is there.
    let refused = format!("SELECT count(*) FROM messages WHERE content LIKE '%{REFUSED}%'");
    assert_eq!(app.db_count(&refused), 0);
    let seqs = app.stored_seqs(&shared);
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "gap-free"
    );
    let mut stored = stored_contents(&url, &shared);
    let mut expected = expected_shared.clone();
    stored.sort();
    expected.sort();
    assert_eq!(stored, expected);
    for (i, (_, thread)) in others.iter().enumerate() {
        assert_eq!(stored_contents(&url, thread), expected_other[i]);
    }
    // Each stored message has its event in the log, and the refused one none.
    let logged = app
        .read_log()
        .iter()
        .filter(|e| e.kind == threadline::events::Kind::ThreadMessage)
        .count() as i64;
    assert_eq!(logged, app.stored_messages());
    // The thread goes on from its last seq.
    let next = app.say(&app.alice, &shared, "after the refusal").await;
    assert_eq!(next["seq"], seqs.len() as i64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_run_again_after_a_refusal_keeps_its_idempotency_key() {
    let Some((app, url)) = app_with_trigger().await else {
        return;
    };
    let shared = app.thread_between(&app.alice, &app.bob).await;
    let other = app.new_agent("other");
    let thread = app.thread_between(&other, &app.alice).await;
    let mut rounds = 0;
    let mut keyed: Vec<(Value, String)> = Vec::new();
    while rounds < 10 && pg::scalar(&url, "SELECT last_value FROM test_refused_threads") < 2 {
        rounds += 1;
        warm(&app, 3).await;
        let release = lock_log_head(&url);
        let blocker = post(&app, &app.bob, &shared, "first", None);
        writer_waits(&url).await;
        let key = format!("key-{rounds}");
        let bad = post(&app, &app.alice, &shared, REFUSED, None);
        let good = post(&app, &other, &thread, "keyed", Some(&key));
        drop(release);
        assert_eq!(blocker.await.unwrap().status(), 201);
        assert_error(bad.await.unwrap(), 500, "INTERNAL").await;
        let (status, body) = json_of(good.await.unwrap()).await;
        assert_eq!(status, 201, "{body}");
        keyed.push((body, key));
    }
    let shared_threads = pg::scalar(&url, "SELECT last_value FROM test_refused_threads");
    eprintln!("the refused post's batch named {shared_threads} threads (round {rounds})");
    assert!(
        shared_threads >= 2,
        "never shared its batch ({rounds} rounds)"
    );
    let stored = app.stored_messages();
    for (original, key) in keyed {
        let res = app
            .client
            .post(app.url("/api/acsp/thread/message"))
            .bearer_auth(&other.key)
            .header("Idempotency-Key", &key)
            .json(&json!({"aid": other.aid, "thread_id": thread, "content": "keyed"}))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(res).await;
        assert_eq!(status, 201);
        assert_eq!(body, original, "the retry returns the original message");
    }
    assert_eq!(app.stored_messages(), stored, "a retry stores nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_connection_lost_at_commit_is_answered_503_and_the_writer_goes_on() {
    let Some((app, url)) = app_with_trigger().await else {
        return;
    };
    let shared = app.thread_between(&app.alice, &app.bob).await;
    warm(&app, 5).await;
    let release = lock_log_head(&url);
    let blocker = post(&app, &app.bob, &shared, "first", None);
    writer_waits(&url).await;
    let fatal = post(&app, &app.alice, &shared, FATAL, None);
    let others: Vec<_> = (0..3)
        .map(|i| post(&app, &app.bob, &shared, &format!("other {i}"), None))
        .collect();
    drop(release);
    // Every answer comes, without the writer looping on the lost batch.
    let answered = |p: tokio::task::JoinHandle<reqwest::Response>| async move {
        tokio::time::timeout(WAIT, p)
            .await
            .expect("answered, without a hang")
            .unwrap()
    };
    assert_eq!(answered(blocker).await.status(), 201);
    assert_error(answered(fatal).await, 503, "UNAVAILABLE").await;
    let mut committed = 1;
    for p in others {
        // Its batch's fate: lost with the connection (503), or committed
        // in a batch of its own (201); never anything else.
        let status = answered(p).await.status().as_u16();
        assert!(status == 201 || status == 503, "status {status}");
        committed += i64::from(status == 201);
    }
    let dropped = format!("SELECT count(*) FROM messages WHERE content = '{FATAL}'");
    assert_eq!(app.db_count(&dropped), 0);
    assert_eq!(
        app.stored_seqs(&shared),
        (1..=committed).collect::<Vec<_>>()
    );
    // The writer connects again: the next post is committed.
    let next = app
        .say(&app.bob, &shared, "after the lost connection")
        .await;
    assert_eq!(next["seq"], committed + 1);
}
