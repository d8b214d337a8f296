//! What every resource module of the API uses: the state handlers reach,
//! and the builder of a resource. A leaf below the resource modules, so
//! that http/mod.rs depends on them and none of them on it.

use std::sync::Arc;

use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::http::header::{HeaderValue, ALLOW};
use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, HttpResponse, Resource, Responder};

use crate::config::ServeConfig;
use crate::error::ApiError;
use crate::metrics::{Metrics, RoutePattern};
use crate::ratelimit::{RateLimits, Route};
use crate::realtime::{Grants, Hub, Revocations};
use crate::store::Store;

/// What every handler can reach (through `web::Data`).
pub struct AppState {
    pub store: Store,
    pub hub: Arc<Hub>,
    pub grants: Arc<Grants>,
    /// Open sockets by login key, closed when their key is revoked.
    pub revocations: Arc<Revocations>,
    pub limits: RateLimits,
    pub config: ServeConfig,
    /// `ws://host:port` or `wss://...`, from the public URL.
    pub ws_base: String,
    /// Delivers paced replies and raises typing signals.
    pub scheduler: Arc<crate::turn::Scheduler>,
    /// What `/metrics` shows; the request middleware counts into it.
    pub metrics: Arc<Metrics>,
    /// When the server started, for `/healthz`'s `uptime_secs`.
    pub started: std::time::Instant,
    /// The database's generation (`Store::generation`, fixed while the
    /// server runs) as the `Threadline-Generation` header value every
    /// answer carries: built once, cloned per answer (no allocation).
    pub generation: HeaderValue,
}

/// A resource that answers 405 (in the envelope, with `Allow`) to other
/// methods, counts its requests under `route`'s quota, and is named by its
/// pattern in metrics. Its methods are added with [`Endpoint::get`] and
/// friends, which also record them for `Allow`: the header cannot list a
/// method the resource does not serve, nor miss one it does.
pub(super) fn resource(path: &'static str, route: Option<Route>) -> Endpoint {
    #[cfg(test)]
    if route.is_some() {
        WITH_QUOTA.with(|r| r.borrow_mut().push(path));
    }
    let r = web::resource(path).app_data(RoutePattern(path));
    let resource = match route {
        Some(route) => r.app_data(route),
        None => r,
    };
    Endpoint {
        #[cfg(test)]
        path,
        resource,
        methods: Vec::new(),
    }
}

/// A resource being built: the routes added so far and their methods.
pub(super) struct Endpoint {
    /// For the test-only record of what is registered.
    #[cfg(test)]
    path: &'static str,
    resource: Resource,
    methods: Vec<Method>,
}

impl Endpoint {
    /// GET, and HEAD by the same handler (RFC 9110 §9.1: a server that
    /// serves GET serves HEAD). actix-http writes a HEAD's headers as the
    /// GET's, `Content-Length` of the body included, and drops the body; a
    /// handler whose body never ends (a stream) must answer HEAD itself.
    pub(super) fn get<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::GET, handler.clone())
            .on(Method::HEAD, handler)
    }

    /// GET without HEAD, for a WebSocket upgrade: RFC 6455 opens with a
    /// GET, and a HEAD cannot upgrade, so it is refused (405) rather than
    /// answered with headers of a switch that does not happen.
    pub(super) fn get_upgrade<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::GET, handler)
    }

    pub(super) fn post<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::POST, handler)
    }

    pub(super) fn delete<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::DELETE, handler)
    }

    fn on<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self.resource.route(web::method(method.clone()).to(handler));
        self.methods.push(method);
        self
    }
}

impl HttpServiceFactory for Endpoint {
    fn register(self, config: &mut AppService) {
        #[cfg(test)]
        REGISTERED.with(|r| r.borrow_mut().push((self.path, self.methods.clone())));
        let allow = self
            .methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        // Built once here; a path's methods are known at startup.
        let allow = HeaderValue::from_str(&allow).expect("expect: method names are header-safe");
        self.resource
            .default_service(web::to(move || {
                let allow = allow.clone();
                async move {
                    let mut res = HttpResponse::from_error(ApiError::MethodNotAllowed);
                    res.headers_mut().insert(ALLOW, allow);
                    res
                }
            }))
            .register(config)
    }
}

#[cfg(test)]
thread_local! {
    /// Every path given to [`resource`] on this thread, with the methods it
    /// serves: the unit tests compare what the server registers with the
    /// OpenAPI document.
    #[allow(clippy::type_complexity)]
    pub(super) static REGISTERED: std::cell::RefCell<Vec<(&'static str, Vec<Method>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Every path given to [`resource`] with a per-key quota, on this
    /// thread: checked against [`super::LIMITED_ROUTES`].
    pub(super) static WITH_QUOTA: std::cell::RefCell<Vec<&'static str>> =
        const { std::cell::RefCell::new(Vec::new()) };
}
