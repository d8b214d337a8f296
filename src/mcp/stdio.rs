//! `threadline mcp --url URL`: an MCP server on stdin/stdout for clients
//! that launch processes, acting through the HTTP API of the threadline
//! server at `URL` with the key in `THREADLINE_KEY`. stdout carries only the
//! protocol; logs go to stderr.

use std::sync::Arc;

use rmcp::ServiceExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Stdin, Stdout};
use tokio::sync::Mutex;

use super::api::{http_pool, ApiClient};
use super::jsonrpc;
use super::server::ThreadlineMcp;
use crate::domain::LoginKey;

/// The environment variable that holds the login key (never a flag: the
/// command lines of processes are visible to other users).
pub const KEY_VAR: &str = "THREADLINE_KEY";

/// Runs the stdio server until the client closes stdin.
pub fn run(url: &str) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "--url must start with http:// or https:// (got {url})"
        ));
    }
    let key =
        std::env::var(KEY_VAR).map_err(|_| format!("set {KEY_VAR} to a login key (nk_...)"))?;
    let key = LoginKey::parse(key.trim())
        .ok_or_else(|| format!("{KEY_VAR} is not a login key (nk_ + 43 characters)"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let api = ApiClient::new(http_pool(), url, key);
        // Fail at start, with a message, rather than on the first tool call.
        api.check_key().await.map_err(|f| match f.status {
            401 => format!("{KEY_VAR} was refused by {url} (unknown or revoked key)"),
            0 => format!("{url} did not answer; is threadline serving there?"),
            _ => format!("{url} refused the key check: {f}"),
        })?;
        // rmcp reads and writes through pipes: what it cannot read is
        // answered here (see `verdict`), on the same stdout.
        let (to_server, server_in) = tokio::io::duplex(PIPE_BYTES);
        let (server_out, from_server) = tokio::io::duplex(PIPE_BYTES);
        let stdout = Arc::new(Mutex::new(tokio::io::stdout()));
        let relay = tokio::spawn(relay(from_server, Arc::clone(&stdout)));
        let filter = tokio::spawn(filter(tokio::io::stdin(), to_server, stdout));
        let served = async {
            let server = ThreadlineMcp::with_client(api)
                .serve((server_in, server_out))
                .await
                .map_err(|e| format!("MCP session did not start: {e}"))?;
            server
                .waiting()
                .await
                .map_err(|e| format!("MCP session failed: {e}"))?;
            Ok(())
        }
        .await;
        // rmcp's end of the pipe is closed: the relay has written all.
        filter.abort();
        let _ = relay.await;
        served
    })
}

/// What the pipes between stdin/stdout and rmcp hold.
const PIPE_BYTES: usize = 64 * 1024;
/// The longest line read, as rmcp bounds it; a longer one is dropped (as
/// rmcp drops it), up to its newline.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// Copies rmcp's answers to stdout, a whole line at a time (the filter
/// writes its own between them).
async fn relay(from_server: DuplexStream, stdout: Arc<Mutex<Stdout>>) {
    let mut lines = BufReader::new(from_server);
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let mut out = stdout.lock().await;
                if out.write_all(&line).await.is_err() || out.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Passes stdin's lines to rmcp, but answers itself those rmcp would
/// answer without their `id` (see [`verdict`]). Ends at stdin's end,
/// closing rmcp's input.
async fn filter(stdin: Stdin, mut to_server: DuplexStream, stdout: Arc<Mutex<Stdout>>) {
    let mut input = BufReader::new(stdin);
    let mut line = Vec::new();
    while read_line(&mut input, &mut line).await {
        match verdict(&line) {
            Verdict::Pass => {
                line.push(b'\n');
                if to_server.write_all(&line).await.is_err() {
                    return;
                }
            }
            Verdict::Answer(answer) => {
                let mut out = stdout.lock().await;
                let text = format!("{answer}\n");
                if out.write_all(text.as_bytes()).await.is_err() || out.flush().await.is_err() {
                    return;
                }
            }
            Verdict::Drop => {}
        }
    }
    let _ = to_server.shutdown().await;
}

/// Reads the next line (without its newline) into `line`; false at the
/// end. A line over [`MAX_LINE`] is skipped whole.
async fn read_line(input: &mut BufReader<Stdin>, line: &mut Vec<u8>) -> bool {
    line.clear();
    let mut skipping = false;
    loop {
        let (taken, ended) = {
            let Ok(available) = input.fill_buf().await else {
                return false;
            };
            if available.is_empty() {
                // A last line without its newline is still a line.
                return !line.is_empty();
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let part = &available[..newline.unwrap_or(available.len())];
            if line.len() + part.len() > MAX_LINE {
                skipping = true;
                line.clear();
            }
            if !skipping {
                line.extend_from_slice(part);
            }
            (
                newline.map_or(available.len(), |n| n + 1),
                newline.is_some(),
            )
        };
        input.consume(taken);
        if ended {
            if skipping {
                skipping = false;
                line.clear();
                continue;
            }
            return true;
        }
    }
}

/// What to do with one line of stdin.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// On to rmcp.
    Pass,
    /// Answer with this JSON-RPC error; rmcp is not asked.
    Answer(serde_json::Value),
    /// Nothing: a notification, which is never answered.
    Drop,
}

/// rmcp answers well-formed JSON that is not a message it reads with
/// `{"jsonrpc": "2.0", "error": {"code": -32600, ...}}` and no `id`, which
/// JSON-RPC 2.0 requires (`null` when it cannot be read): a client waiting
/// for the answer to its request never got one it could match. A line rmcp
/// reads, and one that is not JSON at all (which rmcp ignores, as MCP's
/// other SDKs do), passes; a notification it cannot read gets no answer;
/// any other message is answered here as `/mcp` answers it (see
/// [`jsonrpc::judge`]), with its `id` when it has one.
fn verdict(line: &[u8]) -> Verdict {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
    if serde_json::from_slice::<rmcp::model::ClientJsonRpcMessage>(line).is_ok() {
        return Verdict::Pass;
    }
    let Some(refusal) = jsonrpc::judge(line) else {
        return Verdict::Pass;
    };
    match refusal.id {
        Some(_) => Verdict::Answer(refusal.answer()),
        None => Verdict::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(line: serde_json::Value) -> Verdict {
        verdict(line.to_string().as_bytes())
    }

    #[test]
    fn what_rmcp_reads_and_what_is_not_json_pass() {
        for line in [
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string(),
            json!({"jsonrpc": "2.0", "id": "a", "method": "no/such", "params": {}}).to_string(),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
            "not json".to_owned(),
            "{\"jsonrpc\"".to_owned(),
        ] {
            assert_eq!(verdict(line.as_bytes()), Verdict::Pass, "{line}");
        }
    }

    #[test]
    fn what_rmcp_cannot_read_is_answered_with_its_id() {
        let cases = [
            (
                json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": []}),
                json!(5),
                -32602,
            ),
            (
                json!({"jsonrpc": "2.0", "id": "x", "method": "tools/list", "params": 5}),
                json!("x"),
                -32602,
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
                json!(1.5),
                -32600,
            ),
            (
                json!({"jsonrpc": "1.0", "id": 2, "method": "ping"}),
                json!(2),
                -32600,
            ),
            (
                json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
                json!(null),
                -32600,
            ),
            (
                json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}),
                json!(null),
                -32600,
            ),
            (
                json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]),
                json!(null),
                -32600,
            ),
            (json!(7), json!(null), -32600),
        ];
        for (line, id, code) in cases {
            let Verdict::Answer(answer) = answer(line.clone()) else {
                panic!("{line}: not answered");
            };
            assert_eq!(answer["jsonrpc"], "2.0", "{line}");
            assert_eq!(answer.get("id"), Some(&id), "{line}: {answer}");
            assert_eq!(answer["error"]["code"], code, "{line}: {answer}");
        }
    }

    #[test]
    fn a_notification_rmcp_cannot_read_gets_no_answer() {
        let line = json!({"jsonrpc": "2.0", "method": "notifications/x", "params": []});
        assert_eq!(answer(line), Verdict::Drop);
    }
}
