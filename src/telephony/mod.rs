//! Telephony bridge (PROTOCOL.md §5): phone calls arrive as carrier media-stream WebSockets
//! (Twilio Media Streams today) and become calls like any other: one session per stream on the
//! same audio workers (PCMU 8 kHz is a session codec, so the worker decodes, resamples, detects
//! turns and encodes exactly as for a PCMU WebRTC call), the same [`crate::call::run_call`] task,
//! [`crate::call::Conversation`] and agents. This module only adds the transport.
//!
//! - `twilio` — the carrier dialect: message parsing and formatting, nothing else.
//! - `bridge` — the transport: waiting for `start`, audio into the worker's ring, marks (what
//!   the caller heard), `media` + `mark` out, `clear` on barge-in.
//!
//! Limits: a stream counts toward `max_calls` from its upgrade, as a quarter of a call
//! ([`TransportKind::cost_quarters`]; a stream that never starts is
//! closed after [`bridge::START_TIMEOUT`]); a message is at most
//! `voxrelay_signaling::telephony::MAX_MESSAGE_BYTES`, a media payload at most
//! [`twilio::MAX_MEDIA_PAYLOAD_BYTES`] decoded.

mod bridge;
pub mod twilio;

pub use bridge::{PhoneEvent, PhoneLine, START_TIMEOUT};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tracing::{info, warn};
use voxrelay_media::AudioCodec;
use voxrelay_signaling::auth::random_id;
use voxrelay_signaling::wire::BetaSession;
use voxrelay_signaling::{ApiError, CarrierMessage, Dialect, PhoneChannel, SessionConfig};

use crate::engine::{Transport, TransportKind, VoxEngine};
use crate::rtp::PacketSink;

/// `customParameters` read from `start` (everything else is ignored): the agent and its settings.
const SESSION_PARAMETERS: [&str; 3] = ["agent", "instructions", "voice"];

/// Accepts a Twilio media stream: admission now, the call once `start` arrives.
pub fn open_twilio_stream(engine: &Arc<VoxEngine>) -> Result<PhoneChannel, ApiError> {
    engine.admit(TransportKind::Twilio)?;
    engine.phone_pending.fetch_add(1, Ordering::SeqCst);
    let (to_carrier, to_rx) = mpsc::unbounded_channel();
    let (from_tx, mut from_carrier) = mpsc::unbounded_channel();
    let engine = engine.clone();
    tokio::spawn(async move {
        let start = bridge::await_start(&mut from_carrier, &engine.metrics).await;
        engine.phone_pending.fetch_sub(1, Ordering::SeqCst);
        let Some(start) = start else { return };
        let (stream, call) = (start.stream_sid.clone(), start.call_sid.clone());
        match start_call(&engine, start, from_carrier, to_carrier).await {
            Ok(id) => info!(call = %id, stream = %stream, twilio_call = %call, "phone stream bridged"),
            // Dropping the channel closes the socket: Twilio ends the <Connect> and moves on.
            Err(e) => warn!(stream = %stream, "phone stream refused: {e}"),
        }
    });
    Ok(PhoneChannel { to_carrier: to_rx, from_carrier: from_tx })
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

async fn start_call(
    engine: &Arc<VoxEngine>,
    start: twilio::Start,
    from_carrier: mpsc::UnboundedReceiver<CarrierMessage>,
    to_carrier: mpsc::UnboundedSender<String>,
) -> Result<String, ApiError> {
    engine.admit(TransportKind::Twilio)?;
    let config = session_config(&start.custom_parameters)?;
    let dialect = events_dialect(&start.custom_parameters)?;
    let line = Arc::new(PhoneLine::new(start.stream_sid, to_carrier));
    let (inject, events) = mpsc::unbounded_channel();
    let (reader_line, reader_events, metrics) = (line.clone(), inject.clone(), engine.metrics.clone());
    let transport = Transport {
        peer: None,
        events,
        inject,
        early_events: Vec::new(),
        heard: Some(line.heard()),
        sink: PacketSink::Phone(line),
        tasks: Vec::new(),
        ssrc: 0,
        payload_type: 0,
        codec: AudioCodec::Pcmu,
        kind: TransportKind::Twilio,
        ingest: Some(Box::new(move |call_id, ingress| {
            tokio::spawn(bridge::read_stream(call_id, from_carrier, ingress, reader_line, reader_events, metrics))
        })),
    };
    // No media socket of our own: the stream rides the HTTP connection.
    let addr = SocketAddr::from(([0, 0, 0, 0], 0));
    engine.launch(transport, config, dialect, random_id("sess_"), addr).await
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
