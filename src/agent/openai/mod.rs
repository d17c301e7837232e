//! The `openai-realtime` agent, connection half: one WebSocket per call to the provider, with a
//! connect timeout, keepalive pings, and reconnection with exponential backoff and jitter when
//! it drops. Commands that arrive while it is down are kept (audio up to
//! [`MAX_BUFFERED_AUDIO_MS`]) and sent after the reconnect, together with the dialogue so far, so
//! the conversation picks up where it was. Failures become `error` events; the call goes on.

pub mod wire;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};
use voxrelay_signaling::SessionConfig;

use super::backoff::Backoff;
use super::bridge::{Cmd, Link};
use super::providers::{OpenAiConfig, OpenAiDialect};

/// A ping this often; a connection silent for [`SILENT_LIMIT`] is dead even if TCP says not.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
pub const SILENT_LIMIT: Duration = Duration::from_secs(45);
/// Caller audio kept while reconnecting; older audio is dropped (and the client told).
pub const MAX_BUFFERED_AUDIO_MS: u64 = 10_000;
const MAX_BUFFERED_FRAMES: usize = (MAX_BUFFERED_AUDIO_MS / voxrelay_media::FRAME_MS as u64) as usize;
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// A refused key does not fix itself quickly: retry, but rarely.
const AUTH_RETRY: Duration = Duration::from_secs(30);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

enum ConnectError {
    Auth(String),
    Other(String),
}

enum Ended {
    CallOver,
    Dropped(String),
}

async fn connect(cfg: &OpenAiConfig, url: &str) -> Result<Ws, ConnectError> {
    let mut req = url.into_client_request().map_err(|e| ConnectError::Other(format!("bad provider URL: {e}")))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", cfg.api_key))
        .map_err(|_| ConnectError::Auth("the API key has characters a header cannot carry".into()))?;
    req.headers_mut().insert(header::AUTHORIZATION, bearer);
    if cfg.dialect == OpenAiDialect::Beta {
        req.headers_mut().insert("OpenAI-Beta", HeaderValue::from_static("realtime=v1"));
    }
    match tokio::time::timeout(cfg.connect_timeout, tokio_tungstenite::connect_async(req)).await {
        Err(_) => Err(ConnectError::Other(format!("no answer within {} s", cfg.connect_timeout.as_secs()))),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(resp))) => {
            let status = resp.status();
            let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().chars().take(300).collect::<String>();
            if status == 401 || status == 403 {
                Err(ConnectError::Auth(format!("HTTP {status}: {body}")))
            } else {
                Err(ConnectError::Other(format!("HTTP {status}: {body}")))
            }
        }
        Ok(Err(e)) => Err(ConnectError::Other(e.to_string())),
    }
}

pub async fn run(cfg: OpenAiConfig, session: SessionConfig, mut link: Link) {
    let mut s = wire::Session::new(cfg.clone(), session);
    let url = s.url();
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    let mut pending: VecDeque<Cmd> = VecDeque::new();
    let mut reconnecting = false;
    let mut outage_reported = false;
    loop {
        match connect(&cfg, &url).await {
            Ok(ws) => {
                if reconnecting {
                    info!("openai-realtime: reconnected");
                }
                backoff.reset();
                outage_reported = false;
                s.auth_failed = false;
                match serve(ws, &mut s, &mut link, &mut pending, reconnecting).await {
                    Ended::CallOver => return,
                    Ended::Dropped(why) => {
                        warn!("openai-realtime: connection lost: {why}");
                        let message = format!("openai-realtime connection lost ({why}); reconnecting");
                        s.on_disconnect(&mut link, "provider_disconnected", &message);
                        if !s.auth_failed {
                            link.error("provider_disconnected", message);
                        }
                    }
                }
                reconnecting = true;
            }
            Err(e) => {
                let (code, message) = match e {
                    ConnectError::Auth(m) => {
                        s.auth_failed = true;
                        ("provider_auth_failed", format!("openai-realtime refused this server's API key: {m}"))
                    }
                    ConnectError::Other(m) => ("provider_unavailable", format!("openai-realtime unreachable: {m}")),
                };
                warn!("{message}");
                if !outage_reported {
                    outage_reported = true;
                    link.error(code, message.clone());
                }
                // Responses asked for meanwhile cannot run on a connection that is not there.
                fail_waiting_responses(&mut pending, &mut link, code, &message);
            }
        }
        let delay = if s.auth_failed { AUTH_RETRY } else { backoff.next_delay() };
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                cmd = link.cmds.recv() => match cmd {
                    None => return,
                    Some(cmd) => hold(cmd, &mut pending, &mut s, &mut link),
                },
            }
        }
    }
}

fn fail_waiting_responses(pending: &mut VecDeque<Cmd>, link: &mut Link, code: &str, message: &str) {
    pending.retain(|c| match c {
        Cmd::StartResponse(num) => {
            link.output(*num, super::AgentOutput::Failed { code: code.into(), message: message.into() });
            false
        }
        _ => true,
    });
}

/// Keeps a command for after the reconnect.
fn hold(cmd: Cmd, pending: &mut VecDeque<Cmd>, s: &mut wire::Session, link: &mut Link) {
    match cmd {
        // Settings apply at once; the reconnect sends them whole.
        Cmd::Configure(_) => {
            s.on_cmd(cmd, link);
        }
        Cmd::StartResponse(num) if s.auth_failed => {
            link.output(num, super::AgentOutput::Failed {
                code: "provider_auth_failed".into(),
                message: "the provider refused this server's API key".into(),
            });
        }
        Cmd::CancelResponse { response, .. } => pending.retain(|c| !matches!(c, Cmd::StartResponse(n) if *n == response)),
        Cmd::ClearInput => {
            pending.retain(|c| !matches!(c, Cmd::Audio { .. }));
            pending.push_back(cmd);
        }
        Cmd::Audio { .. } => {
            if pending.iter().filter(|c| matches!(c, Cmd::Audio { .. })).count() >= MAX_BUFFERED_FRAMES {
                if let Some(i) = pending.iter().position(|c| matches!(c, Cmd::Audio { .. })) {
                    pending.remove(i);
                }
            }
            pending.push_back(cmd);
        }
        _ => pending.push_back(cmd),
    }
}

async fn serve(ws: Ws, s: &mut wire::Session, link: &mut Link, pending: &mut VecDeque<Cmd>, replay: bool) -> Ended {
    let (mut tx, mut rx) = ws.split();
    let mut first = vec![s.session_update().to_string()];
    if replay {
        first.extend(s.replay().iter().map(|v| v.to_string()));
    }
    for cmd in pending.drain(..) {
        first.extend(s.on_cmd(cmd, link));
    }
    for m in first {
        if let Err(e) = tx.send(Message::text(m)).await {
            return Ended::Dropped(e.to_string());
        }
    }
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    let mut last_rx = Instant::now();
    loop {
        tokio::select! {
            cmd = link.cmds.recv() => {
                let Some(cmd) = cmd else {
                    let _ = tx.send(Message::Close(None)).await;
                    return Ended::CallOver;
                };
                for m in s.on_cmd(cmd, link) {
                    if let Err(e) = tx.send(Message::text(m)).await {
                        return Ended::Dropped(e.to_string());
                    }
                }
            }
            msg = rx.next() => {
                last_rx = Instant::now();
                match msg {
                    Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str()) {
                        Ok(v) => s.on_event(&v, link),
                        Err(e) => debug!("openai-realtime: unparsable event: {e}"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        return Ended::Dropped(match frame {
                            Some(f) => format!("closed by the provider: {} {}", u16::from(f.code), f.reason),
                            None => "closed by the provider".into(),
                        });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Ended::Dropped(e.to_string()),
                    None => return Ended::Dropped("connection ended".into()),
                }
            }
            _ = ping.tick() => {
                if last_rx.elapsed() > SILENT_LIMIT {
                    return Ended::Dropped(format!("nothing received for {} s", SILENT_LIMIT.as_secs()));
                }
                if let Err(e) = tx.send(Message::Ping(Default::default())).await {
                    return Ended::Dropped(e.to_string());
                }
            }
        }
    }
}
