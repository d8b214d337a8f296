//! Free-form JSON values a client sends (`metadata`, `integrations`): read
//! refusing a key given twice in one object, and kept as text as sent.

use std::fmt;

use serde::Deserialize;

/// serde's message for a key given twice in one object of a free-form
/// value ([`unique_keys`]); the API's JSON errors put it in its words.
pub const KEY_TWICE: &str = "a key given twice in one object";

/// Reads an optional free-form JSON value as `Option<serde_json::Value>`
/// does, but refuses a key given twice in any of its objects, at any depth:
/// a map keeps only one of the two, and which one a client meant is a
/// guess (JSON parsers differ: first wins, last wins). For
/// `#[serde(default, deserialize_with = "...")]`; `null` is `None`.
pub fn unique_keys<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    Ok(Option::<UniqueKeys>::deserialize(deserializer)?.map(|v| v.0))
}

/// Whether the JSON text `json` (valid JSON) gives a key twice in one of
/// its objects.
pub fn repeats_a_key(json: &str) -> bool {
    serde_json::from_str::<UniqueKeys>(json).is_err()
}

/// A JSON value read by [`unique_keys`].
struct UniqueKeys(serde_json::Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        UniqueKeys::deserialize(d).map(|v| v.0)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(KEY_TWICE));
            }
            let UniqueKeys(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(serde_json::Value::Object(object))
    }
}

/// The JSON text `json` (valid JSON) without the whitespace between its
/// tokens: its strings and numbers exactly as written (a number is not
/// read as a double and written again, which would round an integer past
/// 64 bits, lose digits, or turn `-0` into `-0.0`).
pub fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_drops_whitespace_between_tokens_only() {
        assert_eq!(
            compact(" { \"a b\" : [ 1 , -0 , 1e2 ] ,\n\t\"c\\\" d\" : \"x\\\\\" }\r\n"),
            r#"{"a b":[1,-0,1e2],"c\" d":"x\\"}"#
        );
        assert_eq!(compact("{}"), "{}");
    }

    #[test]
    fn a_key_twice_in_any_object_is_found() {
        assert!(!repeats_a_key(
            r#"{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}"#
        ));
        assert!(repeats_a_key(r#"{"a":1,"a":1}"#));
        assert!(repeats_a_key(r#"{"k":[{"x":1,"x":2}]}"#));
        // Escapes are read: these two spell one key.
        assert!(repeats_a_key(r#"{"a":1,"\u0061":2}"#));
    }
}
