//! Round twenty-one's hostile-input and conformance sweep: what it found in
//! the WebSocket handshake and the event stream's resume point.

use crate::hardening_net::Raw;
use crate::helpers::{spawn_app_with, Ws, WAIT};

/// RFC 6455 allows one `Sec-WebSocket-Key` (§11.3.1: it "MUST NOT appear
/// more than once") and one version, 13 (§4.1). Sent twice, actix read the
/// first of each: a handshake with two nonces was upgraded with the
/// first's accept value, and `Sec-WebSocket-Version: 13` then `8` was
/// upgraded while `8` then `13` was refused. Which one the client meant is
/// a guess, as for every header the API refuses twice (`Authorization`,
/// `Idempotency-Key`, `Last-Event-ID`): each is now a 422 naming the
/// header (the version's with `Sec-WebSocket-Version: 13`, as for any
/// other refused version), in either order, and the grant stays usable.
#[tokio::test]
async fn a_handshake_with_a_websocket_header_given_twice_is_422_and_keeps_the_grant() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let (_, url) = app.grant_for(&app.key, None).await;
    let path = &url[url.find("/v1/ws?").expect("a /v1/ws url")..];
    const K1: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const K2: &str = "AAECAwQFBgcICQoLDA0ODw==";
    let cases: [(&str, &[(&str, &str)]); 4] = [
        (
            "Sec-WebSocket-Key",
            &[
                ("Sec-WebSocket-Key", K1),
                ("Sec-WebSocket-Key", K2),
                ("Sec-WebSocket-Version", "13"),
            ],
        ),
        (
            "Sec-WebSocket-Key",
            &[
                ("Sec-WebSocket-Key", K1),
                ("Sec-WebSocket-Key", K1),
                ("Sec-WebSocket-Version", "13"),
            ],
        ),
        (
            "Sec-WebSocket-Version",
            &[
                ("Sec-WebSocket-Key", K1),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Version", "8"),
            ],
        ),
        (
            "Sec-WebSocket-Version",
            &[
                ("Sec-WebSocket-Key", K1),
                ("Sec-WebSocket-Version", "8"),
                ("Sec-WebSocket-Version", "13"),
            ],
        ),
    ];
    for (field, headers) in cases {
        let mut head =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut raw = Raw::connect(&app).await;
        raw.send(head.as_bytes()).await;
        let res = raw.response(WAIT).await;
        let case = format!("{headers:?}");
        assert_eq!(res.status, 422, "{case}: {res:?}");
        let body = res.assert_envelope(422, "VALIDATION_ERROR");
        assert_eq!(body["error"]["field"], field, "{case}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("more than one"), "{case}: {body}");
        if field == "Sec-WebSocket-Version" {
            assert_eq!(res.header("sec-websocket-version"), Some("13"), "{case}");
        }
    }
    // None of them used the grant up.
    let mut ws = Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    ws.close().await;
}
