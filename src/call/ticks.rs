//! A call's wake-ups from its audio worker: the two 5 ms slots of the worker's tick in which its
//! session's halves run (the watch channels are made and rung by `engine::bells`).

use std::sync::Arc;

use tokio::sync::watch;
use voxrelay_media::{OUTBOUND_SLOTS, SessionStats};

/// One call's view of its worker's bell.
pub struct SessionTicks {
    slots: Vec<watch::Receiver<u64>>,
    stats: Arc<SessionStats>,
}

impl SessionTicks {
    /// `slots`: one receiver per slot of the worker's tick, in slot order.
    pub fn new(slots: Vec<watch::Receiver<u64>>, stats: Arc<SessionStats>) -> Self {
        SessionTicks { slots, stats }
    }

    /// Waits until the worker ran one of the session's halves (or did since the last call).
    /// False once the bell is gone. The session's slot may move (`TickPhase`, at most once a
    /// second): the worker publishes it before ringing, so the next wait is on the new slots
    /// (after one early return for a slot rung while the call was not listening to it).
    pub async fn next_half(&mut self) -> bool {
        if self.slots.len() <= OUTBOUND_SLOTS as usize {
            return false;
        }
        let inbound = self.stats.tick_slot() as usize % self.slots.len();
        let outbound = (inbound + OUTBOUND_SLOTS as usize) % self.slots.len();
        let (low, high) = self.slots.split_at_mut(inbound.max(outbound));
        let (a, b) = (&mut low[inbound.min(outbound)], &mut high[0]);
        tokio::select! {
            r = a.changed() => r.is_ok(),
            r = b.changed() => r.is_ok(),
        }
    }
}
