//! The `openai-realtime` agent: OpenAI's Realtime API over WebSocket. The connection (timeouts,
//! keepalive, reconnects) is [`crate::agent::upstream`]'s; the protocol mapping is [`wire`].

pub mod wire;

use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request, header};
use voxrelay_signaling::SessionConfig;

use super::bridge::{Cmd, Link};
use super::history::Dialogue;
use super::providers::{OpenAiConfig, OpenAiDialect};
use super::upstream::{self, Protocol, Reply};

/// `prior`: the dialogue of the conversation this call continues (sent as items when the
/// session opens).
pub async fn run(cfg: OpenAiConfig, session: SessionConfig, prior: Dialogue, link: Link) {
    upstream::run(wire::Session::new(cfg, session).resuming(prior), link).await;
}

impl Protocol for wire::Session {
    const NAME: &'static str = "openai-realtime";

    fn request(&self) -> Result<Request<()>, String> {
        let mut req = self.url().into_client_request().map_err(|e| format!("bad provider URL: {e}"))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", self.config().api_key))
            .map_err(|_| "the API key has characters a header cannot carry".to_string())?;
        req.headers_mut().insert(header::AUTHORIZATION, bearer);
        if self.config().dialect == OpenAiDialect::Beta {
            req.headers_mut().insert("OpenAI-Beta", HeaderValue::from_static("realtime=v1"));
        }
        Ok(req)
    }

    fn connect_timeout(&self) -> Duration {
        self.config().connect_timeout
    }

    fn opening(&mut self, _reconnect: bool) -> Vec<String> {
        // A fresh upstream session knows nothing: the dialogue so far (this call's, after a
        // reconnect; a resumed conversation's, at the start) is recreated as items.
        let mut out = vec![self.session_update().to_string()];
        out.extend(self.replay().iter().map(|v| v.to_string()));
        out
    }

    fn on_cmd(&mut self, cmd: Cmd, link: &mut Link) -> Vec<String> {
        wire::Session::on_cmd(self, cmd, link)
    }

    fn on_message(&mut self, text: &str, link: &mut Link) -> Reply {
        match serde_json::from_str(text) {
            Ok(v) => self.on_event(&v, link),
            Err(e) => tracing::debug!("openai-realtime: unparsable event: {e}"),
        }
        Reply::default()
    }

    fn on_disconnect(&mut self, link: &mut Link, code: &str, message: &str) {
        wire::Session::on_disconnect(self, link, code, message);
    }

    fn auth_failed(&self) -> bool {
        self.auth_failed
    }

    fn set_auth_failed(&mut self, failed: bool) {
        self.auth_failed = failed;
    }
}
