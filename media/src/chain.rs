//! `SessionChain`: the whole per-session, per-tick DSP, and the rings that feed it.
//! Owns: one session's state (jitter buffer, codecs, resamplers, mixer input, VAD, turn detector,
//! playback)
//! and the worker-side ends of its rings. Each stage is one method, called top to bottom by
//! `tick`.
//! Runs on the audio thread: no allocation, no locks, no syscalls, no logging after `new`. Never
//! blocks on a ring: a full output ring drops the frame and counts it.

use crate::barge_in::{self, BargeIn, ResponsePhase};
use crate::codec::MAX_DECODED_24K;
use crate::echo_guard::{EchoGuard, EchoGuardConfig, Verdict, rms};
use crate::mix::mix;
use crate::peer_loss::PeerLoss;
use crate::playback::Playback;
use crate::room_bridge::{BridgeHandle, RoomBridge};
use crate::session_codec::{AudioCodec, Decoder, Encoder, SESSION_RATE};
use crate::turn_detect::dbfs;
use crate::vad::VadKind;
use crate::{
    AGENT_RING, AgentFrame, AudioTime, CONTROL_RING, Control, EGRESS_RING, EncodedFrame, FRAME_MS, INGRESS_RING, JitterBuffer,
    MAX_OPUS_PACKET, MediaError, MediaEvent, Pop, Resampler, RtpIn, SAMPLES_16K, SAMPLES_24K, SampleRate, SessionStats, TurnDetectConfig,
    TurnDetector, TurnEvent, UPLINK_RING, Uplink, Vad, VadLag,
};
use rtrb::{Consumer, Producer, RingBuffer};
use std::sync::Arc;

/// The tokio side of one session's rings. Dropping it ends the session: once every ring end in
/// it has been dropped (they may be moved to different tasks first), the worker notices the
/// abandoned rings on its next tick and frees the slot.
pub struct SessionHandle {
    pub ingress: Producer<RtpIn>,
    pub control: Producer<Control>,
    pub agent_out: Producer<AgentFrame>,
    pub egress: Consumer<EncodedFrame>,
    pub uplink: Consumer<Uplink>,
    pub stats: Arc<SessionStats>,
    /// A room bridge's rings (see [`crate::room_bridge`]), when the session was built as one.
    pub bridge: Option<BridgeHandle>,
    /// The index of the worker ticking the session (whose [`crate::TickBell`] rings for it).
    pub worker: usize,
}

/// How a session is built: its RTP codec (both directions), its VAD, and its echo guard (on
/// for phone lines, which have no echo canceller).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SessionOptions {
    pub codec: AudioCodec,
    pub vad: VadKind,
    pub echo_guard: EchoGuardConfig,
    /// Bridge the line into a room: its audio is also encoded to Opus for the room, and the
    /// room's audio for its slot is mixed into what it hears ([`crate::room_bridge`]).
    pub room_bridge: bool,
    /// Whether the encoder's in-band FEC follows the peer's loss reports or is fixed.
    pub outbound_fec: OutboundFec,
}

/// How much in-band FEC the session's Opus encoder adds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutboundFec {
    /// As much as the one peer's receiver reports ask for ([`Control::PeerReport`]); none
    /// until the first report says it loses packets.
    #[default]
    PeerReports,
    /// For this expected loss (percent), whatever reports say: a stream forwarded to many
    /// receivers (a room) has no single peer to follow.
    Fixed(u8),
}

/// The expected loss a stream forwarded into a room is encoded for: the FEC every session had
/// before the server followed its peer's reports.
pub const ROOM_EXPECTED_LOSS_PERCENT: u8 = 10;

/// Whether a session should keep its worker slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Every tokio-side ring end was dropped: free the slot.
    Abandoned,
}

pub struct SessionChain {
    ingress: Consumer<RtpIn>,
    control: Consumer<Control>,
    agent_in: Consumer<AgentFrame>,
    egress: Producer<EncodedFrame>,
    uplink: UplinkOut,
    stats: Arc<SessionStats>,

    codec: AudioCodec,
    jitter: JitterBuffer,
    decoder: Decoder,
    /// Decoded audio (24 kHz) not yet consumed: packets may hold more than 20 ms.
    pcm_in: Box<[i16; MAX_DECODED_24K + SAMPLES_24K]>,
    pcm_in_len: usize,
    to_16k: Resampler,
    vad: Box<dyn Vad>,
    turn: TurnDetector,
    echo_guard: EchoGuard,
    /// Inbound frames the echo guard judged to be echo of the agent.
    echo_frames: u64,
    /// Inbound 20 ms frames processed since the first packet; audio time = this × 20 ms.
    frames_in: u64,
    packets_in: u64,

    playback: Playback,
    /// The agent's frames go out in the slot its response started in, not at the outbound half
    /// (see [`SessionChain::early_frame`]).
    ahead: bool,
    /// Frames the agent has been silent for while ahead.
    silent_ahead: u8,
    encoder: Encoder,
    /// The peer's reported loss, when it sizes the encoder's FEC ([`OutboundFec::PeerReports`]).
    peer_loss: Option<PeerLoss>,
    /// Ticks run so far; tick time (ms) = this × 20, the arrival time of packets drained in it.
    ticks: u64,
    frames_out: u64,
    voiced_out: u64,
    agent_dropped: u64,
    overflows: u64,
    codec_errors: u64,
    concealed: u64,
    recovered: u64,
    frames_decoded: u64,
    /// Inbound frames of the caller's DTX silence (neither decoded nor heard by the VAD).
    dtx_frames: u64,
    bridge: Option<Box<RoomBridge>>,
}

/// Silent frames an ahead session sends before it goes back to the outbound half: the far end
/// hears the response's tail on time, and the late packet on the way back is silence.
pub const LEAVE_AHEAD_AFTER: u8 = 2;

/// What one tick's inbound frame is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inbound {
    /// Playout has not started: no frame this tick.
    Waiting,
    /// Decoded (or concealed) caller audio.
    Audio,
    /// The caller's DTX silence: zeros, nothing to analyse.
    Dtx,
}

impl SessionChain {
    /// An Opus session with the default VAD. Returns the chain (worker side) and its handle
    /// (tokio side). Everything the per-tick path needs is allocated here.
    pub fn new(turn: TurnDetectConfig) -> Result<(SessionChain, SessionHandle), MediaError> {
        Self::with_options(turn, SessionOptions::default())
    }

    pub fn with_vad(turn: TurnDetectConfig, vad: VadKind) -> Result<(SessionChain, SessionHandle), MediaError> {
        Self::with_options(turn, SessionOptions { vad, ..SessionOptions::default() })
    }

    pub fn with_options(turn: TurnDetectConfig, options: SessionOptions) -> Result<(SessionChain, SessionHandle), MediaError> {
        let SessionOptions { codec, vad, echo_guard, room_bridge, outbound_fec } = options;
        let (bridge, bridge_handle) = match room_bridge {
            true => RoomBridge::new().map(|(b, h)| (Some(Box::new(b)), Some(h)))?,
            false => (None, None),
        };
        let (ingress_tx, ingress) = RingBuffer::new(INGRESS_RING);
        let (control_tx, control) = RingBuffer::new(CONTROL_RING);
        let (agent_tx, agent_in) = RingBuffer::new(AGENT_RING);
        let (egress, egress_rx) = RingBuffer::new(EGRESS_RING);
        let (uplink, uplink_rx) = RingBuffer::new(UPLINK_RING);
        let stats = Arc::new(SessionStats::default());
        let vad = vad.build();
        let (decoder, mut encoder) = (Decoder::new(codec)?, Encoder::new(codec)?);
        let peer_loss = match outbound_fec {
            OutboundFec::PeerReports => Some(PeerLoss::default()),
            OutboundFec::Fixed(percent) => {
                encoder.set_expected_loss(percent);
                None
            }
        };
        let echo_guard = EchoGuard::new(echo_guard).aligned(encoder.delay_samples() + decoder.delay_samples());
        let chain = SessionChain {
            ingress,
            control,
            agent_in,
            egress,
            uplink: UplinkOut { ring: uplink, events: 0 },
            stats: stats.clone(),
            codec,
            jitter: JitterBuffer::with_clock_rate(codec.clock_rate()),
            decoder,
            pcm_in: Box::new([0; MAX_DECODED_24K + SAMPLES_24K]),
            pcm_in_len: 0,
            // Only the VAD hears this feed: the short analysis filter is enough (BENCHMARKS.md).
            to_16k: Resampler::for_analysis(SESSION_RATE, SampleRate::HZ_16K)?,
            turn: TurnDetector::new(turn).with_lag(VadLag::of(&*vad)),
            vad,
            echo_guard,
            echo_frames: 0,
            frames_in: 0,
            packets_in: 0,
            playback: Playback::default(),
            ahead: false,
            silent_ahead: 0,
            encoder,
            peer_loss,
            ticks: 0,
            frames_out: 0,
            voiced_out: 0,
            agent_dropped: 0,
            overflows: 0,
            codec_errors: 0,
            concealed: 0,
            recovered: 0,
            frames_decoded: 0,
            dtx_frames: 0,
            bridge,
        };
        let handle = SessionHandle {
            ingress: ingress_tx,
            control: control_tx,
            agent_out: agent_tx,
            egress: egress_rx,
            uplink: uplink_rx,
            stats,
            bridge: bridge_handle,
            worker: 0,
        };
        Ok((chain, handle))
    }

    pub fn stats(&self) -> &Arc<SessionStats> {
        &self.stats
    }

    pub fn codec(&self) -> AudioCodec {
        self.codec
    }

    pub fn turn_config(&self) -> TurnDetectConfig {
        self.turn.config()
    }

    /// Where the next inbound frame starts on the call's audio timeline.
    pub fn audio_time(&self) -> AudioTime {
        AudioTime::of_frame(self.frames_in)
    }

    /// One 20 ms tick: controls, ingress, inbound DSP, outbound DSP. Returns `Abandoned` (and
    /// does nothing) once the tokio side has dropped every ring end.
    pub fn tick(&mut self) -> Liveness {
        match self.tick_inbound() {
            Liveness::Alive => {
                self.tick_outbound();
                Liveness::Alive
            }
            gone => gone,
        }
    }

    /// The first half of a tick: controls, ingress, inbound DSP (uplink audio and turn events).
    /// The worker runs it in the session's slot, lets tokio answer (an agent's first frame after
    /// a commit), then runs [`SessionChain::tick_outbound`] `OUTBOUND_SLOTS` (10 ms) later, so
    /// that frame goes out in this tick instead of the next.
    pub fn tick_inbound(&mut self) -> Liveness {
        if self.is_abandoned() {
            return Liveness::Abandoned;
        }
        self.apply_controls();
        self.receive();
        self.inbound();
        // Before the worker rings: the bell reads it to decide whether the call wakes now.
        SessionStats::set(&self.stats.uplink_events, self.uplink.events);
        Liveness::Alive
    }

    /// The second half: controls that arrived since (a cancel), then one outbound frame, unless
    /// the session is ahead (its frames go out in [`SessionChain::early_frame`]'s slot).
    pub fn tick_outbound(&mut self) {
        self.apply_controls();
        if !self.ahead {
            self.outbound();
        }
        self.publish_stats();
        self.ticks += 1;
    }

    /// Called in the worker's slots other than the outbound half's: sends the next frame now if
    /// the agent's response has just arrived with nothing playing (its first frame would
    /// otherwise wait for the next outbound half, up to 20 ms), and from then on in this slot
    /// every tick (the session is ahead); returns whether a frame went out. An ahead session
    /// leaves after [`LEAVE_AHEAD_AFTER`] silent frames (returning false without a frame), and
    /// the outbound half sends again.
    ///
    /// Why a frame may go early: the stream's RTP timestamps count frames, not slots, so the
    /// far end sees one packet 5–15 ms early (its jitter buffer holds it) on the way in and one
    /// that much late, in silence, on the way out; the frame rate stays one per tick. A session
    /// bridged into a room is never ahead: its room audio is paced by the tick.
    pub fn early_frame(&mut self) -> bool {
        if self.ahead {
            self.apply_controls();
            if self.silent_ahead >= LEAVE_AHEAD_AFTER && !self.playback.is_speaking(&self.agent_in) {
                self.ahead = false;
                return false;
            }
        } else {
            if self.bridge.is_some() || !self.playback.starts(&self.agent_in) {
                return false;
            }
            // A cancel queued behind the response wins over playing its first frame.
            self.apply_controls();
            if !self.playback.starts(&self.agent_in) {
                return false;
            }
            self.ahead = true;
            self.silent_ahead = 0;
            SessionStats::add(&self.stats.early_starts, 1);
        }
        let voiced = self.voiced_out;
        self.outbound();
        self.silent_ahead = if self.voiced_out > voiced { 0 } else { self.silent_ahead.saturating_add(1) };
        true
    }

    /// RTP packets waiting in the ingress ring (the worker watches when they arrive).
    pub fn queued_packets(&self) -> usize {
        self.ingress.slots()
    }

    fn is_abandoned(&self) -> bool {
        self.ingress.is_abandoned()
            && self.control.is_abandoned()
            && self.agent_in.is_abandoned()
            && self.egress.is_abandoned()
            && self.uplink.ring.is_abandoned()
            && self.bridge.as_ref().is_none_or(|b| b.is_abandoned())
    }

    /// Stage 1: commands from tokio, in order.
    fn apply_controls(&mut self) {
        while let Ok(command) = self.control.pop() {
            match command {
                Control::SetTurn(config) => self.turn.set_config(config),
                Control::CommitInput => {
                    self.turn.reset();
                    let audio_end = self.audio_time();
                    self.emit(MediaEvent::Committed { audio_end });
                }
                Control::ClearInput => {
                    self.turn.reset();
                    self.emit(MediaEvent::Cleared);
                }
                Control::ClearOutput => {
                    let (uplink, overflows) = (&mut self.uplink, &mut self.overflows);
                    self.playback.cut(&mut self.agent_in, &mut |e| uplink.event(overflows, e), &mut self.agent_dropped);
                }
                Control::PeerReport { fraction_lost } => {
                    if let Some(level) = self.peer_loss.as_mut().and_then(|p| p.on_report(fraction_lost)) {
                        self.encoder.set_expected_loss(level);
                    }
                }
                Control::CancelResponse(response) => {
                    let (uplink, overflows) = (&mut self.uplink, &mut self.overflows);
                    self.playback.cancel(
                        response,
                        &mut self.agent_in,
                        &mut |e| uplink.event(overflows, e),
                        &mut self.agent_dropped,
                    );
                }
            }
        }
    }

    /// Stage 2: RTP payloads into the jitter buffer.
    fn receive(&mut self) {
        let now_ms = self.ticks * FRAME_MS as u64;
        while let Ok(packet) = self.ingress.pop() {
            self.packets_in += 1;
            self.jitter.push(&packet, now_ms);
        }
    }

    /// Stage 3: one frame of caller audio -> uplink (24 kHz), VAD at 16 kHz -> turn events.
    fn inbound(&mut self) {
        let source = self.fill_frame();
        if source == Inbound::Waiting {
            return;
        }
        let mut frame = [0i16; SAMPLES_24K];
        frame.copy_from_slice(&self.pcm_in[..SAMPLES_24K]);
        self.pcm_in.copy_within(SAMPLES_24K..self.pcm_in_len, 0);
        self.pcm_in_len -= SAMPLES_24K;

        let start = self.audio_time();
        if let Some(bridge) = &mut self.bridge {
            bridge.forward(&frame, self.frames_in);
        }
        self.frames_in += 1;
        push(&mut self.uplink.ring, &mut self.overflows, Uplink::Audio { start, pcm: frame });

        if !self.turn.config().server_vad {
            return;
        }
        // A DTX frame is digital silence by construction: no level to measure and nothing for the
        // VAD to hear (its state simply skips the pause, as the caller's encoder did).
        let (level, speech) = match source {
            Inbound::Dtx => (0.0, 0.0),
            _ => {
                let mut pcm16 = [0i16; SAMPLES_16K];
                self.to_16k.process(&frame, &mut pcm16);
                // One pass for the level both the echo guard and the turn detector use.
                (rms(&frame), self.vad.frame_16k(&pcm16))
            }
        };
        let (verdict, prob) = self.echo_guard.judge(level, speech);
        if verdict == Verdict::Echo {
            self.echo_frames += 1;
        }
        // The detector knows its VAD's lag: timestamps point at the audio.
        match self.turn.on_frame(prob, dbfs(level), start) {
            Some(TurnEvent::SpeechStarted { audio_start }) => {
                self.emit(MediaEvent::SpeechStarted { audio_start });
                let phase = if self.playback.is_speaking(&self.agent_in) { ResponsePhase::Speaking } else { ResponsePhase::Idle };
                if barge_in::on_speech_started(self.turn.config().interrupt_response, phase) == BargeIn::Cut {
                    self.barge_in();
                }
            }
            Some(TurnEvent::SpeechStopped { audio_end }) => {
                self.emit(MediaEvent::SpeechStopped { audio_end });
                self.emit(MediaEvent::Committed { audio_end });
            }
            None => {}
        }
    }

    /// Decodes until 20 ms of audio is buffered. `Dtx` when the whole frame is the sender's DTX
    /// silence (nothing decoded).
    fn fill_frame(&mut self) -> Inbound {
        let mut source = Inbound::Audio;
        while self.pcm_in_len < SAMPLES_24K {
            let out = &mut self.pcm_in[self.pcm_in_len..];
            let decoded = match self.jitter.pop() {
                Pop::Waiting => return Inbound::Waiting,
                Pop::Dtx => {
                    // Leftover decoded audio (a packet longer than 20 ms) makes it a mixed frame.
                    if self.pcm_in_len == 0 {
                        source = Inbound::Dtx;
                    }
                    self.dtx_frames += 1;
                    out[..SAMPLES_24K].fill(0);
                    Ok(SAMPLES_24K)
                }
                Pop::Packet(packet) => match self.decoder.decode(packet.bytes(), out) {
                    Ok(n) => {
                        self.frames_decoded += 1;
                        Ok(n)
                    }
                    Err(_) => {
                        self.codec_errors += 1;
                        self.concealed += 1;
                        self.decoder.conceal(out)
                    }
                },
                Pop::Lost { next: Some(next) } => {
                    let (result, used_fec) = self.decoder.recover(next.bytes(), out);
                    if used_fec {
                        self.recovered += 1;
                    } else {
                        self.concealed += 1;
                    }
                    result
                }
                Pop::Lost { next: None } | Pop::Underrun => {
                    self.concealed += 1;
                    self.decoder.conceal(out)
                }
            };
            match decoded {
                Ok(n) if n > 0 => self.pcm_in_len += n,
                _ => {
                    // Even PLC failed: play silence rather than stall the clock.
                    self.codec_errors += 1;
                    out[..SAMPLES_24K].fill(0);
                    self.pcm_in_len += SAMPLES_24K;
                }
            }
        }
        source
    }

    /// Caller speech while the agent talks: cut the response within this tick.
    fn barge_in(&mut self) {
        let (uplink, overflows) = (&mut self.uplink, &mut self.overflows);
        self.playback.cut(&mut self.agent_in, &mut |e| uplink.event(overflows, e), &mut self.agent_dropped);
    }

    /// Stage 4: at most one agent frame, and for a room bridge the room's frame -> mixer ->
    /// encoder; with neither, the codec's silence payload.
    fn outbound(&mut self) {
        let silence = self.codec.silence();
        let mut packet =
            EncodedFrame { frame_index: self.frames_out, voiced: false, len: silence.len() as u16, data: [0; MAX_OPUS_PACKET] };
        packet.data[..silence.len()].copy_from_slice(silence);
        let (uplink, overflows) = (&mut self.uplink, &mut self.overflows);
        let next =
            self.playback.next_frame(&mut self.agent_in, &mut |e| uplink.event(overflows, e), &mut self.agent_dropped);
        let mut agent_pcm = [0i16; SAMPLES_24K];
        let agent = match next {
            Some(next) => {
                if next.after_silence {
                    // A fresh start so the previous response's tail does not leak into this one.
                    self.encoder.reset();
                }
                agent_pcm = next.pcm;
                true
            }
            None => false,
        };
        let mut room_pcm = [0i16; SAMPLES_24K];
        let now_ms = self.ticks * FRAME_MS as u64;
        let room = self.bridge.as_mut().is_some_and(|b| b.next_frame(now_ms, &mut room_pcm));
        if agent || room {
            let mut pcm = [0i16; SAMPLES_24K];
            match (agent, room) {
                (true, true) => mix(&[&agent_pcm, &room_pcm], &mut pcm),
                (true, false) => mix(&[&agent_pcm], &mut pcm),
                _ => mix(&[&room_pcm], &mut pcm),
            }
            match self.encoder.encode(&pcm, &mut packet.data) {
                Ok(len) => {
                    packet.len = len as u16;
                    packet.voiced = true;
                    self.voiced_out += 1;
                    if self.echo_guard.is_on() {
                        self.echo_guard.on_sent_frame(&pcm);
                    }
                }
                Err(_) => {
                    self.codec_errors += 1;
                    packet.len = silence.len() as u16;
                    packet.data[..silence.len()].copy_from_slice(silence);
                }
            }
        }
        // The echo guard's reference is what went out: silence too (it may still carry the
        // previous frame's tail).
        if !packet.voiced {
            self.echo_guard.on_sent_frame(&[]);
        }
        self.frames_out += 1;
        push(&mut self.egress, &mut self.overflows, packet);
    }

    fn emit(&mut self, event: MediaEvent) {
        self.uplink.event(&mut self.overflows, event);
    }

    /// Copies this tick's counters into the shared stats (plain stores: only we write).
    fn publish_stats(&self) {
        let s = &*self.stats;
        let j = self.jitter.counters();
        SessionStats::set(&s.packets_in, self.packets_in);
        SessionStats::set(&s.frames_decoded, self.frames_decoded);
        SessionStats::set(&s.dtx_frames, self.dtx_frames);
        SessionStats::set(&s.plc_frames, self.concealed + self.recovered);
        SessionStats::set(&s.concealed, self.concealed);
        SessionStats::set(&s.recovered, self.recovered);
        SessionStats::set(&s.lost, j.lost);
        SessionStats::set(&s.underruns, j.underruns);
        SessionStats::set(&s.jitter_ms, self.jitter.jitter_ms().round() as u64);
        SessionStats::set(&s.jitter_target_ms, self.jitter.target_frames() as u64 * FRAME_MS as u64);
        SessionStats::set(&s.late, j.late);
        SessionStats::set(&s.duplicates, j.duplicates);
        SessionStats::set(&s.padding_packets, j.padding);
        SessionStats::set(&s.jitter_skipped, j.skipped);
        SessionStats::set(&s.codec_errors, self.codec_errors);
        SessionStats::set(&s.ring_overflows, self.overflows);
        SessionStats::set(&s.frames_out, self.frames_out);
        SessionStats::set(&s.voiced_out, self.voiced_out);
        SessionStats::set(&s.agent_frames_dropped, self.agent_dropped);
        SessionStats::set(&s.echo_frames, self.echo_frames);
        // The outbound half's events too, so the next inbound ring does not take them for its own.
        SessionStats::set(&s.uplink_events, self.uplink.events);
        SessionStats::add(&s.ticks, 1);
    }
}

/// The uplink ring, counting the events that go into it: the call's bell wakes the call after
/// an inbound half only if the half had events (`SessionStats::uplink_events`); the caller's
/// audio alone waits for the outbound half's wake.
struct UplinkOut {
    ring: Producer<Uplink>,
    events: u64,
}

impl UplinkOut {
    fn event(&mut self, overflows: &mut u64, event: MediaEvent) {
        self.events += 1;
        push(&mut self.ring, overflows, Uplink::Event(event));
    }
}

/// Never blocks: a full ring drops `item` and counts it.
fn push<T>(ring: &mut Producer<T>, overflows: &mut u64, item: T) {
    if ring.push(item).is_err() {
        *overflows += 1;
    }
}
