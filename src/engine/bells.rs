//! The audio workers' tick bells, fanned out to the call tasks. A worker rings after every 5 ms
//! slot of its tick in which sessions ran halves (`voxrelay_media::worker`, `TickPhase`), with
//! the slots those halves belong to; one tokio task per worker hears it and bumps those slots'
//! watch channels. A call waits on the two slots of its own session (inbound, and outbound
//! `OUTBOUND_SLOTS` later; [`SessionTicks`]), so it moves its frames and events right after the
//! worker made them, and the agent's first frame after a turn event reaches the worker before
//! the same tick's outbound half.
//!
//! Why a task in between: waking each call task from the audio thread is one cross-thread wake
//! per call per half tick, and measured dearer than the 10 ms timers it replaces (BENCHMARKS.md
//! "a worker doorbell"). Here the audio thread wakes one task; its watch send wakes the calls
//! from inside the runtime (local run queue, no syscall). Why a channel per slot: sessions of
//! one worker run in different slots, and one channel would wake every call at every slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::{Notify, watch};
use voxrelay_media::{SessionStats, TICK_SLOTS, TickBell};

use crate::call::SessionTicks;

/// One bell per audio worker.
pub struct WorkerBells {
    bells: Vec<Bell>,
}

struct Bell {
    rung: Arc<Notify>,
    /// Slots rung since the fan-out task last looked, one bit each.
    slots_rung: Arc<AtomicU8>,
    slots: Vec<watch::Sender<u64>>,
    /// Bumped after every ring, whatever its slots: a call whose agent response is about to
    /// start listens here (its first frame goes out in whichever slot comes first).
    any: watch::Sender<u64>,
}

impl WorkerBells {
    /// Bells for `workers` workers, and their fan-out tasks (on the current runtime).
    pub fn start(workers: usize) -> Arc<Self> {
        let bells: Vec<Bell> = (0..workers)
            .map(|_| Bell {
                rung: Arc::new(Notify::new()),
                slots_rung: Arc::new(AtomicU8::new(0)),
                slots: (0..TICK_SLOTS).map(|_| watch::Sender::new(0)).collect(),
                any: watch::Sender::new(0),
            })
            .collect();
        for bell in &bells {
            let (rung, slots_rung, slots, any) = (bell.rung.clone(), bell.slots_rung.clone(), bell.slots.clone(), bell.any.clone());
            tokio::spawn(async move {
                loop {
                    rung.notified().await;
                    // Rings that came while this task was not waiting are one permit; the bits
                    // say which slots they were for, and a call catches up on everything in one
                    // pass anyway.
                    let mask = slots_rung.swap(0, Ordering::AcqRel);
                    for (slot, tx) in slots.iter().enumerate() {
                        if mask & (1 << slot) != 0 {
                            tx.send_modify(|n| *n += 1);
                        }
                    }
                    if mask != 0 {
                        any.send_modify(|n| *n += 1);
                    }
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

    /// The half ticks of a session on `worker` whose slot is in `stats`; `None` for a worker
    /// this pool does not have.
    pub fn subscribe(&self, worker: usize, stats: Arc<SessionStats>) -> Option<SessionTicks> {
        let bell = self.bells.get(worker)?;
        Some(SessionTicks::new(bell.slots.iter().map(watch::Sender::subscribe).collect(), bell.any.subscribe(), stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxrelay_media::OUTBOUND_SLOTS;

    /// A session's stats as a fresh session has them: inbound in slot 0.
    fn fresh_session() -> Arc<SessionStats> {
        Arc::new(SessionStats::default())
    }

    #[tokio::test]
    async fn a_ring_wakes_the_calls_whose_session_runs_in_that_slot_only() {
        let bells = WorkerBells::start(2);
        // Fresh sessions run inbound in slot 0, outbound in slot OUTBOUND_SLOTS.
        let mut a = bells.subscribe(0, fresh_session()).unwrap();
        let mut b = bells.subscribe(0, fresh_session()).unwrap();
        let mut other = bells.subscribe(1, fresh_session()).unwrap();
        assert!(bells.subscribe(2, fresh_session()).is_none());
        let ring = bells.bell();
        let timeout = std::time::Duration::from_secs(5);
        for slot in [0, OUTBOUND_SLOTS] {
            let ring = ring.clone();
            std::thread::spawn(move || ring(0, 1 << slot)).join().unwrap();
            tokio::time::timeout(timeout, async {
                assert!(a.next_half(false).await);
                assert!(b.next_half(false).await);
            })
            .await
            .expect("both calls on worker 0 woke");
        }
        // A slot neither half of theirs runs in wakes nobody.
        {
            let ring = ring.clone();
            std::thread::spawn(move || ring(0, 1 << 1)).join().unwrap();
        }
        let quiet = std::time::Duration::from_millis(50);
        assert!(tokio::time::timeout(quiet, a.next_half(false)).await.is_err(), "slot 1 woke a call of slot 0");
        assert!(tokio::time::timeout(quiet, other.next_half(false)).await.is_err(), "worker 1's calls were not woken");
        // A call whose response is about to start listens to every slot: the rings it missed
        // count once, then the next ring of any slot wakes it, and nothing else does.
        tokio::time::timeout(timeout, a.next_half(true)).await.expect("the rings so far");
        assert!(tokio::time::timeout(quiet, a.next_half(true)).await.is_err(), "woken without a ring");
        std::thread::spawn(move || ring(0, 1 << 3)).join().unwrap();
        assert!(tokio::time::timeout(timeout, a.next_half(true)).await.expect("slot 3 wakes a call listening to every slot"));
    }
}
