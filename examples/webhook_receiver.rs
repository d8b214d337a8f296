//! A webhook receiver to copy: listens for threadline's deliveries, checks
//! each one's signature and timestamp (Standard Webhooks), prints the
//! verified events as JSON lines on stdout, and answers 204; a bad
//! signature or a stale timestamp gets 401 and is not printed.
//!
//! ```text
//! THREADLINE_WEBHOOK_SECRET=whsec_... cargo run --example webhook_receiver -- --bind 127.0.0.1:9000
//! cargo run --example webhook_receiver -- --secret-file secret.txt   # or from a file
//! ```
//!
//! The secret is read from `--secret-file`, `--secret` or
//! `THREADLINE_WEBHOOK_SECRET`, in that order. `--secret` still works, but
//! every user of the machine sees its value in `ps`; the file and the
//! variable keep it out, as the server keeps login keys out.
//!
//! How to verify, in any language: take the raw body exactly as received;
//! the HMAC key is the base64 after `whsec_`; compute HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`; base64 it and compare it, in
//! constant time, with each `v1,<sig>` in `webhook-signature`; refuse a
//! timestamp more than five minutes from your clock (a replay). The event
//! id (`webhook-id`, `id` in the body) is the same on every retry: use it to
//! drop repeats. A plain HTTP/1.1 server keeps this example dependency-free;
//! use your web framework's raw-body access in real code.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "usage: webhook_receiver [--bind 127.0.0.1:9000] [--secret-file PATH]
  --bind ADDR         where to listen (default 127.0.0.1:9000; port 0 picks one)
  --secret-file PATH  a file holding the endpoint's signing secret (whsec_...),
                      as created or rotated
  --secret SECRET     the secret itself: shown to every user of the machine by
                      `ps`; prefer the file or THREADLINE_WEBHOOK_SECRET
  Without either flag the secret is read from THREADLINE_WEBHOOK_SECRET.";
/// The variable the secret is read from when no flag gives it.
const SECRET_VAR: &str = "THREADLINE_WEBHOOK_SECRET";
/// Oldest (or furthest in the future) timestamp accepted, in seconds.
const TOLERANCE_SECS: i64 = 300;
/// Largest body read.
const MAX_BODY: usize = 1 << 20;

/// Whether `header` holds a valid signature of the delivery.
fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|k| STANDARD.decode(k).ok())
    else {
        return false;
    };
    header.split(' ').any(|sig| {
        let Some(tag) = sig
            .strip_prefix("v1,")
            .and_then(|t| STANDARD.decode(t).ok())
        else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        mac.verify_slice(&tag).is_ok() // constant time
    })
}

/// Whether the timestamp is within the tolerance of now.
fn fresh(timestamp: &str) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    timestamp
        .parse::<i64>()
        .is_ok_and(|t| (now - t).abs() <= TOLERANCE_SECS)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut bind, mut secret, mut secret_file) = ("127.0.0.1:9000".to_owned(), None, None);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            return;
        }
        match (flag.as_str(), args.next()) {
            ("--bind", Some(v)) => bind = v,
            ("--secret", Some(v)) => secret = Some(v),
            ("--secret-file", Some(v)) => secret_file = Some(v),
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let secret = match secret_file {
        // The file as an editor or `echo` leaves it: one line.
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(e) => {
                eprintln!("cannot read the secret from {path}: {e}");
                std::process::exit(2);
            }
        },
        None => secret.or_else(|| std::env::var(SECRET_VAR).ok()),
    };
    let Some(secret) = secret.filter(|s| s.starts_with("whsec_")) else {
        eprintln!("no secret (whsec_...) in --secret-file, --secret or {SECRET_VAR}\n{USAGE}");
        std::process::exit(2);
    };
    let listener = match TcpListener::bind(&bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {bind}: {e}");
            std::process::exit(1);
        }
    };
    let bound = listener.local_addr().map_or(bind, |addr| addr.to_string());
    eprintln!("listening on http://{bound}/");
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let secret = secret.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(conn, &secret).await {
                eprintln!("connection: {e}");
            }
        });
    }
}

/// Serves one keep-alive connection.
async fn serve(conn: TcpStream, secret: &str) -> std::io::Result<()> {
    let mut conn = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if conn.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if len > MAX_BODY {
            conn.get_mut()
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await?;
            return Ok(());
        }
        let mut body = vec![0; len];
        conn.read_exact(&mut body).await?;
        let header = |name: &str| headers.get(name).map(String::as_str).unwrap_or_default();
        let (id, ts) = (header("webhook-id"), header("webhook-timestamp"));
        let ok = fresh(ts) && verify(secret, id, ts, &body, header("webhook-signature"));
        let status = if ok {
            println!("{}", String::from_utf8_lossy(&body));
            "204 No Content"
        } else {
            eprintln!("refused a delivery (bad signature or stale timestamp), id {id:?}");
            "401 Unauthorized"
        };
        let res = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        conn.get_mut().write_all(res.as_bytes()).await?;
    }
}
