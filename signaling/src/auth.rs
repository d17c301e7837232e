//! Credentials: the server API key and the short-lived client secrets (`ek_...`) minted from it.
//! A client secret is bound to the session settings it was minted with and expires; it never
//! carries or reveals a provider key. Secrets live in memory (one node); an expired one is
//! refused exactly like an unknown one would be, but with its own code so clients can refresh.
//! Expiry limits when a secret may start a call: the call it started stays its own to `PATCH`
//! (trickle ICE, ICE restart) and end for [`Auth::call_rights`] after that (the longest a call
//! may last), so a browser whose network changes a minute into a call can still restart ICE.

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
/// How long after its expiry a secret may still manage the calls it started, by default: the
/// server's default longest call (`--max-call-duration`).
pub const DEFAULT_CALL_RIGHTS_S: u64 = 3600;

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

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SecretGrant {
    pub session_id: SessionId,
    pub config: SessionConfig,
    pub expires_at: u64,
    /// Several nodes: the node its calls are placed on (chosen when it was minted, the least
    /// loaded then), so "one call at a time per secret" holds across the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

fn expired() -> ApiError {
    ApiError::unauthorized("expired_client_secret", "the client secret has expired")
}

fn invalid_credential() -> ApiError {
    ApiError::unauthorized("invalid_api_key", "the API key or client secret is not valid")
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
    /// Seconds after its expiry a secret keeps its rights over the calls it started.
    call_rights: u64,
    /// Several nodes: where secrets minted here are published and secrets minted elsewhere are
    /// found.
    shared: std::sync::OnceLock<std::sync::Arc<dyn SharedSecrets>>,
}

/// Client secrets shared by the nodes of a cluster (the server implements it on Redis).
#[async_trait::async_trait]
pub trait SharedSecrets: Send + Sync {
    /// Keeps `grant` under `value` for `keep_s` seconds (past its expiry: see [`Auth::call_rights`]).
    async fn put(&self, value: &str, grant: &SecretGrant, keep_s: u64) -> Result<(), String>;
    async fn get(&self, value: &str) -> Result<Option<SecretGrant>, String>;
}

impl Auth {
    pub fn new(api_key: String) -> Self {
        Self {
            room_tokens: crate::room_token::RoomTokens::new(&api_key),
            node_key: crate::node_auth::NodeKey::new(&api_key),
            api_key,
            secrets: Mutex::new(HashMap::new()),
            call_rights: DEFAULT_CALL_RIGHTS_S,
            shared: std::sync::OnceLock::new(),
        }
    }

    /// How long after its expiry a secret may still `PATCH` and end the calls it started: the
    /// server's longest call (`--max-call-duration`; 0, no limit, keeps them a day).
    pub fn with_call_rights(mut self, max_call_s: u64) -> Self {
        self.call_rights = if max_call_s == 0 { 86_400 } else { max_call_s };
        self
    }

    pub fn call_rights(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.call_rights)
    }

    /// Shares client secrets with the other nodes of a cluster.
    pub fn share_secrets(&self, shared: std::sync::Arc<dyn SharedSecrets>) {
        let _ = self.shared.set(shared);
    }

    /// Publishes a secret this node minted, so every node accepts it, with the node its calls
    /// are placed on. Without the cluster's store (down) it still works on this node; that is
    /// logged.
    pub async fn publish(&self, value: &str, node: Option<String>) {
        let Some(shared) = self.shared.get() else { return };
        let grant = self.secrets.lock().unwrap_or_else(|p| p.into_inner()).get_mut(value).map(|g| {
            g.node = node;
            g.clone()
        });
        if let Some(grant) = grant
            && let Err(e) = shared.put(value, &grant, grant.expires_at.saturating_sub(unix_now()) + self.call_rights).await
        {
            tracing::warn!("a client secret could not be shared with the cluster (it works on this node only): {e}");
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
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        self.caller_token(bearer(headers)?).await
    }

    /// Who may `PATCH` or end a call: the API key, or a secret, which the engine then holds to
    /// the calls of its own session. Unlike [`Auth::caller`] a secret that expired less than
    /// [`Auth::call_rights`] ago still counts: its expiry only limits starting calls.
    pub async fn call_owner(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        self.unexpired(bearer(headers)?, self.call_rights).await
    }

    /// [`Auth::caller`] for a token that came another way (a WebSocket subprotocol). A secret
    /// this node does not know may have been minted by another node of the cluster.
    pub async fn caller_token(&self, token: &str) -> Result<Caller, ApiError> {
        self.unexpired(token, 0).await
    }

    /// The caller `token` names, a secret only until `grace_s` after its expiry.
    async fn unexpired(&self, token: &str, grace_s: u64) -> Result<Caller, ApiError> {
        let caller = self.known(token).await?;
        if let Caller::Secret(grant) = &caller
            && grant.expires_at + grace_s <= unix_now()
        {
            return Err(expired());
        }
        Ok(caller)
    }

    /// The API key, or the grant of a secret this node or the cluster knows (expired or not).
    async fn known(&self, token: &str) -> Result<Caller, ApiError> {
        if constant_time_eq(token.as_bytes(), self.api_key.as_bytes()) {
            return Ok(Caller::ApiKey);
        }
        if !token.starts_with("ek_") {
            return Err(invalid_credential());
        }
        let local = self.secrets.lock().unwrap_or_else(|p| p.into_inner()).get(token).cloned();
        let grant = match (local, self.shared.get()) {
            (Some(grant), _) => grant,
            (None, Some(shared)) => match shared.get(token).await {
                Ok(Some(grant)) => grant,
                Ok(None) => return Err(invalid_credential()),
                Err(e) => {
                    tracing::warn!("the cluster's client secrets cannot be read: {e}");
                    return Err(ApiError::cluster_unavailable("a client secret another node minted cannot be checked"));
                }
            },
            (None, None) => return Err(invalid_credential()),
        };
        Ok(Caller::Secret(grant))
    }

    pub fn mint(&self, session_id: SessionId, config: SessionConfig, ttl_s: u64) -> Result<(String, u64), ApiError> {
        let value = random_id("ek_");
        let now = unix_now();
        let expires_at = now + ttl_s;
        let mut secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        if secrets.len() >= MAX_LIVE_SECRETS {
            // Expired secrets are kept while they may still manage their calls (and a late
            // client gets `expired_client_secret` rather than `invalid_api_key`); at the cap
            // those past it go first, then the expired ones, never the live ones.
            secrets.retain(|_, g| g.expires_at + self.call_rights > now);
            if secrets.len() >= MAX_LIVE_SECRETS {
                secrets.retain(|_, g| g.expires_at > now);
            }
            if secrets.len() >= MAX_LIVE_SECRETS {
                return Err(ApiError::overloaded("too many live client secrets"));
            }
        }
        secrets.insert(value.clone(), SecretGrant { session_id, config, expires_at, node: None });
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

    #[tokio::test]
    async fn minted_secret_authorizes_until_it_expires() {
        let auth = Auth::new("sk_test".into());
        let (secret, _) = auth.mint(SessionId::random(), SessionConfig::default(), 60).unwrap();
        assert!(matches!(auth.caller(&headers(&secret)).await, Ok(Caller::Secret(_))));
        assert!(auth.expire_secret(&secret));
        assert_eq!(auth.caller(&headers(&secret)).await.unwrap_err().code, "expired_client_secret");
        assert_eq!(auth.caller(&headers("nope")).await.unwrap_err().code, "invalid_api_key");
        assert_eq!(auth.call_owner(&headers("nope")).await.unwrap_err().code, "invalid_api_key");
        assert!(matches!(auth.caller(&headers("sk_test")).await, Ok(Caller::ApiKey)));
    }

    /// Expiry stops a secret starting calls, not managing the one it started, until the
    /// longest call is over.
    #[tokio::test]
    async fn an_expired_secret_keeps_its_calls_for_the_longest_call() {
        let auth = Auth::new("sk_test".into()).with_call_rights(600);
        let session = SessionId::random();
        let (secret, _) = auth.mint(session.clone(), SessionConfig::default(), 60).unwrap();
        let set_expiry = |at: u64| auth.secrets.lock().unwrap().get_mut(&secret).unwrap().expires_at = at;
        set_expiry(unix_now() - 1);
        assert_eq!(auth.caller(&headers(&secret)).await.unwrap_err().code, "expired_client_secret", "no new call");
        match auth.call_owner(&headers(&secret)).await {
            Ok(Caller::Secret(grant)) => assert_eq!(grant.session_id, session, "its own session's calls only"),
            other => panic!("{other:?}"),
        }
        set_expiry(unix_now() - 600);
        assert_eq!(auth.call_owner(&headers(&secret)).await.unwrap_err().code, "expired_client_secret", "past the longest call");
        assert!(matches!(auth.call_owner(&headers("sk_test")).await, Ok(Caller::ApiKey)));
        assert_eq!(Auth::new("k".into()).with_call_rights(0).call_rights().as_secs(), 86_400, "no limit: a day");
    }

    /// The cluster's store as a map (or one that cannot be reached).
    #[derive(Default)]
    struct Shared {
        map: Mutex<HashMap<String, String>>,
        down: bool,
    }

    #[async_trait::async_trait]
    impl SharedSecrets for Shared {
        async fn put(&self, value: &str, grant: &SecretGrant, keep_s: u64) -> Result<(), String> {
            assert!(keep_s > grant.expires_at.saturating_sub(unix_now()) + 3000, "kept past expiry: {keep_s}");
            self.map.lock().unwrap().insert(value.into(), serde_json::to_string(grant).unwrap());
            Ok(())
        }
        async fn get(&self, value: &str) -> Result<Option<SecretGrant>, String> {
            if self.down {
                return Err("connection refused".into());
            }
            Ok(self.map.lock().unwrap().get(value).map(|g| serde_json::from_str(g).unwrap()))
        }
    }

    #[tokio::test]
    async fn a_secret_minted_on_one_node_works_on_another_with_its_settings() {
        let shared = std::sync::Arc::new(Shared::default());
        let (a, b) = (Auth::new("sk_cluster".into()), Auth::new("sk_cluster".into()));
        a.share_secrets(shared.clone());
        b.share_secrets(shared.clone());
        let mut config = SessionConfig::default();
        let body = serde_json::json!({"agent": "echo", "instructions": "be brief", "conversation": "conv_0123456789abcdef",
            "tools": [{"type": "function", "name": "clock", "description": "time", "parameters": {"type": "object"}}],
            "input_audio_format": "g711_ulaw", "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}});
        config.apply_beta(serde_json::from_value(body).unwrap()).unwrap();
        let (secret, _) = a.mint(SessionId::random(), config.clone(), 60).unwrap();
        assert!(b.caller_token(&secret).await.is_err(), "not published yet");
        a.publish(&secret, Some("node_Ab3dE6g8".into())).await;
        match b.caller_token(&secret).await {
            Ok(Caller::Secret(grant)) => {
                assert_eq!(grant.config, config, "the settings travel whole");
                assert_eq!(grant.node.as_deref(), Some("node_Ab3dE6g8"), "and where its calls go");
            }
            other => panic!("{other:?}"),
        }
        let down = Auth::new("sk_cluster".into());
        down.share_secrets(std::sync::Arc::new(Shared { down: true, ..Default::default() }));
        let e = down.caller_token(&secret).await.unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (503, "cluster_unavailable"));
        assert_eq!(down.caller_token("sk_wrong").await.unwrap_err().code, "invalid_api_key", "only ek_ tokens are looked up");
    }
}
