//! The shapes of the tools' inputs and structured results, as JSON schemas
//! for MCP clients. Inputs are parsed from these; results are the API's own
//! JSON passed through unchanged, and the result types here only describe
//! it (they mirror `store::model`, whose fields the API serializes).

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which threads to list.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    Active,
    Closed,
    Archived,
    All,
}

/// A thread's status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ThreadStatus {
    Active,
    Closed,
    Archived,
}

/// What a message is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MsgType {
    Text,
    Request,
    Response,
    System,
}

/// Serializes an enum argument to the API's word for it.
pub fn word<T: Serialize>(value: T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

// ---- inputs ----
//
// Each states the rules the API enforces on it (lengths, forms, ranges),
// from the same constants the API reads (`domain::limits`), as the OpenAPI
// document does; rules no keyword states are in the description.

use crate::domain::limits::{
    kib, AID_PATTERN, CONTENT_CHARS, IDEMPOTENCY_KEY_CHARS, IDEMPOTENCY_KEY_PATTERN,
    MAX_METADATA_BYTES, SUBJECT_CHARS, THREAD_ID_PATTERN,
};
use crate::http::openapi::ONE_LINE;

use super::args::Int;

/// The description of an `aid` argument.
const ACTING_AID: &str =
    "The agent to act as (its AID, 50 lowercase hex digits). May be omitted when the account has one agent.";
/// The description of a `thread_id` argument.
const THREAD_ID: &str = "The thread's id (a UUID: 8-4-4-4-12 hex digits).";

fn metadata_description(what: &str) -> String {
    format!(
        "Free-form JSON object stored with the {what} (at most {} serialized).",
        kib(MAX_METADATA_BYTES)
    )
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListThreadsArgs {
    #[schemars(description = ACTING_AID, regex(pattern = AID_PATTERN))]
    pub aid: Option<String>,
    /// Which threads: active (the default), closed, archived or all.
    pub status: Option<StatusFilter>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<Int<1, 100>>,
    /// Threads to skip (default 0).
    pub offset: Option<Int<0, { i64::MAX }>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadThreadArgs {
    #[schemars(description = THREAD_ID, regex(pattern = THREAD_ID_PATTERN))]
    pub thread_id: String,
    #[schemars(description = ACTING_AID, regex(pattern = AID_PATTERN))]
    pub aid: Option<String>,
    /// Messages per page, 1–200 (default 50), oldest first.
    pub limit: Option<Int<1, 200>>,
    /// Only messages with a seq above this one.
    pub after: Option<Int<0, { i64::MAX }>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateThreadArgs {
    #[schemars(
        description = "The agent that opens the thread (its AID, 50 lowercase hex digits). May be omitted when the account has one agent.",
        regex(pattern = AID_PATTERN)
    )]
    pub aid: Option<String>,
    /// The other agent's AID (50 lowercase hex digits), not `aid` itself.
    #[schemars(regex(pattern = AID_PATTERN))]
    pub target_aid: String,
    #[schemars(
        description = format!("What the thread is about, 1–{SUBJECT_CHARS} characters. {ONE_LINE}"),
        length(min = 1, max = SUBJECT_CHARS)
    )]
    pub subject: Option<String>,
    #[schemars(
        description = format!(
            "The thread's first message (stored as message 1), 1–{CONTENT_CHARS} characters of free text."
        ),
        length(min = 1, max = CONTENT_CHARS)
    )]
    pub first_message: Option<String>,
    // Any JSON here, the API judges it (its words for a non-object).
    #[schemars(description = metadata_description("thread"), with = "Option<Map<String, Value>>")]
    pub metadata: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PostMessageArgs {
    #[schemars(description = THREAD_ID, regex(pattern = THREAD_ID_PATTERN))]
    pub thread_id: String,
    #[schemars(
        description = format!("The message, 1–{CONTENT_CHARS} characters of free text."),
        length(min = 1, max = CONTENT_CHARS)
    )]
    pub content: String,
    #[schemars(
        description = "The agent that speaks (its AID, 50 lowercase hex digits). May be omitted when the account has one agent.",
        regex(pattern = AID_PATTERN)
    )]
    pub aid: Option<String>,
    /// text (the default), request, response or system.
    pub msg_type: Option<MsgType>,
    // Any JSON here, the API judges it (its words for a non-object).
    #[schemars(description = metadata_description("message"), with = "Option<Map<String, Value>>")]
    pub metadata: Option<Value>,
    #[schemars(
        description = format!(
            "Any 1–{IDEMPOTENCY_KEY_CHARS} printable ASCII characters: a retry with the same \
             key stores nothing new and returns the original message."
        ),
        length(min = 1, max = IDEMPOTENCY_KEY_CHARS),
        regex(pattern = IDEMPOTENCY_KEY_PATTERN)
    )]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SetThreadStatusArgs {
    #[schemars(description = THREAD_ID, regex(pattern = THREAD_ID_PATTERN))]
    pub thread_id: String,
    /// The new status: active, closed or archived (closed and archived threads take no messages).
    pub status: ThreadStatus,
    #[schemars(
        description = "The agent that acts (its AID, 50 lowercase hex digits). May be omitted when the account has one agent.",
        regex(pattern = AID_PATTERN)
    )]
    pub aid: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WaitForMessagesArgs {
    #[schemars(
        description = "Wait in this thread (its id, a UUID) for messages with a seq above \
                       `after_seq`. Without it, wait for unread messages from the other \
                       participants of any of the agent's threads.",
        regex(pattern = THREAD_ID_PATTERN)
    )]
    pub thread_id: Option<String>,
    /// With `thread_id`: return messages with a seq above this one (default 0).
    pub after_seq: Option<Int<0, { i64::MAX }>>,
    #[schemars(description = ACTING_AID, regex(pattern = AID_PATTERN))]
    pub aid: Option<String>,
    /// Seconds to wait before answering with no messages, 1–60 (default 30).
    pub timeout_secs: Option<Int<1, { super::wait::MAX_WAIT_SECS as i64 }>>,
}

// ---- results: the API's JSON ----

/// A thread.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Thread {
    pub id: String,
    /// The agent that opened it (null for a turn-taking thread).
    pub creator_aid: Option<String>,
    /// The other agent (null for a turn-taking thread).
    pub target_aid: Option<String>,
    pub subject: Option<String>,
    /// active, closed or archived.
    pub status: String,
    pub message_count: u64,
    pub metadata: Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
}

/// A message.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Message {
    pub id: String,
    pub thread_id: String,
    /// 1, 2, 3 … in the thread, in commit order, without gaps.
    pub seq: u64,
    /// The sending agent (null for turn-taking messages).
    pub sender_aid: Option<String>,
    pub sender: String,
    pub sender_name: String,
    pub content: String,
    /// text, request, response or system.
    pub msg_type: String,
    pub metadata: Map<String, Value>,
    pub created_at: String,
}

/// A thread as one of its agents sees it in a list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ThreadSummary {
    pub id: String,
    /// The other participant.
    pub peer_aid: Option<String>,
    pub peer_name: Option<String>,
    pub subject: Option<String>,
    pub status: String,
    pub message_count: u64,
    pub last_message_at: Option<String>,
    /// Messages from the peer this agent has not read yet.
    pub unread_count: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// A page of an agent's threads, most recent activity first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ThreadList {
    pub threads: Vec<ThreadSummary>,
    /// Every thread matching the filter.
    pub total: u64,
    pub has_more: bool,
    /// The database's generation the list was read in (see `Waited`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}

/// A thread and a page of its messages, oldest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ThreadPage {
    pub thread: Thread,
    pub messages: Vec<Message>,
    pub has_more: bool,
    /// The database's generation this page was read in (see `Waited`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}

/// The thread just created.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CreatedThread {
    pub thread: Thread,
}

/// The message stored (or, on a retry with the same idempotency key, the original).
#[derive(Debug, Serialize, JsonSchema)]
pub struct PostedMessage {
    pub message: Message,
}

/// A thread's new status.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StatusChange {
    pub thread_id: String,
    pub session_id: String,
    pub status: String,
    pub updated_at: String,
}

/// One of the account's agents.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Agent {
    pub aid: String,
    pub name: String,
}

/// The key's account and its agents (oldest first).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Agents {
    pub user_id: String,
    pub agents: Vec<Agent>,
}

/// Messages that arrived, or none at the timeout.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Waited {
    /// Oldest first; from several threads when waiting on all of them.
    pub messages: Vec<Message>,
    /// True when the timeout passed with nothing new.
    pub timed_out: bool,
    /// True when more messages are waiting than this answer holds (more
    /// than a page in a thread): call again, and they come at once, oldest
    /// first, each once.
    pub more: bool,
    /// The database's generation the messages were read in: keep it with
    /// the seqs you hold. Another one on a later call means the server was
    /// restored from a backup in between: what you hold of the thread may
    /// be gone, or another message under its seq; read it again (after_seq
    /// 0) rather than waiting after your old seq.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}
