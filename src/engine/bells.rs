//! The audio workers' tick bells, fanned out to the call tasks. A worker rings after each half of
//! its tick (inbound, then outbound; `voxrelay_media::worker`); one tokio task per worker hears
//! it and bumps a watch channel every call on that worker waits on. So a call moves its frames
//! and events right after the worker made them, and the agent's first frame after a turn event
//! reaches the worker before the same tick's outbound half.
//!
//! Why a task in between: waking each call task from the audio thread is one cross-thread wake
//! per call per half tick, and measured dearer than the 10 ms timers it replaces (BENCHMARKS.md
//! "a worker doorbell"). Here the audio thread wakes one task; its watch send wakes the calls
//! from inside the runtime (local run queue, no syscall).

use std::sync::Arc;

use tokio::sync::{Notify, watch};
use voxrelay_media::TickBell;

/// One bell per audio worker.
pub struct WorkerBells {
    bells: Vec<Bell>,
}

struct Bell {
    rung: Arc<Notify>,
    halves: watch::Sender<u64>,
}

impl WorkerBells {
    /// Bells for `workers` workers, and their fan-out tasks (on the current runtime).
    pub fn start(workers: usize) -> Arc<Self> {
        let bells: Vec<Bell> = (0..workers).map(|_| Bell { rung: Arc::new(Notify::new()), halves: watch::Sender::new(0) }).collect();
        for bell in &bells {
            let (rung, halves) = (bell.rung.clone(), bell.halves.clone());
            tokio::spawn(async move {
                loop {
                    rung.notified().await;
                    // Rings that came while this task was not waiting are one permit: the calls
                    // catch up on everything in one pass anyway.
                    halves.send_modify(|n| *n += 1);
                }
            });
        }
        Arc::new(WorkerBells { bells })
    }

    /// What the worker pool calls from its audio threads: wake the worker's fan-out task.
    pub fn bell(self: &Arc<Self>) -> TickBell {
        let rungs: Vec<Arc<Notify>> = self.bells.iter().map(|b| b.rung.clone()).collect();
        Arc::new(move |worker| {
            if let Some(rung) = rungs.get(worker) {
                rung.notify_one();
            }
        })
    }

    /// Half ticks of `worker`, for a call on it; `None` for a worker this pool does not have.
    pub fn subscribe(&self, worker: usize) -> Option<watch::Receiver<u64>> {
        self.bells.get(worker).map(|b| b.halves.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ring_from_another_thread_wakes_every_subscriber_of_that_worker_only() {
        let bells = WorkerBells::start(2);
        let (mut a, mut b, other) = (bells.subscribe(0).unwrap(), bells.subscribe(0).unwrap(), bells.subscribe(1).unwrap());
        assert!(bells.subscribe(2).is_none());
        let ring = bells.bell();
        std::thread::spawn(move || ring(0)).join().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            a.changed().await.unwrap();
            b.changed().await.unwrap();
        })
        .await
        .expect("both calls on worker 0 woke");
        assert!(!other.has_changed().unwrap(), "worker 1's calls were not woken");
    }
}
