//! The client's side of a Realtime WebSocket session, in the order it was sent.
//!
//! Audio is paced: the worker's jitter buffer and turn detector expect audio as it is spoken, one
//! 20 ms frame per tick, but a WebSocket client may send a minute of audio in one message (a
//! file, a test) or in uneven bursts. So each 20 ms frame is pushed into the session's ring at
//! its real-time due date, never earlier; a client that falls behind real time (a pause, a slow
//! network) restarts the schedule, one that sends ahead waits (and, through the bounded queue in
//! front of this task, so does its socket). No audio is dropped for arriving early, and memory
//! stays bounded whatever the client sends.
//!
//! Other events are handed to the call after the audio sent before them has reached the turn
//! detector ([`SETTLE`]), so `append, append, commit` commits both appends and
//! `commit, response.create` answers that turn, as over OpenAI's socket.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;
use voxrelay_media::{PcmInput, RtpIn, SAMPLES_24K};
use voxrelay_signaling::events::{ClientEvent, parse_append, parse_client_event};
use voxrelay_signaling::wire::SessionConfig;
use voxrelay_signaling::{CallId, SocketMessage};

use super::{OutputFormat, law};
use crate::metrics::Metrics;
use crate::transport::{Departure, TransportEvent};

const FRAME: Duration = Duration::from_millis(20);
/// A client this far behind its schedule (a scheduling hiccup here, a burst on the network)
/// still has its frames pushed back to back to catch up; further behind, the schedule restarts
/// now (it paused: the gap is silence to the worker, as a pause in RTP is).
const CATCH_UP: Duration = Duration::from_millis(60);
/// How long after a frame's due date it has surely been through the jitter buffer (which holds
/// one or two frames on a smooth stream) and the worker's next tick.
const SETTLE: Duration = Duration::from_millis(60);

/// When the next frame may go into the ring, and how it is numbered.
struct Pacer {
    next_due: Option<Instant>,
    seq: u16,
}

impl Pacer {
    /// Waits for the next frame's due date; returns its sequence number.
    async fn next(&mut self) -> u16 {
        let now = Instant::now();
        let due = match self.next_due {
            Some(due) if due + CATCH_UP >= now => due,
            _ => now,
        };
        tokio::time::sleep_until(due).await;
        self.next_due = Some(due + FRAME);
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        seq
    }

    /// Waits until the audio pushed so far has reached the turn detector.
    async fn settle(&self) {
        if let Some(due) = self.next_due {
            tokio::time::sleep_until(due + SETTLE).await;
        }
    }
}

pub async fn read_socket(
    call_id: CallId,
    mut from: mpsc::Receiver<SocketMessage>,
    mut ingress: rtrb::Producer<RtpIn>,
    events: mpsc::UnboundedSender<TransportEvent>,
    mut config: SessionConfig,
    mut input: PcmInput,
    output: Arc<OutputFormat>,
    metrics: Arc<Metrics>,
) {
    let _ = events.send(TransportEvent::Connected);
    let mut pacer = Pacer { next_due: None, seq: 0 };
    while let Some(msg) = from.recv().await {
        let text = match msg {
            SocketMessage::Text(text) => text,
            SocketMessage::Binary(len) => {
                let message =
                    format!("binary frame of {len} bytes: Realtime events are JSON text (audio goes base64 in input_audio_buffer.append)");
                let _ = events.send(TransportEvent::Refused { code: "binary_frame", message, event_id: None });
                continue;
            }
            SocketMessage::Lost => {
                let _ = events.send(TransportEvent::Closed(Departure::Failed("the client stopped answering pings")));
                return;
            }
        };
        match parse_append(&text) {
            Some(Ok(append)) => {
                metrics.rtp_in(append.audio.len() as u64);
                let mut rest = &append.audio[..];
                while let Some(frame) = input.next_frame(&mut rest) {
                    let seq = pacer.next().await;
                    let timestamp = u32::from(seq).wrapping_mul(SAMPLES_24K as u32);
                    // An L16 frame (960 bytes) always fits a packet.
                    let Some(packet) = RtpIn::new(seq, timestamp, &frame) else { continue };
                    if ingress.push(packet).is_err() {
                        metrics.ring_overflow();
                    }
                }
            }
            Some(Err(e)) => {
                let _ = events.send(TransportEvent::Refused { code: e.code, message: e.message, event_id: e.event_id });
            }
            None => {
                // A format change applies to the audio after it, as the client sent it; the call
                // applies the same update (and answers it) on its side.
                if let Ok(parsed) = parse_client_event(&text)
                    && let ClientEvent::SessionUpdate(update) = parsed.event
                    && let Ok(next) = update.applied_to(&config)
                {
                    config = next;
                    input.set_law(law(config.input_audio_format));
                    output.set(config.output_audio_format);
                }
                pacer.settle().await;
                if events.send(TransportEvent::ClientText(text)).is_err() {
                    break;
                }
            }
        }
    }
    debug!(call = %call_id, "realtime socket closed by the client");
    let _ = events.send(TransportEvent::Closed(Departure::HungUp("the client closed the socket")));
}
