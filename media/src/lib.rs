//! voxrelay-media: the real-time audio half of voxrelay. Pure audio: no sockets, no tokio, no
//! serde, no JSON. Everything here is either a plain building block (codec, resampler, VAD, turn
//! detector, jitter buffer) or the audio workers that run those blocks on a 20 ms clock.
//!
//! # The run-loop contract
//! 1. The tokio side calls [`WorkerPool::add_session`] (Opus) or [`WorkerPool::add_session_with`]
//!    ([`SessionOptions`]: codec — Opus, PCMU, PCMA — and VAD) and gets a [`SessionHandle`]: five bounded
//!    SPSC rings of fixed-size frames plus shared [`SessionStats`]. Nothing else crosses threads.
//! 2. Every 20 ms ([`FRAME_MS`]) the session's worker runs [`SessionChain::tick`] once, which
//!    - drains `control` ([`Control`]);
//!    - drains `ingress` ([`RtpIn`]) into the [`JitterBuffer`], stamped with the tick time (its
//!      adaptive depth follows the measured jitter);
//!    - once playout has started, takes one 20 ms frame at the session rate, 24 kHz: decode
//!      (Opus straight to 24 kHz, G.711 + 8→24 kHz, or L16 as is; PLC or FEC on loss), hands it
//!      to `uplink` ([`Uplink::Audio`]) and, resampled to 16 kHz, to the [`Vad`], feeds
//!      the [`TurnDetector`] with audio time and pushes [`Uplink::Event`]s as they happen
//!      (barge-in cuts the playing response in this same tick);
//!    - pops at most one [`AgentFrame::Audio`] (24 kHz), mixes it ([`mix`], soft limiter) with a
//!      room bridge's frame if any, encodes in the session's codec and pushes an [`EncodedFrame`]
//!      (the codec's payload: an Opus packet, or 160 bytes of G.711) to `egress`; when
//!      the agent is silent it pushes the codec's precomputed silence payload, so `egress` gets
//!      exactly one packet per tick.
//! 3. The worker never blocks on a ring: a full output ring drops the frame and counts it in
//!    [`SessionStats::ring_overflows`]. Per tick there is no allocation, lock, syscall or log line;
//!    everything is allocated when the session is created.
//! 4. Dropping every tokio-side ring end (e.g. dropping the whole [`SessionHandle`]) ends the
//!    session: the worker sees the abandoned rings on its next tick and frees the slot.
//!
//! Time is an input everywhere: the turn detector and jitter buffer are fed audio time or
//! sequence numbers, never a clock, so their tests are deterministic. Only `worker.rs` reads the
//! wall clock.
//!
//! # Module guide
//! - `frames`   — the fixed-size values that travel through the rings, and frame constants.
//! - `codec`    — thin Opus encoder/decoder wrappers (mono, 48 or 24 kHz) and the silence packet.
//! - `g711`     — ITU-T G.711 mu-law / A-law companding.
//! - `pcm_format` — a Realtime client's pcm16/G.711 chunks <-> the session's 20 ms L16 frames.
//! - `session_codec` — [`AudioCodec`]: one RTP payload <-> 24 kHz PCM for Opus, G.711 or L16, with
//!   per-codec concealment and silence.
//! - `resample` — allocation-free polyphase FIR resampler for small ratios (48/24/16/8 kHz).
//! - `mix`      — [`mix`]: sums 20 ms sources with a soft limiter.
//! - `vad`      — the [`Vad`] trait, [`EarshotVad`] (neural, default) and [`EnergyVad`]; with the
//!   `silero` cargo feature also `SileroVad` (Silero v6 through tract; allocates per inference).
//! - `echo_guard` — [`EchoGuard`]: keeps a phone line's echo of the agent from counting as
//!   caller speech (reference energy over a lag window; raised threshold while the agent talks).
//! - `turn`     — [`TurnDetector`], the speech/silence state machine with audio timestamps.
//! - `jitter`   — [`JitterBuffer`], reorder/duplicate/late handling by RTP sequence number and
//!   adaptive depth (20–200 ms) from the RFC 3550 jitter estimate.
//! - `barge_in` — the barge-in policy: whether caller speech cuts the agent's response (asked by
//!   the worker and by the root crate's protocol state, so they agree).
//! - `playback` — the agent-response lifecycle (started / finished / cleared, cancellations).
//! - `chain`    — [`SessionChain`] + [`SessionHandle`]: the whole per-session per-tick DSP and its
//!   rings, drivable without threads (tests, benches).
//! - `stats`    — [`SessionStats`], atomic counters shared with the tokio side.
//! - `worker`   — [`WorkerPool`], the audio threads and their 20 ms clocks.
//! - `error`    — [`MediaError`].
//!
//! The jitter buffer and the decoders take packets from the network: `unwrap`/`expect` are
//! denied outside tests (the one left starts the worker threads at startup).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod audio_time;
pub mod barge_in;
mod chain;
mod codec;
mod echo_guard;
mod error;
mod frames;
mod g711;
mod jitter;
mod mix;
mod pcm_format;
mod peer_loss;
mod playback;
mod resample;
pub mod room_bridge;
mod session_codec;
mod stats;
mod tick_phase;
mod turn_detect;
mod vad;
mod worker;

pub use audio_time::{AudioTime, FRAME};
pub use chain::{Liveness, OutboundFec, ROOM_EXPECTED_LOSS_PERCENT, SessionChain, SessionHandle, SessionOptions};
pub use codec::{
    DTX_MAX_PAYLOAD, DtxGate, ENCODER_BITRATE_BPS, ENCODER_COMPLEXITY, FrameError, MAX_DECODED_24K, MAX_DECODED_48K, OPUS_SILENCE,
    OpusDecoder, OpusEncoder, is_dtx_packet, opus_has_fec, opus_version,
};
pub use echo_guard::{EchoGuard, EchoGuardConfig, Verdict, energy, rms};
pub use error::MediaError;
pub use frames::{
    AGENT_RING, AgentFrame, AudioLevel, CONTROL_RING, Control, EGRESS_RING, EncodedFrame, FRAME_MS, INGRESS_RING, MAX_OPUS_PACKET,
    MediaEvent, RtpIn, SAMPLES_16K, SAMPLES_24K, SAMPLES_48K, UPLINK_RING, Uplink,
};
pub use g711::{G711_FRAME_BYTES, G711Law, linear_to_alaw, linear_to_ulaw};
pub use jitter::{JITTER_CAPACITY, JITTER_TARGET_FRAMES, JitterBuffer, JitterCounters, MAX_TARGET_FRAMES, MIN_TARGET_FRAMES, Pop};
pub use mix::{LIMITER_KNEE, mix, soft_limit};
pub use pcm_format::{L16Frame, PcmInput, PcmLaw, PcmOutput};
pub use peer_loss::PeerLoss;
pub use resample::{Resampler, SampleRate};
pub use session_codec::{AudioCodec, L16_FRAME_BYTES, SESSION_RATE};
pub use stats::{SessionStats, StatsSnapshot};
pub use tick_phase::{OUTBOUND_SLOTS, SLOTS as TICK_SLOTS, TickPhase};
pub use turn_detect::{TurnDetectConfig, TurnDetector, TurnEvent, VadLag};
#[cfg(feature = "silero")]
pub use vad::SileroVad;
pub use vad::{EarshotVad, EnergyVad, Vad, VadKind};
pub use worker::{DEFAULT_SESSIONS_PER_WORKER, TICK_BUCKETS_US, TickBell, WorkerPool, WorkerStats};
