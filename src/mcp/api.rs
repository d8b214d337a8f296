//! A client of threadline's own public HTTP API, acting with one login key.
//! The MCP tools are written once, against this client: the stdio server
//! points it at `--url`, the `/mcp` endpoint at the server's own bound
//! address with the caller's key. So a tool can do exactly what the key could
//! do over HTTP, under the same access rules and rate limits.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::domain::LoginKey;

/// How long one API request may take. Requests to the server's own API are
/// local and short; this only bounds a server that stopped answering.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A failed API call, as the API reported it (its envelope's code, message
/// and field), or as the client saw it when no answer came.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiFailure {
    /// The HTTP status; for a failure found here, the one the API gives
    /// that code (422 for `VALIDATION_ERROR`, ...); 0 when the server did
    /// not answer (`UNAVAILABLE`).
    pub status: u16,
    /// The envelope's `code` (`NOT_FOUND`, `VALIDATION_ERROR`, ...).
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait, on `RATE_LIMITED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl ApiFailure {
    /// A failure found before or without asking the server (a bad argument,
    /// no answer): the same shape as the API's own, so callers see one kind.
    pub fn local(code: &str, message: impl Into<String>, field: Option<&str>) -> ApiFailure {
        // The status the API answers with this code: the same failure
        // reads the same whether found here or by the server.
        let status = match code {
            "VALIDATION_ERROR" => 422,
            "UNAUTHORIZED" => 401,
            "NOT_FOUND" => 404,
            _ => 0,
        };
        ApiFailure {
            status,
            code: code.to_owned(),
            message: message.into(),
            field: field.map(str::to_owned),
            retry_after: None,
        }
    }

    /// A 422-like failure about one argument.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiFailure {
        ApiFailure::local("VALIDATION_ERROR", message, Some(field))
    }

    fn unreachable() -> ApiFailure {
        // The transport error is not shown: it may name internal addresses.
        ApiFailure::local(
            "UNAVAILABLE",
            "the threadline server did not answer; retry shortly",
            None,
        )
    }

    /// Reads an error envelope; a body that is not one still yields the status.
    fn from_response(status: StatusCode, body: &[u8]) -> ApiFailure {
        let envelope: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let error = &envelope["error"];
        let text = |name: &str| error[name].as_str().map(str::to_owned);
        ApiFailure {
            status: status.as_u16(),
            code: text("code").unwrap_or_else(|| match status.as_u16() {
                401 => "UNAUTHORIZED".into(),
                404 => "NOT_FOUND".into(),
                429 => "RATE_LIMITED".into(),
                _ => "UNAVAILABLE".into(),
            }),
            message: text("message").unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("request failed")
                    .to_owned()
            }),
            field: text("field"),
            retry_after: error["retry_after"].as_u64(),
        }
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The result of one API call: the response's JSON, or why it failed.
pub type ApiCall<T = Value> = Result<T, ApiFailure>;

/// A base URL and a login key; cheap to clone (the HTTP pool is shared).
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    /// `http://host:port` (with any path prefix), no trailing slash.
    base: String,
    key: LoginKey,
    /// A header sent with every request and socket (the `/mcp` endpoint's
    /// mark on its calls to its own server: see
    /// `http::limits::INTERNAL_HEADER`).
    extra: Option<(&'static str, Arc<str>)>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A shared HTTP pool for API clients. Its idle connections close before
/// the server's keep-alive (75 s) would close them under a request.
pub fn http_pool() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        // expect: a builder with only timeouts set has nothing that can fail.
        .expect("expect: building an HTTP client with timeouts only")
}

impl ApiClient {
    /// A client of the API at `base` (`http://host:port`) acting with `key`.
    pub fn new(http: reqwest::Client, base: &str, key: LoginKey) -> ApiClient {
        ApiClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
            extra: None,
        }
    }

    /// This client, sending `name: value` with every request and socket.
    pub fn with_header(self, name: &'static str, value: Arc<str>) -> ApiClient {
        ApiClient {
            extra: Some((name, value)),
            ..self
        }
    }

    async fn call(&self, method: Method, path: &str, query: &[(&str, String)]) -> ApiCall {
        self.send(self.request(method, path).query(query)).await
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.key.reveal());
        match &self.extra {
            Some((name, value)) => request.header(*name, &**value),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> ApiCall {
        Ok(self.send_read(request).await?.0)
    }

    /// [`Self::send`], with the answer's `Threadline-Generation` (the
    /// database's generation; none from a server older than it).
    async fn send_read(
        &self,
        request: reqwest::RequestBuilder,
    ) -> ApiCall<(Value, Option<String>)> {
        let res = request
            .send()
            .await
            .map_err(|_| ApiFailure::unreachable())?;
        let status = res.status();
        let generation = res
            .headers()
            .get(crate::http::middleware::THREADLINE_GENERATION.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = res.bytes().await.map_err(|_| ApiFailure::unreachable())?;
        if !status.is_success() {
            return Err(ApiFailure::from_response(status, &body));
        }
        let value = serde_json::from_slice(&body).map_err(|_| {
            ApiFailure::local("UNAVAILABLE", "the server's answer was not JSON", None)
        })?;
        Ok((value, generation))
    }

    /// A read whose answer names the generation it was read in: the
    /// API's object with `"generation"` added (when the server said it).
    /// A client that keeps what it read compares it with the next
    /// answer's: another one means the server was restored from a backup
    /// in between, and what it holds may be gone (README, "Resume").
    async fn read_with_generation(&self, path: &str, query: &[(&str, String)]) -> ApiCall {
        let (mut value, generation) = self
            .send_read(self.request(Method::GET, path).query(query))
            .await?;
        if let (Some(object), Some(generation)) = (value.as_object_mut(), generation) {
            object.insert("generation".to_owned(), Value::String(generation));
        }
        Ok(value)
    }

    async fn post(&self, path: &str, body: &Value) -> ApiCall {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// `GET /api/acsp/me`: the key's account and its agents.
    pub async fn me(&self) -> ApiCall {
        self.call(Method::GET, "/api/acsp/me", &[]).await
    }

    /// Whether the key is live: `Err` with status 401 when it is unknown or
    /// revoked, or the API's other refusal (429 over quota).
    pub async fn check_key(&self) -> ApiCall<()> {
        self.me().await.map(drop)
    }

    /// `GET /api/acsp/threads`, with the `generation` it was read in.
    pub async fn list_threads(
        &self,
        aid: Option<&str>,
        status: Option<&str>,
        limit: Option<u32>,
        offset: Option<u64>,
    ) -> ApiCall {
        let mut query = Vec::new();
        push(&mut query, "aid", aid);
        push(&mut query, "status", status);
        push(&mut query, "limit", limit);
        push(&mut query, "offset", offset);
        self.read_with_generation("/api/acsp/threads", &query).await
    }

    /// `GET /api/acsp/thread/{id}`, with the `generation` it was read in.
    pub async fn get_thread(
        &self,
        thread_id: &str,
        aid: Option<&str>,
        limit: Option<u32>,
        after: Option<u64>,
    ) -> ApiCall {
        let mut query = vec![("thread_id", thread_id.to_owned())];
        push(&mut query, "aid", aid);
        push(&mut query, "limit", limit);
        push(&mut query, "after", after);
        // By query rather than path: the id is the caller's text, and a
        // query parameter cannot reach another route.
        self.read_with_generation("/api/acsp/thread", &query).await
    }

    /// `POST /api/acsp/thread/create`.
    pub async fn create_thread(&self, body: &Value) -> ApiCall {
        self.post("/api/acsp/thread/create", body).await
    }

    /// `POST /api/acsp/thread/message`, with an `Idempotency-Key` when given.
    pub async fn post_message(&self, body: &Value, idempotency_key: Option<&str>) -> ApiCall {
        let mut request = self
            .request(Method::POST, "/api/acsp/thread/message")
            .json(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    /// `POST /api/acsp/thread/status`.
    pub async fn set_status(&self, body: &Value) -> ApiCall {
        self.post("/api/acsp/thread/status", body).await
    }

    /// A socket on a thread's channel (`open_thread` with its id), replaying
    /// the messages after `after` first. Re-open only (`"create": false`):
    /// a thread deleted since the caller last saw it is `NOT_FOUND`, never
    /// made again, empty, under its id.
    pub async fn thread_socket(&self, thread_id: &str, after: u64) -> ApiCall<EventSocket> {
        let grant = self
            .post(
                "/v1/turn-taking/actions/open_thread",
                &json!({ "thread_id": thread_id, "create": false }),
            )
            .await?;
        self.connect(&grant, Some(after)).await
    }

    /// A socket on an agent's inbox (`realtime/open`).
    pub async fn inbox_socket(&self, aid: &str) -> ApiCall<EventSocket> {
        let grant = self
            .post("/api/acsp/realtime/open", &json!({ "aid": aid }))
            .await?;
        self.connect(&grant, None).await
    }

    /// Connects to a grant's socket. The grant's `connect_url` is built from
    /// the server's public URL, which this client may not reach (a proxy in
    /// front, or the server calling itself): only its path and grant are
    /// kept, on this client's own base.
    async fn connect(&self, grant: &Value, after: Option<u64>) -> ApiCall<EventSocket> {
        let connect_url = grant["realtime"]["connect_url"].as_str().unwrap_or("");
        let Some(at) = connect_url.find("/v1/ws?") else {
            return Err(ApiFailure::local(
                "UNAVAILABLE",
                "the server's grant had no connect_url",
                None,
            ));
        };
        let base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            format!("ws://{}", self.base.trim_start_matches("http://"))
        };
        let mut url = format!("{base}{}", &connect_url[at..]);
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|_| ApiFailure::unreachable())?;
        if let Some((name, value)) = &self.extra {
            let value = value.parse().map_err(|_| ApiFailure::unreachable())?;
            request.headers_mut().insert(*name, value);
        }
        let (stream, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| match e {
                // The server refused the handshake (a grant its key no
                // longer backs, a thread deleted meanwhile): its answer.
                tokio_tungstenite::tungstenite::Error::Http(res) => {
                    let body = res.body().as_deref().unwrap_or_default();
                    ApiFailure::from_response(res.status(), body)
                }
                _ => ApiFailure::unreachable(),
            })?;
        Ok(EventSocket {
            stream,
            close_code: None,
        })
    }
}

fn push<T: ToString>(query: &mut Vec<(&'static str, String)>, name: &'static str, v: Option<T>) {
    if let Some(v) = v {
        query.push((name, v.to_string()));
    }
}

/// A WebSocket of JSON events (a thread's channel or an agent's inbox).
pub struct EventSocket {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// The code of the server's close frame, once one came.
    close_code: Option<u16>,
}

impl EventSocket {
    /// The next event, or `None` once the socket is closed.
    pub async fn next_event(&mut self) -> Option<Value> {
        while let Some(frame) = self.stream.next().await {
            match frame {
                Ok(WsMessage::Text(text)) => {
                    if let Ok(event) = serde_json::from_str(&text) {
                        return Some(event);
                    }
                }
                Ok(WsMessage::Close(frame)) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    return None;
                }
                Err(_) => return None,
                Ok(_) => {}
            }
        }
        None
    }

    /// Why the server closed the socket, as the API would say it: the
    /// login key was revoked (4001: `UNAUTHORIZED`), the thread deleted
    /// (4004: `NOT_FOUND` on `thread_id`), else the stream ended (`UNAVAILABLE`, worth
    /// another try).
    pub fn closed(&self) -> ApiFailure {
        use crate::realtime::revocation::{CLOSE_REVOKED, CLOSE_THREAD_DELETED};
        match self.close_code {
            Some(CLOSE_REVOKED) => ApiFailure::local(
                "UNAUTHORIZED",
                "the login key was revoked while waiting",
                None,
            ),
            // Only a thread's socket closes so (an inbox stays open): the
            // wait's `thread_id` is the argument at fault, as in the API's
            // own 404 for it.
            Some(CLOSE_THREAD_DELETED) => ApiFailure::local(
                "NOT_FOUND",
                "the thread was deleted while waiting",
                Some("thread_id"),
            ),
            _ => ApiFailure::local(
                "UNAVAILABLE",
                "the event stream closed (the server may be restarting); call again",
                None,
            ),
        }
    }

    /// Closes the socket politely (the server would notice either way).
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
