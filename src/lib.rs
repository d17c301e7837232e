//! voxrelay: a native WebRTC media server with an AI voice pipeline.
//!
//! The tree reads edge → domain → media:
//! - `voxrelay-signaling` (the `signaling/` crate): HTTP API, wire types, auth, errors.
//! - this crate: orchestration. [`server`] starts everything; [`engine`] starts calls after
//!   [`admission`] lets them in; [`transport`] carries a person's audio and control in and out
//!   (WebRTC, plain RTP, phone streams; the only place that knows a wire); [`call`] runs one
//!   call on tokio over any transport (protocol state in `call::Conversation`); [`agent`] holds
//!   what answers the caller; [`relay`] is the embedded TURN server; [`room`] is the SFU's
//!   forwarding core (slots, active speakers); [`store`] is the call history (SQLite).
//! - `voxrelay-media` (the `media/` crate): real-time audio on dedicated worker threads.
//!
//! Data path of one call: transport reader → ring → audio worker (jitter buffer, decode,
//! resample, VAD, turn detection) → ring → call task → agent; agent speech → ring → worker
//! (resample, mix, encode) → ring → call task → the transport's packet sink.
//! ARCHITECTURE.md has the picture.

pub mod admission;
pub mod agent;
pub mod api_key;
pub mod call;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod listener;
pub mod loadgen;
pub mod metrics;
pub mod relay;
pub mod room;
pub mod server;
pub mod store;
pub mod talk;
pub mod transport;

/// The WebRTC client (the load generator's and the tests' peer).
pub use transport::webrtc::client;

pub use config::ServeConfig;

/// Picks ring as the TLS crypto provider for HTTPS/WSS clients (providers, the load generator).
/// ring is already built for WebRTC; reqwest asks for an explicit choice. Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
pub use server::{RunningServer, start};
