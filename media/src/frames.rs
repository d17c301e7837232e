//! The fixed-size values that cross between tokio and the audio workers, and the frame constants.
//! Owns: frame sizes, ring capacities, and the `Copy` types carried by the rings.
//! Must never: hold heap data (every ring slot is a plain fixed-size value, so pushing and
//! popping never allocates) or know about sockets, RTP headers beyond seq/timestamp, or JSON.

/// One audio frame lasts 20 ms everywhere in voxrelay.
pub const FRAME_MS: u32 = 20;
/// One 20 ms frame at 48 kHz mono (Opus's native rate).
pub const SAMPLES_48K: usize = 960;
/// One 20 ms frame at 24 kHz mono (the provider rate for uplink and agent audio).
pub const SAMPLES_24K: usize = 480;
/// One 20 ms frame at 16 kHz mono (the VAD rate).
pub const SAMPLES_16K: usize = 320;
/// RFC 6716 §3.4: the largest single-frame Opus packet, in bytes.
pub const MAX_OPUS_PACKET: usize = 1275;

use crate::AudioTime;
use std::time::Duration;

/// Ring capacities, in slots, chosen per direction (slot sizes ≈ 1.3 KB for RTP/Opus, ≈ 1 KB
/// for PCM frames). They bound memory per session (≈ 0.16 MB in total) and how far a side may
/// run ahead of the other; each ring was halved where measured RSS per call showed it (BENCHMARKS.md
/// "Memory per call, part 3") while its slack stays far above what a tick or a tokio hiccup needs.
/// Inbound RTP: 32 packets = 640 ms of slack if the worker stalls (it drains every 20 ms).
pub const INGRESS_RING: usize = 32;
/// Control commands: a handful per turn.
pub const CONTROL_RING: usize = 32;
/// Agent speech: 32 frames = 640 ms at 24 kHz (31 KB). Providers stream faster than real
/// time; the call task tops the ring up at every tick and the agent keeps the rest on its side
/// (it is pulled only while the ring has room), so more depth would only cost memory: at 500
/// frames this ring was the largest allocation of a call (484 KB; BENCHMARKS "Memory per call").
pub const AGENT_RING: usize = 32;
/// Outbound Opus: 16 packets = 320 ms for the RTP writer to fall behind before frames drop.
pub const EGRESS_RING: usize = 16;
/// Uplink audio + events: 32 entries ≈ 600 ms of caller audio (the call task drains it after
/// every outbound half, and after an inbound half with events).
pub const UPLINK_RING: usize = 32;

/// An RFC 6464 audio level: the sender's level of this packet's audio in -dBov (0 = loudest,
/// 127 = silence), and its voice-activity flag. Rooms rank active speakers by it without
/// decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioLevel {
    /// -dBov, 0..=127.
    pub minus_dbov: u8,
    pub voice: bool,
}

impl AudioLevel {
    /// Parses the one-byte extension element (`V` bit, then 7 bits of level).
    pub fn from_extension(data: &[u8]) -> Option<Self> {
        let &b = data.first()?;
        Some(AudioLevel { minus_dbov: b & 0x7f, voice: b & 0x80 != 0 })
    }

    /// Measures a frame as a sender computes the extension (RFC 6464 §3: the RMS of the
    /// frame's samples in dBov, rounded, 127 for digital silence): the fallback for peers that do
    /// not send it, wherever the server decodes anyway. `voice` is left to the caller's VAD.
    pub fn from_pcm(pcm: &[i16], voice: bool) -> Self {
        let rms = crate::rms(pcm) / 32768.0;
        if rms == 0.0 {
            return AudioLevel { minus_dbov: 127, voice };
        }
        let minus_dbov = (-20.0 * rms.log10()).round().clamp(0.0, 127.0) as u8;
        AudioLevel { minus_dbov, voice }
    }
}

/// One inbound media payload with its source, tokio -> worker: RTP, or a carrier chunk given
/// RTP-like numbering by its transport.
#[derive(Clone, Copy)]
pub struct RtpIn {
    /// RTP sequence number; the jitter buffer orders by it.
    pub seq: u16,
    /// RTP timestamp (48 kHz clock for Opus). Carried for diagnostics; playout is seq-driven.
    pub timestamp: u32,
    /// The stream the packet belongs to (0 where the wire has none: carrier streams).
    pub ssrc: u32,
    /// The sender's audio level, when the wire carries it (RFC 6464).
    pub audio_level: Option<AudioLevel>,
    /// Valid bytes in `payload`.
    pub len: u16,
    pub payload: [u8; MAX_OPUS_PACKET],
}

impl RtpIn {
    /// Copies `payload` into a fixed-size frame. `None` if it is longer than [`MAX_OPUS_PACKET`].
    pub fn new(seq: u16, timestamp: u32, payload: &[u8]) -> Option<Self> {
        if payload.len() > MAX_OPUS_PACKET {
            return None;
        }
        let mut frame = RtpIn { seq, timestamp, ssrc: 0, audio_level: None, len: payload.len() as u16, payload: [0; MAX_OPUS_PACKET] };
        frame.payload[..payload.len()].copy_from_slice(payload);
        Some(frame)
    }

    /// Tags the frame with its stream and level.
    pub fn with_source(mut self, ssrc: u32, audio_level: Option<AudioLevel>) -> Self {
        self.ssrc = ssrc;
        self.audio_level = audio_level;
        self
    }

    /// The valid payload bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.payload[..self.len as usize]
    }
}

impl std::fmt::Debug for RtpIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtpIn")
            .field("seq", &self.seq)
            .field("timestamp", &self.timestamp)
            .field("ssrc", &self.ssrc)
            .field("audio_level", &self.audio_level)
            .field("len", &self.len)
            .finish()
    }
}

/// Commands, tokio -> worker. Applied at the start of the next tick, in order.
#[derive(Clone, Copy, Debug)]
pub enum Control {
    /// Replace the turn-detection settings; a speech run in progress is discarded.
    SetTurn(crate::TurnDetectConfig),
    /// Manual commit (push-to-talk): the worker emits [`MediaEvent::Committed`] at the current
    /// audio time.
    CommitInput,
    /// Discard the current uncommitted speech state; the worker emits [`MediaEvent::Cleared`].
    ClearInput,
    /// Drop all agent audio queued at the time the worker handles this (and the rest of those
    /// responses); emits [`MediaEvent::PlaybackCleared`] if something was playing or queued.
    ClearOutput,
    /// Drop queued and future audio frames of this response id and of all older ids.
    CancelResponse(u64),
    /// An RTCP receiver report from the peer about the session's outbound stream: its fraction
    /// lost (RFC 3550 §6.4.1, in 256ths). Sizes the encoder's in-band FEC ([`crate::PeerLoss`])
    /// unless the session's [`crate::OutboundFec`] is fixed.
    PeerReport { fraction_lost: u8 },
}

/// Agent speech, tokio -> worker: 24 kHz mono 20 ms frames. Response ids must not decrease.
// Ring slots are fixed-size by design (no heap per frame), so the small variant's padding is fine.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy)]
pub enum AgentFrame {
    Audio { response: u64, pcm: [i16; SAMPLES_24K] },
    /// The response has no more audio. After everything before it has played the worker emits
    /// [`MediaEvent::PlaybackFinished`] (with `played` zero if the response had no audio),
    /// unless the response was cancelled.
    End { response: u64 },
}

impl AgentFrame {
    pub fn response(&self) -> u64 {
        match *self {
            AgentFrame::Audio { response, .. } | AgentFrame::End { response } => response,
        }
    }
}

/// Worker -> tokio, in order.
#[allow(clippy::large_enum_variant)] // fixed-size ring slots, see AgentFrame
#[derive(Clone, Copy)]
pub enum Uplink {
    /// Caller audio resampled to 24 kHz; `start` is where the frame begins on the call's audio
    /// timeline.
    Audio { start: AudioTime, pcm: [i16; SAMPLES_24K] },
    Event(MediaEvent),
}

/// What the worker tells the session, with positions on the call's inbound audio timeline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MediaEvent {
    /// Audio time where speech began (the onset of the voiced run, not when it was confirmed).
    SpeechStarted { audio_start: AudioTime },
    /// Audio time where speech ended (the start of the silence run).
    SpeechStopped { audio_end: AudioTime },
    /// Right after `SpeechStopped` with server VAD, or on [`Control::CommitInput`].
    Committed { audio_end: AudioTime },
    /// After [`Control::ClearInput`].
    Cleared,
    /// The first audio frame of a response went out.
    PlaybackStarted { response: u64 },
    /// Everything of the response before its `End` went out.
    PlaybackFinished { response: u64, played: Duration },
    /// Barge-in, `ClearOutput` or `CancelResponse` cut the response after `played` of audio.
    PlaybackCleared { response: u64, played: Duration },
}

/// Encoded outbound frame, worker -> tokio RTP writer. Exactly one per 20 ms tick per session
/// (the Opus silence packet while the agent is not speaking, so the stream stays continuous).
#[derive(Clone, Copy)]
pub struct EncodedFrame {
    /// Counts ticks of this session from 0; the RTP writer derives seq and timestamp from it.
    pub frame_index: u64,
    /// True when this carries agent speech, false for the silence packet.
    pub voiced: bool,
    pub len: u16,
    pub data: [u8; MAX_OPUS_PACKET],
}

impl EncodedFrame {
    /// The valid packet bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }
}

impl std::fmt::Debug for EncodedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedFrame").field("frame_index", &self.frame_index).field("voiced", &self.voiced).field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::AudioLevel;

    #[test]
    fn measured_level_is_rms_in_dbov() {
        let level = |pcm: &[i16]| AudioLevel::from_pcm(pcm, false).minus_dbov;
        assert_eq!(level(&[i16::MIN; 960]), 0, "full-scale square");
        let sine: Vec<i16> = (0..960).map(|i| (32767.0 * (i as f64 * 0.1).sin()) as i16).collect();
        assert_eq!(level(&sine), 3, "full-scale sine is -3 dBov");
        assert_eq!(level(&[33; 960]), 60, "1/1000 of full scale");
        assert_eq!(level(&[1; 960]), 90, "one LSB, the quietest non-silence");
        assert_eq!(level(&[0; 960]), 127, "digital silence");
        assert_eq!(level(&[]), 127);
    }
}
