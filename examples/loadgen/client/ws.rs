//! A subscriber's WebSocket: the raw client (upgrade and frames by hand,
//! its socket then handed to a receiver thread), or tokio-tungstenite for
//! comparison.

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::frame::{answer_close, masked_frame, Ended, Frame, FrameReader};
use super::http::find;
use crate::cli::WsKind;

/// A minimal WebSocket client for subscribers: the upgrade, then the
/// server's (unmasked) frames in, and masked pong/close frames out, until
/// `connection.ready`; then its socket moves to a receiver thread, which
/// decodes with the same `FrameReader`. It does not check
/// `Sec-WebSocket-Accept`: this is a load generator.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    pos: usize,
    reader: FrameReader,
}

impl RawWs {
    pub async fn connect(url: &str) -> Result<RawWs, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("bad connect_url {url}: {e}"))?;
        let host = url.host_str().ok_or("connect_url has no host")?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("resolve {host}: {e}"))?
            .next()
            .ok_or("connect_url resolves to nothing")?;
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let nonce: [u8; 16] = rand::random();
        let request = format!(
            "GET {}?{} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n\r\n",
            url.path(),
            url.query().unwrap_or_default(),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, nonce),
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        let mut buf = Vec::with_capacity(8 * 1024);
        let head_end = loop {
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("upgrade: the server closed the connection".into());
            }
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err("upgrade: response head over 16 KiB".into());
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            let answer = String::from_utf8_lossy(&buf).into_owned();
            return Err(format!("upgrade refused: {answer}"));
        }
        Ok(RawWs {
            stream,
            buf,
            pos: head_end,
            reader: FrameReader::default(),
        })
    }

    /// The next text (or binary) message; `Err` says how the socket ended.
    /// Only `connection.ready` is read here: a receiver thread reads the rest.
    pub async fn next(&mut self) -> Result<Vec<u8>, Ended> {
        loop {
            let (used, frame) = self.reader.next(&self.buf[self.pos..]);
            self.pos += used;
            let reply = match frame {
                Some(Frame::Message(message)) => return Ok(message.to_vec()),
                Some(Frame::Ping(payload)) => masked_frame(0xA, payload),
                Some(Frame::Close(code)) => {
                    let (reply, ended) = answer_close(code);
                    let _ = self.stream.write_all(&reply).await;
                    return Err(ended);
                }
                None => {
                    self.fill().await?;
                    continue;
                }
            };
            self.stream
                .write_all(&reply)
                .await
                .map_err(|e| format!("error: {e}"))?;
        }
    }

    /// Reads more bytes, first dropping the ones already consumed.
    async fn fill(&mut self) -> Result<(), Ended> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err("eof".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("error: {e}")),
        }
    }

    /// The socket for a receiver thread, with the bytes read past the last
    /// frame handed out and the frame reader (a fragmented message's start).
    pub fn into_parts(self) -> std::io::Result<(std::net::TcpStream, Vec<u8>, FrameReader)> {
        let rest = self.buf[self.pos..].to_vec();
        Ok((self.stream.into_std()?, rest, self.reader))
    }
}

/// A subscriber's socket: the raw client, or tokio-tungstenite for comparison.
pub enum WsClient {
    Raw(RawWs),
    Tungstenite(Box<Tungstenite>),
}

pub type Tungstenite =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

impl WsClient {
    pub async fn connect(kind: WsKind, url: &str) -> Result<WsClient, String> {
        match kind {
            WsKind::Raw => RawWs::connect(url).await.map(WsClient::Raw),
            WsKind::Tungstenite => {
                let (ws, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                Ok(WsClient::Tungstenite(Box::new(ws)))
            }
        }
    }

    /// The next text message; `Err` says how the socket ended.
    pub async fn next(&mut self) -> Result<Vec<u8>, Ended> {
        match self {
            WsClient::Raw(ws) => ws.next().await,
            WsClient::Tungstenite(ws) => tungstenite_next(ws).await,
        }
    }
}

/// tokio-tungstenite's next text message; `Err` says how the socket ended.
pub async fn tungstenite_next(ws: &mut Tungstenite) -> Result<Vec<u8>, Ended> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) => return Ok(t.into_bytes()),
            Some(Ok(WsMessage::Close(frame))) => {
                return Err(frame.map_or("close (no code)".into(), |f| {
                    format!("close {}", u16::from(f.code))
                }))
            }
            // Pings are answered by the library as it reads.
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("error: {e}")),
            None => return Err("eof".into()),
        }
    }
}
