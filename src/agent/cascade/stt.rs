//! The cascade's speech-to-text connection, whichever provider: one WebSocket per call, opened
//! at call start so the first turn does not wait for a handshake; reconnects with backoff, and
//! audio is kept across a reconnect up to 10 s. What goes on the wire and what comes back means
//! is the [`SttWire`]'s business ([`super::deepgram`], [`super::assemblyai`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::Request;
use tracing::{debug, warn};

use super::{CascadeConfig, SttProvider};
use crate::agent::backoff::Backoff;

/// 10 s of 20 ms frames.
const MAX_BUFFERED: usize = 500;

pub enum SttIn {
    /// 20 ms of 16 kHz pcm16, little-endian bytes.
    Audio(Vec<u8>),
    /// The turn is committed: transcribe everything sent so far now.
    Finalize,
}

#[derive(Debug, PartialEq)]
pub enum SttOut {
    Final(String),
    /// Everything sent before the last `Finalize` has been transcribed.
    Finalized,
    Error {
        code: &'static str,
        message: String,
    },
}

/// One provider's wire protocol.
pub trait SttWire: Send + 'static {
    const NAME: &'static str;
    /// The upgrade request (URL from the config, key in a header); `Err` is a config mistake.
    fn request(&self) -> Result<Request<()>, (&'static str, String)>;
    /// Messages for one input; a provider may batch audio into larger frames.
    fn on_input(&mut self, input: SttIn) -> Vec<Message>;
    /// A message to send after `idle` without sending anything, if the provider needs one.
    fn keepalive(&mut self, idle: Duration) -> Option<Message>;
    /// The polite goodbye when the call ends.
    fn close(&mut self) -> Message;
    fn parse(&mut self, v: &Value) -> Vec<SttOut>;
    /// A fresh connection: forget per-connection state.
    fn reset(&mut self) {}
    /// Our error code for a close frame (some providers refuse a key by closing).
    fn close_code(&self, _code: u16, _reason: &str) -> &'static str {
        "provider_disconnected"
    }
}

/// Starts the configured provider's connection task.
pub fn spawn(cfg: Arc<CascadeConfig>, rx: mpsc::Receiver<SttIn>, tx: mpsc::UnboundedSender<SttOut>) -> tokio::task::JoinHandle<()> {
    match cfg.stt {
        SttProvider::Deepgram => tokio::spawn(run(super::deepgram::Deepgram::new(cfg.clone()), cfg, rx, tx)),
        SttProvider::AssemblyAi => tokio::spawn(run(super::assemblyai::AssemblyAi::new(cfg.clone()), cfg, rx, tx)),
    }
}

pub async fn run<W: SttWire>(mut wire: W, cfg: Arc<CascadeConfig>, mut rx: mpsc::Receiver<SttIn>, tx: mpsc::UnboundedSender<SttOut>) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    let mut held: VecDeque<Vec<u8>> = VecDeque::new();
    let mut reported = false;
    loop {
        let req = match wire.request() {
            Ok(r) => r,
            Err((code, message)) => {
                let _ = tx.send(SttOut::Error { code, message });
                return;
            }
        };
        let connected = tokio::time::timeout(cfg.connect_timeout, tokio_tungstenite::connect_async_with_config(req, None, true)).await;
        let error = match connected {
            Ok(Ok((ws, _))) => {
                backoff.reset();
                reported = false;
                wire.reset();
                match serve(ws, &mut wire, &mut rx, &tx, &mut held).await {
                    None => return,
                    Some((code, why)) => (code, format!("{} connection lost: {why}", W::NAME)),
                }
            }
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) if r.status() == 401 || r.status() == 403 => {
                ("provider_auth_failed", format!("{} refused this server's key (HTTP {})", W::NAME, r.status()))
            }
            Ok(Err(e)) => ("provider_unavailable", format!("{} unreachable: {e}", W::NAME)),
            Err(_) => ("provider_unavailable", format!("{}: no answer to the handshake", W::NAME)),
        };
        warn!("{}", error.1);
        if !std::mem::replace(&mut reported, true) {
            let _ = tx.send(SttOut::Error { code: error.0, message: error.1 });
        }
        let delay = if error.0 == "provider_auth_failed" { Duration::from_secs(30) } else { backoff.next_delay() };
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                m = rx.recv() => match m {
                    None => return,
                    Some(SttIn::Audio(a)) => {
                        if held.len() == MAX_BUFFERED {
                            held.pop_front();
                        }
                        held.push_back(a);
                    }
                    // Nothing more will come for this turn while down.
                    Some(SttIn::Finalize) => {
                        let _ = tx.send(SttOut::Finalized);
                    }
                },
            }
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `None` when the call is over; `Some((code, why))` when the connection dropped.
async fn serve<W: SttWire>(
    ws: Ws,
    wire: &mut W,
    rx: &mut mpsc::Receiver<SttIn>,
    tx: &mpsc::UnboundedSender<SttOut>,
    held: &mut VecDeque<Vec<u8>>,
) -> Option<(&'static str, String)> {
    let (mut sink, mut stream) = ws.split();
    let dropped = |e: tokio_tungstenite::tungstenite::Error| Some(("provider_disconnected", e.to_string()));
    for a in held.drain(..).collect::<Vec<_>>() {
        for m in wire.on_input(SttIn::Audio(a)) {
            if let Err(e) = sink.send(m).await {
                return dropped(e);
            }
        }
    }
    let mut last_sent = Instant::now();
    let mut keepalive = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(input) = m else {
                    let _ = sink.send(wire.close()).await;
                    return None;
                };
                for msg in wire.on_input(input) {
                    if let Err(e) = sink.send(msg).await {
                        return dropped(e);
                    }
                    last_sent = Instant::now();
                }
            }
            _ = keepalive.tick() => {
                if let Some(msg) = wire.keepalive(last_sent.elapsed()) {
                    if let Err(e) = sink.send(msg).await {
                        return dropped(e);
                    }
                    last_sent = Instant::now();
                }
            }
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(v) => {
                        for out in wire.parse(&v) {
                            let _ = tx.send(out);
                        }
                    }
                    Err(e) => debug!("{}: unparsable message: {e}", W::NAME),
                },
                Some(Ok(Message::Close(f))) => {
                    let (code, reason) = f.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    return Some((wire.close_code(code, &reason), format!("closed: {code} {reason}")));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return dropped(e),
                None => return Some(("provider_disconnected", "connection ended".into())),
            },
        }
    }
}
