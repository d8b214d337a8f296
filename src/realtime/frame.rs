//! Frames: which channels hear an event, and its WebSocket text frame on a
//! channel (encoded once per channel, shared by all of that channel's
//! subscribers). The events themselves are `crate::events`.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::events::{Event, Kind};

/// Every channel that hears `event`: a thread's channel hears everything
/// that happens in it except its creation and deletion (its subscribers are
/// closed then); an agent's inbox hears the creation, messages, status
/// changes and deletion of its threads; log-only events
/// (reply parts scheduled or cancelled) go nowhere.
pub fn channels(event: &Event) -> impl Iterator<Item = String> + '_ {
    let (thread, inboxes) = match event.kind {
        Kind::ThreadCreated => (false, true),
        Kind::ThreadMessage | Kind::ThreadStatus => (true, true),
        // The thread's own subscribers are closed instead (4004, or an SSE
        // `closed` event): see `revocation`.
        Kind::ThreadDeleted => (false, true),
        Kind::ReplyDelivered | Kind::ReplyFailed | Kind::Typing | Kind::Signal => (true, false),
        Kind::ReplyScheduled | Kind::ReplyCancelled => (false, false),
    };
    let inboxes: &[String] = if inboxes { &event.participants } else { &[] };
    thread
        .then(|| thread_channel(&event.thread_id))
        .into_iter()
        .chain(inboxes.iter().map(|aid| agent_channel(aid)))
}

/// What a thread's channel name starts with (its id follows).
pub const THREAD_PREFIX: &str = "turn-taking-thread/";
/// What an agent's inbox channel name starts with (its AID follows).
pub const AGENT_PREFIX: &str = "agent/";

/// The channel name of a thread.
pub fn thread_channel(thread_id: &str) -> String {
    format!("{THREAD_PREFIX}{thread_id}")
}

/// The channel name of an agent's inbox.
pub fn agent_channel(aid: &str) -> String {
    format!("{AGENT_PREFIX}{aid}")
}

/// The encoded text frame of `event` on `channel`.
pub fn event_frame(event: &Event, channel: &str) -> Bytes {
    encode(
        &event.id,
        event.kind.as_str(),
        channel,
        event.seq,
        &event.data,
    )
}

/// What a `connection.ready` frame is about.
pub enum ReadyOn<'a> {
    /// A thread, its last seq as it stood at join.
    Thread { id: &'a str, last_seq: i64 },
    /// An agent's inbox.
    Agent { aid: &'a str },
}

/// The `connection.ready` frame a socket or an event stream on `channel`
/// starts with, in the database's `generation`: on a thread
/// `{"thread_id", "last_seq", "generation"}`, on an agent's inbox
/// `{"aid", "generation"}`.
pub fn ready(channel: &str, on: ReadyOn<'_>, generation: &str) -> Bytes {
    let (last_seq, data) = match on {
        ReadyOn::Thread { id, last_seq } => (
            last_seq,
            serde_json::json!({ "thread_id": id, "last_seq": last_seq, "generation": generation }),
        ),
        ReadyOn::Agent { aid } => (
            0,
            serde_json::json!({ "aid": aid, "generation": generation }),
        ),
    };
    let data = serde_json::value::to_raw_value(&data).expect("expect: a JSON value serializes");
    encode(
        &crate::events::new_event_id(),
        "connection.ready",
        channel,
        last_seq,
        &data,
    )
}

/// The encoded text frame `{"id", "type", "channel", "seq", "data"}`.
pub fn encode(id: &str, kind: &str, channel: &str, seq: i64, data: &RawValue) -> Bytes {
    #[derive(Serialize)]
    struct Frame<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        channel: &'a str,
        seq: i64,
        data: &'a RawValue,
    }
    let frame = Frame {
        id,
        kind,
        channel,
        seq,
        data,
    };
    let json = serde_json::to_vec(&frame).expect("expect: a frame of plain JSON serializes");
    super::body::text_frame(&json)
}
