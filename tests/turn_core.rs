//! The TURN core driven with hand-built STUN/TURN messages and time as an input (no sockets):
//! credentials on every request, lifetime capped at the credential, quotas, the peer policy on
//! CreatePermission/ChannelBind and on every send, max-bps, and malformed input dropped while
//! the server keeps answering.

use std::net::SocketAddr;
use std::time::Duration;

use voxrelay::relay::RelayConfig;
use voxrelay::relay::auth::mint_rest;
use voxrelay::relay::core::{ClientKey, Now, RelayId, TurnCore, TurnStats, Via};
use voxrelay::relay::probe::*;

const SECRET: &str = "s3cret";
const REALM: &str = "voxrelay";

struct Harness {
    core: TurnCore,
    io: RecordingIo,
    now: Now,
}

fn config() -> RelayConfig {
    RelayConfig {
        use_auth_secret: true,
        static_auth_secrets: vec![SECRET.into()],
        lt_cred_mech: true,
        users: vec![("alice".into(), "pw".into())],
        realm: REALM.into(),
        ..RelayConfig::default()
    }
}

fn client(n: u16) -> ClientKey {
    ClientKey { via: Via::Udp(0), addr: SocketAddr::from(([192, 0, 2, 1], 40_000 + n)) }
}

impl Harness {
    fn new(cfg: RelayConfig) -> Harness {
        Harness { core: TurnCore::new(&cfg, "192.0.2.100".parse().unwrap()), io: RecordingIo::default(), now: Now::system() }
    }

    fn advance(&mut self, secs: u64) {
        self.now = Now { mono: self.now.mono + Duration::from_secs(secs), unix: self.now.unix + secs };
    }

    /// Sends `bytes`; returns the answer, if any.
    fn ask(&mut self, from: ClientKey, bytes: &[u8]) -> Option<Answer> {
        self.io.to_client.clear();
        self.core.on_client(from, bytes, self.now, &mut self.io);
        self.io.to_client.last().and_then(|(_, b)| parse(b))
    }

    /// A REST probe for `user` valid for `ttl` seconds (negative: already expired).
    fn rest(&self, user: &str, ttl: i64) -> Probe {
        let (u, p) = mint_rest(SECRET, user, (self.now.unix as i64 + ttl) as u64);
        Probe::new(&u, &p, REALM)
    }

    /// Allocate with the 401 → nonce → signed retry dance; returns the final answer.
    fn allocate(&mut self, from: ClientKey, probe: &mut Probe, extra: &[Attr]) -> Answer {
        if probe.nonce.is_none() {
            let challenge = self.ask(from, &probe.request(METHOD_ALLOCATE, &[Attr::udp()])).expect("challenge");
            assert_eq!(challenge.code, Some(401));
            probe.nonce = challenge.nonce;
        }
        let mut attrs = vec![Attr::udp()];
        attrs.extend_from_slice(extra);
        self.ask(from, &probe.request(METHOD_ALLOCATE, &attrs)).expect("answer")
    }

    fn stats(&self) -> &TurnStats {
        &self.core.stats
    }
}

fn ok(a: &Answer) -> bool {
    a.class == CLASS_SUCCESS_RESPONSE
}

#[test]
fn expired_rest_credential_is_refused_on_allocate() {
    let mut h = Harness::new(config());
    let mut p = h.rest("sess_1", -1);
    assert_eq!(h.allocate(client(1), &mut p, &[]).code, Some(401));
    assert_eq!(h.core.allocation_count(), 0);
}

#[test]
fn expired_rest_credential_is_refused_on_refresh_permission_and_channel_bind() {
    let mut h = Harness::new(config());
    let mut p = h.rest("sess_1", 100);
    let a = h.allocate(client(1), &mut p, &[Attr::Lifetime(Duration::from_secs(3600))]);
    assert!(ok(&a), "{a:?}");
    assert_eq!(a.lifetime, Some(Duration::from_secs(100)), "lifetime capped at the credential's expiry");
    let peer: SocketAddr = "8.8.8.8:5000".parse().unwrap();
    assert!(ok(&h.ask(client(1), &p.request(METHOD_CREATE_PERMISSION, &[Attr::Peer(peer)])).unwrap()));
    // A refresh before expiry cannot extend past the credential either.
    h.advance(40);
    let r = h.ask(client(1), &p.request(METHOD_REFRESH, &[Attr::Lifetime(Duration::from_secs(600))])).unwrap();
    assert_eq!(r.lifetime, Some(Duration::from_secs(60)));
    h.advance(61);
    for (method, attrs) in [
        (METHOD_REFRESH, vec![Attr::Lifetime(Duration::from_secs(600))]),
        (METHOD_CREATE_PERMISSION, vec![Attr::Peer(peer)]),
        (METHOD_CHANNEL_BIND, vec![Attr::Channel(0x4000), Attr::Peer(peer)]),
    ] {
        let a = h.ask(client(1), &p.request(method, &attrs)).unwrap();
        assert_eq!(a.code, Some(401), "{method:?} with an expired credential");
    }
}

#[test]
fn wrong_password_is_refused() {
    let mut h = Harness::new(config());
    let (u, _) = mint_rest(SECRET, "sess_1", h.now.unix + 600);
    let mut p = Probe::new(&u, "not-the-password", REALM);
    assert_eq!(h.allocate(client(1), &mut p, &[]).code, Some(401));
    let mut alice = Probe::new("alice", "wrong", REALM);
    assert_eq!(h.allocate(client(2), &mut alice, &[]).code, Some(401));
    let mut alice = Probe::new("alice", "pw", REALM);
    assert!(ok(&h.allocate(client(3), &mut alice, &[])), "static user with the right password");
    assert!(TurnStats::get(&h.stats().unauthorized) >= 2);
}

#[test]
fn user_quota_and_total_quota_answer_486() {
    let mut h = Harness::new(RelayConfig { user_quota: 2, total_quota: 3, ..config() });
    let mut p = h.rest("leaked", 600);
    assert!(ok(&h.allocate(client(1), &mut p, &[])));
    assert!(ok(&h.allocate(client(2), &mut p, &[])));
    assert_eq!(h.allocate(client(3), &mut p, &[]).code, Some(486), "per-user cap");
    let mut other = h.rest("other", 600);
    assert!(ok(&h.allocate(client(4), &mut other, &[])));
    assert_eq!(h.allocate(client(5), &mut other, &[]).code, Some(486), "total cap");
    // Releasing one (Refresh with lifetime 0) frees its quota.
    let r = h.ask(client(1), &p.request(METHOD_REFRESH, &[Attr::Lifetime(Duration::ZERO)])).unwrap();
    assert!(ok(&r));
    assert!(ok(&h.allocate(client(3), &mut p, &[])));
    assert_eq!(TurnStats::get(&h.stats().quota_refused), 2);
}

#[test]
fn every_denied_range_is_refused_on_create_permission_and_channel_bind() {
    let mut h = Harness::new(config());
    let mut p = h.rest("sess_1", 600);
    assert!(ok(&h.allocate(client(1), &mut p, &[])));
    let denied = [
        "0.0.0.0", "0.1.2.3", "10.0.0.1", "100.64.0.1", "127.0.0.1", "169.254.169.254", "172.16.0.1", "172.31.255.254", "192.168.0.1",
        "224.0.0.1", "240.0.0.1", "255.255.255.255", "::", "::1", "fc00::1", "fd12::1", "fe80::1", "ff02::1", "::ffff:127.0.0.1",
        "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1", "64:ff9b::7f00:1", "::127.0.0.1",
    ];
    for (i, ip) in denied.iter().enumerate() {
        let peer = SocketAddr::new(ip.parse().unwrap(), 3478);
        let a = h.ask(client(1), &p.request(METHOD_CREATE_PERMISSION, &[Attr::Peer(peer)])).unwrap();
        assert_eq!(a.code, Some(403), "CreatePermission to {ip}");
        let a = h.ask(client(1), &p.request(METHOD_CHANNEL_BIND, &[Attr::Channel(0x4000 + i as u16), Attr::Peer(peer)])).unwrap();
        assert_eq!(a.code, Some(403), "ChannelBind to {ip}");
    }
    // One denied address among allowed ones fails the whole request.
    let mixed = [Attr::Peer("8.8.8.8:1".parse().unwrap()), Attr::Peer("[::ffff:127.0.0.1]:1".parse().unwrap())];
    assert_eq!(h.ask(client(1), &p.request(METHOD_CREATE_PERMISSION, &mixed)).unwrap().code, Some(403));
    assert_eq!(TurnStats::get(&h.stats().forbidden_peer), 2 * denied.len() as u64 + 1);
    // Sending to a denied peer without a permission relays nothing.
    h.core.on_client(client(1), &send_indication("169.254.169.254:80".parse().unwrap(), b"GET /"), h.now, &mut h.io);
    assert!(h.io.to_peer.is_empty());
}

#[test]
fn an_ipv6_peer_on_an_ipv4_relay_gets_443() {
    let mut h = Harness::new(config());
    let mut p = h.rest("sess_1", 600);
    assert!(ok(&h.allocate(client(1), &mut p, &[])));
    // Allowed by the policy (a public IPv6 address), but the relay is IPv4 (RFC 6156 §6.2).
    let peer: SocketAddr = "[2001:4860:4860::8888]:3478".parse().unwrap();
    let a = h.ask(client(1), &p.request(METHOD_CREATE_PERMISSION, &[Attr::Peer(peer)])).unwrap();
    assert_eq!(a.code, Some(443));
    let a = h.ask(client(1), &p.request(METHOD_CHANNEL_BIND, &[Attr::Channel(0x4000), Attr::Peer(peer)])).unwrap();
    assert_eq!(a.code, Some(443));
    // Nothing was permitted: a Send indication to it relays nothing.
    h.core.on_client(client(1), &send_indication(peer, b"hello"), h.now, &mut h.io);
    assert!(h.io.to_peer.is_empty());
    // An IPv4 peer next to it fails the whole request too; alone it is fine.
    let v4: SocketAddr = "8.8.8.8:1".parse().unwrap();
    assert_eq!(h.ask(client(1), &p.request(METHOD_CREATE_PERMISSION, &[Attr::Peer(v4), Attr::Peer(peer)])).unwrap().code, Some(443));
    assert!(ok(&h.ask(client(1), &p.request(METHOD_CREATE_PERMISSION, &[Attr::Peer(v4)])).unwrap()));
}

#[test]
fn permitted_peers_relay_both_ways_by_send_indication_and_channel_data() {
    let mut h = Harness::new(config());
    let mut p = h.rest("sess_1", 600);
    let a = h.allocate(client(1), &mut p, &[]);
    assert_eq!(a.relayed.map(|r| r.ip()), Some("192.0.2.100".parse().unwrap()));
    let peer: SocketAddr = "8.8.8.8:5000".parse().unwrap();
    let other: SocketAddr = "8.8.4.4:5000".parse().unwrap();
    h.core.on_client(client(1), &send_indication(peer, b"early"), h.now, &mut h.io);
    assert!(h.io.to_peer.is_empty(), "no permission yet");
    assert!(ok(&h.ask(client(1), &p.request(METHOD_CREATE_PERMISSION, &[Attr::Peer(peer)])).unwrap()));
    h.core.on_client(client(1), &send_indication(peer, b"hello"), h.now, &mut h.io);
    assert_eq!(h.io.to_peer.last().map(|(_, to, d)| (*to, d.clone())), Some((peer, b"hello".to_vec())));
    // Peer → client as a Data indication; from a peer without permission: dropped.
    h.io.to_client.clear();
    h.core.on_peer(RelayId(1), peer, b"back", h.now, &mut h.io);
    h.core.on_peer(RelayId(1), other, b"intruder", h.now, &mut h.io);
    assert_eq!(h.io.to_client.len(), 1);
    let data = parse(&h.io.to_client[0].1).unwrap();
    assert_eq!((data.method, data.peer, data.data), (METHOD_DATA, Some(peer), Some(b"back".to_vec())));
    // Channels.
    assert!(ok(&h.ask(client(1), &p.request(METHOD_CHANNEL_BIND, &[Attr::Channel(0x4001), Attr::Peer(peer)])).unwrap()));
    assert_eq!(h.ask(client(1), &p.request(METHOD_CHANNEL_BIND, &[Attr::Channel(0x4001), Attr::Peer(other)])).unwrap().code, Some(400));
    h.core.on_client(client(1), &channel_data(0x4001, b"via channel"), h.now, &mut h.io);
    assert_eq!(h.io.to_peer.last().map(|(_, _, d)| d.clone()), Some(b"via channel".to_vec()));
    h.io.to_client.clear();
    h.core.on_peer(RelayId(1), peer, b"xyz", h.now, &mut h.io);
    assert_eq!(h.io.to_client[0].1, channel_data(0x4001, b"xyz"));
    // Permissions expire after 5 minutes unless refreshed.
    h.advance(301);
    h.core.on_tick(h.now, &mut h.io);
    let before = h.io.to_peer.len();
    h.core.on_client(client(1), &send_indication(peer, b"late"), h.now, &mut h.io);
    assert_eq!(h.io.to_peer.len(), before);
}

#[test]
fn max_bps_drops_over_rate_packets() {
    let mut h = Harness::new(RelayConfig { max_bps: 1000, ..config() });
    let mut p = h.rest("sess_1", 600);
    assert!(ok(&h.allocate(client(1), &mut p, &[])));
    let peer: SocketAddr = "8.8.8.8:5000".parse().unwrap();
    assert!(ok(&h.ask(client(1), &p.request(METHOD_CREATE_PERMISSION, &[Attr::Peer(peer)])).unwrap()));
    for _ in 0..10 {
        h.core.on_client(client(1), &send_indication(peer, &[0u8; 200]), h.now, &mut h.io);
    }
    assert_eq!(h.io.to_peer.len(), 5, "one second of burst at 1000 B/s");
    assert_eq!(TurnStats::get(&h.stats().dropped_rate), 5);
}

#[test]
fn malformed_messages_are_dropped_and_the_server_keeps_answering() {
    let mut h = Harness::new(config());
    let mut p = h.rest("sess_1", 600);
    assert!(ok(&h.allocate(client(1), &mut p, &[])));
    let good = p.request(METHOD_REFRESH, &[Attr::Lifetime(Duration::from_secs(600))]);
    let mut wrong_length = good.clone();
    wrong_length[3] = wrong_length[3].wrapping_add(8);
    let mut bad_attr_len = good.clone();
    bad_attr_len[23] = 0xff; // first attribute's length runs past the message
    let mut short_integrity = p.request(METHOD_REFRESH, &[]);
    let n = short_integrity.len();
    short_integrity.truncate(n - 16); // MESSAGE-INTEGRITY value cut short, header length left as is
    let mut bad_cookie = good.clone();
    bad_cookie[4] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated header", good[..10].to_vec()),
        ("truncated body", good[..good.len() - 7].to_vec()),
        ("length too long", wrong_length),
        ("attribute length past the end", bad_attr_len),
        ("short integrity", short_integrity),
        ("bad magic cookie", bad_cookie),
        ("channel data shorter than its length", vec![0x40, 0x00, 0x00, 0x20, 1, 2]),
        ("unbound channel", channel_data(0x7fff, b"x")),
        ("garbage", vec![0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]),
        ("send without attributes", send_indication("8.8.8.8:1".parse().unwrap(), b"")[..20].to_vec()),
    ];
    for (name, bytes) in cases {
        h.io.to_peer.clear();
        let answer = h.ask(client(1), &bytes);
        assert!(answer.is_none() || answer.as_ref().is_some_and(|a| a.class == CLASS_ERROR_RESPONSE), "{name}: {answer:?}");
        assert!(h.io.to_peer.is_empty(), "{name} relayed something");
        let binding = h.ask(client(9), &Probe::new("", "", REALM).request(METHOD_BINDING, &[])).expect("server still answers");
        assert!(ok(&binding), "{name}: binding after it");
    }
    assert!(TurnStats::get(&h.stats().malformed) >= 6);
    let refresh = h.ask(client(1), &good).unwrap();
    assert!(ok(&refresh), "the allocation survived: {refresh:?}");
}

#[test]
fn external_ip_is_advertised_as_the_relayed_address() {
    let cfg = RelayConfig { external_ips: vec![("203.0.113.7".parse().unwrap(), Some("192.0.2.100".parse().unwrap()))], ..config() };
    let mut h = Harness::new(cfg);
    let mut p = h.rest("sess_1", 600);
    let a = h.allocate(client(1), &mut p, &[]);
    assert_eq!(a.relayed, Some("203.0.113.7:50001".parse().unwrap()), "public address, relay socket's port");
}

#[test]
fn a_stale_nonce_gets_438_and_a_fresh_one() {
    let mut h = Harness::new(config());
    let mut p = h.rest("sess_1", 7200);
    assert!(ok(&h.allocate(client(1), &mut p, &[])));
    h.advance(3601);
    let a = h.ask(client(1), &p.request(METHOD_REFRESH, &[])).unwrap();
    assert_eq!(a.code, Some(438));
    p.nonce = a.nonce;
    assert!(ok(&h.ask(client(1), &p.request(METHOD_REFRESH, &[])).unwrap()));
}
