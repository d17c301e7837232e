//! One UDP socket for many peer connections (issue 20): the pieces of a loop that owns a socket
//! and drives every connection's sans-IO core from one thread, instead of a socket and a driver
//! task per call (BENCHMARKS.md "The transport prototype": 40–47 % less transport CPU).
//!
//! - `route` — which connection a datagram belongs to (remote address, or the ICE ufrag a STUN
//!   request names before its address is known).
//! - `deadlines` — the earliest protocol deadline among all connections, and which are due,
//!   without scanning them.
//!
//! Pure: datagrams, addresses and instants come in as arguments. The server's loops
//! (`transport::webrtc::rtc_loop`) and `benches/transport_loop.rs` drive webrtc-rs's `rtc` core
//! with them.

pub mod deadlines;
pub mod route;

pub use deadlines::Deadlines;
pub use route::{Router, stun_request_ufrag};
