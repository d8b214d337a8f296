//! Connection-level limits, checked before a request reaches its route (and
//! so before its body is read): how many connections one client IP may hold,
//! and how large request headers may be.
//!
//! Connections are counted from accept to close through
//! `HttpServer::on_connect`, which puts a [`ConnectionSlot`] into the
//! connection's data; the slot gives its place back when the connection (and
//! with it the slot) is dropped. A connection over its IP's cap is still
//! accepted (refusing at accept would leave the client without an answer),
//! but every request on it is answered `429` with `Connection: close`, so it
//! lives only until its first request, or actix's 5 s timeout for a request
//! head that never comes.

use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::dev::{Extensions, ServiceRequest};
use actix_web::http::header::{HeaderMap, HeaderValue};

use crate::domain::limits::MAX_HEADER_BYTES;
use crate::error::ApiError;
use crate::ratelimit::ip_key;

// actix itself refuses heads over 128 KiB or with more than 96 headers, with
// a bare 431; under the lower MAX_HEADER_BYTES the answer carries the error
// envelope.

/// Open connections per client IP (an IPv6 client by its /64), shared by
/// every worker.
pub struct ConnectionCounts {
    /// Connections one IP may hold (0 = unlimited: nothing is counted).
    cap: usize,
    /// `--trust-proxy`: a proxy's connections carry many clients, so they
    /// are not counted (its clients' requests still meet the per-IP quotas).
    trusted: Vec<ipnet::IpNet>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// The value of [`INTERNAL_HEADER`] on the server's calls to its own
    /// API (the MCP tools): random per process, never sent elsewhere.
    internal: HeaderValue,
}

/// The header that marks a connection as the server's own (its MCP tools
/// calling its API on loopback). Such a connection is not counted: the
/// tools' calls and `wait_for_messages`' sockets all come from one
/// address, and counted there, the MCP users together used up its cap (at
/// the default 1024, ~35 keys waiting) and every tool call failed.
pub const INTERNAL_HEADER: &str = "x-threadline-internal";

/// One accepted connection's place in its IP's count, given back on drop.
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    /// What the connection counts under ([`ip_key`]).
    ip: IpAddr,
    /// The IP already held `cap` connections when this one was accepted.
    over_cap: bool,
    /// The place was given back early: the connection is the server's own.
    exempt: AtomicBool,
}

impl ConnectionCounts {
    pub fn new(cap: usize, trusted: Vec<ipnet::IpNet>) -> Arc<ConnectionCounts> {
        let token = format!("{}", uuid::Uuid::new_v4().simple());
        Arc::new(ConnectionCounts {
            cap,
            trusted,
            per_ip: Mutex::new(HashMap::new()),
            internal: HeaderValue::from_str(&token).expect("expect: hex is a header value"),
        })
    }

    /// The header the server's calls to its own API carry: its name and
    /// value.
    pub fn internal_header(&self) -> (&'static str, String) {
        let value = self.internal.to_str().expect("expect: the token is hex");
        (INTERNAL_HEADER, value.to_owned())
    }

    /// Whether a request carries this process's [`INTERNAL_HEADER`] (the
    /// comparison takes the same time wherever the first difference is).
    fn is_internal(&self, headers: &HeaderMap) -> bool {
        headers.get(INTERNAL_HEADER).is_some_and(|given| {
            let (a, b) = (self.internal.as_bytes(), given.as_bytes());
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        })
    }

    /// The `on_connect` hook: counts a new connection and leaves its slot in
    /// the connection's data.
    pub fn on_connect(self: &Arc<Self>, conn: &dyn Any, data: &mut Extensions) {
        if self.cap == 0 {
            return;
        }
        let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        if let Some(slot) = self.admit(peer.ip()) {
            data.insert(slot);
        }
    }

    /// Counts a connection from `ip`, unless it is a trusted proxy's. An
    /// IPv6 client counts by its /64, as the per-IP quotas do
    /// ([`crate::ratelimit::ip_key`]): address by address, one host's 2^64
    /// addresses would each get the whole cap.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let ip = ip.to_canonical();
        if self.trusted.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        let key = ip_key(ip);
        let over_cap = {
            let mut per_ip = self.lock();
            let n = per_ip.entry(key).or_insert(0);
            *n += 1;
            *n > self.cap
        };
        Some(ConnectionSlot {
            counts: Arc::clone(self),
            ip: key,
            over_cap,
            exempt: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.per_ip.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ConnectionSlot {
    /// Gives the connection's place back (once), for good.
    fn release(&self) {
        if self.exempt.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut per_ip = self.counts.lock();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Why a request must be refused before its route runs, if it must: its
/// connection is over its IP's cap (429, connection closed) or its headers
/// are over [`MAX_HEADER_BYTES`] (431). Checked by the request middleware
/// ([`super::middleware::envelope`]), so the answer carries the envelope.
pub fn refusal(req: &ServiceRequest) -> Option<ApiError> {
    if let Some(slot) = req.conn_data::<ConnectionSlot>() {
        if slot.counts.is_internal(req.headers()) {
            // The server's own: not counted, whatever it found at accept.
            slot.release();
        } else if slot.over_cap {
            return Some(ApiError::TooManyConnections);
        }
    }
    if header_bytes(req.headers()) > MAX_HEADER_BYTES {
        return Some(ApiError::HeadersTooLarge);
    }
    None
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The machine running the tests has one IPv6 address per /64 (::1), so
    // two clients of one /64 are counted here rather than over sockets.
    #[test]
    fn ipv6_clients_of_one_slash_64_share_the_cap_and_give_it_back() {
        let counts = ConnectionCounts::new(2, vec!["2001:db8:ffff::/48".parse().unwrap()]);
        let admit = |ip: &str| counts.admit(ip.parse().unwrap());
        let first = admit("2001:db8:1:2::1").unwrap();
        let second = admit("2001:db8:1:2:aaaa::7").unwrap();
        let third = admit("2001:db8:1:2:ffff:ffff:ffff:ffff").unwrap();
        assert!(!first.over_cap && !second.over_cap);
        assert!(third.over_cap, "a third address of the same /64");
        // Another /64 and an IPv4 client have caps of their own.
        assert!(!admit("2001:db8:1:3::1").unwrap().over_cap);
        assert!(!admit("203.0.113.7").unwrap().over_cap);
        // A trusted proxy is not counted.
        assert!(admit("2001:db8:ffff::1").is_none());
        // Closing gives the place back; the /64's entry goes with the last.
        drop(third);
        drop(first);
        assert!(!admit("2001:db8:1:2::9").unwrap().over_cap);
        drop(second);
        assert!(counts.lock().is_empty());
    }

    #[test]
    fn a_connection_released_as_the_servers_own_is_not_counted_twice() {
        let counts = ConnectionCounts::new(1, Vec::new());
        let own = counts.admit("127.0.0.1".parse().unwrap()).unwrap();
        own.release();
        own.release();
        assert!(counts.lock().is_empty());
        // Its place is free for another client.
        let other = counts.admit("127.0.0.1".parse().unwrap()).unwrap();
        assert!(!other.over_cap);
        drop(own);
        assert_eq!(counts.lock().values().sum::<usize>(), 1);

        let mut headers = HeaderMap::new();
        assert!(!counts.is_internal(&headers));
        let name = actix_web::http::header::HeaderName::from_static(INTERNAL_HEADER);
        headers.insert(name.clone(), HeaderValue::from_static("guess"));
        assert!(!counts.is_internal(&headers));
        let (_, value) = counts.internal_header();
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
        assert!(counts.is_internal(&headers));
        // Another process's token is not this one's.
        let (_, theirs) = ConnectionCounts::new(1, Vec::new()).internal_header();
        assert_ne!(theirs, value);
    }
}
