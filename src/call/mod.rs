//! One WebRTC voice call on tokio: the task that owns the peer connection, the data channel
//! and the tokio ends of the call's rings to its audio worker. It moves data between them on a
//! short tick and leaves every decision to [`Conversation`] (protocol) and the worker (DSP).
//!
//! Teardown is one path: whatever ends the call (DELETE, drain, peer failure, timeout), the task
//! leaves its loop, closes the peer, drops the session's rings (the worker frees the slot on its
//! next tick) and removes itself from the registry.

mod conversation;
mod rtp_out;
mod tools;

pub use conversation::{Conversation, turn_config};
pub use rtp_out::RtpPacketizer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};
use voxrelay_media::{AgentFrame, AudioCodec, Control, OpusOut, RtpIn, Uplink};
use voxrelay_signaling::events::StampedEvent;
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::metrics::Metrics;
use crate::peer::{Peer, PeerEvent};
use crate::rtp::PacketSink;
use crate::telephony::PhoneEvent;

/// How often the call task moves frames and events. The worker produces one frame per 20 ms;
/// polling twice as often keeps the added latency at ≤ 10 ms without a wakeup per frame.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// A peer that never connects (offer posted, then abandoned) is dropped after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// ICE "disconnected" often recovers (a Wi-Fi blip); "failed" or this long disconnected ends it.
pub const DISCONNECTED_GRACE: Duration = Duration::from_secs(15);
/// Events wait for the data channel to open; past this many, the oldest are dropped (a client
/// that never opens the channel must not grow memory).
pub const MAX_PENDING_EVENTS: usize = 1024;
pub const EVENTS_LABEL: &str = "oai-events";

pub struct CallSetup {
    pub call_id: String,
    /// The WebRTC peer, closed at teardown; `None` for plain RTP.
    pub peer: Option<Peer>,
    pub peer_events: mpsc::UnboundedReceiver<PeerEvent>,
    /// Events that arrived while the answer was being built.
    pub early_events: Vec<PeerEvent>,
    pub sink: PacketSink,
    /// Transport tasks that end with the call (aborted at teardown).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub ssrc: u32,
    pub payload_type: u8,
    pub codec: AudioCodec,
    /// The worker session's rings. `ingress` is taken by whoever reads the caller's RTP: the
    /// first WebRTC audio track, or the plain-RTP reader task (then it is already gone).
    pub ingress: Option<rtrb::Producer<RtpIn>>,
    pub control: rtrb::Producer<Control>,
    pub agent_out: rtrb::Producer<AgentFrame>,
    pub egress: rtrb::Consumer<OpusOut>,
    pub uplink: rtrb::Consumer<Uplink>,
    pub conversation: Conversation,
    pub stop: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

enum End {
    Stopped,
    PeerGone(&'static str),
    Timeout(&'static str),
}

pub async fn run_call(setup: CallSetup) {
    let CallSetup {
        call_id,
        peer,
        mut peer_events,
        early_events,
        sink,
        tasks,
        ssrc,
        payload_type,
        codec,
        mut ingress,
        mut control,
        mut agent_out,
        mut egress,
        mut uplink,
        mut conversation,
        stop,
        metrics,
    } = setup;
    let mut packetizer = RtpPacketizer::new(ssrc, payload_type, crate::peer::samples_per_frame(codec));
    let mut dc: Option<Arc<dyn DataChannel>> = None;
    // Event sockets: the plain-RTP session's events WebSocket and operators watching the call.
    let mut watchers: Vec<mpsc::UnboundedSender<String>> = Vec::new();
    let mut opened = false;
    let mut pending: Vec<StampedEvent> = Vec::new();
    let mut connected = false;
    let started = Instant::now();
    let mut disconnected_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut early = early_events.into_iter();

    let end = loop {
        let event = if let Some(ev) = early.next() {
            Some(ev)
        } else {
            tokio::select! {
                _ = stop.notified() => break End::Stopped,
                ev = peer_events.recv() => match ev {
                    Some(ev) => Some(ev),
                    None => break End::PeerGone("peer connection dropped"),
                },
                _ = tick.tick() => None,
            }
        };
        match event {
            Some(PeerEvent::Track(remote)) => {
                if let Some(producer) = ingress.take() {
                    tokio::spawn(read_inbound(remote, producer, payload_type, metrics.clone()));
                }
            }
            Some(PeerEvent::DataChannelOpen(channel)) => {
                if channel.label().await.is_ok_and(|l| l == EVENTS_LABEL) && dc.is_none() {
                    dc = Some(channel);
                }
            }
            Some(PeerEvent::EventSocket(tx)) => watchers.push(tx),
            // A browser hanging up (pc.close(), a closed tab) closes the events channel and
            // sends DTLS close_notify, but the connection state stays "connected" until ICE
            // times out; the events channel closing is the prompt signal.
            Some(PeerEvent::DataChannelClosed(label)) if label == EVENTS_LABEL && dc.is_some() => {
                break End::PeerGone("the peer closed the events channel");
            }
            Some(PeerEvent::DataChannelText(text)) => conversation.on_client_text(&text, Instant::now().into_std()),
            Some(PeerEvent::Phone(PhoneEvent::Dtmf(digit))) => conversation.on_dtmf(digit, std::time::SystemTime::now()),
            Some(PeerEvent::Phone(PhoneEvent::Error { code, message })) => conversation.error(code, &message, None),
            Some(PeerEvent::State(state)) => match state {
                RTCPeerConnectionState::Connected => {
                    connected = true;
                    disconnected_since = None;
                }
                RTCPeerConnectionState::Disconnected => disconnected_since = Some(Instant::now()),
                RTCPeerConnectionState::Failed => break End::PeerGone("ICE/DTLS failed"),
                RTCPeerConnectionState::Closed => break End::PeerGone("peer closed"),
                _ => {}
            },
            Some(_) => {}
            None => {
                let now = Instant::now().into_std();
                if !connected && started.elapsed() > CONNECT_TIMEOUT {
                    break End::Timeout("peer never connected");
                }
                if disconnected_since.is_some_and(|t| t.elapsed() > DISCONNECTED_GRACE) {
                    break End::Timeout("peer disconnected");
                }
                while let Ok(up) = uplink.pop() {
                    match up {
                        Uplink::Audio { start_ms, pcm } => conversation.on_caller_audio(start_ms, &pcm),
                        Uplink::Event(ev) => {
                            metrics.media_event(&ev);
                            conversation.on_media(ev, now);
                        }
                    }
                }
                conversation.poll_agent_notices();
                while agent_out.slots() > 0 {
                    let Some(frame) = conversation.next_agent_frame(now) else { break };
                    let _ = agent_out.push(frame);
                }
                for d in conversation.agent_latencies.drain(..) {
                    metrics.agent_latency(d);
                }
                while let Ok(frame) = egress.pop() {
                    if conversation.on_egress_frame(frame.voiced) && connected && (frame.voiced || sink.sends_silence()) {
                        if sink.send(packetizer.packetize(&frame)).await {
                            metrics.rtp_out(frame.len as u64);
                        }
                    }
                }
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
        if !opened && (dc.is_some() || !watchers.is_empty()) {
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
            deliver(&call_id, dc.as_deref(), &mut watchers, pending.drain(..)).await;
        }
    };
    if matches!(end, End::Stopped) && opened {
        // Ended by the server side (DELETE, or the drain's grace ran out): a running response
        // is closed properly so the client's state machine does not wait for it forever.
        conversation.end_of_call();
        let last = std::mem::take(&mut conversation.out);
        deliver(&call_id, dc.as_deref(), &mut watchers, last.into_iter()).await;
        if let Some(channel) = &dc {
            flush(channel.as_ref()).await;
        }
    }
    match end {
        End::Stopped => info!(call = %call_id, "call ended by request"),
        End::PeerGone(why) => info!(call = %call_id, "call ended: {why}"),
        End::Timeout(why) => warn!(call = %call_id, "call ended: {why}"),
    }
    for t in tasks {
        t.abort();
    }
    if let Some(peer) = peer {
        if let Err(e) = peer.close().await {
            debug!(call = %call_id, "closing peer: {e}");
        }
    }
}

/// Sends events to the data channel and every watcher, dropping watchers that went away.
async fn deliver(call_id: &str, dc: Option<&dyn DataChannel>, watchers: &mut Vec<mpsc::UnboundedSender<String>>, events: impl Iterator<Item = StampedEvent>) {
    for ev in events {
        let text = ev.to_json();
        if let Some(channel) = dc {
            if let Err(e) = channel.send_text(&text).await {
                debug!(call = %call_id, "data channel send failed: {e}");
            }
        }
        watchers.retain(|w| w.send(text.clone()).is_ok());
    }
}

/// Closing the peer aborts SCTP at once; the last events are worth a short wait until the peer
/// has acknowledged them (bounded: a gone peer never acknowledges).
async fn flush(channel: &dyn DataChannel) {
    const FLUSH_WAIT: Duration = Duration::from_millis(500);
    let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
    while channel.outstanding_bytes().await.is_ok_and(|n| n > 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads the caller's RTP and hands Opus payloads to the worker. Never blocks: a full ring
/// drops the packet and counts it (the jitter buffer conceals the gap).
async fn read_inbound(
    track: Arc<dyn TrackRemote>,
    mut ingress: rtrb::Producer<RtpIn>,
    payload_type: u8,
    metrics: Arc<Metrics>,
) {
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else { continue };
        metrics.rtp_in(packet.payload.len() as u64);
        if packet.header.payload_type != payload_type {
            continue;
        }
        let Some(frame) = RtpIn::new(packet.header.sequence_number, packet.header.timestamp, &packet.payload) else {
            continue;
        };
        if ingress.push(frame).is_err() {
            metrics.ring_overflow();
        }
    }
}
