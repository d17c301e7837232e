//! One carrier media stream after `start`: the caller's mu-law chunks go into the session's
//! ingress ring (the worker's jitter buffer reorders them by chunk number and conceals gaps, as
//! for RTP), and the worker's PCMU egress frames go back as `media` + `mark` pairs.
//! Owns: the stream's life before `start` (nothing is allocated for a stream that never starts),
//! the mark bookkeeping (what the caller has actually heard), and turning bad messages into
//! logged errors and call `error` events. Must never: block on the worker's rings (a full ring
//! drops and counts), or let one stream's bad input reach another call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use voxrelay_media::RtpIn;
use voxrelay_signaling::{CallId, SocketMessage};

use super::twilio::{self, DialectError, Inbound, Start};
use crate::metrics::Metrics;
use crate::transport::{Departure, TransportEvent};

/// A stream that has not sent `start` this long after the upgrade is closed.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bad messages logged at warn level per stream; later ones at debug (a broken or hostile
/// client must not flood the log). All of them still reach the call's event stream.
const LOGGED_ERRORS: u32 = 10;

/// The outbound half of a stream, shared by the call task (which sends) and the reader (which
/// sees marks come back).
pub struct PhoneLine {
    stream_sid: String,
    to_carrier: mpsc::UnboundedSender<String>,
    /// Voiced frames sent so far; frame `n` is followed by mark `"n"`.
    sent: AtomicU64,
    /// Frames the caller has heard: one past the newest mark that came back.
    heard: Arc<AtomicU64>,
}

impl PhoneLine {
    pub fn new(stream_sid: String, to_carrier: mpsc::UnboundedSender<String>) -> Self {
        Self { stream_sid, to_carrier, sent: AtomicU64::new(0), heard: Arc::new(AtomicU64::new(0)) }
    }

    /// Sends one 20 ms mu-law frame and the mark that acknowledges it. False once the socket is gone.
    pub fn send_frame(&self, mulaw: &[u8]) -> bool {
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        self.to_carrier.send(twilio::media_message(&self.stream_sid, mulaw)).is_ok()
            && self.to_carrier.send(twilio::mark_message(&self.stream_sid, &n.to_string())).is_ok()
    }

    /// Drops whatever the carrier still has buffered for the caller (barge-in).
    pub fn clear(&self) {
        let _ = self.to_carrier.send(twilio::clear_message(&self.stream_sid));
    }

    /// Counts frames heard, as acknowledged by marks; the conversation truncates at it.
    pub fn heard(&self) -> Arc<AtomicU64> {
        self.heard.clone()
    }

    fn on_mark(&self, name: &str) {
        if let Ok(n) = name.parse::<u64>() {
            self.heard.fetch_max(n + 1, Ordering::Relaxed);
        }
    }
}

/// Waits for `start` (answering everything before it), then returns it with the rest of the
/// stream. `None`: the socket closed or never started.
pub async fn await_start(from: &mut mpsc::UnboundedReceiver<SocketMessage>, metrics: &Metrics) -> Option<Start> {
    let mut errors = 0;
    let wait = async {
        while let Some(msg) = from.recv().await {
            let result = match msg {
                SocketMessage::Binary(len) => Err(binary_error(len)),
                SocketMessage::Text(text) => twilio::parse(&text),
                SocketMessage::Lost => return None,
            };
            match result {
                Ok(Inbound::Start(start)) => return Some(start),
                Ok(Inbound::Connected) => {}
                Ok(Inbound::Stop) => return None,
                Ok(Inbound::Media(_)) => {
                    log_error(&mut errors, metrics, "-", &twilio_err("media_before_start", "media before start: dropped"))
                }
                Ok(_) => log_error(&mut errors, metrics, "-", &twilio_err("unexpected_event", "event before start: ignored")),
                Err(e) => log_error(&mut errors, metrics, "-", &e),
            }
        }
        None
    };
    match tokio::time::timeout(START_TIMEOUT, wait).await {
        Ok(start) => start,
        Err(_) => {
            info!("phone stream sent no start within {START_TIMEOUT:?}: closed");
            None
        }
    }
}

fn twilio_err(code: &'static str, message: &str) -> DialectError {
    DialectError { code, message: message.into() }
}

fn binary_error(len: usize) -> DialectError {
    twilio_err("binary_frame", &format!("binary frame of {len} bytes: Media Streams messages are JSON text"))
}

fn log_error(errors: &mut u32, metrics: &Metrics, call: &str, e: &DialectError) {
    *errors += 1;
    metrics.phone_bad_messages.fetch_add(1, Ordering::Relaxed);
    if *errors <= LOGGED_ERRORS {
        warn!(call, code = e.code, "phone stream: {}", e.message);
    } else {
        debug!(call, code = e.code, "phone stream: {}", e.message);
    }
}

/// The stream after `start`: audio into the worker, marks into the line, DTMF and errors to the
/// call task. Ends (reporting the stream closed) on `stop` or when the socket goes away.
/// A carrier sends a `media` message every 20 ms for the whole call; a stream silent this long
/// counts as interrupted (its TCP peer may be gone without a FIN), and the call's `Link` ends it
/// after its grace unless messages resume.
pub const QUIET_CARRIER: Duration = Duration::from_secs(5);

pub async fn read_stream(
    call_id: CallId,
    mut from: mpsc::UnboundedReceiver<SocketMessage>,
    mut ingress: rtrb::Producer<RtpIn>,
    line: Arc<PhoneLine>,
    events: mpsc::UnboundedSender<TransportEvent>,
    metrics: Arc<Metrics>,
) {
    let _ = events.send(TransportEvent::Connected);
    let mut errors = 0;
    let mut quiet = false;
    loop {
        let msg = match tokio::time::timeout(QUIET_CARRIER, from.recv()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => break,
            Err(_) => {
                if !quiet {
                    quiet = true;
                    let _ = events.send(TransportEvent::Interrupted);
                }
                continue;
            }
        };
        if std::mem::take(&mut quiet) {
            let _ = events.send(TransportEvent::Connected);
        }
        let result = match msg {
            SocketMessage::Binary(len) => Err(binary_error(len)),
            SocketMessage::Text(text) => twilio::parse(&text),
            SocketMessage::Lost => {
                let _ = events.send(TransportEvent::Closed(Departure::Failed("the carrier stopped answering")));
                return;
            }
        };
        let refused = match result {
            Ok(Inbound::Media(m)) => {
                metrics.rtp_in(m.payload.len() as u64);
                // Chunks count media messages only (sequenceNumber also counts marks and DTMF,
                // so it has gaps that are not losses); the RTP clock is 8 kHz.
                let seq = m.chunk as u16;
                let timestamp = (m.timestamp_ms * 8) as u32;
                match RtpIn::new(seq, timestamp, &m.payload) {
                    Some(frame) => {
                        if ingress.push(frame).is_err() {
                            metrics.ring_overflow();
                        }
                        None
                    }
                    None => Some(twilio_err("payload_too_large", "media payload too large")),
                }
            }
            Ok(Inbound::Mark { name }) => {
                line.on_mark(&name);
                None
            }
            Ok(Inbound::Dtmf { digit }) => {
                let _ = events.send(TransportEvent::Dtmf(digit));
                None
            }
            Ok(Inbound::Stop) => break,
            Ok(Inbound::Connected) => None,
            Ok(Inbound::Start(_)) => Some(twilio_err("duplicate_start", "a second start on a started stream: ignored")),
            Err(e) => Some(e),
        };
        if let Some(e) = refused {
            log_error(&mut errors, &metrics, call_id.as_str(), &e);
            let _ = events.send(TransportEvent::Refused { code: e.code, message: e.message, event_id: None });
        }
    }
    debug!(call = %call_id, "phone stream ended");
    let _ = events.send(TransportEvent::Closed(Departure::HungUp("the carrier stream ended")));
}
