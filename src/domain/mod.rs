//! Parsed inputs and identifiers. Every value a client sends becomes one of
//! these types once, at the edge; code past the handlers cannot hold an
//! invalid one. Each type's limits live here and nowhere else.

pub mod ids;
pub mod json_value;
pub mod kinds;
pub mod limits;
pub mod text;
pub mod turn;

pub use ids::{Aid, LoginKey, ThreadId, UserId};
pub use kinds::{MsgType, StatusFilter, ThreadStatus};
pub use text::{Bounded, IdempotencyKey, Metadata};
pub use turn::{BatchTiming, TurnPolicy};

/// The current time as the API writes it: RFC 3339, UTC, milliseconds, `Z`.
pub fn now() -> String {
    format_time(chrono::Utc::now())
}

/// Formats a UTC time the way the API writes it. (Written out rather than
/// with a strftime pattern, which chrono parses on every call: the writer
/// stamps every message.)
pub fn format_time(t: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    let mut s = String::with_capacity(24);
    let _ = write!(
        s,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        // A leap second reports 1000+ ms; the API has no 60th second.
        t.timestamp_subsec_millis().min(999)
    );
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        for ms in [
            0_i64,
            1_781_611_200_123,
            1_795_433_531_999,
            253_402_300_799_000,
        ] {
            let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
            assert_eq!(
                super::format_time(t),
                t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            );
        }
        assert_eq!(
            super::format_time(chrono::DateTime::from_timestamp_millis(1_781_611_200_123).unwrap()),
            "2026-06-16T12:00:00.123Z"
        );
    }
}
