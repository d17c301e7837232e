//! The person in a 1:1 call: the participant at the far end of one transport. It owns the
//! transport's ends (the packet sink, the closer, the transport's tasks), the places its
//! events go (outlets), the events waiting for the first of them, and its [`Link`].
//!
//! A 1:1 call is a room of two, this person and the agent, specialised: with one listener and
//! one speaker, the room's listen session (decode, VAD, turns) and the agent's voice session
//! (mix, encode) are the same worker session, and forwarding is nothing. BENCHMARKS.md ("Rooms:
//! an AI participant") measures what the general path would cost: ≈ 27 ms more turn latency
//! and two sessions instead of one.

use voxrelay_media::EncodedFrame;
use voxrelay_signaling::CallId;
use voxrelay_signaling::events::StampedEvent;

use super::Conversation;
use crate::metrics::Metrics;
use crate::transport::link::Link;
use crate::transport::{Closer, EventOutlet, PacketSink, Sent};

/// Events wait for the first place to send them; past this many, the oldest are dropped (a
/// client that never opens its events channel must not grow memory).
pub const MAX_PENDING_EVENTS: usize = 1024;

pub struct Person {
    sink: PacketSink,
    closer: Closer,
    /// Transport tasks that end with the call (aborted when the person leaves).
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where its events go: the data channel, the events socket of a plain-RTP session,
    /// operators watching the call.
    outlets: Vec<EventOutlet>,
    /// Whether the session started (`session.created` sent to the first outlet).
    opened: bool,
    pending: Vec<StampedEvent>,
    pub link: Link,
}

impl Person {
    pub fn new(sink: PacketSink, closer: Closer, tasks: Vec<tokio::task::JoinHandle<()>>, link: Link) -> Self {
        Person { sink, closer, tasks, outlets: Vec::new(), opened: false, pending: Vec::new(), link }
    }

    pub fn events_opened(&mut self, outlet: EventOutlet) {
        self.outlets.push(outlet);
    }

    /// Whether the session has started (some place to send its events opened).
    pub fn opened(&self) -> bool {
        self.opened
    }

    /// Sends the worker's encoded frames that are ready (the audio the person hears).
    pub async fn send_egress(&mut self, egress: &mut rtrb::Consumer<EncodedFrame>, conversation: &mut Conversation, metrics: &Metrics) {
        while let Ok(frame) = egress.pop() {
            let send =
                conversation.on_egress_frame(frame.voiced) && self.link.has_connected() && (frame.voiced || self.sink.sends_silence());
            if !send {
                continue;
            }
            match self.sink.send(&frame).await {
                Sent::Wire(true) => metrics.rtp_out(frame.len as u64),
                Sent::Wire(false) => {}
                Sent::AsEvent(audio) => {
                    metrics.rtp_out(audio.len() as u64);
                    conversation.on_audio_delta(&audio);
                }
            }
        }
    }

    /// Barge-in: audio the far end buffered but has not played goes too.
    pub fn flush(&self) {
        self.sink.flush();
    }

    /// Sends the conversation's new events. `session.created` goes first, once the first place
    /// to send events exists; until then they wait (bounded).
    pub fn publish(&mut self, conversation: &mut Conversation) {
        if !self.opened && !self.outlets.is_empty() {
            self.opened = true;
            let this_tick = std::mem::take(&mut conversation.out);
            conversation.on_open();
            let mut head = std::mem::take(&mut conversation.out);
            head.append(&mut self.pending);
            head.extend(this_tick);
            self.pending = head;
        }
        self.pending.append(&mut conversation.out);
        if self.pending.len() > MAX_PENDING_EVENTS {
            self.pending.drain(..self.pending.len() - MAX_PENDING_EVENTS);
        }
        if self.opened && !self.pending.is_empty() {
            deliver(&mut self.outlets, self.pending.drain(..));
        }
    }

    /// The last events of a call the server ended, then the transport closes.
    /// `last`: events to deliver first (`None`: the far end left, nobody to tell).
    pub async fn leave(mut self, call_id: &CallId, last: Option<Vec<StampedEvent>>) {
        let flush = last.is_some();
        if let Some(last) = last {
            deliver(&mut self.outlets, last.into_iter());
        }
        // The outlets go first, so a transport flushing its events sees their end.
        drop(self.outlets);
        self.closer.close(Some(call_id), flush).await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Sends events to every outlet, dropping outlets that went away.
fn deliver(outlets: &mut Vec<EventOutlet>, events: impl Iterator<Item = StampedEvent>) {
    for ev in events {
        let text = ev.to_json();
        outlets.retain(|o| o.send(text.clone()).is_ok());
    }
}
