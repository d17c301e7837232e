//! PROTOCOL.md §5, the HTTP side of the telephony bridge: the TwiML webhook a Twilio number
//! points at, and the upgrade to the Media Streams WebSocket. With a Twilio auth token
//! configured, both check `X-Twilio-Signature` (403 when wrong). What flows over the socket is
//! the root crate's business ([`crate::Engine::open_phone_stream`]); this module pumps messages.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::auth::constant_time_eq;
use crate::body::{content_type, read_limited};
use crate::error::ApiError;
use crate::limits::ClientIp;
use crate::ws_pump::pump;
use crate::{Api, SocketMessage};

/// Largest message accepted on a media stream. Twilio's largest, `start`, is a few KiB (custom
/// parameters included); a media message carries 216 base64 characters. A bigger message is a
/// protocol violation and closes that socket only.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Twilio's webhook form (call parameters) is small.
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;
/// The stream path, appended to the public URL in the TwiML answer.
pub const STREAM_PATH: &str = "/v1/telephony/twilio";
/// Query parameters of the webhook URL passed on to the stream as `<Parameter>`s (how a number
/// picks its agent: `.../voice?agent=cascade&instructions=...`; `dialect=ga` gives the call's
/// event watchers OpenAI's GA event names instead of the beta ones).
pub const FORWARDED_PARAMETERS: [&str; 4] = ["agent", "instructions", "voice", "dialect"];

#[derive(Clone, Debug, Default)]
pub struct TelephonySettings {
    /// The server's public base URL as Twilio reaches it (`https://voice.example.com`): the
    /// stream URL in TwiML and the URL signatures are computed over. Default: the request's
    /// Host header, over https/wss.
    pub public_url: Option<String>,
    /// Twilio auth token: when set, requests without a valid `X-Twilio-Signature` get 403.
    pub twilio_auth_token: Option<String>,
    /// Without a token, accept the webhook and streams from any address (`--twilio-open`;
    /// otherwise from loopback only: a local test line or a proxy that checks signatures).
    pub open: bool,
}

/// Twilio's request signature: base64 of HMAC-SHA1 (key: the auth token) over the full URL
/// followed by every POST parameter's name and value, sorted by name.
#[allow(clippy::expect_used, reason = "HMAC takes keys of any length: cannot fail")]
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl TelephonySettings {
    /// The public base URL (no trailing slash) for this request.
    fn base(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_string();
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        let proto = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("https");
        format!("{proto}://{host}")
    }

    /// The WebSocket base (wss:// for https://) for this request.
    fn ws_base(&self, headers: &HeaderMap) -> String {
        self.base(headers).replacen("https://", "wss://", 1).replacen("http://", "ws://", 1)
    }

    /// Checks the signature over this request's public URL (the wss:// one for the stream
    /// upgrade: Twilio signs the URL it was given in the TwiML).
    /// Without a token, only loopback (or, with `open`, anyone) gets in; `Ok(true)` when the
    /// request carried a valid signature.
    fn check(&self, ip: ClientIp, headers: &HeaderMap, uri: &Uri, params: &[(String, String)], websocket: bool) -> Result<bool, ApiError> {
        let Some(token) = &self.twilio_auth_token else {
            if self.open || ip.0.is_none_or(|ip| ip.is_loopback()) {
                return Ok(false);
            }
            return Err(ApiError::forbidden(
                "twilio_auth_required",
                "this server checks no Twilio signatures (no --twilio-auth-token), so it takes phone calls from loopback only; set the token, or --twilio-open",
            ));
        };
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        let base = if websocket { self.ws_base(headers) } else { self.base(headers) };
        let url = format!("{base}{path}");
        let expected = twilio_signature(token, &url, params);
        let given = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(true)
        } else {
            tracing::warn!(%url, "telephony request with a missing or wrong X-Twilio-Signature");
            Err(ApiError::forbidden("invalid_signature", "X-Twilio-Signature does not match this request"))
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

fn form_pairs(bytes: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_bytes(bytes).map_err(|e| ApiError::bad_request("invalid_form", format!("malformed form body: {e}")))
}

/// `POST /v1/telephony/twilio/voice`: answers the call with TwiML connecting it to the stream.
pub async fn twilio_voice(
    State(api): State<Arc<Api>>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, MAX_WEBHOOK_BYTES).await?;
    let params = match content_type(&headers).as_deref() {
        Some("application/x-www-form-urlencoded") => form_pairs(&bytes)?,
        _ if bytes.is_empty() => Vec::new(),
        _ => return Err(ApiError::unsupported_media_type("application/x-www-form-urlencoded")),
    };
    api.telephony.check(ip, &headers, &uri, &params, false)?;
    // Draining: a 503 makes Twilio use the number's fallback URL (another node).
    api.admit()?;
    let query = form_pairs(uri.query().unwrap_or("").as_bytes())?;
    if let Some((_, agent)) = query.iter().find(|(k, _)| k == "agent") {
        api.engine.check_agent(agent)?;
    }
    let ws_base = api.telephony.ws_base(&headers);
    let mut twiml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{}">"#,
        xml_escape(&format!("{ws_base}{STREAM_PATH}"))
    );
    for (name, value) in query.iter().filter(|(k, _)| FORWARDED_PARAMETERS.contains(&k.as_str())) {
        twiml.push_str(&format!(r#"<Parameter name="{}" value="{}"/>"#, xml_escape(name), xml_escape(value)));
    }
    twiml.push_str("</Stream></Connect></Response>");
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], twiml).into_response())
}

/// `GET /v1/telephony/twilio`: the Media Streams WebSocket (signature over the URL alone).
pub async fn twilio_stream(
    State(api): State<Arc<Api>>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let signed = api.telephony.check(ip, &headers, &uri, &[], true)?;
    let slot = api.limits.open_socket(ip)?;
    // A signed stream comes from the carrier's media servers (a few addresses for all calls):
    // no per-address share for them; unsigned ones (`--twilio-open`) share like any client.
    let origin = crate::Origin { ip: if signed { None } else { api.limits.limited_ip(ip) }, secret: None };
    let channel = api.engine.open_phone_stream(origin)?;
    Ok(ws.max_message_size(MAX_MESSAGE_BYTES).on_upgrade(move |socket| async move {
        let _slot = slot;
        pump(socket, channel.to_carrier, channel.from_carrier, from_carrier, "phone stream").await
    }))
}

/// Binary frames are in no supported dialect: only their size goes on, to be refused and logged.
fn from_carrier(msg: Message) -> Option<SocketMessage> {
    match msg {
        Message::Text(text) => Some(SocketMessage::Text(text.to_string())),
        Message::Binary(b) => Some(SocketMessage::Binary(b.len())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_twilios_documented_example() {
        // Twilio's security docs example: token 12345, this URL and these parameters.
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sig = twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &params);
        assert_eq!(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    }

    #[test]
    fn parameters_are_escaped_in_twiml() {
        assert_eq!(xml_escape(r#"a"<b>&'"#), "a&quot;&lt;b&gt;&amp;&apos;");
    }
}

#[cfg(test)]
mod access_tests {
    use super::*;

    #[test]
    fn without_a_token_only_loopback_gets_in_unless_open() {
        let uri: Uri = "/v1/telephony/twilio".parse().unwrap();
        let remote = ClientIp(Some("198.51.100.7".parse().unwrap()));
        let local = ClientIp(Some("127.0.0.1".parse().unwrap()));
        let closed = TelephonySettings::default();
        let e = closed.check(remote, &HeaderMap::new(), &uri, &[], true).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (403, "twilio_auth_required"));
        assert!(!closed.check(local, &HeaderMap::new(), &uri, &[], true).unwrap(), "allowed, not signed");
        let open = TelephonySettings { open: true, ..Default::default() };
        assert!(!open.check(remote, &HeaderMap::new(), &uri, &[], true).unwrap());
        // With a token, every address needs the signature, and a good one is reported signed.
        let signed =
            TelephonySettings { twilio_auth_token: Some("12345".into()), public_url: Some("https://v.example".into()), open: false };
        assert_eq!(signed.check(local, &HeaderMap::new(), &uri, &[], true).unwrap_err().code, "invalid_signature");
        let mut h = HeaderMap::new();
        let sig = twilio_signature("12345", "wss://v.example/v1/telephony/twilio", &[]);
        h.insert("x-twilio-signature", sig.parse().unwrap());
        assert!(signed.check(remote, &h, &uri, &[], true).unwrap());
    }
}
