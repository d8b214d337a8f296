//! The API's enumerations and their names, in one place: message types,
//! thread statuses and kinds, scheduled-reply states. Each enum has one
//! `as_str` (the name the API and the database use) and one `from_name`
//! built on it; client input goes through `parse` (422 on an unknown name),
//! stored rows through `store::row::stored` (an unknown name is an internal
//! error, never a silent default). A test checks the names against the
//! schema's CHECK constraints.

use crate::error::{ApiError, ApiResult};

/// The type of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Text,
    Request,
    Response,
    System,
}

impl MsgType {
    /// Every message type, in the schema's order.
    pub const ALL: [MsgType; 4] = [
        MsgType::Text,
        MsgType::Request,
        MsgType::Response,
        MsgType::System,
    ];

    /// Parses the input `field`; 422 naming the accepted values otherwise.
    pub fn parse(field: &str, s: &str) -> ApiResult<MsgType> {
        MsgType::from_name(s).ok_or_else(|| {
            ApiError::field(
                field,
                format!("{field} must be one of text, request, response, system"),
            )
        })
    }

    /// The type named `s`, if any.
    pub fn from_name(s: &str) -> Option<MsgType> {
        MsgType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MsgType::Text => "text",
            MsgType::Request => "request",
            MsgType::Response => "response",
            MsgType::System => "system",
        }
    }
}

/// The status of a thread. Only `active` threads take new messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadStatus {
    Active,
    Closed,
    Archived,
}

impl ThreadStatus {
    /// Every status, in the schema's order.
    pub const ALL: [ThreadStatus; 3] = [
        ThreadStatus::Active,
        ThreadStatus::Closed,
        ThreadStatus::Archived,
    ];

    /// Parses the input `field`; 422 naming the accepted values otherwise.
    pub fn parse(field: &str, s: &str) -> ApiResult<ThreadStatus> {
        ThreadStatus::from_name(s).ok_or_else(|| {
            ApiError::field(
                field,
                format!("{field} must be one of active, closed, archived"),
            )
        })
    }

    /// The status named `s`, if any.
    pub fn from_name(s: &str) -> Option<ThreadStatus> {
        ThreadStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ThreadStatus::Active => "active",
            ThreadStatus::Closed => "closed",
            ThreadStatus::Archived => "archived",
        }
    }
}

/// Which kind of thread: between two agents, or a turn-taking one. Never
/// sent by a client; stored in `threads.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    Acsp,
    Turn,
}

impl ThreadKind {
    /// Every kind, in the schema's order.
    pub const ALL: [ThreadKind; 2] = [ThreadKind::Acsp, ThreadKind::Turn];

    pub fn as_str(self) -> &'static str {
        match self {
            ThreadKind::Acsp => "acsp",
            ThreadKind::Turn => "turn",
        }
    }

    /// The kind named `s`, if any.
    pub fn from_name(s: &str) -> Option<ThreadKind> {
        ThreadKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where a scheduled turn-taking reply part stands. Stored in
/// `scheduled_replies.state`. The store's queries spell `'pending'` as an
/// SQL literal on purpose: only a literal lets SQLite use the partial index
/// `scheduled_pending`; the schema test below keeps the names in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyState {
    Pending,
    Delivered,
    Cancelled,
    /// Given up after its delivery failed `store::turn::MAX_ATTEMPTS` times.
    Failed,
}

impl ReplyState {
    /// Every state, in the schema's order.
    pub const ALL: [ReplyState; 4] = [
        ReplyState::Pending,
        ReplyState::Delivered,
        ReplyState::Cancelled,
        ReplyState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplyState::Pending => "pending",
            ReplyState::Delivered => "delivered",
            ReplyState::Cancelled => "cancelled",
            ReplyState::Failed => "failed",
        }
    }
}

/// The `status` filter of the thread list: one status, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Only(ThreadStatus),
    All,
}

impl StatusFilter {
    pub fn parse(field: &str, s: &str) -> ApiResult<StatusFilter> {
        if s == "all" {
            return Ok(StatusFilter::All);
        }
        ThreadStatus::parse(field, s)
            .map(StatusFilter::Only)
            .map_err(|_| {
                ApiError::field(
                    field,
                    format!("{field} must be one of active, closed, archived, all"),
                )
            })
    }
}

/// A message's type.
// The OpenAPI document's name for [`MsgType`]'s values (compared with
// them in the document's unit tests); never built.
#[allow(dead_code)]
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MsgTypeName {
    Text,
    Request,
    Response,
    System,
}

/// A thread's status.
// The OpenAPI document's name for [`ThreadStatus`]'s values (compared
// with them in the document's unit tests); never built.
#[allow(dead_code)]
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ThreadStatusName {
    Active,
    Closed,
    Archived,
}

/// A turn-taking batch's decision.
// The OpenAPI document's name for the values `turn::policy::decide`
// returns (compared with them in the document's unit tests); never built.
#[allow(dead_code)]
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionName {
    Speak,
    StaySilent,
}

/// A tag of a turn-taking batch (social signals on).
// The OpenAPI document's name for the values `turn::policy::tags`
// returns (compared with them in the document's unit tests); never built.
#[allow(dead_code)]
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TurnTagName {
    Fast,
    Burst,
    Comeback,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_and_reject_unknown_values() {
        for s in ["text", "request", "response", "system"] {
            assert_eq!(MsgType::parse("msg_type", s).unwrap().as_str(), s);
        }
        assert!(MsgType::parse("msg_type", "TEXT").is_err());
        for s in ["active", "closed", "archived"] {
            assert_eq!(ThreadStatus::parse("status", s).unwrap().as_str(), s);
        }
        assert_eq!(
            StatusFilter::parse("status", "all").unwrap(),
            StatusFilter::All
        );
        assert!(StatusFilter::parse("status", "deleted").is_err());
        assert_eq!(ThreadKind::from_name("turn"), Some(ThreadKind::Turn));
        assert_eq!(ThreadStatus::from_name("Active"), None);
    }

    /// The names the schema's CHECK admits for `column` within the table
    /// `table`: `CHECK (column IN ('a', ...))`, or `CHECK (column = 'a' OR
    /// column = 'b' ...)` (how migration 5 writes the hot ones).
    fn schema_names(table: &str, column: &str) -> Vec<String> {
        let schema = include_str!("../../schema.sql");
        let start = schema
            .find(&format!("CREATE TABLE {table}"))
            .unwrap_or_else(|| panic!("schema.sql has table {table}"));
        let body = &schema[start..];
        let body = &body[..body.find(");").expect("the table ends")];
        let quoted = |list: &str| -> Vec<String> {
            list.split(',')
                .map(|n| n.trim().trim_matches('\'').to_owned())
                .collect()
        };
        let check = format!("CHECK ({column} IN (");
        if let Some(at) = body.find(&check).map(|at| at + check.len()) {
            return quoted(&body[at..at + body[at..].find("))").expect("the CHECK ends")]);
        }
        let check = format!("CHECK ({column} = ");
        let at = body
            .find(&check)
            .unwrap_or_else(|| panic!("{table}.{column} has a CHECK"))
            + check.len();
        let list = &body[at..at + body[at..].find("),").expect("the CHECK ends")];
        let list = list.split_whitespace().collect::<Vec<_>>().join(" ");
        quoted(&list.replace(&format!(" OR {column} = "), ","))
    }

    fn names(all: impl IntoIterator<Item = &'static str>) -> Vec<String> {
        all.into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn every_enum_names_exactly_what_the_schema_admits() {
        assert_eq!(
            names(ThreadKind::ALL.map(ThreadKind::as_str)),
            schema_names("threads", "kind")
        );
        assert_eq!(
            names(ThreadStatus::ALL.map(ThreadStatus::as_str)),
            schema_names("threads", "status")
        );
        assert_eq!(
            names(MsgType::ALL.map(MsgType::as_str)),
            schema_names("messages", "msg_type")
        );
        assert_eq!(
            names(ReplyState::ALL.map(ReplyState::as_str)),
            schema_names("scheduled_replies", "state")
        );
        // The event kinds are checked beside the log (store::events).
    }
}
