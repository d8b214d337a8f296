//! Parsed inputs and identifiers. Every value a client sends becomes one of
//! these types once, at the edge; code past the handlers cannot hold an
//! invalid one. Each type's limits live here and nowhere else.

pub mod ids;
pub mod kinds;
pub mod text;

pub use ids::{Aid, LoginKey, ThreadId, UserId};
pub use kinds::{MsgType, StatusFilter, ThreadStatus};
pub use text::{Bounded, IdempotencyKey, Metadata};

/// The current time as the API writes it: RFC 3339, UTC, milliseconds, `Z`.
pub fn now() -> String {
    format_time(chrono::Utc::now())
}

/// Formats a UTC time the way the API writes it.
pub fn format_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}
