//! Events: what is published after a commit, and how a frame is serialized
//! (once per channel, shared by all of that channel's subscribers).

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::{agent_channel, thread_channel};
use crate::store::model::{Message, Thread, ThreadRecord};

/// The payload of an event.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EventData {
    /// Shared with whoever stored it: publishing copies no message text.
    Message(Arc<Message>),
    Thread(Thread),
    Json(serde_json::Value),
}

/// One event, routed to the thread's channel and/or agents' inboxes.
#[derive(Debug, Clone)]
pub struct Event {
    /// Unique per event; a message's event reuses the message id, so a replay
    /// sends the same id again.
    pub id: String,
    /// `thread.message`, `thread.status`, `thread.created`, `turn_taking.*`.
    pub kind: &'static str,
    /// The thread's seq this event belongs to (the message's own for messages).
    pub seq: i64,
    /// Whether `seq` is a stored message's seq (resume de-duplicates those).
    pub carries_message: bool,
    /// The thread's channel, when the event goes there.
    pub thread_channel: Option<String>,
    /// The agents whose inbox gets the event.
    pub inbox_aids: Vec<String>,
    pub data: EventData,
}

impl Event {
    /// A stored message, for the thread and its participants' inboxes.
    pub fn thread_message(thread: &ThreadRecord, message: Arc<Message>) -> Event {
        Event {
            id: message.id.clone(),
            kind: "thread.message",
            seq: message.seq,
            carries_message: true,
            thread_channel: Some(thread_channel(&thread.view.id)),
            inbox_aids: thread.participant_aids(),
            data: EventData::Message(message),
        }
    }

    /// A status change.
    pub fn thread_status(thread: &ThreadRecord, status: &str, updated_at: &str) -> Event {
        Event {
            id: new_event_id(),
            kind: "thread.status",
            seq: thread.view.message_count,
            carries_message: false,
            thread_channel: Some(thread_channel(&thread.view.id)),
            inbox_aids: thread.participant_aids(),
            data: EventData::Json(serde_json::json!({
                "thread_id": thread.view.id, "status": status, "updated_at": updated_at,
            })),
        }
    }

    /// A new ACSP thread, for both participants' inboxes.
    pub fn thread_created(thread: &ThreadRecord) -> Event {
        Event {
            id: new_event_id(),
            kind: "thread.created",
            seq: 0,
            carries_message: false,
            thread_channel: None,
            inbox_aids: thread.participant_aids(),
            data: EventData::Thread(thread.view.clone()),
        }
    }

    /// An event for the thread's channel only (turn-taking).
    pub fn on_thread(
        thread_id: &str,
        kind: &'static str,
        seq: i64,
        data: serde_json::Value,
    ) -> Event {
        Event {
            id: new_event_id(),
            kind,
            seq,
            carries_message: false,
            thread_channel: Some(thread_channel(thread_id)),
            inbox_aids: Vec::new(),
            data: EventData::Json(data),
        }
    }

    /// Every channel this event goes to.
    pub fn channels(&self) -> impl Iterator<Item = String> + '_ {
        self.thread_channel
            .iter()
            .cloned()
            .chain(self.inbox_aids.iter().map(|aid| agent_channel(aid)))
    }

    /// The encoded WebSocket text frame of this event on `channel`.
    pub fn ws_frame(&self, channel: &str) -> Bytes {
        #[derive(Serialize)]
        struct Frame<'a> {
            id: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            channel: &'a str,
            seq: i64,
            data: &'a EventData,
        }
        let frame = Frame {
            id: &self.id,
            kind: self.kind,
            channel,
            seq: self.seq,
            data: &self.data,
        };
        let json =
            serde_json::to_string(&frame).expect("expect: event payloads are plain JSON values");
        super::body::text_frame(json.as_bytes())
    }
}

/// A fresh event id (time-ordered UUID).
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}
