//! The TURN server's state machine (RFC 5766 allocations, permissions, channels) without I/O:
//! bytes and time go in, actions come out through [`RelayIo`]. Message encoding, attributes and
//! MESSAGE-INTEGRITY are webrtc-rs's (`rtc::stun`, `rtc::turn::proto`); this file adds what
//! webrtc-rs's sans-IO TURN lacks: the server side, with credentials checked on *every*
//! authenticated request (an expired REST credential gets 401 on Refresh, CreatePermission and
//! ChannelBind too), allocation lifetime capped at the credential's expiry, the peer policy on
//! CreatePermission/ChannelBind (403) and again on every send (drop + counter), quotas (486) and
//! a per-allocation byte-rate cap.
//!
//! Must never panic on input: every malformed message is dropped (counted) and the next one is
//! served. Fuzzed by `tests/turn_fuzz.rs`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rtc::stun::attributes::*;
use rtc::stun::error_code::*;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::*;
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;
use rtc::turn::proto::chandata::ChannelData;
use rtc::turn::proto::channum::ChannelNumber;
use rtc::turn::proto::data::Data;
use rtc::turn::proto::lifetime::Lifetime;
use rtc::turn::proto::peeraddr::PeerAddress;
use rtc::turn::proto::relayaddr::RelayedAddress;
use rtc::turn::proto::reqtrans::RequestedTransport;
use rtc::turn::proto::{PROTO_UDP, Protocol};

use super::auth::{Authenticator, Credential, Refusal};
use super::policy::PeerPolicy;
use super::answer::{error, finish, integrity_is_last, reply};
use super::ratelimit::TokenBucket;
pub use super::stats::TurnStats;
use super::RelayConfig;

/// Allocation lifetime when the client asks for none (RFC 5766 §2.2: 10 minutes).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// Longest lifetime granted per Allocate/Refresh (RFC 5766 suggests 1 hour).
const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Permissions last 5 minutes, channel bindings 10 (RFC 5766 §8, §11).
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// A nonce is good for this long; then 438 Stale Nonce makes the client retry with a new one.
const NONCE_LIFETIME_SECS: u64 = 3600;
const ATTR_REQUESTED_ADDRESS_FAMILY: AttrType = AttrType(0x0017);

/// Which listener/connection a client speaks through. Datagram listeners are shared by many
/// clients; a stream connection (TCP/TLS) belongs to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    Udp(u32),
    Stream(u64),
}

/// The client side of an allocation's 5-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub via: Via,
    pub addr: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelayId(pub u64);

/// Time as inputs: a monotonic instant for lifetimes, unix seconds for REST credential expiry.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

impl Now {
    pub fn system() -> Now {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Now { mono: Instant::now(), unix }
    }
}

/// What the core asks of the I/O layer. Sends must not block (drop when a queue is full).
pub trait RelayIo {
    /// Binds a relay socket on `ip` (a port in the configured range) and returns its address.
    fn bind_relay(&mut self, ip: IpAddr) -> std::io::Result<(RelayId, SocketAddr)>;
    fn close_relay(&mut self, relay: RelayId);
    fn send_to_peer(&mut self, relay: RelayId, peer: SocketAddr, data: &[u8]);
    fn send_to_client(&mut self, client: ClientKey, data: &[u8]);
}

struct Allocation {
    relay: RelayId,
    username: String,
    quota_user: String,
    cred_expires_unix: Option<u64>,
    expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    channel_of_peer: HashMap<SocketAddr, u16>,
    bucket: Option<TokenBucket>,
    /// The Allocate transaction and its answer, resent on a retransmission (RFC 5766 §6.2).
    allocate_txn: TransactionId,
    allocate_answer: Vec<u8>,
}

impl Allocation {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|t| *t > now)
    }
    fn within_rate(&mut self, bytes: usize, now: Instant) -> bool {
        self.bucket.as_mut().is_none_or(|b| b.take(bytes as u64, now))
    }
}

/// The core. One per server; the I/O layer holds it behind a mutex.
pub struct TurnCore {
    realm: String,
    auth: Authenticator,
    policy: PeerPolicy,
    relay_ip: IpAddr,
    /// private relay IP → public IP advertised (`external-ip=public/private`).
    external: Vec<(IpAddr, Option<IpAddr>)>,
    user_quota: u32,
    total_quota: u32,
    max_bps: u64,
    nonce_secret: [u8; 16],
    allocations: HashMap<ClientKey, Allocation>,
    by_relay: HashMap<RelayId, ClientKey>,
    per_user: HashMap<String, u32>,
    pub stats: Arc<TurnStats>,
}

/// An authenticated request's identity.
struct Authed {
    username: String,
    cred: Credential,
}

impl TurnCore {
    /// `relay_ip`: the address relay sockets bind to (`relay-ip`, else the listening IP).
    pub fn new(cfg: &RelayConfig, relay_ip: IpAddr) -> TurnCore {
        let mut nonce_secret = [0u8; 16];
        let _ = super::auth::crypto_provider().random().fill(&mut nonce_secret);
        TurnCore {
            realm: cfg.realm.clone(),
            auth: Authenticator::new(cfg),
            policy: cfg.peer_policy(),
            relay_ip,
            external: cfg.external_ips.clone(),
            user_quota: cfg.user_quota,
            total_quota: cfg.total_quota,
            max_bps: cfg.max_bps,
            nonce_secret,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            stats: Arc::new(TurnStats::default()),
        }
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// One datagram (or one framed stream message) from a client.
    pub fn on_client(&mut self, from: ClientKey, buf: &[u8], now: Now, io: &mut dyn RelayIo) {
        if buf.len() >= 4 && (0x40..0x80).contains(&buf[0]) {
            self.on_channel_data(from, buf, now, io);
            return;
        }
        let mut msg = Message::new();
        if buf.len() < MESSAGE_HEADER_SIZE || buf[0] & 0xc0 != 0 || msg.unmarshal_binary(buf).is_err() {
            TurnStats::bump(&self.stats.malformed);
            return;
        }
        let class = msg.typ.class;
        let method = msg.typ.method;
        if class == CLASS_INDICATION {
            if method == METHOD_SEND {
                self.on_send_indication(from, &msg, now, io);
            }
            return;
        }
        if class != CLASS_REQUEST {
            return;
        }
        let answer = match method {
            METHOD_BINDING => Some(self.binding(from, &msg)),
            METHOD_ALLOCATE => self.allocate(from, &mut msg, now, io),
            METHOD_REFRESH => Some(self.refresh(from, &mut msg, now, io)),
            METHOD_CREATE_PERMISSION => Some(self.create_permission(from, &mut msg, now)),
            METHOD_CHANNEL_BIND => Some(self.channel_bind(from, &mut msg, now)),
            _ => Some(error(&msg, CODE_BAD_REQUEST, None, &[])),
        };
        if let Some(answer) = answer {
            io.send_to_client(from, &answer);
        }
    }

    /// A datagram a relay socket received from `peer`.
    pub fn on_peer(&mut self, relay: RelayId, peer: SocketAddr, data: &[u8], now: Now, io: &mut dyn RelayIo) {
        let Some(client) = self.by_relay.get(&relay).copied() else { return };
        let Some(a) = self.allocations.get_mut(&client) else { return };
        if !a.permitted(peer.ip(), now.mono) {
            TurnStats::bump(&self.stats.dropped_no_permission);
            return;
        }
        if !a.within_rate(data.len(), now.mono) {
            TurnStats::bump(&self.stats.dropped_rate);
            return;
        }
        let channel = a.channel_of_peer.get(&peer).copied().filter(|n| a.channels.get(n).is_some_and(|(_, t)| *t > now.mono));
        let out = match channel {
            Some(number) => {
                let mut cd = ChannelData { data: data.to_vec(), number: ChannelNumber(number), raw: Vec::with_capacity(data.len() + 8) };
                cd.encode();
                // Over UDP the padding is optional (RFC 5766 §11.5); keep it only on streams.
                if matches!(client.via, Via::Udp(_)) {
                    cd.raw.truncate(4 + data.len());
                }
                cd.raw
            }
            None => {
                let mut m = Message::new();
                m.set_type(MessageType::new(METHOD_DATA, CLASS_INDICATION));
                let _ = m.new_transaction_id();
                m.write_header();
                let _ = PeerAddress { ip: peer.ip(), port: peer.port() }.add_to(&mut m);
                let _ = Data(data.to_vec()).add_to(&mut m);
                m.raw
            }
        };
        TurnStats::bump(&self.stats.relayed_to_client);
        io.send_to_client(client, &out);
    }

    /// Drops expired allocations, permissions and channels. Call about once a second.
    pub fn on_tick(&mut self, now: Now, io: &mut dyn RelayIo) {
        let expired: Vec<ClientKey> = self.allocations.iter().filter(|(_, a)| a.expires <= now.mono).map(|(k, _)| *k).collect();
        for k in expired {
            self.remove(k, io);
        }
        for a in self.allocations.values_mut() {
            a.permissions.retain(|_, t| *t > now.mono);
            let channels = &mut a.channels;
            channels.retain(|_, (_, t)| *t > now.mono);
            a.channel_of_peer.retain(|_, n| channels.contains_key(n));
        }
    }

    /// A stream connection closed: its allocations go with it (RFC 6062 §... / 5766 §2.1).
    pub fn on_stream_closed(&mut self, conn: u64, io: &mut dyn RelayIo) {
        let gone: Vec<ClientKey> = self.allocations.keys().filter(|k| k.via == Via::Stream(conn)).copied().collect();
        for k in gone {
            self.remove(k, io);
        }
    }

    /// Ends every allocation (shutdown).
    pub fn close_all(&mut self, io: &mut dyn RelayIo) {
        let all: Vec<ClientKey> = self.allocations.keys().copied().collect();
        for k in all {
            self.remove(k, io);
        }
    }

    fn remove(&mut self, key: ClientKey, io: &mut dyn RelayIo) {
        if let Some(a) = self.allocations.remove(&key) {
            self.by_relay.remove(&a.relay);
            if let Some(n) = self.per_user.get_mut(&a.quota_user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_user.remove(&a.quota_user);
                }
            }
            self.stats.allocations.store(self.allocations.len() as u64, Ordering::Relaxed);
            io.close_relay(a.relay);
        }
    }

    fn binding(&self, from: ClientKey, req: &Message) -> Vec<u8> {
        let mut m = reply(req, CLASS_SUCCESS_RESPONSE);
        let _ = XorMappedAddress { ip: from.addr.ip(), port: from.addr.port() }.add_to_as(&mut m, ATTR_XORMAPPED_ADDRESS);
        finish(m, None, req)
    }

    fn nonce(&self, unix_now: u64) -> String {
        let expires = unix_now + NONCE_LIFETIME_SECS;
        format!("{expires:016x}{}", self.nonce_tag(expires))
    }

    fn nonce_tag(&self, expires: u64) -> String {
        let mut input = self.nonce_secret.to_vec();
        input.extend_from_slice(&expires.to_be_bytes());
        let digest = self.auth.crypto().crypto().hash(rtc::crypto::HashAlgorithm::Sha256, &input).unwrap_or_default();
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    fn nonce_valid(&self, nonce: &str, unix_now: u64) -> bool {
        if nonce.len() != 32 || !nonce.is_ascii() {
            return false;
        }
        let Ok(expires) = u64::from_str_radix(&nonce[..16], 16) else { return false };
        expires > unix_now && nonce[16..] == self.nonce_tag(expires)
    }

    /// Checks USERNAME/REALM/NONCE/MESSAGE-INTEGRITY; on failure returns the error answer.
    fn authenticate(&self, req: &mut Message, now: Now) -> Result<Authed, Vec<u8>> {
        let challenge = |code: ErrorCode, core: &TurnCore, req: &Message| {
            TurnStats::bump(&core.stats.unauthorized);
            let extra = [
                TextAttribute::new(ATTR_REALM, core.realm.clone()),
                TextAttribute::new(ATTR_NONCE, core.nonce(now.unix)),
            ];
            error(req, code, None, &extra)
        };
        let Ok(integrity) = req.get(ATTR_MESSAGE_INTEGRITY) else { return Err(challenge(CODE_UNAUTHORIZED, self, req)) };
        let (Ok(username), Ok(_realm), Ok(nonce)) = (
            TextAttribute::get_from_as(req, ATTR_USERNAME),
            TextAttribute::get_from_as(req, ATTR_REALM),
            TextAttribute::get_from_as(req, ATTR_NONCE),
        ) else {
            return Err(error(req, CODE_BAD_REQUEST, None, &[]));
        };
        if integrity.len() != 20 || !integrity_is_last(req) {
            return Err(error(req, CODE_BAD_REQUEST, None, &[]));
        }
        if !self.nonce_valid(&nonce.text, now.unix) {
            return Err(challenge(CODE_STALE_NONCE, self, req));
        }
        let username = username.text;
        let candidates = match self.auth.candidates(&username, now.unix) {
            Ok(c) => c,
            Err(Refusal::Expired | Refusal::Unknown) => return Err(challenge(CODE_UNAUTHORIZED, self, req)),
        };
        for cred in candidates {
            if MessageIntegrity::check(req, &cred.key, self.auth.crypto().crypto()).is_ok() {
                return Ok(Authed { username, cred });
            }
        }
        Err(challenge(CODE_UNAUTHORIZED, self, req))
    }

    /// Lifetime to grant: asked (or default), at most [`MAX_LIFETIME`], never past the credential.
    fn grant(&self, req: &Message, cred: &Credential, unix_now: u64) -> Result<Duration, ()> {
        let mut asked = Lifetime::default();
        let asked = match req.contains(ATTR_LIFETIME) {
            true => asked.get_from(req).map(|_| asked.0).map_err(|_| ())?,
            false => DEFAULT_LIFETIME,
        };
        let mut granted = asked.min(MAX_LIFETIME);
        if let Some(expiry) = cred.expires_unix {
            granted = granted.min(Duration::from_secs(expiry.saturating_sub(unix_now)));
        }
        Ok(granted)
    }

    fn allocate(&mut self, from: ClientKey, req: &mut Message, now: Now, io: &mut dyn RelayIo) -> Option<Vec<u8>> {
        if let Some(a) = self.allocations.get(&from)
            && a.allocate_txn == req.transaction_id
        {
            return Some(a.allocate_answer.clone());
        }
        let who = match self.authenticate(req, now) {
            Ok(w) => w,
            Err(answer) => return Some(answer),
        };
        let key = Some(who.cred.key.as_slice());
        if self.allocations.contains_key(&from) {
            return Some(error(req, CODE_ALLOC_MISMATCH, key, &[]));
        }
        let mut transport = RequestedTransport { protocol: Protocol(0) };
        if transport.get_from(req).is_err() {
            return Some(error(req, CODE_BAD_REQUEST, key, &[]));
        }
        if transport.protocol != PROTO_UDP {
            return Some(error(req, CODE_UNSUPPORTED_TRANS_PROTO, key, &[]));
        }
        if let Ok(family) = req.get(ATTR_REQUESTED_ADDRESS_FAMILY) {
            let wanted_v6 = family.first() == Some(&0x02);
            if family.len() != 4 || wanted_v6 != self.relay_ip.is_ipv6() {
                return Some(error(req, CODE_ADDR_FAMILY_NOT_SUPPORTED, key, &[]));
            }
        }
        let Ok(lifetime) = self.grant(req, &who.cred, now.unix) else { return Some(error(req, CODE_BAD_REQUEST, key, &[])) };
        if lifetime.is_zero() {
            return Some(error(req, CODE_BAD_REQUEST, key, &[]));
        }
        let held = self.per_user.get(&who.cred.quota_user).copied().unwrap_or(0);
        let over_total = self.total_quota > 0 && self.allocations.len() as u32 >= self.total_quota;
        if held >= self.user_quota || over_total {
            TurnStats::bump(&self.stats.quota_refused);
            return Some(error(req, CODE_ALLOC_QUOTA_REACHED, key, &[]));
        }
        let (relay, relay_addr) = match io.bind_relay(self.relay_ip) {
            Ok(r) => r,
            Err(_) => return Some(error(req, CODE_INSUFFICIENT_CAPACITY, key, &[])),
        };
        let advertised = self.advertised(relay_addr);
        let mut m = reply(req, CLASS_SUCCESS_RESPONSE);
        let _ = RelayedAddress { ip: advertised.ip(), port: advertised.port() }.add_to(&mut m);
        let _ = Lifetime(lifetime).add_to(&mut m);
        let _ = XorMappedAddress { ip: from.addr.ip(), port: from.addr.port() }.add_to_as(&mut m, ATTR_XORMAPPED_ADDRESS);
        let answer = finish(m, key, req);
        *self.per_user.entry(who.cred.quota_user.clone()).or_insert(0) += 1;
        self.allocations.insert(
            from,
            Allocation {
                relay,
                username: who.username,
                quota_user: who.cred.quota_user,
                cred_expires_unix: who.cred.expires_unix,
                expires: now.mono + lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                channel_of_peer: HashMap::new(),
                bucket: (self.max_bps > 0).then(|| TokenBucket::per_second(self.max_bps, now.mono)),
                allocate_txn: req.transaction_id,
                allocate_answer: answer.clone(),
            },
        );
        self.by_relay.insert(relay, from);
        self.stats.allocations.store(self.allocations.len() as u64, Ordering::Relaxed);
        Some(answer)
    }

    fn advertised(&self, relay: SocketAddr) -> SocketAddr {
        for (public, private) in &self.external {
            if private.is_none_or(|p| p == relay.ip()) {
                return SocketAddr::new(*public, relay.port());
            }
        }
        relay
    }

    /// Authenticates and finds the requester's allocation, checking the username matches the
    /// one that created it (441 otherwise).
    fn authed_allocation(&mut self, from: ClientKey, req: &mut Message, now: Now) -> Result<Authed, Vec<u8>> {
        let who = self.authenticate(req, now)?;
        let key = Some(who.cred.key.as_slice());
        match self.allocations.get(&from) {
            None => Err(error(req, CODE_ALLOC_MISMATCH, key, &[])),
            Some(a) if a.username != who.username => Err(error(req, CODE_WRONG_CREDENTIALS, key, &[])),
            Some(_) => Ok(who),
        }
    }

    fn refresh(&mut self, from: ClientKey, req: &mut Message, now: Now, io: &mut dyn RelayIo) -> Vec<u8> {
        let who = match self.authed_allocation(from, req, now) {
            Ok(w) => w,
            Err(answer) => return answer,
        };
        let key = Some(who.cred.key.as_slice());
        let Ok(lifetime) = self.grant(req, &who.cred, now.unix) else { return error(req, CODE_BAD_REQUEST, key, &[]) };
        if lifetime.is_zero() {
            self.remove(from, io);
        } else if let Some(a) = self.allocations.get_mut(&from) {
            a.expires = now.mono + lifetime;
            a.cred_expires_unix = who.cred.expires_unix;
        }
        let mut m = reply(req, CLASS_SUCCESS_RESPONSE);
        let _ = Lifetime(lifetime).add_to(&mut m);
        finish(m, key, req)
    }

    /// RFC 6156 §6.2: a peer must be of the relayed address's family (one per server here);
    /// checked after the policy, so a denied address is refused (403) and counted as such.
    fn same_family(&self, peer: IpAddr) -> bool {
        peer.is_ipv4() == self.relay_ip.is_ipv4()
    }

    fn create_permission(&mut self, from: ClientKey, req: &mut Message, now: Now) -> Vec<u8> {
        let who = match self.authed_allocation(from, req, now) {
            Ok(w) => w,
            Err(answer) => return answer,
        };
        let key = Some(who.cred.key.as_slice());
        let mut peers = Vec::new();
        for attr in req.attributes.0.iter().filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS) {
            let mut one = Message::new();
            one.transaction_id = req.transaction_id;
            one.add(ATTR_XOR_PEER_ADDRESS, &attr.value);
            let mut p = PeerAddress::default();
            if p.get_from(&one).is_err() {
                return error(req, CODE_BAD_REQUEST, key, &[]);
            }
            peers.push(p.ip);
        }
        if peers.is_empty() {
            return error(req, CODE_BAD_REQUEST, key, &[]);
        }
        if peers.iter().any(|ip| !self.policy.allows(*ip)) {
            TurnStats::bump(&self.stats.forbidden_peer);
            return error(req, CODE_FORBIDDEN, key, &[]);
        }
        if peers.iter().any(|ip| !self.same_family(*ip)) {
            return error(req, CODE_PEER_ADDR_FAMILY_MISMATCH, key, &[]);
        }
        if let Some(a) = self.allocations.get_mut(&from) {
            for ip in peers {
                a.permissions.insert(ip, now.mono + PERMISSION_LIFETIME);
            }
        }
        finish(reply(req, CLASS_SUCCESS_RESPONSE), key, req)
    }

    fn channel_bind(&mut self, from: ClientKey, req: &mut Message, now: Now) -> Vec<u8> {
        let who = match self.authed_allocation(from, req, now) {
            Ok(w) => w,
            Err(answer) => return answer,
        };
        let key = Some(who.cred.key.as_slice());
        let mut number = ChannelNumber::default();
        let mut peer = PeerAddress::default();
        if number.get_from(req).is_err() || !number.valid() || peer.get_from(req).is_err() {
            return error(req, CODE_BAD_REQUEST, key, &[]);
        }
        if !self.policy.allows(peer.ip) {
            TurnStats::bump(&self.stats.forbidden_peer);
            return error(req, CODE_FORBIDDEN, key, &[]);
        }
        if !self.same_family(peer.ip) {
            return error(req, CODE_PEER_ADDR_FAMILY_MISMATCH, key, &[]);
        }
        let peer = SocketAddr::new(peer.ip, peer.port);
        let Some(a) = self.allocations.get_mut(&from) else { return error(req, CODE_ALLOC_MISMATCH, key, &[]) };
        let number_taken = a.channels.get(&number.0).is_some_and(|(p, _)| *p != peer);
        let peer_taken = a.channel_of_peer.get(&peer).is_some_and(|n| *n != number.0);
        if number_taken || peer_taken {
            return error(req, CODE_BAD_REQUEST, key, &[]);
        }
        a.channels.insert(number.0, (peer, now.mono + CHANNEL_LIFETIME));
        a.channel_of_peer.insert(peer, number.0);
        a.permissions.insert(peer.ip(), now.mono + PERMISSION_LIFETIME);
        finish(reply(req, CLASS_SUCCESS_RESPONSE), key, req)
    }

    fn on_send_indication(&mut self, from: ClientKey, msg: &Message, now: Now, io: &mut dyn RelayIo) {
        let mut peer = PeerAddress::default();
        let mut data = Data::default();
        if peer.get_from(msg).is_err() || data.get_from(msg).is_err() {
            TurnStats::bump(&self.stats.malformed);
            return;
        }
        self.relay_out(from, SocketAddr::new(peer.ip, peer.port), &data.0, now, io);
    }

    fn on_channel_data(&mut self, from: ClientKey, buf: &[u8], now: Now, io: &mut dyn RelayIo) {
        let number = u16::from_be_bytes([buf[0], buf[1]]);
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        if buf.len() < 4 + len {
            TurnStats::bump(&self.stats.malformed);
            return;
        }
        let Some(a) = self.allocations.get(&from) else { return };
        let Some((peer, until)) = a.channels.get(&number).copied() else { return };
        if until <= now.mono {
            return;
        }
        self.relay_out(from, peer, &buf[4..4 + len], now, io);
    }

    /// Client → peer, for Send indications and ChannelData: permission, policy (again: the
    /// policy may be stricter than when the permission was made, and this is the last gate),
    /// rate.
    fn relay_out(&mut self, from: ClientKey, peer: SocketAddr, data: &[u8], now: Now, io: &mut dyn RelayIo) {
        let Some(a) = self.allocations.get_mut(&from) else { return };
        if !a.permitted(peer.ip(), now.mono) {
            TurnStats::bump(&self.stats.dropped_no_permission);
            return;
        }
        if !self.policy.allows(peer.ip()) {
            TurnStats::bump(&self.stats.dropped_policy);
            return;
        }
        if !a.within_rate(data.len(), now.mono) {
            TurnStats::bump(&self.stats.dropped_rate);
            return;
        }
        TurnStats::bump(&self.stats.relayed_to_peer);
        io.send_to_peer(a.relay, peer, data);
    }
}
