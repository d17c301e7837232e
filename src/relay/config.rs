//! `turn.conf`: the embedded TURN server's settings in coturn's vocabulary, so operators
//! configure it the way they already know. Lines are `key=value`, `key value` or a bare `key`
//! for flags; `#` starts a comment. A bad value refuses to start with `turn.conf:LINE: what is
//! wrong`; an unknown key is a warning that names it (coturn has many keys we do not need).

use std::net::IpAddr;
use std::path::PathBuf;

use super::policy::{IpRange, PeerPolicy};

#[derive(Clone, Debug, PartialEq)]
pub struct RelayConfig {
    pub listening_ips: Vec<IpAddr>,
    pub listening_port: u16,
    pub tls_listening_port: u16,
    pub cert: Option<PathBuf>,
    pub pkey: Option<PathBuf>,
    pub realm: String,
    /// TURN REST credentials (username `<unix-expiry>:<user>`, password
    /// base64(HMAC-SHA1(secret, username))).
    pub use_auth_secret: bool,
    pub static_auth_secrets: Vec<String>,
    /// Long-term credentials from `user=name:pass` lines.
    pub lt_cred_mech: bool,
    pub users: Vec<(String, String)>,
    pub min_port: u16,
    pub max_port: u16,
    /// `public` or `public/private` (behind 1:1 NAT).
    pub external_ips: Vec<(IpAddr, Option<IpAddr>)>,
    pub relay_ips: Vec<IpAddr>,
    pub denied_peer_ips: Vec<IpRange>,
    pub allowed_peer_ips: Vec<IpRange>,
    /// Tests only: lets relays reach 127.0.0.0/8 and ::1.
    pub allow_loopback_peers: bool,
    /// Allocations one user may hold at once. 12 by default: one leaked credential must not be
    /// able to exhaust the relay port range.
    pub user_quota: u32,
    /// Allocations the whole server may hold (0 = no limit beyond the port range).
    pub total_quota: u32,
    /// Bytes per second per allocation (0 = unlimited).
    pub max_bps: u64,
    pub no_udp: bool,
    pub no_tcp: bool,
    pub no_tls: bool,
    /// Open TCP + TLS client connections at most (voxrelay's key `max-tcp-connections`; coturn
    /// has none). Each costs a task and a file descriptor; beyond it new ones are closed at once.
    pub max_tcp_connections: usize,
    /// A TCP/TLS connection that has not sent one complete STUN message by then is closed, so
    /// silent connections cannot hold the slots above (not in the file: tests shorten it).
    pub tcp_hello_timeout: std::time::Duration,
}

/// Default for `max-tcp-connections`: well under the common 1024 soft file-descriptor limit
/// minus the media sockets.
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 512;

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listening_ips: Vec::new(),
            listening_port: 3478,
            tls_listening_port: 5349,
            cert: None,
            pkey: None,
            realm: "voxrelay".into(),
            use_auth_secret: false,
            static_auth_secrets: Vec::new(),
            lt_cred_mech: false,
            users: Vec::new(),
            min_port: 49152,
            max_port: 65535,
            external_ips: Vec::new(),
            relay_ips: Vec::new(),
            denied_peer_ips: Vec::new(),
            allowed_peer_ips: Vec::new(),
            allow_loopback_peers: false,
            user_quota: 12,
            total_quota: 0,
            max_bps: 0,
            no_udp: false,
            no_tcp: false,
            no_tls: false,
            max_tcp_connections: DEFAULT_MAX_TCP_CONNECTIONS,
            tcp_hello_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// A parsed file and the warnings it produced (unknown keys).
#[derive(Debug)]
pub struct Parsed {
    pub config: RelayConfig,
    pub warnings: Vec<String>,
}

impl RelayConfig {
    pub fn peer_policy(&self) -> PeerPolicy {
        PeerPolicy::new(self.denied_peer_ips.clone(), self.allowed_peer_ips.clone(), self.allow_loopback_peers)
    }

    /// Parses the text of a config file; `name` is used in messages (`turn.conf:12: ...`).
    pub fn parse(name: &str, text: &str) -> Result<Parsed, String> {
        let mut c = RelayConfig::default();
        let mut warnings = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = |msg: String| format!("{name}:{}: {msg}", idx + 1);
            let line = line.trim_start_matches("--");
            let (key, value) = match line.split_once(['=', ' ', '\t']) {
                Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                None => (line, None),
            };
            let need = || value.filter(|v| !v.is_empty()).ok_or_else(|| at(format!("{key} needs a value")));
            let ip = || need()?.parse::<IpAddr>().map_err(|_| at(format!("{key}: {:?} is not an IP address", value.unwrap_or(""))));
            let port = || {
                let v = need()?;
                v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| at(format!("{key}: {v:?} is not a port (1-65535)")))
            };
            let number = || {
                let v = need()?;
                v.parse::<u64>().map_err(|_| at(format!("{key}: {v:?} is not a non-negative integer")))
            };
            let flag = || match value {
                None | Some("") | Some("1") | Some("true") | Some("yes") | Some("on") => Ok(true),
                Some("0") | Some("false") | Some("no") | Some("off") => Ok(false),
                Some(v) => Err(at(format!("{key}: {v:?} is not a flag value (omit it, or true/false)"))),
            };
            let range = || need()?.parse::<IpRange>().map_err(|e| at(format!("{key}: {e}")));
            match key {
                "listening-ip" => c.listening_ips.push(ip()?),
                "listening-port" => c.listening_port = port()?,
                "tls-listening-port" => c.tls_listening_port = port()?,
                "cert" => c.cert = Some(PathBuf::from(need()?)),
                "pkey" => c.pkey = Some(PathBuf::from(need()?)),
                "realm" => c.realm = need()?.to_string(),
                "use-auth-secret" => c.use_auth_secret = flag()?,
                "static-auth-secret" => c.static_auth_secrets.push(need()?.to_string()),
                "lt-cred-mech" => c.lt_cred_mech = flag()?,
                "user" => {
                    let v = need()?;
                    let (user, pass) = v.split_once(':').ok_or_else(|| at(format!("user: expected name:password, got {v:?}")))?;
                    if user.is_empty() || pass.is_empty() {
                        return Err(at("user: name and password must not be empty".into()));
                    }
                    c.users.push((user.to_string(), pass.to_string()));
                }
                "min-port" => c.min_port = port()?,
                "max-port" => c.max_port = port()?,
                "external-ip" => {
                    let v = need()?;
                    let parse = |t: &str| t.parse::<IpAddr>().map_err(|_| at(format!("external-ip: {t:?} is not an IP address")));
                    let pair = match v.split_once('/') {
                        Some((public, private)) => (parse(public)?, Some(parse(private)?)),
                        None => (parse(v)?, None),
                    };
                    c.external_ips.push(pair);
                }
                "relay-ip" => c.relay_ips.push(ip()?),
                "denied-peer-ip" => c.denied_peer_ips.push(range()?),
                "allowed-peer-ip" => c.allowed_peer_ips.push(range()?),
                "allow-loopback-peers" => c.allow_loopback_peers = flag()?,
                "user-quota" => c.user_quota = u32::try_from(number()?).map_err(|_| at("user-quota is too large".into()))?,
                "total-quota" => c.total_quota = u32::try_from(number()?).map_err(|_| at("total-quota is too large".into()))?,
                "max-bps" => c.max_bps = number()?,
                "max-tcp-connections" => {
                    c.max_tcp_connections = usize::try_from(number()?).ok().filter(|n| *n > 0).ok_or_else(|| at("max-tcp-connections must be at least 1".into()))?
                }
                "no-udp" => c.no_udp = flag()?,
                "no-tcp" => c.no_tcp = flag()?,
                "no-tls" => c.no_tls = flag()?,
                other => warnings.push(format!("{name}:{}: unknown key {other:?} ignored", idx + 1)),
            }
        }
        c.validate(name)?;
        Ok(Parsed { config: c, warnings })
    }

    fn validate(&self, name: &str) -> Result<(), String> {
        if self.min_port > self.max_port {
            return Err(format!("{name}: min-port {} is above max-port {}", self.min_port, self.max_port));
        }
        if self.use_auth_secret && self.static_auth_secrets.is_empty() {
            return Err(format!("{name}: use-auth-secret needs a static-auth-secret"));
        }
        if self.lt_cred_mech && self.users.is_empty() {
            return Err(format!("{name}: lt-cred-mech needs at least one user=name:password"));
        }
        if !self.use_auth_secret && !self.lt_cred_mech {
            return Err(format!("{name}: choose use-auth-secret (TURN REST credentials) or lt-cred-mech; an open relay is not allowed"));
        }
        if !self.no_tls && (self.cert.is_some() != self.pkey.is_some()) {
            return Err(format!("{name}: cert and pkey go together"));
        }
        if self.no_udp && self.no_tcp && (self.no_tls || self.cert.is_none()) {
            return Err(format!("{name}: no-udp, no-tcp and no TLS certificate leave no transport"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_turn_conf_parses() {
        let text = include_str!("../../turn.conf");
        let parsed = RelayConfig::parse("turn.conf", text).unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        assert!(parsed.config.use_auth_secret);
        assert_eq!(parsed.config.listening_port, 3478);
        assert!(!parsed.config.allow_loopback_peers);
    }

    #[test]
    fn coturn_style_lines_parse() {
        let text = "# comment\nlistening-port=3479\nrealm example.org\nuse-auth-secret\nstatic-auth-secret=s3cret\n\
                    lt-cred-mech\nuser=alice:pw\nexternal-ip=203.0.113.7/10.0.0.7\ndenied-peer-ip=8.8.8.0-8.8.8.255\n\
                    allowed-peer-ip=10.0.0.0/24\nuser-quota=3\nno-tls\n--max-bps=64000\n";
        let c = RelayConfig::parse("t.conf", text).unwrap().config;
        assert_eq!((c.listening_port, c.realm.as_str(), c.user_quota, c.max_bps), (3479, "example.org", 3, 64000));
        assert_eq!(c.users, vec![("alice".to_string(), "pw".to_string())]);
        assert_eq!(c.external_ips[0].1, Some("10.0.0.7".parse().unwrap()));
        assert!(c.no_tls && c.use_auth_secret && c.lt_cred_mech);
        let policy = c.peer_policy();
        assert!(policy.allows("10.0.0.9".parse().unwrap()));
        assert!(!policy.allows("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn bad_values_name_the_line_and_unknown_keys_warn() {
        let base = "use-auth-secret\nstatic-auth-secret=x\n";
        let err = RelayConfig::parse("turn.conf", &format!("{base}listening-port=99999\n")).unwrap_err();
        assert_eq!(err, "turn.conf:3: listening-port: \"99999\" is not a port (1-65535)");
        let err = RelayConfig::parse("turn.conf", &format!("{base}denied-peer-ip=1.2.3\n")).unwrap_err();
        assert!(err.starts_with("turn.conf:3: denied-peer-ip:"), "{err}");
        let parsed = RelayConfig::parse("turn.conf", &format!("{base}fingerprint\n")).unwrap();
        assert_eq!(parsed.warnings, vec!["turn.conf:3: unknown key \"fingerprint\" ignored".to_string()]);
        assert!(RelayConfig::parse("turn.conf", "realm=x\n").unwrap_err().contains("open relay"));
        assert!(RelayConfig::parse("turn.conf", "use-auth-secret\n").unwrap_err().contains("static-auth-secret"));
    }
}
