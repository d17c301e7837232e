//! One call on tokio, whatever its transport: the task that owns the call's transport ends
//! (its events, its packet sink) and the tokio ends of the call's rings to its audio worker.
//! It moves data between them on a short tick and leaves every decision to [`Conversation`]
//! (protocol) and the worker (DSP).
//!
//! Teardown is one path: whatever ends the call (DELETE, drain, the peer going away, a
//! timeout), the task leaves its loop, closes the transport, drops the session's rings (the
//! worker frees the slot on its next tick) and removes itself from the registry.

mod conversation;
mod tools;

pub use conversation::{Conversation, HeardTurn, turn_config};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};
use voxrelay_media::{AgentFrame, Control, EncodedFrame, MediaEvent, Uplink};
use voxrelay_signaling::CallId;
use voxrelay_signaling::events::StampedEvent;

use crate::metrics::Metrics;
use crate::transport::{Closer, EventOutlet, PacketSink, Sent, TransportEvent};

/// How often the call task moves frames and events. The worker produces one frame per 20 ms;
/// polling twice as often keeps the added latency at ≤ 10 ms without a wakeup per frame.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// A transport that never connects (offer posted, then abandoned) is dropped after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// An interrupted transport (ICE "disconnected") often recovers; this long interrupted ends it.
pub const DISCONNECTED_GRACE: Duration = Duration::from_secs(15);
/// Events wait for the first place to send them; past this many, the oldest are dropped (a
/// client that never opens its events channel must not grow memory).
pub const MAX_PENDING_EVENTS: usize = 1024;

pub struct CallSetup {
    pub call_id: CallId,
    /// The transport's lifecycle and control events, in order.
    pub events: mpsc::UnboundedReceiver<TransportEvent>,
    pub sink: PacketSink,
    pub closer: Closer,
    /// Transport tasks that end with the call (aborted at teardown).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The worker session's rings (its ingress ring went to the transport's reader).
    pub control: rtrb::Producer<Control>,
    pub agent_out: rtrb::Producer<AgentFrame>,
    pub egress: rtrb::Consumer<EncodedFrame>,
    pub uplink: rtrb::Consumer<Uplink>,
    pub conversation: Conversation,
    pub stop: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

enum End {
    Stopped,
    TransportGone(&'static str),
    Timeout(&'static str),
}

pub async fn run_call(setup: CallSetup) {
    let CallSetup {
        call_id,
        mut events,
        mut sink,
        closer,
        tasks,
        mut control,
        mut agent_out,
        mut egress,
        mut uplink,
        mut conversation,
        stop,
        metrics,
    } = setup;
    // Where server events go: the data channel, the events socket of a plain-RTP session,
    // operators watching the call.
    let mut outlets: Vec<EventOutlet> = Vec::new();
    let mut opened = false;
    let mut pending: Vec<StampedEvent> = Vec::new();
    let mut connected = false;
    let started = Instant::now();
    let mut interrupted_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let end = loop {
        let event = tokio::select! {
            _ = stop.notified() => break End::Stopped,
            ev = events.recv() => match ev {
                Some(ev) => Some(ev),
                None => break End::TransportGone("transport dropped"),
            },
            _ = tick.tick() => None,
        };
        match event {
            Some(TransportEvent::Connected) => {
                connected = true;
                interrupted_since = None;
            }
            Some(TransportEvent::Interrupted) => interrupted_since = Some(Instant::now()),
            Some(TransportEvent::Closed(why)) => break End::TransportGone(why),
            Some(TransportEvent::EventsOpened(outlet)) => outlets.push(outlet),
            Some(TransportEvent::ClientText(text)) => conversation.on_client_text(&text, Instant::now().into_std()),
            Some(TransportEvent::Dtmf(digit)) => conversation.on_dtmf(digit, std::time::SystemTime::now()),
            Some(TransportEvent::Refused { code, message, event_id }) => conversation.error(code, &message, event_id),
            None => {
                let now = Instant::now().into_std();
                if !connected && started.elapsed() > CONNECT_TIMEOUT {
                    break End::Timeout("never connected");
                }
                if interrupted_since.is_some_and(|t| t.elapsed() > DISCONNECTED_GRACE) {
                    break End::Timeout("disconnected");
                }
                while let Ok(up) = uplink.pop() {
                    match up {
                        Uplink::Audio { start, pcm } => conversation.on_caller_audio(start, &pcm),
                        Uplink::Event(ev) => {
                            metrics.media_event(&ev);
                            // The worker reports a response's end after its last frame: those
                            // frames go out first (they are its audio deltas on a WebSocket).
                            if matches!(ev, MediaEvent::PlaybackFinished { .. }) {
                                send_egress(&mut egress, &mut sink, &mut conversation, connected, &metrics).await;
                            }
                            conversation.on_media(ev, now);
                        }
                    }
                }
                conversation.poll_agent_notices();
                conversation.feed_agent(&mut agent_out, now);
                for d in conversation.agent_latencies.drain(..) {
                    metrics.agent_latency(d);
                }
                send_egress(&mut egress, &mut sink, &mut conversation, connected, &metrics).await;
            }
        }
        // Barge-in: the carrier's buffered audio goes too, as soon as the cancel is decided.
        if std::mem::take(&mut conversation.flush_transport) {
            sink.flush();
        }
        for c in conversation.controls.drain(..) {
            if control.push(c).is_err() {
                metrics.ring_overflow();
            }
        }
        // session.created goes first, once the first place to send events exists.
        if !opened && !outlets.is_empty() {
            opened = true;
            let this_tick = std::mem::take(&mut conversation.out);
            conversation.on_open();
            let mut head = std::mem::take(&mut conversation.out);
            head.append(&mut pending);
            head.extend(this_tick);
            pending = head;
        }
        pending.append(&mut conversation.out);
        if pending.len() > MAX_PENDING_EVENTS {
            pending.drain(..pending.len() - MAX_PENDING_EVENTS);
        }
        if opened && !pending.is_empty() {
            deliver(&mut outlets, pending.drain(..));
        }
    };
    let stopped = matches!(end, End::Stopped);
    if stopped && opened {
        // Ended by the server side (DELETE, or the drain's grace ran out): a running response
        // is closed properly so the client's state machine does not wait for it forever.
        conversation.end_of_call();
        let last = std::mem::take(&mut conversation.out);
        deliver(&mut outlets, last.into_iter());
    }
    match end {
        End::Stopped => info!(call = %call_id, "call ended by request"),
        End::TransportGone(why) => info!(call = %call_id, "call ended: {why}"),
        End::Timeout(why) => warn!(call = %call_id, "call ended: transport {why}"),
    }
    // The outlets go first, so a transport flushing its events sees their end.
    drop(outlets);
    closer.close(Some(&call_id), stopped && opened).await;
    for t in tasks {
        t.abort();
    }
}

/// Sends the worker's encoded frames that are ready (the audio the caller hears).
async fn send_egress(
    egress: &mut rtrb::Consumer<EncodedFrame>,
    sink: &mut PacketSink,
    conversation: &mut Conversation,
    connected: bool,
    metrics: &Metrics,
) {
    while let Ok(frame) = egress.pop() {
        let send = conversation.on_egress_frame(frame.voiced) && connected && (frame.voiced || sink.sends_silence());
        if !send {
            continue;
        }
        match sink.send(&frame).await {
            Sent::Wire(true) => metrics.rtp_out(frame.len as u64),
            Sent::Wire(false) => {}
            Sent::AsEvent(audio) => {
                metrics.rtp_out(audio.len() as u64);
                conversation.on_audio_delta(&audio);
            }
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
