//! The web inspector: a page served at `/`, `/inspect` and `/inspect/` that watches and
//! drives threads from a browser. Its HTML, CSS and JS are compiled into the
//! binary (no build step, no CDN, works offline) and it talks to the server
//! only through the public API with the login key the user types in, so it
//! can do nothing a client holding that key could not.
//!
//! Every answer carries a strict Content-Security-Policy (no inline script or
//! style, no third-party origin, no framing), `nosniff` and `no-referrer`.
//! Assets are revalidated on every load (`no-cache` with a strong `ETag`):
//! a new binary never meets a stale script, and an unchanged one costs a 304.

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::state::resource;

/// Registers the page and its assets. Each path is its own resource, so
/// `/metrics` counts it under its own route label and other methods get the
/// enveloped 405.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/", None).get(index))
        .service(resource("/inspect", None).get(index))
        // The page's assets have absolute paths, so the same page works here.
        .service(resource("/inspect/", None).get(index))
        .service(resource("/inspect/app.js", None).get(script))
        .service(resource("/inspect/style.css", None).get(style))
        .service(resource("/inspect/icon.svg", None).get(icon));
}

/// Scripts, styles, sockets and images from this origin only; nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One compiled-in file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
}

const INDEX: Asset = Asset {
    body: include_bytes!("../../assets/inspector/index.html"),
    content_type: "text/html; charset=utf-8",
};
const SCRIPT: Asset = Asset {
    body: include_bytes!("../../assets/inspector/app.js"),
    content_type: "text/javascript; charset=utf-8",
};
const STYLE: Asset = Asset {
    body: include_bytes!("../../assets/inspector/style.css"),
    content_type: "text/css; charset=utf-8",
};
const ICON: Asset = Asset {
    body: include_bytes!("../../assets/inspector/icon.svg"),
    content_type: "image/svg+xml",
};

/// The strong ETag of each asset, computed once (the bodies never change
/// while the process runs).
fn etag(asset: &Asset, cell: &'static OnceLock<String>) -> &'static str {
    cell.get_or_init(|| {
        let digest = Sha256::digest(asset.body);
        format!("\"{}\"", hex::encode(&digest[..12]))
    })
}

/// Whether the client's `If-None-Match` already names this version. The
/// comparison is weak (RFC 9110 §13.1.2): `W/"…"` names it too, as a
/// proxy that compresses the asset may have rewritten the tag so. Every
/// line of the header counts (it is a list).
fn client_has(req: &HttpRequest, tag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
}

fn serve(req: &HttpRequest, asset: &Asset, cell: &'static OnceLock<String>) -> HttpResponse {
    let tag = etag(asset, cell);
    let mut res = if client_has(req, tag) {
        HttpResponse::build(StatusCode::NOT_MODIFIED).finish()
    } else {
        HttpResponse::Ok()
            .content_type(asset.content_type)
            .body(asset.body)
    };
    let headers = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-cache"),
        (header::ETAG, tag),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    res
}

/// GET / and GET /inspect: the page.
pub async fn index(req: HttpRequest) -> HttpResponse {
    static TAG: OnceLock<String> = OnceLock::new();
    serve(&req, &INDEX, &TAG)
}

/// GET /inspect/app.js
pub async fn script(req: HttpRequest) -> HttpResponse {
    static TAG: OnceLock<String> = OnceLock::new();
    serve(&req, &SCRIPT, &TAG)
}

/// GET /inspect/style.css
pub async fn style(req: HttpRequest) -> HttpResponse {
    static TAG: OnceLock<String> = OnceLock::new();
    serve(&req, &STYLE, &TAG)
}

/// GET /inspect/icon.svg
pub async fn icon(req: HttpRequest) -> HttpResponse {
    static TAG: OnceLock<String> = OnceLock::new();
    serve(&req, &ICON, &TAG)
}
