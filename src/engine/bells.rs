//! The audio workers' tick bells, fanned out to the call tasks. A worker rings after every 5 ms
//! slot of its tick in which sessions ran halves (`voxrelay_media::worker`, `TickPhase`), with
//! the slots those halves belong to; one tokio task per worker hears it and rings the calls the
//! slots concern ([`CallListener::on_ring`]): a call wakes after its session's outbound half,
//! after an inbound half that had events, and, while its response is about to start, after
//! any slot. So it moves its frames and events right after the worker made them, and the
//! agent's first frame after a turn event reaches the worker before the same tick's outbound
//! half.
//!
//! Why a task in between: waking each call task from the audio thread is one cross-thread wake
//! per call per half tick, and measured dearer than the 10 ms timers it replaces (BENCHMARKS.md
//! "a worker doorbell"). Here the audio thread wakes one task; it wakes the calls from inside the
//! runtime (local run queue, no syscall), each through its own waker (no lock).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use voxrelay_media::{SessionStats, TickBell};

use crate::call::{CallListener, SessionTicks};

/// One bell per audio worker.
pub struct WorkerBells {
    bells: Vec<Bell>,
}

struct Bell {
    rung: Arc<Notify>,
    /// Slots rung since the fan-out task last looked, one bit each.
    slots_rung: Arc<AtomicU8>,
    /// Calls subscribed since the fan-out task last looked (it keeps them from then on).
    joining: Arc<Mutex<Vec<CallListener>>>,
}

impl WorkerBells {
    /// Bells for `workers` workers, and their fan-out tasks (on the current runtime).
    pub fn start(workers: usize) -> Arc<Self> {
        let bells: Vec<Bell> = (0..workers)
            .map(|_| Bell { rung: Arc::new(Notify::new()), slots_rung: Arc::new(AtomicU8::new(0)), joining: Arc::default() })
            .collect();
        for bell in &bells {
            let (rung, slots_rung, joining) = (bell.rung.clone(), bell.slots_rung.clone(), bell.joining.clone());
            tokio::spawn(async move {
                let mut calls = Listeners(Vec::new());
                loop {
                    rung.notified().await;
                    // Rings that came while this task was not waiting are one permit; the bits
                    // say which slots they were for, and a call catches up on everything in one
                    // pass anyway.
                    let mask = slots_rung.swap(0, Ordering::AcqRel);
                    if let Ok(mut joining) = joining.lock() {
                        calls.0.append(&mut joining);
                    }
                    calls.0.retain_mut(|call| {
                        if call.is_gone() {
                            return false;
                        }
                        call.on_ring(mask);
                        true
                    });
                }
            });
        }
        Arc::new(WorkerBells { bells })
    }

    /// What the worker pool calls from its audio threads: wake the worker's fan-out task.
    pub fn bell(self: &Arc<Self>) -> TickBell {
        let rungs: Vec<(Arc<Notify>, Arc<AtomicU8>)> = self.bells.iter().map(|b| (b.rung.clone(), b.slots_rung.clone())).collect();
        Arc::new(move |worker, slots| {
            if let Some((rung, slots_rung)) = rungs.get(worker) {
                slots_rung.fetch_or(slots, Ordering::AcqRel);
                rung.notify_one();
            }
        })
    }

    /// The wake-ups of a call whose session runs on `worker` (`stats`: the session's); `None`
    /// for a worker this pool does not have.
    pub fn subscribe(&self, worker: usize, stats: Arc<SessionStats>) -> Option<SessionTicks> {
        let bell = self.bells.get(worker)?;
        let (ticks, listener) = SessionTicks::new(stats);
        bell.joining.lock().ok()?.push(listener);
        Some(ticks)
    }

    /// `ticks` also wake for the events of another session on `worker` (`stats`: that
    /// session's); false for a worker this pool does not have.
    pub fn subscribe_events(&self, worker: usize, ticks: &SessionTicks, stats: Arc<SessionStats>) -> bool {
        let Some(bell) = self.bells.get(worker) else { return false };
        bell.joining.lock().map(|mut joining| joining.push(ticks.events_of(stats))).is_ok()
    }
}

/// The fan-out task's calls; when the task ends (the runtime shuts down), its calls stop
/// waiting for it.
struct Listeners(Vec<CallListener>);

impl Drop for Listeners {
    fn drop(&mut self) {
        self.0.iter().for_each(CallListener::close);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use voxrelay_media::{OUTBOUND_SLOTS, StatsSnapshot};

    /// A session's stats as a fresh session has them: inbound in slot 0.
    fn fresh_session() -> Arc<SessionStats> {
        Arc::new(SessionStats::default())
    }

    const WOKEN: Duration = Duration::from_secs(5);
    const QUIET: Duration = Duration::from_millis(50);

    async fn wakes(ticks: &mut SessionTicks) -> bool {
        tokio::time::timeout(WOKEN, ticks.next_half(false)).await.is_ok()
    }

    async fn stays_asleep(ticks: &mut SessionTicks) -> bool {
        tokio::time::timeout(QUIET, ticks.next_half(false)).await.is_err()
    }

    #[tokio::test]
    async fn a_ring_wakes_the_calls_it_concerns_only() {
        let bells = WorkerBells::start(2);
        // Fresh sessions run inbound in slot 0, outbound in slot OUTBOUND_SLOTS.
        let (stats_a, stats_b) = (fresh_session(), fresh_session());
        let mut a = bells.subscribe(0, stats_a).unwrap();
        let mut b = bells.subscribe(0, stats_b.clone()).unwrap();
        let mut other = bells.subscribe(1, fresh_session()).unwrap();
        assert!(bells.subscribe(2, fresh_session()).is_none());
        let bell = bells.bell();
        let ring = |slots: u8| {
            let bell = bell.clone();
            std::thread::spawn(move || bell(0, slots)).join().unwrap();
        };

        ring(1 << OUTBOUND_SLOTS);
        assert!(wakes(&mut a).await && wakes(&mut b).await, "the outbound half wakes both calls on worker 0");
        assert!(stays_asleep(&mut other).await, "worker 1's calls were woken");

        ring(1 << 0);
        assert!(stays_asleep(&mut a).await && stays_asleep(&mut b).await, "an inbound half with audio only woke a call");
        stats_b.restore(&StatsSnapshot { uplink_events: 1, ..stats_b.snapshot() });
        ring(1 << 0);
        assert!(wakes(&mut b).await, "an inbound half with an event wakes its call");
        assert!(stays_asleep(&mut a).await, "another session's event woke a call");

        ring(1 << 1);
        assert!(stays_asleep(&mut a).await && stays_asleep(&mut b).await, "a slot neither half runs in woke a call");

        // A call whose response is about to start hears every slot; rings while it was not
        // waiting count once.
        {
            let first = a.next_half(true);
            tokio::pin!(first);
            assert!(tokio::time::timeout(QUIET, &mut first).await.is_err(), "woken without a ring");
            ring(1 << 3);
            assert!(tokio::time::timeout(WOKEN, first).await.expect("slot 3 wakes a call listening to every slot"));
        }
        ring(1 << OUTBOUND_SLOTS);
        ring(1 << OUTBOUND_SLOTS);
        assert!(wakes(&mut a).await);
        assert!(stays_asleep(&mut a).await, "two rings while away woke the call twice");
    }

    #[tokio::test]
    async fn a_room_agent_wakes_for_its_listen_sessions_events_only() {
        let bells = WorkerBells::start(2);
        let mut agent = bells.subscribe(0, fresh_session()).unwrap();
        let heard = fresh_session();
        assert!(bells.subscribe_events(1, &agent, heard.clone()));
        assert!(!bells.subscribe_events(2, &agent, fresh_session()));
        let bell = bells.bell();
        let ring = |worker: usize, slots: u8| {
            let bell = bell.clone();
            std::thread::spawn(move || bell(worker, slots)).join().unwrap();
        };
        ring(1, 1 << OUTBOUND_SLOTS | 1 << 0);
        assert!(stays_asleep(&mut agent).await, "a listen session's halves woke the agent");
        heard.restore(&StatsSnapshot { uplink_events: 1, ..heard.snapshot() });
        ring(1, 1 << 0);
        assert!(wakes(&mut agent).await, "a listen session's event wakes the agent");
        ring(0, 1 << OUTBOUND_SLOTS);
        assert!(wakes(&mut agent).await, "the agent's own session's outbound half still does");
    }
}
