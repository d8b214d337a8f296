//! The per-socket session loop: join the channel, send `connection.ready`,
//! replay what the client missed (resume), then forward live frames while
//! answering pings, pinging the client and watching for shutdown.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_ws::{CloseCode, CloseReason, Message as WsMessage};
use futures_util::StreamExt;

use super::{Event, EventData, Hub};
use crate::domain::ThreadId;
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

/// Runs one socket until it closes.
pub async fn run(
    mut session: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
    hub: std::sync::Arc<Hub>,
    store: Store,
    target: Target,
    heartbeat: Heartbeat,
) {
    let mut shutdown = hub.shutdown_signal();
    let (channel, ready) = match &target {
        Target::Thread { thread_id, .. } => (
            super::thread_channel(&thread_id.to_text()),
            serde_json::json!({"thread_id": thread_id.to_text()}),
        ),
        Target::Agent { aid } => (super::agent_channel(aid), serde_json::json!({"aid": aid})),
    };
    // Join first, then read the database: every message is either in what we
    // read or arrives on the queue afterwards; duplicates are skipped by seq.
    let mut sub = hub.subscribe(&channel).await;
    let mut skip_upto = 0;
    if let Target::Thread { thread_id, after } = target {
        match replay(&mut session, &store, &channel, thread_id, after, ready).await {
            Ok(upto) => skip_upto = upto,
            Err(()) => return,
        }
    } else if send_ready(&mut session, &channel, 0, ready).await.is_err() {
        return;
    }

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
                    if session.text(out.text).await.is_err() {
                        break None;
                    }
                }
                None if sub.lagged.load(Ordering::SeqCst) => break Some(CloseReason {
                    code: CloseCode::Other(CLOSE_TOO_SLOW),
                    description: Some("too slow: resume with after=<last seq>".into()),
                }),
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
    let _ = session.close(close).await;
}

async fn send_ready(
    session: &mut actix_ws::Session,
    channel: &str,
    last_seq: i64,
    mut data: serde_json::Value,
) -> Result<(), actix_ws::Closed> {
    if let Some(obj) = data.as_object_mut() {
        if obj.contains_key("thread_id") {
            obj.insert("last_seq".into(), last_seq.into());
        }
    }
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

/// Sends `connection.ready` and the stored messages after `after`; returns
/// the highest seq the client now has (live frames up to it are skipped).
async fn replay(
    session: &mut actix_ws::Session,
    store: &Store,
    channel: &str,
    thread_id: ThreadId,
    after: Option<i64>,
    ready: serde_json::Value,
) -> Result<i64, ()> {
    let Ok(Some(record)) = store.read(move |c| threads::by_id(c, thread_id)).await else {
        let _ = session.clone().close(Some(CloseCode::Error.into())).await;
        return Err(());
    };
    let last_seq = record.view.message_count;
    send_ready(session, channel, last_seq, ready)
        .await
        .map_err(|_| ())?;
    let Some(mut cursor) = after else {
        return Ok(last_seq);
    };
    let record = std::sync::Arc::new(record);
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
            let frame = Event::thread_message(&record, &message).frame(channel);
            session.text(frame).await.map_err(|_| ())?;
        }
    }
    Ok(last_seq.max(after.unwrap_or(0)))
}
