//! Speech-to-text over Deepgram's live WebSocket (`/v1/listen`): linear16 at 16 kHz in binary
//! frames, `Results` with interim and final transcripts out. One connection per call, opened at
//! call start so the first turn does not wait for a handshake. Deepgram closes a stream after
//! 10 s without audio, and audio is gated to speech, so a `KeepAlive` goes out after 5 s of
//! quiet. At a commit, `Finalize` flushes what Deepgram holds; its answer carries
//! `from_finalize`. Reconnects with backoff; audio is kept across a reconnect up to 10 s.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tracing::{debug, warn};

use super::CascadeConfig;
use crate::agent::backoff::Backoff;

pub const KEEPALIVE_AFTER: Duration = Duration::from_secs(5);
/// 10 s of 20 ms frames.
const MAX_BUFFERED: usize = 500;

pub enum SttIn {
    /// 20 ms of 16 kHz pcm16, little-endian bytes.
    Audio(Vec<u8>),
    Finalize,
}

#[derive(Debug, PartialEq)]
pub enum SttOut {
    Final(String),
    /// Everything sent before the last `Finalize` has been transcribed.
    Finalized,
    Error { code: &'static str, message: String },
}

pub fn url(cfg: &CascadeConfig) -> String {
    format!(
        "{}?model={}&language={}&encoding=linear16&sample_rate=16000&channels=1&interim_results=true&punctuate=true&smart_format=true",
        cfg.stt_url, cfg.stt_model, cfg.stt_language
    )
}

/// What one Deepgram message means for us.
pub fn parse(v: &Value) -> Vec<SttOut> {
    let mut out = Vec::new();
    match v["type"].as_str() {
        Some("Results") => {
            let text = v["channel"]["alternatives"][0]["transcript"].as_str().unwrap_or_default().trim();
            if v["is_final"] == true && !text.is_empty() {
                out.push(SttOut::Final(text.to_string()));
            }
            if v["from_finalize"] == true {
                out.push(SttOut::Finalized);
            }
        }
        Some("Error") | Some("error") => {
            let message = v["description"].as_str().or(v["message"].as_str()).unwrap_or("deepgram error").to_string();
            out.push(SttOut::Error { code: "provider_error", message: format!("deepgram: {message}") });
        }
        _ => {}
    }
    out
}

pub async fn run(cfg: Arc<CascadeConfig>, mut rx: mpsc::Receiver<SttIn>, tx: mpsc::UnboundedSender<SttOut>) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    let mut held: VecDeque<Vec<u8>> = VecDeque::new();
    let mut reported = false;
    loop {
        // Model and language come from the config file: a value a URL cannot carry is an error.
        let mut req = match url(&cfg).into_client_request() {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(SttOut::Error { code: "provider_error", message: format!("deepgram URL from the config: {e}") });
                return;
            }
        };
        match HeaderValue::from_str(&format!("Token {}", cfg.stt_key)) {
            Ok(v) => {
                req.headers_mut().insert("authorization", v);
            }
            Err(_) => {
                let _ = tx.send(SttOut::Error { code: "provider_auth_failed", message: "deepgram key is not a valid header".into() });
                return;
            }
        }
        let connected = tokio::time::timeout(cfg.connect_timeout, tokio_tungstenite::connect_async_with_config(req, None, true)).await;
        let error = match connected {
            Ok(Ok((ws, _))) => {
                backoff.reset();
                reported = false;
                match serve(ws, &mut rx, &tx, &mut held).await {
                    None => return,
                    Some(why) => ("provider_disconnected", format!("deepgram connection lost: {why}")),
                }
            }
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) if r.status() == 401 || r.status() == 403 => {
                ("provider_auth_failed", format!("deepgram refused this server's key (HTTP {})", r.status()))
            }
            Ok(Err(e)) => ("provider_unavailable", format!("deepgram unreachable: {e}")),
            Err(_) => ("provider_unavailable", "deepgram: no answer to the handshake".into()),
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

/// `None` when the call is over; `Some(why)` when the connection dropped.
async fn serve(ws: Ws, rx: &mut mpsc::Receiver<SttIn>, tx: &mpsc::UnboundedSender<SttOut>, held: &mut VecDeque<Vec<u8>>) -> Option<String> {
    let (mut sink, mut stream) = ws.split();
    for a in held.drain(..) {
        if let Err(e) = sink.send(Message::binary(a)).await {
            return Some(e.to_string());
        }
    }
    let mut last_sent = Instant::now();
    let mut keepalive = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            m = rx.recv() => {
                let msg = match m {
                    None => {
                        let _ = sink.send(Message::text(r#"{"type":"CloseStream"}"#)).await;
                        return None;
                    }
                    Some(SttIn::Audio(a)) => Message::binary(a),
                    Some(SttIn::Finalize) => Message::text(r#"{"type":"Finalize"}"#),
                };
                if let Err(e) = sink.send(msg).await {
                    return Some(e.to_string());
                }
                last_sent = Instant::now();
            }
            _ = keepalive.tick() => {
                if last_sent.elapsed() >= KEEPALIVE_AFTER {
                    if let Err(e) = sink.send(Message::text(r#"{"type":"KeepAlive"}"#)).await {
                        return Some(e.to_string());
                    }
                    last_sent = Instant::now();
                }
            }
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(v) => {
                        for out in parse(&v) {
                            let _ = tx.send(out);
                        }
                    }
                    Err(e) => debug!("deepgram: unparsable message: {e}"),
                },
                Some(Ok(Message::Close(f))) => return Some(format!("closed: {}", f.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default())),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Some(e.to_string()),
                None => return Some("connection ended".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finals_and_finalize_acknowledgements() {
        let r = json!({"type": "Results", "is_final": true, "speech_final": false, "from_finalize": true,
            "channel": {"alternatives": [{"transcript": " hello world ", "confidence": 0.9}]}});
        assert_eq!(parse(&r), [SttOut::Final("hello world".into()), SttOut::Finalized]);
        let interim = json!({"type": "Results", "is_final": false, "channel": {"alternatives": [{"transcript": "hel"}]}});
        assert!(parse(&interim).is_empty());
        assert!(parse(&json!({"type": "Metadata", "request_id": "x"})).is_empty());
    }
}
