//! The test client's audio (`client`): encoding what it sends in the call's codec, paced at
//! 20 ms (with DTX as a browser sends it, and the network faults asked for), and decoding what
//! it hears to measure its level.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use voxrelay_media::{
    AudioCodec, G711_FRAME_BYTES, G711Law, MAX_OPUS_PACKET, OPUS_SILENCE, OpusDecoder, OpusEncoder, Resampler, SAMPLES_48K, SampleRate,
};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use super::client::{OutFrame, Outbox, Sent, VOICED_RMS, rms};
use super::peer::samples_per_frame;

/// Encodes the client's outgoing 48 kHz frames in the call's codec.
pub(super) enum FrameEncoder {
    Opus(OpusEncoder),
    G711 { law: G711Law, down: Resampler },
}

impl FrameEncoder {
    pub(super) fn new(codec: AudioCodec) -> Option<Self> {
        match codec {
            AudioCodec::Opus => OpusEncoder::new().ok().map(FrameEncoder::Opus),
            AudioCodec::Pcmu | AudioCodec::Pcma => Some(FrameEncoder::G711 {
                law: if codec == AudioCodec::Pcmu { G711Law::Mu } else { G711Law::A },
                down: Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_8K).ok()?,
            }),
            // Not a WebRTC codec (WebSocket sessions only).
            AudioCodec::L16 => None,
        }
    }

    fn encode(&mut self, pcm: &[i16; SAMPLES_48K]) -> Option<Bytes> {
        match self {
            FrameEncoder::Opus(enc) => {
                let mut buf = [0u8; MAX_OPUS_PACKET];
                let n = enc.encode(pcm, &mut buf).ok()?;
                Some(Bytes::copy_from_slice(&buf[..n]))
            }
            FrameEncoder::G711 { law, down } => {
                let mut pcm8 = [0i16; G711_FRAME_BYTES];
                down.process(pcm, &mut pcm8);
                let mut codes = [0u8; G711_FRAME_BYTES];
                law.encode(&pcm8, &mut codes);
                Some(Bytes::copy_from_slice(&codes))
            }
        }
    }

    /// What an idle client sends: Opus's 3-byte silence, or 20 ms of G.711 silence.
    fn silence(&self) -> Bytes {
        match self {
            FrameEncoder::Opus(_) => Bytes::from_static(&OPUS_SILENCE),
            FrameEncoder::G711 { law, .. } => Bytes::from(vec![law.silence_byte(); G711_FRAME_BYTES]),
        }
    }
}

/// Decodes received payloads to measure their level.
pub(super) enum FrameDecoder {
    Opus(OpusDecoder, Vec<i16>),
    G711(G711Law, Vec<i16>),
}

impl FrameDecoder {
    pub(super) fn new(codec: AudioCodec) -> Option<Self> {
        match codec {
            AudioCodec::Opus => OpusDecoder::new().ok().map(|d| FrameDecoder::Opus(d, vec![0; SAMPLES_48K * 6])),
            AudioCodec::Pcmu => Some(FrameDecoder::G711(G711Law::Mu, vec![0; G711_FRAME_BYTES * 6])),
            AudioCodec::Pcma => Some(FrameDecoder::G711(G711Law::A, vec![0; G711_FRAME_BYTES * 6])),
            AudioCodec::L16 => None,
        }
    }

    /// The frame's samples and their rate.
    pub(super) fn decode(&mut self, payload: &[u8]) -> (u32, &[i16]) {
        match self {
            FrameDecoder::Opus(d, pcm) => {
                let n = d.decode(payload, pcm).unwrap_or(0);
                (48_000, &pcm[..n])
            }
            FrameDecoder::G711(law, pcm) => {
                let n = payload.len().min(pcm.len());
                law.decode(&payload[..n], &mut pcm[..n]);
                (8_000, &pcm[..n])
            }
        }
    }
}

/// Where the client's packets go: its outbound track (SRTP by the stack) or a plain UDP socket.
#[derive(Clone)]
pub(super) enum ClientSink {
    Track(Arc<TrackLocalStaticRTP>),
    Udp { socket: Arc<tokio::net::UdpSocket>, to: std::net::SocketAddr },
}

impl ClientSink {
    async fn send(&self, packet: rtc::rtp::Packet) -> bool {
        use rtc::shared::marshal::Marshal;
        match self {
            ClientSink::Track(track) => track.write_rtp(packet).await.is_ok(),
            ClientSink::Udp { socket, to } => match packet.marshal() {
                Ok(bytes) => socket.send_to(&bytes, to).await.is_ok(),
                Err(_) => false,
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn send_loop(
    sink: ClientSink,
    ssrc: u32,
    payload_type: u8,
    codec: AudioCodec,
    dtx: bool,
    outbox: Arc<Mutex<Outbox>>,
    sent: Arc<Mutex<Vec<Sent>>>,
    faults: crate::transport::impair::NetworkFaults,
) {
    let Some(mut encoder) = FrameEncoder::new(codec) else { return };
    if dtx && let FrameEncoder::Opus(enc) = &mut encoder {
        let _ = enc.set_dtx(true);
    }
    let mut gate = voxrelay_media::DtxGate::new(dtx);
    let mut packets = 0u64;
    let silence = encoder.silence();
    let quiet = Box::new([0i16; SAMPLES_48K]);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let ts_step = samples_per_frame(codec);
    loop {
        tick.tick().await;
        let frame = {
            let mut o = outbox.lock().unwrap_or_else(|p| p.into_inner());
            o.sent_frames += 1;
            o.queue.pop_front()
        };
        let (payload, voiced) = match frame {
            // A browser's encoder codes its silence too; in DTX that is what goes quiet.
            None if dtx => (encoder.encode(&quiet).unwrap_or_else(|| silence.clone()), false),
            None => (silence.clone(), false),
            Some(OutFrame::Opus { payload, voiced }) => (payload, voiced),
            Some(OutFrame::Pcm(pcm)) => match encoder.encode(&pcm) {
                Some(bytes) => (bytes, rms(&pcm[..]) > VOICED_RMS),
                None => (silence.clone(), false),
            },
        };
        let frame_ts = ts;
        ts = ts.wrapping_add(ts_step);
        if !gate.sends(&payload) {
            // Not on the wire, but on the caller's audio timeline all the same.
            sent.lock().unwrap_or_else(|p| p.into_inner()).push(Sent { at: Instant::now(), voiced });
            continue;
        }
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header { version: 2, payload_type, sequence_number: seq, timestamp: frame_ts, ssrc, ..Default::default() },
            payload,
        };
        seq = seq.wrapping_add(1);
        let fate = faults.fate(packets);
        packets += 1;
        match fate {
            // Lost on the way.
            None => {}
            Some(delay) if delay.is_zero() => {
                if !sink.send(packet).await {
                    break;
                }
            }
            Some(delay) => {
                let sink = sink.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    sink.send(packet).await;
                });
            }
        }
        sent.lock().unwrap_or_else(|p| p.into_inner()).push(Sent { at: Instant::now(), voiced });
    }
}
