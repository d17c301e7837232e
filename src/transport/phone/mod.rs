//! Phone calls as a transport (PROTOCOL.md §5): carrier media-stream WebSockets (Twilio Media
//! Streams today). A stream becomes a call like any other: PCMU 8 kHz is a session codec, so the
//! worker decodes, resamples, detects turns and encodes exactly as for a PCMU WebRTC call. This
//! module only carries the audio and the carrier's control messages.
//!
//! - `twilio` — the carrier dialect: message parsing and formatting, nothing else.
//! - `line` — the stream after `start`: audio into the worker's ring, marks (what the caller
//!   heard), `media` + `mark` out, `clear` on barge-in.
//!
//! Limits: a stream that never starts is closed after [`START_TIMEOUT`]; a message is at most
//! `voxrelay_signaling::telephony::MAX_MESSAGE_BYTES`, a media payload at most
//! [`twilio::MAX_MEDIA_PAYLOAD_BYTES`] decoded. Admission (a phone call costs half a call
//! from its upgrade) is `crate::admission`'s.

mod line;
pub mod twilio;

pub use line::{PhoneLine, START_TIMEOUT, await_start, read_stream};

use std::sync::Arc;

use tokio::sync::mpsc;
use voxrelay_media::AudioCodec;
use voxrelay_signaling::wire::BetaSession;
use voxrelay_signaling::{ApiError, SocketMessage, Dialect, SessionConfig};

use super::{Closer, PacketSink, Transport, TransportKind};

/// `customParameters` read from `start` (everything else is ignored): the agent and its settings.
const SESSION_PARAMETERS: [&str; 3] = ["agent", "instructions", "voice"];

/// What a started stream asks for and the transport that carries it.
pub struct Accepted {
    pub transport: Transport,
    pub config: SessionConfig,
    pub dialect: Dialect,
}

/// Turns a started stream into a call transport, with the session its `customParameters` ask for.
pub fn accept(
    start: twilio::Start,
    from_carrier: mpsc::UnboundedReceiver<SocketMessage>,
    to_carrier: mpsc::UnboundedSender<String>,
) -> Result<Accepted, ApiError> {
    let config = session_config(&start.custom_parameters)?;
    let dialect = events_dialect(&start.custom_parameters)?;
    let line = Arc::new(PhoneLine::new(start.stream_sid, to_carrier));
    let (inject, events) = mpsc::unbounded_channel();
    let (reader_line, to_call) = (line.clone(), inject.clone());
    let transport = Transport {
        kind: TransportKind::Twilio,
        codec: AudioCodec::Pcmu,
        events,
        inject,
        heard: Some(line.heard()),
        sink: PacketSink::Phone(line),
        start_reader: Box::new(move |call_id, ingress, metrics| {
            vec![tokio::spawn(line::read_stream(call_id.clone(), from_carrier, ingress, reader_line, to_call, metrics))]
        }),
        closer: Closer::Nothing,
        ice: None,
    };
    Ok(Accepted { transport, config, dialect })
}

/// The session settings a stream asks for through its `customParameters`.
pub fn session_config(params: &std::collections::BTreeMap<String, String>) -> Result<SessionConfig, ApiError> {
    let mut body = serde_json::Map::new();
    for key in SESSION_PARAMETERS {
        if let Some(v) = params.get(key) {
            body.insert(key.into(), v.clone().into());
        }
    }
    let req: BetaSession = serde_json::from_value(body.into()).map_err(|e| ApiError::bad_request("invalid_parameters", e.to_string()))?;
    let mut config = SessionConfig::default();
    config.apply_beta(req)?;
    Ok(config)
}

/// The event names a phone call's watchers get (`GET /v1/calls/<id>/events`): OpenAI's beta
/// names by default, the GA ones with the `dialect=ga` parameter.
pub fn events_dialect(params: &std::collections::BTreeMap<String, String>) -> Result<Dialect, ApiError> {
    match params.get("dialect").map(String::as_str) {
        None | Some("beta") => Ok(Dialect::Beta),
        Some("ga") => Ok(Dialect::Ga),
        Some(other) => Err(ApiError::bad_request("invalid_parameters", format!("dialect must be \"ga\" or \"beta\", not {other:?}"))),
    }
}
