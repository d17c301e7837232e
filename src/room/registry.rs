//! The rooms of this server: finding or making a room (and starting its task, `task.rs`),
//! and everything the API asks of one. Joining answers the offer (or opens the phone bridge, or
//! builds the agent) here, then hands the participant to the room's task as a command.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::info;
use voxrelay_signaling::room_wire::{LeaveReason, RoomInfo};
use voxrelay_signaling::rooms::JoinRequest;
use voxrelay_signaling::{ApiError, ParticipantId, RoomName};

use super::agent::AgentParts;
use super::phone::{PhoneRings, run_phone};
use super::slot::TrackKey;
use super::state::{Member, Room};
use super::task::{close_member, pump_events, run_room};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::transport::phone::{PhoneLine, read_stream};
use crate::transport::webrtc::{IceControl, PortAllocator, RtcLoops, answer_room};
use crate::transport::{Inbound, RtpPacketIn, TransportEvent};
use voxrelay_media::SessionHandle;
use voxrelay_signaling::SocketMessage;

/// Packets from all of a room's publishers waiting for the room task: ≈ 0.4 s of 50 publishers.
const PACKET_QUEUE: usize = 1024;

/// Server-wide room settings.
#[derive(Clone, Copy, Debug)]
pub struct RoomSettings {
    /// What a room created by a join gets.
    pub limits: RoomLimits,
    /// A join may create the room it names.
    pub auto_create: bool,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings { limits: RoomLimits::default(), auto_create: true }
    }
}

/// One room's limits (PROTOCOL.md §4 defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomLimits {
    pub max_participants: usize,
    /// An empty room closes after this long.
    pub empty_timeout: Duration,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits { max_participants: 50, empty_timeout: Duration::from_secs(300) }
    }
}

/// The most participants a room may be created for (each costs a port and a writer task).
pub const MAX_PARTICIPANTS_LIMIT: usize = 1000;
/// The longest an empty room may be kept.
pub const MAX_EMPTY_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

pub(super) enum Command {
    Join {
        member: Box<Member>,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    Leave {
        identity: ParticipantId,
        reason: LeaveReason,
        reply: oneshot::Sender<bool>,
    },
    Transport {
        key: TrackKey,
        event: TransportEvent,
    },
    Info {
        reply: oneshot::Sender<RoomInfo>,
    },
    Mute {
        identity: ParticipantId,
        muted: bool,
        reply: oneshot::Sender<bool>,
    },
    /// A handle on a participant's ICE (WHIP/WHEP `PATCH`).
    Ice {
        identity: ParticipantId,
        reply: oneshot::Sender<Option<IceControl>>,
    },
    /// An AI participant joins (its conversation and voice session are built).
    AttachAgent {
        member: Box<Member>,
        parts: Box<AgentParts>,
        packets: mpsc::Sender<(TrackKey, RtpPacketIn)>,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// The AI participant leaves; `reply` once it has (false: the room has none).
    DetachAgent {
        reply: oneshot::Sender<bool>,
    },
    /// Everyone leaves with `reason`; the room closes.
    Close {
        reason: LeaveReason,
        reply: oneshot::Sender<()>,
    },
}

#[derive(Clone)]
pub(super) struct RoomHandle {
    pub(super) commands: mpsc::UnboundedSender<Command>,
    pub(super) packets: mpsc::Sender<(TrackKey, RtpPacketIn)>,
}

/// One participant's place, counted from the start of its join until its `Member` is dropped
/// (whatever ends it), so admission sees joins in flight too.
pub struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Rooms {
    rooms: Mutex<HashMap<RoomName, RoomHandle>>,
    /// Participants in rooms and joins under way (see [`Seat`]).
    seated: Arc<AtomicUsize>,
    settings: RoomSettings,
    next_key: AtomicU32,
    pub(super) metrics: Arc<Metrics>,
    /// Where participants' records go (the call history).
    pub(super) store: Arc<Store>,
}

impl Rooms {
    pub fn new(settings: RoomSettings, metrics: Arc<Metrics>, store: Arc<Store>) -> Arc<Self> {
        Arc::new(Rooms {
            store,
            rooms: Mutex::new(HashMap::new()),
            seated: Arc::new(AtomicUsize::new(0)),
            settings,
            next_key: AtomicU32::new(1),
            metrics,
        })
    }

    pub(super) fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, RoomHandle>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn count(&self) -> usize {
        self.rooms().len()
    }

    /// The rooms on this node.
    pub fn names(&self) -> Vec<RoomName> {
        self.rooms().keys().cloned().collect()
    }

    pub fn exists(&self, name: &RoomName) -> bool {
        self.rooms().get(name).is_some_and(|h| !h.commands.is_closed())
    }

    /// Participants in rooms, joins under way included (what admission counts).
    pub fn seated(&self) -> usize {
        self.seated.load(Ordering::Relaxed)
    }

    /// The room's handle, creating the room (and its task) with `create`'s limits when given.
    fn handle(self: &Arc<Self>, name: &RoomName, create: Option<RoomLimits>) -> Result<RoomHandle, ApiError> {
        let mut rooms = self.rooms();
        if let Some(h) = rooms.get(name).filter(|h| !h.commands.is_closed()) {
            return Ok(h.clone());
        }
        let Some(limits) = create else {
            return Err(ApiError::not_found("room_not_found", format!("no room {:?}", name.as_str())));
        };
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (packets, packet_rx) = mpsc::channel(PACKET_QUEUE);
        let handle = RoomHandle { commands, packets };
        rooms.insert(name.clone(), handle.clone());
        let room = Room::new(name.clone(), limits, Instant::now()).with_history(self.store.clone());
        tokio::spawn(run_room(self.clone(), room, command_rx, packet_rx, handle.commands.downgrade()));
        info!(room = %name, max_participants = limits.max_participants, "room created");
        Ok(handle)
    }

    /// `POST /v1/rooms`: 409 when the room exists.
    pub async fn create(self: &Arc<Self>, name: &RoomName, limits: RoomLimits) -> Result<RoomInfo, ApiError> {
        if !(1..=MAX_PARTICIPANTS_LIMIT).contains(&limits.max_participants) {
            return Err(ApiError::bad_request("invalid_max_participants", format!("max_participants is 1 to {MAX_PARTICIPANTS_LIMIT}")));
        }
        if limits.empty_timeout > MAX_EMPTY_TIMEOUT {
            return Err(ApiError::bad_request(
                "invalid_empty_timeout",
                format!("empty_timeout_seconds is at most {}", MAX_EMPTY_TIMEOUT.as_secs()),
            ));
        }
        if self.handle(name, None).is_ok() {
            return Err(ApiError::conflict("room_exists", format!("room {:?} exists", name.as_str())));
        }
        self.handle(name, Some(limits))?;
        self.info(name).await
    }

    pub async fn list(self: &Arc<Self>) -> Vec<RoomInfo> {
        let names: Vec<RoomName> = self.rooms().keys().cloned().collect();
        let mut out = Vec::new();
        for name in names {
            if let Ok(info) = self.info(&name).await {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// `DELETE /v1/rooms/<room>`: everyone leaves (`room_deleted`), the room closes.
    pub async fn delete(self: &Arc<Self>, name: &RoomName) -> Result<(), ApiError> {
        let room = self.handle(name, None)?;
        let (reply, done) = oneshot::channel();
        if room.commands.send(Command::Close { reason: LeaveReason::RoomDeleted, reply }).is_ok() {
            let _ = done.await;
        }
        Ok(())
    }

    /// Server-side mute: the participant's packets stop being forwarded from the next one.
    pub async fn mute(self: &Arc<Self>, name: &RoomName, identity: &ParticipantId, muted: bool) -> Result<(), ApiError> {
        let not_found =
            || ApiError::not_found("participant_not_found", format!("no participant {:?} in room {:?}", identity.as_str(), name.as_str()));
        let room = self.handle(name, None).map_err(|_| not_found())?;
        let (reply, done) = oneshot::channel();
        room.commands.send(Command::Mute { identity: identity.clone(), muted, reply }).map_err(|_| not_found())?;
        match done.await {
            Ok(true) => Ok(()),
            _ => Err(not_found()),
        }
    }

    /// Closes every room (server shutdown).
    pub async fn close_all(self: &Arc<Self>) {
        let handles: Vec<RoomHandle> = self.rooms().values().cloned().collect();
        for h in handles {
            let (reply, done) = oneshot::channel();
            if h.commands.send(Command::Close { reason: LeaveReason::ServerShutdown, reply }).is_ok() {
                let _ = done.await;
            }
        }
    }

    /// Answers the participant's offer (on a shared loop, when the server runs them; else on a
    /// driver of its own, with a port from `ports`) and hands it to its room.
    pub async fn join(self: &Arc<Self>, ports: &PortAllocator, loops: Option<&RtcLoops>, req: JoinRequest) -> Result<String, ApiError> {
        self.seated.fetch_add(1, Ordering::Relaxed);
        let seat = Seat(self.seated.clone());
        let room = self.handle(&req.room, self.settings.auto_create.then_some(self.settings.limits))?;
        let inbound = Inbound { payload_type: req.summary.payload_type, audio_level_ext: req.summary.audio_level_ext };
        let lines = &req.summary.audio_lines;
        let (mut peer, answer) = match loops {
            Some(loops) => loops.answer_room(req.offer, lines, inbound, self.metrics.clone())?,
            None => {
                let sockets = ports.allocate().ok_or_else(|| ApiError::overloaded("no free media port in the configured range"))?;
                answer_room(sockets, req.offer, lines, inbound, self.metrics.clone()).await?
            }
        };
        // A silent publisher then sends almost nothing: nothing to decrypt, rank or forward, and
        // the agent's listen session neither decodes nor analyses the pause (slot.rs passes its
        // timestamp jump through to subscribers).
        let answer = voxrelay_signaling::sdp_dtx::prefer_dtx(&answer);
        let key = TrackKey(self.next_key.fetch_add(1, Ordering::Relaxed));
        let packets = room.packets.clone();
        let metrics = self.metrics.clone();
        let mut tasks = peer.start(Box::new(move |p| {
            if packets.try_send((key, p)).is_err() {
                metrics.rooms.dropped_room_queue.fetch_add(1, Ordering::Relaxed);
            }
        }));
        tasks.push(tokio::spawn(pump_events(key, std::mem::replace(&mut peer.events, mpsc::unbounded_channel().1), room.commands.clone())));
        let claims = req.claims;
        let mut member = Member::new(key, claims.sub, claims.name, claims.room, peer, Instant::now());
        member.tasks = tasks;
        member.seat = Some(seat);
        let (reply, done) = oneshot::channel();
        let refused = |member: Box<Member>| async move {
            close_member(*member, false).await;
        };
        if let Err(mpsc::error::SendError(Command::Join { member, .. })) =
            room.commands.send(Command::Join { member: Box::new(member), reply })
        {
            refused(member).await;
            return Err(ApiError::overloaded("the room closed while joining; try again"));
        }
        match done.await {
            Ok(Ok(())) => Ok(answer),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ApiError::overloaded("the room closed while joining; try again")),
        }
    }

    pub async fn leave(self: &Arc<Self>, name: &RoomName, identity: &ParticipantId, removed: bool) -> Result<(), ApiError> {
        let not_found =
            || ApiError::not_found("participant_not_found", format!("no participant {:?} in room {:?}", identity.as_str(), name.as_str()));
        let room = self.handle(name, None).map_err(|_| not_found())?;
        let (reply, done) = oneshot::channel();
        let reason = if removed { LeaveReason::Removed } else { LeaveReason::Left };
        room.commands.send(Command::Leave { identity: identity.clone(), reason, reply }).map_err(|_| not_found())?;
        match done.await {
            Ok(true) => Ok(()),
            _ => Err(not_found()),
        }
    }

    /// A phone stream joins a room: its bridge session (`session`, built with `room_bridge`)
    /// carries the audio both ways; the stream's end is the participant's leave.
    pub async fn join_phone(
        self: &Arc<Self>,
        name: &RoomName,
        identity: ParticipantId,
        display: String,
        mut session: SessionHandle,
        line: Arc<PhoneLine>,
        from_carrier: mpsc::UnboundedReceiver<SocketMessage>,
    ) -> Result<(), ApiError> {
        self.seated.fetch_add(1, Ordering::Relaxed);
        let seat = Seat(self.seated.clone());
        let room = self.handle(name, self.settings.auto_create.then_some(self.settings.limits))?;
        let bridge = session.bridge.take().ok_or_else(|| ApiError::internal("a phone participant needs a room bridge session"))?;
        let key = TrackKey(self.next_key.fetch_add(1, Ordering::Relaxed));
        let SessionHandle { ingress, control, agent_out, egress, uplink, .. } = session;
        let (events_tx, events) = mpsc::unbounded_channel();
        let call_id = voxrelay_signaling::CallId::random("tel_");
        let rings = PhoneRings { forward: bridge.forward, egress, uplink, _keep: vec![Box::new(control), Box::new(agent_out)] };
        let tasks = vec![
            tokio::spawn(read_stream(call_id, from_carrier, ingress, line.clone(), events_tx, self.metrics.clone())),
            tokio::spawn(run_phone(key, rings, line, room.packets.clone(), self.metrics.clone())),
            tokio::spawn(pump_events(key, events, room.commands.clone())),
        ];
        let mut member = Member::phone(key, identity, display, name.clone(), bridge.room_in, Instant::now());
        member.tasks = tasks;
        member.seat = Some(seat);
        let (reply, done) = oneshot::channel();
        let closed = || ApiError::overloaded("the room closed while joining; try again");
        if let Err(mpsc::error::SendError(Command::Join { member, .. })) =
            room.commands.send(Command::Join { member: Box::new(member), reply })
        {
            close_member(*member, false).await;
            return Err(closed());
        }
        done.await.map_err(|_| closed())?
    }

    /// Attaches an AI participant; the room is made under the auto-create rule of a join.
    pub async fn attach_agent(
        self: &Arc<Self>,
        name: &RoomName,
        identity: ParticipantId,
        display: String,
        parts: AgentParts,
    ) -> Result<(), ApiError> {
        self.seated.fetch_add(1, Ordering::Relaxed);
        let seat = Seat(self.seated.clone());
        let room = self.handle(name, self.settings.auto_create.then_some(self.settings.limits))?;
        let key = TrackKey(self.next_key.fetch_add(1, Ordering::Relaxed));
        let mut member = Member::agent(key, identity, display, name.clone(), Instant::now());
        member.agent = Some(parts.conversation.config().agent.clone());
        member.conversation = parts.conversation.config().conversation.as_ref().map(ToString::to_string);
        member.seat = Some(seat);
        let (reply, done) = oneshot::channel();
        let command = Command::AttachAgent { member: Box::new(member), parts: Box::new(parts), packets: room.packets.clone(), reply };
        let closed = || ApiError::overloaded("the room closed while the agent joined; try again");
        room.commands.send(command).map_err(|_| closed())?;
        done.await.map_err(|_| closed())?
    }

    /// A participant's ICE handle (404 for an unknown one, or the agent, which has no connection).
    pub async fn ice(self: &Arc<Self>, name: &RoomName, identity: &ParticipantId) -> Result<IceControl, ApiError> {
        let not_found =
            || ApiError::not_found("participant_not_found", format!("no participant {:?} in room {:?}", identity.as_str(), name.as_str()));
        let room = self.handle(name, None).map_err(|_| not_found())?;
        let (reply, done) = oneshot::channel();
        room.commands.send(Command::Ice { identity: identity.clone(), reply }).map_err(|_| not_found())?;
        done.await.ok().flatten().ok_or_else(not_found)
    }

    /// Takes the room's AI participant out (its response in progress is cancelled first).
    pub async fn detach_agent(self: &Arc<Self>, name: &RoomName) -> Result<(), ApiError> {
        let not_found = || ApiError::not_found("agent_not_found", format!("room {:?} has no agent", name.as_str()));
        let room = self.handle(name, None).map_err(|_| not_found())?;
        let (reply, done) = oneshot::channel();
        room.commands.send(Command::DetachAgent { reply }).map_err(|_| not_found())?;
        match done.await {
            Ok(true) => Ok(()),
            _ => Err(not_found()),
        }
    }

    pub async fn info(self: &Arc<Self>, name: &RoomName) -> Result<RoomInfo, ApiError> {
        let room = self.handle(name, None)?;
        let (reply, done) = oneshot::channel();
        let gone = || ApiError::not_found("room_not_found", format!("no room {:?}", name.as_str()));
        room.commands.send(Command::Info { reply }).map_err(|_| gone())?;
        done.await.map_err(|_| gone())
    }
}
