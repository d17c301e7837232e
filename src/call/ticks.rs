//! A call's wake-ups from its audio worker: the two 5 ms slots of the worker's tick in which its
//! session's halves run (the watch channels are made and rung by `engine::bells`), or any slot
//! while the agent's response is about to start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use voxrelay_media::{MediaEvent, OUTBOUND_SLOTS, SessionStats};

/// One call's view of its worker's bell.
pub struct SessionTicks {
    slots: Vec<watch::Receiver<u64>>,
    any: watch::Receiver<u64>,
    stats: Arc<SessionStats>,
}

impl SessionTicks {
    /// `slots`: one receiver per slot of the worker's tick, in slot order; `any`: bumped after
    /// every ring.
    pub fn new(slots: Vec<watch::Receiver<u64>>, any: watch::Receiver<u64>, stats: Arc<SessionStats>) -> Self {
        SessionTicks { slots, any, stats }
    }

    /// Waits until the worker ran one of the session's halves (or did since the last call), or
    /// with `any_slot`, anything on the worker. False once the bell is gone. The session's
    /// slots may move (`TickPhase`, at most once a second; an early response,
    /// [`SessionStats::early_slot`]): the worker publishes them before ringing, so the next wait
    /// is on the new slots (after one early return for a slot rung while the call was not
    /// listening to it).
    pub async fn next_half(&mut self, any_slot: bool) -> bool {
        if any_slot {
            return self.any.changed().await.is_ok();
        }
        let n = self.slots.len();
        if n <= OUTBOUND_SLOTS as usize {
            return false;
        }
        let inbound = self.stats.tick_slot() as usize % n;
        let outbound = match self.stats.early_slot() {
            0 => inbound + OUTBOUND_SLOTS as usize,
            early => early as usize - 1,
        } % n;
        if inbound == outbound {
            return self.slots[inbound].changed().await.is_ok();
        }
        let (low, high) = self.slots.split_at_mut(inbound.max(outbound));
        let (a, b) = (&mut low[inbound.min(outbound)], &mut high[0]);
        tokio::select! {
            r = a.changed() => r.is_ok(),
            r = b.changed() => r.is_ok(),
        }
    }
}

/// How long a call listens to every slot after handing the agent's first frames over: the
/// worker sends the first in the next slot (5 ms), so two ticks is ample; a response cancelled
/// before its first frame ends the watch this way.
const FIRST_FRAME_WATCH: Duration = Duration::from_millis(40);

/// Whether the call should wake at every slot: from handing a response's first audio to a
/// silent worker until the worker says it started playing it (its first frame is out).
#[derive(Debug, Default)]
pub struct FirstFrameWatch {
    on_air: bool,
    until: Option<Instant>,
}

impl FirstFrameWatch {
    /// The call fed the worker; `audio`: some of it was agent audio.
    pub fn fed(&mut self, audio: bool, now: Instant) {
        if audio && !self.on_air && self.until.is_none() {
            self.until = Some(now + FIRST_FRAME_WATCH);
        }
    }

    pub fn on_media(&mut self, event: &MediaEvent) {
        match event {
            MediaEvent::PlaybackStarted { .. } => (self.on_air, self.until) = (true, None),
            MediaEvent::PlaybackFinished { .. } => self.on_air = false,
            MediaEvent::PlaybackCleared { .. } => (self.on_air, self.until) = (false, None),
            _ => {}
        }
    }

    pub fn watching(&mut self, now: Instant) -> bool {
        if self.until.is_some_and(|until| now >= until) {
            self.until = None;
        }
        self.until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_watches_every_slot_from_feeding_a_silent_worker_until_playback_starts() {
        let t0 = Instant::now();
        let mut w = FirstFrameWatch::default();
        assert!(!w.watching(t0));
        w.fed(false, t0);
        assert!(!w.watching(t0), "a response's end alone is not a first frame");
        w.fed(true, t0);
        assert!(w.watching(t0 + Duration::from_millis(5)));
        w.on_media(&MediaEvent::PlaybackStarted { response: 1 });
        assert!(!w.watching(t0 + Duration::from_millis(6)));
        w.fed(true, t0 + Duration::from_millis(20));
        assert!(!w.watching(t0 + Duration::from_millis(20)), "more of a response on air is not watched");
        w.on_media(&MediaEvent::PlaybackFinished { response: 1, played: Duration::ZERO });
        w.fed(true, t0 + Duration::from_millis(100));
        assert!(w.watching(t0 + Duration::from_millis(100)));
        assert!(!w.watching(t0 + Duration::from_millis(100) + FIRST_FRAME_WATCH), "the watch ends by itself");
        w.fed(true, t0 + Duration::from_millis(200));
        w.on_media(&MediaEvent::PlaybackCleared { response: 2, played: Duration::ZERO });
        assert!(!w.watching(t0 + Duration::from_millis(201)), "a response cut before it started ends the watch");
    }
}
