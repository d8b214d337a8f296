//! The client address behind trusted reverse proxies (`--trust-proxy`).
//!
//! Each proxy appends the address it received the request from to
//! `X-Forwarded-For` (or `Forwarded: for=`). Only the entries added by
//! proxies we trust can be believed, so the client is the right-most entry
//! that is not itself a trusted proxy; anything left of it may be made up by
//! the client. When the TCP peer is not trusted, headers are not read at all.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

/// The address to count and log a request under: the TCP `peer`, or, when
/// the peer is in `trusted`, the right-most untrusted address the proxies
/// forwarded. `X-Forwarded-For` is read if present, else `Forwarded`. An
/// entry that cannot be parsed (`unknown`, an obfuscated name) stops the
/// walk at the last trusted hop, which is then the address used.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let hops: Vec<Option<IpAddr>> = if !xff.is_empty() {
        xff.iter().map(|h| parse_node(h)).collect()
    } else {
        headers
            .get_all("forwarded")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(forwarded_for)
            .map(parse_node)
            .collect()
    };
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        match hop {
            Some(ip) if is_trusted(&ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// The `for=` value of one `Forwarded` element (`for=1.2.3.4;proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]:5678`, optionally in quotes.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let bracketed = s.strip_prefix('[')?.split(']').next()?;
    bracketed.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            client_address(ip("198.51.100.7"), &h, &nets(&["127.0.0.1/32"])),
            ip("198.51.100.7")
        );
        assert_eq!(client_address(ip("127.0.0.1"), &h, &[]), ip("127.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_forwarded_address_is_the_client() {
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        let cases = [
            ("203.0.113.9", "203.0.113.9", "one proxy"),
            (
                "1.1.1.1, 203.0.113.9",
                "203.0.113.9",
                "a spoofed left entry is skipped",
            ),
            (
                "203.0.113.9, 10.1.2.3",
                "203.0.113.9",
                "a trusted inner proxy is skipped",
            ),
            (
                "10.9.9.9, 10.1.2.3",
                "10.9.9.9",
                "all trusted: the left-most",
            ),
            (
                "unknown, 10.1.2.3",
                "10.1.2.3",
                "an unusable entry stops the walk",
            ),
            ("[2001:db8::1]:443", "2001:db8::1", "IPv6 with a port"),
            ("203.0.113.9:5555", "203.0.113.9", "IPv4 with a port"),
        ];
        for (xff, want, why) in cases {
            let mut h = HeaderMap::new();
            h.insert(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(xff).unwrap(),
            );
            assert_eq!(
                client_address(ip("127.0.0.1"), &h, &trusted),
                ip(want),
                "{why}"
            );
        }
    }

    #[test]
    fn repeated_headers_are_read_in_order() {
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        let got = client_address(ip("127.0.0.1"), &h, &nets(&["127.0.0.0/8"]));
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn forwarded_is_read_when_x_forwarded_for_is_absent() {
        let h = headers(&[(
            "forwarded",
            "for=1.1.1.1, for=\"[2001:db8::7]:80\";proto=https;by=10.0.0.1",
        )]);
        let got = client_address(ip("127.0.0.1"), &h, &nets(&["127.0.0.1/32"]));
        assert_eq!(got, ip("2001:db8::7"));
    }

    #[test]
    fn without_headers_a_trusted_peer_is_the_client() {
        let got = client_address(ip("127.0.0.1"), &HeaderMap::new(), &nets(&["127.0.0.1/32"]));
        assert_eq!(got, ip("127.0.0.1"));
    }
}
