//! JSON request bodies, before and after serde.
//!
//! Before: one pass over the body that refuses what serde_json lets through
//! in the values it skips (the fields a route ignores): invalid UTF-8, lone
//! surrogate escapes, control characters in strings, numbers too large for a
//! double, and nesting deeper than [`MAX_DEPTH`]. A body is either valid
//! JSON all through or refused. It looks at tokens only (strings, escapes,
//! numbers, brackets); the typed parse that follows checks the grammar. It
//! allocates nothing and reads each byte once (non-ASCII strings twice), so
//! it costs next to nothing beside the parse.
//!
//! After: serde's complaints about types (``invalid type: integer `5`,
//! expected struct PostMessageBody``) rewritten in the API's words
//! (`request body must be a JSON object, not a number`), never echoing the
//! client's value or a Rust type name.

use std::fmt;

use serde::Deserialize;

use crate::error::{ApiError, ApiResult};

/// Deepest nesting of arrays and objects accepted (defined in domain).
pub use crate::domain::limits::MAX_JSON_DEPTH as MAX_DEPTH;

/// The first defect found, with its byte offset in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// A string holds bytes that are not UTF-8.
    InvalidUtf8 { at: usize },
    /// A `\` escape that JSON does not have (or a `\u` without 4 hex digits).
    BadEscape { at: usize },
    /// A `\uD800`–`\uDFFF` escape that is not half of a surrogate pair.
    LoneSurrogate { at: usize },
    /// A raw control character (U+0000–U+001F) inside a string.
    ControlCharacter { at: usize },
    /// A number whose magnitude a double cannot hold (e.g. `1e400`).
    NumberOutOfRange { at: usize },
    /// More than [`MAX_DEPTH`] nested arrays and objects.
    TooDeep { at: usize },
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::InvalidUtf8 { at } => {
                write!(f, "malformed JSON: a string is not valid UTF-8 (byte {at})")
            }
            Defect::BadEscape { at } => {
                write!(f, "malformed JSON: invalid escape in a string (byte {at})")
            }
            Defect::LoneSurrogate { at } => write!(
                f,
                "malformed JSON: \\u escape of a lone surrogate (U+D800–U+DFFF) in a string (byte {at})"
            ),
            Defect::ControlCharacter { at } => write!(
                f,
                "malformed JSON: control character in a string; escape it (byte {at})"
            ),
            Defect::NumberOutOfRange { at } => {
                write!(f, "malformed JSON: number out of range (byte {at})")
            }
            Defect::TooDeep { at } => write!(
                f,
                "malformed JSON: arrays and objects nested deeper than {MAX_DEPTH} levels (byte {at})"
            ),
        }
    }
}

/// Checks every token of `body`; the first defect found, if any.
pub fn check(body: &[u8]) -> Result<(), Defect> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        i = match b {
            b'"' => string(body, i + 1)?,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Defect::TooDeep { at: i });
                }
                i + 1
            }
            // An unbalanced closer is a grammar error: the parse reports it.
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i + 1
            }
            b'-' | b'0'..=b'9' => number(body, i)?,
            _ => i + 1,
        };
    }
    Ok(())
}

/// Checks a string whose contents start at `start`; returns the offset
/// after its closing quote (or the end of an unterminated one, which the
/// parse reports).
fn string(body: &[u8], start: usize) -> Result<usize, Defect> {
    let mut i = start;
    loop {
        // Plain ASCII text, eight bytes at a time.
        while let Some(word) = body[i..].first_chunk::<8>() {
            if needs_a_look(u64::from_le_bytes(*word)) {
                break;
            }
            i += 8;
        }
        let Some(&b) = body.get(i) else {
            return Ok(i);
        };
        match b {
            b'"' => {
                return Ok(i + 1);
            }
            b'\\' => i = escape(body, i)?,
            0x00..=0x1f => return Err(Defect::ControlCharacter { at: i }),
            0x80.. => i = utf8_char(body, i)?,
            _ => i += 1,
        }
    }
}

/// Checks the multi-byte character whose first byte is at `at`; returns the
/// offset after it. The ranges are Unicode's table of well-formed UTF-8
/// (no overlong forms, no encoded surrogates, nothing past U+10FFFF).
fn utf8_char(body: &[u8], at: usize) -> Result<usize, Defect> {
    let byte_in =
        |k: usize, lo: u8, hi: u8| body.get(at + k).is_some_and(|b| (lo..=hi).contains(b));
    let tail = |k: usize| byte_in(k, 0x80, 0xBF);
    let width = match body[at] {
        0xC2..=0xDF if tail(1) => 2,
        0xE0 if byte_in(1, 0xA0, 0xBF) && tail(2) => 3,
        0xE1..=0xEC | 0xEE..=0xEF if tail(1) && tail(2) => 3,
        0xED if byte_in(1, 0x80, 0x9F) && tail(2) => 3,
        0xF0 if byte_in(1, 0x90, 0xBF) && tail(2) && tail(3) => 4,
        0xF1..=0xF3 if tail(1) && tail(2) && tail(3) => 4,
        0xF4 if byte_in(1, 0x80, 0x8F) && tail(2) && tail(3) => 4,
        _ => return Err(Defect::InvalidUtf8 { at }),
    };
    Ok(at + width)
}

/// Whether any of the eight bytes is a quote, a backslash, a control
/// character or not ASCII (the classic zero-byte test; it can also flag a
/// byte next to a real hit, which then takes the byte-by-byte path anyway).
fn needs_a_look(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    (quote | backslash | control | (word & HIGH)) != 0
}

/// Checks the escape at `at` (its backslash); returns the offset after it.
fn escape(body: &[u8], at: usize) -> Result<usize, Defect> {
    match body.get(at + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(at + 2),
        Some(b'u') => {
            let unit = hex4(body, at + 2).ok_or(Defect::BadEscape { at })?;
            match unit {
                0xD800..=0xDBFF => {
                    // A high surrogate must be followed by an escaped low one.
                    let low = (body.get(at + 6..at + 8) == Some(b"\\u"))
                        .then(|| hex4(body, at + 8))
                        .flatten();
                    match low {
                        Some(0xDC00..=0xDFFF) => Ok(at + 12),
                        _ => Err(Defect::LoneSurrogate { at }),
                    }
                }
                0xDC00..=0xDFFF => Err(Defect::LoneSurrogate { at }),
                _ => Ok(at + 6),
            }
        }
        // Truncated: the parse reports the missing end.
        None => Ok(at + 1),
        Some(_) => Err(Defect::BadEscape { at }),
    }
}

/// The four hex digits at `at`, as a number.
fn hex4(body: &[u8], at: usize) -> Option<u16> {
    let digits = body.get(at..at + 4)?;
    digits.iter().try_fold(0u16, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc << 4 | v as u16)
    })
}

/// Checks the number starting at `start`; returns the offset after it.
fn number(body: &[u8], start: usize) -> Result<usize, Defect> {
    let mut i = start;
    let mut int_digits = 0usize;
    let mut in_int = true;
    let mut exponent = false;
    while let Some(&b) = body.get(i) {
        match b {
            b'0'..=b'9' => int_digits += usize::from(in_int),
            b'-' | b'+' => {}
            b'.' => in_int = false,
            b'e' | b'E' => {
                in_int = false;
                exponent = true;
            }
            _ => break,
        }
        i += 1;
    }
    // Without an exponent, 308 digits stay below f64::MAX (1.8e308): the
    // common case needs no conversion.
    if !exponent && int_digits <= 308 {
        return Ok(i);
    }
    let text = std::str::from_utf8(&body[start..i]).unwrap_or("");
    match text.parse::<f64>() {
        // Rust rounds an overflowing literal to infinity, as serde_json
        // would before refusing it; tiny ones round to zero and are fine.
        Ok(v) if v.is_infinite() => Err(Defect::NumberOutOfRange { at: start }),
        // Well-formed, or malformed in a way the parse reports.
        _ => Ok(i),
    }
}

/// Parses a body into `T` (a struct of the API): checked by [`check`], then
/// deserialized, every error a 422 in the API's words that names the field
/// at fault. An empty body reads as `null` (for `Option<T>`).
pub fn parse<'de, T: Deserialize<'de>>(body: &'de [u8]) -> ApiResult<T> {
    const NOT_AN_OBJECT: &str = "request body must be a JSON object";
    check(body).map_err(|d| ApiError::invalid(d.to_string()))?;
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        // Fine where the whole body is optional (`Option<T>`).
        None => return serde_json::from_str("null").map_err(|_| ApiError::invalid(NOT_AN_OBJECT)),
        // serde reads a struct from an array too (fields by position); the
        // API takes objects only.
        Some(b'[') => return Err(ApiError::invalid(format!("{NOT_AN_OBJECT}, not an array"))),
        Some(_) => {}
    }
    // The plain parse first: tracking the path costs a copy of every key
    // and a wrapper per value (measured on every post). Parsing is
    // deterministic, so a body it refuses is parsed again, tracked, to
    // name the field at fault.
    let de = &mut serde_json::Deserializer::from_slice(body);
    if let Ok(value) = T::deserialize(&mut *de).and_then(|value| de.end().map(|()| value)) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            return ApiError::invalid(format!("malformed JSON: {inner}"));
        }
        let path = (path != "." && !path.is_empty()).then_some(path);
        match type_error(path.as_deref(), &inner.to_string()) {
            (message, Some(field)) => ApiError::field(&field, message),
            (message, None) => ApiError::invalid(message),
        }
    })?;
    // Nothing but whitespace may follow the value.
    de.end()
        .map_err(|e| ApiError::invalid(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// A complaint of serde about a well-formed body, in the API's words: the
/// message, and the field at fault. `path` is where serde was (`None` for
/// the body itself); `said` is serde's message.
///
/// serde's messages are stable text (`invalid type: {got}, expected
/// {wanted}`, `duplicate field `{name}``, ...); the unit tests below pin
/// each form this API can meet, so a change in serde shows up there.
pub fn type_error(path: Option<&str>, said: &str) -> (String, Option<String>) {
    // serde_json appends the position; the field name says more.
    let said = said.split(" at line ").next().unwrap_or(said);
    let subject = path.unwrap_or("request body");
    let field = |name: &str| match path {
        Some(p) => format!("{p}.{name}"),
        None => name.to_owned(),
    };
    if let Some(rest) = said.strip_prefix("invalid type: ") {
        let (got, wanted) = rest.split_once(", expected ").unwrap_or((rest, ""));
        if let Some(message) = whole_number_for_integer(subject, got, wanted) {
            return (message, path.map(str::to_owned));
        }
        let message = match (wanted_words(wanted), got_words(got)) {
            (Some(w), Some(g)) => format!("{subject} must be {w}, not {g}"),
            (Some(w), None) => format!("{subject} must be {w}"),
            (None, _) => format!("{subject} has the wrong type"),
        };
        return (message, path.map(str::to_owned));
    }
    if let Some(rest) = said.strip_prefix("invalid value: ") {
        let wanted = rest.split_once(", expected ").map_or("", |(_, w)| w);
        let message = match (integer_range(wanted), wanted_words(wanted)) {
            (Some((min, max)), _) => out_of_range(subject, min, max),
            // A type of ours that states its range ("an integer from 1 to 100").
            (None, Some("an integer")) => format!("{subject} must be {wanted}"),
            (None, Some(w)) => format!("{subject} must be {w}"),
            (None, None) => format!("{subject} is not a valid value"),
        };
        return (message, path.map(str::to_owned));
    }
    if said == crate::domain::json_value::KEY_TWICE {
        // Raised inside a free-form value, at any depth: name the request's
        // field that holds it (the path's first part, a name of the API),
        // never the client's keys below it.
        let top = path.map(|p| p.split(['.', '[']).next().unwrap_or(p));
        let subject = top.unwrap_or("request body");
        return (
            format!("{subject} gives a key more than once in one object"),
            top.map(str::to_owned),
        );
    }
    if let Some(name) = quoted_after(said, "duplicate field ") {
        let f = field(name);
        return (format!("{f} is given more than once"), Some(f));
    }
    if let Some(name) = quoted_after(said, "missing field ") {
        let f = field(name);
        return (format!("{f} is required"), Some(f));
    }
    if let Some(name) = quoted_after(said, "unknown field ") {
        let f = field(name);
        return (format!("{f} is not a known field"), Some(f));
    }
    if let Some(rest) = said.strip_prefix("unknown variant ") {
        let choices = rest.split_once("expected ").map_or("", |(_, c)| c);
        let choices = choices
            .trim_start_matches("one of ")
            .replace('`', "")
            .replace(" or ", ", ");
        return (
            format!("{subject} must be one of {choices}"),
            path.map(str::to_owned),
        );
    }
    if said.starts_with("invalid length ") {
        return (
            format!("{subject} has the wrong number of items"),
            path.map(str::to_owned),
        );
    }
    (format!("{subject} is not valid"), path.map(str::to_owned))
}

/// The message for an integer out of its range, the range in words.
pub fn out_of_range(subject: &str, min: impl fmt::Display, max: impl fmt::Display) -> String {
    format!("{subject} must be an integer from {min} to {max}")
}

/// The range of an integer type serde names (`u32`, `i64`, ...).
fn integer_range(wanted: &str) -> Option<(i128, i128)> {
    Some(match wanted {
        "i8" => (i8::MIN.into(), i8::MAX.into()),
        "i16" => (i16::MIN.into(), i16::MAX.into()),
        "i32" => (i32::MIN.into(), i32::MAX.into()),
        "i64" | "isize" => (i64::MIN.into(), i64::MAX.into()),
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" | "usize" => (0, u64::MAX.into()),
        _ => return None,
    })
}

/// An integer field given a number serde read as a double, where the
/// double is a whole number: written with neither fraction nor exponent
/// that is `-0` or an integer past 64 bits (JSON parsers read both as
/// doubles), so "a number with a fraction or exponent" would be wrong.
/// Past the type's range: the range in words. `-0`: what to write.
fn whole_number_for_integer(subject: &str, got: &str, wanted: &str) -> Option<String> {
    let (min, max) = integer_range(wanted)?;
    let value: f64 = got
        .strip_prefix("floating point `")?
        .strip_suffix('`')?
        .parse()
        .ok()?;
    if value.fract() != 0.0 {
        return None;
    }
    if value == 0.0 && value.is_sign_negative() {
        return Some(format!("{subject} must be an integer: write 0, not -0"));
    }
    // Every double of an i128's range is exact: compare there.
    let whole = value as i128;
    (whole < min || whole > max).then(|| out_of_range(subject, min, max))
}

/// `value` as an integer within `min..=max`, else 422 naming `field` in the
/// API's words: the range when it is a whole number outside it (including
/// one past 64 bits, which JSON parsers read as a double), the type when
/// it is not a number or has a fraction or exponent. `-0` reads as 0 (the
/// JSON grammar allows it; it is the integer zero). For a field read as
/// any JSON value so that its refusal can give the range.
pub fn integer_in(field: &str, value: &serde_json::Value, min: i64, max: i64) -> ApiResult<i64> {
    use serde_json::Value;
    let not = match value {
        Value::Number(n) => {
            if let Some(v) = n.as_i64() {
                if (min..=max).contains(&v) {
                    return Ok(v);
                }
                return Err(ApiError::field(field, out_of_range(field, min, max)));
            }
            match n.as_f64() {
                // A u64 past i64, or a whole double past 64 bits.
                _ if n.is_u64() => {
                    return Err(ApiError::field(field, out_of_range(field, min, max)))
                }
                Some(v) if v == 0.0 && v.is_sign_negative() => {
                    return match (min..=max).contains(&0) {
                        true => Ok(0),
                        false => Err(ApiError::field(field, out_of_range(field, min, max))),
                    }
                }
                // 2^63: no i64 is as large (a whole double below it, say
                // `1e2`, was written with an exponent or a fraction).
                Some(v) if v.fract() == 0.0 && v.abs() >= 9_223_372_036_854_775_808.0 => {
                    return Err(ApiError::field(field, out_of_range(field, min, max)))
                }
                _ => "a number with a fraction or exponent",
            }
        }
        Value::String(_) => "a string",
        Value::Bool(_) => "true or false",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        Value::Null => "null",
    };
    Err(ApiError::field(
        field,
        format!("{field} must be an integer, not {not}"),
    ))
}

/// A struct nested in a body (an item of `submit_messages`' `messages`),
/// read from a JSON object only. serde reads a struct from an array too,
/// field by field (`["dana", "hi", "2026-…"]` as sender, content,
/// client_ts), which the API does not take: refused as a wrong type, like
/// an array for the body itself.
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Worded as serde names a map, which `type_error` reads.
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Visitor(std::marker::PhantomData))
            .map(Object)
    }
}

/// The name between backticks right after `prefix`.
fn quoted_after<'a>(said: &'a str, prefix: &str) -> Option<&'a str> {
    said.strip_prefix(prefix)?
        .strip_prefix('`')?
        .split('`')
        .next()
}

/// What a field must be, from serde's `expected ...` (a type's own words or
/// a Rust type name).
fn wanted_words(wanted: &str) -> Option<&'static str> {
    Some(match wanted {
        "a string" | "a borrowed string" => "a string",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "an integer ≥ 0",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "an array",
        "a map" => "a JSON object",
        w if w.starts_with("an integer from ") => "an integer",
        w if w.starts_with("struct ") => "a JSON object",
        _ => return None,
    })
}

/// What the client sent instead, from serde's `invalid type: ...`, without
/// the value itself (which may be long, and is the client's anyway).
fn got_words(got: &str) -> Option<&'static str> {
    let kind = got.split([' ', '`', '"']).next().unwrap_or(got);
    Some(match kind {
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a number with a fraction or exponent",
        "boolean" => "true or false",
        "null" => "null",
        "sequence" => "an array",
        "map" => "an object",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        content: Option<String>,
        n: Option<i64>,
        u: Option<u32>,
        x: Option<f64>,
        flag: Option<bool>,
        items: Option<Vec<Item>>,
        meta: Option<serde_json::Value>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Item {
        sender: Option<String>,
        #[serde(rename = "type")]
        kind: Kind,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        TypingStart,
        TypingStop,
    }

    /// The 422's message and field for `body`.
    fn refusal(body: &str) -> (String, Option<String>) {
        match parse::<Body>(body.as_bytes()) {
            Ok(v) => panic!("accepted {body}: {v:?}"),
            Err(e) => (e.public_message(), e.field_name().map(str::to_owned)),
        }
    }

    #[test]
    fn serde_complaints_come_out_in_the_api_s_words() {
        let item = r#""type": "typing_start""#;
        // (body, message, field)
        let cases = [
            (
                "5",
                "request body must be a JSON object, not an integer",
                None,
            ),
            (
                r#""x""#,
                "request body must be a JSON object, not a string",
                None,
            ),
            (
                "true",
                "request body must be a JSON object, not true or false",
                None,
            ),
            (
                "1.5",
                "request body must be a JSON object, not a number with a fraction or exponent",
                None,
            ),
            (
                "[]",
                "request body must be a JSON object, not an array",
                None,
            ),
            (
                r#"{"content": 5}"#,
                "content must be a string, not an integer",
                Some("content"),
            ),
            (
                r#"{"content": {}}"#,
                "content must be a string, not an object",
                Some("content"),
            ),
            (
                r#"{"content": ["a"]}"#,
                "content must be a string, not an array",
                Some("content"),
            ),
            (
                r#"{"n": "7"}"#,
                "n must be an integer, not a string",
                Some("n"),
            ),
            (
                r#"{"n": 1.0}"#,
                "n must be an integer, not a number with a fraction or exponent",
                Some("n"),
            ),
            (
                r#"{"n": 9223372036854775808}"#,
                "n must be an integer from -9223372036854775808 to 9223372036854775807",
                Some("n"),
            ),
            (
                r#"{"n": 99999999999999999999}"#,
                "n must be an integer from -9223372036854775808 to 9223372036854775807",
                Some("n"),
            ),
            (
                r#"{"n": -99999999999999999999}"#,
                "n must be an integer from -9223372036854775808 to 9223372036854775807",
                Some("n"),
            ),
            (
                r#"{"n": 1e2}"#,
                "n must be an integer, not a number with a fraction or exponent",
                Some("n"),
            ),
            (
                r#"{"u": -1}"#,
                "u must be an integer from 0 to 4294967295",
                Some("u"),
            ),
            (
                r#"{"u": 4294967296}"#,
                "u must be an integer from 0 to 4294967295",
                Some("u"),
            ),
            (
                r#"{"u": -0}"#,
                "u must be an integer: write 0, not -0",
                Some("u"),
            ),
            (
                r#"{"x": "1"}"#,
                "x must be a number, not a string",
                Some("x"),
            ),
            (
                r#"{"flag": 1}"#,
                "flag must be true or false, not an integer",
                Some("flag"),
            ),
            (
                r#"{"items": {}}"#,
                "items must be an array, not an object",
                Some("items"),
            ),
            (
                r#"{"items": [5]}"#,
                "items[0] must be a JSON object, not an integer",
                Some("items[0]"),
            ),
            (
                r#"{"items": [{"sender": null}]}"#,
                "items[0].type is required",
                Some("items[0].type"),
            ),
            (
                &format!(r#"{{"items": [{{{item}, "sender": 1}}]}}"#),
                "items[0].sender must be a string, not an integer",
                Some("items[0].sender"),
            ),
            (
                r#"{"items": [{"type": "typing"}]}"#,
                "items[0].type must be one of typing_start, typing_stop",
                Some("items[0].type"),
            ),
            (
                r#"{"content": "a", "content": "b"}"#,
                "content is given more than once",
                Some("content"),
            ),
            (
                &format!(r#"{{"items": [{{{item}, {item}}}]}}"#),
                "items[0].type is given more than once",
                Some("items[0].type"),
            ),
        ];
        for (body, message, field) in cases {
            let (got, got_field) = refusal(body);
            assert_eq!(got, message, "{body}");
            assert_eq!(got_field.as_deref(), field, "{body}");
        }
    }

    #[test]
    fn syntax_errors_say_malformed_json_with_the_position() {
        for body in [
            r#"{"content": }"#,
            r#"{"content": "a""#,
            r#"{"a": 1} x"#,
            "{,}",
        ] {
            let (message, field) = refusal(body);
            assert!(message.starts_with("malformed JSON: "), "{body}: {message}");
            assert!(message.contains("line 1 column"), "{body}: {message}");
            assert_eq!(field, None, "{body}");
        }
    }

    #[test]
    fn no_message_carries_a_rust_name_or_the_client_s_value() {
        let long = "v".repeat(100);
        for body in [
            format!(r#"{{"content": 5, "meta": "{long}"}}"#),
            format!(r#"{{"items": "{long}"}}"#),
            format!(r#"{{"n": "{long}"}}"#),
            "5".to_owned(),
            r#"{"u": -1}"#.to_owned(),
        ] {
            let (message, _) = refusal(&body);
            for rust in [
                "struct", "::", "Option", "i64", "u32", "sequence", "`", "vvvv",
            ] {
                assert!(!message.contains(rust), "{body}: {message}");
            }
        }
    }

    #[test]
    fn a_well_formed_body_parses_and_an_empty_one_reads_as_null() {
        let body: Body = parse(br#"{"content": "hi", "meta": {"deep": [[1e308]]}}"#).unwrap();
        assert_eq!(body.content.as_deref(), Some("hi"));
        assert!(parse::<Option<Body>>(b"  ").unwrap().is_none());
        assert!(parse::<Body>(b"").is_err());
    }

    #[test]
    fn the_check_runs_before_the_typed_parse() {
        let deep = format!(r#"{{"ignored": {}}}"#, "[".repeat(100) + &"]".repeat(100));
        let (message, field) = refusal(&deep);
        assert!(message.contains("deeper than 64"), "{message}");
        assert_eq!(field, None);
        let (message, _) = refusal(r#"{"ignored": "\ud800"}"#);
        assert!(message.contains("surrogate"), "{message}");
    }

    #[test]
    fn an_integer_in_a_range_says_the_range_or_the_type() {
        let of = |text: &str| {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            integer_in("e", &value, 0, i64::MAX).map_err(|e| e.public_message())
        };
        let range = "e must be an integer from 0 to 9223372036854775807";
        for (text, wanted) in [
            ("0", Ok(0)),
            ("-0", Ok(0)),
            ("7", Ok(7)),
            ("9223372036854775807", Ok(i64::MAX)),
            ("-1", Err(range)),
            ("9223372036854775808", Err(range)),
            ("99999999999999999999", Err(range)),
            ("-99999999999999999999", Err(range)),
            ("1.7976931348623157e308", Err(range)),
            (
                "1.5",
                Err("e must be an integer, not a number with a fraction or exponent"),
            ),
            (
                "1e2",
                Err("e must be an integer, not a number with a fraction or exponent"),
            ),
            ("\"1\"", Err("e must be an integer, not a string")),
            ("[1]", Err("e must be an integer, not an array")),
        ] {
            assert_eq!(of(text), wanted.map_err(str::to_owned), "{text}");
        }
        let from_one = |text: &str| {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            integer_in("limit", &value, 1, 100).map_err(|e| e.public_message())
        };
        assert_eq!(
            from_one("-0"),
            Err("limit must be an integer from 1 to 100".to_owned())
        );
    }

    fn ok(body: &[u8]) {
        assert_eq!(check(body), Ok(()), "{}", String::from_utf8_lossy(body));
    }

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn valid_json_of_every_kind_passes() {
        ok(br#"{"a": "b", "n": -12.5e-3, "t": true, "f": false, "z": null, "l": [1, 2, {}]}"#);
        ok(br#"{"esc": "\" \\ \/ \b \f \n \r \t \u0041 \u00e9 \uD83D\uDE00"}"#);
        ok("{\"utf8\": \"é 😀 中\"}".as_bytes());
        ok(br#"{"big": 1.7976931348623157e308, "tiny": 1e-400, "int": 18446744073709551616}"#);
        ok(b"");
        ok(b"   ");
    }

    #[test]
    fn nesting_is_refused_past_the_limit_only() {
        ok(format!("{{\"a\": {}}}", nested(MAX_DEPTH - 1)).as_bytes());
        assert!(matches!(
            check(format!("{{\"a\": {}}}", nested(MAX_DEPTH)).as_bytes()),
            Err(Defect::TooDeep { .. })
        ));
        assert!(matches!(
            check(nested(32_000).as_bytes()),
            Err(Defect::TooDeep { at: 64 })
        ));
    }

    #[test]
    fn the_eight_byte_test_flags_exactly_the_bytes_that_need_a_look() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut word = *b"aaaaaaaa";
                word[at] = b;
                let wanted = matches!(b, b'"' | b'\\' | 0x00..=0x1F | 0x80..);
                assert_eq!(
                    needs_a_look(u64::from_le_bytes(word)),
                    wanted,
                    "{b:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn multi_byte_characters_are_judged_as_the_standard_library_does() {
        let edges = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF];
        for lead in 0x80..=0xFFu8 {
            for b1 in 0..=0xFFu8 {
                for b2 in edges {
                    for b3 in edges {
                        let seq = [lead, b1, b2, b3];
                        let std = (2..=4).find(|&w| std::str::from_utf8(&seq[..w]).is_ok());
                        assert_eq!(utf8_char(&seq, 0).ok(), std, "{seq:x?}");
                    }
                }
            }
        }
        // Truncated at the end of the body.
        assert!(utf8_char(&[0xE2, 0x82], 0).is_err());
    }

    #[test]
    fn defects_are_found_at_every_offset_of_a_long_string() {
        for at in 0..24 {
            let mut body = br#"{"x": ""#.to_vec();
            let text = at + 7;
            body.extend(std::iter::repeat_n(b'a', 24));
            body.extend_from_slice(b"\"}");
            body[text] = 0xff;
            assert_eq!(check(&body), Err(Defect::InvalidUtf8 { at: text }), "{at}");
            body[text] = b'\n';
            assert_eq!(check(&body), Err(Defect::ControlCharacter { at: text }));
            body[text] = b'"';
            ok(&body[..text + 1]);
        }
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        ok(format!("{{\"a\": \"{}\"}}", "[".repeat(1000)).as_bytes());
        ok(br#"{"a": "\"[[[[", "b": []}"#);
    }

    #[test]
    fn invalid_utf8_in_a_string_is_refused_where_it_sits() {
        assert_eq!(
            check(b"{\"x\": \"ab\xff\"}"),
            Err(Defect::InvalidUtf8 { at: 9 })
        );
        // A truncated sequence, an overlong encoding, an encoded surrogate.
        for bad in [&b"\xe2\x82"[..], b"\xc0\xaf", b"\xed\xa0\x80"] {
            let mut body = b"{\"x\": \"".to_vec();
            body.extend_from_slice(bad);
            body.extend_from_slice(b"\"}");
            assert!(matches!(check(&body), Err(Defect::InvalidUtf8 { .. })));
        }
    }

    #[test]
    fn lone_surrogates_are_refused_and_pairs_accepted() {
        for body in [
            &br#"{"x": "\ud800"}"#[..],
            br#"{"x": "\uDBFF "}"#,
            br#"{"x": "\udc00"}"#,
            br#"{"x": "\ud800\u0041"}"#,
            br#"{"x": "\ud800\ud800"}"#,
            br#"{"x": "\ud800"#,
        ] {
            assert!(
                matches!(check(body), Err(Defect::LoneSurrogate { at: 7 })),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        ok(br#"{"x": "\ud83d\ude00"}"#);
    }

    #[test]
    fn bad_escapes_and_raw_control_characters_are_refused() {
        assert_eq!(check(br#"{"x": "\q"}"#), Err(Defect::BadEscape { at: 7 }));
        assert_eq!(
            check(br#"{"x": "\u12G4"}"#),
            Err(Defect::BadEscape { at: 7 })
        );
        assert_eq!(
            check(b"{\"x\": \"a\nb\"}"),
            Err(Defect::ControlCharacter { at: 8 })
        );
    }

    #[test]
    fn numbers_beyond_a_double_are_refused() {
        for n in ["1e400", "-1e400", "1E+309", "0.5e309", &"9".repeat(400)] {
            let body = format!("{{\"x\": [{n}]}}");
            assert_eq!(
                check(body.as_bytes()),
                Err(Defect::NumberOutOfRange { at: 7 }),
                "{n}"
            );
        }
    }

    #[test]
    fn malformed_input_is_left_to_the_parse_without_panicking() {
        for body in [
            &b"]]]}}"[..],
            b"\"",
            b"\"\\",
            b"\"\\u12",
            b"-",
            b"1e",
            b"--1e400e",
            b"{\"a\":\xff}",
        ] {
            let _ = check(body);
        }
        ok(b"]]]");
    }

    #[test]
    fn messages_say_what_is_wrong_in_the_api_s_words() {
        let m = Defect::TooDeep { at: 3 }.to_string();
        assert!(m.contains("64 levels"), "{m}");
        let m = Defect::LoneSurrogate { at: 3 }.to_string();
        assert!(m.contains("surrogate"), "{m}");
    }

    /// A measurement, not a check of behaviour: the pre-parse check against
    /// the typed parse it precedes, on the load generator's post body and on
    /// a 60 KiB one. Run: `cargo test --release --lib check_costs -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn check_costs_little_beside_the_parse() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Post {
            aid: Option<String>,
            thread_id: Option<String>,
            content: Option<String>,
            msg_type: Option<String>,
            metadata: Option<serde_json::Value>,
        }
        let aid = "6b1f".repeat(12) + "ab";
        let small = format!(
            r#"{{"aid":"{aid}","thread_id":"01a22103-e7f4-7746-9a64-4e19265b0fe4","content":"loadgen: a message of ordinary length, about as long as a chat line."}}"#
        );
        let text = r#"Ünïcødé and ASCII text, with \"quotes\" and \n escapes. "#.repeat(900);
        let large = format!(
            r#"{{"aid":"{aid}","content":"{text}","metadata":{{"n":[1.5e10,-3,{{"k":[true,null]}}]}}}}"#
        );
        // The best of 7 rounds of each: the machine is shared, and the
        // least disturbed round is the closest to the cost itself.
        let best = |n: u32, f: &dyn Fn()| {
            (0..7)
                .map(|_| {
                    let started = std::time::Instant::now();
                    for _ in 0..n {
                        f();
                    }
                    started.elapsed() / n
                })
                .min()
                .expect("expect: seven rounds")
        };
        for (name, body) in [
            ("post body", small.as_bytes()),
            ("60 KiB body", large.as_bytes()),
        ] {
            let n = if body.len() < 1000 { 100_000 } else { 500 };
            let checked = best(n, &|| check(std::hint::black_box(body)).unwrap());
            let parsed = best(n, &|| {
                let _: Post = serde_json::from_slice(std::hint::black_box(body)).unwrap();
            });
            println!(
                "{name} ({} bytes): check {checked:?}, typed parse {parsed:?} per body",
                body.len()
            );
        }
    }
}
