//! The raw-TCP webhook receivers' shared part: reading one HTTP/1.1 request
//! off a connection (plain or TLS).

use std::collections::HashMap;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// Reads one request: its request line (without the line end), its headers
/// (names lowercased, names and values trimmed) and its body
/// (`content-length` bytes, none without the header). `None` at the end of
/// the connection, on a read error, on a header line without a `:` or on
/// a body shorter than announced.
pub async fn read_request<S: AsyncRead + Unpin>(
    conn: &mut BufReader<S>,
) -> Option<(String, HashMap<String, String>, Vec<u8>)> {
    let mut request_line = String::new();
    if conn.read_line(&mut request_line).await.ok()? == 0 {
        return None;
    }
    let request_line = request_line.trim_end().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if conn.read_line(&mut h).await.ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = match headers.get("content-length") {
        Some(l) => l.parse().ok()?,
        None => 0,
    };
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.ok()?;
    Some((request_line, headers, body))
}
