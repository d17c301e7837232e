//! Realtime sessions over WebSocket as a transport (PROTOCOL.md §8): the client's audio arrives
//! base64 in `input_audio_buffer.append` events and the agent's leaves in `response.audio.delta`
//! events, on the same socket as every other event. The session runs on the audio workers like
//! any call, with the [`AudioCodec::L16`] codec (24 kHz PCM, OpenAI's `pcm16`); G.711 formats
//! are converted at this edge ([`voxrelay_media::PcmInput`]/[`PcmOutput`]), so a session may
//! change format at any `session.update`.
//!
//! - `reader` — the client's messages in order: audio framed and *paced* into the worker's ring
//!   in real time (why: [`reader`]'s docs), every other event handed to the call after the audio
//!   before it.
//!
//! Pacing out: the worker emits one frame per 20 ms, so the client receives the agent's audio in
//! real time, 20 ms per delta, never ahead of what it can play. That keeps the server's idea of
//! what was heard exact (a barge-in truncates the item where the client's playback is, give or
//! take its own buffer) and a cancelled answer costs the client nothing to drop.

mod reader;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::mpsc;
use voxrelay_media::{AudioCodec, EncodedFrame, G711Law, PcmInput, PcmLaw, PcmOutput};
use voxrelay_signaling::wire::{AudioFormat, SessionConfig};
use voxrelay_signaling::{ApiError, SocketMessage};

use super::{Closer, PacketSink, Transport, TransportEvent, TransportKind};

/// Client messages waiting for the session (each may be a large `append`): beyond this the
/// socket is not read (TCP slows the client down) until the session has taken audio in.
pub const INBOUND_QUEUE: usize = 8;

/// The output format, shared by the reader (which sees `session.update` in the client's order)
/// and the sink (which converts each frame as it goes out).
#[derive(Debug, Default)]
pub struct OutputFormat(AtomicU8);

impl OutputFormat {
    fn set(&self, f: AudioFormat) {
        self.0.store(f as u8, Ordering::Relaxed);
    }

    fn law(&self) -> PcmLaw {
        match self.0.load(Ordering::Relaxed) {
            x if x == AudioFormat::G711Ulaw as u8 => Some(G711Law::Mu),
            x if x == AudioFormat::G711Alaw as u8 => Some(G711Law::A),
            _ => None,
        }
    }
}

/// The media codec of a Realtime audio format.
pub fn law(format: AudioFormat) -> PcmLaw {
    match format {
        AudioFormat::Pcm16 => None,
        AudioFormat::G711Ulaw => Some(G711Law::Mu),
        AudioFormat::G711Alaw => Some(G711Law::A),
    }
}

/// The outbound side: the session's L16 frames in the client's output format, for the call to
/// send as `response.audio.delta` events.
pub struct AudioOut {
    format: Arc<OutputFormat>,
    convert: PcmOutput,
}

impl AudioOut {
    /// One frame as the client's format.
    pub fn convert(&mut self, frame: &EncodedFrame) -> Vec<u8> {
        self.convert.set_law(self.format.law());
        let mut out = Vec::with_capacity(frame.bytes().len());
        self.convert.convert(frame.bytes(), &mut out);
        out
    }
}

/// A session socket as a call transport. `config` is the session as it starts (its formats);
/// the reader follows the client's `session.update`s from there.
pub fn accept(
    config: &SessionConfig,
    from_client: mpsc::Receiver<SocketMessage>,
    to_client: mpsc::UnboundedSender<String>,
) -> Result<Transport, ApiError> {
    let media_err = |e| ApiError::internal(format!("audio format converter: {e:?}"));
    let input = PcmInput::new(law(config.input_audio_format)).map_err(media_err)?;
    let convert = PcmOutput::new(law(config.output_audio_format)).map_err(media_err)?;
    let output = Arc::new(OutputFormat::default());
    output.set(config.output_audio_format);
    let (inject, events) = mpsc::unbounded_channel();
    // The socket is where the session's events go: open from the start.
    let _ = inject.send(TransportEvent::EventsOpened(to_client));
    let (to_call, reader_output, config) = (inject.clone(), output.clone(), config.clone());
    Ok(Transport {
        kind: TransportKind::WebSocket,
        codec: AudioCodec::L16,
        events,
        inject,
        heard: None,
        sink: PacketSink::Events(AudioOut { format: output, convert }),
        start_reader: Box::new(move |call_id, ingress, metrics| {
            vec![tokio::spawn(reader::read_socket(call_id.clone(), from_client, ingress, to_call, config, input, reader_output, metrics))]
        }),
        closer: Closer::Nothing,
        ice: None,
    })
}
