//! The JSON-RPC methods the MCP server answers, and the errors of those it
//! does not: an unknown method is `-32601` naming it and listing the
//! methods this server speaks (rmcp's own answer was the bare name), and a
//! known method whose `params` do not fit it is `-32602` saying what is
//! wrong (rmcp reads such a request as one of a method it does not know).
//! Both come from [`refusal`], which the server's handler calls for every
//! request rmcp could not read as one it knows: on `/mcp` and on stdio
//! alike, with nothing parsed a second time.

use rmcp::model::ErrorCode;
use rmcp::ErrorData;
use serde_json::Value;

/// The requests this server answers (beside the notifications).
pub const SPOKEN: [&str; 7] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// The requests of MCP's clients (rmcp's `ClientRequest`): a request with
/// one of these methods that rmcp could not read has `params` that do not
/// fit it.
const CLIENT_METHODS: [&str; 21] = [
    "initialize",
    "ping",
    "server/discover",
    "completion/complete",
    "logging/setLevel",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "resources/directory/read",
    "subscriptions/listen",
    "tools/call",
    "tools/list",
    "tasks/get",
    "tasks/update",
    "tasks/cancel",
    "skills/list",
    "skills/get",
];

/// The most of a method's name an answer repeats, in characters. `/mcp`
/// refuses names over 128 before rmcp sees them; stdio has no such check,
/// and rmcp writes the answer into a WARN line.
const SHOWN_CHARS: usize = 64;

/// The answer to a request rmcp read as one of a method it does not know:
/// `-32602` when the method is one of MCP's (its `params` did not fit),
/// else `-32601` naming it.
pub fn refusal(method: &str, params: Option<&Value>) -> ErrorData {
    if CLIENT_METHODS.contains(&method) {
        return ErrorData::invalid_params(params_misfit(method, params), None);
    }
    not_spoken(method)
}

/// `-32601` for `method`, naming it (cut to [`SHOWN_CHARS`]) and the
/// methods this server speaks.
pub fn not_spoken(method: &str) -> ErrorData {
    let shown: String = method.chars().take(SHOWN_CHARS).collect();
    let cut = if shown.len() < method.len() {
        "…"
    } else {
        ""
    };
    ErrorData::new(
        ErrorCode::METHOD_NOT_FOUND,
        format!(
            "method not found: {shown:?}{cut}; this server speaks {}",
            SPOKEN.join(", ")
        ),
        None,
    )
}

/// `-32602` for a call of a tool this server does not have (MCP's answer
/// for an unknown tool), naming it (cut to [`SHOWN_CHARS`]) and `tools`.
pub fn unknown_tool<'a>(name: &str, tools: impl IntoIterator<Item = &'a str>) -> ErrorData {
    let shown: String = name.chars().take(SHOWN_CHARS).collect();
    let cut = if shown.len() < name.len() { "…" } else { "" };
    let tools: Vec<&str> = tools.into_iter().collect();
    ErrorData::invalid_params(
        format!(
            "unknown tool {shown:?}{cut}; the tools are {}",
            tools.join(", ")
        ),
        None,
    )
}

/// The message of a `404` for an unknown method (the transport's answer
/// to clients of MCP 2026-07-28 and later), from the JSON-RPC error's:
/// [`not_spoken`]'s when it is, the same for a method of MCP's that the
/// library refused with its bare name; never the client's text else.
pub fn not_found_message(said: &str) -> String {
    if said.starts_with("method not found: ") {
        return said.to_owned();
    }
    match CLIENT_METHODS.iter().find(|m| **m == said) {
        Some(method) => not_spoken(method).message.into_owned(),
        None => format!("method not found; this server speaks {}", SPOKEN.join(", ")),
    }
}

/// Why `params` do not fit `method` (one of [`CLIENT_METHODS`]), in the
/// API's words where the params have a type here.
fn params_misfit(method: &str, params: Option<&Value>) -> String {
    fn why<T: serde::de::DeserializeOwned>(params: Option<&Value>) -> Option<String> {
        let Some(params) = params.filter(|p| !p.is_null()) else {
            return Some("params is required".to_owned());
        };
        let error = serde_path_to_error::deserialize::<_, T>(params).err()?;
        let path = match error.path().to_string() {
            p if p == "." || p.is_empty() => "params".to_owned(),
            p => format!("params.{p}"),
        };
        let said = error.into_inner().to_string();
        Some(crate::http::json::type_error(Some(&path), &said).0)
    }
    let detail = match method {
        "initialize" => why::<rmcp::model::InitializeRequestParams>(params),
        "tools/call" => why::<rmcp::model::CallToolRequestParams>(params),
        "resources/read" => why::<rmcp::model::ReadResourceRequestParams>(params),
        "prompts/get" => why::<rmcp::model::GetPromptRequestParams>(params),
        _ => None,
    };
    match detail {
        Some(detail) => format!("invalid params for {method}: {detail}"),
        None => format!("invalid params for {method}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unknown_method_is_named_cut_and_answered_with_the_methods_spoken() {
        let error = refusal("tool/call", Some(&json!({})));
        assert_eq!(error.code, ErrorCode::METHOD_NOT_FOUND);
        assert!(error.message.contains("\"tool/call\""), "{}", error.message);
        for method in SPOKEN {
            assert!(error.message.contains(method), "{}", error.message);
        }
        let long = "é".repeat(500);
        let message = not_spoken(&long).message;
        assert!(message.contains(&"é".repeat(SHOWN_CHARS)), "{message}");
        assert!(!message.contains(&"é".repeat(SHOWN_CHARS + 1)), "{message}");
        assert!(message.contains('…'), "{message}");
        assert!(message.chars().count() < 300, "{message}");
    }

    #[test]
    fn a_404_says_what_the_json_rpc_error_said_or_names_mcp_s_method() {
        let ours = not_spoken("no/such").message.into_owned();
        assert_eq!(not_found_message(&ours), ours);
        // The library's bare name of one of MCP's methods.
        assert_eq!(
            not_found_message("tasks/get"),
            not_spoken("tasks/get").message
        );
        // Anything else is not repeated.
        let other = not_found_message("<script>");
        assert!(
            other.starts_with("method not found; this server speaks initialize"),
            "{other}"
        );
    }

    #[test]
    fn a_known_method_whose_params_do_not_fit_is_invalid_params() {
        let check = |method: &str, params: Option<Value>| {
            let error = refusal(method, params.as_ref());
            assert_eq!(error.code, ErrorCode::INVALID_PARAMS, "{method}");
            error.message.into_owned()
        };
        assert_eq!(
            check("tools/call", Some(json!({}))),
            "invalid params for tools/call: params.name is required"
        );
        assert_eq!(
            check("tools/call", Some(json!({"name": 5}))),
            "invalid params for tools/call: params.name must be a string, not an integer"
        );
        assert_eq!(
            check("tools/call", None),
            "invalid params for tools/call: params is required"
        );
        assert_eq!(
            check("initialize", Some(json!({}))),
            "invalid params for initialize: params.protocolVersion is required"
        );
        assert_eq!(
            check("logging/setLevel", Some(json!({}))),
            "invalid params for logging/setLevel"
        );
    }
}
