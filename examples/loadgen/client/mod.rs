//! The generator's clients: a JSON client to provision through the API
//! (off the hot path), and minimal HTTP/1.1 and WebSocket clients cheap
//! enough to share the machine with the server.

pub mod api;
pub mod frame;
pub mod http;
pub mod receivers;
pub mod ws;
