//! Hand-built TURN client messages and answer parsing, on the same `rtc::stun` codec the server
//! uses: for tests, the fuzz loop and the benchmark. Not a TURN client (no retransmission, no
//! state beyond the nonce).

use std::net::SocketAddr;
use std::time::Duration;

use rtc::stun::attributes::*;
use rtc::stun::error_code::ErrorCodeAttribute;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::*;
use rtc::stun::textattrs::TextAttribute;
use rtc::turn::proto::channum::ChannelNumber;
use rtc::turn::proto::data::Data;
use rtc::turn::proto::lifetime::Lifetime;
use rtc::turn::proto::peeraddr::PeerAddress;
use rtc::turn::proto::relayaddr::RelayedAddress;
use rtc::turn::proto::reqtrans::RequestedTransport;
use rtc::turn::proto::{PROTO_UDP, Protocol};

pub use rtc::stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH, METHOD_SEND, Method,
};

#[derive(Clone, Debug)]
pub enum Attr {
    /// REQUESTED-TRANSPORT (17 = UDP).
    Transport(u8),
    Lifetime(Duration),
    Peer(SocketAddr),
    Channel(u16),
    Data(Vec<u8>),
    Raw(u16, Vec<u8>),
}

impl Attr {
    pub fn udp() -> Attr {
        Attr::Transport(PROTO_UDP.0)
    }

    fn add_to(&self, m: &mut Message) {
        let _ = match self {
            Attr::Transport(p) => RequestedTransport { protocol: Protocol(*p) }.add_to(m),
            Attr::Lifetime(d) => Lifetime(*d).add_to(m),
            Attr::Peer(a) => PeerAddress { ip: a.ip(), port: a.port() }.add_to(m),
            Attr::Channel(n) => ChannelNumber(*n).add_to(m),
            Attr::Data(d) => Data(d.clone()).add_to(m),
            Attr::Raw(t, v) => {
                m.add(AttrType(*t), v);
                Ok(())
            }
        };
    }
}

/// A client's long-term credential and the server's last nonce.
#[derive(Clone, Debug)]
pub struct Probe {
    pub username: String,
    pub password: String,
    pub realm: String,
    pub nonce: Option<String>,
}

impl Probe {
    pub fn new(username: &str, password: &str, realm: &str) -> Probe {
        Probe { username: username.into(), password: password.into(), realm: realm.into(), nonce: None }
    }

    /// A request; signed with USERNAME/REALM/NONCE/MESSAGE-INTEGRITY once a nonce is known.
    pub fn request(&self, method: Method, attrs: &[Attr]) -> Vec<u8> {
        let mut m = Message::new();
        m.set_type(MessageType::new(method, CLASS_REQUEST));
        let _ = m.new_transaction_id();
        m.write_header();
        for a in attrs {
            a.add_to(&mut m);
        }
        if let Some(nonce) = &self.nonce {
            let _ = TextAttribute::new(ATTR_USERNAME, self.username.clone()).add_to(&mut m);
            let _ = TextAttribute::new(ATTR_REALM, self.realm.clone()).add_to(&mut m);
            let _ = TextAttribute::new(ATTR_NONCE, nonce.clone()).add_to(&mut m);
            let crypto = super::auth::crypto_provider();
            if let Ok(mi) = MessageIntegrity::new_long_term_integrity_with_provider(
                self.username.clone(),
                self.realm.clone(),
                self.password.clone(),
                crypto.crypto(),
            ) {
                let _ = mi.add_to(&mut m);
            }
        }
        m.raw
    }
}

pub fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut m = Message::new();
    m.set_type(MessageType::new(METHOD_SEND, CLASS_INDICATION));
    let _ = m.new_transaction_id();
    m.write_header();
    Attr::Peer(peer).add_to(&mut m);
    Attr::Data(data.to_vec()).add_to(&mut m);
    m.raw
}

pub fn channel_data(number: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + data.len());
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// The parts of a server message tests look at.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub method: Method,
    pub class: MessageClass,
    pub code: Option<u16>,
    pub nonce: Option<String>,
    pub relayed: Option<SocketAddr>,
    pub lifetime: Option<Duration>,
    pub peer: Option<SocketAddr>,
    pub data: Option<Vec<u8>>,
}

pub fn parse(bytes: &[u8]) -> Option<Answer> {
    let mut m = Message::new();
    m.unmarshal_binary(bytes).ok()?;
    let mut code = ErrorCodeAttribute::default();
    let mut relayed = RelayedAddress::default();
    let mut lifetime = Lifetime::default();
    let mut peer = PeerAddress::default();
    let mut data = Data::default();
    Some(Answer {
        method: m.typ.method,
        class: m.typ.class,
        code: code.get_from(&m).ok().map(|_| code.code.0),
        nonce: TextAttribute::get_from_as(&m, ATTR_NONCE).ok().map(|t| t.text),
        relayed: relayed.get_from(&m).ok().map(|_| SocketAddr::new(relayed.ip, relayed.port)),
        lifetime: lifetime.get_from(&m).ok().map(|_| lifetime.0),
        peer: peer.get_from(&m).ok().map(|_| SocketAddr::new(peer.ip, peer.port)),
        data: data.get_from(&m).ok().map(|_| data.0),
    })
}

/// A [`RelayIo`](super::core::RelayIo) that binds nothing and records what the core sends:
/// for driving [`TurnCore`](super::core::TurnCore) without sockets (tests, fuzzing).
#[derive(Default)]
pub struct RecordingIo {
    next: u64,
    pub to_client: Vec<(super::core::ClientKey, Vec<u8>)>,
    pub to_peer: Vec<(super::core::RelayId, SocketAddr, Vec<u8>)>,
    pub closed: Vec<super::core::RelayId>,
}

impl super::core::RelayIo for RecordingIo {
    fn bind_relay(&mut self, ip: std::net::IpAddr) -> std::io::Result<(super::core::RelayId, SocketAddr)> {
        self.next += 1;
        Ok((super::core::RelayId(self.next), SocketAddr::new(ip, 50_000u16.wrapping_add(self.next as u16))))
    }
    fn close_relay(&mut self, relay: super::core::RelayId) {
        self.closed.push(relay);
    }
    fn send_to_peer(&mut self, relay: super::core::RelayId, peer: SocketAddr, data: &[u8]) {
        self.to_peer.push((relay, peer, data.to_vec()));
    }
    fn send_to_client(&mut self, client: super::core::ClientKey, data: &[u8]) {
        self.to_client.push((client, data.to_vec()));
    }
}
