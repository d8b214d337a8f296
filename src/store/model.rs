//! The records the store hands out. The public ones serialize to exactly the
//! JSON objects of the API; `ThreadRecord` carries the internal ids that
//! access checks need.

use std::sync::OnceLock;

use bytes::Bytes;
use serde::Serialize;

use super::accounts::AgentRef;

/// A thread as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Thread {
    pub id: String,
    pub creator_aid: Option<String>,
    pub target_aid: Option<String>,
    pub subject: Option<String>,
    #[schema(value_type = crate::domain::kinds::ThreadStatusName)]
    pub status: &'static str,
    pub message_count: i64,
    #[schema(value_type = Object)]
    pub metadata: Box<serde_json::value::RawValue>,
    pub created_at: String,
    pub updated_at: String,
}

/// A message as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub id: String,
    pub thread_id: String,
    pub seq: i64,
    /// The sending agent; null for turn-taking messages.
    pub sender_aid: Option<String>,
    /// The AID for ACSP messages, the free-form sender for turn-taking ones.
    pub sender: String,
    /// The agent's name, or the free-form sender.
    pub sender_name: String,
    pub content: String,
    #[schema(value_type = crate::domain::kinds::MsgTypeName)]
    pub msg_type: &'static str,
    #[schema(value_type = Object)]
    pub metadata: Box<serde_json::value::RawValue>,
    pub created_at: String,
}

/// One row of the thread list, seen from one agent.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ThreadSummary {
    pub id: String,
    pub peer_aid: Option<String>,
    pub peer_name: Option<String>,
    pub subject: Option<String>,
    #[schema(value_type = crate::domain::kinds::ThreadStatusName)]
    pub status: &'static str,
    pub message_count: i64,
    pub last_message_at: Option<String>,
    pub unread_count: i64,
    pub created_at: String,
    pub updated_at: String,
}

pub use crate::domain::kinds::ThreadKind;

/// A participant of an ACSP thread.
#[derive(Debug, Clone)]
pub struct Participant {
    pub agent_id: i64,
    pub account_id: i64,
    pub aid: String,
}

/// A thread with what access checks and writers need.
#[derive(Debug, Clone)]
pub struct ThreadRecord {
    pub row_id: i64,
    pub kind: ThreadKind,
    pub owner_account_id: i64,
    /// Creator and target, for ACSP threads.
    pub participants: Option<(Participant, Participant)>,
    pub integrations: Option<String>,
    pub turn_epoch: i64,
    pub view: Thread,
}

/// What one statement found for a read of a thread (see
/// `threads::reader_view`): the agent named by the request's AID, whoever
/// owns it; the thread, whoever may see it; that agent's read mark there
/// (0 if none). `access::reading` decides what the caller may see.
#[derive(Debug)]
pub struct ReaderView {
    pub agent: Option<AgentRef>,
    pub thread: Option<ThreadRecord>,
    pub read_mark: i64,
    /// The start of a page's answer, the thread's JSON included, made by
    /// the first read that answers from this view; kept with the view
    /// (and forgotten with it, at the next commit), so a page read again
    /// does not serialize the same thread again.
    pub page_head: OnceLock<Bytes>,
}

/// Which thread, of those that have had one public id: `open_thread` with
/// the id of a deleted thread creates a new thread under it, and SQLite may
/// give its row the deleted row's id, but not also its creation time. What
/// is remembered of a thread by its public id (a kept page, a typing
/// watch) holds one, and is used only while the thread it names is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incarnation {
    row_id: i64,
    created_at: Box<str>,
}

impl Incarnation {
    pub fn of(thread: &ThreadRecord) -> Incarnation {
        Incarnation {
            row_id: thread.row_id,
            created_at: thread.view.created_at.as_str().into(),
        }
    }

    /// Whether `thread` is the thread this names.
    pub fn is(&self, thread: &ThreadRecord) -> bool {
        self.row_id == thread.row_id && *self.created_at == *thread.view.created_at
    }
}

impl ThreadRecord {
    /// The AIDs of the participants (empty for turn-taking threads).
    pub fn participant_aids(&self) -> Vec<String> {
        match &self.participants {
            Some((a, b)) => vec![a.aid.clone(), b.aid.clone()],
            None => Vec::new(),
        }
    }
}

/// Reads back a JSON text column that the store wrote from a valid object.
pub(crate) fn raw_json(text: String) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(text).unwrap_or_else(|_| {
        // The store only writes serialized objects; fall back rather than fail a read.
        serde_json::value::RawValue::from_string("{}".to_owned()).expect("expect: {} is JSON")
    })
}
