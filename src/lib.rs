//! voxrelay: a native WebRTC media server with an AI voice pipeline.
//!
//! The tree reads edge → domain → media:
//! - `voxrelay-signaling` (the `signaling/` crate): HTTP API, wire types, auth, errors.
//! - this crate: orchestration. [`server`] starts everything; [`engine`] creates calls;
//!   [`call`] runs one call on tokio (peer connection, data channel, protocol state);
//!   [`peer`] is the webrtc-rs glue; [`agent`] holds what answers the caller.
//! - `voxrelay-media` (the `media/` crate): real-time audio on dedicated worker threads.
//!
//! Data path of one call: peer RTP → [`call`]'s track reader → ring → audio worker (jitter
//! buffer, Opus decode, resample, VAD, turn detection) → ring → call task → agent; agent
//! speech → ring → worker (resample, encode) → ring → call task → RTP to the peer.

pub mod agent;
pub mod api_key;
pub mod call;
pub mod client;
pub mod config;
pub mod engine;
pub mod loadgen;
pub mod metrics;
pub mod peer;
pub mod rtp;
pub mod server;
pub mod telephony;
pub mod turn;

pub use config::ServeConfig;

/// Picks ring as the TLS crypto provider for HTTPS/WSS clients (providers, the load generator).
/// ring is already built for WebRTC; reqwest asks for an explicit choice. Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
pub use server::{RunningServer, start};
