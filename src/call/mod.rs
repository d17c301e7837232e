//! One 1:1 call on tokio, whatever its transport: the task joining the call's two
//! participants, the person over its transport ([`Person`]: sink, outlets, link) and the agent
//! ([`Conversation`]: protocol, barge-in, the agent it drives), through the tokio ends of their
//! shared worker session's rings. It moves data between them when the worker's tick bell rings
//! (after its session's outbound half, or an inbound half with events: `engine::bells`) and
//! leaves every decision to the conversation (protocol), the worker (DSP) and the link
//! (liveness).
//!
//! Teardown is one path: whatever ends the call (DELETE, drain, the person hanging up or
//! vanishing, a timeout), the task leaves its loop, the person leaves (the transport closes),
//! the session's rings drop (the worker frees the slot on its next tick) and the engine removes
//! the call from its registry and counts the [`EndReason`].

mod conversation;
pub mod lifetime;
mod person;
mod ticks;
mod tools;

pub use conversation::{Conversation, HeardTurn, turn_config};
pub use person::Person;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};
use voxrelay_media::{AgentFrame, Control, EncodedFrame, MediaEvent, Uplink};
use voxrelay_signaling::CallId;
use voxrelay_signaling::limits::{EventRate, EventVerdict};

use self::lifetime::{CallLimits, Lifetime, Verdict};
pub use self::ticks::{CallListener, EventBells, FirstFrameWatch, SessionTicks, next_half_tick};
use crate::metrics::Metrics;
use crate::store::Recorder;
use crate::transport::TransportEvent;
use crate::transport::link::EndReason;

/// How often a task that does not hear a worker's bell moves frames and events (room agents and
/// phone lines in rooms; a 1:1 call whose worker is gone). The worker produces one frame per
/// 20 ms; polling twice as often keeps the added latency at ≤ 10 ms.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A call's two participants and what joins them.
pub struct CallSetup {
    pub call_id: CallId,
    /// The person, over its transport.
    pub person: Person,
    /// The transport's lifecycle and control events, in order.
    pub events: mpsc::UnboundedReceiver<TransportEvent>,
    /// The agent's side: the conversation (protocol, barge-in) and the agent it drives.
    pub conversation: Conversation,
    /// The worker session joining them (its ingress ring went to the transport's reader).
    pub rings: SessionRings,
    /// Half ticks of the session's worker (`engine::bells`); `None`: poll every [`POLL_INTERVAL`].
    pub ticks: Option<SessionTicks>,
    pub stop: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// Set once the transport connects (admission counts unconnected calls per address).
    pub connected: Arc<std::sync::atomic::AtomicBool>,
    /// The server's idle timeout and maximum duration (a session may lower them).
    pub limits: CallLimits,
    /// Where the conversation's lines go (the call history).
    pub history: Recorder,
}

/// The tokio ends of the call's worker session.
pub struct SessionRings {
    pub control: rtrb::Producer<Control>,
    pub agent_out: rtrb::Producer<AgentFrame>,
    pub egress: rtrb::Consumer<EncodedFrame>,
    pub uplink: rtrb::Consumer<Uplink>,
}

/// Runs the call until it ends; says why.
pub async fn run_call(setup: CallSetup) -> EndReason {
    let CallSetup { call_id, mut person, mut events, mut conversation, rings, mut ticks, stop, metrics, connected, limits, history } =
        setup;
    let SessionRings { mut control, mut agent_out, mut egress, mut uplink } = rings;
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut event_rate = EventRate::default();
    let mut lifetime = Lifetime::new(Instant::now().into_std());
    let mut first_frame = FirstFrameWatch::default();
    // Made once: a fresh `notified()` per wake-up would join and leave the Notify's waiter list
    // (a lock each) twice per tick.
    let stopped = stop.notified();
    tokio::pin!(stopped);

    let end = loop {
        let event = tokio::select! {
            _ = &mut stopped => break EndReason::Requested,
            ev = events.recv() => match ev {
                Some(ev) => Some(ev),
                None => break EndReason::Failed,
            },
            _ = next_half_tick(&mut ticks, first_frame.watching(Instant::now().into_std())) => None,
            _ = poll.tick(), if ticks.is_none() => None,
        };
        let now = Instant::now().into_std();
        match event {
            Some(TransportEvent::Connected) => {
                person.link.on_connected();
                connected.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Some(TransportEvent::Interrupted) => person.link.on_interrupted(now),
            Some(TransportEvent::Closed(departure)) => {
                info!(call = %call_id, "call ended: {}", departure.why());
                break departure.into();
            }
            Some(TransportEvent::EventsOpened(outlet)) => person.events_opened(outlet),
            Some(TransportEvent::ClientText(text)) => match event_rate.check() {
                EventVerdict::Take => {
                    lifetime.on_activity(now);
                    conversation.on_client_text(&text, now)
                }
                verdict => {
                    metrics.client_event_limited();
                    if verdict == EventVerdict::RefuseAndSay {
                        conversation.error("rate_limited", &EventRate::message(), None);
                    }
                }
            },
            Some(TransportEvent::Dtmf(digit)) => {
                lifetime.on_activity(now);
                conversation.on_dtmf(digit, std::time::SystemTime::now())
            }
            Some(TransportEvent::Ending { reason, seconds_left }) => conversation.ending(reason, seconds_left),
            // The worker sizes the encoder's FEC from it (`voxrelay_media::PeerLoss`).
            Some(TransportEvent::PeerReport { fraction_lost }) => conversation.controls.push(Control::PeerReport { fraction_lost }),
            Some(TransportEvent::Refused { code, message, event_id }) => conversation.error(code, &message, event_id),
            None => {
                if let Some(overdue) = person.link.overdue(now) {
                    warn!(call = %call_id, "call ended: transport {overdue:?}");
                    break overdue.into();
                }
                match lifetime.poll(now, limits.for_session(conversation.config())) {
                    Some(Verdict::Warn { limit, left }) => conversation.ending(limit.label(), left.as_secs_f64().ceil() as u64),
                    Some(Verdict::End(limit)) => {
                        info!(call = %call_id, "call ended: {}", limit.label());
                        break limit.into();
                    }
                    None => {}
                }
                while let Ok(up) = uplink.pop() {
                    match up {
                        Uplink::Audio { start, pcm } => conversation.on_caller_audio(start, &pcm),
                        Uplink::Event(ev) => {
                            metrics.media_event(&ev);
                            first_frame.on_media(&ev);
                            match ev {
                                MediaEvent::SpeechStarted { .. } => lifetime.on_activity(now),
                                MediaEvent::PlaybackStarted { .. } => lifetime.on_agent_speaking(true, now),
                                MediaEvent::PlaybackFinished { .. } | MediaEvent::PlaybackCleared { .. } => {
                                    lifetime.on_agent_speaking(false, now)
                                }
                                _ => {}
                            }
                            // The worker reports a response's end after its last frame: those
                            // frames go out first (they are its audio deltas on a WebSocket).
                            if matches!(ev, MediaEvent::PlaybackFinished { .. }) {
                                person.send_egress(&mut egress, &mut conversation, &metrics).await;
                            }
                            conversation.on_media(ev, now);
                        }
                    }
                }
                conversation.poll_agent_notices();
                first_frame.fed(conversation.feed_agent(&mut agent_out, now), now);
                for d in conversation.agent_latencies.drain(..) {
                    metrics.agent_latency(d);
                }
                person.send_egress(&mut egress, &mut conversation, &metrics).await;
            }
        }
        // Barge-in: the carrier's buffered audio goes too, as soon as the cancel is decided.
        if std::mem::take(&mut conversation.flush_transport) {
            person.flush();
        }
        for c in conversation.controls.drain(..) {
            if control.push(c).is_err() {
                metrics.ring_overflow();
            }
        }
        person.publish(&mut conversation);
        history.take(&mut conversation.notes, |_| None);
    };
    // Ended by the server side (DELETE, the drain's grace ran out, a limit): a running response
    // is closed properly so the client's state machine does not wait for it forever.
    let by_server = matches!(end, EndReason::Requested | EndReason::IdleTimeout | EndReason::MaxCallDuration);
    let last = (by_server && person.opened()).then(|| {
        conversation.end_of_call();
        std::mem::take(&mut conversation.out)
    });
    history.take(&mut conversation.notes, |_| None);
    if end == EndReason::Requested {
        info!(call = %call_id, "call ended by request");
    }
    person.leave(&call_id, last).await;
    end
}

