//! The room task: one tokio task per room owns its [`Room`] and does its I/O. Publishers'
//! packets come from one bounded queue (never decoded here; a full queue drops and counts),
//! joins, leaves, transport events and the API's commands from another, the room's agent from a
//! third; a 20 ms tick drives the speaker windows, the timeouts and the empty-room timeout.
//! Every decision is a method of `Room`; this file is only the loop and the teardown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};
use voxrelay_signaling::ApiError;
use voxrelay_signaling::room_wire::LeaveReason;

use super::agent::{AgentInput, AgentSetup, ToRoom, run_agent};
use super::registry::{Command, Rooms};
use super::slot::TrackKey;
use super::state::{Handled, Member, Room};
use crate::store::Recorder;
use crate::transport::webrtc::RoomPeer;
use crate::transport::{Departure, RtpPacketIn, TransportEvent};

const TICK: Duration = Duration::from_millis(20);

/// Passes a participant's transport events to its room.
pub(super) async fn pump_events(key: TrackKey, mut events: mpsc::UnboundedReceiver<TransportEvent>, room: mpsc::UnboundedSender<Command>) {
    while let Some(event) = events.recv().await {
        if room.send(Command::Transport { key, event }).is_err() {
            return;
        }
    }
}

/// Closes a participant's connection and ends its tasks.
pub(super) async fn close_member(member: Member, flush_events: bool) {
    let Member { peer, tasks, .. } = member;
    if let Some(RoomPeer { closer, .. }) = peer {
        closer.close(None, flush_events).await;
    }
    for t in tasks {
        t.abort();
    }
}

/// The room's AI participant, as the room task holds it.
struct AgentLink {
    key: TrackKey,
    inbox: mpsc::UnboundedSender<AgentInput>,
    from_agent: mpsc::UnboundedReceiver<ToRoom>,
}

/// The next request of the room's agent (never, without one); `None`: its task ended.
async fn from_agent(agent: &mut Option<AgentLink>) -> Option<ToRoom> {
    match agent {
        Some(a) => a.from_agent.recv().await,
        None => std::future::pending().await,
    }
}

/// The room task: until nobody but an agent has been in the room for `empty_timeout`.
pub(super) async fn run_room(
    rooms: Arc<Rooms>,
    mut room: Room,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut packets: mpsc::Receiver<(TrackKey, RtpPacketIn)>,
    me: mpsc::WeakUnboundedSender<Command>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut empty_since = Some(Instant::now());
    let mut closing = None;
    let mut agent: Option<AgentLink> = None;
    loop {
        tokio::select! {
            Some((key, p)) = packets.recv() => room.on_packet(key, p),
            request = from_agent(&mut agent) => match request {
                Some(ToRoom::Tap { key, ingress }) => room.set_tap(key, Some(ingress)),
                Some(ToRoom::Events(events)) => {
                    for text in &events {
                        room.broadcast_text(text);
                    }
                }
                Some(ToRoom::Left { reply }) => {
                    remove_agent(&mut room, &mut agent);
                    if let Some(reply) = reply {
                        let _ = reply.send(true);
                    }
                }
                None => {
                    warn!(room = %room.name, "the agent's task ended unexpectedly");
                    remove_agent(&mut room, &mut agent);
                }
            },
            Some(cmd) = commands.recv() => match cmd {
                Command::Join { member, reply } => {
                    if let Some(old) = room.key_of(&member.identity) {
                        if let Some(old) = room.leave(old, LeaveReason::Replaced) {
                            tokio::spawn(close_member(old, false));
                        }
                    } else if room.len() >= room.limits.max_participants {
                        let _ = reply.send(Err(ApiError::room_full(format!("room {:?} is full ({} participants)", room.name.as_str(), room.limits.max_participants))));
                        tokio::spawn(close_member(*member, false));
                        continue;
                    }
                    info!(room = %room.name, identity = %member.identity, "participant joined");
                    if let Some(a) = &agent && member.grant.publish {
                        let _ = a.inbox.send(AgentInput::Listen { key: member.key, identity: member.identity.clone(), name: member.name.clone() });
                    }
                    room.join(*member);
                    rooms.metrics.rooms.participants_joined.fetch_add(1, Ordering::Relaxed);
                    empty_since = None;
                    let _ = reply.send(Ok(()));
                }
                Command::Leave { identity, reason, reply } => {
                    let left = room.key_of(&identity).and_then(|k| room.leave(k, reason));
                    let _ = reply.send(left.is_some());
                    if let Some(m) = left {
                        info!(room = %room.name, identity = %m.identity, ?reason, "participant left");
                        tokio::spawn(close_member(m, true));
                    }
                }
                Command::Transport { key, event } => on_transport_event(&mut room, key, event, &rooms.metrics),
                Command::Info { reply } => {
                    let _ = reply.send(room.info());
                }
                Command::Mute { identity, muted, reply } => {
                    let key = room.key_of(&identity);
                    if let Some(key) = key {
                        room.set_muted(key, muted);
                    }
                    let _ = reply.send(key.is_some());
                }
                Command::Ice { identity, reply } => {
                    let ice = room.key_of(&identity).and_then(|k| room.member_mut(k)).and_then(|m| m.peer.as_ref().map(|p| p.ice.clone()));
                    let _ = reply.send(ice);
                }
                Command::AttachAgent { member, parts, packets, reply } => {
                    let refusal = if agent.is_some() {
                        Some(ApiError::conflict("agent_exists", format!("room {:?} has an agent; DELETE it first", room.name.as_str())))
                    } else if room.key_of(&member.identity).is_some() {
                        Some(ApiError::conflict("identity_taken", format!("{:?} is a participant of room {:?}", member.identity.as_str(), room.name.as_str())))
                    } else if room.len() >= room.limits.max_participants {
                        Some(ApiError::room_full(format!("room {:?} is full ({} participants)", room.name.as_str(), room.limits.max_participants)))
                    } else {
                        None
                    };
                    if let Some(e) = refusal {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                    let (key, identity) = (member.key, member.identity.clone());
                    let history = Recorder::new(rooms.store.clone(), member.record.clone());
                    room.join(*member);
                    let (inbox, inbox_rx) = mpsc::unbounded_channel();
                    let (to_room, from_agent) = mpsc::unbounded_channel();
                    let setup = AgentSetup { room: room.name.clone(), identity, key, parts: *parts, metrics: rooms.metrics.clone(), history };
                    tokio::spawn(run_agent(setup, inbox_rx, to_room, packets));
                    for (key, identity, name) in room.publishers() {
                        let _ = inbox.send(AgentInput::Listen { key, identity, name });
                    }
                    agent = Some(AgentLink { key, inbox, from_agent });
                    let _ = reply.send(Ok(()));
                }
                Command::DetachAgent { reply } => match &agent {
                    Some(a) => {
                        if let Err(mpsc::error::SendError(AgentInput::Stop { reply: Some(reply) })) = a.inbox.send(AgentInput::Stop { reply: Some(reply) }) {
                            remove_agent(&mut room, &mut agent);
                            let _ = reply.send(true);
                        }
                    }
                    None => {
                        let _ = reply.send(false);
                    }
                },
                Command::Close { reason, reply } => {
                    closing = Some((reason, reply));
                    break;
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                room.on_tick(now);
                room.report(&rooms.metrics.rooms);
                for key in room.overdue(now) {
                    if let Some(m) = room.leave(key, LeaveReason::Disconnected) {
                        warn!(room = %room.name, identity = %m.identity, "participant timed out");
                        tokio::spawn(close_member(m, false));
                    }
                }
                if room.humans() == 0 {
                    let since = *empty_since.get_or_insert(now);
                    if now.duration_since(since) >= room.limits.empty_timeout {
                        break;
                    }
                } else {
                    empty_since = None;
                }
            }
        }
        // Whoever left, however: the agent stops hearing them.
        for key in room.take_departed() {
            if let Some(a) = agent.as_ref().filter(|a| a.key != key) {
                let _ = a.inbox.send(AgentInput::Unlisten { key });
            }
        }
    }
    // Unregister first (only this room's entry: a new room of the same name may exist), then
    // refuse what is still queued.
    {
        let mut map = rooms.rooms();
        if map.get(&room.name).is_some_and(|h| me.upgrade().is_some_and(|me| me.same_channel(&h.commands))) {
            map.remove(&room.name);
        }
    }
    commands.close();
    while let Ok(cmd) = commands.try_recv() {
        if let Command::Join { member, reply } = cmd {
            let _ = reply.send(Err(ApiError::overloaded("the room closed while joining; try again")));
            close_member(*member, false).await;
        }
    }
    let reason = closing.as_ref().map_or(LeaveReason::Left, |(r, _)| *r);
    let members = room.drain(reason);
    room.report(&rooms.metrics.rooms);
    // Closed in parallel: each waits up to its flush time for its last events.
    let closes: Vec<_> = members.into_iter().map(|m| tokio::spawn(close_member(m, true))).collect();
    for c in closes {
        let _ = c.await;
    }
    if let Some((_, reply)) = closing {
        let _ = reply.send(());
    }
    info!(room = %room.name, ?reason, "room closed");
}

/// Takes the agent out of the room; every tap closes.
fn remove_agent(room: &mut Room, agent: &mut Option<AgentLink>) {
    let Some(a) = agent.take() else { return };
    room.clear_taps();
    if let Some(m) = room.leave(a.key, LeaveReason::Removed) {
        info!(room = %room.name, identity = %m.identity, "agent removed");
    }
}

fn on_transport_event(room: &mut Room, key: TrackKey, event: TransportEvent, metrics: &crate::metrics::Metrics) {
    let Some(m) = room.member_mut(key) else { return };
    match event {
        TransportEvent::Connected => m.link.on_connected(),
        TransportEvent::Interrupted => m.link.on_interrupted(Instant::now()),
        TransportEvent::Closed(departure) => {
            let reason = match departure {
                Departure::HungUp(_) => LeaveReason::Left,
                Departure::Failed(_) => LeaveReason::Disconnected,
            };
            if let Some(m) = room.leave(key, reason) {
                info!(room = %room.name, identity = %m.identity, "participant gone: {}", departure.why());
                tokio::spawn(close_member(m, false));
            }
        }
        TransportEvent::EventsOpened(outlet) => m.events_opened(outlet),
        TransportEvent::ClientText(text) => {
            if room.on_client_text(key, &text) == Handled::Limited {
                metrics.client_event_limited();
            }
        }
        // Rooms are drained by closing (`server_shutdown`); 1:1 limits do not apply.
        TransportEvent::Dtmf(_) | TransportEvent::Refused { .. } | TransportEvent::Ending { .. } | TransportEvent::PeerReport { .. } => {}
    }
}
