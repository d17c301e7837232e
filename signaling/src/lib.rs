//! voxrelay-signaling: the HTTP/WebSocket edge of voxrelay.
//!
//! How it fits:
//! 1. The server binary builds an [`Api`] from its API key and an [`Engine`] (implemented in the
//!    root crate: sessions, WebRTC, agents) and serves [`router`].
//! 2. Handlers check credentials ([`auth`]), content type and size ([`body`]), and validate the
//!    request ([`wire`], [`sdp`]) before calling the engine, so every client mistake becomes a
//!    precise [`ApiError`] (status + JSON body) at the edge.
//! 3. Data-channel events are parsed and named here too ([`events`]), so the wire contract of
//!    PROTOCOL.md lives in one crate.
//!
//! This crate never touches media: it knows SDP only well enough to refuse bad offers early.
//!
//! Everything here parses what clients send, so `unwrap`/`expect` are denied outside tests:
//! the few that remain are on values built here (marked, with why they cannot fail).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod body;
mod call_end;
pub mod call_history;
pub mod edge_errors;
pub mod error;
pub mod events;
pub mod forwarding;
mod health;
pub mod ids;
pub mod keepalive;
pub mod limits;
pub mod multipart;
pub mod node_auth;
mod plain_rtp;
mod realtime;
pub mod realtime_ws;
pub mod room_token;
pub mod room_wire;
pub mod rooms;
pub mod sdp;
pub mod sdp_dtx;
pub mod sdpfrag;
pub mod telephony;
mod watch;
pub mod web;
pub mod whip;
pub mod wire;
mod ws_pump;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, patch, post};

pub use auth::Auth;
pub use call_end::EndReason;
pub use error::ApiError;
pub use events::Dialect;
pub use ids::{CallId, ConversationId, ParticipantId, RoomName, SessionId};
pub use sdp::{OfferSummary, OfferedCodec};
pub use wire::SessionConfig;

/// Who starts a call, for the shares no single client may exceed (the root crate's admission):
/// the client's address unless the edge exempts it (loopback, by default; a carrier that signed
/// its request), and the client secret's session when a secret is the credential.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub ip: Option<std::net::IpAddr>,
    pub secret: Option<SessionId>,
}

/// Everything needed to start one call.
pub struct CallRequest {
    pub offer: String,
    pub summary: OfferSummary,
    pub config: SessionConfig,
    pub dialect: Dialect,
    pub session_id: SessionId,
    pub origin: Origin,
}

pub struct CallCreated {
    pub call_id: CallId,
    pub answer_sdp: String,
}

/// A plain-RTP session (PROTOCOL.md §7): where the peer sends its RTP.
pub struct RtpCreated {
    pub id: CallId,
    pub ip: String,
    pub port: u16,
    pub payload_type: u8,
}

/// Both directions of an events WebSocket attached to a call: server events to send, and a
/// sender for the client events the socket receives.
pub struct EventChannel {
    pub to_client: tokio::sync::mpsc::UnboundedReceiver<String>,
    pub from_client: tokio::sync::mpsc::UnboundedSender<String>,
}

/// One message a client's WebSocket delivered (a carrier's media stream, PROTOCOL.md §5; a
/// Realtime session, §8). Binary frames are in no supported protocol; only their size is passed
/// on, to be refused and logged.
#[derive(Debug)]
pub enum SocketMessage {
    Text(String),
    Binary(usize),
    /// The client stopped answering pings (its network vanished): the socket is closed and
    /// nothing follows.
    Lost,
}

/// Both directions of an upgraded carrier media stream: messages for the carrier (text), and a
/// sender for what the carrier sends. Dropping `to_carrier`'s sender (the call ended) closes the
/// socket.
pub struct PhoneChannel {
    pub to_carrier: tokio::sync::mpsc::UnboundedReceiver<String>,
    pub from_carrier: tokio::sync::mpsc::UnboundedSender<SocketMessage>,
}

/// A Realtime session over WebSocket (PROTOCOL.md §8), as the edge accepted it.
pub struct WsSessionRequest {
    pub config: SessionConfig,
    pub dialect: Dialect,
    pub session_id: SessionId,
    pub origin: Origin,
}

/// Both directions of an upgraded Realtime WebSocket: server events (JSON text) for the client,
/// and a *bounded* sender for what the client sends, so a client sending audio faster than the
/// session consumes it is slowed down by TCP instead of growing memory.
pub struct RealtimeChannel {
    pub to_client: tokio::sync::mpsc::UnboundedReceiver<String>,
    pub from_client: tokio::sync::mpsc::Sender<SocketMessage>,
}

/// What the edge needs from the server; the root crate implements it.
#[async_trait::async_trait]
pub trait Engine: Send + Sync + 'static {
    /// 400 when the named agent is unknown or not configured.
    fn check_agent(&self, agent: &str) -> Result<(), ApiError>;
    /// 400 when the session cannot run as asked: its agent (as [`Engine::check_agent`]) or a
    /// setting that agent does not have (`unsupported_value`, e.g. a voice it lacks).
    fn check_session(&self, config: &SessionConfig) -> Result<(), ApiError> {
        self.check_agent(&config.agent)
    }
    async fn create_call(&self, req: CallRequest) -> Result<CallCreated, ApiError>;
    /// `owner`: when set, the call must belong to that session (else 404, not 403, so ids of
    /// other sessions are not confirmed to exist).
    async fn end_call(&self, call_id: &CallId, owner: Option<&SessionId>) -> Result<(), ApiError>;
    /// Plain RTP ingest; 404 `rtp_ingest_disabled` when the server has it off.
    async fn create_rtp_session(&self, config: SessionConfig, session_id: SessionId, origin: Origin) -> Result<RtpCreated, ApiError>;
    /// Attaches an events socket to a live call (`plain_rtp` selects which kind of id).
    fn attach_events(&self, call_id: &CallId, plain_rtp: bool) -> Result<EventChannel, ApiError>;
    fn is_ready(&self) -> bool;
    /// Telephony (PROTOCOL.md §5): accepts a Twilio Media Streams WebSocket; the call starts at
    /// its `start` message. 503 at `max_calls` or while draining.
    fn open_phone_stream(&self, _origin: Origin) -> Result<PhoneChannel, ApiError> {
        Err(ApiError::not_found("telephony_disabled", "telephony is not available on this server"))
    }
    /// A Realtime session over WebSocket (PROTOCOL.md §8); called before the upgrade, so a
    /// refusal (503 at `max_calls` or draining) is an HTTP answer.
    fn open_realtime_session(&self, _req: WsSessionRequest) -> Result<RealtimeChannel, ApiError> {
        Err(ApiError::not_found("websocket_sessions_unsupported", "Realtime sessions over WebSocket are not available on this server"))
    }
    /// ICE servers (TURN credentials) to hand a client for this session; empty without TURN.
    fn ice_servers(&self, _session_id: &SessionId) -> Vec<serde_json::Value> {
        Vec::new()
    }
    /// Rooms (PROTOCOL.md §4): joins the token's participant (replacing a connection it
    /// already has) and answers its offer.
    async fn join_room(&self, _req: rooms::JoinRequest) -> Result<String, ApiError> {
        Err(rooms::rooms_disabled())
    }
    /// Takes a participant out of a room (`removed`: by an admin, else it left).
    async fn leave_room(&self, _room: &RoomName, _identity: &ParticipantId, _removed: bool) -> Result<(), ApiError> {
        Err(rooms::rooms_disabled())
    }
    async fn room_info(&self, _room: &RoomName) -> Result<room_wire::RoomInfo, ApiError> {
        Err(rooms::rooms_disabled())
    }
    /// `POST /v1/rooms`; `None` limits take the server's defaults. 409 when it exists.
    async fn create_room(
        &self,
        _room: &RoomName,
        _max_participants: Option<usize>,
        _empty_timeout_s: Option<u64>,
    ) -> Result<room_wire::RoomInfo, ApiError> {
        Err(rooms::rooms_disabled())
    }
    async fn list_rooms(&self) -> Vec<room_wire::RoomInfo> {
        Vec::new()
    }
    /// `GET /v1/rooms` across the cluster's nodes (`headers`: the caller's, to ask the others
    /// with); without a cluster, this node's.
    async fn list_cluster_rooms(&self, _headers: &axum::http::HeaderMap) -> Result<Vec<room_wire::RoomInfo>, ApiError> {
        Ok(self.list_rooms().await)
    }
    /// Everyone leaves (`room_deleted`) and the room closes.
    async fn delete_room(&self, _room: &RoomName) -> Result<(), ApiError> {
        Err(rooms::rooms_disabled())
    }
    /// Server-side mute: the participant's audio stops being forwarded.
    async fn mute_participant(&self, _room: &RoomName, _identity: &ParticipantId, _muted: bool) -> Result<(), ApiError> {
        Err(rooms::rooms_disabled())
    }
    /// Attaches an AI participant (PROTOCOL.md §4); 409 when the room has one.
    async fn attach_agent(&self, _spec: rooms::AgentSpec) -> Result<room_wire::AgentAttached, ApiError> {
        Err(rooms::rooms_disabled())
    }
    /// Takes the room's AI participant out (a response in progress is cancelled).
    async fn detach_agent(&self, _room: &RoomName) -> Result<(), ApiError> {
        Err(rooms::rooms_disabled())
    }
    /// WHIP/WHEP `PATCH` (PROTOCOL.md §3) of a room participant's connection: trickled
    /// candidates, or an ICE restart. `if_match`: the request's `If-Match` (412 when stale).
    async fn patch_ice(
        &self,
        _room: &RoomName,
        _identity: &ParticipantId,
        _fragment: sdpfrag::IceFragment,
        _if_match: Option<String>,
    ) -> Result<whip::IcePatched, ApiError> {
        Err(rooms::rooms_disabled())
    }
    /// `PATCH /v1/realtime/calls/<id>`: trickle ICE or an ICE restart of a live WebRTC call, as
    /// for WHIP (`owner` as for [`Engine::end_call`]).
    async fn patch_call_ice(
        &self,
        _call_id: &CallId,
        _owner: Option<&SessionId>,
        _fragment: sdpfrag::IceFragment,
        _if_match: Option<String>,
    ) -> Result<whip::IcePatched, ApiError> {
        Err(ApiError::not_found("call_not_found", "no such call"))
    }
    /// Scale-out: the base URL of the node `room` lives on, `None` when it is this one (or there
    /// is no cluster). `claim`: the request may create the room, so this node takes it when
    /// nobody has it.
    async fn room_home(&self, _room: &RoomName, _claim: bool) -> Result<Option<String>, ApiError> {
        Ok(None)
    }
    /// Scale-out: the base URL of the node a 1:1 call request goes to, `None` when it is this
    /// one (or there is no cluster). A new call is placed on the least-loaded node.
    async fn call_home(&self, _target: forwarding::calls::CallTarget<'_>) -> Result<Option<String>, ApiError> {
        Ok(None)
    }
    /// Scale-out: the node (id) a client secret minted now places its calls on.
    fn place_secret(&self) -> Option<String> {
        None
    }
    /// Passes a WebSocket request to the node at `base`: the client's upgrade is answered as
    /// that node answers, and the socket relayed both ways.
    async fn forward_socket(
        &self,
        _base: &str,
        _path_and_query: &str,
        _headers: &axum::http::HeaderMap,
        _ws: axum::extract::ws::WebSocketUpgrade,
    ) -> axum::response::Response {
        axum::response::IntoResponse::into_response(ApiError::internal("this server forwards no requests"))
    }
    /// Passes a request to the node at `base` and returns its answer.
    async fn forward(
        &self,
        _base: &str,
        _method: axum::http::Method,
        _path_and_query: &str,
        _headers: &axum::http::HeaderMap,
        _body: axum::body::Bytes,
    ) -> Result<axum::response::Response, ApiError> {
        Err(ApiError::internal("this server forwards no requests"))
    }
    /// Call history (PROTOCOL.md §5): a page of stored calls, newest first.
    async fn list_calls(&self, _query: call_history::CallQuery) -> Result<call_history::CallList, ApiError> {
        Err(call_history::history_disabled())
    }
    /// One stored call with its transcript.
    async fn call_record(&self, _id: &str) -> Result<call_history::CallDetail, ApiError> {
        Err(call_history::history_disabled())
    }
    /// Prometheus text exposition for `/metrics`.
    fn metrics_text(&self) -> String;
}

pub struct Api {
    pub auth: Auth,
    pub engine: Arc<dyn Engine>,
    /// API errors answered, by code (exported at `/metrics`).
    pub errors: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// The browser page's session helper (off unless [`Api::with_web`] turns it on).
    pub web: web::WebState,
    /// Telephony webhook settings: public URL, carrier signature secret.
    pub telephony: telephony::TelephonySettings,
    /// Abuse limits: request rates per IP and credential, WebSockets per IP.
    pub limits: limits::Limits,
    /// `/metrics` without the API key from any address (else: loopback only).
    pub metrics_public: bool,
}

impl Api {
    pub fn new(auth: Auth, engine: Arc<dyn Engine>) -> Self {
        Self {
            auth,
            engine,
            errors: Default::default(),
            web: web::WebState::new(web::WebSettings::disabled()),
            telephony: telephony::TelephonySettings::default(),
            limits: limits::Limits::new(limits::LimitSettings::default()),
            metrics_public: false,
        }
    }

    pub fn with_public_metrics(mut self, public: bool) -> Self {
        self.metrics_public = public;
        self
    }

    pub fn with_limits(mut self, settings: limits::LimitSettings) -> Self {
        self.limits = limits::Limits::new(settings);
        self
    }

    pub fn with_telephony(mut self, settings: telephony::TelephonySettings) -> Self {
        self.telephony = settings;
        self
    }

    /// New sessions are refused while the server drains (503 + Retry-After: a load balancer or
    /// client retries elsewhere; live calls are not affected).
    pub(crate) fn admit(&self) -> Result<(), ApiError> {
        if self.engine.is_ready() { Ok(()) } else { Err(ApiError::overloaded("the server is draining and takes no new sessions")) }
    }

    pub fn with_web(mut self, settings: web::WebSettings) -> Self {
        self.web = web::WebState::new(settings);
        self
    }
}

async fn count_errors(
    axum::extract::State(api): axum::extract::State<Arc<Api>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let resp = next.run(req).await;
    if let Some(error::ErrorCode(code)) = resp.extensions().get::<error::ErrorCode>() {
        *api.errors.lock().unwrap_or_else(|p| p.into_inner()).entry(code).or_default() += 1;
    }
    resp
}

/// Tags the request with the client's IP and refuses a costly one over its rate
/// ([`limits::Limits`]).
async fn enforce_limits(
    axum::extract::State(api): axum::extract::State<Arc<Api>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let ip = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    // A room request another node of the cluster passed on: the client's own address counts.
    let ip = api.auth.node_key.vouched(req.headers(), auth::unix_now()).or(ip);
    let ip = limits::ClientIp(ip);
    req.extensions_mut().insert(ip);
    if limits::Costly::of(req.method(), req.uri().path()).is_some()
        && let Err(e) = api.limits.check(ip, auth::bearer(req.headers()).ok())
    {
        return e.into_response();
    }
    next.run(req).await
}

pub fn router(api: Arc<Api>) -> Router {
    let limit = || axum::middleware::from_fn_with_state(api.clone(), enforce_limits);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/realtime/sessions", post(realtime::create_session))
        .route("/v1/realtime/client_secrets", post(realtime::create_client_secret))
        .route("/v1/realtime", post(realtime::create_call_beta).get(watch::realtime_socket))
        .route("/v1/realtime/calls", post(realtime::create_call_ga))
        .route("/v1/realtime/calls/{id}", delete(realtime::end_call).patch(realtime::patch_call))
        .route("/v1/realtime/calls/{id}/hangup", post(realtime::hangup))
        .route("/v1/calls", get(call_history::list))
        .route("/v1/calls/{id}", get(call_history::get))
        .route("/v1/calls/{id}/events", get(watch::call_events))
        .route("/v1/rtp", post(plain_rtp::create))
        .route("/v1/rtp/{id}", delete(plain_rtp::end))
        .route("/v1/rtp/{id}/events", get(watch::rtp_events))
        .route("/v1/rooms", post(rooms::create).get(rooms::list))
        .route("/v1/rooms/{room}", get(rooms::get).delete(rooms::delete))
        .route("/v1/rooms/{room}/participants/{identity}/mute", post(rooms::mute))
        .route("/v1/rooms/{room}/tokens", post(rooms::mint_token))
        .route("/v1/rooms/{room}/join", post(rooms::join))
        .route("/v1/rooms/{room}/agent", post(rooms::attach_agent).delete(rooms::detach_agent))
        .route("/v1/rooms/{room}/participants/{identity}", delete(rooms::remove_participant))
        .route("/v1/whip/{room}", post(whip::whip))
        .route("/v1/whep/{room}", post(whip::whep))
        .route("/v1/whip/{room}/{identity}", patch(whip::patch).delete(whip::delete))
        .route("/v1/whep/{room}/{identity}", patch(whip::patch).delete(whip::delete))
        .route("/v1/telephony/twilio/voice", post(telephony::twilio_voice))
        .route("/v1/telephony/twilio", get(telephony::twilio_stream))
        .fallback(realtime::not_found)
        .method_not_allowed_fallback(realtime::method_not_allowed)
        // A room on another node: its requests go there (after this node's rate limits).
        .layer(axum::middleware::from_fn_with_state(api.clone(), forwarding::rooms::forward_rooms))
        .layer(axum::middleware::from_fn_with_state(api.clone(), forwarding::calls::forward_calls))
        // Inside CORS, so a browser can read a 429.
        .layer(limit())
        .layer(cors())
        // The page and its helper stay outside the CORS layer: same-origin only.
        .merge(web::routes().layer(limit()))
        // Not for browsers either: no CORS, and the API key unless on loopback or made public.
        .merge(Router::new().route("/metrics", get(health::metrics)).layer(limit()))
        // Inside the counter, so rewritten framework errors are counted by their code.
        .layer(axum::middleware::from_fn(edge_errors::json_errors))
        .layer(axum::middleware::from_fn_with_state(api.clone(), count_errors))
        .with_state(api)
}

/// Browsers call the API from their own pages. Credentials are bearer tokens, never cookies,
/// so any origin may call: a page without a token gets nothing it could not get with curl.
fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, IF_MATCH, LINK, LOCATION};
    use tower_http::cors::{Any, CorsLayer};
    // Headers listed, not `*`: per the Fetch spec a wildcard never covers Authorization, and
    // Firefox/Safari enforce that.
    CorsLayer::new().allow_origin(Any).allow_methods(Any).allow_headers([AUTHORIZATION, CONTENT_TYPE, IF_MATCH]).expose_headers([
        LOCATION,
        ETAG,
        LINK,
        axum::http::HeaderName::from_static("accept-patch"),
    ])
}
