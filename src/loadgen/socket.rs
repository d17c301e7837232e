//! What the WebSocket sessions of the load generator share (phone streams, Realtime sockets):
//! dialling with a bounded wait, and turning what a session sent and heard into its result.

use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::handshake::client::Request;

use super::{LoadgenConfig, Progress};
use crate::client::{Received, Sent};
use crate::loadgen::report::SessionResult;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Upgrades `request` (10 s at most); the socket and the upgrade time in ms, or the cause.
pub async fn dial(request: Request) -> Result<(Socket, f64), String> {
    let dialled = Instant::now();
    match tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(request)).await {
        Ok(Ok((ws, _))) => Ok((ws, dialled.elapsed().as_secs_f64() * 1000.0)),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => Err(format!("upgrade: http_{}", r.status().as_u16())),
        Ok(Err(e)) => Err(format!("upgrade: {e}")),
        Err(_) => Err("upgrade: timeout".into()),
    }
}

/// A finished session's measurements: first audio, turns answered and their latency (from the
/// last voiced frame sent to the first voiced frame back), frames, and pacing jitter (TCP loses
/// nothing; what can suffer is the pacing).
pub fn finish(
    mut result: SessionResult,
    sent: &[Sent],
    received: &[Received],
    upgraded_ms: f64,
    cfg: &LoadgenConfig,
    progress: &Progress,
) -> SessionResult {
    result.first_audio_ms = received.first().zip(sent.first()).map(|(r, s)| r.at.duration_since(s.at).as_secs_f64() * 1000.0 + upgraded_ms);
    let (turns, latencies) = super::turn_latencies(sent, received, f64::from(cfg.silence_ms));
    result.turns_sent = turns;
    result.turns_answered = latencies.len();
    progress.latencies.lock().unwrap_or_else(|p| p.into_inner()).extend(&latencies);
    result.turn_latency_ms = latencies;
    result.packets_received = received.len();
    result.jitter_ms = super::pacing_jitter_ms(received);
    progress.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    result
}
