//! `GET /v1/sse`: the WebSocket's channels as server-sent events, for
//! clients that can only read a plain HTTP response (`curl -N`, EventSource).
//!
//! Opened with the same single-use grant as `/v1/ws` (`?c=`), or with the
//! Bearer key and `thread_id=` or `aid=` under the same visibility rules.
//! The first event is the socket's `connection.ready` (with the database's
//! generation), without an `id:`, before any replay or `reset`.
//! Each logged event goes out with `id: <log position>`, so a client that
//! reconnects with `Last-Event-ID` (or `?after_position=`) gets what it
//! missed from the log, then the live stream. No gap and no duplicate at the
//! seam: the stream joins the channel first, then reads the log to its end,
//! and skips live events at or below the last position it read. Signals
//! (typing) have no position and go out without an `id:`; a stream that
//! joins a turn-taking thread while its agent is typing is told so after
//! its replay, as a socket is. A resume from a
//! position the log no longer holds (pruned by retention) starts with an
//! `event: reset` naming the oldest position left, then replays from there;
//! one from beyond the log's newest position (another server's) starts with
//! an `event: reset` naming the newest, then sends every event that follows.
//! A stream whose thread is deleted (by `thread delete` or `prune`, in any
//! process) ends with an `event: closed` carrying the WebSocket's close code
//! and reason (`{"code":4004,"reason":"thread deleted"}`), after what was
//! queued before it; one whose login key is revoked, with
//! `{"code":4001,"reason":"login key revoked"}`.

use std::convert::Infallible;
use std::time::Duration;

use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::extract::{grant_refused, parse_int, Caller, Query, GRANT_REFUSED};
use super::state::resource;
use super::AppState;
use crate::access;
use crate::domain::{Aid, ThreadId};
use crate::error::{ApiError, ApiResult};
use crate::events::{Event, Kind};
use crate::realtime::body::payload_of;
use crate::realtime::revocation::KeyWatch;
use crate::realtime::{agent_channel, frame, session, thread_channel, Grant, Subscription};
use crate::store::db::events;
use crate::store::events::LogScope;
use crate::store::model::ThreadRecord;
use crate::store::Store;

/// Logged events read from the database per replay page (an event's frame
/// is up to some 45 KB: a message's 16 KiB of metadata and escaped content).
const REPLAY_PAGE: i64 = 100;
/// The type of a stream's first event, as of a socket's first frame.
const READY: &str = "connection.ready";
/// Chunks that may wait for the connection to take them.
const STREAM_DEPTH: usize = 8;
/// A chunk goes out once it holds this many bytes. With [`STREAM_DEPTH`],
/// what a stream holds for a client that stopped reading is bounded in
/// bytes (about 8 × 64 KiB, plus the page being sent), not in pages of
/// events: 64 pages of 500 once pinned 23 MB per stream of short messages,
/// for as long as the client kept the connection open.
const CHUNK_BYTES: usize = 64 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    // A stream opened with a key counts against the key's quota (each may
    // replay the log); one opened with a grant was counted when minted.
    cfg.service(resource("/v1/sse", Some(crate::ratelimit::Route::EventStream)).get(stream));
}

/// GET /v1/sse?c=GRANT | ?thread_id=… | ?aid=… [&after_position=P]
#[utoipa::path(
    get,
    path = "/v1/sse",
    operation_id = "event_stream",
    tag = "realtime",
    description = "Server-sent events: a channel's frames as `text/event-stream` (`id:` the log position). Give `c`, or a Bearer key with exactly one of `thread_id` or `aid`.",
    params(
        ("c" = Option<String>, Query, description = "A single-use grant, as for `/v1/ws`."),
        ("thread_id" = Option<String>, Query, format = "uuid", description = "A thread the key's account can see."),
        ("aid" = Option<String>, Query, pattern = "^[0-9a-f]{50}$", description = "An agent the key's account owns (its inbox)."),
        ("after_position" = Option<i64>, Query, minimum = 0, description = "Resume after this log position."),
        ("Last-Event-ID" = Option<i64>, Header, minimum = 0, description = "Resume after this log position (wins over `after_position`)."),
    ),
    responses(
        (status = 200, description = "The stream: first `event: connection.ready` (the socket's first frame, with the generation; no `id:`), then an `event: reset` when the resume position was pruned or is beyond the log, the replay and the live events.", content_type = "text/event-stream", body = String),
        (status = 401, description = "No key, or an unknown, used or expired grant.", body = crate::http::openapi::ErrorEnvelope),
        (status = 403, description = "`aid` is not one of the account's agents.", body = crate::http::openapi::ErrorEnvelope),
        (status = 404, description = "A thread the account cannot see.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security((), ("bearer" = []))
)]
pub async fn stream(state: web::Data<AppState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let q = Query::parse(&req)?;
    let after = resume_point(&req, &q)?;
    if req.method() == Method::HEAD {
        // The GET's checks and headers without its body, which would never
        // end: no subscription, no pump. HEAD is safe (RFC 9110 §9.2.1), so
        // a grant is looked at, not used up.
        match q.get("c") {
            Some(token) => grant_is_live(&state, token, &q)
                .await
                .map_err(|e| grant_refused(&req, e))?,
            None => drop(by_key(&state, &req, &q).await?),
        }
        return Ok(
            event_stream().streaming(futures_util::stream::empty::<Result<Bytes, Infallible>>())
        );
    }
    let (channel, thread, key_watch) = match q.get("c") {
        Some(token) => by_grant(&state, token, &q)
            .await
            .map_err(|e| grant_refused(&req, e))?,
        None => by_key(&state, &req, &q).await?,
    };
    let scope = scope_of(&channel)?;
    // Joined first, then read (as a socket does): a thread deleted before
    // this read is refused here, one deleted after it ends the stream
    // through the watcher (`realtime::revocation`).
    let (sub, joined) = match thread {
        Some((id, account_id)) => {
            let (sub, record) =
                session::join_thread(&state.hub, &state.store, &channel, id, account_id).await?;
            (sub, Some(record))
        }
        None => (state.hub.subscribe(&channel, None).await, None),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_DEPTH);
    let heartbeat = Duration::from_secs(state.config.sse_heartbeat_secs);
    let pump = Pump {
        tx,
        store: state.store.clone(),
        scope,
        channel,
        heartbeat,
        send_timeout: Duration::from_secs(state.config.ws_timeout_secs),
        shutdown: state.hub.shutdown_signal(),
        key: key_watch,
        joined,
    };
    actix_web::rt::spawn(pump.run(sub, after));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut response = event_stream().streaming(body);
    // A client that takes not one byte of the stream for this long is
    // dropped (reset): an event stream is not an upgrade, and without its
    // own write timeout one that stopped reading held its connection, the
    // stream's buffers and its subscription for as long as its TCP stack
    // kept acknowledging (vendor/actix-http/PATCHES.md).
    response
        .extensions_mut()
        .insert(actix_http::h1::StreamWriteTimeout(write_timeout(heartbeat)));
    Ok(response)
}

/// How long a stream may wait for a client that takes nothing: four
/// heartbeats (a minute by default). Only a client that takes not one byte
/// meets it: the wait starts again with every byte taken, and one that
/// reads is sent something at least every heartbeat.
fn write_timeout(heartbeat: Duration) -> Duration {
    heartbeat.saturating_mul(4)
}

/// The threads a channel's logged events belong to (a replay reads only
/// theirs).
fn scope_of(channel: &str) -> ApiResult<LogScope> {
    if let Some(id) = channel.strip_prefix(frame::THREAD_PREFIX) {
        return Ok(LogScope::Thread(id.to_owned()));
    }
    if let Some(aid) = channel.strip_prefix(frame::AGENT_PREFIX) {
        return Ok(LogScope::Agent(aid.to_owned()));
    }
    Err(ApiError::Internal(format!(
        "a stream of unknown channel {channel}"
    )))
}

/// The headers of a stream, the same for GET and HEAD.
fn event_stream() -> HttpResponseBuilder {
    let mut res = HttpResponse::Ok();
    res.content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Proxies that buffer responses (nginx) would hold events back.
        .insert_header(("X-Accel-Buffering", "no"));
    res
}

/// Where to resume: `Last-Event-ID` (what EventSource sends on reconnecting,
/// so it wins over the URL's `after_position`), else `after_position`.
/// Both are checked whichever wins: a malformed `after_position` is `422`
/// beside a `Last-Event-ID` too, and so is `Last-Event-ID` given twice
/// (which of two positions is meant is a guess, as for a query parameter
/// given twice). A position is read as the query's integers are, in plain
/// decimal (`+1` and `01` are `422`, as `after_position=+1` is); an empty
/// `Last-Event-ID` names none (the last event ID EventSource holds when it
/// sends no header), so `after_position`, if given, applies.
fn resume_point(req: &HttpRequest, q: &Query<'_>) -> ApiResult<Option<i64>> {
    let in_url = q.int("after_position", 0, i64::MAX, None)?;
    if req.headers().get_all("last-event-id").nth(1).is_some() {
        return Err(ApiError::field(
            "Last-Event-ID",
            "Last-Event-ID is given more than once",
        ));
    }
    let Some(value) = req.headers().get("last-event-id") else {
        return Ok(in_url);
    };
    let text = value.to_str().ok().map(str::trim);
    if text == Some("") {
        return Ok(in_url);
    }
    text.and_then(|t| parse_int(Some(t), "Last-Event-ID", 0, i64::MAX, None).ok())
        .flatten()
        .map(Some)
        .ok_or_else(|| {
            ApiError::field(
                "Last-Event-ID",
                format!(
                    "Last-Event-ID must be an event position (an integer from 0 to {}, \
                     in plain decimal)",
                    i64::MAX
                ),
            )
        })
}

/// A stream's channel and, for a thread's, the thread and the account that
/// must still see it once the stream has joined.
type Opened = (String, Option<(ThreadId, i64)>, KeyWatch);

/// The channel of a grant, which is used up here (401 if unknown, used or
/// expired, or if the key that minted it has since been revoked).
async fn by_grant(state: &AppState, token: &str, q: &Query<'_>) -> ApiResult<Opened> {
    grant_alone(q)?;
    let (grant, key_watch) = super::realtime::redeem_live(state, token, GRANT_REFUSED).await?;
    Ok(match grant {
        Grant::Thread {
            thread_id,
            account_id,
        } => {
            let id = ThreadId::parse("thread_id", &thread_id)?;
            (
                thread_channel(&thread_id),
                Some((id, account_id)),
                key_watch,
            )
        }
        Grant::Agent { aid, .. } => (agent_channel(&aid), None, key_watch),
    })
}

/// A HEAD's check of a grant: 401 as a GET would be for an unknown, used
/// or expired one, but the grant stays usable.
async fn grant_is_live(state: &AppState, token: &str, q: &Query<'_>) -> ApiResult<()> {
    grant_alone(q)?;
    if !state.grants.live_anywhere(token).await {
        return Err(GRANT_REFUSED);
    }
    // The revocation watcher voids a revoked key's grants within a tick;
    // until then the key itself says no, as it does for the GET.
    match state.grants.minted_by(token) {
        Some(key) => super::realtime::minting_key_is_live(state, key).await,
        None => Ok(()),
    }
}

/// A grant names its channel itself: a `thread_id` or `aid` beside it is refused.
fn grant_alone(q: &Query<'_>) -> ApiResult<()> {
    if q.get("thread_id").is_some() || q.get("aid").is_some() {
        return Err(ApiError::invalid(
            "give either c=GRANT or thread_id/aid with a Bearer key, not both",
        ));
    }
    Ok(())
}

/// The channel named by `thread_id` or `aid`, if the Bearer key's account
/// may see it: a thread it can see (404 otherwise), an agent it owns (403).
async fn by_key(state: &AppState, req: &HttpRequest, q: &Query<'_>) -> ApiResult<Opened> {
    let caller = Caller::extract(req).await?;
    let key_watch = state.revocations.watch(caller.key_hash());
    let (channel, thread) = match (q.get("thread_id"), q.get("aid")) {
        (Some(id), None) => {
            let id = ThreadId::parse("thread_id", id)?;
            let (thread, account_id) = caller
                .read(&state.store, move |c, account| {
                    let thread = access::thread_for_account(c, account.id, id)
                        .map_err(|e| e.not_found_on("thread_id"))?;
                    Ok((thread, account.id))
                })
                .await?;
            (thread_channel(&thread.view.id), Some((id, account_id)))
        }
        (None, Some(aid)) => {
            let aid = Aid::parse("aid", aid)?;
            let agent = caller
                .read(&state.store, move |c, account| {
                    access::acting_agent(c, account.id, &aid)
                })
                .await?;
            (agent_channel(&agent.aid), None)
        }
        _ => {
            return Err(ApiError::invalid(
                "give c=GRANT, or a Bearer key with exactly one of thread_id or aid",
            ))
        }
    };
    Ok((channel, thread, key_watch))
}

/// The task feeding one stream: the replay, then live events and
/// heartbeats, until the client leaves, the key is revoked, the server
/// stops, the stream falls too far behind or its thread is deleted.
struct Pump {
    tx: mpsc::Sender<Bytes>,
    store: Store,
    channel: String,
    /// The threads whose logged events the channel may carry.
    scope: LogScope,
    heartbeat: Duration,
    /// How long a chunk may wait for a client that does not read.
    send_timeout: Duration,
    shutdown: watch::Receiver<bool>,
    key: KeyWatch,
    /// A thread's channel: the thread as it stood when the stream joined.
    joined: Option<ThreadRecord>,
}

/// The client is gone (or stopped reading).
struct Gone;

impl Pump {
    async fn run(mut self, sub: Subscription, after: Option<i64>) {
        // Tells EventSource how soon to reconnect, and sends the headers
        // with the stream's `connection.ready` (the generation).
        let mut opening = b"retry: 3000\n\n".to_vec();
        opening.extend_from_slice(&self.ready_event());
        if self.send(Bytes::from(opening)).await.is_err() {
            return;
        }
        let skip_upto = match after {
            Some(after) => match self.replay(after).await {
                Ok(upto) => upto,
                Err(Gone) => return,
            },
            None => 0,
        };
        if self.send_typing_state().await.is_err() {
            return;
        }
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.heartbeat, self.heartbeat);
        let queue = sub.queue.clone();
        let mut revoked = false;
        loop {
            let mut chunks = Chunks::default();
            tokio::select! {
                frames = futures_util::future::poll_fn(|cx| queue.poll_take(cx)) => {
                    // None: the actor dropped the stream (it fell behind);
                    // the client resumes from its last id.
                    let Some(frames) = frames else { break };
                    for out in frames {
                        // The channel was ended (its thread deleted): say
                        // why; the queue has ended, so the next take stops.
                        if out.closes {
                            chunks.push(&closed_event(&out.frame));
                            continue;
                        }
                        let Some(kind) = out.kind else { continue };
                        if out.position.is_some_and(|p| p <= skip_upto) {
                            continue;
                        }
                        chunks.push(&sse_event(out.position, kind.as_str(), &payload_of(&out.frame)));
                    }
                }
                _ = tick.tick() => chunks.push(b": heartbeat\n\n"),
                _ = self.shutdown.wait_for(|stopping| *stopping) => break,
                () = self.key.revoked() => {
                    revoked = true;
                    break;
                }
                () = self.tx.closed() => break,
            };
            if self.send_all(chunks.finish()).await.is_err() {
                break;
            }
        }
        drop(sub);
        if revoked {
            // Say why, as a socket's 4001 does: a reconnect with this key
            // is refused.
            let close = crate::realtime::body::close_frame(
                crate::realtime::revocation::CLOSE_REVOKED,
                "login key revoked",
            );
            let _ = self.send(Bytes::from(closed_event(&close))).await;
        }
    }

    /// Sends the channel's logged events after `after`, read from the log to
    /// its end; returns the last position read (live events up to it were
    /// sent here already). When retention has pruned events after `after`,
    /// a `reset` event comes first: the client has missed changes that can
    /// no longer be replayed and should reload what it shows.
    async fn replay(&mut self, after: i64) -> Result<i64, Gone> {
        let bounds = self
            .store
            .read(|c| Ok((events::first_position(c)?, events::last_position(c)?)))
            .await;
        let Ok((oldest, newest)) = bounds else {
            log::warn!("an SSE replay could not read the event log");
            return Err(Gone);
        };
        // A position this log never gave out (another server's, or one
        // from before the database was replaced): nothing of it can be
        // replayed, and every event since the stream joined is new to the
        // client, though its position is lower. Skipping live events up to
        // `after` would drop them all, silently, until the log caught up.
        if after > newest {
            self.send(Bytes::from(ahead_event(after, newest))).await?;
            return Ok(0);
        }
        if let Some(oldest) = oldest.filter(|&oldest| oldest > after.saturating_add(1)) {
            self.send(Bytes::from(reset_event(after, oldest))).await?;
        }
        let mut cursor = after;
        loop {
            let from = cursor;
            let scope = self.scope.clone();
            // An event that cannot be rebuilt (a corrupt row) is left out
            // of the page, logged once, and read past: the stream goes on
            // (`store::events::LogPage`).
            let page = self
                .store
                .read(move |c| events::page_after_in(c, from, REPLAY_PAGE, &scope))
                .await;
            let Ok(page) = page else {
                // Ends the stream; the client resumes from its last id.
                log::warn!("an SSE replay could not read the event log");
                return Err(Gone);
            };
            let Some(upto) = page.read_upto else {
                return Ok(cursor);
            };
            cursor = upto;
            let mut chunks = Chunks::default();
            for event in &page.events {
                if frame::channels(event).any(|c| c == self.channel) {
                    chunks.push(&replayed(event, &self.channel));
                }
            }
            drop(page);
            self.send_all(chunks.finish()).await?;
        }
    }

    /// The stream's first event, `connection.ready`: the frame a socket on
    /// the channel starts with (a thread's `{"thread_id", "last_seq",
    /// "generation"}`, its last seq as it stood when the stream joined; an
    /// inbox's `{"aid", "generation"}`). No `id:`: it has no position, and
    /// `Last-Event-ID` moves on only with logged events. The generation
    /// tells a client that resumes whether the data went back (a restore)
    /// since it read what it holds (README, "Resume").
    fn ready_event(&self) -> Vec<u8> {
        let on = match &self.joined {
            Some(record) => frame::ReadyOn::Thread {
                id: &record.view.id,
                last_seq: record.view.message_count,
            },
            None => frame::ReadyOn::Agent {
                aid: self
                    .channel
                    .strip_prefix(frame::AGENT_PREFIX)
                    .unwrap_or_default(),
            },
        };
        let ready = frame::ready(&self.channel, on, self.store.generation());
        sse_event(None, READY, &payload_of(&ready))
    }

    /// On a turn-taking thread whose agent is typing (a reply part is
    /// pending), says so after the replay, as a socket does after its
    /// replay: a stream that joined mid-reply heard nothing until the next
    /// part. A signal, so without an `id:`.
    async fn send_typing_state(&self) -> Result<(), Gone> {
        let Some(record) = &self.joined else {
            return Ok(());
        };
        let seq = record.view.message_count;
        match session::typing_state(&self.store, &self.channel, record, seq).await {
            Some(frame) => {
                let event = sse_event(None, Kind::Typing.as_str(), &payload_of(&frame));
                self.send(Bytes::from(event)).await
            }
            None => Ok(()),
        }
    }

    async fn send(&self, chunk: Bytes) -> Result<(), Gone> {
        match tokio::time::timeout(self.send_timeout, self.tx.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Gone),
        }
    }

    async fn send_all(&self, chunks: Vec<Bytes>) -> Result<(), Gone> {
        for chunk in chunks {
            self.send(chunk).await?;
        }
        Ok(())
    }
}

/// Events gathered into chunks of about [`CHUNK_BYTES`] each.
#[derive(Default)]
struct Chunks {
    full: Vec<Bytes>,
    current: Vec<u8>,
}

impl Chunks {
    fn push(&mut self, event: &[u8]) {
        self.current.extend_from_slice(event);
        if self.current.len() >= CHUNK_BYTES {
            self.full
                .push(Bytes::from(std::mem::take(&mut self.current)));
        }
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            self.full.push(Bytes::from(self.current));
        }
        self.full
    }
}

/// A logged event read back from the log, as the stream sends it.
fn replayed(event: &Event, channel: &str) -> Vec<u8> {
    let frame = frame::event_frame(event, channel);
    sse_event(event.position, event.kind.as_str(), &payload_of(&frame))
}

/// The `reset` event: the positions after `after` up to `oldest - 1` have
/// been pruned. It has no `id:`, so the client's `Last-Event-ID` moves on
/// only with the replayed events that follow it.
fn reset_event(after: i64, oldest: i64) -> Vec<u8> {
    let data = serde_json::json!({
        "reason": "events after the requested position were pruned",
        "after_position": after,
        "oldest_position": oldest,
    });
    sse_event(None, "reset", data.to_string().as_bytes())
}

/// The `reset` event of a resume from beyond the log's newest position:
/// what the client has seen is unknown here (reload and keep reading), and
/// the live events that follow carry lower positions than it asked for.
fn ahead_event(after: i64, newest: i64) -> Vec<u8> {
    let data = serde_json::json!({
        "reason": "the requested position is beyond this server's event log",
        "after_position": after,
        "newest_position": newest,
    });
    sse_event(None, "reset", data.to_string().as_bytes())
}

/// The `closed` event: the WebSocket close frame a socket on the channel
/// got, as `{"code", "reason"}` (no `id:`: nothing to resume after it).
fn closed_event(close_frame: &Bytes) -> Vec<u8> {
    let payload = payload_of(close_frame);
    let code = match payload.get(..2) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 1000,
    };
    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
    let data = serde_json::json!({ "code": code, "reason": reason });
    sse_event(None, "closed", data.to_string().as_bytes())
}

/// One event in the `text/event-stream` format. `data` is compact JSON, so
/// it holds no line break and fits one `data:` line.
fn sse_event(position: Option<i64>, kind: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + kind.len() + 40);
    if let Some(p) = position {
        out.extend_from_slice(format!("id: {p}\n").as_bytes());
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_has_its_position_as_id_and_a_signal_has_none() {
        assert_eq!(
            sse_event(Some(7), "thread.message", b"{}"),
            b"id: 7\nevent: thread.message\ndata: {}\n\n"
        );
        assert_eq!(
            sse_event(None, "turn_taking.typing", b"{}"),
            b"event: turn_taking.typing\ndata: {}\n\n"
        );
    }

    #[test]
    fn events_are_gathered_into_chunks_of_about_64_kib_in_order() {
        let mut chunks = Chunks::default();
        let event = vec![b'x'; 40_000];
        for _ in 0..5 {
            chunks.push(&event);
        }
        chunks.push(b"last");
        let chunks = chunks.finish();
        let sizes: Vec<usize> = chunks.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [80_000, 80_000, 40_004]);
        assert!(chunks.concat().ends_with(b"xlast"));
        assert!(Chunks::default().finish().is_empty());
    }

    #[test]
    fn a_close_frame_becomes_a_closed_event_with_its_code_and_reason() {
        let close = crate::realtime::body::close_frame(4004, "thread deleted");
        assert_eq!(
            closed_event(&close),
            b"event: closed\ndata: {\"code\":4004,\"reason\":\"thread deleted\"}\n\n"
        );
    }
}
