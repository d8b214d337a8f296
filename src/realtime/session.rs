//! The per-socket session: join the channel and note where the thread stands
//! (before the upgrade is answered), then send `connection.ready`, replay
//! what the client missed (resume) and, on a turn-taking thread whose agent
//! is typing, a `turn_taking.typing` start, answering pings meanwhile, and from then
//! on answer pings, ping the client and watch for shutdown. Live frames go
//! from the channel's actor straight to the socket's body (`body.rs`), not
//! through this task.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws::Message as WsMessage;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::body::{self, Control, SocketBody};
use super::fragments::{self, Fragments};
use super::frame;
use super::frame_limit;
use super::queue::{BodyNews, SocketQueue};
use super::revocation::{KeyWatch, CLOSE_REVOKED};
use super::{Hub, Incarnation, Membership, Subscription};
use crate::access;
use crate::domain::ThreadId;
use crate::error::{ApiError, ApiResult};
use crate::events::{self, new_event_id, Kind};
use crate::store::db::{messages, turn};
use crate::store::model::{ThreadKind, ThreadRecord};
use crate::store::{Db, Store};

/// Messages read from the database per replay page, at most ...
const REPLAY_PAGE: i64 = 500;
/// ... and at least (the first page's size).
const REPLAY_PAGE_MIN: i64 = 16;
/// About how many bytes of frames a replay page may hold: the next page
/// holds as many of the largest frame of the last as fit. A page of 500
/// messages of the largest kind (~45 KB each) held ~22 MB for as long as
/// a client that did not read kept the socket (up to the heartbeat
/// timeout); now a page holds about this, or 16 frames.
const REPLAY_PAGE_BYTES: usize = 256 * 1024;

/// Timing of keep-alive pings.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    pub interval: Duration,
    pub timeout: Duration,
}

/// What the socket streams.
pub enum Target {
    /// A thread's events; `after` asks for a replay of messages after that seq.
    Thread {
        thread_id: ThreadId,
        /// The account the grant was minted for: it must still see the thread.
        account_id: i64,
        after: Option<i64>,
    },
    /// An agent's inbox.
    Agent { aid: String },
}

/// A socket that has joined its channel but not yet been served.
pub struct Joined {
    channel: String,
    sub: Subscription,
    start: Start,
}

enum Start {
    /// The thread as it stood just after joining, and the client's `after`.
    Thread {
        record: Arc<ThreadRecord>,
        after: Option<i64>,
    },
    Agent {
        aid: String,
    },
}

/// Joins the target's channel, then reads where the thread stands. Called
/// before the upgrade is answered, so that whatever is committed once the
/// client sees its handshake complete reaches the socket: a client may act
/// at once, without waiting for `connection.ready`. (Join first, then read:
/// every message is either in what was read or arrives on the queue
/// afterwards; duplicates are skipped by seq.)
pub async fn join(hub: &Hub, store: &Store, target: Target) -> ApiResult<Joined> {
    Ok(match target {
        Target::Thread {
            thread_id,
            account_id,
            after,
        } => {
            let channel = frame::thread_channel(&thread_id.to_text());
            let (sub, record) = join_thread(hub, store, &channel, thread_id, account_id).await?;
            Joined {
                channel,
                sub,
                start: Start::Thread {
                    record: Arc::new(record),
                    after,
                },
            }
        }
        Target::Agent { aid } => {
            let channel = frame::agent_channel(&aid);
            let sub = hub.subscribe(&channel, None).await;
            Joined {
                channel,
                sub,
                start: Start::Agent { aid },
            }
        }
    })
}

/// Joins a thread's `channel` as a subscriber of the thread that has the id
/// now, and reads it once joined (a socket's and a stream's way in). The
/// first read names the thread the subscription serves (a deletion ends only
/// the subscribers of the thread it deleted, not those of a thread created
/// again under its id); the second, after joining, is the state the
/// subscriber starts from. A thread deleted or replaced between the two is
/// not found.
pub async fn join_thread(
    hub: &Hub,
    store: &Store,
    channel: &str,
    thread_id: ThreadId,
    account_id: i64,
) -> ApiResult<(Subscription, ThreadRecord)> {
    let read = move |c: Db<'_>| access::thread_for_account(c, account_id, thread_id);
    let incarnation = |record: &ThreadRecord| {
        Incarnation::of(&record.view.created_at)
            .ok_or_else(|| ApiError::Internal("a thread's created_at is not a time".into()))
    };
    // A keyed read of one row: on the worker, without a blocking thread's
    // round trip (a connect storm would otherwise grow that pool).
    let serves = incarnation(&store.read_here(read).await?)?;
    let sub = hub.subscribe(channel, Some(serves)).await;
    let record = store.read(read).await?;
    if incarnation(&record)? != serves {
        return Err(ApiError::thread_not_found());
    }
    Ok((sub, record))
}

/// Control frames that may wait for the connection to take them (with a
/// page: what a replay holds for a client that does not read).
const CONTROL_DEPTH: usize = 16;

/// Splits a joined socket into its response body, which the connection polls
/// for frames, and its session, which runs beside it.
pub fn open(
    joined: Joined,
    hub: Arc<Hub>,
    store: Store,
    heartbeat: Heartbeat,
    key: KeyWatch,
) -> (SocketBody, Session) {
    let Joined {
        channel,
        sub,
        start,
    } = joined;
    let (control, control_rx) = mpsc::channel(CONTROL_DEPTH);
    let body = SocketBody::new(control_rx, sub.queue.clone());
    let session = Session {
        control,
        queue: sub.queue,
        membership: sub.membership,
        channel,
        start,
        hub,
        store,
        heartbeat,
        key,
    };
    (body, session)
}

/// A socket's session task: `connection.ready` and the replay, then pings,
/// pongs, the client's close, shutdown. Live frames do not pass through it.
/// Leaving the session leaves the channel.
pub struct Session {
    /// Ready and replay, until live.
    control: mpsc::Sender<Control>,
    /// Pings, pongs and the close, once live.
    queue: Arc<SocketQueue>,
    membership: Membership,
    channel: String,
    start: Start,
    hub: Arc<Hub>,
    store: Store,
    heartbeat: Heartbeat,
    /// Resolves when the login key that opened the socket is revoked.
    key: KeyWatch,
}

impl Session {
    /// Runs until the socket closes; `incoming` is what the client sends.
    pub async fn run(self, mut incoming: actix_ws::MessageStream) {
        let Session {
            control,
            queue,
            membership,
            channel,
            start,
            hub,
            store,
            heartbeat,
            mut key,
        } = self;
        let _finish = Finish(queue.clone());
        // The pong owed for the client's last ping, sent before the next
        // frame of the replay.
        let pong = Cell::new(None);
        // Where the client's fragmented text stands (checked for UTF-8),
        // from before the socket is live to its end.
        let mut fragmented = Fragments::default();
        let out = Sender {
            control: &control,
            timeout: heartbeat.timeout,
            pong: &pong,
        };
        let starting = async {
            let skip_upto = match start {
                Start::Thread { record, after } => {
                    replay(&out, &store, &channel, record, after).await?
                }
                Start::Agent { aid } => {
                    let on = frame::ReadyOn::Agent { aid: &aid };
                    let ready = frame::ready(&channel, on, store.generation());
                    out.send(Control::Frame(ready)).await?;
                    0
                }
            };
            out.send(Control::Live { skip_upto }).await
        };
        // Boxed: the replay's state (its store reads, a page of messages,
        // the send timeouts; 1,272 bytes in a release build) lives only
        // until the socket is live, but inline it would size this task,
        // which an idle socket holds for its whole life (boxed, the task's
        // future is 1,304 bytes; an idle socket costs ~1.9 KiB less).
        let starting = Box::pin(starting);
        let started = reading_meanwhile(starting, &mut incoming, &pong, &mut fragmented).await;
        match started {
            Ok(()) => {
                // A ping read while the last frame waited for room.
                if let Some(pong) = pong.take() {
                    queue.control(pong);
                }
            }
            Err(Stop::Gone) => return,
            Err(stop) => {
                // The close goes after the frames already handed to the
                // body, without the live frames queued meanwhile (they
                // would leave a gap; the client resumes from the last seq
                // it got). The session then lingers, as a live one does.
                let (code, reason) = match stop {
                    // Like a live queue that fills up. Counted before
                    // leaving the channel, which is what shows that the
                    // socket has given up.
                    Stop::TooSlow => {
                        hub.too_slow();
                        (body::CLOSE_TOO_SLOW, body::TOO_SLOW)
                    }
                    Stop::Close(code, reason) => (code, reason),
                    Stop::Answer => (1000, ""),
                    Stop::Gone => unreachable!("handled above"),
                };
                drop(membership);
                queue.close(body::close_frame(code, reason));
                drop(control);
                // The client that closed has nothing more to send.
                if !matches!(stop, Stop::Answer) {
                    linger(&queue, &mut incoming, heartbeat.timeout).await;
                }
                return;
            }
        }
        // Live: everything goes through the queue from now on, and the
        // body's drop is heard there; the channel's buffer is freed.
        drop(control);

        let mut shutdown = hub.shutdown_signal();
        let mut last_heard = Instant::now();
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + heartbeat.interval,
            heartbeat.interval,
        );
        let end = loop {
            tokio::select! {
                msg = incoming.next() => {
                    last_heard = Instant::now();
                    match msg {
                        // A client that does not read gets no pong; its
                        // heartbeat runs out instead.
                        Some(Ok(WsMessage::Ping(bytes))) => {
                            queue.control(body::pong_frame(&bytes));
                        }
                        Some(Ok(WsMessage::Close(_))) => break End::Answer,
                        Some(Ok(WsMessage::Continuation(item))) => {
                            if fragmented.take(&item).is_err() {
                                break End::Close(CLOSE_NOT_UTF8, fragments::NOT_UTF8);
                            }
                        }
                        // A frame over the limit: say so (1009) rather than
                        // drop the connection.
                        Some(Err(e)) if frame_limit::is_overflow(&e) => {
                            break End::Close(CLOSE_TOO_BIG, FRAME_TOO_BIG.as_str())
                        }
                        // A malformed frame: say why (1002, 1007).
                        Some(Err(e)) => match violation(&e) {
                            Some((code, reason)) => break End::Close(code, reason),
                            None => break End::Gone,
                        },
                        None => break End::Gone,
                        // Text, binary, pongs: ignored, but they show the client is there.
                        Some(Ok(_)) => {}
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > heartbeat.timeout {
                        break End::Close(CLOSE_POLICY, "no answer to pings");
                    }
                    queue.control(body::ping_frame());
                }
                _ = shutdown.wait_for(|stopping| *stopping) => break End::Close(body::CLOSE_AWAY, ""),
                () = key.revoked() => break End::Close(CLOSE_REVOKED, "login key revoked"),
                // The body sent a close queued by the channel (4008 for a
                // full queue, 4004 for a deleted thread), or the connection
                // is gone (its body was dropped).
                news = queue.body_news() => match news {
                    BodyNews::CloseSent => break End::Linger,
                    BodyNews::Gone => break End::Gone,
                },
            }
        };
        log::debug!("socket {} on {channel} closing", membership.id());
        drop(membership);
        drop(key);
        match end {
            // The client's close, answered: nothing more to read.
            End::Answer => queue.close(body::close_frame(1000, "")),
            End::Close(code, reason) => {
                // A no-op if the channel has already closed the queue:
                // its close goes out instead.
                queue.close(body::close_frame(code, reason));
                linger(&queue, &mut incoming, heartbeat.timeout).await;
            }
            End::Linger => linger(&queue, &mut incoming, heartbeat.timeout).await,
            End::Gone => queue.end(),
        }
        // `_finish` lets the body end.
    }
}

/// How the live session ended.
enum End {
    /// The client closed: answer it.
    Answer,
    /// The server closes with this code and reason.
    Close(u16, &'static str),
    /// The body has sent a close the channel queued.
    Linger,
    /// The client is gone.
    Gone,
}

/// Tells the body it may end, however the session ends (a replay that
/// stops early included).
struct Finish(Arc<SocketQueue>);

impl Drop for Finish {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// After the server's close, at most this long without a frame from the
/// client ...
const LINGER_IDLE: Duration = Duration::from_secs(2);
/// ... and this long in all, counted from when the close frame went out ...
const LINGER_MAX: Duration = Duration::from_secs(5);
/// ... and this many bytes of frames read, before the connection is closed
/// without the client's answer.
const LINGER_BYTES: usize = 64 * 1024;

/// A lingering close: the server's close frame is queued (or out); reads
/// and discards what the client sends until it answers the close (its own
/// close frame) or goes (EOF, an error), and only then lets the body end.
/// Ending the body closes the TCP connection, and closing it while the
/// client's frames sit unread in the server's receive buffer makes the
/// kernel send a reset, which throws away whatever the client has not read
/// yet: frames before the close, and the close frame with its code.
///
/// Bounded: until the close frame has gone to the connection (a client
/// that does not read holds it back, behind the frames queued before it),
/// by `timeout` (the heartbeat's); from then on by [`LINGER_IDLE`] without
/// a frame, [`LINGER_MAX`] in all, and [`LINGER_BYTES`] read, so a client
/// cannot hold a closing connection open by streaming at it. A shutdown's
/// 1001 closes thus end well within its 10 s drain.
async fn linger(queue: &SocketQueue, incoming: &mut actix_ws::MessageStream, timeout: Duration) {
    let start = tokio::time::Instant::now();
    let mut deadline = start + timeout;
    // Set once the close frame is out.
    let mut sent_at: Option<tokio::time::Instant> = None;
    let mut read = 0usize;
    loop {
        tokio::select! {
            msg = incoming.next() => {
                let len = match msg {
                    Some(Ok(WsMessage::Close(_))) | None => return,
                    Some(Ok(msg)) => frame_len(&msg),
                    // After a 1009: what the frame limit read and threw away.
                    Some(Err(e)) => match frame_limit::discarded(&e) {
                        Some(counted) => usize::try_from(counted).unwrap_or(usize::MAX),
                        None => return,
                    },
                };
                read = read.saturating_add(len);
                if read > LINGER_BYTES {
                    return;
                }
                if let Some(sent) = sent_at {
                    deadline = (tokio::time::Instant::now() + LINGER_IDLE).min(sent + LINGER_MAX);
                }
            }
            news = queue.body_news(), if sent_at.is_none() => match news {
                BodyNews::Gone => return,
                BodyNews::CloseSent => {
                    let now = tokio::time::Instant::now();
                    sent_at = Some(now);
                    deadline = now + LINGER_IDLE;
                }
            },
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// The payload bytes of a frame the client sent (what lingering counts).
fn frame_len(msg: &WsMessage) -> usize {
    match msg {
        WsMessage::Text(text) => text.len(),
        WsMessage::Binary(bytes) | WsMessage::Ping(bytes) | WsMessage::Pong(bytes) => bytes.len(),
        WsMessage::Continuation(item) => match item {
            actix_ws::Item::FirstText(b)
            | actix_ws::Item::FirstBinary(b)
            | actix_ws::Item::Continue(b)
            | actix_ws::Item::Last(b) => b.len(),
        },
        WsMessage::Close(_) | WsMessage::Nop => 0,
    }
    // A frame's header: at least 2 bytes, whatever its payload.
    .saturating_add(2)
}

/// How many messages the next replay page reads, after one whose largest
/// frame had `largest` bytes.
fn next_page_len(largest: usize) -> i64 {
    i64::try_from(REPLAY_PAGE_BYTES / largest.max(1))
        .unwrap_or(REPLAY_PAGE)
        .clamp(REPLAY_PAGE_MIN, REPLAY_PAGE)
}

/// Close code for a frame over the size limit ("message too big").
const CLOSE_TOO_BIG: u16 = 1009;

/// Its reason, naming the limit ("frame over 64 KiB").
static FRAME_TOO_BIG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "frame over {}",
        crate::domain::limits::kib(crate::domain::limits::MAX_FRAME_BYTES)
    )
});

/// The close a malformed client frame gets (RFC 6455, 7.1.7 and 7.4.1:
/// the endpoint that fails a connection should say why): 1007 for a text
/// frame that is not UTF-8, 1002 for any other violation (an unmasked
/// frame, reserved bits, an unknown opcode, a fragmented or oversized
/// control frame, a continuation out of place). `None` for an I/O error:
/// the connection is gone, there is nobody to tell. The connection used to
/// be dropped without a close frame, which a client reads as a network
/// failure and answers by reconnecting with the same bug.
fn violation(err: &actix_ws::ProtocolError) -> Option<(u16, &'static str)> {
    match err {
        actix_ws::ProtocolError::Io(e)
            if e.get_ref()
                .is_some_and(|inner| inner.is::<std::str::Utf8Error>()) =>
        {
            Some((CLOSE_NOT_UTF8, "text frame is not UTF-8"))
        }
        // Reserved bits the codec reports as invalid data.
        actix_ws::ProtocolError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Some((1002, "malformed frame"))
        }
        actix_ws::ProtocolError::Io(_) => None,
        _ => Some((1002, "malformed frame")),
    }
}

/// Close code for text that is not UTF-8 ("invalid frame payload data").
const CLOSE_NOT_UTF8: u16 = 1007;

/// Close code for a client that stopped answering pings.
const CLOSE_POLICY: u16 = 1008;

/// Why the session stopped before going live.
enum Stop {
    /// The socket went away.
    Gone,
    /// The client took nothing for the heartbeat's timeout.
    TooSlow,
    /// The server closes with this code and reason (1009, 1011).
    Close(u16, &'static str),
    /// The client closed: answer it.
    Answer,
}

/// Runs `starting` (`connection.ready`, the replay) while reading what the
/// client sends: a ping is answered between two frames of the replay (a
/// client whose pong timeout is shorter than a long replay would otherwise
/// give up on a healthy connection), a close or a frame over the limit ends
/// the replay, and so does a fragmented text message that is not UTF-8.
async fn reading_meanwhile(
    starting: impl Future<Output = Result<(), Stop>>,
    incoming: &mut actix_ws::MessageStream,
    pong: &Cell<Option<Bytes>>,
    fragmented: &mut Fragments,
) -> Result<(), Stop> {
    let mut starting = std::pin::pin!(starting);
    loop {
        tokio::select! {
            started = &mut starting => return started,
            msg = incoming.next() => match msg {
                // Only the last ping needs its pong (RFC 6455, 5.5.3).
                Some(Ok(WsMessage::Ping(bytes))) => pong.set(Some(body::pong_frame(&bytes))),
                Some(Ok(WsMessage::Close(_))) => return Err(Stop::Answer),
                Some(Ok(WsMessage::Continuation(item))) => {
                    if fragmented.take(&item).is_err() {
                        return Err(Stop::Close(CLOSE_NOT_UTF8, fragments::NOT_UTF8));
                    }
                }
                Some(Err(e)) if frame_limit::is_overflow(&e) => {
                    return Err(Stop::Close(CLOSE_TOO_BIG, FRAME_TOO_BIG.as_str()))
                }
                Some(Err(e)) => {
                    return Err(violation(&e).map_or(Stop::Gone, |(code, reason)| {
                        Stop::Close(code, reason)
                    }))
                }
                None => return Err(Stop::Gone),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Sends control frames, waiting at most `timeout` for room each: a client
/// that stops reading during a replay does not hold its session forever.
/// A pong owed goes first.
struct Sender<'a> {
    control: &'a mpsc::Sender<Control>,
    timeout: Duration,
    pong: &'a Cell<Option<Bytes>>,
}

impl Sender<'_> {
    async fn send(&self, item: Control) -> Result<(), Stop> {
        if let Some(pong) = self.pong.take() {
            self.send_one(Control::Frame(pong)).await?;
        }
        self.send_one(item).await
    }

    async fn send_one(&self, item: Control) -> Result<(), Stop> {
        match tokio::time::timeout(self.timeout, self.control.send(item)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(Stop::TooSlow),
        }
    }
}

/// Sends `connection.ready`, the stored messages after `after` (up to
/// where the thread stood when the socket joined) and the typing state
/// ([`send_typing_state`]); returns the seq from
/// which live frames follow (those up to it are skipped). That is the
/// thread's last seq also when `after` is beyond it (the server was
/// restored from a backup, or the client is wrong): every message committed
/// after the socket joined is sent, and `connection.ready`'s `last_seq`
/// below `after`, or its `generation` (another than the client had), tells
/// the client that what it holds may be gone or replaced (see
/// `store::generation`).
async fn replay(
    out: &Sender<'_>,
    store: &Store,
    channel: &str,
    record: Arc<ThreadRecord>,
    after: Option<i64>,
) -> Result<i64, Stop> {
    let last_seq = record.view.message_count;
    let on = frame::ReadyOn::Thread {
        id: &record.view.id,
        last_seq,
    };
    let ready = frame::ready(channel, on, store.generation());
    out.send(Control::Frame(ready)).await?;
    if let Some(after) = after {
        replay_after(out, store, channel, &record, after).await?;
    }
    send_typing_state(out, store, channel, &record, last_seq).await?;
    Ok(last_seq)
}

/// Sends the stored messages after `cursor`, up to the thread's `last_seq`
/// as it stood when the socket joined.
async fn replay_after(
    out: &Sender<'_>,
    store: &Store,
    channel: &str,
    record: &Arc<ThreadRecord>,
    mut cursor: i64,
) -> Result<(), Stop> {
    let last_seq = record.view.message_count;
    let mut page_len = REPLAY_PAGE_MIN;
    while cursor < last_seq {
        let rec = record.clone();
        // The stored JSON of each message, as its live event and the
        // thread's pages carry it: rebuilt from the rows, it took the
        // sender's name of now (an agent renamed since).
        let page = store
            .read(move |c| messages::page_json(c, &rec, cursor, page_len, 0))
            .await;
        let array = match page {
            Ok(page) => page.array,
            Err(e) => {
                log::error!("replay of {channel} after seq {cursor}: {e}");
                return Err(Stop::Close(1011, "could not read the thread"));
            }
        };
        let batch: Vec<&serde_json::value::RawValue> = match serde_json::from_slice(&array) {
            Ok(batch) => batch,
            Err(e) => {
                log::error!("replay of {channel} after seq {cursor}: stored JSON: {e}");
                return Err(Stop::Close(1011, "could not read the thread"));
            }
        };
        if batch.is_empty() {
            break;
        }
        let mut largest = 1;
        for data in batch {
            let Ok(head) = serde_json::from_str::<StoredHead<'_>>(data.get()) else {
                log::error!("replay of {channel} after seq {cursor}: a stored message");
                return Err(Stop::Close(1011, "could not read the thread"));
            };
            if head.seq > last_seq {
                break;
            }
            cursor = head.seq;
            let kind = Kind::ThreadMessage.as_str();
            let frame = frame::encode(&head.id, kind, channel, head.seq, data);
            largest = largest.max(frame.len());
            out.send(Control::Frame(frame)).await?;
        }
        page_len = next_page_len(largest);
    }
    Ok(())
}

/// Tells a socket on a turn-taking thread that the agent is typing, when a
/// reply part is pending: a client that connected (or resumed) mid-reply
/// heard nothing until the next part went out, and showed no indicator
/// meanwhile. Read after the socket joined its channel, so a `stop`
/// committed since then follows this on the live queue, and the client
/// ends in the state the thread is in. Nothing is sent when no part is
/// pending (the client starts from "not typing").
async fn send_typing_state(
    out: &Sender<'_>,
    store: &Store,
    channel: &str,
    record: &ThreadRecord,
    seq: i64,
) -> Result<(), Stop> {
    match typing_state(store, channel, record, seq).await {
        Some(frame) => out.send(Control::Frame(frame)).await,
        None => Ok(()),
    }
}

/// The `turn_taking.typing` start frame for a socket or event stream that
/// has joined `record`'s channel while a reply part is pending; `None` when
/// none is, or the thread is not a turn-taking one.
pub(crate) async fn typing_state(
    store: &Store,
    channel: &str,
    record: &ThreadRecord,
    seq: i64,
) -> Option<bytes::Bytes> {
    if record.kind != ThreadKind::Turn {
        return None;
    }
    let row = record.row_id;
    // One indexed row, read on the worker when a reader is free (as the
    // join's own read), not on a blocking thread: every socket pays it.
    let epoch = match store.read_here(move |c| turn::typing_epoch(c, row)).await {
        Ok(epoch) => epoch?,
        // The indicator is a hint: the socket goes on without it.
        Err(e) => {
            log::warn!("typing state of {channel} not read: {e}");
            return None;
        }
    };
    let data = events::data(&events::Typing {
        state: "start",
        turn_epoch: epoch,
    });
    Some(frame::encode(
        &new_event_id(),
        Kind::Typing.as_str(),
        channel,
        seq,
        &data,
    ))
}

/// What a replay reads of a stored message's JSON: its id and seq.
#[derive(serde::Deserialize)]
struct StoredHead<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    seq: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_page_holds_about_256_kib_of_the_last_pages_largest_frame() {
        // Short messages: the full 500.
        assert_eq!(next_page_len(300), REPLAY_PAGE);
        // 8 KB frames: 32 of them.
        assert_eq!(next_page_len(8 * 1024), 32);
        // The largest (~45 KB): never fewer than 16.
        assert_eq!(next_page_len(45_000), REPLAY_PAGE_MIN);
        assert_eq!(next_page_len(0), REPLAY_PAGE);
    }

    /// The size of what `f` returns, without calling it.
    fn returned_size<A, B, F: Future>(_: impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle socket holds its session's future. Boxed, the start phase
    /// (the replay) is freed once the socket is live: 1,296 bytes in a test
    /// build (1,304 in release); inline it was 3,472 (~2 KiB more per idle
    /// socket, measured with `loadgen sockets`).
    #[test]
    fn an_idle_sockets_task_does_not_keep_room_for_the_replay() {
        let size = returned_size(Session::run);
        assert!(
            size <= 2048,
            "Session::run's future is {size} bytes: is the start phase inline again?"
        );
    }
}
