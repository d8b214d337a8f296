//! The per-socket session: join the channel and note where the thread stands
//! (before the upgrade is answered), then send `connection.ready`, replay what
//! the client missed (resume), and forward live frames while answering pings,
//! pinging the client and watching for shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws::{CloseCode, CloseReason, Message as WsMessage};
use futures_util::StreamExt;

use super::{Event, EventData, Hub, Subscription};
use crate::domain::ThreadId;
use crate::error::{ApiError, ApiResult};
use crate::store::model::ThreadRecord;
use crate::store::{messages, threads, Store};

/// Close code for a subscriber that could not keep up.
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// Messages read from the database per replay page.
const REPLAY_PAGE: i64 = 500;

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
        Target::Thread { thread_id, after } => {
            let channel = super::thread_channel(&thread_id.to_text());
            let sub = hub.subscribe(&channel).await;
            let record = store
                .read(move |c| threads::by_id(c, thread_id))
                .await?
                .ok_or_else(|| ApiError::NotFound("thread not found".into()))?;
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
            let channel = super::agent_channel(&aid);
            let sub = hub.subscribe(&channel).await;
            Joined {
                channel,
                sub,
                start: Start::Agent { aid },
            }
        }
    })
}

/// Runs one joined socket until it closes.
pub async fn run(
    mut session: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
    hub: Arc<Hub>,
    store: Store,
    joined: Joined,
    heartbeat: Heartbeat,
) {
    let mut shutdown = hub.shutdown_signal();
    let Joined {
        channel,
        mut sub,
        start,
    } = joined;
    let mut skip_upto = 0;
    match start {
        Start::Thread { record, after } => {
            match replay(&mut session, &store, &channel, record, after).await {
                Ok(upto) => skip_upto = upto,
                Err(()) => return,
            }
        }
        Start::Agent { aid } => {
            let ready = serde_json::json!({ "aid": aid });
            if send_ready(&mut session, &channel, 0, ready).await.is_err() {
                return;
            }
        }
    }

    // A second view of the shutdown signal, for waits inside the loop's arms.
    let mut stopping = shutdown.clone();
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + heartbeat.interval,
        heartbeat.interval,
    );
    let close = loop {
        tokio::select! {
            frame = sub.rx.recv() => match frame {
                Some(out) => {
                    if out.carries_message && out.seq <= skip_upto {
                        continue;
                    }
                    // A peer that stops reading fills the socket's buffers and
                    // this write waits; bound the wait so shutdown and the
                    // too-slow rule still apply to it.
                    tokio::select! {
                        sent = session.text(out.text.clone()) => if sent.is_err() { break None },
                        _ = stopping.wait_for(|stopping| *stopping) => break Some(CloseCode::Away.into()),
                        _ = tokio::time::sleep(heartbeat.timeout) => break Some(too_slow()),
                    }
                }
                None if sub.lagged.load(Ordering::SeqCst) => break Some(too_slow()),
                None => break Some(CloseCode::Away.into()),
            },
            msg = stream.next() => {
                last_heard = Instant::now();
                match msg {
                    Some(Ok(WsMessage::Ping(bytes))) => {
                        if session.pong(&bytes).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break None,
                    // Text, binary, pongs: ignored, but they show the client is there.
                    Some(Ok(_)) => {}
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > heartbeat.timeout {
                    break Some(CloseReason {
                        code: CloseCode::Policy,
                        description: Some("no answer to pings".into()),
                    });
                }
                if session.ping(b"").await.is_err() {
                    break None;
                }
            }
            _ = shutdown.wait_for(|stopping| *stopping) => break Some(CloseCode::Away.into()),
        }
    };
    log::debug!("socket {} on {channel} closing", sub.id());
    drop(sub);
    // The close frame may not fit either if the peer is not reading.
    let _ = tokio::time::timeout(Duration::from_secs(1), session.close(close)).await;
}

/// The close a subscriber gets when it cannot keep up.
fn too_slow() -> CloseReason {
    CloseReason {
        code: CloseCode::Other(CLOSE_TOO_SLOW),
        description: Some("too slow: resume with after=<last seq>".into()),
    }
}

async fn send_ready(
    session: &mut actix_ws::Session,
    channel: &str,
    last_seq: i64,
    data: serde_json::Value,
) -> Result<(), actix_ws::Closed> {
    let ready = Event {
        id: super::event::new_event_id(),
        kind: "connection.ready",
        seq: last_seq,
        carries_message: false,
        thread_channel: None,
        inbox_aids: Vec::new(),
        data: EventData::Json(data),
    };
    session.text(ready.frame(channel)).await
}

/// Sends `connection.ready` and the stored messages after `after` (up to
/// where the thread stood when the socket joined); returns the highest seq
/// the client now has (live frames up to it are skipped).
async fn replay(
    session: &mut actix_ws::Session,
    store: &Store,
    channel: &str,
    record: Arc<ThreadRecord>,
    after: Option<i64>,
) -> Result<i64, ()> {
    let last_seq = record.view.message_count;
    let ready = serde_json::json!({ "thread_id": record.view.id, "last_seq": last_seq });
    send_ready(session, channel, last_seq, ready)
        .await
        .map_err(|_| ())?;
    let Some(mut cursor) = after else {
        return Ok(last_seq);
    };
    while cursor < last_seq {
        let rec = record.clone();
        let page = store
            .read(move |c| messages::page(c, &rec, cursor, REPLAY_PAGE, 0))
            .await;
        let Ok((batch, _)) = page else {
            let _ = session.clone().close(Some(CloseCode::Error.into())).await;
            return Err(());
        };
        if batch.is_empty() {
            break;
        }
        for message in batch {
            if message.seq > last_seq {
                break;
            }
            cursor = message.seq;
            let frame = Event::thread_message(&record, Arc::new(message)).frame(channel);
            session.text(frame).await.map_err(|_| ())?;
        }
    }
    Ok(last_seq.max(after.unwrap_or(0)))
}
