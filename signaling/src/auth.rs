//! Credentials: the server API key and the short-lived client secrets (`ek_...`) minted from it.
//! A client secret is bound to the session settings it was minted with and expires; it never
//! carries or reveals a provider key. Secrets live in memory (one node); an expired one is
//! refused exactly like an unknown one would be, but with its own code so clients can refresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use rand::Rng;

use crate::error::ApiError;
use crate::ids::SessionId;
use crate::wire::SessionConfig;

/// Beta `/v1/realtime/sessions` secrets live 60 s, GA ones 600 s by default (OpenAI's values).
pub const BETA_SECRET_TTL_S: u64 = 60;
pub const GA_SECRET_TTL_S: u64 = 600;
pub const GA_SECRET_TTL_RANGE_S: std::ops::RangeInclusive<u64> = 10..=7200;
/// Bounded so a client minting in a loop cannot grow memory without end; expired entries are
/// pruned first, so this binds only live secrets.
pub const MAX_LIVE_SECRETS: usize = 100_000;

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `prefix` + 24 random alphanumerics (≈143 bits): unguessable ids and secrets.
pub fn random_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..24).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect();
    format!("{prefix}{tail}")
}

/// Compares without an early exit, so response timing does not leak how much of a key matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing_credentials", "Authorization: Bearer <key> is required"))?;
    let value = value.to_str().map_err(|_| ApiError::unauthorized("invalid_credentials", "Authorization header is not valid text"))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("missing_credentials", "Authorization: Bearer <key> is required"))
}

#[derive(Clone, Debug)]
pub struct SecretGrant {
    pub session_id: SessionId,
    pub config: SessionConfig,
    pub expires_at: u64,
}

/// Who is calling: the operator (API key) or a client holding a minted secret.
#[derive(Clone, Debug)]
pub enum Caller {
    ApiKey,
    Secret(SecretGrant),
}

pub struct Auth {
    api_key: String,
    /// Room tokens are signed with a key derived from the API key.
    pub room_tokens: crate::room_token::RoomTokens,
    /// Vouches for the client address of requests passed between nodes.
    pub node_key: crate::node_auth::NodeKey,
    secrets: Mutex<HashMap<String, SecretGrant>>,
}

impl Auth {
    pub fn new(api_key: String) -> Self {
        Self {
            room_tokens: crate::room_token::RoomTokens::new(&api_key),
            node_key: crate::node_auth::NodeKey::new(&api_key),
            api_key,
            secrets: Mutex::new(HashMap::new()),
        }
    }

    pub fn require_api_key(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let token = bearer(headers)?;
        if constant_time_eq(token.as_bytes(), self.api_key.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("invalid_api_key", "the API key is not valid"))
        }
    }

    /// Accepts the API key or a live client secret.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        self.caller_token(bearer(headers)?)
    }

    /// [`Auth::caller`] for a token that came another way (a WebSocket subprotocol).
    pub fn caller_token(&self, token: &str) -> Result<Caller, ApiError> {
        if constant_time_eq(token.as_bytes(), self.api_key.as_bytes()) {
            return Ok(Caller::ApiKey);
        }
        if token.starts_with("ek_") {
            let secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(grant) = secrets.get(token) {
                if grant.expires_at <= unix_now() {
                    return Err(ApiError::unauthorized("expired_client_secret", "the client secret has expired"));
                }
                return Ok(Caller::Secret(grant.clone()));
            }
        }
        Err(ApiError::unauthorized("invalid_api_key", "the API key or client secret is not valid"))
    }

    pub fn mint(&self, session_id: SessionId, config: SessionConfig, ttl_s: u64) -> Result<(String, u64), ApiError> {
        let value = random_id("ek_");
        let now = unix_now();
        let expires_at = now + ttl_s;
        let mut secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        if secrets.len() >= MAX_LIVE_SECRETS {
            // Keep expired secrets for one extra TTL window so a late client still gets
            // `expired_client_secret` rather than `invalid_api_key`, but never past the cap.
            secrets.retain(|_, g| g.expires_at > now);
            if secrets.len() >= MAX_LIVE_SECRETS {
                return Err(ApiError::overloaded("too many live client secrets"));
            }
        }
        secrets.insert(value.clone(), SecretGrant { session_id, config, expires_at });
        Ok((value, expires_at))
    }

    #[cfg(test)]
    fn expire_secret(&self, value: &str) -> bool {
        let mut secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        match secrets.get_mut(value) {
            Some(g) => {
                g.expires_at = 0;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        h
    }

    #[test]
    fn minted_secret_authorizes_until_it_expires() {
        let auth = Auth::new("sk_test".into());
        let (secret, _) = auth.mint(SessionId::random(), SessionConfig::default(), 60).unwrap();
        assert!(matches!(auth.caller(&headers(&secret)), Ok(Caller::Secret(_))));
        assert!(auth.expire_secret(&secret));
        assert_eq!(auth.caller(&headers(&secret)).unwrap_err().code, "expired_client_secret");
        assert_eq!(auth.caller(&headers("nope")).unwrap_err().code, "invalid_api_key");
        assert!(matches!(auth.caller(&headers("sk_test")), Ok(Caller::ApiKey)));
    }
}
