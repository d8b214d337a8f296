//! The two kinds of load: C connections each with one HTTP request in
//! flight (`http`), and a crowd of WebSocket subscribers (`crowd`).

pub mod crowd;
pub mod http;
