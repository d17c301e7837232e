//! A request one node passes to another (`forwarding`) carries the client's address,
//! signed with a key derived from the API key (every node of a cluster has the same), so the
//! owner applies its per-address limits and shares to the client, not to the forwarding node.
//! The signature covers the address and the minute (the current or the previous one is
//! accepted), so a captured header cannot be replayed for long.

use std::net::IpAddr;

use axum::http::HeaderMap;

pub const FORWARDED_FOR: &str = "x-voxrelay-forwarded-for";
pub const NODE_SIGNATURE: &str = "x-voxrelay-node-signature";

const KEY_CONTEXT: &[u8] = b"voxrelay node forwarding v1";

pub struct NodeKey(ring::hmac::Key);

impl NodeKey {
    pub fn new(api_key: &str) -> Self {
        let derived = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, api_key.as_bytes()), KEY_CONTEXT);
        NodeKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref()))
    }

    fn tag(&self, ip: &IpAddr, minute: u64) -> String {
        ring::hmac::sign(&self.0, format!("{ip}|{minute}").as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The headers that vouch for `ip` at `now` (unix seconds).
    pub fn vouch(&self, ip: IpAddr, now: u64) -> [(&'static str, String); 2] {
        [(FORWARDED_FOR, ip.to_string()), (NODE_SIGNATURE, self.tag(&ip, now / 60))]
    }

    /// The client address another node vouched for, if the request carries a valid voucher.
    pub fn vouched(&self, headers: &HeaderMap, now: u64) -> Option<IpAddr> {
        let ip: IpAddr = headers.get(FORWARDED_FOR)?.to_str().ok()?.parse().ok()?;
        let tag = headers.get(NODE_SIGNATURE)?.to_str().ok()?;
        let minute = now / 60;
        let valid =
            [minute, minute.saturating_sub(1)].iter().any(|m| crate::auth::constant_time_eq(self.tag(&ip, *m).as_bytes(), tag.as_bytes()));
        valid.then_some(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (axum::http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn only_a_node_with_the_same_key_vouches_and_only_for_a_minute_or_two() {
        let (key, other) = (NodeKey::new("sk_cluster"), NodeKey::new("sk_elsewhere"));
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let now = 1_700_000_000;
        let vouched = headers(&key.vouch(ip, now));
        assert_eq!(key.vouched(&vouched, now), Some(ip));
        assert_eq!(key.vouched(&vouched, now + 60), Some(ip), "the next minute still accepts it");
        assert_eq!(key.vouched(&vouched, now + 180), None, "a replay minutes later does not");
        assert_eq!(other.vouched(&vouched, now), None, "another cluster's key does not");
        let mut forged = vouched.clone();
        forged.insert(FORWARDED_FOR, "198.51.100.1".parse().unwrap());
        assert_eq!(key.vouched(&forged, now), None, "the address is what is signed");
    }
}
