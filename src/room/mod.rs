//! Rooms (the SFU). The forwarding plane's pure core decodes nothing and reads no clock, so it
//! is tested and benchmarked without a network:
//! - [`slot`]: one subscriber slot's RTP header rewrite (continuous SSRC/sequence/timestamp across
//!   speaker switches);
//! - [`speakers`]: who is speaking, from RFC 6464 levels, with hysteresis, and their ranking;
//! - [`selection`]: which speakers a subscriber's slots carry (sticky top-N);
//! - [`floor`]: group turn-taking for an agent (when a participant's turn reaches it).
//!
//! Around it: `state` (one room's decisions), `registry` (the rooms: joining, the API's commands), `task` (one room's loop), `agent`
//! (the AI participant's task) and `token_cli` (`voxrelay token`).

mod agent;
pub mod floor;
mod history;
mod phone;
mod server_track;
mod registry;
pub mod selection;
pub mod slot;
pub mod speakers;
mod state;
mod task;
pub mod token_cli;

pub use agent::{AgentBells, AgentParts};
pub use registry::{RoomLimits, RoomSettings, Rooms};

pub use slot::{Slot, SlotHeader, SourceHeader, TrackKey};
pub use speakers::{ActiveSpeakers, LevelWindow, SpeakerConfig};
