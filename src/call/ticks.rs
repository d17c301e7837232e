//! A call's wake-ups from its audio worker (the bell is rung by `engine::bells`): after the
//! outbound half of its session's tick (its frame to send, the agent's audio to hand over), after
//! an inbound half that had events (a turn to answer now), or after any slot while the agent's
//! response is about to start. An inbound half with only the caller's audio wakes nobody: the
//! audio waits 10 ms in its ring for the outbound half's wake, which halves the call's wakes.
//!
//! A room's agent hears its participants through sessions of their own: those ring the agent's
//! bell too, but only for their events (a turn committed); their audio waits for the wake of
//! the agent's voice session, as a call's does.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use voxrelay_media::{MediaEvent, OUTBOUND_SLOTS, SessionStats, TICK_SLOTS};

/// What one call and its worker's fan-out task share.
#[derive(Debug, Default)]
pub struct CallBell {
    rung: AtomicBool,
    waker: AtomicWaker,
    /// The call wants every slot's ring (its response's first frame is about to go out).
    any_slot: AtomicBool,
    /// The fan-out task is gone: the call polls instead.
    closed: AtomicBool,
}

impl CallBell {
    /// Wakes the call (or makes its next wait return at once).
    pub fn ring(&self) {
        self.rung.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// No more rings will come.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ring();
    }

    fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.rung.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A ring between the first check and the registration found no waker to wake.
        if self.rung.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// The fan-out task's view of one call: whether a ring of `slots` concerns it.
#[derive(Debug)]
pub struct CallListener {
    bell: Arc<CallBell>,
    stats: Arc<SessionStats>,
    /// The session's `uplink_events` when the call was last woken.
    events_seen: u64,
    /// A session the call only hears (a room agent's listen session): its events wake the
    /// call, its halves do not.
    events_only: bool,
}

impl CallListener {
    /// Rings the call if its worker's ring of `slots` (bits) concerns it. The session's slots
    /// may move (`TickPhase`, at most once a second; an early response,
    /// [`SessionStats::early_slot`]): the worker publishes them before ringing.
    pub fn on_ring(&mut self, slots: u8) {
        let events = self.stats.uplink_events();
        let inbound = self.stats.tick_slot() as u8 % TICK_SLOTS;
        let outbound = match self.stats.early_slot() {
            0 => inbound + OUTBOUND_SLOTS,
            early => early as u8 - 1,
        } % TICK_SLOTS;
        let new_events = slots & (1 << inbound) != 0 && events != self.events_seen;
        let wake = new_events
            || (!self.events_only && ((slots != 0 && self.bell.any_slot.load(Ordering::Acquire)) || slots & (1 << outbound) != 0));
        if wake {
            // Everything counted so far is in the ring before the call looks at it.
            self.events_seen = events;
            self.bell.ring();
        }
    }

    /// The call has ended (its ticks were dropped and no other listener rings its bell), or, for
    /// a room agent's listen session, the session was freed (its participant left; the worker
    /// held the other reference).
    pub fn is_gone(&self) -> bool {
        Arc::strong_count(&self.bell) == 1 || (self.events_only && Arc::strong_count(&self.stats) == 1)
    }

    pub fn close(&self) {
        self.bell.close();
    }
}

/// One call's view of its worker's bell.
#[derive(Debug)]
pub struct SessionTicks {
    bell: Arc<CallBell>,
}

impl SessionTicks {
    /// A call's ticks and the listener its worker's fan-out task keeps for it.
    pub fn new(stats: Arc<SessionStats>) -> (SessionTicks, CallListener) {
        let bell = Arc::new(CallBell::default());
        let events_seen = stats.uplink_events();
        (SessionTicks { bell: bell.clone() }, CallListener { bell, stats, events_seen, events_only: false })
    }

    /// A listener for another session whose events ring this bell (see the module); hand it to
    /// that session's worker ([`crate::engine::WorkerBells::subscribe_events`]).
    pub fn events_of(&self, stats: Arc<SessionStats>) -> CallListener {
        let events_seen = stats.uplink_events();
        CallListener { bell: self.bell.clone(), stats, events_seen, events_only: true }
    }

    /// Waits until the worker's bell concerns the call (see the module), or has since the last
    /// call; with `any_slot`, until any ring of its worker. False once the bell is gone.
    pub async fn next_half(&mut self, any_slot: bool) -> bool {
        self.bell.any_slot.store(any_slot, Ordering::Release);
        poll_fn(|cx| self.bell.poll_rung(cx)).await;
        !self.bell.closed.load(Ordering::Acquire)
    }
}

/// Waits for the worker's next ring for this call; once the bell is gone (or there was none),
/// never returns, and the caller polls instead.
pub async fn next_half_tick(ticks: &mut Option<SessionTicks>, any_slot: bool) {
    if let Some(rx) = ticks
        && rx.next_half(any_slot).await
    {
        return;
    }
    *ticks = None;
    std::future::pending::<()>().await
}

/// Makes another session's events ring a call's bell, on that session's worker (the engine's
/// `WorkerBells::subscribe_events`); false for a worker the pool does not have. A room's agent
/// is given it for the listen sessions it adds as participants publish.
pub type EventBells = Arc<dyn Fn(usize, &SessionTicks, Arc<SessionStats>) -> bool + Send + Sync>;

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
    fn a_listener_goes_with_its_call_or_with_its_session() {
        let (ticks, call) = SessionTicks::new(Arc::new(SessionStats::default()));
        assert!(!call.is_gone(), "a call's listener goes with its ticks");
        let heard = Arc::new(SessionStats::default());
        let listen = ticks.events_of(heard.clone());
        assert!(!call.is_gone() && !listen.is_gone());
        drop(heard);
        assert!(listen.is_gone(), "the listen session was freed (the worker held the other reference)");
        assert!(!call.is_gone());
        drop((ticks, listen));
        assert!(call.is_gone(), "the call dropped its ticks");
    }

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
