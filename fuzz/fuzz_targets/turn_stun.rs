//! The embedded TURN server's parser and state machine: arbitrary datagrams (STUN, TURN,
//! ChannelData) from a client and from a peer, and the TCP/TLS stream framer. Long-term
//! credentials and REST secrets are configured so authenticated paths are reachable from seeds
//! (tests/turn_fuzz.rs mutates signed messages; this explores everything else).
#![no_main]
use libfuzzer_sys::fuzz_target;
use voxrelay::relay::RelayConfig;
use voxrelay::relay::core::{ClientKey, Now, RelayId, TurnCore, Via};
use voxrelay::relay::framing::next_frame;
use voxrelay::relay::probe::RecordingIo;

fuzz_target!(|data: &[u8]| {
    let cfg = RelayConfig {
        use_auth_secret: true,
        static_auth_secrets: vec!["s".into()],
        lt_cred_mech: true,
        users: vec![("alice".into(), "pw".into())],
        realm: "voxrelay".into(),
        allow_loopback_peers: true,
        ..RelayConfig::default()
    };
    let mut core = TurnCore::new(&cfg, "127.0.0.1".parse().unwrap());
    let mut io = RecordingIo::default();
    let now = Now::system();
    let me = ClientKey { via: Via::Udp(0), addr: "127.0.0.1:40000".parse().unwrap() };
    let _ = next_frame(data);
    // The input may hold several messages, split at 0xFF bytes; every fifth comes from a peer.
    for (i, msg) in data.split(|&b| b == 0xFF).filter(|m| !m.is_empty()).enumerate() {
        if i % 5 == 4 {
            core.on_peer(RelayId(1), "127.0.0.1:5000".parse().unwrap(), msg, now, &mut io);
        } else {
            core.on_client(me, msg, now, &mut io);
        }
    }
});
