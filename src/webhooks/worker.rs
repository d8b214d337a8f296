//! One endpoint's task: read what it has not handled from the log, deliver
//! it one event at a time, in order, and move its cursor after each 2xx; on
//! a failure, wait out the schedule, and disable the endpoint once the
//! schedule is spent. Its state (cursor, failure count, time of the next
//! try) lives in the database, so a restarted server carries on where this
//! one stopped.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;

use super::{sign, target, Dispatcher, Wake, DELIVERY_TIMEOUT};
use crate::domain;
use crate::error::ApiError;
use crate::events::Event;
use crate::store::db::webhooks::{self, Attempt, Endpoint};

/// Log positions looked at per look (most may be other accounts' events,
/// which cost little: see `store::webhooks::pending`).
const SCAN: i64 = 5000;
/// Events read past the stored cursor with nothing to deliver are
/// remembered in memory; the cursor is written only once it lags this
/// many positions or [`SAVE_EVERY`], so a busy log of other accounts'
/// events does not cost every endpoint a write per commit. (After a crash
/// the task reads those events again and skips them again.)
const SAVE_LAG: i64 = 1000;
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// How long an up-to-date task waits after a commit before reading the
/// log (measured: without it, ten idle endpoints cost posting 40% of its
/// throughput on two cores, each reading the log after every commit).
const COALESCE: Duration = Duration::from_millis(100);

/// How long a node's delivery lease on an endpoint lasts (several nodes on
/// PostgreSQL): renewed before each event, so it outlasts one delivery
/// (at most `DELIVERY_TIMEOUT`) with room; a dead node's lease passes to
/// another within this.
const LEASE_SECS: i64 = 30;
/// How often a node without the lease looks whether it is free.
const LEASE_RETRY: Duration = Duration::from_secs(1);

/// How far a task has read beyond its stored cursor.
struct Scan {
    /// Every position up to this is handled (delivered or not its own).
    upto: i64,
    saved_at: Instant,
}

/// The body of a delivery.
#[derive(Serialize)]
struct Body<'a> {
    /// The event id: the same on every retry (receivers de-duplicate on it).
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    created_at: &'a str,
    position: Option<i64>,
    /// The object the API returns (message, thread, status change), or a
    /// deleted thread's `{thread_id, creator_aid, target_aid, deleted_at, reason}`.
    data: &'a RawValue,
}

/// What a task waits for next.
enum Next {
    /// Go round again at once.
    Again,
    /// Until the endpoint changes (paused, disabled, no cursor).
    Change,
    /// Until a commit or a change (nothing left to deliver).
    Commit,
    /// Until then, or a change (the next retry).
    Until(tokio::time::Instant),
    /// The endpoint is gone, or the server is stopping.
    Stop,
}

/// Runs the task of endpoint `public_id` until it is deleted or the server
/// stops.
pub(super) async fn run(d: Arc<Dispatcher>, public_id: String, wake: Arc<Wake>) {
    let mut commits = d.commits.clone();
    let mut shutdown = d.shutdown.clone();
    let mut scan = Scan {
        upto: 0,
        saved_at: Instant::now(),
    };
    // A database that stays away is logged once, not at every retry (a
    // line a second per endpoint while PostgreSQL restarted).
    let mut failing = false;
    loop {
        // Taken before reading, so a commit or a change after the read
        // still wakes the wait below.
        commits.borrow_and_update();
        wake.dirty.store(false, Ordering::SeqCst);
        let next = match step(&d, &public_id, &wake, &mut scan).await {
            Ok(next) => {
                if std::mem::take(&mut failing) {
                    log::warn!("webhook {public_id}: working again");
                }
                next
            }
            Err(e) => {
                if !failing {
                    log::warn!("webhook {public_id}: {e} (retrying every second)");
                }
                failing = matches!(e, ApiError::Unavailable);
                Next::Until(tokio::time::Instant::now() + Duration::from_secs(1))
            }
        };
        let stop = match next {
            Next::Again => false,
            Next::Stop => true,
            Next::Change => tokio::select! {
                () = wake.notify.notified() => false,
                _ = shutdown.wait_for(|s| *s) => true,
            },
            Next::Commit => {
                let committed = tokio::select! {
                    () = wake.notify.notified() => Some(false),
                    r = commits.changed() => r.is_ok().then_some(true),
                    _ = shutdown.wait_for(|s| *s) => None,
                };
                if committed == Some(true) {
                    // Let commits gather: under load one read then covers
                    // many of them, instead of every endpoint reading the
                    // log after every commit.
                    tokio::time::sleep(COALESCE).await;
                }
                committed.is_none()
            }
            Next::Until(at) => tokio::select! {
                () = wake.notify.notified() => false,
                () = tokio::time::sleep_until(at) => false,
                _ = shutdown.wait_for(|s| *s) => true,
            },
        };
        if stop || *shutdown.borrow() {
            break;
        }
    }
    d.ended(&public_id);
}

/// One look: deliver what is due, say what to wait for.
async fn step(
    d: &Dispatcher,
    public_id: &str,
    wake: &Wake,
    scan: &mut Scan,
) -> crate::error::ApiResult<Next> {
    let id = public_id.to_owned();
    let Some(e) = d
        .store
        .read(move |c| webhooks::by_public_id(c, &id))
        .await?
    else {
        return Ok(Next::Stop);
    };
    if e.status != "active" {
        return Ok(Next::Change);
    }
    if let Some(at) = e.next_attempt_at.as_deref().and_then(instant_of) {
        if at > tokio::time::Instant::now() {
            return Ok(Next::Until(at));
        }
    }
    if !holds_lease(d, &e).await? {
        return Ok(Next::Until(tokio::time::Instant::now() + LEASE_RETRY));
    }
    let endpoint = e.clone();
    let scanned = scan.upto;
    let read = d
        .store
        .read(move |c| {
            let Some(cursor) = webhooks::cursor(c, &endpoint)? else {
                return Ok(None);
            };
            webhooks::pending(c, &endpoint, cursor.max(scanned), SCAN).map(|p| Some((cursor, p)))
        })
        .await?;
    let Some((cursor, (events, upto))) = read else {
        return Ok(Next::Change);
    };
    let e = Arc::new(e);
    for ev in events {
        if wake.dirty.load(Ordering::SeqCst) || *d.shutdown.borrow() {
            // Paused, deleted or rotated meanwhile: look again first.
            return Ok(Next::Again);
        }
        if !holds_lease(d, &e).await? {
            return Ok(Next::Again);
        }
        let attempt = deliver(d, &e, &ev).await;
        let delivered = attempt.error.is_none();
        // A failure that outlasted this node's lease (cut off from the
        // database meanwhile, another node took the endpoint over and
        // delivered the event again) is not this node's to count: it would
        // pause the holder's deliveries for a retry delay.
        if !delivered && !holds_lease(d, &e).await? {
            return Ok(Next::Again);
        }
        let position = ev.position.unwrap_or(cursor);
        // The failures counted on an event that has left the log since (its
        // thread deleted) are not this one's: it starts afresh.
        let before = e.failures_at(ev.position);
        let failures = before + 1;
        let (next_at, reason) = if delivered {
            (None, String::new())
        } else {
            let delay = d.settings.schedule.get(before as usize).copied();
            let next_at = delay.map(|delay| {
                domain::format_time(
                    chrono::Utc::now()
                        + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::days(1)),
                )
            });
            let reason = format!(
                "disabled after {failures} failed attempts at event {}; last: {}",
                ev.id,
                attempt.error.as_deref().unwrap_or_default()
            );
            (next_at, reason)
        };
        let endpoint = e.clone();
        d.store
            .write(move |ctx| {
                let attempt = Attempt {
                    attempt: failures,
                    ..attempt
                };
                webhooks::record_attempt(ctx.conn, &endpoint, &attempt)?;
                if delivered {
                    webhooks::advance(ctx.conn, &endpoint, position)
                } else {
                    webhooks::failed(
                        ctx.conn,
                        &endpoint,
                        position,
                        failures,
                        next_at.as_deref(),
                        &reason,
                    )
                }
            })
            .await?;
        if !delivered {
            // The endpoint row changed (failures, next try or disabled).
            return Ok(Next::Again);
        }
        if e.failures > 0 {
            // Its failure count is reset: re-read it before the next event.
            return Ok(Next::Again);
        }
    }
    if upto > cursor.max(scan.upto) {
        // Everything read is handled: the events delivered and the other
        // accounts' events between them.
        scan.upto = upto;
        if upto - cursor >= SAVE_LAG || scan.saved_at.elapsed() >= SAVE_EVERY {
            let endpoint = e.clone();
            d.store
                .write(move |ctx| webhooks::advance(ctx.conn, &endpoint, upto))
                .await?;
            scan.saved_at = Instant::now();
        }
        return Ok(Next::Again);
    }
    Ok(Next::Commit)
}

/// Takes or renews this node's lease on the endpoint: whether to deliver.
async fn holds_lease(d: &Dispatcher, e: &Endpoint) -> crate::error::ApiResult<bool> {
    if !d.store.is_shared() {
        return Ok(true);
    }
    let (endpoint, node) = (e.clone(), d.node.clone());
    d.store
        .write(move |ctx| webhooks::lease(ctx.conn, &endpoint, &node, LEASE_SECS))
        .await
}

/// When an RFC 3339 time falls, on the runtime's clock.
fn instant_of(at: &str) -> Option<tokio::time::Instant> {
    let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    let wait = (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    Some(tokio::time::Instant::now() + wait)
}

/// POSTs one event to the endpoint and reports how it went (`error` is
/// `None` for a 2xx within the timeout).
async fn deliver(d: &Dispatcher, e: &Endpoint, ev: &Event) -> Attempt {
    let body = serde_json::to_vec(&Body {
        id: &ev.id,
        kind: ev.kind.as_str(),
        created_at: &ev.created_at,
        position: ev.position,
        data: &ev.data,
    })
    .expect("expect: an event of plain JSON serializes");
    // The account's share first: while its receivers hold all of it, its
    // next delivery waits here, not on a slot of the global pool.
    let _account = d.account_permits.acquire(e.account_id).await;
    let _permit = d.permits.acquire().await;
    // Stamped and signed once it has a slot, not before it waited for one
    // (behind silent receivers, for many times their 10 s): receivers
    // refuse a stamp more than 5 minutes off as a replay.
    let now = chrono::Utc::now();
    let timestamp = now.timestamp();
    // Within a rotation's window the secret it replaced signs too, after
    // the new one (Standard Webhooks: space-separated signatures).
    let mut signature = sign::signature(&e.secret, &ev.id, timestamp, &body);
    if let Some(previous) = e.previous_secret_at(&domain::format_time(now)) {
        signature.push(' ');
        signature.push_str(&sign::signature(previous, &ev.id, timestamp, &body));
    }
    let mut attempt = Attempt {
        event_id: ev.id.clone(),
        position: ev.position.unwrap_or(0),
        attempt: 0,
        status: None,
        latency_ms: 0,
        error: None,
        created_at: domain::now(),
    };
    let started = Instant::now();
    let result = post(d, e, ev, timestamp, signature, body).await;
    attempt.latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    match result {
        Ok(status) => {
            attempt.status = Some(i64::from(status));
            if !(200..300).contains(&status) {
                attempt.error = Some(format!("answered {status}"));
            }
        }
        Err(error) => attempt.error = Some(error),
    }
    attempt
}

async fn post(
    d: &Dispatcher,
    e: &Endpoint,
    ev: &Event,
    timestamp: i64,
    signature: String,
    body: Vec<u8>,
) -> Result<u16, String> {
    let url = target::parse_stored(&e.url).map_err(|_| "the url is no longer valid".to_owned())?;
    // A host given as an address never reaches the resolver: check it here.
    let literal = url.host_str().and_then(target::literal);
    if !d.settings.allow_private && literal.is_some_and(target::is_private) {
        return Err(target::PRIVATE_REFUSED.to_owned());
    }
    let sent = d
        .client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", ev.id.as_str())
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .timeout(DELIVERY_TIMEOUT)
        .send()
        .await;
    match sent {
        Ok(res) => Ok(res.status().as_u16()),
        Err(err) => Err(describe(&err)),
    }
}

/// The TLS failure behind a request error, if that is what it was (an
/// untrusted or expired certificate, a name mismatch). The TLS library's
/// error sits inside I/O errors, whose `source()` skips what they wrap, so
/// those are opened with `get_ref()`.
fn tls_error(err: &reqwest::Error) -> Option<&rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        source = match s.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|e| e as _),
            None => s.source(),
        };
    }
    None
}

/// A short, fixed description of a failed request (no internals of ours).
fn describe(err: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(s) = source {
        if s.is::<target::PrivateAddress>() {
            return target::PRIVATE_REFUSED.to_owned();
        }
        source = s.source();
    }
    if let Some(tls) = tls_error(err) {
        return format!("TLS handshake failed: {tls}");
    }
    if err.is_timeout() {
        format!("no answer within {} s", DELIVERY_TIMEOUT.as_secs())
    } else if err.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    }
}
