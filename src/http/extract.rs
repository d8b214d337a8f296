//! Extractors: the authenticated caller (with its rate limit counted), JSON
//! bodies with field-precise errors, and query parameters.

use std::borrow::Cow;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use actix_web::dev::{Payload, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::state::AppState;
use crate::domain::limits::{MAX_BODY_BYTES, MAX_QUERY_PARAMS};
use crate::domain::{Aid, LoginKey, ThreadId};
use crate::error::{ApiError, ApiResult};
use crate::metrics::RoutePattern;
use crate::ratelimit::{RateInfo, Route};
use crate::store::db::accounts::{self, Account};
use crate::store::model::ReaderView;
use crate::store::{Db, Store, Tx, WriteHint};

/// The account (`usr_...`) a request authenticated as, for the request log;
/// left in the request's extensions by the key check.
#[derive(Debug, Clone)]
pub struct AccountId(pub String);

/// A request's login key, counted against that key's quota for the route
/// (the resource's `Route` app data). The key is checked against the
/// database inside the same store call as the request's own work
/// ([`Caller::read`], [`Caller::write`]): one trip to the database thread
/// instead of two, and revocation still holds from the very next request.
#[derive(Clone)]
pub struct Caller {
    key_hash: [u8; 32],
    req: HttpRequest,
}

const BAD_KEY: &str = "missing or invalid login key (Authorization: Bearer nk_...)";

/// The refusal of a request with several `Authorization` headers, even
/// when one of them holds a live key.
pub(crate) const ONE_AUTHORIZATION: &str =
    "send one Authorization header: this request has more than one";

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<ApiResult<Caller>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Caller::from_headers(req))
    }
}

/// The login key of an `Authorization: Bearer nk_...` header, if it has a
/// well-formed one. The scheme is case-insensitive (RFC 7235).
pub fn bearer_key(headers: &actix_web::http::header::HeaderMap) -> Option<LoginKey> {
    bearer_text(headers).and_then(LoginKey::parse)
}

/// [`bearer_key`]'s hash, with no copy of the key made.
fn bearer_key_hash(headers: &actix_web::http::header::HeaderMap) -> Option<[u8; 32]> {
    bearer_text(headers).and_then(LoginKey::parse_hash)
}

/// The key text of the request's one `Authorization` header. None when
/// there is none, or more than one (RFC 9110 §5.3: a header that is not a
/// list may not be sent twice; which one a client meant is a guess, and
/// proxies may keep either), or it is not `Bearer <key>`.
fn bearer_text(headers: &actix_web::http::header::HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION);
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, key) = value.to_str().ok()?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// Whether a request carries more than one `Authorization` header.
fn authorization_repeated(headers: &actix_web::http::header::HeaderMap) -> bool {
    headers.get_all(AUTHORIZATION).nth(1).is_some()
}

impl Caller {
    fn from_headers(req: &HttpRequest) -> ApiResult<Caller> {
        let state = app_state(req)?;
        let Some(key_hash) = bearer_key_hash(req.headers()) else {
            return Err(refuse(req, state));
        };
        if let Some(route) = counted_route(req) {
            note_rate(req, state.limits.check_key(&key_hash, route))?;
        }
        Ok(Caller {
            key_hash,
            req: req.clone(),
        })
    }

    /// The SHA-256 of the login key (what the database stores).
    pub fn key_hash(&self) -> [u8; 32] {
        self.key_hash
    }

    /// Runs `f` on a read connection as the key's account (401 if the key
    /// is unknown or revoked).
    pub async fn read<T, F>(&self, store: &Store, f: F) -> ApiResult<T>
    where
        F: FnOnce(Db<'_>, &Account) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.read_on(store, false, f).await
    }

    /// [`Caller::read`] through [`Store::read_here`]: for short reads by
    /// key on a hot path.
    pub async fn read_here<T, F>(&self, store: &Store, f: F) -> ApiResult<T>
    where
        F: FnOnce(Db<'_>, &Account) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.read_on(store, true, f).await
    }

    async fn read_on<T, F>(&self, store: &Store, here: bool, f: F) -> ApiResult<T>
    where
        F: FnOnce(Db<'_>, &Account) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let hash = self.key_hash;
        self.as_account(|slot| async move {
            let read = move |conn: Db<'_>| {
                let account = authenticate(conn, &hash)?;
                slot.fill(&account);
                f(conn, &account)
            };
            if here {
                store.read_here(read).await
            } else {
                store.read(read).await
            }
        })
        .await
    }

    /// A read of thread `id` as the key's account (401 if the key is
    /// unknown or revoked): the store looks up the account, the agent
    /// `aid`, the thread and the agent's read mark in one go
    /// ([`Store::read_reader_view`]), then runs `f` with them on the same
    /// connection; with `single`, without a transaction around it.
    pub async fn read_thread<T, F>(
        &self,
        store: &Store,
        single: bool,
        aid: Option<Aid>,
        id: ThreadId,
        f: F,
    ) -> ApiResult<T>
    where
        F: FnOnce(Db<'_>, &Account, &ReaderView) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.as_account(|slot| {
            store.read_reader_view(single, self.key_hash, aid, id, move |conn, found| {
                let found = found.ok_or(ApiError::Unauthorized(BAD_KEY))?;
                let (account, view) = &*found;
                slot.fill(account);
                f(conn, account, view)
            })
        })
        .await
    }

    /// Runs `f` in the writer's next batch as the key's account (401 if the
    /// key is unknown or revoked).
    pub async fn write<T, F>(&self, store: &Store, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut Tx<'_, '_>, &Account) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.write_hinted(store, WriteHint::default(), f).await
    }

    /// [`Caller::write`], saying which agent and thread `f` will look up
    /// (the key is added here).
    pub async fn write_hinted<T, F>(&self, store: &Store, hint: WriteHint, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut Tx<'_, '_>, &Account) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let hash = self.key_hash;
        let hint = WriteHint {
            key: Some(hash),
            ..hint
        };
        self.as_account(|slot| {
            store.write_hinted(hint, move |ctx| {
                let account = ctx.account(&hash)?.ok_or(ApiError::Unauthorized(BAD_KEY))?;
                slot.fill(&account);
                f(ctx, &account)
            })
        })
        .await
    }

    /// [`Caller::write_hinted`] for a write that may run more than once,
    /// only its last run counting ([`Store::write_repeatable`]): posts.
    pub async fn write_repeatable<T, F>(&self, store: &Store, hint: WriteHint, f: F) -> ApiResult<T>
    where
        F: Fn(&mut Tx<'_, '_>, &Account) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let hash = self.key_hash;
        let hint = WriteHint {
            key: Some(hash),
            ..hint
        };
        self.as_account(|slot| {
            store.write_repeatable(hint, move |ctx| {
                let account = ctx.account(&hash)?.ok_or(ApiError::Unauthorized(BAD_KEY))?;
                slot.fill(&account);
                f(ctx, &account)
            })
        })
        .await
    }

    /// Runs a store call that checks the key and leaves its account in the
    /// slot it is given; then notes that account for the request log, and
    /// counts an unknown key against the client IP's quota.
    async fn as_account<T, Fut>(&self, call: impl FnOnce(AccountSlot) -> Fut) -> ApiResult<T>
    where
        Fut: Future<Output = ApiResult<T>>,
    {
        let slot = AccountSlot::new();
        let result = call(slot.clone()).await;
        self.note_account(slot);
        self.refused_if_unknown(result)
    }

    /// Leaves the account the key belongs to for the request log (whether
    /// or not the request then succeeded).
    fn note_account(&self, slot: AccountSlot) {
        let Some(slot) = slot.0 else {
            return;
        };
        // The store call has dropped its copy of the slot by now (the
        // closure holding it ran, or was dropped unrun): the id moves
        // out without a copy.
        let user_id = match Arc::try_unwrap(slot) {
            Ok(cell) => cell.into_inner(),
            Err(shared) => shared.get().cloned(),
        };
        if let Some(user_id) = user_id {
            self.req.extensions_mut().insert(AccountId(user_id));
        }
    }

    /// An unknown key also counts against the client IP's quota for bad
    /// keys, and leaves no per-key quota behind (a stream of made-up keys
    /// would otherwise hold one entry each until the minute's shrink).
    fn refused_if_unknown<T>(&self, result: ApiResult<T>) -> ApiResult<T> {
        match result {
            Err(ApiError::Unauthorized(_)) => Err(match app_state(&self.req) {
                Ok(state) => {
                    // Only the key check says BAD_KEY: a known key that met
                    // another 401 keeps its count.
                    if let (Err(ApiError::Unauthorized(BAD_KEY)), Some(route)) =
                        (&result, counted_route(&self.req))
                    {
                        state.limits.forget_key(&self.key_hash, route);
                    }
                    refuse(&self.req, state)
                }
                Err(e) => e,
            }),
            other => other,
        }
    }
}

/// Which answer wins when a request is wrong in more than one way: its
/// credentials before what it sent. A request is refused for its body or
/// query (`413`, `422`) before its login key has been looked up (the lookup
/// rides along with the request's own store call, to save a trip on every
/// request that succeeds), and `/v1/ws` and `/v1/sse` read their query
/// before their grant or key. Such a refusal gives way to the
/// credentials' own (`401`, or `429` once the client IP has used its quota
/// for bad credentials) when the key is unknown, revoked or missing, or
/// the grant unknown, used or expired: a client whose key was revoked is
/// told so, not sent to fix a body that was never the problem. Only
/// refused requests pay the lookup. `/mcp` checks its key before its body,
/// and registration takes no key.
pub async fn credentials_before_content(res: ServiceResponse) -> ServiceResponse {
    let Some(credentials) = credentials_to_check(&res) else {
        return res;
    };
    let req = res.request().clone();
    // Boxed: every request's middleware future would otherwise hold room
    // for this rare lookup.
    let checked = Box::pin(async move {
        let state = app_state(&req)?;
        match credentials {
            Credentials::Key(caller) => caller.read(&state.store, |_, _| Ok(())).await,
            Credentials::NoKey => Err(refuse(&req, state)),
            Credentials::Grant(token) => match state.grants.live_anywhere(&token).await {
                true => Ok(()),
                false => Err(grant_refused(&req, GRANT_REFUSED)),
            },
        }
    })
    .await;
    match checked {
        Err(e @ (ApiError::Unauthorized(_) | ApiError::RateLimited { .. })) => {
            res.error_response(e)
        }
        // Good credentials (or none checkable now): the refusal stands.
        _ => res,
    }
}

/// The answer to a grant that is unknown, used or expired (they look
/// alike: nothing is kept of them), naming the route for either kind of
/// channel: `/v1/ws`, `/v1/sse` and the refusals' second look answer it.
pub(crate) const GRANT_REFUSED: ApiError = ApiError::Unauthorized(
    "unknown, used or expired grant: ask for a new one (open_thread for a thread, \
     POST /api/acsp/realtime/open for an agent's inbox)",
);

/// What [`credentials_before_content`] checks.
enum Credentials {
    /// A well-formed login key, not yet known to be live.
    Key(Caller),
    /// None, on a route that takes a key.
    NoKey,
    /// A grant (`c=`).
    Grant(String),
}

/// The credentials of a request refused for what it sent, if its route
/// takes any: a grant on `/v1/ws`, and on `/v1/sse` when `c` is given,
/// else a login key on every route counted per key but `/mcp`.
fn credentials_to_check(res: &ServiceResponse) -> Option<Credentials> {
    if !matches!(
        res.status(),
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::PAYLOAD_TOO_LARGE
    ) {
        return None;
    }
    let req = res.request();
    let route = req.app_data::<Route>();
    let socket = req.app_data::<RoutePattern>() == Some(&RoutePattern("/v1/ws"));
    if socket || route == Some(&Route::EventStream) {
        let grant = form_urlencoded::parse(req.query_string().as_bytes())
            .find(|(name, _)| name == "c")
            .map(|(_, token)| token.into_owned());
        match grant {
            Some(token) => return Some(Credentials::Grant(token)),
            // The socket takes nothing else: no grant is a bad one.
            None if socket => return Some(Credentials::Grant(String::new())),
            None => {}
        }
    }
    match route? {
        Route::Mcp => None,
        _ => Some(match bearer_key_hash(req.headers()) {
            Some(key_hash) => Credentials::Key(Caller {
                key_hash,
                req: req.clone(),
            }),
            None => Credentials::NoKey,
        }),
    }
}

/// Where a store call notes the account it authenticated: set on the
/// database thread, read back once the call returns, even if it failed.
/// None when the log does not write it (only JSON request lines carry the
/// account): then a request costs no slot and no copy of the id.
#[derive(Clone)]
struct AccountSlot(Option<Arc<OnceLock<String>>>);

impl AccountSlot {
    fn new() -> AccountSlot {
        AccountSlot(crate::logging::request_accounts_logged().then(Default::default))
    }

    fn fill(&self, account: &Account) {
        if let Some(slot) = &self.0 {
            let _ = slot.set(account.user_id.clone());
        }
    }
}

fn authenticate(conn: Db<'_>, hash: &[u8; 32]) -> ApiResult<Account> {
    accounts::authenticate(conn, hash)?.ok_or(ApiError::Unauthorized(BAD_KEY))
}

/// The route whose per-key quota a request counts under, if any.
fn counted_route(req: &HttpRequest) -> Option<Route> {
    req.app_data::<Route>()
        .map(|route| route.counted_as(req.method()))
}

fn app_state(req: &HttpRequest) -> ApiResult<&web::Data<AppState>> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("app state missing".into()))
}

/// The answer to a missing or bad key (or more than one `Authorization`
/// header): 401, or 429 once the client IP has used its quota for bad keys
/// (so keys cannot be guessed at speed).
fn refuse(req: &HttpRequest, state: &web::Data<AppState>) -> ApiError {
    match note_rate(req, state.limits.check_unauthenticated(client_ip(req))) {
        Ok(()) if authorization_repeated(req.headers()) => {
            ApiError::Unauthorized(ONE_AUTHORIZATION)
        }
        Ok(()) => ApiError::Unauthorized(BAD_KEY),
        Err(limited) => limited,
    }
}

/// A refusal of a grant (`401`: unknown, used, expired, or minted by a key
/// since revoked), counted against the client IP's quota for bad
/// credentials like a bad key: `429` instead once that is used up, so a
/// client without credentials cannot make the server look grants up (a
/// database query on PostgreSQL) at any speed. Other errors pass as they are.
pub fn grant_refused(req: &HttpRequest, error: ApiError) -> ApiError {
    if !matches!(error, ApiError::Unauthorized(_)) {
        return error;
    }
    let Ok(state) = app_state(req) else {
        return error;
    };
    match note_rate(req, state.limits.check_unauthenticated(client_ip(req))) {
        Ok(()) => error,
        Err(limited) => limited,
    }
}

/// Records a limiter's verdict for the response headers; turns a denial into
/// the 429 error.
pub fn note_rate(
    req: &HttpRequest,
    checked: Result<Option<RateInfo>, crate::ratelimit::Denied>,
) -> ApiResult<()> {
    match checked {
        Ok(Some(info)) => {
            req.extensions_mut().insert(info);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err((err, info)) => {
            req.extensions_mut().insert(info);
            Err(err)
        }
    }
}

/// The client's address: the TCP peer, or, when the peer is a proxy listed
/// in `--trust-proxy`, the address it forwarded (see [`super::forwarded`]).
/// Rate limits and the request log use this one function.
pub fn client_ip(req: &HttpRequest) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_canonical())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match app_state(req) {
        Ok(state) if !state.config.trust_proxy.is_empty() => {
            super::forwarded::client_address(peer, req.headers(), &state.config.trust_proxy)
        }
        _ => peer,
    }
}

/// A JSON request body of at most `MAX_BODY_BYTES`, deserialized into `T`. Malformed
/// JSON and wrong types are 422 naming the field at fault; over-long bodies
/// 413; a body not complete within `--body-timeout-secs` 408 (and the
/// connection closed: actix times out request heads, never bodies).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> JsonBody<T> {
    /// Reads and parses a body from a payload the handler took itself (so it
    /// can refuse a request before reading its body).
    pub async fn from_payload(req: &HttpRequest, payload: web::Payload) -> ApiResult<JsonBody<T>> {
        let mut payload = payload.into_inner();
        // Polled first at any time (after the handler's own awaits), not
        // from actix's eager poll: the timer starts at once.
        read_json(req, &mut payload, false).await
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = ApiResult<JsonBody<T>>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        Box::pin(read_json(req, payload, true))
    }
}

/// A JSON request body read whole (the same limits and timeout as
/// [`JsonBody`]) but parsed by the handler, into a type whose strings
/// borrow from it ([`RawJson::parse`]): a field that is only checked and
/// dropped (an AID, a thread id) is then never copied.
pub struct RawJson(web::Bytes);

impl RawJson {
    /// Parses the body as [`JsonBody`] does (the same errors).
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> ApiResult<T> {
        super::json::parse(&self.0)
    }
}

impl FromRequest for RawJson {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = ApiResult<RawJson>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        Box::pin(read_body(req, payload, true).map(|body| body.map(RawJson)))
    }
}

/// A request body read whole within the same limits and deadline as
/// [`JsonBody`] (the same `408` and `413`), not parsed: for `/mcp`, which
/// judges the JSON itself (`crate::mcp::endpoint`) and whose transport's
/// own read has no deadline.
pub async fn read_body_whole(req: &HttpRequest, payload: &mut Payload) -> ApiResult<web::Bytes> {
    read_body(req, payload, false).await
}

/// Checks that `body` is a JSON object, valid all through: `Ok`, or the
/// `422` any route gives (see [`super::json::parse`]).
pub fn check_json_object(body: &[u8]) -> ApiResult<()> {
    parse_json::<std::collections::HashMap<String, serde::de::IgnoredAny>>(body).map(|_| ())
}

/// Reads a JSON body (see [`JsonBody`]); with `eager_poll`, the caller is
/// actix's extraction, whose first poll comes with the request's head (see
/// [`within`]).
fn read_json<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
    eager_poll: bool,
) -> impl Future<Output = ApiResult<JsonBody<T>>> + 'static {
    let body = read_body(req, payload, eager_poll);
    async move { parse_json(&body.await?).map(JsonBody) }
}

/// Reads a request body whole (see [`JsonBody`] for the limits and
/// [`within`] for `eager_poll`). A body that came in one chunk (nearly
/// every one) is that chunk, not a copy of it.
fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
    eager_poll: bool,
) -> impl Future<Output = ApiResult<web::Bytes>> + 'static {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let encoded = encoding_refused(req.headers());
    let deadline = app_state(req).map(|s| Duration::from_secs(s.config.body_timeout_secs));
    // A header flag's test: requests without `Expect` pay nothing more.
    let key_first = if req.head().expect() {
        key_before_body(req)
    } else {
        None
    };
    let mut payload = payload.take();
    async move {
        if let Some(refused) = encoded {
            return Err(refused);
        }
        if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
            return Err(ApiError::PayloadTooLarge);
        }
        if let Some((caller, state)) = key_first {
            // Before the payload's first poll, which asks for the `100`.
            caller.read_here(&state.store, |_, _| Ok(())).await?;
        }
        let read = async {
            let mut body = web::Bytes::new();
            // Only once a second chunk comes: the chunks joined.
            let mut joined: Option<web::BytesMut> = None;
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(body_unread)?;
                let so_far = joined.as_ref().map_or(body.len(), |j| j.len());
                if so_far + chunk.len() > MAX_BODY_BYTES {
                    return Err(ApiError::PayloadTooLarge);
                }
                match &mut joined {
                    Some(joined) => joined.extend_from_slice(&chunk),
                    None if body.is_empty() => body = chunk,
                    None => {
                        let mut both = web::BytesMut::with_capacity(body.len() + chunk.len());
                        both.extend_from_slice(&body);
                        both.extend_from_slice(&chunk);
                        joined = Some(both);
                    }
                }
            }
            Ok(joined.map_or(body, web::BytesMut::freeze))
        };
        within(deadline?, eager_poll, read).await
    }
}

/// For a request with `Expect: 100-continue` on a route that takes a login
/// key: the caller and the state to look the key up with before the body is
/// read. Such a client waits for `100 Continue` before sending its body, and
/// the HTTP layer sends it only once the body is first read: an unknown or
/// revoked key is then answered `401` alone, and the body never sent. Other
/// requests have their key looked up with their own work, after the body
/// (one trip to the database instead of two). None where the route takes
/// no key (registration), checks it itself first (`/mcp`), or the request
/// has no well-formed key (the route's key extractor refuses it).
fn key_before_body(req: &HttpRequest) -> Option<(Caller, web::Data<AppState>)> {
    match req.app_data::<Route>()? {
        Route::Mcp | Route::EventStream => return None,
        _ => {}
    }
    let key_hash = bearer_key_hash(req.headers())?;
    let state = app_state(req).ok()?.clone();
    Some((
        Caller {
            key_hash,
            req: req.clone(),
        },
        state,
    ))
}

/// The refusal of a body that could not be read whole: one whose chunked
/// framing broke (the HTTP layer stops reading it there) is told so.
fn body_unread(error: actix_web::error::PayloadError) -> ApiError {
    ApiError::invalid(match error {
        actix_web::error::PayloadError::EncodingCorrupted => {
            "malformed chunked body (Transfer-Encoding: chunked): a chunk size must be \
             hex digits and each chunk's data end with CRLF"
        }
        _ => "could not read the request body",
    })
}

/// The refusal of a body sent with a `Content-Encoding` other than
/// `identity` (gzip, br, ...): bodies are read as sent, never decoded, so
/// such a body would otherwise be answered "malformed JSON", which sends
/// the client looking for a fault in JSON that is fine. `422` (the
/// contract's code for a body the server cannot take; it has no `415`),
/// naming the header and what to do instead. The header's value is
/// named only when it is a short token: it is the client's text.
fn encoding_refused(headers: &actix_web::http::header::HeaderMap) -> Option<ApiError> {
    let mut codings = headers
        .get_all(CONTENT_ENCODING)
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty());
    let coding = codings.find(|coding| !coding.eq_ignore_ascii_case(b"identity"))?;
    let named = match coding {
        c if c.len() <= 24
            && c.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b)) =>
        {
            format!(
                "Content-Encoding {} is not supported",
                String::from_utf8_lossy(c)
            )
        }
        _ => "this Content-Encoding is not supported".to_owned(),
    };
    Some(ApiError::field(
        "Content-Encoding",
        format!("{named}: send the request body uncompressed, without Content-Encoding"),
    ))
}

/// A body read, given `deadline` once it is clear the body has not all
/// arrived with its head. actix polls a handler once as soon as it has
/// decoded a head, before it feeds the handler the body that came in the
/// same read, and again right after: a body still incomplete at that
/// second poll gets its timer then. Arming and clearing a timer for every
/// body that was there all along was measurable on every post.
/// Without `eager_poll`, the timer starts at the first poll.
async fn within(
    deadline: Duration,
    eager_poll: bool,
    read: impl Future<Output = ApiResult<web::Bytes>>,
) -> ApiResult<web::Bytes> {
    let mut read = std::pin::pin!(read);
    let mut polled = !eager_poll;
    let early = std::future::poll_fn(|cx| match read.as_mut().poll(cx) {
        Poll::Ready(body) => Poll::Ready(Some(body)),
        // The payload has this task's waker: new data wakes it, and
        // actix's second poll comes anyway.
        Poll::Pending if !polled => {
            polled = true;
            Poll::Pending
        }
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    match early {
        Some(body) => body,
        None => tokio::time::timeout(deadline, read)
            .await
            .map_err(|_| ApiError::RequestTimeout)?,
    }
}

/// Parses a JSON object into `T`, naming the offending field on error
/// (see [`super::json::parse`]).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    super::json::parse(body)
}

/// A required field: present (and not null), else 422 naming it.
pub fn required<T>(field: &str, value: Option<T>) -> ApiResult<T> {
    value.ok_or_else(|| ApiError::field(field, format!("{field} is required")))
}

/// `raw` (the parameter `name`, if given) as an integer within
/// `min..=max`, or `default`.
pub(super) fn parse_int(
    raw: Option<&str>,
    name: &str,
    min: i64,
    max: i64,
    default: Option<i64>,
) -> ApiResult<Option<i64>> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    // Plain decimal only: Rust's parser also takes `+1` and `01`, which
    // another reader of the same URL (a proxy's cache key, a log search)
    // may not read as 1.
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    let plain = digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'));
    match raw.parse::<i64>() {
        Ok(n) if plain && (min..=max).contains(&n) => Ok(Some(n)),
        _ => {
            // The real range, i64::MAX included ("≥ 0" read as unbounded
            // while 2^63 was refused). Formatted only for the error.
            Err(ApiError::field(
                name,
                format!("{name} must be an integer from {min} to {max}"),
            ))
        }
    }
}

/// The query string, decoded (percent escapes, `+`), borrowed from the
/// request where nothing needed decoding; a repeated parameter is 422.
/// Routes take the few parameters they know, so a short list beats a map.
pub struct Query<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Query<'a> {
    /// Parses `req`'s query string; a repeated parameter, or more than
    /// [`MAX_QUERY_PARAMS`], is 422.
    pub fn parse(req: &'a HttpRequest) -> ApiResult<Query<'a>> {
        let mut pairs: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::with_capacity(4);
        for (k, v) in form_urlencoded::parse(req.query_string().as_bytes()) {
            if pairs.len() == MAX_QUERY_PARAMS {
                return Err(ApiError::invalid(format!(
                    "a query string may have at most {MAX_QUERY_PARAMS} parameters"
                )));
            }
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(ApiError::field(&k, format!("{k} is given more than once")));
            }
            pairs.push((k, v));
        }
        Ok(Query(pairs))
    }

    /// The parameter `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| &**v)
    }

    /// The integer parameter `name` within `min..=max`, or `default`.
    pub fn int(
        &self,
        name: &str,
        min: i64,
        max: i64,
        default: Option<i64>,
    ) -> ApiResult<Option<i64>> {
        parse_int(self.get(name), name, min, max, default)
    }
}
