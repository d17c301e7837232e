//! One room's state and every decision about it: who is in it, who speaks, who is on whose
//! slots, which packets go where, and which events everyone gets. Driven by the room task
//! (`registry.rs`), which owns the I/O; time comes in with each call.
//!
//! Per packet (`on_packet`): the publisher's level (its RFC 6464 extension, else measured by
//! decoding, for peers that do not send levels) goes to [`ActiveSpeakers`]; the packet goes to
//! every slot carrying that publisher, with the slot's header ([`Slot::forward`]), payload
//! untouched. Every tick (`on_tick`): speakers fall silent without packets; when the speaking
//! set changed, [`selection::assign`] maps the speakers onto each subscriber's slots
//! (`slot.assigned`) and `active_speakers` goes out (at most 5 per second).

use std::sync::Arc;
use std::time::{Duration, Instant};

use voxrelay_media::{AudioLevel, MAX_DECODED_48K, OpusDecoder, RtpIn};
use voxrelay_signaling::limits::{EventRate, EventVerdict};
use voxrelay_signaling::room_token::RoomGrant;
use voxrelay_signaling::room_wire::{
    LeaveReason, ParticipantInfo, ParticipantView, RoomClientEvent, RoomCounters, RoomEvent, RoomInfo, SpeakerLevel,
};
use voxrelay_signaling::{ParticipantId, RoomName};

use super::history;
use super::registry::RoomLimits;
use super::selection;
use super::slot::{Skip, Slot, SourceHeader, TrackKey};
use super::speakers::{ActiveSpeakers, SpeakerConfig};
use crate::store::{RecordId, Store};
use crate::transport::link::Link;
use crate::transport::webrtc::{RoomPeer, SendError};
use crate::transport::{EventOutlet, RtpPacketIn, RtpPacketOut};

/// `active_speakers` at most this often (PROTOCOL.md §4: 5 per second).
const SPEAKERS_EVENT_INTERVAL: Duration = Duration::from_millis(200);
/// Events queued for a participant whose `room-events` channel is not open yet; past this the
/// oldest go (a participant that never opens the channel must not grow memory).
const MAX_PENDING_EVENTS: usize = 256;

/// A participant, as the room holds it.
pub struct Member {
    pub key: TrackKey,
    pub identity: ParticipantId,
    pub name: String,
    pub grant: RoomGrant,
    /// The participant's connection; `None` for the room's AI participant, which publishes
    /// through the room's packet queue and hears the room through taps.
    pub peer: Option<RoomPeer>,
    /// The m-line id of each slot.
    mids: Vec<String>,
    slots: Vec<Slot>,
    /// Who the room put on each slot (the selection's view; `slots` follow it).
    on_slot: Vec<Option<TrackKey>>,
    outlet: Option<EventOutlet>,
    pending: Vec<String>,
    pub muted: bool,
    /// Its connection's state (when the room gives up on it: `transport::link`).
    pub link: Link,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    packets_in: u64,
    packets_out: u64,
    /// Measures levels of a publisher that sends none (made at its first such packet).
    meter: Option<LevelMeter>,
    rate: PacketRate,
    /// Its room events (`data.send`, `mute`) per second: the same rate as a 1:1 call's.
    event_rate: EventRate,
    /// Its place against the server's limit, given back when the member is dropped.
    pub seat: Option<super::registry::Seat>,
    /// While an agent listens: the worker session decoding this participant for it.
    tap: Option<rtrb::Producer<RtpIn>>,
    /// A phone caller's slot: its bridge session's room input (see `room::phone`).
    phone_in: Option<rtrb::Producer<RtpIn>>,
    /// Its record in the call history.
    pub record: RecordId,
    /// The room's AI participant: its pipeline (`echo`, ...) and the conversation it continues.
    pub agent: Option<String>,
    pub conversation: Option<String>,
}

impl Member {
    pub fn new(key: TrackKey, identity: ParticipantId, name: String, grant: RoomGrant, peer: RoomPeer, now: Instant) -> Self {
        // No subscribe grant: no slots, whatever the offer asked for.
        let sinks = if grant.subscribe { &peer.slots[..] } else { &[] };
        let slots: Vec<Slot> = sinks.iter().map(|s| Slot::new(s.ssrc, rand::random(), rand::random())).collect();
        let mids = sinks.iter().map(|s| s.mid.clone()).collect();
        Self::with(key, identity, name, grant, Some(peer), mids, slots, now)
    }

    /// The room's AI participant: it publishes, has no slots, and is connected from the start.
    pub fn agent(key: TrackKey, identity: ParticipantId, name: String, room: voxrelay_signaling::RoomName, now: Instant) -> Self {
        let grant = RoomGrant { publish: true, subscribe: false, publish_data: false, admin: false, ..RoomGrant::default_for(room) };
        let mut m = Self::with(key, identity, name, grant, None, Vec::new(), Vec::new(), now);
        m.link = Link::up(now);
        m
    }

    #[allow(clippy::too_many_arguments)]
    fn with(
        key: TrackKey,
        identity: ParticipantId,
        name: String,
        grant: RoomGrant,
        peer: Option<RoomPeer>,
        mids: Vec<String>,
        slots: Vec<Slot>,
        now: Instant,
    ) -> Self {
        Member {
            key,
            identity,
            name,
            grant,
            on_slot: vec![None; slots.len()],
            slots,
            mids,
            peer,
            outlet: None,
            pending: Vec::new(),
            muted: false,
            link: Link::opened(now),
            tasks: Vec::new(),
            packets_in: 0,
            packets_out: 0,
            meter: None,
            rate: PacketRate::new(),
            event_rate: EventRate::default(),
            seat: None,
            tap: None,
            phone_in: None,
            record: RecordId::participant(),
            agent: None,
            conversation: None,
        }
    }

    /// A phone caller: it publishes (its audio encoded to Opus by its bridge session) and has
    /// one slot, whose packets go to that session (`room_in`) to be decoded for the line.
    pub fn phone(
        key: TrackKey,
        identity: ParticipantId,
        name: String,
        room: voxrelay_signaling::RoomName,
        room_in: rtrb::Producer<RtpIn>,
        now: Instant,
    ) -> Self {
        let grant = RoomGrant { publish: true, subscribe: true, publish_data: false, admin: false, ..RoomGrant::default_for(room) };
        let slot = Slot::new(rand::random(), rand::random(), rand::random());
        let mut m = Self::with(key, identity, name, grant, None, vec!["phone".into()], vec![slot], now);
        m.phone_in = Some(room_in);
        m.link = Link::up(now);
        m
    }

    pub fn is_agent(&self) -> bool {
        self.peer.is_none() && self.phone_in.is_none()
    }

    fn view(&self) -> ParticipantView {
        ParticipantView {
            identity: self.identity.clone(),
            name: self.name.clone(),
            publishing: self.grant.publish,
            muted: self.muted,
            agent: self.is_agent(),
        }
    }

    /// Sends (or queues until the events channel opens) one event.
    fn send(&mut self, event: &RoomEvent) {
        self.send_text(event.to_json());
    }

    fn send_text(&mut self, text: String) {
        // The agent and phone callers have no events channel.
        if self.peer.is_none() {
            return;
        }
        match &self.outlet {
            Some(outlet) if outlet.send(text.clone()).is_ok() => {}
            _ => {
                self.outlet = None;
                if self.pending.len() >= MAX_PENDING_EVENTS {
                    self.pending.remove(0);
                }
                self.pending.push(text);
            }
        }
    }

    /// The participant's `room-events` channel opened: what waited goes first.
    pub fn events_opened(&mut self, outlet: EventOutlet) {
        for text in self.pending.drain(..) {
            let _ = outlet.send(text);
        }
        self.outlet = Some(outlet);
    }
}

/// A publisher may send this many packets per second on average (Opus at 10 ms is 100/s; the
/// 20 ms browsers use is 50/s), and this many in a burst (a jitter burst after a stall).
pub const MAX_PACKETS_PER_SECOND: f32 = 150.0;
const PACKET_BURST: f32 = 50.0;

/// The per-publisher packet rate cap: a token bucket over packet arrival times.
#[derive(Debug)]
struct PacketRate {
    tokens: f32,
    last: Option<Instant>,
}

impl PacketRate {
    fn new() -> Self {
        PacketRate { tokens: PACKET_BURST, last: None }
    }

    /// Whether a packet arriving at `at` is within the cap.
    fn admit(&mut self, at: Instant) -> bool {
        if let Some(last) = self.last {
            let refill = at.saturating_duration_since(last).as_secs_f32() * MAX_PACKETS_PER_SECOND;
            self.tokens = (self.tokens + refill).min(PACKET_BURST);
        }
        self.last = Some(at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Decodes a publisher's packets only to measure their level (peers without RFC 6464).
struct LevelMeter {
    decoder: OpusDecoder,
    pcm: Box<[i16; MAX_DECODED_48K]>,
}

impl LevelMeter {
    fn new() -> Option<Self> {
        Some(LevelMeter { decoder: OpusDecoder::new().ok()?, pcm: Box::new([0; MAX_DECODED_48K]) })
    }

    fn measure(&mut self, payload: &[u8]) -> Option<AudioLevel> {
        let n = self.decoder.decode(payload, &mut self.pcm[..]).ok()?;
        Some(AudioLevel::from_pcm(&self.pcm[..n], true))
    }
}

pub struct Room {
    pub name: RoomName,
    members: Vec<Member>,
    speakers: ActiveSpeakers<TrackKey>,
    ranking: Vec<(TrackKey, f32)>,
    speaking: Vec<TrackKey>,
    /// The speaking set changed since the last selection.
    speakers_changed: bool,
    last_speakers_event: Option<Instant>,
    speakers_event_due: bool,
    pub counters: RoomCounters,
    /// What `counters` were at the last report to the process metrics.
    reported: RoomCounters,
    reported_len: usize,
    pub limits: RoomLimits,
    /// Keys of members that left since the task last asked (see `take_departed`).
    departed: Vec<TrackKey>,
    history: Arc<Store>,
}

/// What became of a participant's room event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    Taken,
    /// Dropped over the participant's event rate.
    Limited,
}

impl Room {
    pub fn new(name: RoomName, limits: RoomLimits, now: Instant) -> Self {
        Room {
            name,
            members: Vec::new(),
            speakers: ActiveSpeakers::new(SpeakerConfig::DEFAULT, now),
            ranking: Vec::new(),
            speaking: Vec::new(),
            speakers_changed: false,
            last_speakers_event: None,
            speakers_event_due: false,
            counters: RoomCounters::default(),
            reported: RoomCounters::default(),
            reported_len: 0,
            limits,
            departed: Vec::new(),
            history: Arc::new(Store::off()),
        }
    }

    /// Records who joins and leaves in the call history.
    pub fn with_history(mut self, store: Arc<Store>) -> Self {
        self.history = store;
        self
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn member_mut(&mut self, key: TrackKey) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.key == key)
    }

    pub fn key_of(&self, identity: &ParticipantId) -> Option<TrackKey> {
        self.members.iter().find(|m| m.identity == *identity).map(|m| m.key)
    }

    /// Adds a participant (the caller removed any earlier connection of the same identity):
    /// it gets `room.joined`, the others `participant.joined`, and its slots are filled.
    pub fn join(&mut self, mut member: Member) {
        let participants = self.members.iter().map(Member::view).collect();
        let slots = member.mids.clone();
        member.send(&RoomEvent::Joined { room: self.name.clone(), identity: member.identity.clone(), participants, slots });
        let joined = RoomEvent::ParticipantJoined { participant: member.view() };
        for m in &mut self.members {
            m.send(&joined);
        }
        if member.is_agent() {
            self.speakers.configure(member.key, SpeakerConfig::SERVER_TRACK);
        }
        history::joined(&self.history, &self.name, &member);
        self.members.push(member);
        self.speakers_changed = true;
    }

    /// Takes a participant out; the others get `participant.left` and lose it from their slots.
    pub fn leave(&mut self, key: TrackKey, reason: LeaveReason) -> Option<Member> {
        let i = self.members.iter().position(|m| m.key == key)?;
        let member = self.members.remove(i);
        history::left(&self.history, &member, reason);
        self.departed.push(key);
        self.speakers.remove(key);
        let left = RoomEvent::ParticipantLeft { identity: member.identity.clone(), reason };
        for m in &mut self.members {
            m.send(&left);
            for s in 0..m.on_slot.len() {
                if m.on_slot[s] == Some(key) {
                    m.on_slot[s] = None;
                    m.slots[s].assign(None);
                    let mid = m.mids[s].clone();
                    m.send(&RoomEvent::SlotAssigned { slot: s, mid, identity: None });
                }
            }
        }
        self.speakers_changed = true;
        Some(member)
    }

    /// One packet from a publisher: level, then every slot carrying it.
    pub fn on_packet(&mut self, key: TrackKey, p: RtpPacketIn) {
        self.counters.packets_in += 1;
        let Some(publisher) = self.members.iter_mut().find(|m| m.key == key) else { return };
        publisher.packets_in += 1;
        if !publisher.grant.publish || publisher.muted {
            self.counters.dropped_not_publishing += 1;
            return;
        }
        if !publisher.rate.admit(p.at) {
            self.counters.dropped_rate_limited += 1;
            return;
        }
        let level = match p.level {
            Some(level) => Some(level),
            None => {
                if publisher.meter.is_none() {
                    publisher.meter = LevelMeter::new();
                }
                publisher.meter.as_mut().and_then(|m| m.measure(&p.payload))
            }
        };
        if let Some(level) = level {
            self.speakers_changed |= self.speakers.on_level(key, level, p.at);
        }
        if let Some(tap) = &mut publisher.tap
            && let Some(frame) = RtpIn::new(p.seq, p.timestamp, &p.payload)
            && tap.push(frame.with_source(p.ssrc, level)).is_err()
        {
            self.counters.dropped_agent_tap += 1;
        }
        let header = SourceHeader { ssrc: p.ssrc, seq: p.seq, timestamp: p.timestamp, marker: p.marker };
        for sub in &mut self.members {
            if sub.key == key {
                continue;
            }
            for (s, slot) in sub.slots.iter_mut().enumerate() {
                let out = match slot.forward(key, header, p.at) {
                    Ok(h) => {
                        RtpPacketOut { ssrc: h.ssrc, seq: h.seq, timestamp: h.timestamp, marker: h.marker, payload: p.payload.clone() }
                    }
                    Err(Skip::NotOnSlot) => continue,
                    Err(Skip::BeforeSwitch) => {
                        self.counters.dropped_before_switch += 1;
                        continue;
                    }
                };
                let sent = match (&sub.peer, &mut sub.phone_in) {
                    (Some(peer), _) => peer.send(s, out),
                    (None, Some(line)) => match RtpIn::new(out.seq, out.timestamp, &out.payload) {
                        Some(frame) => line.push(frame).map_err(|_| SendError::Full),
                        None => Err(SendError::Closed),
                    },
                    (None, None) => Err(SendError::Closed),
                };
                match sent {
                    Ok(()) => {
                        sub.packets_out += 1;
                        self.counters.packets_forwarded += 1;
                        self.counters.bytes_forwarded += p.payload.len() as u64;
                    }
                    Err(SendError::Full) => self.counters.dropped_queue_full += 1,
                    Err(SendError::Closed) => {}
                }
            }
        }
    }

    /// Every 20 ms or so: silence ends speakers, changes reach slots and `active_speakers`.
    pub fn on_tick(&mut self, now: Instant) {
        self.speakers_changed |= self.speakers.tick(now);
        if std::mem::take(&mut self.speakers_changed) {
            self.speakers.ranking(&mut self.ranking);
            let speaking: Vec<TrackKey> = self.ranking.iter().map(|&(k, _)| k).collect();
            if speaking != self.speaking {
                self.speakers_event_due = true;
            }
            self.speaking = speaking;
            self.select();
        }
        if self.speakers_event_due && self.last_speakers_event.is_none_or(|t| now.duration_since(t) >= SPEAKERS_EVENT_INTERVAL) {
            self.speakers_event_due = false;
            self.last_speakers_event = Some(now);
            let speakers = self
                .ranking
                .iter()
                .filter_map(|&(k, _)| {
                    let identity = self.members.iter().find(|m| m.key == k)?.identity.clone();
                    let level = self.speakers.window(k).map_or(0.0, |w| w.level());
                    Some(SpeakerLevel { identity, level })
                })
                .collect();
            let event = RoomEvent::ActiveSpeakers { speakers };
            for m in &mut self.members {
                m.send(&event);
            }
        }
    }

    /// Maps the current speakers onto every subscriber's slots.
    fn select(&mut self) {
        let identities: Vec<(TrackKey, ParticipantId)> = self.members.iter().map(|m| (m.key, m.identity.clone())).collect();
        for m in &mut self.members {
            let changed = selection::assign(&mut m.on_slot, &self.speaking, Some(m.key));
            for s in (0..m.on_slot.len()).filter(|s| changed & (1 << s) != 0) {
                let track = m.on_slot[s];
                self.counters.slot_switches += 1;
                m.slots[s].assign(track);
                let identity = track.and_then(|k| identities.iter().find(|(key, _)| *key == k).map(|(_, id)| id.clone()));
                let mid = m.mids[s].clone();
                m.send(&RoomEvent::SlotAssigned { slot: s, mid, identity });
            }
        }
    }

    /// Members that left since the last call, whatever took them out.
    pub fn take_departed(&mut self) -> Vec<TrackKey> {
        std::mem::take(&mut self.departed)
    }

    /// People in the room (the AI participant not counted).
    pub fn humans(&self) -> usize {
        self.members.iter().filter(|m| !m.is_agent()).count()
    }

    /// Participants whose audio an agent would hear: `(key, identity, display name)`.
    pub fn publishers(&self) -> Vec<(TrackKey, ParticipantId, String)> {
        self.members.iter().filter(|m| !m.is_agent() && m.grant.publish).map(|m| (m.key, m.identity.clone(), m.name.clone())).collect()
    }

    /// Starts (or, with `None`, stops) copying a participant's packets to an agent's listener.
    pub fn set_tap(&mut self, key: TrackKey, tap: Option<rtrb::Producer<RtpIn>>) {
        if let Some(m) = self.member_mut(key) {
            m.tap = tap;
        }
    }

    /// No agent listens any more: every tap closes.
    pub fn clear_taps(&mut self) {
        for m in &mut self.members {
            m.tap = None;
        }
    }

    /// An event of the AI participant (already JSON) to every person in the room.
    pub fn broadcast_text(&mut self, text: &str) {
        for m in self.members.iter_mut().filter(|m| !m.is_agent()) {
            m.send_text(text.to_string());
        }
    }

    /// Adds what the room counted since the last report to the process-wide totals.
    pub fn report(&mut self, totals: &crate::metrics::RoomTotals) {
        let size_change = self.members.len() as i64 - self.reported_len as i64;
        totals.add(&self.counters, &self.reported, size_change);
        self.reported = self.counters;
        self.reported_len = self.members.len();
    }

    /// A room event from a participant. Over its event rate it is dropped (the sender told
    /// once per burst, with an `error`), before it costs a parse or a fan-out.
    pub fn on_client_text(&mut self, key: TrackKey, text: &str) -> Handled {
        let Some(i) = self.members.iter().position(|m| m.key == key) else { return Handled::Taken };
        match self.members[i].event_rate.check() {
            EventVerdict::Take => {}
            EventVerdict::RefuseAndSay => {
                self.members[i].send(&RoomEvent::error("rate_limited", EventRate::message()));
                return Handled::Limited;
            }
            EventVerdict::Refuse => return Handled::Limited,
        }
        self.on_room_event(i, key, text);
        Handled::Taken
    }

    fn on_room_event(&mut self, i: usize, key: TrackKey, text: &str) {
        let event = match RoomClientEvent::parse(text) {
            Ok(e) => e,
            Err(error) => return self.members[i].send(&error),
        };
        match event {
            RoomClientEvent::DataSend { payload, topic, to } => {
                if !self.members[i].grant.publish_data {
                    return self.members[i].send(&RoomEvent::error("grant_missing", "the room token lacks the publish_data grant"));
                }
                let event = RoomEvent::DataReceived { from: self.members[i].identity.clone(), payload, topic };
                for (j, m) in self.members.iter_mut().enumerate() {
                    let addressed = to.as_ref().is_none_or(|to| to.contains(&m.identity));
                    if j != i && addressed {
                        m.send(&event);
                    }
                }
            }
            RoomClientEvent::Mute { muted } => self.set_muted(key, muted),
        }
    }

    /// Mutes or unmutes a participant's audio (itself, or an admin through the API).
    pub fn set_muted(&mut self, key: TrackKey, muted: bool) {
        let Some(m) = self.members.iter_mut().find(|m| m.key == key) else { return };
        if m.muted == muted {
            return;
        }
        m.muted = muted;
        let identity = m.identity.clone();
        if muted {
            self.speakers.remove(key);
            self.speakers_changed = true;
        }
        let event = if muted { RoomEvent::TrackMuted { identity } } else { RoomEvent::TrackUnmuted { identity } };
        for m in &mut self.members {
            m.send(&event);
        }
    }

    /// Members past a connection deadline, to be closed by the task.
    pub fn overdue(&self, now: Instant) -> Vec<TrackKey> {
        self.members.iter().filter(|m| m.link.overdue(now).is_some()).map(|m| m.key).collect()
    }

    pub fn info(&self) -> RoomInfo {
        RoomInfo {
            name: Some(self.name.clone()),
            max_participants: self.limits.max_participants,
            empty_timeout_seconds: self.limits.empty_timeout.as_secs(),
            participants: self
                .members
                .iter()
                .map(|m| ParticipantInfo { view: m.view(), slots: m.slots.len(), packets_in: m.packets_in, packets_out: m.packets_out })
                .collect(),
            speaking: self.speaking.iter().filter_map(|k| self.members.iter().find(|m| m.key == *k)).map(|m| m.identity.clone()).collect(),
            counters: self.counters,
            node: None,
        }
    }

    /// Everyone, for a room that closes: each gets `participant.left` for itself.
    pub fn drain(&mut self, reason: LeaveReason) -> Vec<Member> {
        let mut members = std::mem::take(&mut self.members);
        for m in &mut members {
            m.send(&RoomEvent::ParticipantLeft { identity: m.identity.clone(), reason });
            history::left(&self.history, m, reason);
        }
        members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_cap_passes_real_senders_and_cuts_floods() {
        let t0 = Instant::now();
        let mut rate = PacketRate::new();
        // Ten seconds of 10 ms Opus (100/s) with a 300 ms stall released at once: all pass.
        let mut at = t0;
        for i in 0..1000 {
            at += Duration::from_millis(10);
            if i == 500 {
                at += Duration::from_millis(300);
            }
            assert!(rate.admit(at), "packet {i}");
        }
        // A flood of 1000 packets in 100 ms: the burst and the refill pass, the rest is cut.
        let mut rate = PacketRate::new();
        let passed = (0..1000).filter(|i| rate.admit(t0 + Duration::from_micros(100 * i))).count();
        assert!((50..=70).contains(&passed), "{passed}");
    }
}
