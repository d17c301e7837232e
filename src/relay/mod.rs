//! Embedded TURN (issue 8): configuration from `turn.conf` in coturn's vocabulary, the relay
//! peer policy (deny private/loopback/metadata by default), REST and long-term credentials, and
//! the server: a sans-IO core ([`core`], on webrtc-rs's `rtc::stun`/`rtc::turn::proto` codecs)
//! driven by tokio sockets ([`server`]: UDP, TCP, TLS via [`tls`]).
//!
//! The relay parses what anyone on the internet sends: no `unwrap`/`expect` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod answer;
pub mod auth;
pub mod config;
pub mod core;
pub mod framing;
pub mod policy;
pub mod probe;
pub mod ratelimit;
pub mod server;
pub mod stats;
pub mod tls;

pub use config::RelayConfig;
pub use policy::{IpRange, PeerPolicy};
pub use server::{IceAdvert, RelayServer, start_from_file};
