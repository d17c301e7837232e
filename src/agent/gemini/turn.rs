//! Which response a model turn's output belongs to.
//!
//! Gemini answers an activity's end (or a tool response) by itself; our `StartResponse` is a
//! separate command that can reach the adapter after the model's first words (the provider's
//! reply and the next command race in the connection loop), and a client that creates
//! responses itself may ask later still. So the output of a turn no response has claimed yet is
//! held, bounded, until one does; a new user turn makes it stale.

use tracing::debug;

use crate::agent::AgentOutput;
use crate::agent::bridge::Link;

/// Audio frames held for a turn no response has claimed: 30 s of speech (≈ 1.4 MB). Past it
/// the turn is dropped: nobody has asked for it in that long.
pub const MAX_HELD_FRAMES: usize = 1500;

pub struct Turn {
    /// The response the output goes to; `None` while unclaimed.
    pub num: Option<u64>,
    /// Cancelled, or stale before anyone claimed it: its output is dropped.
    pub cancelled: bool,
    pub transcript: String,
    held: Vec<AgentOutput>,
    held_frames: usize,
}

impl Turn {
    pub fn new(num: Option<u64>) -> Self {
        Self { num, cancelled: false, transcript: String::new(), held: Vec::new(), held_frames: 0 }
    }

    /// Output goes to the turn's response, or waits for one to claim the turn.
    pub fn emit(&mut self, out: AgentOutput, link: &mut Link) {
        if self.cancelled {
            return;
        }
        let Some(num) = self.num else {
            if matches!(out, AgentOutput::Audio(_)) {
                if self.held_frames == MAX_HELD_FRAMES {
                    debug!("gemini-live: a model turn nobody asked for passed {MAX_HELD_FRAMES} frames; dropped");
                    self.drop_output();
                    return;
                }
                self.held_frames += 1;
            }
            self.held.push(out);
            return;
        };
        link.output(num, out);
    }

    /// Whether a response can still take this turn's output.
    pub fn claimable(&self) -> bool {
        self.num.is_none() && !self.cancelled
    }

    /// Response `num` takes the turn: what was held goes to it now, the rest as it comes.
    pub fn claim(&mut self, num: u64, link: &mut Link) {
        self.num = Some(num);
        for out in self.held.drain(..) {
            link.output(num, out);
        }
        self.held_frames = 0;
    }

    /// A new user turn began before any response claimed this one: nobody will.
    pub fn make_stale(&mut self) {
        if self.num.is_none() {
            self.drop_output();
        }
    }

    fn drop_output(&mut self) {
        self.cancelled = true;
        self.held = Vec::new();
        self.held_frames = 0;
    }
}
