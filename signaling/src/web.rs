//! The browser client page and its same-origin session helper.
//!
//! - `GET /`, `GET /web/app.js`, `GET /web/style.css`: a small voice-call page embedded in the
//!   binary (no CDN, works offline). It speaks only the public API of PROTOCOL.md §1–2.
//! - `GET /web/config`: what the page needs to know before a call (is the helper on?).
//! - `POST /web/session`: mints a beta client secret (body: the §1 session body) so the page
//!   can call without the browser ever holding the API key. The operator can turn it off
//!   (`--web-session false`); then the page asks for a client secret instead.
//! - `POST /web/room-token`: mints a room token (§4; body `{room, identity, name?}`, default
//!   grants, one hour) for the page's room mode. Same switch as `/web/session`.
//!
//! The helpers mint credentials without one, so they are fenced: same-origin only (no CORS
//! headers, an `Origin` that must match `Host`, JSON content type so a cross-site form cannot
//! post), loopback host names only while the server listens on loopback (a DNS-rebinding
//! page cannot reach them), and at most `max_pending` of each helper's credentials alive at
//! once (the server's call limit: a page needs one per call or room join), beyond which they
//! answer 429 with the seconds until the oldest expires.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Api;
use crate::auth::unix_now;
use crate::body::{read_json, require_content_type};
use crate::error::ApiError;
use crate::ids::{ParticipantId, RoomName};
use crate::room_token::{DEFAULT_TTL_S, RoomClaims, RoomGrant};
use crate::room_wire::MintedToken;
use crate::wire::BetaSession;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE_CSS: &str = include_str!("../web/style.css");

/// Bytes of the embedded page (HTML + JS + CSS), what a browser downloads for it.
pub const PAGE_WEIGHT_BYTES: usize = INDEX_HTML.len() + APP_JS.len() + STYLE_CSS.len();

/// Scripts and styles from this origin only, never inline; the page fetches only its own
/// origin (WebRTC media is not governed by CSP); it may not be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   media-src 'self' blob: mediastream:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// How the operator configured the page's helper.
#[derive(Clone, Debug)]
pub struct WebSettings {
    /// `POST /web/session` mints secrets and `POST /web/room-token` room tokens (else they
    /// answer 404 `web_session_disabled`).
    pub session_helper: bool,
    /// Most helper-minted secrets alive at once, and room tokens; the server's call limit.
    pub max_pending: usize,
    /// The server listens on loopback: the helper answers only requests addressed to a
    /// loopback host name (`localhost`, `127.0.0.1`, `[::1]`), so a DNS-rebinding page cannot.
    pub loopback_only: bool,
}

impl WebSettings {
    /// Off: what an embedder gets unless it opts in.
    pub fn disabled() -> Self {
        Self { session_helper: false, max_pending: 0, loopback_only: true }
    }
}

pub struct WebState {
    pub settings: WebSettings,
    /// Expiry (unix seconds) of each helper-minted secret still counted, oldest first.
    pending: Mutex<VecDeque<u64>>,
    /// The same for helper-minted room tokens (they live an hour, secrets a minute: apart, so
    /// a page's room joins never hold up its calls).
    pending_room_tokens: Mutex<VecDeque<u64>>,
}

impl WebState {
    pub fn new(settings: WebSettings) -> Self {
        if settings.session_helper && !settings.loopback_only {
            tracing::warn!(
                "the web session helper (POST /web/session, /web/room-token) is on and the server listens beyond loopback: \
                 anyone who can reach it can mint client secrets and room tokens, place calls and join rooms; turn it off \
                 with --web-session false unless that is intended"
            );
        }
        Self { settings, pending: Mutex::new(VecDeque::new()), pending_room_tokens: Mutex::new(VecDeque::new()) }
    }
}

/// The page's routes. No CORS layer here on purpose: the helper is for this origin's page only.
pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/web/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/web/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/web/config", get(config))
        .route("/web/session", post(session))
        .route("/web/room-token", post(room_token))
        .layer(axum::middleware::map_response(security_headers))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // Revalidated on each load so an upgraded server never runs a stale page.
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (HeaderName::from_static("permissions-policy"), "microphone=(self), camera=(), geolocation=()"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

async fn config(State(api): State<Arc<Api>>) -> Json<Value> {
    Json(json!({"session_helper": api.web.settings.session_helper}))
}

async fn session(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    helper_admits(
        &api,
        &headers,
        "the web session helper is off on this server (--web-session false): mint a client secret with the API key \
         (POST /v1/realtime/sessions) and give it to the page",
    )?;
    let req: BetaSession = read_json(&headers, body).await?;
    let out = mint_bounded(&api.web.pending, api.web.settings.max_pending, "client secrets", || {
        let out = crate::realtime::mint_beta_session(&api, req)?;
        let exp = out["client_secret"]["expires_at"].as_u64();
        Ok((out, exp))
    })?;
    crate::realtime::publish_secret(&api, &out["client_secret"]["value"]).await;
    Ok(no_store(Json(out).into_response()))
}

/// `POST /web/room-token` body: the room and who joins it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomTokenRequest {
    room: Option<String>,
    identity: Option<String>,
    /// Display name; defaults to the identity.
    name: Option<String>,
}

/// Longest display name accepted (as `POST /v1/rooms/<room>/tokens`).
const MAX_DISPLAY_NAME_BYTES: usize = 256;

/// Mints a room token with the default grants (publish, subscribe, publish_data; not admin)
/// for one hour: what `POST /v1/rooms/<room>/tokens` mints by default, minus the API key.
async fn room_token(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    helper_admits(
        &api,
        &headers,
        "the web session helper is off on this server (--web-session false): mint a room token with the API key \
         (POST /v1/rooms/<room>/tokens) and give it to the page",
    )?;
    let req: RoomTokenRequest = read_json(&headers, body).await?;
    let room = RoomName::parse(req.room.as_deref().ok_or_else(|| ApiError::bad_request("missing_room", "room is required"))?)?;
    let identity =
        ParticipantId::parse(req.identity.as_deref().ok_or_else(|| ApiError::bad_request("missing_identity", "identity is required"))?)?;
    let name = req.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| identity.to_string());
    if name.len() > MAX_DISPLAY_NAME_BYTES {
        return Err(ApiError::bad_request("invalid_name", format!("name is at most {MAX_DISPLAY_NAME_BYTES} bytes")));
    }
    let minted = mint_bounded(&api.web.pending_room_tokens, api.web.settings.max_pending, "room tokens", || {
        let claims = RoomClaims::new(identity.clone(), name, RoomGrant::default_for(room.clone()), unix_now(), DEFAULT_TTL_S);
        let token = api.auth.room_tokens.mint(&claims)?;
        Ok((MintedToken { token, expires_at: claims.exp, identity, room }, Some(claims.exp)))
    })?;
    Ok(no_store(Json(minted).into_response()))
}

/// What both helpers check before reading the body: on, same-origin, JSON, not draining.
fn helper_admits(api: &Api, headers: &HeaderMap, disabled: &'static str) -> Result<(), ApiError> {
    if !api.web.settings.session_helper {
        return Err(ApiError::not_found("web_session_disabled", disabled));
    }
    check_same_origin(headers, api.web.settings.loopback_only)?;
    require_content_type(headers, "application/json")?;
    api.admit()
}

/// Mints with `mint` (which returns the credential and its expiry) unless `max` of the
/// credentials counted in `queue` are still valid: then 429 with the seconds until the oldest
/// expires. Every credential in one queue lives equally long, so the queue stays oldest first.
fn mint_bounded<T>(
    queue: &Mutex<VecDeque<u64>>,
    max: usize,
    what: &str,
    mint: impl FnOnce() -> Result<(T, Option<u64>), ApiError>,
) -> Result<T, ApiError> {
    // Held across the mint so concurrent requests cannot both take the last slot.
    let mut pending = queue.lock().unwrap_or_else(|p| p.into_inner());
    let now = unix_now();
    while pending.front().is_some_and(|&exp| exp <= now) {
        pending.pop_front();
    }
    if pending.len() >= max {
        let wait = pending.front().map_or(1, |&exp| exp - now);
        return Err(ApiError::rate_limited(
            format!("this page's server minted {} {what} that are still valid; retry in {wait} s", pending.len()),
            wait,
        ));
    }
    let (out, exp) = mint()?;
    if let Some(exp) = exp {
        pending.push_back(exp);
    }
    Ok(out)
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Same-origin requests only, as a browser marks them. Non-browser clients send neither
/// `Origin` nor `Sec-Fetch-Site` and pass (they could call the API with the key anyway).
fn check_same_origin(headers: &HeaderMap, loopback_only: bool) -> Result<(), ApiError> {
    let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let forbidden = |why: &str| ApiError::forbidden("cross_origin", format!("the web session helper is same-origin only: {why}"));
    let host = text(header::HOST).unwrap_or("");
    if loopback_only && !is_loopback_host(host) {
        return Err(forbidden("the server listens on loopback, so the request must be addressed to a loopback host name"));
    }
    if let Some(site) = text(HeaderName::from_static("sec-fetch-site"))
        && site != "same-origin"
        && site != "none"
    {
        return Err(forbidden(&format!("Sec-Fetch-Site is {site:?}")));
    }
    if let Some(origin) = text(header::ORIGIN) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if !origin_host.eq_ignore_ascii_case(host) {
            return Err(forbidden(&format!("Origin {origin:?} is not this server ({host:?})")));
        }
    }
    Ok(())
}

/// `localhost`, a loopback IP, either with a port (`127.0.0.1:8080`, `[::1]:8080`).
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_host_names() {
        for ok in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.1.2.3"] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in ["evil.example:8080", "10.0.0.1:8080", "", "[::2]:80", "localhost.evil.example"] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn cross_origin_requests_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check_same_origin(&h, true).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(check_same_origin(&h, true).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:9999"));
        assert_eq!(check_same_origin(&h, true).unwrap_err().code, "cross_origin");
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert_eq!(check_same_origin(&h, true).unwrap_err().code, "cross_origin");
        h.remove("sec-fetch-site");
        h.insert(header::HOST, HeaderValue::from_static("rebound.example:8080"));
        assert_eq!(check_same_origin(&h, true).unwrap_err().code, "cross_origin");
        assert!(check_same_origin(&h, false).is_ok());
    }

    #[test]
    fn helper_credentials_are_bounded_until_the_oldest_expires() {
        let queue = Mutex::new(VecDeque::new());
        let exp = unix_now() + 100;
        for i in 0..2 {
            assert_eq!(mint_bounded(&queue, 2, "room tokens", || Ok((i, Some(exp + i)))).unwrap(), i);
        }
        let e = mint_bounded(&queue, 2, "room tokens", || -> Result<((), _), _> { panic!("not minted past the bound") }).unwrap_err();
        assert_eq!(e.code, "rate_limited");
        assert!((99..=100).contains(&e.retry_after.unwrap()), "{:?}", e.retry_after);
        // Expired ones stop counting; a failed mint counts nothing.
        if let Some(t) = queue.lock().unwrap().front_mut() {
            *t = 0;
        }
        assert!(mint_bounded(&queue, 2, "x", || Err::<((), _), _>(ApiError::internal("no"))).is_err());
        assert_eq!(queue.lock().unwrap().len(), 1);
        assert!(mint_bounded(&queue, 2, "x", || Ok(((), Some(exp)))).is_ok());
    }

    #[test]
    fn page_has_no_inline_script_or_style() {
        // The CSP forbids inline code; the page must not depend on it.
        let html = INDEX_HTML.to_ascii_lowercase();
        let handler = html
            .split(" on")
            .skip(1)
            .any(|rest| rest.split_once('=').is_some_and(|(name, _)| name.chars().all(|c| c.is_ascii_lowercase())));
        assert!(!html.contains("<script>") && !html.contains("style=") && !handler, "inline code in index.html");
        assert!(html.contains("<script type=\"module\" src=\"web/app.js\">"));
    }
}
