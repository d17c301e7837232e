//! Rooms (the SFU), built up in steps. Landed so far: the forwarding plane's pure core, which
//! decodes nothing and reads no clock, so it is tested and benchmarked without a network:
//! - [`slot`]: one subscriber slot's RTP header rewrite (continuous SSRC/sequence/timestamp across
//!   speaker switches);
//! - [`speakers`]: who is speaking, from RFC 6464 levels, with hysteresis, and their ranking;
//! - [`selection`]: which speakers a subscriber's slots carry (sticky top-N).
//!
//! Next (issue 17): participants joining over the WebRTC transport with room tokens, the room
//! task that feeds publishers' packets through these three and the subscribers' packet sinks,
//! room events and the room API.

mod registry;
pub mod selection;
pub mod slot;
pub mod speakers;
mod state;
pub mod token_cli;

pub use registry::{RoomLimits, RoomSettings, Rooms};

pub use slot::{Slot, SlotHeader, SourceHeader, TrackKey};
pub use speakers::{ActiveSpeakers, LevelWindow, SpeakerConfig};
