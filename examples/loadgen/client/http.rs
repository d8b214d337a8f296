//! The hot path: requests prepared once, and the per-connection clients
//! that send them (the raw HTTP/1.1 client, or reqwest for comparison).

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request, built once and sent many times.
pub struct Prepared {
    /// The whole HTTP/1.1 request, head and body (raw client).
    pub raw: Bytes,
    method: reqwest::Method,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

/// Where the server is, for the raw client.
#[derive(Clone)]
pub struct Target {
    base: String,
    pub addr: SocketAddr,
    /// The `Host` header value.
    host: String,
}

impl Target {
    pub async fn resolve(base: &str) -> Result<Target, String> {
        let url = reqwest::Url::parse(base).map_err(|e| format!("--url {base}: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!("--url must be http:// (got {base})"));
        }
        let host = url.host_str().ok_or("--url has no host")?.to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to nothing"))?;
        Ok(Target {
            base: base.trim_end_matches('/').to_owned(),
            addr,
            host: format!("{host}:{port}"),
        })
    }

    pub fn prepare(&self, method: &str, path: &str, key: &str, body: Option<String>) -> Prepared {
        let body = Bytes::from(body.unwrap_or_default());
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n",
            self.host
        );
        if method == "POST" {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(&body);

        use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
        let mut headers = reqwest::header::HeaderMap::new();
        let auth = HeaderValue::from_str(&format!("Bearer {key}"))
            .expect("expect: login keys are URL-safe base64");
        headers.insert(AUTHORIZATION, auth);
        if method == "POST" {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Prepared {
            raw: Bytes::from(raw),
            method: method.parse().expect("expect: GET or POST"),
            url: reqwest::Url::parse(&format!("{}{path}", self.base))
                .expect("expect: the base URL parsed already"),
            headers,
            body,
        }
    }
}

/// A minimal HTTP/1.1 keep-alive client: one connection, one request at a
/// time, no allocation per request once warm.
pub struct RawConn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Where the last response's body starts in `buf`.
    body_at: usize,
}

impl RawConn {
    pub fn new(addr: SocketAddr) -> RawConn {
        RawConn {
            addr,
            stream: None,
            buf: Vec::with_capacity(64 * 1024),
            body_at: 0,
        }
    }

    /// Sends `request` and reads the whole response; returns its status.
    pub async fn roundtrip(&mut self, request: &[u8]) -> std::io::Result<u16> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut().expect("expect: connected just above");
        match exchange(stream, request, &mut self.buf).await {
            Ok((status, body_at, keep_alive)) => {
                self.body_at = body_at;
                if !keep_alive {
                    self.stream = None;
                }
                Ok(status)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    pub fn last_body(&self) -> &[u8] {
        self.buf.get(self.body_at..).unwrap_or_default()
    }
}

fn io_error(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

/// Writes the request, reads one response into `buf`: (status, body offset, keep-alive).
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, usize, bool)> {
    stream.write_all(request).await?;
    buf.clear();
    let mut scanned = 0;
    let head_end = loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(i) = find(&buf[scanned..], b"\r\n\r\n") {
            break scanned + i + 4;
        }
        scanned = buf.len().saturating_sub(3);
        if buf.len() > 64 * 1024 {
            return Err(io_error("response head over 64 KiB"));
        }
    };
    let head = &buf[..head_end];
    let status = head
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| io_error("bad status line"))?;
    let mut length = None;
    let mut keep_alive = true;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok());
        } else if name.eq_ignore_ascii_case(b"connection") {
            keep_alive = !value.eq_ignore_ascii_case(b"close");
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(io_error(
                "chunked responses are not supported by the raw client",
            ));
        }
    }
    let total = head_end + length.ok_or_else(|| io_error("response without Content-Length"))?;
    while buf.len() < total {
        buf.reserve(total - buf.len());
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok((status, head_end, keep_alive))
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A connection's client.
pub enum Client {
    Raw(RawConn),
    Reqwest {
        client: reqwest::Client,
        last_body: Bytes,
    },
}

impl Client {
    pub async fn send(&mut self, p: &Prepared) -> Result<u16, String> {
        match self {
            Client::Raw(conn) => conn.roundtrip(&p.raw).await.map_err(|e| e.to_string()),
            Client::Reqwest { client, last_body } => {
                let mut req = client
                    .request(p.method.clone(), p.url.clone())
                    .headers(p.headers.clone());
                if !p.body.is_empty() {
                    req = req.body(p.body.clone());
                }
                let res = req.send().await.map_err(|e| e.to_string())?;
                let status = res.status().as_u16();
                *last_body = res.bytes().await.map_err(|e| e.to_string())?;
                Ok(status)
            }
        }
    }

    pub fn last_body(&self) -> String {
        let b = match self {
            Client::Raw(conn) => conn.last_body(),
            Client::Reqwest { last_body, .. } => last_body,
        };
        String::from_utf8_lossy(b).into_owned()
    }
}

pub fn reqwest_client(idle: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(idle)
        .tcp_nodelay(true)
        .build()
        .expect("expect: a plain HTTP client always builds")
}
