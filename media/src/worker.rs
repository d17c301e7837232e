//! The audio worker pool: a few named OS threads, each owning a shard of `SessionChain`s and
//! ticking them on an absolute 20 ms clock split into [`TICK_SLOTS`] slots of 5 ms. A session's
//! tick runs in two halves: inbound in the slot after its packets usually arrive
//! ([`TickPhase`]), outbound [`crate::OUTBOUND_SLOTS`] (10 ms) later. After each slot in which some
//! session ran a half the worker rings its [`TickBell`] with the slots, so tokio moves the frames
//! and events of that half at once instead of polling for them, and an agent's answer to a turn
//! event is encoded in the same tick's outbound half.
//! Owns: threads, session placement (least loaded), the clock, and freeing abandoned sessions.
//! Must never: block on a ring, lock or allocate per tick (new sessions arrive through an mpsc
//! channel drained with `try_recv`; the session Vec has its capacity reserved), or log per frame.
//! The syscalls per tick are the four slot sleeps, and whatever the bell costs: one cross-thread
//! wake per slot with work for the whole worker, never one per session (one per session per
//! tick cost more CPU than the 10 ms polls it replaced; BENCHMARKS.md "a worker doorbell").

use crate::tick_phase::{SLOTS as TICK_SLOTS, TickPhase};
use crate::{FRAME_MS, MediaError, SessionChain, SessionHandle, SessionOptions, SessionStats, TurnDetectConfig, VadKind, chain::Liveness};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Session slots reserved per worker; `add_session` answers `Full` beyond this. A bound on
/// memory (≈ 1.8 KB of slot each, reserved up front), not on CPU: admission (`--max-calls`)
/// decides how many calls a node takes. It was 256, and echo calls whose callers send DTX reached
/// it on one core with half the core to spare (BENCHMARKS.md "DTX"); 1024 is beyond what a core
/// can tick (≈ 2.2 CPU-ms per call-second at 250 calls).
pub const DEFAULT_SESSIONS_PER_WORKER: usize = 1024;

/// When a worker falls further behind than this many ticks (e.g. the machine was suspended), it
/// drops the backlog and restarts its clock from now instead of bursting to catch up.
const MAX_CATCH_UP_TICKS: u32 = 3;

const TICK: Duration = Duration::from_millis(FRAME_MS as u64);
const SLOT: Duration = Duration::from_millis(FRAME_MS as u64 / TICK_SLOTS as u64);

/// Rung from an audio thread with the worker's index and a bit mask of slots (bit `s` for slot
/// `s` of 0..[`TICK_SLOTS`]) after every slot in which sessions ran halves of their ticks: the
/// bits are the slots those halves belong to, a session's being [`SessionStats::tick_slot`] and
/// [`crate::OUTBOUND_SLOTS`] after it (an inbound half put off by a slot rings its own). It must
/// return at once and never block (the server's wakes one tokio task per worker).
pub type TickBell = Arc<dyn Fn(usize, u8) + Send + Sync>;

/// Upper bounds (µs) of the per-tick DSP time histogram buckets; the last bucket is +Inf. A
/// tick must finish well inside 20 000 µs or every session on the worker falls behind.
pub const TICK_BUCKETS_US: [u64; 8] = [100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000];

/// How long each tick's DSP took on one worker (all its sessions), as a histogram. Written by
/// the worker with relaxed atomics (no locks), read by exporters.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Non-cumulative counts per bucket of [`TICK_BUCKETS_US`], then +Inf.
    pub buckets: [AtomicU64; TICK_BUCKETS_US.len() + 1],
    pub ticks: AtomicU64,
    pub busy_us: AtomicU64,
    /// Ticks that started after their deadline had already passed.
    pub late_ticks: AtomicU64,
    pub sessions: AtomicUsize,
    /// Whether the thread got real-time scheduling.
    pub realtime: AtomicBool,
}

impl WorkerStats {
    fn record(&self, busy_us: u64) {
        let i = TICK_BUCKETS_US.iter().position(|&b| busy_us <= b).unwrap_or(TICK_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.ticks.fetch_add(1, Ordering::Relaxed);
        self.busy_us.fetch_add(busy_us, Ordering::Relaxed);
    }
}

struct Worker {
    new_sessions: mpsc::Sender<SessionChain>,
    stats: Arc<WorkerStats>,
    /// Sessions assigned to this worker and not yet freed.
    load: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

/// A fixed pool of audio threads named `voxrelay-audio-N`.
pub struct WorkerPool {
    workers: Vec<Worker>,
    capacity_per_worker: usize,
    stop: Arc<AtomicBool>,
}

impl WorkerPool {
    /// `threads` workers (0 = one per available core), [`DEFAULT_SESSIONS_PER_WORKER`] each.
    pub fn new(threads: usize) -> Self {
        Self::with_capacity(threads, DEFAULT_SESSIONS_PER_WORKER)
    }

    pub fn with_capacity(threads: usize, sessions_per_worker: usize) -> Self {
        Self::with_bell(threads, sessions_per_worker, Arc::new(|_, _| {}))
    }

    /// A pool whose workers ring `bell` after every slot in which a session ran a half tick.
    pub fn with_bell(threads: usize, sessions_per_worker: usize, bell: TickBell) -> Self {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..threads)
            .map(|n| {
                let (tx, rx) = mpsc::channel();
                let load = Arc::new(AtomicUsize::new(0));
                let stats = Arc::new(WorkerStats::default());
                let (thread_load, thread_stop, thread_stats) = (load.clone(), stop.clone(), stats.clone());
                let ring = {
                    let bell = bell.clone();
                    move |slots| bell(n, slots)
                };
                #[allow(clippy::expect_used, reason = "at startup, before any input: no thread means no server")]
                let thread = std::thread::Builder::new()
                    .name(format!("voxrelay-audio-{n}"))
                    .spawn(move || run_worker(rx, thread_load, thread_stop, thread_stats, sessions_per_worker, ring))
                    .expect("spawning an audio worker thread");
                Worker { new_sessions: tx, stats, load, thread: Some(thread) }
            })
            .collect();
        WorkerPool { workers, capacity_per_worker: sessions_per_worker, stop }
    }

    /// Creates an Opus session with the default VAD on the least loaded worker.
    pub fn add_session(&self, turn: TurnDetectConfig) -> Result<SessionHandle, MediaError> {
        self.add_session_with(turn, SessionOptions::default())
    }

    pub fn add_session_with_vad(&self, turn: TurnDetectConfig, vad: VadKind) -> Result<SessionHandle, MediaError> {
        self.add_session_with(turn, SessionOptions { vad, ..SessionOptions::default() })
    }

    /// Creates a session with the given codec (e.g. PCMU for the telephony bridge) and VAD.
    pub fn add_session_with(&self, turn: TurnDetectConfig, options: SessionOptions) -> Result<SessionHandle, MediaError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(MediaError::WorkerGone);
        }
        let (index, worker) =
            self.workers.iter().enumerate().min_by_key(|(_, w)| w.load.load(Ordering::Relaxed)).ok_or(MediaError::WorkerGone)?;
        // Reserve the slot before building, so concurrent callers cannot overshoot capacity.
        if worker.load.fetch_add(1, Ordering::Relaxed) >= self.capacity_per_worker {
            worker.load.fetch_sub(1, Ordering::Relaxed);
            return Err(MediaError::Full);
        }
        let built = SessionChain::with_options(turn, options).and_then(|(chain, handle)| {
            worker.new_sessions.send(chain).map_err(|_| MediaError::WorkerGone)?;
            Ok(SessionHandle { worker: index, ..handle })
        });
        if built.is_err() {
            worker.load.fetch_sub(1, Ordering::Relaxed);
        }
        built
    }

    /// Live sessions across all workers (including ones not yet picked up by their worker).
    pub fn sessions(&self) -> usize {
        self.workers.iter().map(|w| w.load.load(Ordering::Relaxed)).sum()
    }

    /// Per-worker tick statistics, in worker order.
    pub fn worker_stats(&self) -> Vec<Arc<WorkerStats>> {
        self.workers.iter().map(|w| w.stats.clone()).collect()
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Stops and joins every worker; their sessions are dropped (their rings become abandoned).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// SCHED_FIFO priority asked for audio threads: above every normal (SCHED_OTHER) thread, so
/// tokio's network work cannot delay a tick, yet low in the 1..99 range so kernel threads and
/// anything an operator marks as more urgent still win.
pub const AUDIO_RT_PRIORITY: i32 = 10;

/// Asks for real-time scheduling for the calling audio thread when `VOXRELAY_AUDIO_RT=1`.
/// Opt-in because measured worse by default (BENCHMARKS.md, capacity): a worker ticks all its
/// sessions in one burst, and under SCHED_FIFO that burst blocks tokio's network work on the
/// same core for its whole length (jitter p99 10.8 ms vs 1.9 ms at 50 plain-RTP sessions),
/// where the normal scheduler interleaves them. Needs CAP_SYS_NICE; returns whether it took.
fn request_realtime() -> bool {
    if !std::env::var("VOXRELAY_AUDIO_RT").is_ok_and(|v| v == "1") {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: AUDIO_RT_PRIORITY };
        // SAFETY: pthread_self() is always a valid handle for the calling thread, and `param`
        // outlives the call.
        unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// A session on a worker, and where in the tick its halves run.
struct Scheduled {
    chain: SessionChain,
    phase: TickPhase,
    /// The next half due is an inbound one (false: this tick's outbound half).
    inbound_next: bool,
    /// This tick's inbound half was put off by a slot: nothing had arrived in its own.
    deferred: bool,
    /// The slot the session's frames go out in while it is ahead ([`SessionChain::early_frame`]).
    ahead: Option<u8>,
}

enum SlotRun {
    /// Halves ran for these of the session's own slots (bits): whose bell to ring. A deferred
    /// inbound half rings its own slot's bell, where the call listens.
    Ran(u8),
    Abandoned,
}

impl Scheduled {
    fn new(chain: SessionChain) -> Self {
        let phase = TickPhase::new(0);
        SessionStats::set(&chain.stats().tick_slot, u64::from(phase.inbound_slot()));
        Scheduled { chain, phase, inbound_next: true, deferred: false, ahead: None }
    }

    /// Slot `slot` of the tick has come: runs the half due in it, if any. The outbound half
    /// comes first, so a session moved onto its own outbound slot still finishes its tick.
    ///
    /// An inbound half that finds no packet waiting waits one slot (5 ms) more, once: a packet
    /// a few ms later than usual (a busy core, a scheduling hiccup on either side) is then
    /// played in its tick instead of making the jitter buffer conceal it and hold a frame more
    /// of delay for seconds. A call without packets (DTX) only has its inbound half 5 ms later.
    ///
    /// In the other slots the agent's response may start early: its first frame goes out in the
    /// first slot after it arrived, and its frames keep that slot until it has ended (the call
    /// listens there meanwhile, [`SessionStats::early_slot`]). Without it, a first frame that
    /// missed the outbound half (tokio answered the turn event later than 10 ms, e.g. on a busy
    /// core) waited a whole tick.
    fn on_slot(&mut self, slot: u8) -> SlotRun {
        self.phase.observe(slot, self.chain.queued_packets());
        let mut rang = 0u8;
        let outbound_half = !self.inbound_next && slot == self.phase.outbound_slot();
        if outbound_half {
            if self.ahead.is_none() {
                rang |= 1 << slot;
            }
            self.chain.tick_outbound();
            self.inbound_next = true;
            if self.phase.tick_done() {
                SessionStats::set(&self.chain.stats().tick_slot, u64::from(self.phase.inbound_slot()));
            }
        }
        match self.ahead {
            Some(ahead) if ahead == slot => {
                if !self.chain.early_frame() {
                    // Rung all the same: the call, listening here, rereads its slots and is
                    // awake for the outbound half's next frame.
                    self.ahead = None;
                    SessionStats::set(&self.chain.stats().early_slot, 0);
                }
                rang |= 1 << slot;
            }
            None if !outbound_half && self.chain.early_frame() => {
                self.ahead = Some(slot);
                // Published before the ring, so the call's next wait is on this slot.
                SessionStats::set(&self.chain.stats().early_slot, u64::from(slot) + 1);
                rang |= 1 << slot;
            }
            _ => {}
        }
        let inbound = self.phase.inbound_slot();
        let due = slot == inbound || (self.deferred && slot == (inbound + 1) % TICK_SLOTS);
        if self.inbound_next && due {
            if !self.deferred && self.chain.queued_packets() == 0 {
                self.deferred = true;
                return SlotRun::Ran(rang);
            }
            self.deferred = false;
            if self.chain.tick_inbound() == Liveness::Abandoned {
                return SlotRun::Abandoned;
            }
            self.phase.drained();
            self.inbound_next = false;
            rang |= 1 << inbound;
        }
        SlotRun::Ran(rang)
    }
}

fn run_worker(
    new_sessions: mpsc::Receiver<SessionChain>,
    load: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    stats: Arc<WorkerStats>,
    capacity: usize,
    ring: impl Fn(u8),
) {
    stats.realtime.store(request_realtime(), Ordering::Relaxed);
    let mut sessions: Vec<Scheduled> = Vec::with_capacity(capacity);
    let mut deadline = Instant::now();
    let mut slot = 0u8;
    let mut busy = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        // Instant::now() reads the vDSO clock: no syscall on Linux.
        let started = Instant::now();
        while let Ok(chain) = new_sessions.try_recv() {
            sessions.push(Scheduled::new(chain));
        }
        let mut rang = 0u8;
        let mut i = 0;
        while i < sessions.len() {
            // A panic in one session (a bug, e.g. a codec surprise) must not take down the other
            // sessions of this worker: that session is dropped, so its rings read as abandoned
            // on the tokio side. catch_unwind costs nothing unless something panics.
            match std::panic::catch_unwind(AssertUnwindSafe(|| sessions[i].on_slot(slot))).unwrap_or(SlotRun::Abandoned) {
                SlotRun::Abandoned => {
                    // Freeing a session returns its buffers to the allocator: rare, and bounded.
                    sessions.swap_remove(i);
                    load.fetch_sub(1, Ordering::Relaxed);
                }
                SlotRun::Ran(slots) => {
                    rang |= slots;
                    i += 1;
                }
            }
        }
        let now = Instant::now();
        if rang != 0 {
            ring(rang);
        }
        busy += now.duration_since(started);
        if slot == 0 && started > deadline + TICK {
            stats.late_ticks.fetch_add(1, Ordering::Relaxed);
        }
        if slot + 1 == TICK_SLOTS {
            stats.record(busy.as_micros() as u64);
            stats.sessions.store(sessions.len(), Ordering::Relaxed);
            busy = Duration::ZERO;
        }
        slot = (slot + 1) % TICK_SLOTS;
        deadline += SLOT;
        if now > deadline && now - deadline > TICK * MAX_CATCH_UP_TICKS {
            deadline = now;
        }
        sleep_until(deadline);
    }
    load.fetch_sub(sessions.len(), Ordering::Relaxed);
}

/// Sleeps until `deadline`; returns at once when it has passed.
fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if now < deadline {
        std::thread::sleep(deadline - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OPUS_SILENCE, RtpIn};

    fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_session_gets_one_packet_per_tick_and_is_freed_when_its_handle_drops() {
        let pool = WorkerPool::new(2);
        let mut a = pool.add_session(TurnDetectConfig::default()).unwrap();
        let b = pool.add_session(TurnDetectConfig::default()).unwrap();
        assert_eq!(pool.sessions(), 2);
        let start = Instant::now();
        assert!(wait_until(|| a.egress.slots() >= 10));
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(150), "10 packets should take ~200 ms, took {elapsed:?}");
        let first = a.egress.pop().unwrap();
        assert_eq!(first.frame_index, 0);
        assert_eq!(first.bytes(), &OPUS_SILENCE);
        // Inbound audio reaches the uplink.
        for seq in 0..5u16 {
            a.ingress.push(RtpIn::new(seq, seq as u32 * 960, &OPUS_SILENCE).unwrap()).unwrap();
        }
        assert!(wait_until(|| a.uplink.slots() >= 2));
        drop(b);
        assert!(wait_until(|| pool.sessions() == 1));
        drop(a);
        assert!(wait_until(|| pool.sessions() == 0));
        pool.shutdown();
    }

    #[test]
    fn the_bell_rings_in_the_slots_of_the_sessions_halves() {
        let rung = Arc::new(std::sync::Mutex::new(Vec::new()));
        let bell: TickBell = {
            let rung = rung.clone();
            Arc::new(move |worker, slot| rung.lock().unwrap().push((worker, slot)))
        };
        let pool = WorkerPool::with_bell(1, 4, bell);
        let a = pool.add_session(TurnDetectConfig::default()).unwrap();
        assert!(wait_until(|| a.stats.ticks() >= 5));
        // No packets arrive, so the session stays in its first slot: its inbound half there (put
        // off a slot each tick, as nothing is waiting, but rung as its own), outbound
        // OUTBOUND_SLOTS later, and no ring for any other slot.
        let inbound = a.stats.tick_slot() as u8;
        let outbound = (inbound + crate::OUTBOUND_SLOTS) % TICK_SLOTS;
        let rung = rung.lock().unwrap().clone();
        assert!(rung.len() >= 8, "{rung:?}");
        let ours = (1u8 << inbound) | (1 << outbound);
        assert!(rung.iter().all(|&(w, mask)| w == 0 && mask != 0 && mask & !ours == 0), "{rung:?}");
        assert!(rung.iter().any(|&(_, m)| m & (1 << inbound) != 0) && rung.iter().any(|&(_, m)| m & (1 << outbound) != 0));
        pool.shutdown();
    }

    /// A session scheduled slot by slot (no clock): each slot's ring bits and the frames that
    /// went out in it (index, voiced).
    struct Slots {
        session: Scheduled,
        handle: SessionHandle,
        slot: u8,
    }

    impl Slots {
        fn new() -> Self {
            let (chain, handle) = SessionChain::new(TurnDetectConfig::default()).unwrap();
            Slots { session: Scheduled::new(chain), handle, slot: 0 }
        }

        fn step(&mut self) -> (u8, u8, Vec<(u64, bool)>) {
            let slot = self.slot;
            let SlotRun::Ran(rang) = self.session.on_slot(slot) else { panic!("abandoned") };
            self.slot = (slot + 1) % TICK_SLOTS;
            let mut out = Vec::new();
            while let Ok(f) = self.handle.egress.pop() {
                out.push((f.frame_index, f.voiced));
            }
            (slot, rang, out)
        }

        fn agent(&mut self, response: u64, frames: usize) {
            for _ in 0..frames {
                self.handle.agent_out.push(crate::AgentFrame::Audio { response, pcm: [1000; crate::SAMPLES_24K] }).unwrap();
            }
            self.handle.agent_out.push(crate::AgentFrame::End { response }).unwrap();
        }
    }

    #[test]
    fn a_response_arriving_after_the_outbound_half_starts_in_the_next_slot_and_keeps_it() {
        let mut s = Slots::new();
        let home = crate::OUTBOUND_SLOTS; // fresh session: inbound slot 0, no packets, no moves
        let mut sent = Vec::new();
        for _ in 0..3 * TICK_SLOTS {
            let (slot, rang, out) = s.step();
            if !out.is_empty() {
                assert_eq!((slot, rang & (1 << slot)), (home, 1 << home), "a silent session sends at its outbound half");
            }
            sent.extend(out);
        }
        assert_eq!(s.slot, 0);
        assert_eq!(s.handle.stats.early_slot(), 0);
        // The response arrives in slot 0, after this tick's outbound half: its first frame goes
        // out in slot 0, not at the next outbound half 10 ms later, and the call is told.
        s.agent(7, 5);
        let (slot, rang, out) = s.step();
        assert_eq!(slot, 0);
        assert_eq!(out.len(), 1, "the first frame went out at once");
        assert!(out[0].1 && rang & 1 != 0);
        assert_eq!(s.handle.stats.early_slot(), 1);
        assert_eq!(s.handle.stats.early_starts(), 1);
        sent.extend(out);
        // Its frames keep slot 0, one per tick; then LEAVE_AHEAD_AFTER silent ones there, and
        // the outbound half takes over again.
        let mut slots_used = Vec::new();
        let mut left = None;
        for _ in 0..10 * TICK_SLOTS {
            let (slot, rang, out) = s.step();
            if left.is_none() && s.handle.stats.early_slot() == 0 {
                left = Some((slot, rang & (1 << slot) != 0));
            }
            for f in &out {
                slots_used.push((slot, f.1));
                assert!(rang & (1 << slot) != 0, "the slot of every frame rings");
            }
            sent.extend(out);
        }
        let voiced_then_silent: Vec<_> = slots_used.iter().take(4 + crate::chain::LEAVE_AHEAD_AFTER as usize).copied().collect();
        let expected: Vec<_> = (0..4).map(|_| (0, true)).chain((0..crate::chain::LEAVE_AHEAD_AFTER).map(|_| (0, false))).collect();
        assert_eq!(voiced_then_silent, expected);
        assert!(slots_used[4 + crate::chain::LEAVE_AHEAD_AFTER as usize..].iter().all(|&(slot, voiced)| slot == home && !voiced));
        assert_eq!(left, Some((0, true)), "it leaves in its slot, ringing it so the call rereads its slots");
        // One frame per tick throughout, every index once and in order.
        let indices: Vec<u64> = sent.iter().map(|f| f.0).collect();
        assert_eq!(indices, (0..indices.len() as u64).collect::<Vec<_>>());
        assert_eq!(sent.iter().filter(|f| f.1).count(), 5);
    }

    #[test]
    fn a_cancelled_or_playing_response_does_not_start_early() {
        let mut s = Slots::new();
        for _ in 0..TICK_SLOTS {
            s.step();
        }
        // Cancelled before its first frame: nothing goes out early.
        s.agent(1, 3);
        s.handle.control.push(crate::Control::CancelResponse(1)).unwrap();
        for _ in 0..2 * TICK_SLOTS {
            let (_, _, out) = s.step();
            assert!(out.iter().all(|f| !f.1), "{out:?}");
        }
        assert_eq!(s.handle.stats.early_starts(), 0);
        // A response that reached the worker before the outbound half plays from there.
        while s.slot != crate::OUTBOUND_SLOTS {
            s.step();
        }
        s.agent(2, 3);
        let (_, _, out) = s.step();
        assert_eq!(out.iter().map(|f| f.1).collect::<Vec<_>>(), [true]);
        assert_eq!(s.handle.stats.early_starts(), 0);
    }

    #[test]
    fn capacity_is_enforced() {
        let pool = WorkerPool::with_capacity(1, 1);
        let _a = pool.add_session(TurnDetectConfig::default()).unwrap();
        assert!(matches!(pool.add_session(TurnDetectConfig::default()), Err(MediaError::Full)));
    }

    #[test]
    fn threads_are_named() {
        let pool = WorkerPool::new(1);
        let handle = pool.workers[0].thread.as_ref().unwrap();
        assert_eq!(handle.thread().name(), Some("voxrelay-audio-0"));
    }
}
