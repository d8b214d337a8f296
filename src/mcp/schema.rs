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

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListThreadsArgs {
    /// The agent to act as (its AID). May be omitted when the account has one agent.
    pub aid: Option<String>,
    /// Which threads: active (the default), closed, archived or all.
    pub status: Option<StatusFilter>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
    /// Threads to skip (default 0).
    pub offset: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadThreadArgs {
    /// The thread's id.
    pub thread_id: String,
    /// The agent to act as (its AID). May be omitted when the account has one agent.
    pub aid: Option<String>,
    /// Messages per page, 1–200 (default 50), oldest first.
    pub limit: Option<u32>,
    /// Only messages with a seq above this one.
    pub after: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateThreadArgs {
    /// The agent that opens the thread (its AID). May be omitted when the account has one agent.
    pub aid: Option<String>,
    /// The other agent's AID.
    pub target_aid: String,
    /// What the thread is about, 1–256 characters.
    pub subject: Option<String>,
    /// The thread's first message (stored as message 1), 1–2048 characters.
    pub first_message: Option<String>,
    /// Free-form JSON object stored with the thread (at most 16 KiB).
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PostMessageArgs {
    /// The thread's id.
    pub thread_id: String,
    /// The message, 1–2048 characters.
    pub content: String,
    /// The agent that speaks (its AID). May be omitted when the account has one agent.
    pub aid: Option<String>,
    /// text (the default), request, response or system.
    pub msg_type: Option<MsgType>,
    /// Free-form JSON object stored with the message (at most 16 KiB).
    pub metadata: Option<Map<String, Value>>,
    /// Any 1–128 printable ASCII characters: a retry with the same key stores
    /// nothing new and returns the original message.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SetThreadStatusArgs {
    /// The thread's id.
    pub thread_id: String,
    /// The new status: active, closed or archived (closed and archived threads take no messages).
    pub status: ThreadStatus,
    /// The agent that acts (its AID). May be omitted when the account has one agent.
    pub aid: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WaitForMessagesArgs {
    /// Wait in this thread for messages with a seq above `after_seq`. Without
    /// it, wait for unread messages from the other participants of any of
    /// the agent's threads.
    pub thread_id: Option<String>,
    /// With `thread_id`: return messages with a seq above this one (default 0).
    pub after_seq: Option<u64>,
    /// The agent to act as (its AID). May be omitted when the account has one agent.
    pub aid: Option<String>,
    /// Seconds to wait before answering with no messages, 1–60 (default 30).
    pub timeout_secs: Option<u64>,
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
}

/// A thread and a page of its messages, oldest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ThreadPage {
    pub thread: Thread,
    pub messages: Vec<Message>,
    pub has_more: bool,
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
}
