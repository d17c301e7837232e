//! The server's engine: implements the signaling crate's [`Engine`] trait by creating WebRTC
//! calls (peer connection + audio worker session + call task) and tracking them until they end.
//! Resource limits live here: `max_calls` (503 beyond it) and the media port range.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};
use voxrelay_media::{AudioCodec, EchoGuardConfig, SessionHandle, SessionOptions, SessionStats, StatsSnapshot, VadKind, WorkerPool};
use voxrelay_signaling::auth::random_id;
use voxrelay_signaling::events::IdSource;
use voxrelay_signaling::{ApiError, CallCreated, CallRequest, Dialect, Engine, EventChannel, OfferedCodec, RtpCreated, SessionConfig};

use crate::agent;
use crate::call::{CallSetup, Conversation, run_call, turn_config};
use crate::metrics::Metrics;
use crate::peer::{OPUS_PAYLOAD_TYPE, PeerEvent, PortAllocator, audio_track, build_peer, wait_gathered};
use crate::rtp::{PacketSink, read_plain_rtp};

/// How long DELETE waits for the call's resources to be released before answering.
const END_WAIT: Duration = Duration::from_secs(3);

struct CallEntry {
    session_id: String,
    stop: Arc<Notify>,
    done: watch::Receiver<bool>,
    /// Feeds the call task's event stream (to attach event sockets).
    inject: mpsc::UnboundedSender<PeerEvent>,
    kind: TransportKind,
    stats: Arc<SessionStats>,
}

/// How a call reaches the server (ids, `/metrics` labels, which events URL may attach).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    WebRtc,
    PlainRtp,
    Twilio,
}

impl TransportKind {
    pub const ALL: [TransportKind; 3] = [TransportKind::WebRtc, TransportKind::PlainRtp, TransportKind::Twilio];

    /// What one call of this kind costs against `max_calls`, in quarter calls: an Opus call
    /// (WebRTC, plain RTP) a whole one, a G.711 phone call a quarter (BENCHMARKS.md: ≈ 200
    /// phone calls per core against ≈ 50 WebRTC calls by the same turn-latency criterion).
    pub fn cost_quarters(self) -> usize {
        match self {
            TransportKind::WebRtc | TransportKind::PlainRtp => 4,
            TransportKind::Twilio => 1,
        }
    }

    /// The `/metrics` label.
    pub fn label(self) -> &'static str {
        match self {
            TransportKind::WebRtc => "webrtc",
            TransportKind::PlainRtp => "rtp",
            TransportKind::Twilio => "twilio",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            TransportKind::WebRtc => "rtc_",
            TransportKind::PlainRtp => "rtp_",
            TransportKind::Twilio => "tel_",
        }
    }
}

/// A transport that reads the caller's audio itself (plain RTP, phone streams): given the
/// session's ingress ring, it spawns its reader task.
pub(crate) type Ingest = Box<dyn FnOnce(String, rtrb::Producer<voxrelay_media::RtpIn>) -> tokio::task::JoinHandle<()> + Send>;

/// What a new call's transport hands the engine.
pub(crate) struct Transport {
    pub(crate) peer: Option<crate::peer::Peer>,
    pub(crate) events: mpsc::UnboundedReceiver<PeerEvent>,
    pub(crate) inject: mpsc::UnboundedSender<PeerEvent>,
    pub(crate) early_events: Vec<PeerEvent>,
    pub(crate) sink: PacketSink,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) ssrc: u32,
    pub(crate) payload_type: u8,
    pub(crate) codec: AudioCodec,
    pub(crate) kind: TransportKind,
    /// Set for transports that read their own input; WebRTC hands ingress to its track reader.
    pub(crate) ingest: Option<Ingest>,
    /// Phone transports: frames the caller has heard, per marks (see `Conversation::with_heard`).
    pub(crate) heard: Option<Arc<std::sync::atomic::AtomicU64>>,
}

pub struct VoxEngine {
    pool: WorkerPool,
    ports: PortAllocator,
    /// Plain RTP ingest (PROTOCOL.md §7): the IP its sockets bind to, `None` when off.
    rtp_ingest: Option<IpAddr>,
    vad: VadKind,
    /// AI providers this server may use (keys resolved at start).
    providers: agent::Providers,
    calls: Mutex<HashMap<String, CallEntry>>,
    draining: AtomicBool,
    max_calls: usize,
    /// Media counters of calls that have ended (live calls are read from their sessions).
    ended_media: Mutex<StatsSnapshot>,
    pub metrics: Arc<Metrics>,
    /// The embedded TURN server's advertisement, set at start when TURN is configured.
    pub turn: OnceLock<crate::turn::IceAdvert>,
    /// Phone streams upgraded but not started yet (they count toward `max_calls`, as phone calls).
    pub(crate) phone_pending: std::sync::atomic::AtomicUsize,
    /// Echo guard of phone sessions (lines without echo cancellation).
    pub phone_echo_guard: EchoGuardConfig,
}

impl VoxEngine {
    pub fn new(
        pool: WorkerPool,
        ports: PortAllocator,
        rtp_ingest: Option<IpAddr>,
        vad: VadKind,
        max_calls: usize,
        providers: agent::Providers,
        phone_echo_guard: EchoGuardConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            pool,
            ports,
            rtp_ingest,
            vad,
            providers,
            calls: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            max_calls,
            ended_media: Mutex::new(StatsSnapshot::default()),
            metrics: Arc::new(Metrics::default()),
            turn: OnceLock::new(),
            phone_pending: std::sync::atomic::AtomicUsize::new(0),
            phone_echo_guard,
        })
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, CallEntry>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn live_calls(&self) -> usize {
        self.calls().len()
    }

    /// Ids of the live calls of one transport (operators and tests find phone calls this way).
    pub fn call_ids(&self, kind: TransportKind) -> Vec<String> {
        self.calls().iter().filter(|(_, c)| c.kind == kind).map(|(id, _)| id.clone()).collect()
    }

    /// Live calls plus phone streams waiting for their `start`, in quarter calls
    /// ([`TransportKind::cost_quarters`]): what admission counts.
    fn admitted_quarters(&self) -> usize {
        let live: usize = self.calls().values().map(|c| c.kind.cost_quarters()).sum();
        live + self.phone_pending.load(Ordering::SeqCst) * TransportKind::Twilio.cost_quarters()
    }

    /// Whether one more call of `kind` may start now (`max_calls`, drain).
    pub(crate) fn admit(&self, kind: TransportKind) -> Result<(), ApiError> {
        if self.draining.load(Ordering::SeqCst) {
            self.metrics.calls_rejected.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::overloaded("the server is draining and takes no new calls"));
        }
        if self.admitted_quarters() + kind.cost_quarters() > self.max_calls.saturating_mul(4) {
            self.metrics.calls_rejected.fetch_add(1, Ordering::Relaxed);
            let limit = format!("the server is at its limit of {} calls (a phone call counts as a quarter)", self.max_calls);
            return Err(ApiError::overloaded(limit));
        }
        Ok(())
    }

    /// Live calls by transport, as one labelled gauge.
    fn render_by_transport(&self) -> String {
        let calls = self.calls();
        let name = "voxrelay_active_calls_by_transport";
        let mut out = format!("# HELP {name} Live calls by transport.\n# TYPE {name} gauge\n");
        for kind in TransportKind::ALL {
            let n = calls.values().filter(|c| c.kind == kind).count();
            out.push_str(&format!("{name}{{transport=\"{}\"}} {n}\n", kind.label()));
        }
        out
    }

    pub fn media_sessions(&self) -> usize {
        self.pool.sessions()
    }

    /// Media counters summed over every call, live and ended.
    pub fn media_totals(&self) -> StatsSnapshot {
        let mut total = *self.ended_media.lock().unwrap_or_else(|p| p.into_inner());
        for c in self.calls().values() {
            total.add(&c.stats.snapshot());
        }
        total
    }

    /// Stops taking new calls, lets live ones finish for up to `grace`, then ends the rest.
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        while self.live_calls() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let waits: Vec<_> = self
            .calls()
            .values()
            .map(|c| {
                c.stop.notify_one();
                c.done.clone()
            })
            .collect();
        for mut done in waits {
            let _ = tokio::time::timeout(END_WAIT, done.wait_for(|d| *d)).await;
        }
    }

    async fn start_call(self: &Arc<Self>, req: CallRequest) -> Result<CallCreated, ApiError> {
        let sockets = self.ports.allocate().ok_or_else(|| ApiError::overloaded("no free media port in the configured range"))?;
        let addr = sockets.udp.expect("the server always listens on UDP");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let inject = tx.clone();
        let peer = build_peer(sockets, tx).await.map_err(|e| {
            warn!("building peer connection on {addr}: {e}");
            ApiError::overloaded("could not open a media socket")
        })?;
        let fail = |peer: crate::peer::Peer, err: ApiError| async move {
            let _ = peer.close().await;
            err
        };
        let codec = match req.summary.codec {
            OfferedCodec::Opus => AudioCodec::Opus,
            OfferedCodec::Pcmu => AudioCodec::Pcmu,
            OfferedCodec::Pcma => AudioCodec::Pcma,
        };
        let (track, ssrc) = audio_track("voxrelay", codec);
        if let Err(e) = peer.add_track(track.clone()).await {
            return Err(fail(peer, ApiError::internal(format!("adding the outbound track: {e}"))).await);
        }
        let offer = match rtc::peer_connection::sdp::RTCSessionDescription::offer(req.offer) {
            Ok(o) => o,
            Err(e) => return Err(fail(peer, ApiError::bad_request("invalid_offer", format!("malformed SDP offer: {e}"))).await),
        };
        if let Err(e) = peer.set_remote_description(offer).await {
            return Err(fail(peer, ApiError::bad_request("invalid_offer", format!("the SDP offer was not accepted: {e}"))).await);
        }
        let answer = match peer.create_answer(None).await {
            Ok(a) => a,
            Err(e) => return Err(fail(peer, ApiError::bad_request("invalid_offer", format!("no answer for this offer: {e}"))).await),
        };
        if let Err(e) = peer.set_local_description(answer).await {
            return Err(fail(peer, ApiError::internal(format!("setting the local description: {e}"))).await);
        }
        let early_events = match wait_gathered(&mut rx).await {
            Ok(ev) => ev,
            Err(e) => return Err(fail(peer, ApiError::internal(e)).await),
        };
        let Some(local) = peer.local_description().await else {
            return Err(fail(peer, ApiError::internal("no local description after gathering")).await);
        };
        let transport = Transport {
            peer: Some(peer),
            events: rx,
            inject,
            early_events,
            sink: PacketSink::Track(track),
            tasks: Vec::new(),
            ssrc,
            payload_type: req.summary.payload_type,
            codec,
            kind: TransportKind::WebRtc,
            ingest: None,
            heard: None,
        };
        let call_id = self.launch(transport, req.config, req.dialect, req.session_id, addr).await?;
        Ok(CallCreated { call_id, answer_sdp: local.sdp })
    }
}

impl VoxEngine {
    /// Starts the worker session, the agent and the call task for a ready transport.
    pub(crate) async fn launch(self: &Arc<Self>, t: Transport, config: SessionConfig, dialect: Dialect, session_id: String, addr: SocketAddr) -> Result<String, ApiError> {
        let close = |peer: Option<crate::peer::Peer>, err: ApiError| async move {
            if let Some(p) = peer {
                let _ = p.close().await;
            }
            err
        };
        let echo_guard = match t.kind {
            TransportKind::Twilio => self.phone_echo_guard,
            _ => EchoGuardConfig::OFF,
        };
        let options = SessionOptions { vad: self.vad, codec: t.codec, echo_guard };
        let media = match self.pool.add_session_with(turn_config(&config), options) {
            Ok(m) => m,
            Err(e) => return Err(close(t.peer, ApiError::overloaded(format!("audio workers: {e}"))).await),
        };
        let agent = match agent::new_agent(&self.providers, &config) {
            Ok(a) => a,
            Err(e) => return Err(close(t.peer, e).await),
        };
        let SessionHandle { ingress, control, agent_out, egress, uplink, stats } = media;
        let mut tasks = t.tasks;
        let call_id = random_id(t.kind.id_prefix());
        let ingress = match (t.ingest, &t.sink) {
            (Some(ingest), _) => {
                tasks.push(ingest(call_id.clone(), ingress));
                None
            }
            (None, PacketSink::Udp { socket, peer }) => {
                let reader = read_plain_rtp(socket.clone(), peer.clone(), ingress, t.payload_type, self.metrics.clone(), t.inject.clone());
                tasks.push(tokio::spawn(reader));
                None
            }
            (None, _) => Some(ingress),
        };
        let kind = t.kind;
        let stop = Arc::new(Notify::new());
        let (done_tx, done_rx) = watch::channel(false);
        self.calls().insert(
            call_id.clone(),
            CallEntry { session_id: session_id.clone(), stop: stop.clone(), done: done_rx, inject: t.inject, kind, stats: stats.clone() },
        );
        self.metrics.calls_started.fetch_add(1, Ordering::Relaxed);
        info!(call = %call_id, session = %session_id, agent = %config.agent, transport = kind.label(), %addr, "call started");
        let mut conversation = Conversation::new(dialect, session_id, config, agent, IdSource::random());
        if let Some(heard) = t.heard {
            conversation = conversation.with_heard(heard);
        }
        let setup = CallSetup {
            call_id: call_id.clone(),
            peer: t.peer,
            peer_events: t.events,
            early_events: t.early_events,
            sink: t.sink,
            tasks,
            ssrc: t.ssrc,
            payload_type: t.payload_type,
            codec: t.codec,
            ingress,
            control,
            agent_out,
            egress,
            uplink,
            conversation,
            stop,
            metrics: self.metrics.clone(),
        };
        let engine = Arc::clone(self);
        let id = call_id.clone();
        tokio::spawn(async move {
            run_call(setup).await;
            engine.calls().remove(&id);
            engine.ended_media.lock().unwrap_or_else(|p| p.into_inner()).add(&stats.snapshot());
            engine.metrics.calls_ended.fetch_add(1, Ordering::Relaxed);
            let _ = done_tx.send(true);
        });
        Ok(call_id)
    }

    async fn start_rtp_session(self: &Arc<Self>, config: SessionConfig, session_id: String) -> Result<RtpCreated, ApiError> {
        let ip = self.rtp_ingest.ok_or_else(rtp_disabled)?;
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await.map_err(|e| {
            warn!("binding a plain RTP socket on {ip}: {e}");
            ApiError::overloaded("could not open a media socket")
        })?;
        let addr = socket.local_addr().map_err(|e| ApiError::internal(e.to_string()))?;
        let (inject, events) = mpsc::unbounded_channel();
        let transport = Transport {
            peer: None,
            events,
            inject,
            early_events: Vec::new(),
            sink: PacketSink::Udp { socket: Arc::new(socket), peer: Arc::new(OnceLock::new()) },
            tasks: Vec::new(),
            ssrc: rand::random(),
            payload_type: OPUS_PAYLOAD_TYPE,
            codec: AudioCodec::Opus,
            kind: TransportKind::PlainRtp,
            ingest: None,
            heard: None,
        };
        let id = self.launch(transport, config, Dialect::Beta, session_id, addr).await?;
        Ok(RtpCreated { id, ip: addr.ip().to_string(), port: addr.port(), payload_type: OPUS_PAYLOAD_TYPE })
    }
}

fn rtp_disabled() -> ApiError {
    ApiError::not_found("rtp_ingest_disabled", "plain RTP ingest is off on this server (start it with --rtp-ingest)")
}

/// The signaling crate holds the engine as `Arc<dyn Engine>`; this wrapper gives the trait
/// methods access to the `Arc` they need to spawn call tasks.
pub struct EngineHandle(pub Arc<VoxEngine>);

#[async_trait::async_trait]
impl Engine for EngineHandle {
    fn check_agent(&self, name: &str) -> Result<(), ApiError> {
        agent::check_agent(&self.0.providers, name)
    }

    async fn create_call(&self, req: CallRequest) -> Result<CallCreated, ApiError> {
        let engine = &self.0;
        engine.admit(TransportKind::WebRtc)?;
        engine.start_call(req).await
    }

    async fn create_rtp_session(&self, config: SessionConfig, session_id: String) -> Result<RtpCreated, ApiError> {
        let engine = &self.0;
        engine.rtp_ingest.ok_or_else(rtp_disabled)?;
        engine.admit(TransportKind::PlainRtp)?;
        engine.start_rtp_session(config, session_id).await
    }

    fn attach_events(&self, call_id: &str, plain_rtp: bool) -> Result<EventChannel, ApiError> {
        let calls = self.0.calls();
        let entry = calls
            .get(call_id)
            // `/v1/rtp/<id>/events` attaches plain-RTP sessions only; `/v1/calls/<id>/events`
            // any other call (WebRTC, phone).
            .filter(|c| (c.kind == TransportKind::PlainRtp) == plain_rtp)
            .ok_or_else(|| ApiError::not_found("call_not_found", format!("no live call {call_id:?}")))?;
        let (to_client_tx, to_client) = mpsc::unbounded_channel();
        let (from_client, mut from_client_rx) = mpsc::unbounded_channel::<String>();
        entry
            .inject
            .send(PeerEvent::EventSocket(to_client_tx))
            .map_err(|_| ApiError::not_found("call_not_found", "the call has ended"))?;
        let inject = entry.inject.clone();
        tokio::spawn(async move {
            while let Some(text) = from_client_rx.recv().await {
                if inject.send(PeerEvent::DataChannelText(text)).is_err() {
                    break;
                }
            }
        });
        Ok(EventChannel { to_client, from_client })
    }

    async fn end_call(&self, call_id: &str, owner: Option<&str>) -> Result<(), ApiError> {
        let done = {
            let calls = self.0.calls();
            let entry = calls
                .get(call_id)
                .filter(|c| owner.is_none_or(|o| o == c.session_id))
                .ok_or_else(|| ApiError::not_found("call_not_found", format!("no live call {call_id:?}")))?;
            entry.stop.notify_one();
            entry.done.clone()
        };
        let mut done = done;
        let _ = tokio::time::timeout(END_WAIT, done.wait_for(|d| *d)).await;
        Ok(())
    }

    fn open_phone_stream(&self) -> Result<voxrelay_signaling::PhoneChannel, ApiError> {
        crate::telephony::open_twilio_stream(&self.0)
    }

    fn is_ready(&self) -> bool {
        !self.0.draining.load(Ordering::SeqCst)
    }

    fn ice_servers(&self, session_id: &str) -> Vec<serde_json::Value> {
        match self.0.turn.get() {
            Some(advert) => advert.ice_servers(session_id, crate::turn::core::Now::system().unix),
            None => Vec::new(),
        }
    }

    fn metrics_text(&self) -> String {
        let e = &self.0;
        let mut text = e.metrics.render(&[
            ("voxrelay_active_calls", "Live calls.", e.live_calls() as u64),
            ("voxrelay_media_sessions", "Sessions held by the audio workers.", e.media_sessions() as u64),
        ]);
        text.push_str(&e.render_by_transport());
        text.push_str(&crate::metrics::render_media(&e.media_totals(), &e.pool.worker_stats()));
        if let Some(turn) = e.turn.get() {
            text.push_str(&turn.stats.prometheus());
        }
        text
    }
}
