//! The room's AI participant (PROTOCOL.md §4), as one tokio task next to the room task.
//!
//! It **hears** each publishing participant through a listen session of its own on the audio
//! workers (the room task copies that participant's packets into the session's ring: decode,
//! VAD and turn detection per speaker; a room without an agent decodes nothing). Speech onsets
//! go to the [`Conversation`] at once (anyone's speech barges in); committed turns wait on the
//! [`Floor`] until nobody has a turn open, then the agent hears them, each attributed to its
//! speaker, and answers once.
//!
//! It **speaks** through one voice session: the agent's 24 kHz speech is encoded once there,
//! and each voiced Opus frame enters the room's packet queue as this participant's RTP, to be
//! forwarded to every subscriber like anyone's (it takes a slot while it speaks).
//!
//! Its events (§2 shapes) go to everyone in the room with a top-level `identity` (the agent)
//! and, on a participant's input events, `speaker` (who spoke).
//!
//! It wakes as a call does, on its workers' bells (`crate::call::SessionTicks`): after its voice
//! session's outbound half (every 20 ms; the participants' audio is taken then), after a listen
//! session's half with events (a turn committed is answered at once), and at every slot while
//! its response's first frame is on its way; without bells, every 10 ms.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};
use voxrelay_media::{
    AudioTime, Control, EncodedFrame, MediaEvent, RtpIn, SessionHandle, SessionOptions, TurnDetectConfig, Uplink, WorkerPool,
};
use voxrelay_signaling::events::{ServerEvent, StampedEvent};
use voxrelay_signaling::{ParticipantId, RoomName};

use super::floor::Floor;
use super::server_track::ServerTrack;
use super::slot::TrackKey;
use crate::call::{Conversation, EventBells, FirstFrameWatch, HeardTurn, POLL_INTERVAL, SessionTicks, next_half_tick};
use crate::metrics::Metrics;
use crate::store::{Note, Recorder};
use crate::transport::RtpPacketIn;

/// Speakers of recent input items, to attribute their events (a turn's events end with its
/// `conversation.item.created`).
const MAX_OPEN_ITEMS: usize = 64;

/// What the room tells its agent.
pub enum AgentInput {
    /// Hear this participant (it publishes).
    Listen { key: TrackKey, identity: ParticipantId, name: String },
    /// The participant left.
    Unlisten { key: TrackKey },
    /// Leave the room: a response in progress is cancelled first; `reply` comes back with
    /// [`ToRoom::Left`].
    Stop { reply: Option<oneshot::Sender<bool>> },
}

/// What the agent asks of its room, in order.
pub enum ToRoom {
    /// Copy this participant's packets into `ingress` (a listen session's ring).
    Tap { key: TrackKey, ingress: rtrb::Producer<RtpIn> },
    /// Events for everyone in the room (JSON).
    Events(Vec<String>),
    /// The agent has left: take it out of the room.
    Left { reply: Option<oneshot::Sender<bool>> },
}

/// What the engine builds for an agent: its conversation, the session it speaks through, and
/// how the sessions it hears participants through are made.
pub struct AgentParts {
    pub conversation: Conversation,
    /// The session the agent speaks through (nothing comes in on it).
    pub voice: SessionHandle,
    /// How each participant's listen session is built (the session's turn detection).
    pub listen_turn: TurnDetectConfig,
    pub listen_options: SessionOptions,
    pub pool: Arc<WorkerPool>,
    /// What the agent wakes on; `None`: it polls every [`POLL_INTERVAL`].
    pub bells: Option<AgentBells>,
}

/// The agent's wake-ups: its voice session's ticks, and how each listen session's events are
/// made to ring them too.
pub struct AgentBells {
    pub voice: SessionTicks,
    pub hear: EventBells,
}

pub struct AgentSetup {
    pub room: RoomName,
    pub identity: ParticipantId,
    pub key: TrackKey,
    pub parts: AgentParts,
    pub metrics: Arc<Metrics>,
    /// The agent's record in the call history: the room's transcript.
    pub history: Recorder,
}

/// One participant the agent hears.
struct Listener {
    key: TrackKey,
    identity: ParticipantId,
    name: String,
    /// Where this session's audio timeline starts on the room's (agent's join = 0).
    origin: Duration,
    /// The turn being spoken (its item id).
    item: Option<String>,
    uplink: rtrb::Consumer<Uplink>,
    egress: rtrb::Consumer<EncodedFrame>,
    /// Kept so the session lives (and for settings changes).
    _control: rtrb::Producer<Control>,
}

pub async fn run_agent(
    setup: AgentSetup,
    mut inbox: mpsc::UnboundedReceiver<AgentInput>,
    to_room: mpsc::UnboundedSender<ToRoom>,
    packets: mpsc::Sender<(TrackKey, RtpPacketIn)>,
) {
    let AgentSetup { room, identity, key, parts, metrics, history } = setup;
    let AgentParts { mut conversation, voice, listen_turn, listen_options, pool, bells } = parts;
    let (mut ticks, event_bells) = bells.map_or((None, None), |b| (Some(b.voice), Some(b.hear)));
    let mut first_frame = FirstFrameWatch::default();
    let SessionHandle { control: mut voice_control, mut agent_out, mut egress, uplink: mut voice_uplink, .. } = voice;
    let started = Instant::now();
    let mut listeners: Vec<Listener> = Vec::new();
    let mut floor: Floor<TrackKey> = Floor::new();
    let mut speakers: VecDeque<(String, ParticipantId)> = VecDeque::new();
    let mut rtp = ServerTrack::new();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let tag = Tagger { agent: json_string(identity.as_str()) };
    info!(room = %room, identity = %identity, "agent joined");

    let reply = loop {
        let woke = tokio::select! {
            input = inbox.recv() => match input {
                None => break None,
                Some(AgentInput::Stop { reply }) => break Some(reply),
                Some(AgentInput::Listen { key, identity, name }) => {
                    match pool.add_session_with(listen_turn, listen_options) {
                        Ok(session) => {
                            let SessionHandle { ingress, control, uplink, egress, stats, worker, .. } = session;
                            if let (Some(ticks), Some(event_bells)) = (&ticks, &event_bells)
                                && !event_bells(worker, ticks, stats)
                            {
                                warn!(room = %room, participant = %identity, "no bell for worker {worker}: the agent hears this participant at its next wake");
                            }
                            let _ = to_room.send(ToRoom::Tap { key, ingress });
                            listeners.push(Listener { key, identity, name, origin: started.elapsed(), item: None, uplink, egress, _control: control });
                        }
                        Err(e) => warn!(room = %room, participant = %identity, "the agent cannot hear this participant: {e}"),
                    }
                    false
                }
                Some(AgentInput::Unlisten { key }) => {
                    listeners.retain(|l| l.key != key);
                    floor.remove(key);
                    false
                }
            },
            _ = next_half_tick(&mut ticks, first_frame.watching(Instant::now())) => true,
            _ = tick.tick(), if ticks.is_none() => true,
        };
        if woke {
            let now = Instant::now();
            for l in &mut listeners {
                // A listen session also encodes silence for nobody: dropped here.
                while l.egress.pop().is_ok() {}
                while let Ok(up) = l.uplink.pop() {
                    match up {
                        Uplink::Audio { start, pcm } => floor.audio(l.key, start, &pcm),
                        Uplink::Event(ev) => {
                            metrics.media_event(&ev);
                            hear(&mut conversation, &mut floor, &mut speakers, l, ev);
                        }
                    }
                }
            }
            let turns = floor.release();
            if !turns.is_empty() {
                let heard: Vec<HeardTurn<'_>> = turns
                    .iter()
                    .map(|t| HeardTurn {
                        item_id: &t.item_id,
                        speaker: listeners.iter().find(|l| l.key == t.speaker).map_or("someone", |l| l.name.as_str()),
                        start: t.start,
                        frames: &t.frames,
                    })
                    .collect();
                conversation.room_turns(&heard, now);
            }
            while let Ok(up) = voice_uplink.pop() {
                // Nothing comes in on the voice session: only its playback events matter.
                if let Uplink::Event(
                    ev @ (MediaEvent::PlaybackStarted { .. } | MediaEvent::PlaybackFinished { .. } | MediaEvent::PlaybackCleared { .. }),
                ) = up
                {
                    first_frame.on_media(&ev);
                    conversation.on_media(ev, now);
                }
            }
            conversation.poll_agent_notices();
            first_frame.fed(conversation.feed_agent(&mut agent_out, now), now);
            for d in conversation.agent_latencies.drain(..) {
                metrics.agent_latency(d);
            }
            while let Ok(frame) = egress.pop() {
                if conversation.on_egress_frame(frame.voiced) && frame.voiced && packets.try_send((key, rtp.packet(&frame))).is_err() {
                    metrics.rooms.dropped_room_queue.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            conversation.flush_transport = false;
            for c in conversation.controls.drain(..) {
                if voice_control.push(c).is_err() {
                    metrics.ring_overflow();
                }
            }
            history.take(&mut conversation.notes, |note| speaker_of(note, &speakers, &identity));
            send_events(&mut conversation, &mut speakers, &tag, &to_room);
        }
    };
    // Leaving mid-response: the response ends as cancelled, so clients see it finish.
    conversation.end_of_call();
    history.take(&mut conversation.notes, |note| speaker_of(note, &speakers, &identity));
    send_events(&mut conversation, &mut speakers, &tag, &to_room);
    let _ = to_room.send(ToRoom::Left { reply: reply.flatten() });
    info!(room = %room, identity = %identity, "agent left");
    // The sessions' rings drop here; the workers free them on their next tick.
}

/// A participant's speech event, as the agent hears it.
fn hear(
    conversation: &mut Conversation,
    floor: &mut Floor<TrackKey>,
    speakers: &mut VecDeque<(String, ParticipantId)>,
    l: &mut Listener,
    ev: MediaEvent,
) {
    let on_room = |t: AudioTime| AudioTime::ZERO + l.origin + t.since(AudioTime::ZERO);
    match ev {
        MediaEvent::SpeechStarted { audio_start } => {
            let item = conversation.room_speech_started(on_room(audio_start));
            if speakers.len() == MAX_OPEN_ITEMS {
                speakers.pop_front();
            }
            speakers.push_back((item.clone(), l.identity.clone()));
            floor.speech_started(l.key, audio_start, item.clone());
            l.item = Some(item);
        }
        MediaEvent::SpeechStopped { audio_end } => {
            if let Some(item) = &l.item {
                conversation.room_speech_stopped(on_room(audio_end), item);
            }
        }
        MediaEvent::Committed { audio_end } => {
            l.item = None;
            floor.committed(l.key, audio_end);
        }
        _ => {}
    }
}

/// Who a line of the room's transcript is from: the agent's own, or the participant whose turn
/// it is (taken before the turn's last event lets go of its speaker).
fn speaker_of(note: &Note, speakers: &VecDeque<(String, ParticipantId)>, agent: &ParticipantId) -> Option<String> {
    let item = match note {
        Note::Response { .. } => return Some(agent.to_string()),
        Note::UserAudio { item_id } | Note::UserText { item_id, .. } | Note::UserTranscript { item_id, .. } => item_id,
        Note::ToolOutput { .. } => return None,
    };
    speakers.iter().find(|(i, _)| i == item).map(|(_, who)| who.to_string())
}

/// Adds the room's fields to the agent's events.
struct Tagger {
    /// The agent's identity as a JSON string.
    agent: String,
}

impl Tagger {
    fn tag(&self, event: &StampedEvent, speaker: Option<&ParticipantId>) -> String {
        let json = event.to_json();
        let Some(body) = json.strip_prefix('{') else { return json };
        let mut out = String::with_capacity(json.len() + 48);
        out.push_str("{\"identity\":");
        out.push_str(&self.agent);
        if let Some(speaker) = speaker {
            out.push_str(",\"speaker\":");
            out.push_str(&json_string(speaker.as_str()));
        }
        if body != "}" {
            out.push(',');
        }
        out.push_str(body);
        out
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The participant input item an event is about, if any.
fn input_item(event: &ServerEvent) -> Option<&str> {
    match event {
        ServerEvent::SpeechStarted { item_id, .. } | ServerEvent::InputCommitted { item_id, .. } => Some(item_id),
        ServerEvent::SpeechStopped { item_id: Some(item_id), .. } => Some(item_id),
        ServerEvent::ItemCreated { item, .. } => Some(&item.id),
        _ => None,
    }
}

fn send_events(
    conversation: &mut Conversation,
    speakers: &mut VecDeque<(String, ParticipantId)>,
    tag: &Tagger,
    to_room: &mpsc::UnboundedSender<ToRoom>,
) {
    if conversation.out.is_empty() {
        return;
    }
    let events: Vec<String> = conversation
        .out
        .drain(..)
        .map(|ev| {
            let item = input_item(&ev.event);
            let speaker = item.and_then(|id| speakers.iter().find(|(i, _)| i == id)).map(|(_, who)| who.clone());
            if let (ServerEvent::ItemCreated { .. }, Some(id)) = (&ev.event, item) {
                // The turn's last event: its speaker is no longer needed.
                speakers.retain(|(i, _)| i != id);
            }
            tag.tag(&ev, speaker.as_ref())
        })
        .collect();
    let _ = to_room.send(ToRoom::Events(events));
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxrelay_signaling::events::Dialect;

    #[test]
    fn events_carry_the_agent_and_the_speaker_first() {
        let tag = Tagger { agent: json_string("agent") };
        let ev = StampedEvent { dialect: Dialect::Ga, event_id: "event_1".into(), event: ServerEvent::InputCleared };
        let alice = ParticipantId::parse("alice").unwrap();
        let json: serde_json::Value = serde_json::from_str(&tag.tag(&ev, Some(&alice))).unwrap();
        assert_eq!(json["identity"], "agent");
        assert_eq!(json["speaker"], "alice");
        assert_eq!(json["type"], "input_audio_buffer.cleared");
        assert_eq!(json["event_id"], "event_1");
    }
}
