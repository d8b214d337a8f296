//! `threadline mcp --url URL`: an MCP server on stdin/stdout for clients
//! that launch processes, acting through the HTTP API of the threadline
//! server at `URL` with the key in `THREADLINE_KEY`. stdout carries only the
//! protocol; logs go to stderr.

use rmcp::ServiceExt;

use super::api::{http_pool, ApiClient};
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
        let server = ThreadlineMcp::with_client(api)
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| format!("MCP session did not start: {e}"))?;
        server
            .waiting()
            .await
            .map_err(|e| format!("MCP session failed: {e}"))?;
        Ok(())
    })
}
