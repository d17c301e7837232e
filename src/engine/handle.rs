//! The engine as the signaling crate sees it: [`Engine`]'s methods, each passing an API request
//! to the engine, the rooms, the store or the cluster.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};
use voxrelay_media::{OutboundFec, ROOM_EXPECTED_LOSS_PERCENT, SessionOptions};
use voxrelay_signaling::call_history::{CallDetail, CallList, CallQuery};
use voxrelay_signaling::events::IdSource;
use voxrelay_signaling::forwarding::calls::CallTarget;
use voxrelay_signaling::room_wire::{AgentAttached, RoomInfo};
use voxrelay_signaling::rooms::{AgentSpec, JoinRequest};
use voxrelay_signaling::sdpfrag::IceFragment;
use voxrelay_signaling::whip::IcePatched;
use voxrelay_signaling::{
    ApiError, CallCreated, CallId, CallRequest, Engine, EventChannel, Origin, ParticipantId, PhoneChannel, RealtimeChannel, RoomName,
    RtpCreated, SessionConfig, SessionId, WsSessionRequest,
};

use super::{END_WAIT, VoxEngine};
use crate::admission::Seat;
use crate::agent;
use crate::call::{Conversation, EventBells, turn_config};
use crate::transport::{TransportEvent, TransportKind};

/// The signaling crate holds the engine as `Arc<dyn Engine>`; this wrapper gives the trait
/// methods access to the `Arc` they need to spawn call tasks.
pub struct EngineHandle(pub Arc<VoxEngine>);

#[async_trait::async_trait]
impl Engine for EngineHandle {
    fn check_agent(&self, name: &str) -> Result<(), ApiError> {
        agent::check_agent(&self.0.providers, name)
    }

    fn check_session(&self, config: &SessionConfig) -> Result<(), ApiError> {
        agent::check_agent(&self.0.providers, &config.agent)?;
        agent::check_voice(config)
    }

    async fn create_call(&self, req: CallRequest) -> Result<CallCreated, ApiError> {
        let ticket = self.0.admit(Seat::call(TransportKind::WebRtc, req.origin.ip, req.origin.secret.clone()))?;
        self.0.start_webrtc_call(req, ticket).await
    }

    async fn create_rtp_session(&self, config: SessionConfig, session_id: SessionId, origin: Origin) -> Result<RtpCreated, ApiError> {
        self.0.start_rtp_session(config, session_id, origin).await
    }

    fn attach_events(&self, call_id: &CallId, plain_rtp: bool) -> Result<EventChannel, ApiError> {
        let calls = self.0.calls();
        let entry = calls
            .get(call_id)
            // `/v1/rtp/<id>/events` attaches plain-RTP sessions only; `/v1/calls/<id>/events`
            // any other call (WebRTC, phone).
            .filter(|c| (c.kind == TransportKind::PlainRtp) == plain_rtp)
            .ok_or_else(|| ApiError::not_found("call_not_found", format!("no live call {:?}", call_id.as_str())))?;
        let (to_client_tx, to_client) = mpsc::unbounded_channel();
        let (from_client, mut from_client_rx) = mpsc::unbounded_channel::<String>();
        entry
            .inject
            .send(TransportEvent::EventsOpened(to_client_tx))
            .map_err(|_| ApiError::not_found("call_not_found", "the call has ended"))?;
        let inject = entry.inject.clone();
        tokio::spawn(async move {
            while let Some(text) = from_client_rx.recv().await {
                if inject.send(TransportEvent::ClientText(text)).is_err() {
                    break;
                }
            }
        });
        Ok(EventChannel { to_client, from_client })
    }

    async fn end_call(&self, call_id: &CallId, owner: Option<&SessionId>) -> Result<(), ApiError> {
        let done = {
            let calls = self.0.calls();
            let entry = calls
                .get(call_id)
                .filter(|c| owner.is_none_or(|o| *o == c.session_id))
                .ok_or_else(|| ApiError::not_found("call_not_found", format!("no live call {:?}", call_id.as_str())))?;
            entry.stop.notify_one();
            entry.done.clone()
        };
        let mut done = done;
        let _ = tokio::time::timeout(END_WAIT, done.wait_for(|d| *d)).await;
        Ok(())
    }

    fn open_phone_stream(&self, origin: Origin) -> Result<PhoneChannel, ApiError> {
        self.0.open_phone_stream(origin)
    }

    fn open_realtime_session(&self, req: WsSessionRequest) -> Result<RealtimeChannel, ApiError> {
        self.0.open_realtime_session(req)
    }

    async fn join_room(&self, req: JoinRequest) -> Result<String, ApiError> {
        let e = &self.0;
        let _ticket = e.admit(Seat::room_participant())?;
        e.rooms.join(&e.ports, e.rtc_loops.as_ref(), req).await
    }

    async fn leave_room(&self, room: &RoomName, identity: &ParticipantId, removed: bool) -> Result<(), ApiError> {
        self.0.rooms.leave(room, identity, removed).await
    }

    async fn room_info(&self, room: &RoomName) -> Result<RoomInfo, ApiError> {
        self.0.rooms.info(room).await
    }

    async fn create_room(
        &self,
        room: &RoomName,
        max_participants: Option<usize>,
        empty_timeout_s: Option<u64>,
    ) -> Result<RoomInfo, ApiError> {
        let defaults = crate::room::RoomLimits::default();
        let limits = crate::room::RoomLimits {
            max_participants: max_participants.unwrap_or(defaults.max_participants),
            empty_timeout: empty_timeout_s.map_or(defaults.empty_timeout, Duration::from_secs),
        };
        // Several nodes: a room is made where it is claimed, once.
        if let Some(node) = self.0.room_node(room, true).await? {
            return Err(ApiError::conflict("room_exists", format!("room {:?} exists (on {node})", room.as_str())));
        }
        self.0.rooms.create(room, limits).await
    }

    async fn list_rooms(&self) -> Vec<RoomInfo> {
        self.0.rooms.list().await
    }

    async fn delete_room(&self, room: &RoomName) -> Result<(), ApiError> {
        self.0.rooms.delete(room).await
    }

    async fn mute_participant(&self, room: &RoomName, identity: &ParticipantId, muted: bool) -> Result<(), ApiError> {
        self.0.rooms.mute(room, identity, muted).await
    }

    async fn attach_agent(&self, spec: AgentSpec) -> Result<AgentAttached, ApiError> {
        let e = &self.0;
        let _ticket = e.admit(Seat::room_participant())?;
        let AgentSpec { room, identity, name, dialect, config } = spec;
        // The voice session only speaks: no turn detection runs on it.
        let quiet = voxrelay_media::TurnDetectConfig { server_vad: false, ..turn_config(&config) };
        // The agent's voice is forwarded to every subscriber: no one peer's reports to follow.
        let fixed_fec = OutboundFec::Fixed(ROOM_EXPECTED_LOSS_PERCENT);
        let voice = e.pool.add_session_with(quiet, SessionOptions { vad: e.vad, outbound_fec: fixed_fec, ..SessionOptions::default() });
        let voice = voice.map_err(|err| ApiError::overloaded(format!("audio workers: {err}")))?;
        let agent_name = config.agent.clone();
        let listen_turn = turn_config(&config);
        let agent = agent::new_agent(&e.providers, &config, e.prior_dialogue(&config).await)?;
        let conversation = Conversation::new(dialect, SessionId::random(), config, agent, IdSource::random());
        let bells = e.bells.subscribe(voice.worker, voice.stats.clone()).map(|ticks| {
            let all = e.bells.clone();
            let hear: EventBells = Arc::new(move |worker, ticks, stats| all.subscribe_events(worker, ticks, stats));
            crate::room::AgentBells { voice: ticks, hear }
        });
        let parts = crate::room::AgentParts {
            conversation,
            voice,
            listen_turn,
            listen_options: SessionOptions { vad: e.vad, ..SessionOptions::default() },
            pool: e.pool.clone(),
            bells,
        };
        e.rooms.attach_agent(&room, identity.clone(), name, parts).await?;
        Ok(AgentAttached { room, identity, agent: agent_name })
    }

    async fn detach_agent(&self, room: &RoomName) -> Result<(), ApiError> {
        self.0.rooms.detach_agent(room).await
    }

    async fn patch_ice(
        &self,
        room: &RoomName,
        identity: &ParticipantId,
        fragment: IceFragment,
        if_match: Option<String>,
    ) -> Result<IcePatched, ApiError> {
        let ice = self.0.rooms.ice(room, identity).await?;
        let patched = ice.patch(&fragment, if_match.as_deref()).await?;
        if matches!(patched, IcePatched::Restarted { .. }) {
            info!(room = %room, identity = %identity, "ICE restarted");
        }
        Ok(patched)
    }

    async fn patch_call_ice(
        &self,
        call_id: &CallId,
        owner: Option<&SessionId>,
        fragment: IceFragment,
        if_match: Option<String>,
    ) -> Result<IcePatched, ApiError> {
        let not_found = || ApiError::not_found("call_not_found", format!("no live call {:?}", call_id.as_str()));
        let ice = {
            let calls = self.0.calls();
            let entry = calls.get(call_id).filter(|c| owner.is_none_or(|o| *o == c.session_id)).ok_or_else(not_found)?;
            entry.ice.clone().ok_or_else(|| ApiError::unprocessable("not_webrtc", "only WebRTC calls have ICE to patch"))?
        };
        let patched = ice.patch(&fragment, if_match.as_deref()).await?;
        if matches!(patched, IcePatched::Restarted { .. }) {
            info!(call = %call_id, "ICE restarted");
        }
        Ok(patched)
    }

    fn is_ready(&self) -> bool {
        !self.0.admission.is_draining()
    }

    fn ice_servers(&self, session_id: &SessionId) -> Vec<serde_json::Value> {
        match self.0.relay.get() {
            Some(advert) => advert.ice_servers(session_id.as_str(), crate::relay::core::Now::system().unix),
            None => Vec::new(),
        }
    }

    fn metrics_text(&self) -> String {
        let e = &self.0;
        let mut text = e.metrics.render(&[
            ("voxrelay_active_calls", "Live calls.", e.live_calls() as u64),
            ("voxrelay_media_sessions", "Sessions held by the audio workers.", e.media_sessions() as u64),
            ("voxrelay_webrtc_loop_connections", "Peer connections held by the WebRTC loops.", e.loop_connections() as u64),
        ]);
        text.push_str(&e.render_by_transport());
        text.push_str(&e.metrics.rooms.render(e.rooms.count()));
        text.push_str(&crate::metrics::render_media(&e.media_totals(), &e.pool.worker_stats()));
        text.push_str(&crate::metrics::render_process());
        if let Some(relay) = e.relay.get() {
            text.push_str(&relay.stats.prometheus());
        }
        text.push_str(&e.store.render_metrics());
        if let Some(cluster) = e.cluster.get() {
            text.push_str(&cluster.render_metrics());
        }
        text
    }

    async fn list_cluster_rooms(&self, headers: &axum::http::HeaderMap) -> Result<Vec<RoomInfo>, ApiError> {
        let mut rooms = self.0.rooms.list().await;
        let Some(cluster) = self.0.cluster.get() else { return Ok(rooms) };
        for r in &mut rooms {
            r.node = Some(cluster.url().to_string());
        }
        let nodes = cluster.nodes().await.map_err(|e| {
            warn!("cluster: Redis unreachable for the room list: {e}");
            ApiError::cluster_unavailable("every node's rooms cannot be listed")
        })?;
        for node in nodes.into_iter().filter(|n| n.id != cluster.node_id()) {
            match crate::cluster::rooms_of(&self.0.http, &node.url, headers, cluster.node_id()).await {
                Ok(theirs) => rooms.extend(theirs.into_iter().map(|r| RoomInfo { node: Some(node.url.clone()), ..r })),
                // A node that does not answer is left out of the list, not the cause of a failure.
                Err(e) => warn!(node = %node.url, "cluster: a node did not list its rooms: {e}"),
            }
        }
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rooms)
    }

    async fn room_home(&self, room: &RoomName, claim: bool) -> Result<Option<String>, ApiError> {
        self.0.room_node(room, claim).await
    }

    async fn call_home(&self, target: CallTarget<'_>) -> Result<Option<String>, ApiError> {
        let Some(cluster) = self.0.cluster.get() else { return Ok(None) };
        match target {
            CallTarget::New => Ok(cluster.place(self.0.node_load()).map(|n| n.url)),
            CallTarget::Pinned(node) => Ok(cluster.pinned_home(node, self.0.node_load()).await),
            CallTarget::Live(id) => cluster.call_home(id).await,
        }
    }

    fn place_secret(&self) -> Option<String> {
        self.0.cluster.get().map(|c| c.place_secret(self.0.node_load()))
    }

    async fn forward_socket(
        &self,
        base: &str,
        path_and_query: &str,
        headers: &axum::http::HeaderMap,
        ws: axum::extract::ws::WebSocketUpgrade,
    ) -> axum::response::Response {
        let from = self.0.cluster.get().map_or("", |c| c.node_id());
        crate::cluster::forward_socket(base, path_and_query, headers, ws, from).await
    }

    async fn forward(
        &self,
        base: &str,
        method: axum::http::Method,
        path_and_query: &str,
        headers: &axum::http::HeaderMap,
        body: bytes::Bytes,
    ) -> Result<axum::response::Response, ApiError> {
        let from = self.0.cluster.get().map_or("", |c| c.node_id());
        crate::cluster::forward(&self.0.http, base, method, path_and_query, headers, body, from).await
    }

    async fn list_calls(&self, query: CallQuery) -> Result<CallList, ApiError> {
        self.0.store.list(query).await
    }

    async fn call_record(&self, id: &str) -> Result<CallDetail, ApiError> {
        self.0.store.get(id).await
    }
}
