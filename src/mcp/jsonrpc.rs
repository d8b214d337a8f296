//! JSON messages the MCP library cannot read as JSON-RPC 2.0, judged once
//! for both transports: what is wrong with one, and the `id` its answer
//! carries. The library answered such a message without any `id` over
//! stdio, and `/mcp` answered it in the API's error envelope; an MCP client
//! reads neither (JSON-RPC 2.0 requires `"id": null` when the request's
//! cannot be read).

use serde_json::{json, Value};

/// JSON-RPC 2.0's code for a message that is not a valid request.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC 2.0's code for a request whose params do not fit.
pub const INVALID_PARAMS: i64 = -32602;

/// Why a JSON value is not a message the library reads.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    /// The `id` to answer with: the request's own, or `null` where there is
    /// none to read. `None` for a notification or a response, which
    /// JSON-RPC never answers.
    pub id: Option<Value>,
    /// [`INVALID_REQUEST`] or [`INVALID_PARAMS`].
    pub code: i64,
    /// What is wrong, in words, never echoing the client's values.
    pub message: &'static str,
}

impl Refusal {
    /// The JSON-RPC error object answering the message (`"id": null` for
    /// one that has no `id` to answer with).
    pub fn answer(&self) -> Value {
        json!({
            "jsonrpc": "2.0",
            "id": self.id.clone().unwrap_or(Value::Null),
            "error": {"code": self.code, "message": self.message},
        })
    }
}

/// The members of a JSON-RPC message, read only to find one given twice
/// (serde's derived reader refuses a known field given twice; a map
/// keeps one of the two, and which was meant is a guess).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Members {
    jsonrpc: Option<serde::de::IgnoredAny>,
    id: Option<serde::de::IgnoredAny>,
    method: Option<serde::de::IgnoredAny>,
    params: Option<serde::de::IgnoredAny>,
    result: Option<serde::de::IgnoredAny>,
    error: Option<serde::de::IgnoredAny>,
}

/// Whether serde's complaint about a message is a member given twice.
pub fn is_given_twice(error: &serde_json::Error) -> bool {
    error.to_string().starts_with("duplicate field ")
}

/// Judges a message the library did not read (`None` if it is not JSON at
/// all): the first thing wrong with it, checked in the order a reader
/// meets them (the shape, the `id`, a member given twice, `jsonrpc`,
/// `method`, `params`).
pub fn judge(raw: &[u8]) -> Option<Refusal> {
    let message = serde_json::from_slice::<Value>(raw).ok()?;
    let twice = matches!(&message, Value::Object(_))
        && serde_json::from_slice::<Members>(raw)
            .err()
            .is_some_and(|e| is_given_twice(&e));
    Some(judge_value(&message, twice))
}

fn judge_value(message: &Value, twice: bool) -> Refusal {
    let refuse =
        |id: Option<Value>, code: i64, message: &'static str| Refusal { id, code, message };
    let Value::Object(fields) = message else {
        let message = match message {
            Value::Array(_) => "a batch (a JSON array) is not served: send one message at a time",
            _ => "a JSON-RPC message is a JSON object",
        };
        return refuse(Some(Value::Null), INVALID_REQUEST, message);
    };
    let id = match fields.get("id") {
        // A notification: judged as a request is, but not to be answered.
        None if fields.contains_key("method") => None,
        // A response to a request this server never sends.
        None if fields.contains_key("result") || fields.contains_key("error") => {
            return refuse(
                None,
                INVALID_REQUEST,
                "a response answers a request, and this server sends none",
            )
        }
        None | Some(Value::Null) => {
            return refuse(
                Some(Value::Null),
                INVALID_REQUEST,
                "a request needs an id, a string or an integer",
            )
        }
        Some(id) if id.is_string() || id.is_i64() || id.is_u64() => Some(id.clone()),
        Some(id) => {
            // A number with a fraction is echoed (JSON-RPC allows it, MCP
            // does not), so the client can match the refusal.
            let echoed = if id.is_number() {
                id.clone()
            } else {
                Value::Null
            };
            return refuse(
                Some(echoed),
                INVALID_REQUEST,
                "id must be a string or an integer",
            );
        }
    };
    if twice {
        // Which of the two was meant is a guess, the id's too.
        return refuse(
            id.map(|_| Value::Null),
            INVALID_REQUEST,
            "jsonrpc, id, method, params, result and error may each be given once",
        );
    }
    if fields.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return refuse(id, INVALID_REQUEST, "jsonrpc must be \"2.0\"");
    }
    if !fields.get("method").is_some_and(Value::is_string) {
        return refuse(id, INVALID_REQUEST, "method must be a string");
    }
    if fields
        .get("params")
        .is_some_and(|p| !p.is_object() && !p.is_null())
    {
        return refuse(id, INVALID_PARAMS, "params must be a JSON object");
    }
    refuse(
        id,
        INVALID_REQUEST,
        "not a JSON-RPC 2.0 request this server can read",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_wrong_is_said_with_the_id_to_answer_with() {
        let cases = [
            (
                json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": []}),
                Some(json!(5)),
                INVALID_PARAMS,
            ),
            (
                json!({"jsonrpc": "2.0", "id": "x", "method": "tools/list", "params": 5}),
                Some(json!("x")),
                INVALID_PARAMS,
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
                Some(json!(1.5)),
                INVALID_REQUEST,
            ),
            (
                json!({"jsonrpc": "1.0", "id": 2, "method": "ping"}),
                Some(json!(2)),
                INVALID_REQUEST,
            ),
            (
                json!({"id": 3, "method": "ping"}),
                Some(json!(3)),
                INVALID_REQUEST,
            ),
            (
                json!({"jsonrpc": "2.0", "id": 4, "method": 7}),
                Some(json!(4)),
                INVALID_REQUEST,
            ),
            (
                json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
                Some(Value::Null),
                INVALID_REQUEST,
            ),
            (
                json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}),
                Some(Value::Null),
                INVALID_REQUEST,
            ),
            (
                json!({"jsonrpc": "2.0", "id": true, "method": "ping"}),
                Some(Value::Null),
                INVALID_REQUEST,
            ),
            (
                json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]),
                Some(Value::Null),
                INVALID_REQUEST,
            ),
            (json!(7), Some(Value::Null), INVALID_REQUEST),
            // Never answered.
            (
                json!({"jsonrpc": "2.0", "method": "notifications/x", "params": []}),
                None,
                INVALID_PARAMS,
            ),
            (
                json!({"jsonrpc": "2.0", "result": {}}),
                None,
                INVALID_REQUEST,
            ),
        ];
        for (message, id, code) in cases {
            let refusal = judge(message.to_string().as_bytes()).expect("JSON");
            assert_eq!(refusal.id, id, "{message}");
            assert_eq!(refusal.code, code, "{message}");
            let answer = refusal.answer();
            assert_eq!(answer["jsonrpc"], "2.0", "{answer}");
            assert_eq!(answer.get("id"), Some(&id.unwrap_or(Value::Null)));
            assert_eq!(answer["error"]["code"], code, "{answer}");
        }
    }

    #[test]
    fn a_member_given_twice_is_refused_without_guessing_the_id() {
        for (raw, id) in [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","id":2}"#,
                Some(Value::Null),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"ping"}"#,
                Some(Value::Null),
            ),
            (
                r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":"a","method":"ping"}"#,
                Some(Value::Null),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/x","method":"y"}"#,
                None,
            ),
        ] {
            let refusal = judge(raw.as_bytes()).expect("JSON");
            assert_eq!(refusal.id, id, "{raw}");
            assert_eq!(refusal.code, INVALID_REQUEST, "{raw}");
            assert!(
                refusal.message.contains("once"),
                "{raw}: {}",
                refusal.message
            );
        }
        // An unknown member twice is ignored, as a reader of JSON-RPC ignores it.
        let raw = r#"{"jsonrpc":"2.0","id":3,"method":7,"x":1,"x":2}"#;
        let refusal = judge(raw.as_bytes()).expect("JSON");
        assert_eq!(refusal.message, "method must be a string");
        assert!(judge(b"not json").is_none());
    }
}
