//! Embedded TURN (issue 8, in progress): configuration from `turn.conf` in coturn's vocabulary
//! and the relay peer policy (deny private/loopback/metadata by default). The server itself —
//! built on webrtc-rs's sans-IO TURN (`rtc::turn`), credentials checked on every request, quotas
//! and `max-bps` — comes next; nothing listens yet.

pub mod config;
pub mod policy;

pub use config::TurnConfig;
pub use policy::{IpRange, PeerPolicy};
