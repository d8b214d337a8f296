//! Hostile input, round 15: what a probe of the release build found still
//! open, each pinned by a test. Requests pipelined by a client that never
//! reads the answers held tens of megabytes per connection, with no key;
//! and log lines of a library (the MCP transport) carried whatever a client
//! sent, tens of kilobytes per request.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use serde_json::json;

use crate::helpers::process::{provision, Server};
use crate::helpers::{POLL, WAIT};

/// The server's anonymous resident memory (heap; not the mapped database),
/// in KiB.
fn rss_anon_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/PID/status")
}

// ---------------------------------------------------------- pipelined requests

/// A connection that sends `n` pipelined `GET /openapi.json` (68 KB
/// answers) at once and reads nothing, with a small receive buffer so the
/// answers back up in the server.
fn pipelining_client(port: u16, n: usize) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    socket.connect(&addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    let requests = "GET /openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(n);
    stream.write_all(requests.as_bytes()).expect("send");
    stream
}

/// Whether the server has started answering on `stream` (a byte waits).
fn answered(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let peeked = stream.peek(&mut byte);
    stream.set_nonblocking(false).expect("blocking");
    match peeked {
        Ok(n) => n > 0,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("connection failed: {e}"),
    }
}

/// actix decoded every request a connection had sent (a read buffer of
/// 128 KiB holds ~3,000 of them) and queued them all, a full request
/// object each, whenever it was already busy with one; it also went on
/// answering while the client read nothing. A client that pipelined
/// requests and never read the answers held ~20 MB per connection
/// (20 connections: +400 MB within seconds, 1,024 allowed per address),
/// with no key. Now at most 16 requests are queued and no more are read
/// or decoded while 128 KiB of answers wait: ten such connections leave
/// the heap within 48 MB of where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pipelined_by_a_client_that_never_reads_hold_bounded_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let _account = provision(&db);
    let server = Server::start(dir.path(), &db, &[], "warn").await;
    let port: u16 = server
        .api
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let pid = server.child.id();
    // Warm up the answer and the workers.
    let res = server
        .api
        .client
        .get(server.api.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let before = rss_anon_kib(pid);

    let clients: Vec<TcpStream> = (0..10).map(|_| pipelining_client(port, 3_000)).collect();
    // Once a connection has an answer, its requests have been read and
    // decoded as far as the server will.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !clients.iter().all(answered) {
        assert!(tokio::time::Instant::now() < deadline, "no answers");
        tokio::time::sleep(POLL).await;
    }
    // Memory is taken as the server decodes and answers: watch it a while.
    let mut peak = rss_anon_kib(pid);
    for _ in 0..20 {
        tokio::time::sleep(POLL).await;
        peak = peak.max(rss_anon_kib(pid));
    }
    let grown_mb = peak.saturating_sub(before) / 1024;
    assert!(
        grown_mb < 48,
        "ten pipelining connections grew the heap by {grown_mb} MB"
    );

    // Others are served meanwhile, and a client that pipelines and does
    // read gets every answer (the queue refills as it is answered).
    let res = server
        .api
        .client
        .get(server.api.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(clients);
    let mut reader = pipelining_client(port, 40);
    reader.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut answers = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    while answers
        .windows(b"HTTP/1.1 200 OK".len())
        .filter(|w| *w == b"HTTP/1.1 200 OK")
        .count()
        < 40
    {
        let n = reader.read(&mut chunk).expect("the answers");
        assert!(n > 0, "closed before 40 answers");
        answers.extend_from_slice(&chunk[..n]);
    }
}

// ------------------------------------------------------------------- log lines

/// The MCP library writes what a client sent into WARN lines when it
/// refuses a request: the `protocolVersion` of an `initialize` whose
/// `MCP-Protocol-Version` header differs (up to the 64 KiB body), a
/// malformed `Host` header (up to the 16 KiB of headers). Each such request
/// made a log line that long (60 KB measured). Every line but the request
/// line is now cut at 2 KiB and says how much was left out. (Since round
/// twenty-two a malformed `Host` is refused before any route, and the
/// library never sees it: no line of its own at all.)
#[tokio::test]
async fn a_library_s_log_line_is_cut_whatever_the_client_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let account = provision(&db);
    let server = Server::start(dir.path(), &db, &[], "info").await;
    let long_version = "v".repeat(60_000);
    let long_host = "a b".repeat(4_000);
    let mut request_ids = Vec::new();
    for (case, body, header, value) in [
        (
            "an initialize whose version differs from the header's",
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                   "params": {"protocolVersion": long_version, "capabilities": {},
                              "clientInfo": {"name": "probe", "version": "1"}}}),
            "mcp-protocol-version",
            "2025-06-18",
        ),
        (
            "a malformed Host header",
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
            "host",
            long_host.as_str(),
        ),
    ] {
        let res = server
            .api
            .client
            .post(server.api.url("/mcp"))
            .bearer_auth(&account.key)
            .header("accept", "application/json, text/event-stream")
            .header(header, value)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert!(res.status().is_client_error(), "{case}: {}", res.status());
        request_ids.push(res.headers()["x-request-id"].to_str().unwrap().to_owned());
    }
    // Every request's log line is out (each after the library's WARN).
    let deadline = tokio::time::Instant::now() + WAIT;
    while !request_ids
        .iter()
        .all(|id| server.stderr().contains(id.as_str()))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            server.stderr()
        );
        tokio::time::sleep(POLL).await;
    }
    let log = server.stderr();
    assert!(
        !log.contains("malformed Host header"),
        "a bad Host reaches the library: {log}"
    );
    let needle = "rejecting initialize";
    let line = log
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("the library's WARN line ({needle}): {log}"));
    assert!(
        line.len() < 2_300,
        "{needle}: a line of {} bytes",
        line.len()
    );
    assert!(
        line.contains(" bytes)"),
        "{needle}: says what was cut: {line}"
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2_300, "a log line of {longest} bytes");
}
