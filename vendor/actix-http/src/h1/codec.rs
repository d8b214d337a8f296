use std::{fmt, io};

use bitflags::bitflags;
use bytes::BytesMut;
use http::{Method, Version};
use tokio_util::codec::{Decoder, Encoder};

use super::{
    decoder::{self, PayloadDecoder, PayloadItem, PayloadType},
    encoder, Message, MessageType,
};
use crate::{body::BodySize, error::ParseError, ConnectionType, Request, Response, ServiceConfig};

bitflags! {
    #[derive(Debug, Clone, Copy)]
    struct Flags: u8 {
        const HEAD               = 0b0000_0001;
        const KEEP_ALIVE_ENABLED = 0b0000_0010;
        const STREAM             = 0b0000_0100;
        /// threadline patch (PATCHES.md): the answer being written is
        /// delimited by the connection's close (a stream to HTTP/1.0).
        const CLOSE_DELIMITED    = 0b0000_1000;
        /// threadline patch (PATCHES.md): `close_after_answer` was called:
        /// every answer from now on says `Connection: close`.
        const CLOSE_FORCED       = 0b0001_0000;
    }
}

/// HTTP/1 Codec
pub struct Codec {
    config: ServiceConfig,
    decoder: decoder::MessageDecoder<Request>,
    payload: Option<PayloadDecoder>,
    version: Version,
    conn_type: ConnectionType,

    // encoder part
    flags: Flags,
    encoder: encoder::MessageEncoder<Response<()>>,
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new(ServiceConfig::default())
    }
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("h1::Codec")
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

impl Codec {
    /// Create HTTP/1 codec.
    ///
    /// `keepalive_enabled` how response `connection` header get generated.
    pub fn new(config: ServiceConfig) -> Self {
        let flags = if config.keep_alive().enabled() {
            Flags::KEEP_ALIVE_ENABLED
        } else {
            Flags::empty()
        };

        Codec {
            config,
            flags,
            decoder: decoder::MessageDecoder::default(),
            payload: None,
            version: Version::HTTP_11,
            conn_type: ConnectionType::Close,
            encoder: encoder::MessageEncoder::default(),
        }
    }

    /// Check if request is upgrade.
    #[inline]
    pub fn upgrade(&self) -> bool {
        self.conn_type == ConnectionType::Upgrade
    }

    /// Check if last response is keep-alive.
    #[inline]
    pub fn keep_alive(&self) -> bool {
        self.conn_type == ConnectionType::KeepAlive
    }

    /// Check if keep-alive enabled on server level.
    #[inline]
    pub fn keep_alive_enabled(&self) -> bool {
        self.flags.contains(Flags::KEEP_ALIVE_ENABLED)
    }

    /// Check last request's message type.
    #[inline]
    pub fn message_type(&self) -> MessageType {
        if self.flags.contains(Flags::STREAM) {
            MessageType::Stream
        } else if self.payload.is_none() {
            MessageType::None
        } else {
            MessageType::Payload
        }
    }

    #[inline]
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// threadline patch (PATCHES.md): the next answer says `Connection:
    /// close` (a request whose body could not be decoded).
    pub(crate) fn close_after_answer(&mut self) {
        self.conn_type = ConnectionType::Close;
        self.flags.insert(Flags::CLOSE_FORCED);
    }

    /// threadline patch (PATCHES.md, `answer_to`): the next answer is to
    /// this request. The decoder takes the version, whether it is a `HEAD`
    /// and the connection's type from each request it decodes, and the
    /// dispatcher decodes the requests in hand (pipelined ones) while it
    /// answers the first: its answer took them from the latest.
    #[inline]
    pub(crate) fn answering(&mut self, to: AnswerTo) {
        self.flags.set(Flags::HEAD, to.head);
        self.version = to.version;
        if !self.flags.contains(Flags::CLOSE_FORCED) {
            self.conn_type = if to.conn_type == ConnectionType::KeepAlive
                && !self.flags.contains(Flags::KEEP_ALIVE_ENABLED)
            {
                ConnectionType::Close
            } else {
                to.conn_type
            };
        }
    }

    /// threadline patch (PATCHES.md, `refusal_body`): the next answer is
    /// the dispatcher's own, to a request it could not read: not a `HEAD`'s
    /// (the request before it may have been one), so its body goes out.
    #[inline]
    pub(crate) fn answering_refusal(&mut self) {
        self.flags.remove(Flags::HEAD);
    }

    /// threadline patch (PATCHES.md, `unchunked_for_http_1_0`): the last
    /// answer's body ends with the connection, so nothing may follow it on
    /// this connection (not even answers to requests pipelined behind it).
    #[inline]
    pub(crate) fn close_delimited(&self) -> bool {
        self.flags.contains(Flags::CLOSE_DELIMITED)
    }
}

impl Decoder for Codec {
    type Item = Message<Request>;
    type Error = ParseError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if let Some(ref mut payload) = self.payload {
            Ok(match payload.decode(src)? {
                Some(PayloadItem::Chunk(chunk)) => Some(Message::Chunk(Some(chunk))),
                Some(PayloadItem::Eof) => {
                    self.payload.take();
                    Some(Message::Chunk(None))
                }
                None => None,
            })
        } else if let Some((req, payload)) = self.decoder.decode(src)? {
            let head = req.head();
            self.flags.set(Flags::HEAD, head.method == Method::HEAD);
            self.version = head.version;
            self.conn_type = head.connection_type();

            if self.conn_type == ConnectionType::KeepAlive
                && !self.flags.contains(Flags::KEEP_ALIVE_ENABLED)
            {
                self.conn_type = ConnectionType::Close
            }

            match payload {
                PayloadType::None => self.payload = None,
                PayloadType::Payload(pl) => self.payload = Some(pl),
                PayloadType::Stream(pl) => {
                    self.payload = Some(pl);
                    self.flags.insert(Flags::STREAM);
                }
            }
            Ok(Some(Message::Item(req)))
        } else {
            Ok(None)
        }
    }
}

impl Encoder<Message<(Response<()>, BodySize)>> for Codec {
    type Error = io::Error;

    fn encode(
        &mut self,
        item: Message<(Response<()>, BodySize)>,
        dst: &mut BytesMut,
    ) -> Result<(), Self::Error> {
        match item {
            Message::Item((mut res, length)) => {
                // set response version
                res.head_mut().version = self.version;

                // connection status
                self.conn_type = if let Some(ct) = res.head().conn_type() {
                    if ct == ConnectionType::KeepAlive {
                        self.conn_type
                    } else {
                        ct
                    }
                } else {
                    self.conn_type
                };

                // threadline patch (PATCHES.md, `upgrade_declined`): only an
                // answer that switches protocols is an upgrade. Upstream
                // kept the request's `Connection: upgrade` for any answer, so
                // a `200` to a request that only offered one said
                // `connection: upgrade`, and the connection then closed
                // without saying so. It is kept alive as any other (HTTP/1.1),
                // or closed (HTTP/1.0, which has no upgrade).
                if self.conn_type == ConnectionType::Upgrade
                    && res.head().status != http::StatusCode::SWITCHING_PROTOCOLS
                {
                    self.conn_type = if self.version >= Version::HTTP_11
                        && self.flags.contains(Flags::KEEP_ALIVE_ENABLED)
                    {
                        ConnectionType::KeepAlive
                    } else {
                        ConnectionType::Close
                    };
                }

                // threadline patch (PATCHES.md, `unchunked_for_http_1_0`):
                // HTTP/1.0 has no chunked coding (RFC 9112 §6.1: a server must
                // not send `Transfer-Encoding` to a 1.0 request), so a body of
                // unknown length goes out raw and ends with the connection
                // (§6.3). A `HEAD` answer or one whose status has no body
                // writes none, and keeps the connection as asked.
                let close_delimited = length == BodySize::Stream
                    && self.version < Version::HTTP_11
                    && unchunked_for_http_1_0(
                        &mut res,
                        self.flags.contains(Flags::HEAD),
                        &mut self.conn_type,
                    );
                self.flags.set(Flags::CLOSE_DELIMITED, close_delimited);

                // encode message
                self.encoder.encode(
                    dst,
                    &mut res,
                    self.flags.contains(Flags::HEAD),
                    self.flags.contains(Flags::STREAM),
                    self.version,
                    length,
                    self.conn_type,
                    &self.config,
                )?;
            }

            Message::Chunk(Some(bytes)) => {
                self.encoder.encode_chunk(bytes.as_ref(), dst)?;
            }

            Message::Chunk(None) => {
                self.encoder.encode_eof(dst)?;
            }
        }

        Ok(())
    }
}

/// threadline patch (PATCHES.md, `answer_to`): what a request's answer is
/// encoded for (`Codec::answering`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnswerTo {
    version: Version,
    head: bool,
    conn_type: ConnectionType,
}

impl AnswerTo {
    #[inline]
    pub(crate) fn of(head: &crate::RequestHead) -> AnswerTo {
        AnswerTo {
            version: head.version,
            head: head.method == Method::HEAD,
            conn_type: head.connection_type(),
        }
    }
}

/// threadline patch (PATCHES.md): a streamed answer to an HTTP/1.0
/// request is sent without chunked coding; if it has a body, the
/// connection closes after it, which is what ends the body for the client.
/// Whether it has one (and so is delimited by the close).
fn unchunked_for_http_1_0(
    res: &mut Response<()>,
    head: bool,
    conn_type: &mut ConnectionType,
) -> bool {
    res.head_mut().no_chunking(true);
    let status = res.head().status;
    let has_body = !(head
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED);
    if has_body && *conn_type == ConnectionType::KeepAlive {
        *conn_type = ConnectionType::Close;
    }
    has_body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        header::{HeaderValue, UPGRADE},
        HttpMessage as _, StatusCode,
    };
    use bytes::Bytes;

    #[actix_rt::test]
    async fn upgrade_advertisement_preserves_keep_alive() {
        for (version, camel_case, connection) in [
            ("HTTP/1.1", false, "connection: upgrade\r\n"),
            ("HTTP/1.1", true, "Connection: Upgrade\r\n"),
            ("HTTP/1.0", false, "connection: keep-alive, upgrade\r\n"),
            ("HTTP/1.0", true, "Connection: keep-alive, upgrade\r\n"),
        ] {
            let mut codec = Codec::default();
            let mut request = BytesMut::from(
                format!("GET / {version}\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
                    .as_bytes(),
            );
            codec.decode(&mut request).unwrap().unwrap();

            let mut response = Response::with_body(StatusCode::OK, ());
            response.head_mut().set_camel_case_headers(camel_case);
            response
                .headers_mut()
                .insert(UPGRADE, HeaderValue::from_static("websocket"));

            let mut output = BytesMut::new();
            codec
                .encode(Message::Item((response, BodySize::Sized(0))), &mut output)
                .unwrap();
            let output = std::str::from_utf8(&output).unwrap();

            assert!(
                output.contains(connection),
                "missing {connection:?}: {output}"
            );
            assert!(codec.keep_alive());
        }
    }

    /// threadline patch (PATCHES.md): no chunked coding to HTTP/1.0.
    #[actix_rt::test]
    async fn streamed_answer_to_http_1_0_is_unchunked_and_closes() {
        // (request, size, written, not written, kept alive)
        let cases: [(&str, BodySize, &str, &str, bool); 6] = [
            (
                "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
                BodySize::Stream,
                "connection: close\r\n",
                "transfer-encoding",
                false,
            ),
            (
                "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
                BodySize::Stream,
                "connection: close\r\n",
                "transfer-encoding",
                false,
            ),
            (
                "HEAD / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
                BodySize::Stream,
                "connection: keep-alive\r\n",
                "transfer-encoding",
                true,
            ),
            (
                "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
                BodySize::Sized(3),
                "content-length: 3\r\n",
                "transfer-encoding",
                true,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                BodySize::Stream,
                "transfer-encoding: chunked\r\n",
                "connection",
                true,
            ),
            (
                "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
                BodySize::Sized(3),
                "content-length: 3\r\n",
                "connection",
                false,
            ),
        ];
        for (request, size, written, absent, kept) in cases {
            let mut codec = Codec::default();
            codec
                .decode(&mut BytesMut::from(request.as_bytes()))
                .unwrap()
                .unwrap();
            let mut output = BytesMut::new();
            let response = Response::with_body(StatusCode::OK, ());
            codec
                .encode(Message::Item((response, size)), &mut output)
                .unwrap();
            codec
                .encode(
                    Message::Chunk(Some(Bytes::from_static(b"abc"))),
                    &mut output,
                )
                .unwrap();
            codec.encode(Message::Chunk(None), &mut output).unwrap();
            let output = std::str::from_utf8(&output).unwrap();
            assert!(output.contains(written), "{request:?}: {output}");
            assert!(!output.contains(absent), "{request:?}: {output}");
            assert_eq!(codec.keep_alive(), kept, "{request:?}: {output}");
            let delimited = size == BodySize::Stream && !kept && request.contains("HTTP/1.0");
            assert_eq!(codec.close_delimited(), delimited, "{request:?}");
            let body = if request.starts_with("HEAD") {
                ""
            } else {
                "abc"
            };
            let chunked = output.contains("transfer-encoding");
            assert!(
                chunked || output.ends_with(&format!("\r\n\r\n{body}")),
                "{request:?}: {output}"
            );
        }
    }

    #[actix_rt::test]
    async fn test_http_request_chunked_payload_and_next_message() {
        let mut codec = Codec::default();

        let mut buf = BytesMut::from(
            "GET /test HTTP/1.1\r\n\
             Host: localhost\r\n\
             transfer-encoding: chunked\r\n\r\n",
        );
        let item = codec.decode(&mut buf).unwrap().unwrap();
        let req = item.message();

        assert_eq!(req.method(), Method::GET);
        assert!(req.chunked().unwrap());

        buf.extend(
            b"4\r\ndata\r\n4\r\nline\r\n0\r\n\r\n\
               POST /test2 HTTP/1.1\r\n\
               Host: localhost\r\n\
               transfer-encoding: chunked\r\n\r\n"
                .iter(),
        );

        let msg = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(msg.chunk().as_ref(), b"data");

        let msg = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(msg.chunk().as_ref(), b"line");

        let msg = codec.decode(&mut buf).unwrap().unwrap();
        assert!(msg.eof());

        // decode next message
        let item = codec.decode(&mut buf).unwrap().unwrap();
        let req = item.message();
        assert_eq!(*req.method(), Method::POST);
        assert!(req.chunked().unwrap());
    }

    #[actix_rt::test]
    async fn test_http_request_rejects_content_length_and_chunked() {
        let mut codec = Codec::default();
        let mut buf = BytesMut::from(
            "POST /test HTTP/1.1\r\n\
             Host: localhost\r\n\
             content-length: 11\r\n\
             transfer-encoding: chunked\r\n\r\n\
             0\r\n\r\n\
             GET /test2 HTTP/1.1\r\n\
             Host: localhost\r\n\r\n",
        );

        assert!(codec.decode(&mut buf).is_err());
    }
}
