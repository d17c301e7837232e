//! The server's engine: implements the signaling crate's [`Engine`] trait. It asks
//! [`crate::admission`] whether a call may start, gets a ready [`Transport`] from one of the
//! transports (WebRTC answer, plain-RTP socket, started phone stream), starts the call's audio
//! worker session, agent and call task, and keeps the registry of live calls until they end.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};
use voxrelay_media::{AudioCodec, EchoGuardConfig, SessionHandle, SessionOptions, SessionStats, StatsSnapshot, VadKind, WorkerPool};
use voxrelay_signaling::call_history::TranscriptRole;
use voxrelay_signaling::events::IdSource;
use voxrelay_signaling::{
    ApiError, CallCreated, CallId, CallRequest, Dialect, OfferedCodec, Origin, PhoneChannel, RealtimeChannel, RtpCreated, SessionConfig,
    SessionId, SocketMessage, WsSessionRequest,
};
use voxrelay_signaling::{ParticipantId, RoomName};

use crate::admission::{Admission, Seat, Shares, Ticket};
use crate::agent;
use crate::agent::history::{Dialogue, HISTORY_BUDGET_CHARS};
use crate::call::lifetime::CallLimits;
use crate::call::{CallSetup, Conversation, Person, SessionRings, run_call, turn_config};
use crate::metrics::Metrics;
use crate::store::{Opened, RecordId, Recorder, Store, StoreEvent, UnixMs};
use crate::transport::link::Link;
use crate::transport::webrtc::{OPUS_PAYLOAD_TYPE, PortAllocator};
use crate::transport::{Inbound, Transport, TransportEvent, TransportKind, phone, plain_rtp, ws};

mod bells;
mod handle;
pub use bells::WorkerBells;
pub use handle::EngineHandle;

/// How long DELETE waits for the call's resources to be released before answering.
const END_WAIT: Duration = Duration::from_secs(3);

struct CallEntry {
    session_id: SessionId,
    /// Who holds it, for admission's shares; `connected` is set by the call task.
    seat: Seat,
    connected: Arc<AtomicBool>,
    stop: Arc<Notify>,
    done: watch::Receiver<bool>,
    /// Feeds the call task's event stream (to attach event sockets).
    inject: mpsc::UnboundedSender<TransportEvent>,
    kind: TransportKind,
    stats: Arc<SessionStats>,
    /// WebRTC calls: trickle ICE and ICE restarts (`PATCH /v1/realtime/calls/<id>`).
    ice: Option<crate::transport::webrtc::IceControl>,
}

pub struct VoxEngine {
    pool: Arc<WorkerPool>,
    bells: Arc<WorkerBells>,
    ports: PortAllocator,
    rtc_loops: Option<crate::transport::webrtc::RtcLoops>,
    /// Plain RTP ingest (PROTOCOL.md §7): the IP its sockets bind to, `None` when off.
    rtp_ingest: Option<IpAddr>,
    vad: VadKind,
    /// AI providers this server may use (keys resolved at start).
    providers: agent::Providers,
    calls: Mutex<HashMap<CallId, CallEntry>>,
    admission: Admission,
    call_limits: CallLimits,
    /// Media counters of calls that have ended (live calls are read from their sessions).
    ended_media: Mutex<StatsSnapshot>,
    pub metrics: Arc<Metrics>,
    /// The embedded TURN server's advertisement, set at start when TURN is configured.
    pub relay: OnceLock<crate::relay::IceAdvert>,
    /// Echo guard of phone sessions (lines without echo cancellation).
    pub phone_echo_guard: EchoGuardConfig,
    /// The SFU's rooms (PROTOCOL.md §4).
    pub rooms: Arc<crate::room::Rooms>,
    /// The call history (calls, participants, transcripts).
    pub store: Arc<Store>,
    /// Several nodes on one Redis (set at start with `--redis-url`).
    pub cluster: OnceLock<Arc<crate::cluster::Cluster>>,
    /// Forwards room requests to the node a room lives on.
    http: reqwest::Client,
}

/// The engine's settings (from the server's configuration).
pub struct EngineSettings {
    /// Plain RTP ingest: the IP its sockets bind to, `None` when off.
    pub rtp_ingest: Option<IpAddr>,
    pub vad: VadKind,
    pub max_calls: usize,
    /// What one address or client secret may hold (README "Limits").
    pub shares: Shares,
    /// Idle timeout and maximum duration of 1:1 calls (a session may lower them).
    pub call_limits: CallLimits,
    pub phone_echo_guard: EchoGuardConfig,
    pub rooms: crate::room::RoomSettings,
    pub store: Arc<Store>,
    /// The pool's tick bells, for the call tasks.
    pub bells: Arc<WorkerBells>,
    /// Shared loops for 1:1 WebRTC calls (`rtc_loop`); none: a driver per call.
    pub rtc_loops: Option<crate::transport::webrtc::RtcLoops>,
}

impl VoxEngine {
    pub fn new(pool: WorkerPool, ports: PortAllocator, providers: agent::Providers, settings: EngineSettings) -> Arc<Self> {
        let EngineSettings { rtp_ingest, vad, max_calls, shares, call_limits, phone_echo_guard, rooms, store, bells, rtc_loops } = settings;
        let metrics = Arc::new(Metrics::default());
        Arc::new(Self {
            rooms: crate::room::Rooms::new(rooms, metrics.clone(), store.clone()),
            store,
            cluster: OnceLock::new(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default(),
            pool: Arc::new(pool),
            bells,
            ports,
            rtc_loops,
            rtp_ingest,
            vad,
            providers,
            calls: Mutex::new(HashMap::new()),
            admission: Admission::new(max_calls, shares),
            call_limits,
            ended_media: Mutex::new(StatsSnapshot::default()),
            metrics,
            relay: OnceLock::new(),
            phone_echo_guard,
        })
    }

    /// Peer connections on the WebRTC loops (0 without them).
    pub fn loop_connections(&self) -> usize {
        self.rtc_loops.as_ref().map_or(0, |l| l.connections())
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<CallId, CallEntry>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn live_calls(&self) -> usize {
        self.calls().len()
    }

    /// Ids of the live calls of one transport (operators and tests find phone calls this way).
    pub fn call_ids(&self, kind: TransportKind) -> Vec<CallId> {
        self.calls().iter().filter(|(_, c)| c.kind == kind).map(|(id, _)| id.clone()).collect()
    }

    /// Whether `want` may start now ([`Admission`] decides; refusals counted); the ticket holds
    /// its place until the call is in the registry.
    fn admit(&self, want: Seat) -> Result<Ticket, ApiError> {
        let mut live: Vec<Seat> =
            self.calls().values().map(|c| Seat { connected: c.connected.load(Ordering::Relaxed), ..c.seat.clone() }).collect();
        live.extend((0..self.rooms.seated()).map(|_| Seat { connected: true, ..Seat::room_participant() }));
        self.admission.admit(want, live).inspect_err(|_| {
            self.metrics.calls_rejected.fetch_add(1, Ordering::Relaxed);
        })
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

    /// What this node tells the cluster about itself.
    pub fn node_load(&self) -> crate::cluster::NodeLoad {
        crate::cluster::NodeLoad { load: self.live_calls() + self.rooms.seated(), draining: self.admission.is_draining() }
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
        self.admission.start_draining();
        // Every live call is told how long it has (`session.ending`, reason `server_draining`).
        for c in self.calls().values() {
            let _ = c.inject.send(TransportEvent::Ending { reason: "server_draining", seconds_left: grace.as_secs() });
        }
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
        // Rooms have no end of their own: their participants leave with `server_shutdown`.
        self.rooms.close_all().await;
    }

    async fn start_webrtc_call(self: &Arc<Self>, req: CallRequest, ticket: Ticket) -> Result<CallCreated, ApiError> {
        let codec = match req.summary.codec {
            OfferedCodec::Opus => AudioCodec::Opus,
            OfferedCodec::Pcmu => AudioCodec::Pcmu,
            OfferedCodec::Pcma => AudioCodec::Pcma,
        };
        let inbound = Inbound { payload_type: req.summary.payload_type, audio_level_ext: req.summary.audio_level_ext };
        let (transport, answer_sdp, addr) = match &self.rtc_loops {
            Some(loops) => loops.answer(req.offer, codec, inbound).await?,
            None => {
                let sockets = self.ports.allocate().ok_or_else(|| ApiError::overloaded("no free media port in the configured range"))?;
                let Some(addr) = sockets.udp else { return Err(ApiError::internal("no UDP media socket was allocated")) };
                let (transport, sdp) = crate::transport::webrtc::answer(sockets, req.offer, codec, inbound).await?;
                (transport, sdp, addr)
            }
        };
        // The caller's silences then cost the audio worker nothing (peer::opus_codec).
        let answer_sdp = voxrelay_signaling::sdp_dtx::prefer_dtx(&answer_sdp);
        let seat = Seat::call(TransportKind::WebRtc, req.origin.ip, req.origin.secret);
        let call_id = self.launch(transport, req.config, req.dialect, req.session_id, addr, (seat, ticket)).await?;
        Ok(CallCreated { call_id, answer_sdp })
    }

    async fn start_rtp_session(
        self: &Arc<Self>,
        config: SessionConfig,
        session_id: SessionId,
        origin: Origin,
    ) -> Result<RtpCreated, ApiError> {
        let ip = self.rtp_ingest.ok_or_else(rtp_disabled)?;
        let seat = Seat::call(TransportKind::PlainRtp, origin.ip, origin.secret);
        let ticket = self.admit(seat.clone())?;
        let (transport, addr) = plain_rtp::open(ip).await?;
        let id = self.launch(transport, config, Dialect::Beta, session_id, addr, (seat, ticket)).await?;
        Ok(RtpCreated { id, ip: addr.ip().to_string(), port: addr.port(), payload_type: OPUS_PAYLOAD_TYPE })
    }

    /// Accepts a phone stream: admission now (its place is held until `start`), the call once
    /// `start` arrives.
    fn open_phone_stream(self: &Arc<Self>, origin: Origin) -> Result<PhoneChannel, ApiError> {
        let seat = Seat::call(TransportKind::Twilio, origin.ip, None);
        let held = self.admit(seat.clone())?;
        let (to_carrier, to_rx) = mpsc::unbounded_channel();
        let (from_tx, mut from_carrier) = mpsc::unbounded_channel::<SocketMessage>();
        let engine = self.clone();
        tokio::spawn(async move {
            let Some(start) = phone::await_start(&mut from_carrier, &engine.metrics).await else { return };
            let (stream, call) = (start.stream_sid.clone(), start.call_sid.clone());
            if let Some(room) = start.custom_parameters.get("room").cloned() {
                drop(held);
                match engine.phone_into_room(&room, start, from_carrier, to_carrier).await {
                    Ok(identity) => {
                        info!(room = %room, identity = %identity, stream = %stream, twilio_call = %call, "phone stream joined a room")
                    }
                    Err(e) => warn!(stream = %stream, room = %room, "phone stream refused: {e}"),
                }
                return;
            }
            let started = async {
                // Its place was held from the upgrade; it becomes the call's.
                let accepted = phone::accept(start, from_carrier, to_carrier)?;
                // No media socket of our own: the stream rides the HTTP connection.
                let addr = SocketAddr::from(([0, 0, 0, 0], 0));
                engine.launch(accepted.transport, accepted.config, accepted.dialect, SessionId::random(), addr, (seat, held)).await
            };
            match started.await {
                Ok(id) => info!(call = %id, stream = %stream, twilio_call = %call, "phone stream bridged"),
                // Dropping the channel closes the socket: Twilio ends the <Connect> and moves on.
                Err(e) => warn!(stream = %stream, "phone stream refused: {e}"),
            }
        });
        Ok(PhoneChannel { to_carrier: to_rx, from_carrier: from_tx })
    }

    /// A Realtime session over WebSocket (PROTOCOL.md §8): admitted now (the refusal is the
    /// upgrade's HTTP answer); the call starts at once, its events going to the socket.
    fn open_realtime_session(self: &Arc<Self>, req: WsSessionRequest) -> Result<RealtimeChannel, ApiError> {
        let seat = Seat::call(TransportKind::WebSocket, req.origin.ip, req.origin.secret.clone());
        let ticket = self.admit(seat.clone())?;
        let (to_client_tx, to_client) = mpsc::unbounded_channel();
        let (from_client, from_rx) = mpsc::channel(ws::INBOUND_QUEUE);
        let transport = ws::accept(&req.config, from_rx, to_client_tx.clone())?;
        let engine = self.clone();
        tokio::spawn(async move {
            let addr = SocketAddr::from(([0, 0, 0, 0], 0));
            if let Err(e) = engine.launch(transport, req.config, req.dialect, req.session_id, addr, (seat, ticket)).await {
                warn!("realtime socket refused: {e}");
                let event = voxrelay_signaling::events::ServerEvent::server_error(e.code, e.message);
                let _ = to_client_tx.send(event.to_json(req.dialect, &IdSource::random().event()));
            }
        });
        Ok(RealtimeChannel { to_client, from_client })
    }

    /// A phone stream whose `customParameters` name a `room` (and optionally `identity`, default
    /// `phone-` and the call's last digits of its sid): a room participant through a bridge
    /// session (mu-law decoded and encoded to Opus once; the room's top speaker mixed to 8 kHz).
    async fn phone_into_room(
        self: &Arc<Self>,
        room: &str,
        start: phone::twilio::Start,
        from_carrier: mpsc::UnboundedReceiver<SocketMessage>,
        to_carrier: mpsc::UnboundedSender<String>,
    ) -> Result<ParticipantId, ApiError> {
        let room = RoomName::parse(room)?;
        // A phone stream cannot be passed to another node: the room must live here.
        if let Some(node) = self.room_node(&room, true).await? {
            return Err(ApiError::conflict("room_on_another_node", format!("room {room:?} lives on {node}; send this call to that node")));
        }
        let fallback = format!("phone-{}", start.call_sid.chars().rev().take(6).collect::<String>().chars().rev().collect::<String>());
        let identity = ParticipantId::parse(start.custom_parameters.get("identity").unwrap_or(&fallback))?;
        let name = start.custom_parameters.get("name").cloned().unwrap_or_else(|| identity.to_string());
        let _ticket = self.admit(Seat::room_participant())?;
        let options = SessionOptions {
            codec: AudioCodec::Pcmu,
            vad: self.vad,
            echo_guard: EchoGuardConfig::OFF,
            room_bridge: true,
            ..SessionOptions::default()
        };
        let quiet = voxrelay_media::TurnDetectConfig { server_vad: false, ..Default::default() };
        let session = self.pool.add_session_with(quiet, options).map_err(|e| ApiError::overloaded(format!("audio workers: {e}")))?;
        let line = Arc::new(phone::PhoneLine::new(start.stream_sid, to_carrier));
        self.rooms.join_phone(&room, identity.clone(), name, session, line, from_carrier).await?;
        Ok(identity)
    }

    /// Several nodes: the base URL of the node `room` lives on when it is another one, `None`
    /// when it is this one. `claim`: the request may create the room, so this node takes it
    /// when nobody has it (a draining node takes no new rooms: the client's retry lands
    /// elsewhere).
    async fn room_node(&self, room: &RoomName, claim: bool) -> Result<Option<String>, ApiError> {
        let Some(cluster) = self.cluster.get() else { return Ok(None) };
        let here = self.rooms.exists(room);
        if claim && !here && self.admission.is_draining() {
            return Err(ApiError::overloaded("this node is draining and takes no new rooms"));
        }
        match cluster.room_home(room, here, claim).await? {
            crate::cluster::Home::Here => Ok(None),
            crate::cluster::Home::There(node) => Ok(Some(node)),
        }
    }

    /// What was said so far in the conversation the session continues (empty for a new one, or
    /// when the history cannot be read: the call starts fresh rather than not at all).
    async fn prior_dialogue(&self, config: &SessionConfig) -> Dialogue {
        let mut prior = Dialogue::default();
        let Some(conversation) = &config.conversation else { return prior };
        match self.store.dialogue(conversation, HISTORY_BUDGET_CHARS).await {
            Ok(turns) => {
                for (role, text) in turns {
                    prior.push(if role == TranscriptRole::Assistant { "assistant" } else { "user" }, &text);
                }
            }
            Err(e) => warn!(conversation = %conversation, "the conversation's history could not be read; the call starts without it: {e}"),
        }
        prior
    }

    /// Starts the worker session, the agent and the call task for a ready transport; the call
    /// takes the admitted place (`seat`, held by its ticket until now).
    async fn launch(
        self: &Arc<Self>,
        t: Transport,
        config: SessionConfig,
        dialect: Dialect,
        session_id: SessionId,
        addr: SocketAddr,
        (seat, ticket): (Seat, Ticket),
    ) -> Result<CallId, ApiError> {
        let echo_guard = match t.kind {
            TransportKind::Twilio => self.phone_echo_guard,
            _ => EchoGuardConfig::OFF,
        };
        let options = SessionOptions { vad: self.vad, codec: t.codec, echo_guard, ..SessionOptions::default() };
        let media = match self.pool.add_session_with(turn_config(&config), options) {
            Ok(m) => m,
            Err(e) => return Err(refuse(t, ApiError::overloaded(format!("audio workers: {e}"))).await),
        };
        let prior = self.prior_dialogue(&config).await;
        let agent = match agent::new_agent(&self.providers, &config, prior) {
            Ok(a) => a,
            Err(e) => return Err(refuse(t, e).await),
        };
        let SessionHandle { ingress, control, agent_out, egress, uplink, stats, worker, .. } = media;
        let kind = t.kind;
        let call_id = CallId::random_on(kind.id_prefix(), self.cluster.get().map(|c| c.tag()));
        let tasks = (t.start_reader)(&call_id, ingress, self.metrics.clone());
        let stop = Arc::new(Notify::new());
        let (done_tx, done_rx) = watch::channel(false);
        let connected = Arc::new(AtomicBool::new(false));
        self.calls().insert(
            call_id.clone(),
            CallEntry {
                seat,
                connected: connected.clone(),
                session_id: session_id.clone(),
                stop: stop.clone(),
                done: done_rx,
                inject: t.inject,
                kind,
                stats: stats.clone(),
                ice: t.ice,
            },
        );
        drop(ticket);
        self.metrics.calls_started.fetch_add(1, Ordering::Relaxed);
        info!(call = %call_id, session = %session_id, agent = %config.agent, transport = kind.label(), %addr, "call started");
        let record = RecordId::from(&call_id);
        self.store.record(StoreEvent::Opened(Opened {
            id: record.clone(),
            transport: kind.label(),
            agent: Some(config.agent.clone()),
            room: None,
            identity: None,
            conversation: config.conversation.as_ref().map(ToString::to_string),
            at: UnixMs::now(),
        }));
        let mut conversation = Conversation::new(dialect, session_id, config, agent, IdSource::random());
        if let Some(heard) = t.heard {
            conversation = conversation.with_heard(heard);
        }
        if kind == TransportKind::WebSocket {
            conversation = conversation.with_dialect_from_updates();
        }
        let person = Person::new(t.sink, t.closer, tasks, Link::opened(std::time::Instant::now()));
        let setup = CallSetup {
            call_id: call_id.clone(),
            person,
            events: t.events,
            conversation,
            rings: SessionRings { control, agent_out, egress, uplink },
            ticks: self.bells.subscribe(worker, stats.clone()),
            stop,
            metrics: self.metrics.clone(),
            connected,
            limits: self.call_limits,
            history: Recorder::new(self.store.clone(), record.clone()),
        };
        let history = Recorder::new(self.store.clone(), record);
        let engine = Arc::clone(self);
        let id = call_id.clone();
        tokio::spawn(async move {
            let reason = run_call(setup).await;
            engine.metrics.call_ended(reason);
            engine.calls().remove(&id);
            let media = stats.snapshot();
            engine.ended_media.lock().unwrap_or_else(|p| p.into_inner()).add(&media);
            // Before `done`: a DELETE answered, the record already says how the call ended.
            history.closed(reason.label(), Some(crate::store::counters_json(&media)));
            let _ = done_tx.send(true);
        });
        Ok(call_id)
    }
}

/// Closes a transport whose call could not start, and passes the error on.
async fn refuse(t: Transport, err: ApiError) -> ApiError {
    t.closer.close(None, false).await;
    err
}

fn rtp_disabled() -> ApiError {
    ApiError::not_found("rtp_ingest_disabled", "plain RTP ingest is off on this server (start it with --rtp-ingest)")
}
