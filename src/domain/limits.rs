//! Every size and count limit of the API, defined once. The code that
//! enforces a limit and the message that names it both read it from here.

/// Largest request body, in bytes (`413 PAYLOAD_TOO_LARGE`).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest total size of request header names and values, in bytes
/// (`431 HEADERS_TOO_LARGE`).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest serialized `metadata` or `integrations` object, in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Deepest nesting of arrays and objects in a JSON body, its own object
/// included.
pub const MAX_JSON_DEPTH: usize = 64;
/// Largest WebSocket frame payload a client may send, in bytes (close 1009).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Most parameters in a query string. A route takes at most five; the cap
/// keeps the check for repeated parameters (each against those before it)
/// to a few hundred comparisons, where a URI of thousands of parameters
/// would cost the worker a third of a second.
pub const MAX_QUERY_PARAMS: usize = 32;

/// The `Idempotency-Key` header, in printable ASCII characters.
pub const IDEMPOTENCY_KEY_CHARS: usize = 128;

/// ACSP message content and first messages, in characters.
pub const CONTENT_CHARS: usize = 2048;
/// Thread subject, in characters.
pub const SUBJECT_CHARS: usize = 256;
/// Agent name, in characters.
pub const AGENT_NAME_CHARS: usize = 100;
/// Webhook endpoints one account may have (`409 TOO_MANY_WEBHOOKS`).
pub const WEBHOOKS_PER_ACCOUNT: usize = 20;
/// A webhook endpoint's description, in characters.
pub const WEBHOOK_DESCRIPTION_CHARS: usize = 500;
/// One capability of a registering agent, in characters.
pub const CAPABILITY_CHARS: usize = 100;
/// Most capabilities a registering agent may list.
pub const MAX_CAPABILITIES: usize = 32;
/// A registering agent's description, in characters.
pub const DESCRIPTION_CHARS: usize = 1000;

/// A turn-taking message's free-form sender, in characters.
pub const SENDER_NAME_CHARS: usize = 255;
/// A turn-taking message's content, in characters.
pub const TURN_CONTENT_CHARS: usize = 4000;
/// Most reply parts a turn-taking thread may have waiting for delivery
/// (`409 TOO_MANY_PENDING_PARTS` on a `respond` that would pass it): a
/// new turn cancels them all in one write, which holds the single writer
/// about 7.5 µs a part (release build, SQLite; docs/performance.md).
pub const PENDING_PARTS_PER_THREAD: i64 = 1_000;
/// Most messages in one `submit_messages` batch.
pub const MAX_TURN_BATCH: usize = 20;
/// Longest turn-taking system prompt, in characters.
pub const SYSTEM_PROMPT_CHARS: usize = 8000;

/// An agent's AID as a JSON Schema `pattern` (`Aid::parse`).
pub const AID_PATTERN: &str = "^[0-9a-f]{50}$";
/// A thread id as a JSON Schema `pattern`: the hyphenated UUID form, either
/// case (`ThreadId::parse`).
pub const THREAD_ID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
/// An idempotency key as a JSON Schema `pattern`: printable ASCII.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[ -~]+$";

/// A byte limit as the API's messages write it ("64 KiB").
pub fn kib(bytes: usize) -> String {
    format!("{} KiB", bytes / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_limits_read_as_whole_kibibytes() {
        assert_eq!(kib(MAX_BODY_BYTES), "64 KiB");
        assert_eq!(kib(MAX_HEADER_BYTES), "16 KiB");
        assert_eq!(kib(MAX_METADATA_BYTES), "16 KiB");
        assert_eq!(kib(MAX_FRAME_BYTES), "64 KiB");
    }
}
