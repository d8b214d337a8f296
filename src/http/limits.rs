//! Connection-level limits, checked before a request reaches its route (and
//! so before its body is read): how many connections one client address,
//! and one block of addresses, may hold, and how large request headers may
//! be.
//!
//! Connections are counted from accept to close through
//! `HttpServer::on_connect`, which puts a [`ConnectionSlot`] into the
//! connection's data; the slot gives its place back when the connection (and
//! with it the slot) is dropped. A connection over a cap is still
//! accepted (refusing at accept would leave the client without an answer),
//! but every request on it is answered `429` with `Connection: close`, so it
//! lives only until its first request, or [`SHORT_HEAD_TIMEOUT`] for a
//! request head that never comes (not actix's 5 s: from one block, ~3,000
//! new connections a second would have kept 15,000 slots busy).
//!
//! Three caps ([`ConnectionCaps`]): per address (an IPv6 client by its
//! /64), per block (IPv4 /24, IPv6 /48: one site's many addresses), and,
//! once the server holds three quarters of what it can, a small share per
//! address: whoever already holds that many gets no new connection until
//! the server is below three quarters again, so the last quarter stays
//! open to clients that hold few. Past that mark the server is also
//! [`ConnectionCounts::under_pressure`]: a connection idle between
//! requests is then kept open for [`PRESSURE_KEEP_ALIVE`] instead of
//! `--keep-alive-secs` (one idle for longer already when the mark is
//! crossed is closed then), so that slots held idle come back, and a new
//! connection has [`SHORT_HEAD_TIMEOUT`] for its first request head.

use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_http::h1::{ConnectionTimeouts, KeepAlivePressure};
use actix_web::dev::{Extensions, ServiceRequest};
use actix_web::http::header::{HeaderMap, HeaderValue};

use crate::domain::limits::MAX_HEADER_BYTES;
use crate::error::ApiError;
use crate::ratelimit::{block_key, ip_key};

// actix itself refuses heads over 128 KiB or with more than 96 headers, with
// a bare 431; under the lower MAX_HEADER_BYTES the answer carries the error
// envelope.

/// How long a connection idle between requests is kept open while the
/// server is [under pressure](ConnectionCounts::under_pressure) (instead
/// of `--keep-alive-secs`). A client that pauses longer opens a new
/// connection; actix's clock reads the time to within half a second, so
/// the wait is 0.5 to 1 s. One idle for longer when the pressure starts is
/// closed then. Every idle connection's keep-alive timer first fires at
/// this (once per idle period, pressure or not): past it, unless the
/// pressure holds, the connection waits out `--keep-alive-secs` with its
/// waker in the pressure's list, which the start of the pressure wakes.
pub const PRESSURE_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// The time a connection has for its first request head (instead of
/// actix's 5 s) if it is over a cap (its answer is a refusal whatever it
/// sends) or the server was [under pressure](ConnectionCounts::under_pressure)
/// when it was accepted (a client sends its request as soon as it is
/// connected; one that waits holds a slot others need). Like the short
/// keep-alive, 0.5 to 1 s.
pub const SHORT_HEAD_TIMEOUT: Duration = Duration::from_secs(1);

/// The caps a counted connection is held to; 0 turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// Connections one address (an IPv6 client: its /64) may hold.
    pub per_ip: usize,
    /// Connections one block (IPv4 /24, IPv6 /48) may hold between its
    /// addresses.
    pub per_block: usize,
    /// From this many counted connections on, the server is near its
    /// budget: see [`ConnectionCaps::pressure_share`] and
    /// [`ConnectionCounts::under_pressure`]. 0: never.
    pub pressure_at: usize,
    /// Near the budget, an address that holds this many connections gets
    /// no new one; 0: no such share.
    pub pressure_share: usize,
}

/// Near its budget, an address may hold at most its cap divided by this
/// (64 of the default 1,024) before its new connections are refused.
const PRESSURE_SHARE_DIVISOR: usize = 16;

impl ConnectionCaps {
    /// The caps for a server that holds at most `total` connections, given
    /// `--max-connections-per-ip` and `--max-connections-per-block`. No
    /// address or block may take more than half of `total`, whatever the
    /// flags say, or it could still lock out the rest. Near the budget
    /// (three quarters of `total` counted) an address holding a sixteenth
    /// of its cap is refused new connections. The per-address cap off
    /// (0) turns that share off too: the operator asked for no per-address
    /// limit. The short keep-alive near the budget limits no one, and
    /// holds whenever connections are counted (either cap on).
    pub fn for_budget(total: usize, per_ip: usize, per_block: usize) -> ConnectionCaps {
        let clamp = |cap: usize| match cap {
            0 => 0,
            cap => cap.min(total / 2).max(1),
        };
        let (per_ip, per_block) = (clamp(per_ip), clamp(per_block));
        let pressure_at = match per_ip.max(per_block) {
            0 => 0,
            _ => (total - total / 4).max(1),
        };
        let pressure_share = match per_ip {
            0 => 0,
            cap => (cap / PRESSURE_SHARE_DIVISOR).max(1),
        };
        ConnectionCaps {
            per_ip,
            per_block,
            pressure_at,
            pressure_share,
        }
    }

    fn any(&self) -> bool {
        self.per_ip > 0 || self.per_block > 0
    }
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cap {
    Address,
    Block,
    /// The server was near its budget and the address held its share.
    Pressure,
}

impl Cap {
    /// The refusal's message: each cap says which it is, so that a client
    /// (or its operator) knows whether closing its own connections helps.
    fn message(self) -> &'static str {
        match self {
            Cap::Address => "too many open connections from this address; close one and retry",
            Cap::Block => {
                "too many open connections from this address's network (its IPv4 /24 or \
                 IPv6 /48); close one and retry"
            }
            Cap::Pressure => {
                "the server is near its connection limit and this address holds its share \
                 of the rest; close one and retry"
            }
        }
    }
}

/// Open connections per client address and per block, shared by every
/// worker.
pub struct ConnectionCounts {
    caps: ConnectionCaps,
    /// `--trust-proxy`: a proxy's connections carry many clients, so they
    /// are not counted (its clients' requests still meet the per-IP quotas).
    trusted: Vec<ipnet::IpNet>,
    tally: Mutex<Tally>,
    /// Set while [`ConnectionCaps::pressure_at`] or more are counted; the
    /// connections' dispatchers read it when they go idle.
    pressure: Arc<KeepAlivePressure>,
    /// The value of [`INTERNAL_HEADER`] on the server's calls to its own
    /// API (the MCP tools): random per process, never sent elsewhere.
    internal: HeaderValue,
}

/// The counted connections: per address ([`ip_key`]), per block
/// ([`block_key`]) and in all. An entry goes with its last connection.
#[derive(Default)]
struct Tally {
    per_ip: HashMap<IpAddr, usize>,
    per_block: HashMap<IpAddr, usize>,
    total: usize,
}

/// The header that marks a connection as the server's own (its MCP tools
/// calling its API on loopback). Such a connection is not counted: the
/// tools' calls and `wait_for_messages`' sockets all come from one
/// address, and counted there, the MCP users together used up its cap (at
/// the default 1024, ~35 keys waiting) and every tool call failed.
pub const INTERNAL_HEADER: &str = "x-threadline-internal";

/// One accepted connection's place in its address's and block's counts,
/// given back on drop.
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    /// What the connection counts under ([`ip_key`], [`block_key`]).
    ip: IpAddr,
    block: IpAddr,
    /// The cap it met when it was accepted, if any.
    refused: Option<Cap>,
    /// The place was given back early: the connection is the server's own.
    exempt: AtomicBool,
}

impl ConnectionCounts {
    pub fn new(caps: ConnectionCaps, trusted: Vec<ipnet::IpNet>) -> Arc<ConnectionCounts> {
        let token = format!("{}", uuid::Uuid::new_v4().simple());
        Arc::new(ConnectionCounts {
            caps,
            trusted,
            tally: Mutex::new(Tally::default()),
            pressure: Arc::new(KeepAlivePressure::new(PRESSURE_KEEP_ALIVE)),
            internal: HeaderValue::from_str(&token).expect("expect: hex is a header value"),
        })
    }

    /// Whether the server is near its connection budget (three quarters
    /// of it counted): an idle connection then gets [`PRESSURE_KEEP_ALIVE`].
    /// One atomic load.
    pub fn under_pressure(&self) -> bool {
        self.pressure.under_pressure()
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
    /// the connection's data, with its timeouts for the dispatcher (the
    /// server's pressure; a short head timeout if it is over a cap or the
    /// server was under pressure before it came).
    pub fn on_connect(self: &Arc<Self>, conn: &dyn Any, data: &mut Extensions) {
        if !self.caps.any() {
            return;
        }
        let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        let crowded = self.under_pressure();
        if let Some(slot) = self.admit(peer.ip()) {
            data.insert(ConnectionTimeouts {
                pressure: Arc::clone(&self.pressure),
                head_timeout: (crowded || slot.refused.is_some()).then_some(SHORT_HEAD_TIMEOUT),
            });
            data.insert(slot);
        }
    }

    /// Counts a connection from `ip`, unless it is a trusted proxy's, and
    /// notes the first cap it is over. An IPv6 client counts by its /64,
    /// as the per-IP quotas do ([`crate::ratelimit::ip_key`]): address by
    /// address, one host's 2^64 addresses would each get the whole cap;
    /// and by its /48 for the block cap, which holds a site's 65,536 /64s.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let ip = ip.to_canonical();
        if self.trusted.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        let (key, block) = (ip_key(ip), block_key(ip));
        let caps = self.caps;
        let started;
        let refused = {
            let mut tally = self.lock();
            let held = bump(&mut tally.per_ip, key);
            let held_by_block = bump(&mut tally.per_block, block);
            let counted = tally.total;
            tally.total += 1;
            started = self.note_pressure(tally.total);
            if caps.per_ip > 0 && held >= caps.per_ip {
                Some(Cap::Address)
            } else if caps.per_block > 0 && held_by_block >= caps.per_block {
                Some(Cap::Block)
            } else if caps.pressure_share > 0
                && counted >= caps.pressure_at
                && held >= caps.pressure_share
            {
                Some(Cap::Pressure)
            } else {
                None
            }
        };
        if started {
            self.pressure.reclaim_idle();
        }
        Some(ConnectionSlot {
            counts: Arc::clone(self),
            ip: key,
            block,
            refused,
            exempt: AtomicBool::new(false),
        })
    }

    /// Updates the pressure for `total` counted connections (called with
    /// the tally locked, so that the last update wins in order). Returns
    /// whether the pressure has just started: the caller then wakes the
    /// idle connections, once the lock is released
    /// ([`KeepAlivePressure::reclaim_idle`]).
    #[must_use = "a pressure that starts calls for reclaim_idle"]
    fn note_pressure(&self, total: usize) -> bool {
        let at = self.caps.pressure_at;
        self.pressure.set(at > 0 && total >= at)
    }

    fn lock(&self) -> MutexGuard<'_, Tally> {
        // A panic while holding the lock cannot leave the counts half-updated.
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds one to `key`'s count; returns the count before.
fn bump(counts: &mut HashMap<IpAddr, usize>, key: IpAddr) -> usize {
    let n = counts.entry(key).or_insert(0);
    *n += 1;
    *n - 1
}

/// Takes one from `key`'s count, and its entry with the last.
fn drop_one(counts: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = counts.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

impl ConnectionSlot {
    /// Gives the connection's place back (once), for good.
    fn release(&self) {
        if self.exempt.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut tally = self.counts.lock();
        drop_one(&mut tally.per_ip, self.ip);
        drop_one(&mut tally.per_block, self.block);
        tally.total = tally.total.saturating_sub(1);
        // One fewer never starts the pressure.
        let _ = self.counts.note_pressure(tally.total);
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Why a request must be refused before its route runs, if it must: its
/// connection is over a connection cap (429, connection closed), its target
/// is over what the HTTP layer reads (414), its headers are over
/// [`MAX_HEADER_BYTES`] (431), or its `Host` is missing, given twice or not
/// a host (400; RFC 9112 §3.2). Checked by the request middleware
/// ([`super::middleware::envelope`]), so the answer carries the envelope.
pub fn refusal(req: &ServiceRequest) -> Option<ApiError> {
    if let Some(slot) = req.conn_data::<ConnectionSlot>() {
        if slot.counts.is_internal(req.headers()) {
            // The server's own: not counted, whatever it found at accept.
            slot.release();
        } else if let Some(cap) = slot.refused {
            return Some(ApiError::TooManyConnections(cap.message()));
        }
    }
    // Both marked by the HTTP layer's decoder (a flag each, tested here).
    let head = req.head();
    if head.target_too_long() {
        return Some(ApiError::UriTooLong);
    }
    if header_bytes(req.headers()) > MAX_HEADER_BYTES {
        return Some(ApiError::HeadersTooLarge);
    }
    if head.host_invalid() {
        return Some(ApiError::HostInvalid);
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

    /// Caps per address and per block, never near the budget.
    fn caps(per_ip: usize, per_block: usize) -> ConnectionCaps {
        ConnectionCaps {
            per_ip,
            per_block,
            pressure_at: 0,
            pressure_share: 0,
        }
    }

    fn over(slot: &ConnectionSlot) -> Option<Cap> {
        slot.refused
    }

    impl ConnectionCounts {
        fn is_empty(&self) -> bool {
            let tally = self.lock();
            tally.per_ip.is_empty() && tally.per_block.is_empty() && tally.total == 0
        }
    }

    // The machine running the tests has one IPv6 address per /64 (::1), so
    // two clients of one /64 are counted here rather than over sockets.
    #[test]
    fn ipv6_clients_of_one_slash_64_share_the_cap_and_give_it_back() {
        let counts = ConnectionCounts::new(caps(2, 0), vec!["2001:db8:ffff::/48".parse().unwrap()]);
        let admit = |ip: &str| counts.admit(ip.parse().unwrap());
        let first = admit("2001:db8:1:2::1").unwrap();
        let second = admit("2001:db8:1:2:aaaa::7").unwrap();
        let third = admit("2001:db8:1:2:ffff:ffff:ffff:ffff").unwrap();
        assert_eq!((over(&first), over(&second)), (None, None));
        assert_eq!(over(&third), Some(Cap::Address), "a third of the /64");
        // Another /64 and an IPv4 client have caps of their own.
        assert_eq!(over(&admit("2001:db8:1:3::1").unwrap()), None);
        assert_eq!(over(&admit("203.0.113.7").unwrap()), None);
        // A trusted proxy is not counted.
        assert!(admit("2001:db8:ffff::1").is_none());
        // Closing gives the place back; the /64's entry goes with the last.
        drop(third);
        drop(first);
        assert_eq!(over(&admit("2001:db8:1:2::9").unwrap()), None);
        drop(second);
        assert!(counts.is_empty());
    }

    /// A /56 holds 256 /64s and a /48 65,536: each under its own address
    /// cap, one site could hold every connection. The block cap holds the
    /// /48 (and an IPv4 /24) to its share together.
    #[test]
    fn the_addresses_of_one_block_share_the_block_cap_and_give_it_back() {
        let counts = ConnectionCounts::new(caps(2, 3), Vec::new());
        let admit = |ip: &str| counts.admit(ip.parse().unwrap()).unwrap();
        let site: Vec<_> = ["2001:db8:7:1::1", "2001:db8:7:2::1", "2001:db8:7:ff00::1"]
            .into_iter()
            .map(admit)
            .collect();
        assert!(site.iter().all(|slot| over(slot).is_none()));
        // A fourth /64 of the same /48, though it holds nothing itself.
        let fourth = admit("2001:db8:7:3::1");
        assert_eq!(over(&fourth), Some(Cap::Block));
        // The next /48 is another block.
        assert_eq!(over(&admit("2001:db8:8:1::1")), None);
        // IPv4: a /24 alike; its neighbour /24 is another block.
        let v4: Vec<_> = ["198.51.100.1", "198.51.100.2", "198.51.100.2"]
            .into_iter()
            .map(admit)
            .collect();
        assert!(v4.iter().all(|slot| over(slot).is_none()));
        assert_eq!(over(&admit("198.51.100.200")), Some(Cap::Block));
        assert_eq!(over(&admit("::ffff:198.51.100.3")), Some(Cap::Block));
        assert_eq!(over(&admit("198.51.101.1")), None);
        // The address cap still comes first.
        assert_eq!(over(&admit("198.51.100.2")), Some(Cap::Address));
        // A refused connection is counted while it lives, like any other,
        // and its close (and the others') frees the block.
        drop(fourth);
        drop(site);
        assert_eq!(over(&admit("2001:db8:7:3::1")), None);
        drop(v4);
        assert!(counts.is_empty());
    }

    #[test]
    fn near_the_budget_an_address_holding_its_share_gets_no_new_connection() {
        let counts = ConnectionCounts::new(
            ConnectionCaps {
                pressure_at: 6,
                pressure_share: 2,
                ..caps(100, 0)
            },
            Vec::new(),
        );
        let admit = |ip: &str| counts.admit(ip.parse().unwrap()).unwrap();
        // Below the budget's three quarters: up to the address cap.
        let mut heavy: Vec<_> = (0..6).map(|_| admit("192.0.2.1")).collect();
        assert!(heavy.iter().all(|slot| over(slot).is_none()));
        // At it: the heavy address is refused, newcomers get in up to
        // their share (2) each.
        assert_eq!(over(&admit("192.0.2.1")), Some(Cap::Pressure));
        let light: Vec<_> = (0..2).map(|_| admit("203.0.113.9")).collect();
        assert!(light.iter().all(|slot| over(slot).is_none()));
        assert_eq!(over(&admit("203.0.113.9")), Some(Cap::Pressure));
        assert_eq!(over(&admit("2001:db8::1")), None);
        // Once the server is below the mark again, the heavy address gets in.
        drop(light);
        heavy.truncate(4);
        assert_eq!(counts.lock().total, 4);
        assert_eq!(over(&admit("192.0.2.1")), None);
        drop(heavy);
        assert!(counts.is_empty());
    }

    #[test]
    fn the_pressure_says_it_has_started_once_per_crossing() {
        // Each start wakes every idle connection (`reclaim_idle`): only a
        // crossing of the mark may say so, not every connection past it.
        let pressure = KeepAlivePressure::new(PRESSURE_KEEP_ALIVE);
        assert!(!pressure.set(false));
        assert!(pressure.set(true));
        assert!(!pressure.set(true));
        assert!(!pressure.set(false));
        assert!(pressure.set(true));
        assert!(pressure.under_pressure());
    }

    #[test]
    fn the_server_is_under_pressure_from_the_mark_until_it_is_below_again() {
        let counts = ConnectionCounts::new(
            ConnectionCaps {
                pressure_at: 3,
                pressure_share: 0,
                ..caps(100, 0)
            },
            Vec::new(),
        );
        let admit = |ip: &str| counts.admit(ip.parse().unwrap()).unwrap();
        let mut open: Vec<_> = (0..2).map(|_| admit("192.0.2.1")).collect();
        assert!(!counts.under_pressure());
        open.push(admit("192.0.2.1"));
        assert!(counts.under_pressure());
        // No share (0): the address still gets in, past the mark.
        open.push(admit("192.0.2.1"));
        assert!(open.iter().all(|slot| over(slot).is_none()));
        open.truncate(3);
        assert!(counts.under_pressure());
        open.pop();
        assert!(!counts.under_pressure());
        // A connection released early as the server's own counts down too.
        let own = admit("127.0.0.1");
        assert!(counts.under_pressure());
        own.release();
        assert!(!counts.under_pressure());
        // The dispatchers read the same flag.
        let shared = Arc::clone(&counts.pressure);
        open.push(admit("192.0.2.2"));
        assert!(shared.under_pressure());
        assert_eq!(shared.short_keep_alive(), PRESSURE_KEEP_ALIVE);
        drop(open);
        assert!(!shared.under_pressure());
        // Without caps there is no mark.
        let uncapped = ConnectionCounts::new(caps(0, 0), Vec::new());
        assert!(!uncapped.under_pressure());
    }

    #[test]
    fn each_cap_refuses_with_its_own_message() {
        let messages = [Cap::Address, Cap::Block, Cap::Pressure].map(Cap::message);
        assert!(messages[0].contains("from this address;"));
        assert!(messages[1].contains("network"));
        assert!(messages[2].contains("near its connection limit"));
        assert!(messages.iter().all(|m| m.ends_with("close one and retry")));
        let error = ApiError::TooManyConnections(Cap::Block.message());
        assert_eq!(error.code(), "RATE_LIMITED");
        assert_eq!(error.retry_after(), Some(1));
        assert_eq!(error.public_message(), messages[1]);
    }

    #[test]
    fn the_caps_follow_the_budget_and_the_flags() {
        // The defaults on a server holding 19,744 connections.
        assert_eq!(
            ConnectionCaps::for_budget(19_744, 1024, 4096),
            ConnectionCaps {
                per_ip: 1024,
                per_block: 4096,
                pressure_at: 14_808,
                pressure_share: 64,
            }
        );
        // No address or block takes more than half of a small server.
        let small = ConnectionCaps::for_budget(768, 1024, 4096);
        assert_eq!((small.per_ip, small.per_block), (384, 384));
        assert_eq!((small.pressure_at, small.pressure_share), (576, 24));
        // 0 turns a cap off; the address cap off turns the share off too,
        // but not the short keep-alive near the budget.
        let off = ConnectionCaps::for_budget(19_744, 0, 0);
        assert!(!off.any());
        assert_eq!((off.pressure_at, off.pressure_share), (0, 0));
        let blocks_only = ConnectionCaps::for_budget(19_744, 0, 10);
        assert!(blocks_only.any());
        assert_eq!(
            (blocks_only.pressure_at, blocks_only.pressure_share),
            (14_808, 0)
        );
        // Tiny values stay at least one connection.
        let tiny = ConnectionCaps::for_budget(1, 5, 5);
        assert_eq!(
            (tiny.per_ip, tiny.per_block, tiny.pressure_share),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_connection_released_as_the_servers_own_is_not_counted_twice() {
        let counts = ConnectionCounts::new(caps(1, 0), Vec::new());
        let own = counts.admit("127.0.0.1".parse().unwrap()).unwrap();
        own.release();
        own.release();
        assert!(counts.is_empty());
        // Its place is free for another client.
        let other = counts.admit("127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(over(&other), None);
        drop(own);
        assert_eq!(counts.lock().per_ip.values().sum::<usize>(), 1);
        assert_eq!(counts.lock().total, 1);

        let mut headers = HeaderMap::new();
        assert!(!counts.is_internal(&headers));
        let name = actix_web::http::header::HeaderName::from_static(INTERNAL_HEADER);
        headers.insert(name.clone(), HeaderValue::from_static("guess"));
        assert!(!counts.is_internal(&headers));
        let (_, value) = counts.internal_header();
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
        assert!(counts.is_internal(&headers));
        // Another process's token is not this one's.
        let (_, theirs) = ConnectionCounts::new(caps(1, 0), Vec::new()).internal_header();
        assert_ne!(theirs, value);
    }
}
