//! Which peer addresses a TURN allocation may relay to. Deny by default for every address that
//! reaches into the operator's own network or nowhere useful: a TURN relay is the classic way
//! into a private network (coturn CVE-2020-26262 let `0.0.0.0` and `[::1]` peers reach
//! localhost services; open relays reach cloud metadata at 169.254.169.254).
//!
//! IPv6 forms of IPv4 addresses (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
//! NAT64 `64:ff9b::/96`) are judged by the IPv4 address they carry, so `::ffff:127.0.0.1`
//! is loopback. `allowed-peer-ip` ranges win over denials; `denied-peer-ip` ranges add to them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An inclusive address range, as coturn writes them: `a.b.c.d`, `a.b.c.d-e.f.g.h`, or CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl IpRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.first, self.last, ip) {
            (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(x)) => a <= x && x <= b,
            (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(x)) => a <= x && x <= b,
            _ => false,
        }
    }

    fn cidr(base: IpAddr, prefix: u8) -> Result<IpRange, String> {
        match base {
            IpAddr::V4(v4) if prefix <= 32 => {
                let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
                let first = u32::from(v4) & mask;
                Ok(IpRange { first: IpAddr::V4(first.into()), last: IpAddr::V4((first | !mask).into()) })
            }
            IpAddr::V6(v6) if prefix <= 128 => {
                let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
                let first = u128::from(v6) & mask;
                Ok(IpRange { first: IpAddr::V6(first.into()), last: IpAddr::V6((first | !mask).into()) })
            }
            _ => Err(format!("prefix /{prefix} is too long for {base}")),
        }
    }
}

impl std::str::FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let ip = |t: &str| t.trim().parse::<IpAddr>().map_err(|_| format!("{t:?} is not an IP address"));
        if let Some((base, prefix)) = s.split_once('/') {
            let prefix = prefix.parse::<u8>().map_err(|_| format!("{prefix:?} is not a prefix length"))?;
            return IpRange::cidr(ip(base)?, prefix);
        }
        if let Some((a, b)) = s.split_once('-') {
            let (first, last) = (ip(a)?, ip(b)?);
            if first.is_ipv4() != last.is_ipv4() {
                return Err(format!("range {s:?} mixes IPv4 and IPv6"));
            }
            let range = IpRange { first, last };
            if !range.contains(first) || !range.contains(last) {
                return Err(format!("range {s:?} ends before it starts"));
            }
            return Ok(range);
        }
        let single = ip(s)?;
        Ok(IpRange { first: single, last: single })
    }
}

/// Ranges no relay may reach unless an `allowed-peer-ip` range covers them.
pub const DENIED_BY_DEFAULT: &[&str] = &[
    "0.0.0.0/8",      // "this network"; 0.0.0.0 reaches localhost on many stacks
    "10.0.0.0/8",     // private
    "100.64.0.0/10",  // carrier-grade NAT
    "127.0.0.0/8",    // loopback
    "169.254.0.0/16", // link-local, cloud metadata services
    "172.16.0.0/12",  // private
    "192.168.0.0/16", // private
    "224.0.0.0/4",    // multicast
    "240.0.0.0/4",    // reserved and broadcast
    "::/128",         // unspecified
    "::1/128",        // loopback
    "fc00::/7",       // unique local
    "fe80::/10",      // link-local
    "ff00::/8",       // multicast
];

/// The IPv4 address an IPv6 address stands for, if it is one of the embedding forms.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = v6.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let head = u128::from(v6) >> 32;
    // ::ffff:a.b.c.d (mapped), 64:ff9b::a.b.c.d (NAT64 well-known prefix, RFC 6052),
    // ::a.b.c.d (deprecated IPv4-compatible; ::, ::1 excluded, they are IPv6 themselves).
    let mapped = head == 0xffff;
    let nat64 = head == 0x0064_ff9b_0000_0000_0000_0000;
    let compatible = head == 0 && u32::from(tail) > 1;
    (mapped || nat64 || compatible).then_some(tail)
}

#[derive(Clone, Debug)]
pub struct PeerPolicy {
    denied: Vec<IpRange>,
    allowed: Vec<IpRange>,
}

impl PeerPolicy {
    /// The default deny list plus the operator's `denied`, with `allowed` taking precedence;
    /// `allow_loopback` (tests only) lifts the loopback denial.
    #[allow(clippy::expect_used, reason = "built-in literals, parsed by the tests")]
    pub fn new(denied: Vec<IpRange>, mut allowed: Vec<IpRange>, allow_loopback: bool) -> PeerPolicy {
        let mut all: Vec<IpRange> = DENIED_BY_DEFAULT.iter().map(|r| r.parse().expect("valid built-in range")).collect();
        all.extend(denied);
        if allow_loopback {
            allowed.push("127.0.0.0/8".parse().expect("literal"));
            allowed.push("::1".parse().expect("literal"));
        }
        PeerPolicy { denied: all, allowed }
    }

    /// Whether a relay may send to `ip`. Checked on CreatePermission, ChannelBind and every send.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.allowed.iter().any(|r| r.contains(ip)) {
            return true;
        }
        !self.denied.iter().any(|r| r.contains(ip))
    }
}

impl Default for PeerPolicy {
    fn default() -> Self {
        PeerPolicy::new(Vec::new(), Vec::new(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(p: &PeerPolicy, s: &str) -> bool {
        p.allows(s.parse().unwrap())
    }

    #[test]
    fn private_loopback_and_metadata_addresses_are_denied_by_default() {
        let p = PeerPolicy::default();
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(!allows(&p, ip), "{ip} must be denied");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:4860:4860::8888"] {
            assert!(allows(&p, ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn ipv6_forms_of_denied_ipv4_addresses_are_denied() {
        let p = PeerPolicy::default();
        for ip in ["::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1", "64:ff9b::7f00:1", "::127.0.0.1", "::ffff:0.0.0.0"] {
            assert!(!allows(&p, ip), "{ip} must be denied");
        }
        assert!(allows(&p, "::ffff:8.8.8.8"));
        assert!(allows(&p, "64:ff9b::808:808"));
    }

    #[test]
    fn allowed_ranges_win_and_denied_ranges_add() {
        let p = PeerPolicy::new(vec!["8.8.8.0/24".parse().unwrap()], vec!["10.0.0.5-10.0.0.9".parse().unwrap()], false);
        assert!(allows(&p, "10.0.0.7"));
        assert!(!allows(&p, "10.0.0.10"));
        assert!(!allows(&p, "8.8.8.8"));
        let lo = PeerPolicy::new(Vec::new(), Vec::new(), true);
        assert!(allows(&lo, "127.0.0.1") && allows(&lo, "::1") && allows(&lo, "::ffff:127.0.0.1"));
    }

    #[test]
    fn ranges_parse_like_coturn() {
        assert!("1.2.3.4".parse::<IpRange>().unwrap().contains("1.2.3.4".parse().unwrap()));
        assert!("1.2.3.9-1.2.3.4".parse::<IpRange>().is_err());
        assert!("1.2.3.4-::1".parse::<IpRange>().is_err());
        assert!("1.2.3.4/33".parse::<IpRange>().is_err());
        assert!("nope".parse::<IpRange>().is_err());
    }
}
