//! MCP (Model Context Protocol): threadline's threads as tools and resources
//! for AI agents in any MCP client, over Streamable HTTP at `/mcp` and over
//! stdio (`threadline mcp --url URL`). The tools are written once, as calls
//! to the public HTTP API with the caller's login key ([`api::ApiClient`]),
//! so the same key, access rules and rate limits apply by construction.

/// A client of the public HTTP API and its WebSockets, with one login key.
pub mod api;
/// Tool arguments, read in the API's words.
pub mod args;
/// The `/mcp` endpoint: key check, then rmcp's Streamable HTTP transport.
pub mod endpoint;
/// JSON-RPC messages the MCP library cannot read, judged for both transports.
pub mod jsonrpc;
/// The methods the server answers, and its errors for the others.
pub mod methods;
/// Tool inputs and results as JSON schemas.
pub mod schema;
/// The tools and resources.
pub mod server;
/// `threadline mcp`: the server on stdin/stdout.
pub mod stdio;
/// `wait_for_messages`: history first, then the event stream.
pub mod wait;

pub use endpoint::Endpoint;
pub use server::ThreadlineMcp;
