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
use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::dev::{Extensions, ServiceRequest};
use actix_web::http::header::HeaderMap;

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
}

/// One accepted connection's place in its IP's count, given back on drop.
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    /// What the connection counts under ([`ip_key`]).
    ip: IpAddr,
    /// The IP already held `cap` connections when this one was accepted.
    over_cap: bool,
}

impl ConnectionCounts {
    pub fn new(cap: usize, trusted: Vec<ipnet::IpNet>) -> Arc<ConnectionCounts> {
        Arc::new(ConnectionCounts {
            cap,
            trusted,
            per_ip: Mutex::new(HashMap::new()),
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
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.per_ip.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut per_ip = self.counts.lock();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Why a request must be refused before its route runs, if it must: its
/// connection is over its IP's cap (429, connection closed) or its headers
/// are over [`MAX_HEADER_BYTES`] (431). Checked by the request middleware
/// ([`super::middleware::envelope`]), so the answer carries the envelope.
pub fn refusal(req: &ServiceRequest) -> Option<ApiError> {
    if req
        .conn_data::<ConnectionSlot>()
        .is_some_and(|s| s.over_cap)
    {
        return Some(ApiError::TooManyConnections);
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
}
