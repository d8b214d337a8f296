//! Bounded text, metadata objects and idempotency keys.

use super::limits;
use crate::error::{ApiError, ApiResult};

/// A string of 1..=MAX Unicode scalar values (not bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounded<const MAX: usize>(String);

impl<const MAX: usize> Bounded<MAX> {
    /// Parses `s` as the input `field`: non-empty, at most MAX characters,
    /// without U+0000 (PostgreSQL's text cannot hold it: stored, it failed
    /// the writer's whole batch, other clients' posts with it).
    pub fn parse(field: &str, s: String) -> ApiResult<Self> {
        let n = s.chars().count();
        if n == 0 || n > MAX {
            return Err(ApiError::field(
                field,
                format!("{field} must be 1–{MAX} characters"),
            ));
        }
        no_nul(field, &s)?;
        Ok(Bounded(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Refuses text holding U+0000 (NUL), which a JSON string may carry as
/// `\u0000` and PostgreSQL's `text` cannot store.
pub fn no_nul(field: &str, s: &str) -> ApiResult<()> {
    if s.contains('\0') {
        return Err(ApiError::field(
            field,
            format!("{field} must not contain the character U+0000 (NUL)"),
        ));
    }
    Ok(())
}

/// ACSP message content and first messages.
pub type Content = Bounded<{ limits::CONTENT_CHARS }>;
/// Thread subject.
pub type Subject = Bounded<{ limits::SUBJECT_CHARS }>;
/// Agent name.
pub type AgentName = Bounded<{ limits::AGENT_NAME_CHARS }>;
/// One capability a registering agent lists.
pub type Capability = Bounded<{ limits::CAPABILITY_CHARS }>;
/// A registering agent's description.
pub type Description = Bounded<{ limits::DESCRIPTION_CHARS }>;
/// A turn-taking message's free-form sender.
pub type SenderName = Bounded<{ limits::SENDER_NAME_CHARS }>;
/// A turn-taking message's content.
pub type TurnContent = Bounded<{ limits::TURN_CONTENT_CHARS }>;

/// A JSON object of at most `limits::MAX_METADATA_BYTES` serialized, stored
/// as its JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata(std::borrow::Cow<'static, str>);

impl Metadata {
    /// Largest accepted serialized size in bytes.
    pub const MAX_BYTES: usize = limits::MAX_METADATA_BYTES;

    /// Parses an optional JSON value; absent or null is the empty object.
    pub fn parse(field: &str, value: Option<serde_json::Value>) -> ApiResult<Metadata> {
        match value {
            // Most posts carry none: the empty object costs no allocation.
            None | Some(serde_json::Value::Null) => Ok(Metadata("{}".into())),
            Some(v @ serde_json::Value::Object(_)) => {
                let text = v.to_string();
                if text.len() > Self::MAX_BYTES {
                    return Err(ApiError::field(
                        field,
                        format!(
                            "{field} must be at most {} serialized",
                            limits::kib(Self::MAX_BYTES)
                        ),
                    ));
                }
                Ok(Metadata(text.into()))
            }
            Some(_) => Err(ApiError::field(
                field,
                format!("{field} must be a JSON object"),
            )),
        }
    }

    pub fn as_json_text(&self) -> &str {
        &self.0
    }
}

/// The `Idempotency-Key` header: 1 to `limits::IDEMPOTENCY_KEY_CHARS`
/// printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> ApiResult<IdempotencyKey> {
        let ok = (1..=limits::IDEMPOTENCY_KEY_CHARS).contains(&s.len())
            && s.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if ok {
            Ok(IdempotencyKey(s.to_owned()))
        } else {
            Err(ApiError::field(
                "Idempotency-Key",
                format!(
                    "Idempotency-Key must be 1–{} printable ASCII characters",
                    limits::IDEMPOTENCY_KEY_CHARS
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_with_a_nul_is_refused_naming_the_field() {
        let e = Content::parse("content", "a\u{0}b".into()).unwrap_err();
        assert_eq!(e.field_name(), Some("content"));
        assert!(e.to_string().contains("U+0000"), "{e}");
        assert!(Content::parse("content", "a\u{1}b".into()).is_ok());
    }

    #[test]
    fn bounded_text_counts_unicode_scalars_not_bytes() {
        // 2048 four-byte characters are 8192 bytes, and still allowed.
        assert!(Content::parse("content", "😀".repeat(2048)).is_ok());
        assert!(Content::parse("content", "😀".repeat(2049)).is_err());
        assert!(Content::parse("content", String::new()).is_err());
        let err = Subject::parse("subject", "x".repeat(257)).unwrap_err();
        assert_eq!(err.field_name(), Some("subject"));
    }

    #[test]
    fn metadata_must_be_an_object_of_at_most_16_kib() {
        assert_eq!(
            Metadata::parse("metadata", None).unwrap().as_json_text(),
            "{}"
        );
        assert!(Metadata::parse("metadata", Some(json!({"a": 1}))).is_ok());
        assert!(Metadata::parse("metadata", Some(json!([1]))).is_err());
        assert!(Metadata::parse("metadata", Some(json!("x"))).is_err());
        let big = json!({ "k": "x".repeat(16 * 1024) });
        assert!(Metadata::parse("metadata", Some(big)).is_err());
    }

    #[test]
    fn idempotency_keys_are_printable_ascii_up_to_128() {
        assert!(IdempotencyKey::parse("retry-1").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("tab\there").is_err());
    }
}
