//! One provider WebSocket per call, whatever the provider: connect with a timeout, keepalive
//! pings, and reconnection with exponential backoff and jitter when it drops. Commands that
//! arrive while it is down are kept (audio up to [`MAX_BUFFERED_AUDIO_MS`]) and sent after the
//! reconnect. Failures become `error` events; the call goes on. What to send and what the
//! provider's messages mean is the [`Protocol`]'s business.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::Request;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use super::AgentOutput;
use super::backoff::Backoff;
use super::bridge::{Cmd, Link};

/// A ping this often; a connection silent for [`SILENT_LIMIT`] is dead even if TCP says not.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
pub const SILENT_LIMIT: Duration = Duration::from_secs(45);
/// Caller audio kept while reconnecting; older audio is dropped first.
pub const MAX_BUFFERED_AUDIO_MS: u64 = 10_000;
const MAX_BUFFERED_FRAMES: usize = (MAX_BUFFERED_AUDIO_MS / voxrelay_media::FRAME_MS as u64) as usize;
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// A refused key does not fix itself quickly: retry, but rarely.
const AUTH_RETRY: Duration = Duration::from_secs(30);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a provider message asks of the connection.
#[derive(Default)]
pub struct Reply {
    pub send: Vec<String>,
    /// Reconnect now (e.g. the provider announced it will close soon).
    pub reconnect: Option<String>,
}

impl From<Vec<String>> for Reply {
    fn from(send: Vec<String>) -> Self {
        Reply { send, reconnect: None }
    }
}

pub trait Protocol: Send + 'static {
    /// For logs and error messages: the agent's name.
    const NAME: &'static str;
    fn request(&self) -> Result<Request<()>, String>;
    fn connect_timeout(&self) -> Duration;
    /// The first messages on a fresh connection (settings; after a reconnect, the context).
    fn opening(&mut self, reconnect: bool) -> Vec<String>;
    fn on_cmd(&mut self, cmd: Cmd, link: &mut Link) -> Vec<String>;
    fn on_message(&mut self, text: &str, link: &mut Link) -> Reply;
    /// The connection is gone: responses in flight cannot finish.
    fn on_disconnect(&mut self, link: &mut Link, code: &str, message: &str);
    /// Our error code for a close frame (the provider's way of reporting some errors), or
    /// `None` for an ordinary close.
    fn close_code(&self, _code: u16, _reason: &str) -> Option<&'static str> {
        None
    }
    fn auth_failed(&self) -> bool;
    fn set_auth_failed(&mut self, failed: bool);
    /// Checked after each command: a reason to replace the connection now (e.g. settings that
    /// the provider only takes at setup).
    fn wants_reconnect(&mut self) -> Option<String> {
        None
    }
}

enum ConnectError {
    Auth(String),
    /// HTTP 429 at the upgrade: the provider's rate limit (retried with backoff).
    RateLimited(String),
    Other(String),
}

enum Ended {
    CallOver,
    /// (error code for the client, why)
    Dropped(&'static str, String),
    /// A planned reconnect: nothing to report.
    Handover(String),
}

async fn connect<P: Protocol>(p: &P) -> Result<Ws, ConnectError> {
    let req = p.request().map_err(ConnectError::Other)?;
    match tokio::time::timeout(p.connect_timeout(), tokio_tungstenite::connect_async_with_config(req, None, true)).await {
        Err(_) => Err(ConnectError::Other(format!("no answer within {} s", p.connect_timeout().as_secs()))),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(resp))) => {
            let status = resp.status();
            let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().chars().take(300).collect::<String>();
            if status == 401 || status == 403 {
                Err(ConnectError::Auth(format!("HTTP {status}: {body}")))
            } else if status == 429 {
                Err(ConnectError::RateLimited(format!("HTTP {status}: {body}")))
            } else {
                Err(ConnectError::Other(format!("HTTP {status}: {body}")))
            }
        }
        Ok(Err(e)) => Err(ConnectError::Other(e.to_string())),
    }
}

/// Runs the provider connection until the call ends (the bridge drops its command sender).
pub async fn run<P: Protocol>(mut p: P, mut link: Link) {
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    let mut pending: VecDeque<Cmd> = VecDeque::new();
    let mut reconnecting = false;
    let mut outage_reported = false;
    loop {
        let mut wait = true;
        match connect(&p).await {
            Ok(ws) => {
                if reconnecting {
                    info!("{}: reconnected", P::NAME);
                }
                backoff.reset();
                outage_reported = false;
                p.set_auth_failed(false);
                match serve(ws, &mut p, &mut link, &mut pending, reconnecting).await {
                    Ended::CallOver => return,
                    Ended::Handover(why) => {
                        info!("{}: reconnecting: {why}", P::NAME);
                        wait = false;
                    }
                    Ended::Dropped(code, why) => {
                        warn!("{}: connection lost: {why}", P::NAME);
                        // A refusal the provider sent as a message has been reported already.
                        let reported = p.auth_failed();
                        let code = if reported { "provider_auth_failed" } else { code };
                        p.set_auth_failed(code == "provider_auth_failed");
                        let message = format!("{} connection lost ({why}); reconnecting", P::NAME);
                        p.on_disconnect(&mut link, code, &message);
                        if !reported {
                            link.error(code, message);
                        }
                    }
                }
                reconnecting = true;
            }
            Err(e) => {
                let (code, message) = match e {
                    ConnectError::Auth(m) => {
                        p.set_auth_failed(true);
                        ("provider_auth_failed", format!("{} refused this server's API key: {m}", P::NAME))
                    }
                    ConnectError::RateLimited(m) => ("provider_rate_limited", format!("{} is rate limiting this server: {m}", P::NAME)),
                    ConnectError::Other(m) => ("provider_unavailable", format!("{} unreachable: {m}", P::NAME)),
                };
                warn!("{message}");
                if !outage_reported {
                    outage_reported = true;
                    link.error(code, message.clone());
                }
                // Responses asked for meanwhile cannot run on a connection that is not there.
                pending.retain(|c| match c {
                    Cmd::StartResponse(num, _) => {
                        link.output(*num, AgentOutput::Failed { code: code.into(), message: message.clone() });
                        false
                    }
                    _ => true,
                });
            }
        }
        if !wait {
            continue;
        }
        let delay = if p.auth_failed() { AUTH_RETRY } else { backoff.next_delay() };
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                cmd = link.cmds.recv() => match cmd {
                    None => return,
                    Some(cmd) => hold(cmd, &mut pending, &mut p, &mut link),
                },
            }
        }
    }
}

/// Keeps a command for after the reconnect.
fn hold<P: Protocol>(cmd: Cmd, pending: &mut VecDeque<Cmd>, p: &mut P, link: &mut Link) {
    match cmd {
        // Settings apply at once; the reconnect sends them whole.
        Cmd::Configure(_) => {
            p.on_cmd(cmd, link);
        }
        Cmd::StartResponse(num, _) if p.auth_failed() => {
            link.output(
                num,
                AgentOutput::Failed { code: "provider_auth_failed".into(), message: "the provider refused this server's API key".into() },
            );
        }
        Cmd::CancelResponse { response, .. } => pending.retain(|c| !matches!(c, Cmd::StartResponse(n, _) if *n == response)),
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

async fn serve<P: Protocol>(ws: Ws, p: &mut P, link: &mut Link, pending: &mut VecDeque<Cmd>, reconnect: bool) -> Ended {
    let (mut tx, mut rx) = ws.split();
    let mut first = p.opening(reconnect);
    for cmd in pending.drain(..) {
        first.extend(p.on_cmd(cmd, link));
    }
    for m in first {
        if let Err(e) = tx.send(Message::text(m)).await {
            return Ended::Dropped("provider_disconnected", e.to_string());
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
                for m in p.on_cmd(cmd, link) {
                    if let Err(e) = tx.send(Message::text(m)).await {
                        return Ended::Dropped("provider_disconnected", e.to_string());
                    }
                }
                if let Some(why) = p.wants_reconnect() {
                    let _ = tx.send(Message::Close(None)).await;
                    return Ended::Handover(why);
                }
            }
            msg = rx.next() => {
                last_rx = Instant::now();
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    // Some providers send JSON in binary frames.
                    Some(Ok(Message::Binary(b))) => match String::from_utf8(b.to_vec()) {
                        Ok(t) => t,
                        Err(_) => {
                            debug!("{}: non-UTF-8 binary frame ignored", P::NAME);
                            continue;
                        }
                    },
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                        let ours = p.close_code(code, &reason).unwrap_or("provider_disconnected");
                        return Ended::Dropped(ours, format!("closed by the provider: {code} {reason}"));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Ended::Dropped("provider_disconnected", e.to_string()),
                    None => return Ended::Dropped("provider_disconnected", "connection ended".into()),
                };
                let reply = p.on_message(&text, link);
                for m in reply.send {
                    if let Err(e) = tx.send(Message::text(m)).await {
                        return Ended::Dropped("provider_disconnected", e.to_string());
                    }
                }
                if let Some(why) = reply.reconnect {
                    let _ = tx.send(Message::Close(None)).await;
                    return Ended::Handover(why);
                }
            }
            _ = ping.tick() => {
                if last_rx.elapsed() > SILENT_LIMIT {
                    return Ended::Dropped("provider_disconnected", format!("nothing received for {} s", SILENT_LIMIT.as_secs()));
                }
                if let Err(e) = tx.send(Message::Ping(Default::default())).await {
                    return Ended::Dropped("provider_disconnected", e.to_string());
                }
            }
        }
    }
}
