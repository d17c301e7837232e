//! Routing datagrams on a shared socket to their connection.
//!
//! A peer's first datagrams are ICE connectivity checks: STUN Binding requests whose USERNAME is
//! `<our ufrag>:<their ufrag>` (RFC 8445 §7.2.2), so the ufrag in our answer names the
//! connection before its address is known. DTLS, SRTP and SCTP carry no such name: they are
//! routed by the remote address a check came from.
//!
//! A STUN request is always routed by its ufrag, and its address is (re)bound to that
//! connection: a peer whose NAT mapping changed, or an address reused by another client after
//! a call ended, follows the checks. The connection itself verifies MESSAGE-INTEGRITY; a check
//! with a known ufrag and a bad signature binds an address to a connection that then drops
//! what comes from it, never to another call.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

/// STUN's magic cookie (RFC 5389 §6).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const HEADER_LEN: usize = 20;
const ATTR_USERNAME: u16 = 0x0006;
/// Class bits of the message type (RFC 5389 §6): 0b00 in both is a request.
const CLASS_MASK: u16 = 0x0110;

/// The local ufrag named by a STUN request's USERNAME, or `None` for anything else (responses,
/// indications, non-STUN datagrams, malformed attributes).
pub fn stun_request_ufrag(datagram: &[u8]) -> Option<&str> {
    if datagram.len() < HEADER_LEN || datagram[0] & 0xc0 != 0 || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    let kind = u16::from_be_bytes([datagram[0], datagram[1]]);
    if kind & CLASS_MASK != 0 {
        return None;
    }
    let body_len = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    let body = datagram.get(HEADER_LEN..HEADER_LEN + body_len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let attr = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + len)?;
        if attr == ATTR_USERNAME {
            let (ours, _theirs) = std::str::from_utf8(value).ok()?.split_once(':')?;
            return (!ours.is_empty()).then_some(ours);
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// Connections on one socket, by ufrag and by remote address.
#[derive(Debug)]
pub struct Router<K> {
    by_ufrag: HashMap<String, K>,
    by_addr: HashMap<SocketAddr, K>,
}

impl<K> Default for Router<K> {
    fn default() -> Self {
        Router { by_ufrag: HashMap::new(), by_addr: HashMap::new() }
    }
}

impl<K: Copy + Eq + Hash> Router<K> {
    /// Routes checks naming `ufrag` to `key` (a new connection, or an ICE restart's new ufrag;
    /// the old one keeps working until [`Router::forget_ufrag`], as checks may still use it).
    /// Returns the connection that already had it, which a caller treats as a collision.
    pub fn add(&mut self, ufrag: &str, key: K) -> Option<K> {
        self.by_ufrag.insert(ufrag.to_owned(), key)
    }

    pub fn forget_ufrag(&mut self, ufrag: &str) {
        self.by_ufrag.remove(ufrag);
    }

    /// The connection `datagram` from `from` belongs to; `None` drops it (an unknown peer).
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<K> {
        if let Some(ufrag) = stun_request_ufrag(datagram) {
            let key = *self.by_ufrag.get(ufrag)?;
            if self.by_addr.get(&from) != Some(&key) {
                self.by_addr.insert(from, key);
            }
            return Some(key);
        }
        self.by_addr.get(&from).copied()
    }

    /// Takes a closed connection out: its ufrags and every address bound to it, which it
    /// returns (ICE-TCP: the streams to close).
    pub fn remove(&mut self, key: K) -> Vec<SocketAddr> {
        self.by_ufrag.retain(|_, k| *k != key);
        let mut gone = Vec::new();
        self.by_addr.retain(|addr, k| {
            let keep = *k != key;
            if !keep {
                gone.push(*addr);
            }
            keep
        });
        gone
    }

    /// Ufrags routed (one per connection, two during an ICE restart).
    pub fn ufrags(&self) -> usize {
        self.by_ufrag.len()
    }

    pub fn addresses(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN message of `kind` with a USERNAME attribute, then a 20-byte attribute standing in
    /// for MESSAGE-INTEGRITY.
    fn stun(kind: u16, username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        attrs.resize(attrs.len().div_ceil(4) * 4, 0);
        attrs.extend_from_slice(&0x0008u16.to_be_bytes());
        attrs.extend_from_slice(&20u16.to_be_bytes());
        attrs.extend_from_slice(&[0xab; 20]);
        let mut m = Vec::new();
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    const BINDING_REQUEST: u16 = 0x0001;
    const BINDING_SUCCESS: u16 = 0x0101;
    const SRTP: [u8; 12] = [0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];

    #[test]
    fn a_binding_request_names_our_ufrag() {
        assert_eq!(stun_request_ufrag(&stun(BINDING_REQUEST, "srvA:cli1")), Some("srvA"));
        // Odd lengths are padded to 4 bytes; the next attribute is still found.
        assert_eq!(stun_request_ufrag(&stun(BINDING_REQUEST, "abcde:f")), Some("abcde"));
    }

    #[test]
    fn responses_media_and_garbage_name_nothing() {
        assert_eq!(stun_request_ufrag(&stun(BINDING_SUCCESS, "srvA:cli1")), None);
        assert_eq!(stun_request_ufrag(&SRTP), None);
        assert_eq!(stun_request_ufrag(&stun(BINDING_REQUEST, "no-colon")), None);
        assert_eq!(stun_request_ufrag(&stun(BINDING_REQUEST, ":theirs")), None);
        let mut short = stun(BINDING_REQUEST, "srvA:cli1");
        short.truncate(30);
        assert_eq!(stun_request_ufrag(&short), None);
        let mut overlong = stun(BINDING_REQUEST, "srvA:cli1");
        overlong[23] = 200; // USERNAME claims more bytes than the message has
        assert_eq!(stun_request_ufrag(&overlong), None);
        assert_eq!(stun_request_ufrag(&[]), None);
    }

    #[test]
    fn media_follows_the_address_a_check_came_from() {
        let mut router = Router::default();
        router.add("srvA", 1u32);
        router.add("srvB", 2u32);
        assert_eq!(router.route(addr(5000), &SRTP), None, "unknown peers are dropped");
        assert_eq!(router.route(addr(5000), &stun(BINDING_REQUEST, "srvA:x")), Some(1));
        assert_eq!(router.route(addr(6000), &stun(BINDING_REQUEST, "srvB:y")), Some(2));
        assert_eq!(router.route(addr(5000), &SRTP), Some(1));
        assert_eq!(router.route(addr(6000), &SRTP), Some(2));
        assert_eq!(router.route(addr(5000), &stun(BINDING_REQUEST, "srvC:z")), None, "an unknown ufrag");
        assert_eq!(router.route(addr(5000), &SRTP), Some(1), "does not unbind the address");
    }

    #[test]
    fn an_address_moves_with_the_checks() {
        let mut router = Router::default();
        router.add("srvA", 1u32);
        router.add("srvB", 2u32);
        router.route(addr(5000), &stun(BINDING_REQUEST, "srvA:x"));
        // Call 1 ended and a new client got the same address and port.
        router.remove(1);
        assert_eq!(router.route(addr(5000), &SRTP), None);
        assert_eq!(router.route(addr(5000), &stun(BINDING_REQUEST, "srvA:x")), None);
        assert_eq!(router.route(addr(5000), &stun(BINDING_REQUEST, "srvB:y")), Some(2));
        assert_eq!(router.route(addr(5000), &SRTP), Some(2));
        assert_eq!((router.ufrags(), router.addresses()), (1, 1));
    }

    #[test]
    fn an_ice_restart_routes_both_ufrags_until_the_old_one_is_forgotten() {
        let mut router = Router::default();
        router.add("old", 1u32);
        assert_eq!(router.add("new", 1), None);
        assert_eq!(router.route(addr(5000), &stun(BINDING_REQUEST, "old:x")), Some(1));
        assert_eq!(router.route(addr(5001), &stun(BINDING_REQUEST, "new:x")), Some(1));
        router.forget_ufrag("old");
        assert_eq!(router.route(addr(5002), &stun(BINDING_REQUEST, "old:x")), None);
        assert_eq!(router.add("new", 2), Some(1), "a colliding ufrag is reported");
    }
}
