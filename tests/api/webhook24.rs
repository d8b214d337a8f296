//! Round 24's webhook work, with a real receiver on port 0 whose every
//! answer the test gives: a rotated secret keeps signing beside the new one
//! for a window (both `v1,` signatures, the new first), over the API and
//! the command line; `keep_previous_hours` refused when it is not an
//! integer from 0 to 168, changing nothing; and an endpoint's failure count
//! belonging to the event it was counted on (an event after one whose
//! thread was deleted mid-retry starts afresh). On the harness's backend:
//! SQLite, or PostgreSQL with `THREADLINE_TEST_DATABASE_URL`.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{json, Value};
use threadline::webhooks::sign;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::helpers::process::run_cli;
use crate::helpers::webhook::read_request;
use crate::helpers::{assert_error, json_of, spawn_app_with, TestApp, POLL, WAIT};

/// One request the receiver read.
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    json: Value,
}

impl Received {
    /// The `v1,` signatures of `webhook-signature`, in order.
    fn signatures(&self) -> Vec<&str> {
        self.headers["webhook-signature"].split(' ').collect()
    }

    /// Whether signature `i` (alone) verifies with `secret`.
    fn signature_verifies(&self, i: usize, secret: &str) -> bool {
        sign::verify(
            secret,
            &self.headers["webhook-id"],
            self.headers["webhook-timestamp"].parse().unwrap(),
            &self.body,
            self.signatures()[i],
        )
    }

    /// Which of `secrets` sign this delivery, signature by signature: for
    /// each signature, the index of the one secret it verifies with (a
    /// signature made with none of them, or with two, fails the test).
    fn signed_by(&self, secrets: &[&str]) -> Vec<usize> {
        (0..self.signatures().len())
            .map(|i| {
                let by: Vec<usize> = (0..secrets.len())
                    .filter(|&s| self.signature_verifies(i, secrets[s]))
                    .collect();
                assert_eq!(by.len(), 1, "signature {i} verifies with {by:?}");
                by[0]
            })
            .collect()
    }
}

/// A request held until the test answers it (with a status code).
struct Held {
    received: Received,
    answer: oneshot::Sender<u16>,
}

impl Held {
    fn answer(self, status: u16) -> Received {
        self.answer.send(status).expect("the connection is open");
        self.received
    }
}

/// A receiver on port 0 that hands every request to the test, which
/// answers it.
struct Receiver {
    url: String,
    rx: mpsc::UnboundedReceiver<Held>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut conn = BufReader::new(conn);
                    while let Some((_, headers, body)) = read_request(&mut conn).await {
                        let json = serde_json::from_slice(&body).expect("a JSON body");
                        let (answer, given) = oneshot::channel();
                        let received = Received {
                            headers,
                            body,
                            json,
                        };
                        if tx.send(Held { received, answer }).is_err() {
                            return;
                        }
                        let Ok(status) = given.await else { return };
                        let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                        if conn.get_mut().write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { url, rx }
    }

    /// The next request, within `WAIT`, not answered yet.
    async fn held(&mut self) -> Held {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("timed out waiting for a delivery")
            .expect("receiver running")
    }

    /// The next request, answered `status`.
    async fn next(&mut self, status: u16) -> Received {
        self.held().await.answer(status)
    }
}

/// A server with no rate limit, private targets allowed and one-second
/// retries (`retries` of them).
async fn app(retries: usize) -> TestApp {
    spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.allow_private_webhooks = true;
        c.webhook_retry_schedule = vec![1; retries];
    })
    .await
}

/// An endpoint for `thread.message` at `url`: (id, secret).
async fn register(app: &TestApp, url: &str) -> (String, String) {
    let res = app
        .post_json(
            "/api/acsp/webhooks",
            &app.key,
            &json!({"url": url, "events": ["thread.message"]}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    (
        body["webhook"]["id"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

/// `POST …/rotate` with `body` (none: no body at all); the answer.
async fn rotate_res(app: &TestApp, id: &str, body: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(&format!("/api/acsp/webhooks/{id}/rotate")))
        .bearer_auth(&app.key);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    req.send().await.unwrap()
}

/// Rotates with `body`; returns the new secret and the endpoint answered,
/// checking the answer shows no secret but the new one.
async fn rotate(app: &TestApp, id: &str, body: Option<&str>, old: &[&str]) -> (String, Value) {
    let res = rotate_res(app, id, body).await;
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    for secret in old {
        assert!(
            !text.contains(secret),
            "an old secret in the answer: {text}"
        );
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(body["webhook"].get("previous_secret").is_none(), "{body}");
    assert!(body["webhook"].get("secret").is_none(), "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    (secret, body["webhook"].clone())
}

/// Asserts `at` (RFC 3339) is `hours` from now, give or take a minute.
fn hours_from_now(at: &Value, hours: i64) {
    let at = chrono::DateTime::parse_from_rfc3339(at.as_str().expect("a time")).unwrap();
    let want = chrono::Utc::now() + chrono::Duration::hours(hours);
    let off = (at.with_timezone(&chrono::Utc) - want).num_seconds().abs();
    assert!(off < 60, "{at} is not {hours} h from now ({off} s off)");
}

/// Posts a message in `thread`; the delivery of it, answered 200.
async fn delivered(app: &TestApp, rx: &mut Receiver, thread: &str, content: &str) -> Received {
    let message = app.say(&app.alice, thread, content).await;
    let d = rx.next(200).await;
    assert_eq!(d.json["id"], message["id"], "{}", d.json);
    d
}

/// The endpoint as the account's list shows it.
async fn listed(app: &TestApp) -> (String, Value) {
    let res = app.get("/api/acsp/webhooks", &app.key).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    (text, body["webhooks"][0].clone())
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_new_one_new_first_until_the_next_rotation() {
    let app = app(3).await;
    let mut rx = Receiver::start().await;
    let (id, s1) = register(&app, &rx.url).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let d = delivered(&app, &mut rx, &thread, "before").await;
    assert_eq!(d.signed_by(&[&s1]), [0], "one signature before a rotation");

    // No body: the default window, 24 hours, shown without the secret.
    let (s2, endpoint) = rotate(&app, &id, None, &[&s1]).await;
    hours_from_now(&endpoint["previous_secret_expires_at"], 24);
    let (text, shown) = listed(&app).await;
    assert_eq!(shown, endpoint);
    assert!(!text.contains(&s1) && !text.contains(&s2), "{text}");
    let d = delivered(&app, &mut rx, &thread, "in the window").await;
    assert_eq!(d.signed_by(&[&s1, &s2]), [1, 0], "the new one first");

    // Again within the window: the secret just replaced signs, not s1.
    let (s3, endpoint) = rotate(
        &app,
        &id,
        Some(r#"{"keep_previous_hours": 2}"#),
        &[&s1, &s2],
    )
    .await;
    hours_from_now(&endpoint["previous_secret_expires_at"], 2);
    let d = delivered(&app, &mut rx, &thread, "rotated twice").await;
    assert_eq!(d.signed_by(&[&s1, &s2, &s3]), [2, 1]);

    // 0: only the new secret signs, and the previous one is not kept.
    let (s4, endpoint) = rotate(
        &app,
        &id,
        Some(r#"{"keep_previous_hours": 0}"#),
        &[&s1, &s2, &s3],
    )
    .await;
    assert!(
        endpoint["previous_secret_expires_at"].is_null(),
        "{endpoint}"
    );
    assert_eq!(
        app.db_count("SELECT count(*) FROM webhooks WHERE previous_secret IS NULL"),
        1
    );
    let d = delivered(&app, &mut rx, &thread, "no window").await;
    assert_eq!(d.signed_by(&[&s1, &s2, &s3, &s4]), [3]);
}

#[tokio::test]
async fn a_delivery_failed_before_a_rotation_is_retried_with_the_old_signature_too() {
    let app = app(3).await;
    let mut rx = Receiver::start().await;
    let (id, old) = register(&app, &rx.url).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let message = app.say(&app.alice, &thread, "retried").await;
    let first = rx.next(503).await;
    assert_eq!(first.signed_by(&[&old]), [0]);
    // Rotated while the event waits for its retry: a receiver still on the
    // old secret takes the retry, and one given the new secret does too.
    let (new, _) = rotate(&app, &id, None, &[&old]).await;
    let retry = rx.next(200).await;
    assert_eq!(retry.json["id"], message["id"]);
    assert_eq!(retry.signed_by(&[&old, &new]), [1, 0]);
}

#[tokio::test]
async fn after_the_window_only_the_new_secret_signs_and_the_old_one_is_forgotten() {
    let app = app(3).await;
    let mut rx = Receiver::start().await;
    let (id, old) = register(&app, &rx.url).await;
    let (new, endpoint) = rotate(&app, &id, Some(r#"{"keep_previous_hours": 1}"#), &[&old]).await;
    hours_from_now(&endpoint["previous_secret_expires_at"], 1);
    // The hour has passed (as the database tells it).
    app.db_exec("UPDATE webhooks SET previous_secret_expires_at = '2020-01-01T00:00:00.000Z'");
    let (_, shown) = listed(&app).await;
    assert!(shown["previous_secret_expires_at"].is_null(), "{shown}");
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let d = delivered(&app, &mut rx, &thread, "after the window").await;
    assert_eq!(d.signed_by(&[&old, &new]), [1], "the new secret only");
    // The running server forgets the expired secret (its roll call).
    let deadline = Instant::now() + WAIT;
    while app.db_count("SELECT count(*) FROM webhooks WHERE previous_secret IS NOT NULL") != 0 {
        assert!(Instant::now() < deadline, "the old secret is still stored");
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(
        app.db_count("SELECT count(*) FROM webhooks WHERE previous_secret_expires_at IS NULL"),
        1
    );
}

#[tokio::test]
async fn a_bad_keep_previous_hours_is_422_naming_it_and_changes_nothing() {
    let app = app(3).await;
    let mut rx = Receiver::start().await;
    let (id, secret) = register(&app, &rx.url).await;
    let before = app.db_text("SELECT secret || ' ' || updated_at FROM webhooks");
    let on_the_field = [
        "-1",
        "169",
        "100000000000",
        "\"24\"",
        "1.5",
        "true",
        "[24]",
        "{\"hours\": 1}",
    ];
    for value in on_the_field {
        let body = format!(r#"{{"keep_previous_hours": {value}}}"#);
        let res = rotate_res(&app, &id, Some(&body)).await;
        let err = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(
            err["error"]["field"], "keep_previous_hours",
            "{value}: {err}"
        );
        let message = err["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("keep_previous_hours"),
            "{value}: {message}"
        );
    }
    // A body that is no object is refused as a whole.
    for body in ["[1]", "24", "\"x\"", "{"] {
        let res = rotate_res(&app, &id, Some(body)).await;
        assert_error(res, 422, "VALIDATION_ERROR").await;
    }
    // Nothing changed: the secret, the row, and what signs the next delivery.
    assert_eq!(
        app.db_text("SELECT secret || ' ' || updated_at FROM webhooks"),
        before
    );
    assert_eq!(
        app.db_count("SELECT count(*) FROM webhooks WHERE previous_secret IS NULL"),
        1
    );
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let d = delivered(&app, &mut rx, &thread, "unchanged").await;
    assert_eq!(d.signed_by(&[&secret]), [0]);
    // The limits themselves are taken.
    for hours in [0, 168] {
        let body = format!(r#"{{"keep_previous_hours": {hours}}}"#);
        assert_eq!(rotate_res(&app, &id, Some(&body)).await.status(), 200);
    }
}

#[tokio::test]
async fn webhook_rotate_on_the_command_line_keeps_the_previous_secret_as_the_api_does() {
    let app = app(3).await;
    let mut rx = Receiver::start().await;
    let (id, s1) = register(&app, &rx.url).await;
    let db_args = app.db_args();
    let rotate = |extra: &[&str]| {
        let mut args = vec![
            "webhook",
            "rotate",
            "--user",
            app.user_id.as_str(),
            id.as_str(),
        ];
        args.extend_from_slice(extra);
        args.extend(db_args.iter().map(String::as_str));
        run_cli(&args)
    };
    let out = rotate(&[]);
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s2 = printed["secret"].as_str().unwrap().to_owned();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&s1));
    hours_from_now(&printed["webhook"]["previous_secret_expires_at"], 24);
    assert_eq!(listed(&app).await.1, printed["webhook"]);
    // The running server signs with both (it reads the row per delivery).
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let d = delivered(&app, &mut rx, &thread, "rotated elsewhere").await;
    assert_eq!(d.signed_by(&[&s1, &s2]), [1, 0]);

    // Out of range or not a number: clap's usage error (exit 2), naming the
    // option, and nothing changed.
    let before = app.db_text("SELECT secret || ' ' || updated_at FROM webhooks");
    for bad in ["169", "-1", "1.5", "day"] {
        let out = rotate(&["--keep-previous-hours", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--keep-previous-hours"), "{bad}: {stderr}");
    }
    assert_eq!(
        app.db_text("SELECT secret || ' ' || updated_at FROM webhooks"),
        before
    );

    let out = rotate(&["--keep-previous-hours", "0"]);
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s3 = printed["secret"].as_str().unwrap().to_owned();
    assert!(printed["webhook"]["previous_secret_expires_at"].is_null());
    let d = delivered(&app, &mut rx, &thread, "no window").await;
    assert_eq!(d.signed_by(&[&s1, &s2, &s3]), [2]);
}

/// Noticed in round 23: the failure count is the endpoint's, so when the
/// event being retried left the log (its thread deleted), the next event
/// inherited the count: its first try was numbered after the other's and
/// it had the rest of the schedule only (here none: it was disabled at
/// its first failure). Now it starts with no failures and the whole
/// schedule.
#[tokio::test]
async fn an_event_after_one_whose_thread_was_deleted_mid_retry_starts_afresh() {
    let app = app(2).await;
    let mut rx = Receiver::start().await;
    let (id, _) = register(&app, &rx.url).await;
    let doomed = app.thread_between(&app.alice, &app.bob).await;
    let gone = app.say(&app.alice, &doomed, "doomed").await;
    assert_eq!(rx.next(503).await.json["id"], gone["id"]);
    let retry = rx.held().await;
    assert_eq!(retry.received.json["id"], gone["id"]);
    // While its second attempt is under way the thread is deleted (by the
    // command line, in-process) and another thread gets a message.
    threadline::cli::thread_delete(&app.db, &doomed).expect("deleted");
    let other = app.thread_between(&app.alice, &app.bob).await;
    let next = app.say(&app.alice, &other, "next").await;
    retry.answer(503);
    // Two failures counted, on the deleted event.
    let deadline = Instant::now() + WAIT;
    while app.db_count("SELECT failures FROM webhooks") != 2 {
        assert!(Instant::now() < deadline, "the second failure not counted");
        tokio::time::sleep(POLL).await;
    }
    // The next event: its first failure is its first, with a retry after it.
    assert_eq!(rx.next(503).await.json["id"], next["id"]);
    assert_eq!(rx.next(200).await.json["id"], next["id"]);
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let (status, body) = json_of(
            app.get(&format!("/api/acsp/webhooks/{id}/attempts"), &app.key)
                .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if body["attempts"].as_array().unwrap().len() == 4 {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(POLL).await;
    };
    let tried: Vec<(String, i64, Option<i64>)> = body["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["event_id"].as_str().unwrap().to_owned(),
                a["attempt"].as_i64().unwrap(),
                a["status"].as_i64(),
            )
        })
        .collect();
    let (gone, next) = (
        gone["id"].as_str().unwrap().to_owned(),
        next["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        tried,
        [
            (next.clone(), 2, Some(200)),
            (next, 1, Some(503)),
            (gone.clone(), 2, Some(503)),
            (gone, 1, Some(503)),
        ]
    );
    assert_eq!(body["webhook"]["status"], "active", "{body}");
    assert_eq!(body["webhook"]["failures"], 0, "{body}");
    assert_eq!(
        app.db_count("SELECT count(*) FROM webhooks WHERE failing_position IS NULL"),
        1
    );
}

/// The newest attempt's HTTP status once `n` attempts are recorded.
async fn newest_status_after(app: &TestApp, id: &str, n: usize) -> Option<i64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = json_of(
            app.get(&format!("/api/acsp/webhooks/{id}/attempts"), &app.key)
                .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let attempts = body["attempts"].as_array().unwrap();
        if attempts.len() >= n {
            return attempts[0]["status"].as_i64();
        }
        assert!(
            Instant::now() < deadline,
            "{n} attempts never recorded: {body}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `examples/webhook_receiver.rs`, left on the secret it was given, keeps
/// taking the deliveries after a rotation, for the window (the signature it
/// can check is the second one), and refuses them once a rotation keeps
/// no previous secret: what an operator rolling the new secret out sees.
#[tokio::test]
async fn the_example_receiver_left_on_the_old_secret_takes_deliveries_in_the_window() {
    let Some(bin) = crate::tidy18::webhook_receiver() else {
        eprintln!("skipped: examples/webhook_receiver is not built (run the whole `cargo test`)");
        return;
    };
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.allow_private_webhooks = true;
        // A refusal is not retried within the test.
        c.webhook_retry_schedule = vec![600];
    })
    .await;
    // The endpoint's secret comes with the endpoint, and the example takes
    // it at start: a port picked by the system, freed, then given to both.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (id, old) = register(&app, &format!("http://127.0.0.1:{port}/hook")).await;
    let bind = format!("127.0.0.1:{port}");
    let mut example = crate::tidy18::Receiver::spawn(&bin, &["--bind", &bind], Some(&old));
    assert_eq!(example.port().await, port);
    let thread = app.thread_between(&app.alice, &app.bob).await;

    app.say(&app.alice, &thread, "before the rotation").await;
    assert_eq!(newest_status_after(&app, &id, 1).await, Some(204));
    example.printed("before the rotation").await;

    rotate(&app, &id, None, &[&old]).await;
    app.say(&app.alice, &thread, "in the window").await;
    assert_eq!(newest_status_after(&app, &id, 2).await, Some(204));
    example.printed("in the window").await;

    rotate(&app, &id, Some(r#"{"keep_previous_hours": 0}"#), &[&old]).await;
    app.say(&app.alice, &thread, "after the window").await;
    assert_eq!(newest_status_after(&app, &id, 3).await, Some(401));
    assert!(!example.output("stdout").contains("after the window"));
}
