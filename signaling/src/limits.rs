//! Abuse limits at the HTTP edge, in one place: request rates per client IP and per credential
//! (the API key or client secret presented) on the routes that cost something (minting secrets
//! and tokens, offers, socket upgrades), and concurrent WebSockets per IP. Over a limit: 429,
//! `Retry-After`, the JSON error body, counted in `/metrics`. The rates use `governor` (GCRA,
//! one state per key, kept small by dropping idle keys).
//!
//! Loopback clients are exempt from the per-IP limits unless `limit_loopback` says otherwise:
//! on loopback sit the operator's own tools (the load generator makes hundreds of calls a
//! minute) and, behind a reverse proxy on the same host, every client at once, which the proxy
//! must then limit itself.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use axum::http::Method;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::ApiError;

/// The client's IP, as the listener saw it (`None` when the server runs without one, e.g. a
/// router driven directly).
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub Option<IpAddr>);

/// What the operator configures (PROTOCOL.md §6, README "Limits").
#[derive(Clone, Copy, Debug)]
pub struct LimitSettings {
    /// Costly requests (mint, offer, upgrade) per minute from one IP; 0: no limit.
    pub per_ip_per_minute: u32,
    /// Costly requests per minute with one credential (API key, client secret, room token).
    pub per_credential_per_minute: u32,
    /// Open WebSockets (Realtime sessions, event sockets, phone streams) per IP; 0: no limit.
    pub websockets_per_ip: usize,
    /// Apply the per-IP limits to loopback clients too.
    pub limit_loopback: bool,
    /// Open HTTP connections (before any upgrade) the listener serves at once; 0: no limit.
    pub max_connections: usize,
    /// The same, from one address.
    pub max_connections_per_ip: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            per_ip_per_minute: 120,
            per_credential_per_minute: 1200,
            websockets_per_ip: 32,
            limit_loopback: false,
            max_connections: 1024,
            max_connections_per_ip: 128,
        }
    }
}

/// Which routes a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Costly {
    /// Minting client secrets and room tokens, the web page's session helper.
    Mint,
    /// Offers, joins, plain-RTP sessions, socket upgrades: each may start a call.
    Start,
}

impl Costly {
    /// The class of `method path`, or `None` for a request no limit applies to.
    pub fn of(method: &Method, path: &str) -> Option<Costly> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("POST", ["v1", "realtime", "sessions" | "client_secrets"]) => Some(Costly::Mint),
            ("POST", ["v1", "rooms", _, "tokens"]) => Some(Costly::Mint),
            ("POST", ["web", "session" | "room-token"]) => Some(Costly::Mint),
            ("POST", ["v1", "realtime" | "rtp"]) | ("POST", ["v1", "realtime", "calls"]) => Some(Costly::Start),
            ("POST", ["v1", "rooms", _, "join"]) | ("POST", ["v1", "whip" | "whep", _]) => Some(Costly::Start),
            ("GET", ["v1", "realtime"]) | ("GET", ["v1", "telephony", "twilio"]) => Some(Costly::Start),
            _ => None,
        }
    }
}

/// One keyed rate, with its idle keys dropped now and then so memory stays bounded.
struct Rate<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Rate<K> {
    fn per_minute(n: u32) -> Option<Self> {
        let n = NonZeroU32::new(n)?;
        Some(Rate { limiter: DefaultKeyedRateLimiter::hashmap(Quota::per_minute(n)), checks: AtomicU64::new(0) })
    }

    /// `Err(seconds to wait)` when `key` is over its rate.
    fn check(&self, key: &K) -> Result<(), u64> {
        if self.checks.fetch_add(1, Relaxed) % 1024 == 1023 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()).as_secs_f64().ceil() as u64)
    }
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct LimitCounters {
    pub per_ip: AtomicU64,
    pub per_credential: AtomicU64,
    pub websockets: AtomicU64,
}

/// Open HTTP connections, for the listener's caps: in all, and per client address (so one
/// address holding slow connections cannot fill the server's; loopback exempt unless
/// `limit_loopback`). A connection that upgrades to a WebSocket leaves this count: sockets have
/// their own per-IP cap and the call admission behind them.
#[derive(Default)]
pub struct Connections {
    max: usize,
    per_ip: usize,
    limit_loopback: bool,
    open: AtomicU64,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
    refused_per_ip: AtomicU64,
}

impl Connections {
    pub fn new(max: usize, per_ip: usize, limit_loopback: bool) -> Self {
        Connections { max, per_ip, limit_loopback, ..Default::default() }
    }

    /// A place for one more connection from `ip`, or `None` at a cap (counted).
    pub fn open(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let n = self.open.fetch_add(1, Relaxed);
        if self.max > 0 && n >= self.max as u64 {
            self.open.fetch_sub(1, Relaxed);
            self.refused.fetch_add(1, Relaxed);
            return None;
        }
        let counted = (self.per_ip > 0 && (self.limit_loopback || !ip.is_loopback())).then_some(ip);
        if let Some(ip) = counted {
            let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
            let held = by_ip.entry(ip).or_default();
            if *held >= self.per_ip {
                drop(by_ip);
                self.open.fetch_sub(1, Relaxed);
                self.refused_per_ip.fetch_add(1, Relaxed);
                return None;
            }
            *held += 1;
        }
        Some(ConnectionSlot { connections: self.clone(), ip: counted })
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// One open connection; dropping it gives the place back.
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Relaxed);
        if let Some(ip) = self.ip {
            let mut by_ip = self.connections.by_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
    }
}

pub struct Limits {
    settings: LimitSettings,
    pub connections: Arc<Connections>,
    per_ip: Option<Rate<IpAddr>>,
    per_credential: Option<Rate<String>>,
    sockets: Arc<Mutex<HashMap<IpAddr, usize>>>,
    pub counters: LimitCounters,
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        Limits {
            settings,
            connections: Arc::new(Connections::new(settings.max_connections, settings.max_connections_per_ip, settings.limit_loopback)),
            per_ip: Rate::per_minute(settings.per_ip_per_minute),
            per_credential: Rate::per_minute(settings.per_credential_per_minute),
            sockets: Arc::default(),
            counters: LimitCounters::default(),
        }
    }

    pub fn settings(&self) -> LimitSettings {
        self.settings
    }

    /// The address the per-IP limits and shares apply to: `None` when exempt (loopback unless
    /// `limit_loopback`).
    pub fn limited_ip(&self, ip: ClientIp) -> Option<IpAddr> {
        ip.0.filter(|ip| self.settings.limit_loopback || !ip.is_loopback())
    }

    /// A costly request from `ip` with `credential` (the bearer token, when one was sent).
    pub fn check(&self, ip: ClientIp, credential: Option<&str>) -> Result<(), ApiError> {
        if let (Some(rate), Some(ip)) = (&self.per_ip, self.limited_ip(ip))
            && let Err(wait) = rate.check(&ip)
        {
            self.counters.per_ip.fetch_add(1, Relaxed);
            let per_minute = self.settings.per_ip_per_minute;
            return Err(ApiError::rate_limited(format!("too many requests from this address (limit {per_minute} a minute)"), wait));
        }
        if let (Some(rate), Some(credential)) = (&self.per_credential, credential)
            && let Err(wait) = rate.check(&credential.to_string())
        {
            self.counters.per_credential.fetch_add(1, Relaxed);
            let per_minute = self.settings.per_credential_per_minute;
            return Err(ApiError::rate_limited(format!("too many requests with this credential (limit {per_minute} a minute)"), wait));
        }
        Ok(())
    }

    /// A place for one more WebSocket from `ip`, held until the returned slot drops.
    pub fn open_socket(&self, ip: ClientIp) -> Result<SocketSlot, ApiError> {
        let Some(ip) = self.limited_ip(ip).filter(|_| self.settings.websockets_per_ip > 0) else {
            return Ok(SocketSlot(None));
        };
        let mut open = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= self.settings.websockets_per_ip {
            self.counters.websockets.fetch_add(1, Relaxed);
            let max = self.settings.websockets_per_ip;
            return Err(ApiError::rate_limited(format!("too many open WebSockets from this address (limit {max})"), 1));
        }
        *n += 1;
        Ok(SocketSlot(Some((ip, self.sockets.clone()))))
    }

    /// Prometheus text for the counters.
    pub fn prometheus(&self) -> String {
        let name = "voxrelay_limited_total";
        let c = &self.counters;
        let conns = &self.connections;
        format!(
            "# HELP voxrelay_http_connections Open HTTP connections (not counting upgraded WebSockets).\n\
             # TYPE voxrelay_http_connections gauge\nvoxrelay_http_connections {}\n\
             # HELP voxrelay_http_connections_refused_total Connections refused at a cap, by cap.\n\
             # TYPE voxrelay_http_connections_refused_total counter\n\
             voxrelay_http_connections_refused_total{{cap=\"server\"}} {}\nvoxrelay_http_connections_refused_total{{cap=\"per_ip\"}} {}\n",
            conns.open.load(Relaxed),
            conns.refused.load(Relaxed),
            conns.refused_per_ip.load(Relaxed)
        ) + &format!(
            "# HELP {name} Requests refused by an abuse limit, by limit.\n# TYPE {name} counter\n\
             {name}{{limit=\"per_ip\"}} {}\n{name}{{limit=\"per_credential\"}} {}\n{name}{{limit=\"websockets_per_ip\"}} {}\n",
            c.per_ip.load(Relaxed),
            c.per_credential.load(Relaxed),
            c.websockets.load(Relaxed)
        )
    }
}

/// Client events (data channel, events socket, Realtime WebSocket) a call takes per second, and
/// the burst above it. Audio travels on the track, or as WebSocket `append`s that the socket
/// paces, so neither counts; a client that needs more than this is sending in a loop.
pub const CLIENT_EVENTS_PER_SECOND: u32 = 50;
pub const CLIENT_EVENTS_BURST: u32 = 200;

/// One call's client event rate. Over it the event is dropped and the client told, once per
/// burst of refusals, with an `error` event (`rate_limited`); the connection stays.
pub struct EventRate {
    limiter: governor::DefaultDirectRateLimiter,
    refusing: bool,
}

/// What to do with one client event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventVerdict {
    Take,
    /// Drop it and send the client an `error` event.
    RefuseAndSay,
    /// Drop it (the client was told at the first refusal of this burst).
    Refuse,
}

impl Default for EventRate {
    fn default() -> Self {
        let per_second = NonZeroU32::new(CLIENT_EVENTS_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(CLIENT_EVENTS_BURST).unwrap_or(NonZeroU32::MIN);
        EventRate { limiter: governor::RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)), refusing: false }
    }
}

impl EventRate {
    pub fn check(&mut self) -> EventVerdict {
        if self.limiter.check().is_ok() {
            self.refusing = false;
            return EventVerdict::Take;
        }
        if std::mem::replace(&mut self.refusing, true) { EventVerdict::Refuse } else { EventVerdict::RefuseAndSay }
    }

    pub fn message() -> String {
        format!(
            "too many client events: at most {CLIENT_EVENTS_PER_SECOND} a second (bursts of {CLIENT_EVENTS_BURST}); \
             this one and the rest of the burst were dropped"
        )
    }
}

/// One open WebSocket counted against its IP; dropping it gives the place back.
pub struct SocketSlot(Option<(IpAddr, Arc<Mutex<HashMap<IpAddr, usize>>>)>);

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let Some((ip, sockets)) = self.0.take() else { return };
        let mut open = sockets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> ClientIp {
        ClientIp(Some(s.parse().unwrap()))
    }

    #[test]
    fn costly_routes_are_classified() {
        let cases = [
            ("POST", "/v1/realtime/sessions", Some(Costly::Mint)),
            ("POST", "/v1/realtime/client_secrets", Some(Costly::Mint)),
            ("POST", "/v1/rooms/a/tokens", Some(Costly::Mint)),
            ("POST", "/web/session", Some(Costly::Mint)),
            ("POST", "/v1/realtime", Some(Costly::Start)),
            ("POST", "/v1/realtime/calls", Some(Costly::Start)),
            ("POST", "/v1/rtp", Some(Costly::Start)),
            ("POST", "/v1/rooms/a/join", Some(Costly::Start)),
            ("POST", "/v1/whip/a", Some(Costly::Start)),
            ("GET", "/v1/realtime", Some(Costly::Start)),
            ("GET", "/v1/telephony/twilio", Some(Costly::Start)),
            ("DELETE", "/v1/realtime/calls/rtc_1", None),
            ("PATCH", "/v1/whip/a/b", None),
            ("GET", "/metrics", None),
            ("GET", "/v1/rooms/a", None),
        ];
        for (m, path, expected) in cases {
            assert_eq!(Costly::of(&m.parse().unwrap(), path), expected, "{m} {path}");
        }
    }

    #[test]
    fn rates_per_ip_and_per_credential_with_loopback_exempt_by_default() {
        let limits = Limits::new(LimitSettings { per_ip_per_minute: 3, per_credential_per_minute: 5, ..Default::default() });
        for _ in 0..3 {
            limits.check(ip("203.0.113.7"), None).unwrap();
        }
        let refused = limits.check(ip("203.0.113.7"), None).unwrap_err();
        assert_eq!((refused.status.as_u16(), refused.code), (429, "rate_limited"));
        assert!(refused.retry_after.is_some_and(|s| (1..=20).contains(&s)), "{:?}", refused.retry_after);
        limits.check(ip("203.0.113.8"), None).expect("another address has its own rate");
        for _ in 0..10 {
            limits.check(ip("127.0.0.1"), None).expect("loopback is exempt");
        }
        // The credential's own rate: 5, across addresses.
        for n in 0..5 {
            limits.check(ip(&format!("198.51.100.{n}")), Some("ek_1")).unwrap_or_else(|e| panic!("{n}: {e:?}"));
        }
        assert!(limits.check(ip("198.51.100.9"), Some("ek_1")).is_err());
        assert_eq!((limits.counters.per_ip.load(Relaxed), limits.counters.per_credential.load(Relaxed)), (1, 1));
    }

    #[test]
    fn a_flood_of_client_events_is_cut_with_one_error_per_burst() {
        let mut rate = EventRate::default();
        let verdicts: Vec<EventVerdict> = (0..CLIENT_EVENTS_BURST + 5).map(|_| rate.check()).collect();
        assert!(verdicts[..CLIENT_EVENTS_BURST as usize].iter().all(|v| *v == EventVerdict::Take));
        assert_eq!(
            &verdicts[CLIENT_EVENTS_BURST as usize..],
            [EventVerdict::RefuseAndSay, EventVerdict::Refuse, EventVerdict::Refuse, EventVerdict::Refuse, EventVerdict::Refuse]
        );
    }

    #[test]
    fn websockets_per_ip_are_given_back_when_they_close() {
        let limits = Limits::new(LimitSettings { websockets_per_ip: 2, limit_loopback: true, ..Default::default() });
        let a = limits.open_socket(ip("127.0.0.1")).unwrap();
        let _b = limits.open_socket(ip("127.0.0.1")).unwrap();
        assert!(limits.open_socket(ip("127.0.0.1")).is_err());
        limits.open_socket(ip("::1")).expect("another address");
        drop(a);
        limits.open_socket(ip("127.0.0.1")).expect("a place was given back");
        assert!(limits.prometheus().contains("voxrelay_limited_total{limit=\"websockets_per_ip\"} 1"));
    }

    #[test]
    fn connections_are_capped_in_all_and_per_address() {
        let c = Arc::new(Connections::new(4, 2, false));
        let remote = |s: &str| s.parse::<IpAddr>().unwrap();
        let a1 = c.open(remote("198.51.100.7")).unwrap();
        let _a2 = c.open(remote("198.51.100.7")).unwrap();
        assert!(c.open(remote("198.51.100.7")).is_none(), "a third from one address");
        let _b = c.open(remote("203.0.113.1")).unwrap();
        let _local = c.open(remote("127.0.0.1")).unwrap();
        assert!(c.open(remote("127.0.0.2")).is_none(), "the server's cap (4) holds for loopback too");
        drop(a1);
        assert!(c.open(remote("198.51.100.7")).is_some(), "a closed connection gives its place back");
        assert_eq!((c.refused.load(Relaxed), c.refused_per_ip.load(Relaxed)), (1, 1));
    }
}
