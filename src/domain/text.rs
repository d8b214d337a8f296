//! Bounded text, metadata objects and idempotency keys.

use serde_json::value::RawValue;

use super::{json_value, limits};
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

/// A one-line name or label: [`Bounded`] text that [`one_line`] accepts.
/// Names are shown to people (inspector, terminals, other agents' prompts),
/// so they must not carry terminal escapes, line breaks or bidi overrides,
/// nor be blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<const MAX: usize>(String);

impl<const MAX: usize> Line<MAX> {
    pub fn parse(field: &str, s: String) -> ApiResult<Self> {
        let s = Bounded::<MAX>::parse(field, s)?.into_string();
        one_line(field, &s)?;
        Ok(Line(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A name: a [`Line`] that neither starts nor ends with white space.
/// " alice" and "alice" would show alike and be two names (two agents'
/// names side by side, two turn-taking senders with their own timing);
/// refused rather than trimmed, so nothing is changed silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name<const MAX: usize>(String);

impl<const MAX: usize> Name<MAX> {
    pub fn parse(field: &str, s: String) -> ApiResult<Self> {
        let s = Line::<MAX>::parse(field, s)?.into_string();
        if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
            return Err(ApiError::field(
                field,
                format!("{field} must not start or end with white space"),
            ));
        }
        Ok(Name(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Free text shown to people (an agent's description, read in the
/// inspector, in terminals, in other agents' prompts): [`Bounded`] text that
/// [`readable`] accepts. Unlike a [`Line`] it may span lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prose<const MAX: usize>(String);

impl<const MAX: usize> Prose<MAX> {
    pub fn parse(field: &str, s: String) -> ApiResult<Self> {
        let s = Bounded::<MAX>::parse(field, s)?.into_string();
        readable(field, &s)?;
        Ok(Prose(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The bidi embeddings, overrides (U+202A–U+202E) and isolates
/// (U+2066–U+2069): they reorder the text shown after them ("Trojan
/// Source"), so a name could show as something it is not.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that show as nothing: whitespace and Unicode's
/// default-ignorable code points (DerivedCoreProperties.txt,
/// `Default_Ignorable_Code_Point`: "rendered invisibly"), among them the
/// joiners, variation selectors, tag characters and fillers. Allowed
/// inside a name (U+200D joins emoji, U+200C is needed in Persian, U+FE0F
/// and the tags make emoji and flags), not as all of it.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFF8}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// The line and paragraph separators (U+2028, U+2029): line breaks that
/// are not control characters.
fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

/// Refuses, naming `field`, text that is not one visible line: any C0 or
/// C1 control character (ESC, newline and tab included; U+0000–U+001F,
/// U+007F–U+009F), a line or paragraph separator, any bidi control, or
/// only whitespace and invisible characters.
pub fn one_line(field: &str, s: &str) -> ApiResult<()> {
    if let Some(c) = s
        .chars()
        .find(|&c| c.is_control() || is_bidi_control(c) || is_line_separator(c))
    {
        return Err(ApiError::field(
            field,
            format!(
                "{field} must be one line without control characters (found U+{:04X})",
                c as u32
            ),
        ));
    }
    visible(field, s)
}

/// Refuses, naming `field`, text of only whitespace and invisible characters.
fn visible(field: &str, s: &str) -> ApiResult<()> {
    if s.chars().all(is_invisible) {
        return Err(ApiError::field(
            field,
            format!("{field} must contain a visible character"),
        ));
    }
    Ok(())
}

/// Refuses, naming `field`, free text a person cannot safely be shown:
/// a C0 or C1 control character other than tab, newline and the CR of a
/// CRLF (a lone CR returns a terminal's cursor, to overwrite what came
/// before it), any bidi control, or only whitespace and invisible
/// characters.
pub fn readable(field: &str, s: &str) -> ApiResult<()> {
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let line_break = match c {
            '\t' | '\n' => true,
            '\r' => chars.peek() == Some(&'\n'),
            _ => false,
        };
        if (c.is_control() && !line_break) || is_bidi_control(c) {
            return Err(ApiError::field(
                field,
                format!(
                    "{field} must not contain control characters other than tab and line \
                     breaks, nor bidi controls (found U+{:04X})",
                    c as u32
                ),
            ));
        }
    }
    visible(field, s)
}

/// ACSP message content and first messages.
pub type Content = Bounded<{ limits::CONTENT_CHARS }>;
/// Thread subject.
pub type Subject = Line<{ limits::SUBJECT_CHARS }>;
/// Agent name.
pub type AgentName = Name<{ limits::AGENT_NAME_CHARS }>;
/// One capability a registering agent lists.
pub type Capability = Line<{ limits::CAPABILITY_CHARS }>;
/// A registering agent's description.
pub type Description = Prose<{ limits::DESCRIPTION_CHARS }>;
/// A webhook endpoint's description.
pub type WebhookDescription = Line<{ limits::WEBHOOK_DESCRIPTION_CHARS }>;

impl WebhookDescription {
    /// An optional description: absent or empty is none.
    pub fn parse_optional(description: Option<String>) -> ApiResult<Option<String>> {
        description
            .filter(|d| !d.is_empty())
            .map(|d| Self::parse("description", d).map(Line::into_string))
            .transpose()
    }
}
/// A turn-taking message's free-form sender, kept as given (API.md): a chat
/// app relays people's display names, padding included, so unlike an
/// [`AgentName`] it may start or end with white space.
pub type SenderName = Line<{ limits::SENDER_NAME_CHARS }>;
/// A turn-taking message's content.
pub type TurnContent = Bounded<{ limits::TURN_CONTENT_CHARS }>;

/// A JSON object of at most `limits::MAX_METADATA_BYTES` serialized, stored
/// as its JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata(std::borrow::Cow<'static, str>);

impl Metadata {
    /// Largest accepted serialized size in bytes.
    pub const MAX_BYTES: usize = limits::MAX_METADATA_BYTES;

    /// Parses an optional JSON value, as the body held it; absent or null
    /// is the empty object. Kept as sent, less the whitespace between its
    /// tokens: a client's numbers come back as written (read as doubles
    /// and written again, an integer past 64 bits was rounded, `-0` came
    /// back `-0.0`), and its size is counted as kept. A key given twice in
    /// one of its objects is refused (which one was meant is a guess).
    pub fn parse(field: &str, value: Option<&RawValue>) -> ApiResult<Metadata> {
        let text = match value.map(RawValue::get) {
            // Most posts carry none: the empty object costs no allocation.
            None | Some("null") => return Ok(Metadata("{}".into())),
            Some(text) => text,
        };
        if !text.starts_with('{') {
            return Err(ApiError::field(
                field,
                format!("{field} must be a JSON object"),
            ));
        }
        if json_value::repeats_a_key(text) {
            return Err(ApiError::field(
                field,
                format!("{field} gives a key more than once in one object"),
            ));
        }
        let text = json_value::compact(text);
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
    fn names_are_one_visible_line() {
        for bad in [
            "a\u{1b}[31mred",
            "two\nlines",
            "tab\there",
            "c1\u{85}x",
            "del\u{7f}",
            "evil\u{202E}gnp.exe",
            "iso\u{2066}x\u{2069}",
            " ",
            "\u{200B}\u{FEFF}",
            "\u{3000}\u{2060}",
            " ada",
            "ada ",
            "\u{3000}ada",
            "ada\u{A0}",
        ] {
            let e = AgentName::parse("agent_name", bad.into()).unwrap_err();
            assert_eq!(e.field_name(), Some("agent_name"), "{bad:?}");
        }
        for good in [
            "Ada",
            "ada bot",
            "👨\u{200D}👩\u{200D}👧",
            "❤\u{FE0F}",
            "می\u{200C}خواهم",
            "שלום",
        ] {
            assert!(
                AgentName::parse("agent_name", good.into()).is_ok(),
                "{good:?}"
            );
        }
        // Message content stays free text.
        assert!(Content::parse("content", "a\n\tb \u{202E}".into()).is_ok());
    }

    #[test]
    fn descriptions_keep_line_breaks_but_not_other_controls() {
        for bad in [
            "a\u{1b}[2Jb",
            "cursor\rback",
            "end\r",
            "c1\u{9b}31m",
            "del\u{7f}",
            "bell\u{7}",
            "evil\u{202E}gnp.exe",
            "emb\u{202A}x",
            "iso\u{2068}x\u{2069}",
            "\n\t ",
            "\u{200B}\u{FEFF}",
        ] {
            let e = Description::parse("description", bad.into()).unwrap_err();
            assert_eq!(e.field_name(), Some("description"), "{bad:?}");
        }
        for good in [
            "Finds things",
            "line one\nline two",
            "windows\r\nline\r\n",
            "a\ttab",
            "שלום\u{200F} and 👩\u{200D}💻",
        ] {
            assert!(
                Description::parse("description", good.into()).is_ok(),
                "{good:?}"
            );
        }
        let e = Description::parse("description", "a\u{1b}b".into()).unwrap_err();
        assert!(e.to_string().contains("U+001B"), "{e}");
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
        let parse = |json: &str| {
            let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
            Metadata::parse("metadata", Some(&raw))
        };
        assert_eq!(
            Metadata::parse("metadata", None).unwrap().as_json_text(),
            "{}"
        );
        assert_eq!(parse("null").unwrap().as_json_text(), "{}");
        assert_eq!(
            parse(r#"{ "a" : 1e2 }"#).unwrap().as_json_text(),
            r#"{"a":1e2}"#
        );
        assert!(parse("[1]").is_err());
        assert!(parse(r#""x""#).is_err());
        assert!(parse(r#"{"a":1,"a":2}"#).is_err());
        let big = json!({ "k": "x".repeat(16 * 1024) }).to_string();
        assert!(parse(&big).is_err());
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
