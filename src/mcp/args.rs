//! Tool arguments read by threadline rather than by the MCP library. rmcp
//! answered a wrong type with serde's own words and Rust's names, and no
//! field (`failed to deserialize parameters: invalid type: floating point
//! `-0.0`, expected u64`); [`Args::parse`] answers as the API does for a
//! body: `VALIDATION_ERROR`, the field named, the message in the API's
//! words (a range in words, never the client's value or a type name).

use std::borrow::Cow;
use std::marker::PhantomData;

use rmcp::schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::api::ApiFailure;

/// A tool's arguments as the client sent them (any JSON object), described
/// to clients by `T`'s schema and read into `T` by [`Args::parse`].
pub struct Args<T> {
    raw: Map<String, Value>,
    of: PhantomData<fn() -> T>,
}

impl<'de, T> Deserialize<'de> for Args<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Args {
            raw: Map::deserialize(deserializer)?,
            of: PhantomData,
        })
    }
}

impl<T: JsonSchema> JsonSchema for Args<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

impl<T: DeserializeOwned> Args<T> {
    /// The arguments as `T`, or the API's 422 for the first one at fault.
    /// A `null` argument counts as absent, as `null` does in an API body:
    /// a required one is "is required", as the API says it, not "must be a
    /// string, not null".
    pub fn parse(mut self) -> Result<T, ApiFailure> {
        self.raw.retain(|_, value| !value.is_null());
        serde_path_to_error::deserialize(Value::Object(self.raw)).map_err(|e| {
            let path = e.path().to_string();
            let said = e.into_inner().to_string();
            let path = (path != "." && !path.is_empty()).then_some(path);
            match crate::http::json::type_error(path.as_deref(), &said) {
                (message, Some(field)) => ApiFailure::invalid(&field, message),
                (message, None) => ApiFailure::local("VALIDATION_ERROR", message, None),
            }
        })
    }
}

/// An integer argument within `MIN..=MAX`, the range the API takes for it;
/// its schema states the range, and a value outside it is refused with the
/// range in words. `-0` reads as 0: JSON's grammar allows it, it is the
/// integer zero, and JSON parsers read it as a double.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int<const MIN: i64, const MAX: i64>(i64);

impl<const MIN: i64, const MAX: i64> Int<MIN, MAX> {
    pub fn get(self) -> i64 {
        self.0
    }
}

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Int<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{Error, Unexpected, Visitor};
        struct Within<const MIN: i64, const MAX: i64>;
        impl<const MIN: i64, const MAX: i64> Visitor<'_> for Within<MIN, MAX> {
            type Value = Int<MIN, MAX>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // `json::type_error` reads "an integer from" as a range.
                write!(f, "an integer from {MIN} to {MAX}")
            }

            fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
                match (MIN..=MAX).contains(&v) {
                    true => Ok(Int(v)),
                    false => Err(E::invalid_value(Unexpected::Signed(v), &self)),
                }
            }

            fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
                match i64::try_from(v) {
                    Ok(v) => self.visit_i64(v),
                    Err(_) => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
                }
            }

            fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
                if v == 0.0 && v.is_sign_negative() {
                    return self.visit_i64(0);
                }
                // A whole number past 64 bits (JSON parsers read one as a
                // double) is out of range; any other double was written
                // with a fraction or an exponent.
                match v.fract() == 0.0 && v.abs() >= 9_223_372_036_854_775_808.0 {
                    true => Err(E::invalid_value(Unexpected::Float(v), &self)),
                    false => Err(E::invalid_type(Unexpected::Float(v), &self)),
                }
            }
        }
        deserializer.deserialize_i64(Within::<MIN, MAX>)
    }
}

impl<const MIN: i64, const MAX: i64> JsonSchema for Int<MIN, MAX> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Int_{MIN}_{MAX}").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        rmcp::schemars::json_schema!({
            "type": "integer",
            "minimum": MIN,
            "maximum": MAX,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Probe {
        thread_id: String,
        limit: Option<Int<1, 100>>,
        after: Option<Int<0, { i64::MAX }>>,
    }

    fn parse(args: Value) -> Result<Probe, ApiFailure> {
        let args: Args<Probe> = serde_json::from_value(args).unwrap();
        args.parse()
    }

    #[test]
    fn arguments_read_into_their_type_and_minus_zero_is_zero() {
        assert_eq!(
            parse(json!({"thread_id": "t", "limit": 5, "after": -0.0})),
            Ok(Probe {
                thread_id: "t".into(),
                limit: Some(Int(5)),
                after: Some(Int(0)),
            })
        );
    }

    #[test]
    fn a_wrong_argument_is_named_in_the_api_s_words() {
        let failure = |args: Value| parse(args).expect_err("refused");
        for (args, field, message) in [
            (json!({}), "thread_id", "thread_id is required"),
            (
                json!({"thread_id": null}),
                "thread_id",
                "thread_id is required",
            ),
            (
                json!({"thread_id": 5}),
                "thread_id",
                "thread_id must be a string, not an integer",
            ),
            (
                json!({"thread_id": "t", "limit": 1.5}),
                "limit",
                "limit must be an integer, not a number with a fraction or exponent",
            ),
            (
                json!({"thread_id": "t", "limit": "5"}),
                "limit",
                "limit must be an integer, not a string",
            ),
            (
                json!({"thread_id": "t", "limit": 0}),
                "limit",
                "limit must be an integer from 1 to 100",
            ),
            (
                json!({"thread_id": "t", "limit": -0.0}),
                "limit",
                "limit must be an integer from 1 to 100",
            ),
            (
                json!({"thread_id": "t", "after": -1}),
                "after",
                "after must be an integer from 0 to 9223372036854775807",
            ),
            (
                json!({"thread_id": "t", "after": 9_223_372_036_854_775_808_u64}),
                "after",
                "after must be an integer from 0 to 9223372036854775807",
            ),
            (
                json!({"thread_id": "t", "after": 1e20}),
                "after",
                "after must be an integer from 0 to 9223372036854775807",
            ),
        ] {
            let f = failure(args.clone());
            assert_eq!(f.code, "VALIDATION_ERROR", "{args}");
            assert_eq!(f.status, 422, "{args}");
            assert_eq!(f.field.as_deref(), Some(field), "{args}");
            assert_eq!(f.message, message, "{args}");
        }
    }
}
