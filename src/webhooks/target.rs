//! Where a webhook may be sent: parsing the URL and the event types at the
//! edge, and refusing private, loopback and link-local addresses (unless
//! the server allows them) both when an endpoint is made and at every
//! delivery, after DNS resolution (a resolver that filters what it
//! returns, so a name cannot be switched to an internal address later).

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

use crate::error::{ApiError, ApiResult};

/// The event types an endpoint may take. An endpoint gets only those it
/// names: one stored before `thread.deleted` existed does not get it.
pub const EVENT_TYPES: [&str; 4] = [
    "thread.created",
    "thread.message",
    "thread.status",
    "thread.deleted",
];

/// Longest URL accepted, in characters: as every other length in the API
/// (Unicode scalar values, not bytes; the OpenAPI `maxLength` says the same).
const MAX_URL: usize = 2048;

/// A webhook URL as given: `http(s)://host[:port]/path[?query]`, at most
/// [`MAX_URL`] characters, taken as written. The URL standard's parser
/// repairs what a user most likely mistyped (`http:example.com`,
/// `http:/x`, `http:///x` and `http:\\x` all read as `http://x/`, a
/// backslash as a slash, spaces around and tabs inside dropped): each is
/// refused rather than guessed at (a scheme or host in capitals, and
/// `/` for an empty path, are still normalised). A user name
/// or password is refused too (the URL is shown in every list of the
/// account's endpoints; deliveries are signed instead), and so is a
/// fragment, which is never sent.
pub fn parse_url(raw: &str) -> ApiResult<Url> {
    let bad = |m: &str| ApiError::field("url", m);
    if raw.chars().count() > MAX_URL {
        return Err(bad("url must be at most 2048 characters"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("url must not contain spaces or control characters"));
    }
    if raw.contains('\\') {
        return Err(bad("url must not contain a backslash (\\); paths use /"));
    }
    let after_scheme = ["http://", "https://"].iter().find_map(|scheme| {
        raw.get(..scheme.len())
            .filter(|s| s.eq_ignore_ascii_case(scheme))
            .map(|_| &raw[scheme.len()..])
    });
    // `http:///x` names no host before its path: the parser would take `x`.
    if after_scheme.is_none_or(|rest| rest.starts_with('/')) {
        return Err(bad(ABSOLUTE));
    }
    let url = parse_stored(raw)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "url must not carry a user name or password (it is shown wherever the \
             account's endpoints are listed; deliveries are signed instead)",
        ));
    }
    if url.fragment().is_some() {
        return Err(bad("url must not have a fragment (#...): it is never sent"));
    }
    Ok(url)
}

/// A stored endpoint's URL as every answer and listing shows it (the API,
/// `threadline webhook list`, the inspector): a user name or password,
/// which endpoints stored before [`parse_url`] refused them may carry,
/// replaced by `***` (`http://***@host/hook`), so the list does not show
/// a credential to everyone with a key of the account. The rest is left
/// as stored. Deliveries still send the stored credentials (as HTTP Basic
/// authorization).
pub fn shown(raw: &str) -> std::borrow::Cow<'_, str> {
    let Some(start) = raw.find("://").map(|i| i + 3) else {
        return raw.into();
    };
    let rest = &raw[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{}***{}", &raw[..start], &rest[at..]).into(),
        None => raw.into(),
    }
}

/// Serializes an endpoint's URL as [`shown`].
pub fn serialize_shown<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&shown(url))
}

const ABSOLUTE: &str = "url must be an absolute http:// or https:// URL";

/// A stored endpoint's URL, read back at delivery: parsed as it was when
/// stored (an endpoint registered before [`parse_url`]'s stricter reading
/// keeps working), with an http or https scheme, a host and a port.
pub fn parse_stored(raw: &str) -> ApiResult<Url> {
    let bad = |m: &str| ApiError::field("url", m);
    let url = Url::parse(raw).map_err(|_| bad(ABSOLUTE))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(ABSOLUTE));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("url must name a host"));
    }
    // Nothing listens on port 0: every delivery would fail.
    if url.port() == Some(0) {
        return Err(bad("url must name a port from 1 to 65535"));
    }
    Ok(url)
}

/// The subscribed event types: a non-empty subset of [`EVENT_TYPES`],
/// without repeats, in the order given.
pub fn parse_events(raw: Vec<String>) -> ApiResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for t in raw {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(ApiError::field(
                "events",
                format!(
                    "unknown event type {t:?}: use thread.created, thread.message, \
                     thread.status, thread.deleted"
                ),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.is_empty() {
        return Err(ApiError::field(
            "events",
            "events must name at least one event type",
        ));
    }
    Ok(out)
}

/// Whether an address is private, loopback, link-local or otherwise not
/// on the public internet. An IPv6 address that carries an IPv4 address
/// (mapped, compatible, translated, NAT64, 6to4) is judged by that IPv4
/// address: a NAT64 gateway or a 6to4 relay forwards it there, and a DNS64
/// resolver answers a name whose A record is private with one of them.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || o[0] >= 240 // reserved
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(v6) {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated, still routed by some)
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64, 64:ff9b:1::/48
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only, 100::/64
        }
    }
}

/// The IPv4 address inside an IPv6 address of a form that carries one:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, which
/// includes `::` and `::1`), IPv4-translated (`::ffff:0:a.b.c.d`), NAT64's
/// well-known prefix (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let last = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        std::net::Ipv4Addr::new(a, b, c, d)
    };
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] // mapped
        | [0, 0, 0, 0, 0, 0, hi, lo] // compatible (and :: and ::1)
        | [0, 0, 0, 0, 0xffff, 0, hi, lo] // translated
        | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(last(hi, lo)), // NAT64
        [0x2002, hi, lo, ..] => Some(last(hi, lo)),                // 6to4
        _ => None,
    }
}

/// The answer for a private target.
pub const PRIVATE_REFUSED: &str = "the target is a private, loopback or link-local address; \
     the server refuses those unless started with --allow-private-webhooks";

/// Refuses `url` if its host is, or resolves to, a private address (when
/// those are not allowed); also refuses a name that does not resolve.
pub async fn check(url: &Url, allow_private: bool) -> ApiResult<()> {
    if allow_private {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match literal(host) {
        Some(ip) => vec![ip],
        None => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| ApiError::field("url", "the url's host does not resolve"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() || addrs.into_iter().any(is_private) {
        return Err(ApiError::field("url", PRIVATE_REFUSED));
    }
    Ok(())
}

/// [`check`], for the command line (no runtime): resolves with the system
/// resolver, blocking.
pub fn check_blocking(url: &Url, allow_private: bool) -> ApiResult<()> {
    use std::net::ToSocketAddrs;
    if allow_private {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match literal(host) {
        Some(ip) => vec![ip],
        None => (host, port)
            .to_socket_addrs()
            .map_err(|_| ApiError::field("url", "the url's host does not resolve"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() || addrs.into_iter().any(is_private) {
        return Err(ApiError::field("url", PRIVATE_REFUSED));
    }
    Ok(())
}

/// The host as an IP address, if it is one (`[::1]` included).
pub fn literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The error a delivery fails with when its target resolves to a private
/// address.
#[derive(Debug)]
pub struct PrivateAddress;

impl std::fmt::Display for PrivateAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the target resolves to a private address")
    }
}

impl std::error::Error for PrivateAddress {}

/// The deliveries' DNS resolver: the system's, minus private addresses
/// unless they are allowed.
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow || !is_private(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(Box::new(PrivateAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_link_local_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            // IPv6 forms that carry a private IPv4 address
            "::127.0.0.1",
            "::10.0.0.1",
            "::ffff:0:127.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::169.254.169.254",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            // other ranges not on the public internet
            "64:ff9b:1::8.8.8.8",
            "fec0::1",
            "2001:db8::1",
            "100::1",
            "192.0.0.8",
            "240.0.0.1",
            "255.255.255.254",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            // public IPv4 addresses inside IPv6 forms stay public
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        assert!(parse_url("http://example.com/hook").is_ok());
        assert!(parse_url("https://example.com/hook").is_ok());
        for bad in [
            "ftp://example.com",
            "example.com/hook",
            "http://",
            "https://",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert!(parse_url(&format!("http://example.com/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn what_the_parser_would_repair_is_refused_not_guessed_at() {
        for (bad, says) in [
            ("http:example.com", "absolute"),
            ("http:/example.com", "absolute"),
            ("http:///example.com", "absolute"),
            ("https:example.com:8443/hook", "absolute"),
            ("http:\\\\example.com", "backslash"),
            ("http://example.com\\hook", "backslash"),
            (" http://example.com", "spaces"),
            ("http://example.com/hook ", "spaces"),
            ("http://example.com/a\tb", "spaces"),
            ("http://example.com/a\nb", "spaces"),
            ("http://user:secret@example.com/hook", "password"),
            ("http://user@example.com/hook", "password"),
            ("http://:secret@example.com/hook", "password"),
            ("http://example.com/hook#part", "fragment"),
            ("http://example.com/hook#", "fragment"),
        ] {
            let error = parse_url(bad).expect_err(bad);
            assert_eq!(error.field_name(), Some("url"), "{bad}");
            let message = error.public_message();
            assert!(message.contains(says), "{bad}: {message}");
            assert!(!message.contains("secret"), "{bad}: {message}");
        }
        for (good, stored) in [
            ("HTTP://Example.COM/hook", "http://example.com/hook"),
            ("https://example.com", "https://example.com/"),
            (
                "http://example.com:8080/a?b=c",
                "http://example.com:8080/a?b=c",
            ),
        ] {
            let url = parse_url(good).map(|u| u.to_string()).ok();
            assert_eq!(url.as_deref(), Some(stored), "{good}");
        }
        // An endpoint stored before the stricter reading is still delivered to.
        assert!(parse_stored("http://user:secret@example.com/hook#part").is_ok());
    }

    #[test]
    fn a_stored_user_name_or_password_is_shown_masked() {
        for (stored, listed) in [
            (
                "http://user:secret@example.com/hook",
                "http://***@example.com/hook",
            ),
            (
                "https://user@example.com:8443/a?b=c",
                "https://***@example.com:8443/a?b=c",
            ),
            (
                "http://:secret@127.0.0.1:9/hook",
                "http://***@127.0.0.1:9/hook",
            ),
            ("http://u%40x:p%40ss@example.com", "http://***@example.com"),
            (
                "http://example.com/a@b?c=d@e",
                "http://example.com/a@b?c=d@e",
            ),
            ("http://example.com?x=@y", "http://example.com?x=@y"),
            ("http://example.com/hook", "http://example.com/hook"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(shown(stored), listed, "{stored}");
        }
    }

    #[test]
    fn event_types_are_a_non_empty_subset_without_repeats() {
        let types = |v: &[&str]| parse_events(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            types(&["thread.message", "thread.message"]).unwrap(),
            ["thread.message"]
        );
        assert!(types(&[]).is_err());
        assert!(types(&["turn_taking.typing"]).is_err());
    }

    #[tokio::test]
    async fn loopback_targets_are_refused_unless_allowed() {
        let url = parse_url("http://127.0.0.1:9/hook").unwrap();
        assert!(check(&url, false).await.is_err());
        assert!(check(&url, true).await.is_ok());
        let url = parse_url("http://[::1]:9/hook").unwrap();
        assert!(check(&url, false).await.is_err());
        let url = parse_url("https://localhost:9/hook").unwrap();
        assert!(check(&url, false).await.is_err(), "https is checked alike");
    }
}
