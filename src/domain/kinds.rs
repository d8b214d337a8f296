//! The API's enumerations: message types and thread statuses.

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
    pub fn parse(field: &str, s: &str) -> ApiResult<MsgType> {
        match s {
            "text" => Ok(MsgType::Text),
            "request" => Ok(MsgType::Request),
            "response" => Ok(MsgType::Response),
            "system" => Ok(MsgType::System),
            _ => Err(ApiError::field(
                field,
                format!("{field} must be one of text, request, response, system"),
            )),
        }
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
    pub fn parse(field: &str, s: &str) -> ApiResult<ThreadStatus> {
        match s {
            "active" => Ok(ThreadStatus::Active),
            "closed" => Ok(ThreadStatus::Closed),
            "archived" => Ok(ThreadStatus::Archived),
            _ => Err(ApiError::field(
                field,
                format!("{field} must be one of active, closed, archived"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ThreadStatus::Active => "active",
            ThreadStatus::Closed => "closed",
            ThreadStatus::Archived => "archived",
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
    }
}
