//! `threadline healthcheck`: asks a running server's `/healthz` and exits 0
//! only on a 200. Container images (and systemd or cron probes) can use the
//! binary itself instead of shipping curl. Plain `http://` only: it is meant
//! for the loopback address inside the container or host, never across a
//! network; HTTPS belongs to the reverse proxy in front.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response head read (the status line is all that matters).
const MAX_HEAD: usize = 4096;

/// Requests `url` and returns its status line when it is 200, or why not.
pub fn check(url: &str, timeout: Duration) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url must start with http:// (got {url})"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/healthz"),
    };
    // The authority without its port (an IPv6 address is in brackets).
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Err(format!("--url has no host (got {url})"));
    }
    let target = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("cannot set timeouts: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send the request to {addr}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_HEAD {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("no answer from {addr}: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status_line = head.lines().next().unwrap_or_default().to_owned();
    match status_line.split(' ').nth(1) {
        Some("200") => Ok(status_line),
        Some(_) => Err(format!("{url} answered {status_line}")),
        None => Err(format!("{url} gave no HTTP answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host_are_accepted() {
        let t = Duration::from_millis(100);
        assert!(check("https://127.0.0.1:1/healthz", t)
            .unwrap_err()
            .contains("http://"));
        assert!(check("http:///healthz", t).unwrap_err().contains("no host"));
        assert!(check("http://:80/healthz", t)
            .unwrap_err()
            .contains("no host"));
    }
}
