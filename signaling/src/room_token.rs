//! Room tokens (PROTOCOL.md §4): JWTs, HS256, that name a participant and what it may do in
//! one room. Signed with a key derived from the server's API key, so the server needs no token
//! store, and an application holding the API key can mint tokens itself (the derivation is
//! documented in the README).
//!
//! Time is an input (`now`, Unix seconds), as everywhere a decision depends on it: the library's
//! own clock checks are off and [`RoomTokens::verify`] checks `exp`/`nbf` itself.
//!
//! The JWT encoding, parsing and header checks are `jsonwebtoken`'s. Its bundled crypto
//! backends would add RSA/ECDSA crates this server never uses, so HS256 is provided here over
//! `ring::hmac` (already in the tree), as a `jsonwebtoken` crypto provider.

use std::sync::Once;

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{ErrorKind, new_error};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::ids::{ParticipantId, RoomName};

/// Default lifetime of a minted token (PROTOCOL.md §4).
pub const DEFAULT_TTL_S: u64 = 3600;
/// Longest lifetime a mint may ask for: a day. Longer-lived credentials belong to the API key.
pub const MAX_TTL_S: u64 = 86_400;
/// Tokens longer than this are refused before parsing (a real one is ≈ 400 bytes).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// The context string of the key derivation: HMAC-SHA256(API key, this).
pub const KEY_CONTEXT: &[u8] = b"voxrelay room tokens v1";

/// What a participant may do in its room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomGrant {
    /// The room's name.
    pub name: RoomName,
    pub publish: bool,
    pub subscribe: bool,
    pub publish_data: bool,
    pub admin: bool,
}

/// The claims of a room token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomClaims {
    /// The participant's identity.
    pub sub: ParticipantId,
    /// Display name (defaults to the identity).
    pub name: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub room: RoomGrant,
}

impl RoomGrant {
    /// PROTOCOL.md §4's defaults: publish, subscribe and publish_data; not admin.
    pub fn default_for(room: RoomName) -> Self {
        RoomGrant { name: room, publish: true, subscribe: true, publish_data: true, admin: false }
    }
}

impl RoomClaims {
    /// Claims for `identity`, valid from `now` for `ttl_s` seconds.
    pub fn new(identity: ParticipantId, name: String, grant: RoomGrant, now: u64, ttl_s: u64) -> Self {
        RoomClaims { sub: identity, name, iat: now, nbf: now, exp: now + ttl_s, room: grant }
    }
}

/// Mints and verifies room tokens.
pub struct RoomTokens {
    key: [u8; 32],
}

impl RoomTokens {
    pub fn new(api_key: &str) -> Self {
        install_provider();
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, api_key.as_bytes()), KEY_CONTEXT);
        let mut key = [0u8; 32];
        key.copy_from_slice(tag.as_ref());
        Self { key }
    }

    pub fn mint(&self, claims: &RoomClaims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(&self.key))
            .map_err(|e| ApiError::internal(format!("signing a room token: {e}")))
    }

    /// The claims of `token` if it is well formed, signed by this server and valid at `now`;
    /// 401 otherwise. Whether it fits the room and action asked for is [`RoomClaims::require`]'s.
    pub fn verify(&self, token: &str, now: u64) -> Result<RoomClaims, ApiError> {
        let invalid = |why: &str| ApiError::unauthorized("invalid_room_token", format!("the room token is not valid: {why}"));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("too long"));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        let data =
            jsonwebtoken::decode::<RoomClaims>(token, &DecodingKey::from_secret(&self.key), &validation).map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => invalid("bad signature"),
                ErrorKind::InvalidAlgorithm => invalid("not HS256"),
                _ => invalid(&e.to_string()),
            })?;
        let claims = data.claims;
        // Names are checked where they enter; a token minted elsewhere with the derived key
        // enters here.
        ParticipantId::parse(claims.sub.as_str()).map_err(|_| invalid("sub is not a valid identity"))?;
        RoomName::parse(claims.room.name.as_str()).map_err(|_| invalid("room.name is not a valid room name"))?;
        if now >= claims.exp {
            return Err(ApiError::unauthorized("room_token_expired", "the room token has expired"));
        }
        if now < claims.nbf {
            return Err(ApiError::unauthorized("room_token_not_yet_valid", "the room token is not valid yet (nbf is in the future)"));
        }
        Ok(claims)
    }
}

/// An action a room token may grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomAction {
    /// Joining at all (any grant will do: a participant may only listen, or only send data).
    Join,
    Publish,
    Subscribe,
    PublishData,
    Admin,
}

impl RoomClaims {
    /// 403 unless the token is for `room` and grants `action`.
    pub fn require(&self, room: &RoomName, action: RoomAction) -> Result<(), ApiError> {
        if self.room.name != *room {
            return Err(ApiError::forbidden(
                "wrong_room",
                format!("this token is for room {:?}, not {:?}", self.room.name.as_str(), room.as_str()),
            ));
        }
        let g = &self.room;
        let (granted, name) = match action {
            RoomAction::Join => (g.publish || g.subscribe || g.publish_data || g.admin, "any grant"),
            RoomAction::Publish => (g.publish, "publish"),
            RoomAction::Subscribe => (g.subscribe, "subscribe"),
            RoomAction::PublishData => (g.publish_data, "publish_data"),
            RoomAction::Admin => (g.admin, "admin"),
        };
        if granted { Ok(()) } else { Err(ApiError::forbidden("grant_missing", format!("the room token lacks the {name} grant"))) }
    }
}

/// HS256 over ring, installed once per process (jsonwebtoken keeps one provider per process;
/// a host application that installed its own first keeps it, and then HS256 is its business).
fn install_provider() {
    static ONCE: Once = Once::new();
    static PROVIDER: CryptoProvider =
        CryptoProvider { signer_factory: hs256_signer, verifier_factory: hs256_verifier, jwk_utils: JwkUtils::new_unimplemented() };
    ONCE.call_once(|| {
        let _ = PROVIDER.install_default();
    });
}

struct Hs256(ring::hmac::Key);

fn hs256_signer(alg: &Algorithm, key: &EncodingKey) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    if *alg != Algorithm::HS256 {
        return Err(new_error(ErrorKind::InvalidAlgorithm));
    }
    Ok(Box::new(Hs256(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.try_get_hmac_secret()?))))
}

fn hs256_verifier(alg: &Algorithm, key: &DecodingKey) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    if *alg != Algorithm::HS256 {
        return Err(new_error(ErrorKind::InvalidAlgorithm));
    }
    Ok(Box::new(Hs256(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.try_get_hmac_secret()?))))
}

impl signature::Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(ring::hmac::sign(&self.0, msg).as_ref().to_vec())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl signature::Verifier<Vec<u8>> for Hs256 {
    // ring compares in constant time.
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        ring::hmac::verify(&self.0, msg, signature).map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn claims(room: &str) -> RoomClaims {
        RoomClaims {
            sub: ParticipantId::parse("alice").unwrap(),
            name: "Alice".into(),
            iat: NOW,
            nbf: NOW,
            exp: NOW + 60,
            room: RoomGrant { name: RoomName::parse(room).unwrap(), publish: true, subscribe: true, publish_data: false, admin: false },
        }
    }

    #[test]
    fn a_minted_token_verifies_within_its_lifetime_only() {
        let tokens = RoomTokens::new("sk_test");
        let token = tokens.mint(&claims("standup")).unwrap();
        assert_eq!(tokens.verify(&token, NOW).unwrap(), claims("standup"));
        assert_eq!(tokens.verify(&token, NOW + 59).unwrap().sub.as_str(), "alice");
        assert_eq!(tokens.verify(&token, NOW + 60).unwrap_err().code, "room_token_expired");
        assert_eq!(tokens.verify(&token, NOW - 1).unwrap_err().code, "room_token_not_yet_valid");
    }

    #[test]
    fn tampered_foreign_and_malformed_tokens_are_refused() {
        let token = RoomTokens::new("sk_test").mint(&claims("standup")).unwrap();
        let other_key = RoomTokens::new("sk_other");
        let e = other_key.verify(&token, NOW).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (401, "invalid_room_token"));
        // Swap the payload for one granting admin: the signature no longer matches.
        let mut forged = claims("standup");
        forged.room.admin = true;
        let forged_payload = other_key.mint(&forged).unwrap().split('.').nth(1).unwrap().to_string();
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(RoomTokens::new("sk_test").verify(&tampered, NOW).unwrap_err().code, "invalid_room_token");
        for bad in ["", "abc", "a.b.c", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert_eq!(RoomTokens::new("sk_test").verify(bad, NOW).unwrap_err().code, "invalid_room_token", "{bad:?}");
        }
        // alg "none" (an unsigned token) is never accepted.
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        assert_eq!(RoomTokens::new("sk_test").verify(&unsigned, NOW).unwrap_err().code, "invalid_room_token");
    }

    #[test]
    fn grants_are_checked_per_room_and_action() {
        let c = claims("standup");
        let standup = RoomName::parse("standup").unwrap();
        assert!(c.require(&standup, RoomAction::Join).is_ok());
        assert!(c.require(&standup, RoomAction::Publish).is_ok());
        let e = c.require(&standup, RoomAction::PublishData).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (403, "grant_missing"));
        let e = c.require(&RoomName::parse("other").unwrap(), RoomAction::Join).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (403, "wrong_room"));
    }
}
