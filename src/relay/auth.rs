//! TURN credentials: the TURN REST scheme (coturn's `use-auth-secret`: username
//! `<unix-expiry>:<user>`, password `base64(HMAC-SHA1(secret, username))`) and static long-term
//! users (`lt-cred-mech` + `user=name:pass`). Owns minting (what voxrelay hands each session)
//! and the lookup of the long-term key a request's MESSAGE-INTEGRITY is checked against. Time is
//! an input (`unix_now`), never read here.

use std::sync::Arc;

use base64::Engine as _;
use rtc::crypto::{HashAlgorithm, HmacAlgorithm, RTCCryptoProvider};

use super::RelayConfig;

/// The REST scheme's separator between expiry and user (coturn's default, `-C` in uclient).
pub const REST_SEPARATOR: char = ':';

/// A candidate key for one request: the long-term key (MD5 of `user:realm:password`) and, for
/// REST credentials, the unix second the credential expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub key: Vec<u8>,
    pub expires_unix: Option<u64>,
    /// Whom quotas count against: the REST user part, or the static user name.
    pub quota_user: String,
}

/// Why no key could be found for a username.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Expired,
}

#[derive(Clone)]
pub struct Authenticator {
    crypto: Arc<dyn RTCCryptoProvider>,
    realm: String,
    secrets: Vec<String>,
    users: Vec<(String, String)>,
}

impl Authenticator {
    pub fn new(cfg: &RelayConfig) -> Authenticator {
        Authenticator {
            crypto: crypto_provider(),
            realm: cfg.realm.clone(),
            secrets: if cfg.use_auth_secret { cfg.static_auth_secrets.clone() } else { Vec::new() },
            users: if cfg.lt_cred_mech { cfg.users.clone() } else { Vec::new() },
        }
    }

    pub fn crypto(&self) -> &Arc<dyn RTCCryptoProvider> {
        &self.crypto
    }

    /// Every key `username` may have signed with (one per secret, so rotation works while both
    /// secrets are configured), or why there is none.
    pub fn candidates(&self, username: &str, unix_now: u64) -> Result<Vec<Credential>, Refusal> {
        let mut out = Vec::new();
        let mut expired = false;
        if !self.secrets.is_empty()
            && let Some((expiry, user)) = username.split_once(REST_SEPARATOR)
            && let Ok(expiry) = expiry.parse::<u64>()
        {
            if expiry <= unix_now {
                expired = true;
            } else {
                for secret in &self.secrets {
                    let password = rest_password(&*self.crypto, secret, username);
                    out.push(Credential {
                        key: self.long_term_key(username, &password),
                        expires_unix: Some(expiry),
                        quota_user: user.to_string(),
                    });
                }
            }
        }
        for (name, password) in &self.users {
            if name == username {
                out.push(Credential { key: self.long_term_key(username, password), expires_unix: None, quota_user: name.clone() });
            }
        }
        match (out.is_empty(), expired) {
            (false, _) => Ok(out),
            (true, true) => Err(Refusal::Expired),
            (true, false) => Err(Refusal::Unknown),
        }
    }

    fn long_term_key(&self, username: &str, password: &str) -> Vec<u8> {
        let text = format!("{username}:{}:{password}", self.realm);
        self.crypto.crypto().hash(HashAlgorithm::Md5, text.as_bytes()).unwrap_or_default()
    }
}

#[allow(clippy::expect_used, reason = "a build property, checked by every test that starts TURN")]
pub fn crypto_provider() -> Arc<dyn RTCCryptoProvider> {
    rtc::crypto::default_provider().expect("rtc is built with its ring crypto provider")
}

/// `base64(HMAC-SHA1(secret, username))`.
pub fn rest_password(crypto: &dyn RTCCryptoProvider, secret: &str, username: &str) -> String {
    let mut tag = [0u8; 20];
    let signed =
        crypto.crypto().new_hmac(HmacAlgorithm::Sha1, secret.as_bytes()).and_then(|mut mac| mac.sign(&[username.as_bytes()], &mut tag));
    debug_assert!(signed.is_ok(), "HMAC-SHA1 is supported by the ring provider");
    base64::engine::general_purpose::STANDARD.encode(tag)
}

/// A REST credential for `user`, valid until `expires_unix`: (username, password).
pub fn mint_rest(secret: &str, user: &str, expires_unix: u64) -> (String, String) {
    let username = format!("{expires_unix}{REST_SEPARATOR}{user}");
    let password = rest_password(&*crypto_provider(), secret, &username);
    (username, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest_config() -> RelayConfig {
        RelayConfig { use_auth_secret: true, static_auth_secrets: vec!["old".into(), "new".into()], ..RelayConfig::default() }
    }

    #[test]
    fn rest_password_matches_coturn_reference() {
        // Value computed with `printf %s '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64`.
        let (u, p) = mint_rest("secret", "alice", 1_700_000_000);
        assert_eq!(u, "1700000000:alice");
        assert_eq!(p, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }

    #[test]
    fn expired_rest_username_is_refused_and_rotation_gives_two_keys() {
        let a = Authenticator::new(&rest_config());
        assert_eq!(a.candidates("100:bob", 100), Err(Refusal::Expired));
        assert_eq!(a.candidates("bob", 100), Err(Refusal::Unknown));
        let keys = a.candidates("101:bob", 100).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!((keys[0].expires_unix, keys[0].quota_user.as_str()), (Some(101), "bob"));
    }

    #[test]
    fn static_users_have_no_expiry() {
        let cfg = RelayConfig { lt_cred_mech: true, users: vec![("alice".into(), "pw".into())], ..RelayConfig::default() };
        let keys = Authenticator::new(&cfg).candidates("alice", 0).unwrap();
        assert_eq!(keys[0].expires_unix, None);
        assert_eq!(keys[0].key.len(), 16);
    }
}
