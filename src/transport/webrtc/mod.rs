//! The WebRTC transport over webrtc-rs 0.21: the only module that knows webrtc-rs types.
//!
//! A call's peer connection is answered here ([`answer`]); a driver task then turns the library's
//! callbacks ([`PeerEvent`]) into [`TransportEvent`]s, reads the caller's first audio track
//! into the worker's ingress ring, and writes the call's events to the `oai-events` data
//! channel. [`TrackSink`] sends the worker's frames as RTP on the outbound track (SRTP by the
//! stack); [`PeerCloser`] takes it all down.
//!
//! - `peer` — building peer connections (codecs, sockets, ICE-TCP), shared by both sides.
//! - `client` — the offering side: the client the load generator and the tests use.
//! - `rtc_loop` — 1:1 calls and room participants on shared loops: one socket and one task for
//!   many connections.

pub mod client;
mod client_audio;
mod ice;
mod ice_client;
mod peer;
mod reports;
mod room;
pub mod room_client;
mod rtc_loop;

pub use ice::IceControl;
pub use room::{RoomPeer, SendError, SlotSink, answer_room};
pub use rtc_loop::{LoopCloser, LoopSink, RtcLoops};

pub use peer::{
    GATHER_TIMEOUT, OPUS_PAYLOAD_TYPE, PortAllocator, Sockets, audio_stream_track, default_payload_type, rtp_codec, samples_per_frame,
};
use peer::{Peer, PeerEvent, PeerEvents, audio_track, build_peer, wait_gathered};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, warn};
use voxrelay_media::{AudioCodec, EncodedFrame, RtpIn};
use voxrelay_signaling::{ApiError, CallId};
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

use super::packetizer::RtpPacketizer;
use super::{Closer, Departure, Inbound, PacketSink, Transport, TransportEvent, TransportKind, ingest_rtp};
use crate::metrics::Metrics;

/// The data channel that carries the Realtime events (PROTOCOL.md §2).
pub const EVENTS_LABEL: &str = "oai-events";
/// Closing the peer aborts SCTP at once; the last events get this long to be acknowledged.
/// webrtc-rs warnings printed on healthy calls (DTLS without a server name, ICE pinging before
/// the first pair, an SCTP INIT from peers that open the association from both ends, as aiortc
/// does, and an event written to a data channel the peer closed a moment before, as a hang-up
/// races the call's last events), as log filter directives at `error`. Calls whose ICE or DTLS
/// really fail are logged by voxrelay's own code.
pub const QUIET_LOG_TARGETS: &str =
    "rtc_dtls::config=error,rtc_ice::agent=error,rtc_sctp::endpoint=error,rtc::peer_connection::handler=error";

const FLUSH_WAIT: Duration = Duration::from_millis(500);

/// Answers `offer` on a new peer connection bound to `sockets`, sending `codec` with the
/// offer's `payload_type`. Returns the transport and the answer SDP (all candidates gathered:
/// we do not trickle).
pub async fn answer(sockets: Sockets, offer: String, codec: AudioCodec, inbound: Inbound) -> Result<(Transport, String), ApiError> {
    let payload_type = inbound.payload_type;
    let Some(addr) = sockets.udp else { return Err(ApiError::internal("no UDP media socket was allocated")) };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let peer = build_peer(sockets, tx).await.map_err(|e| {
        warn!("building peer connection on {addr}: {e}");
        ApiError::overloaded("could not open a media socket")
    })?;
    let (track, ssrc) = audio_track("voxrelay", codec);
    let negotiated = match peer.add_track(track.clone()).await {
        Ok(_) => negotiate(&peer, &mut rx, offer, &[]).await,
        Err(e) => Err(ApiError::internal(format!("adding the outbound track: {e}"))),
    };
    let (early, local_sdp) = match negotiated {
        Ok(n) => n,
        Err(e) => {
            let _ = peer.close().await;
            return Err(e);
        }
    };
    let (inject, events) = mpsc::unbounded_channel();
    let closer = PeerCloser { peer: peer.clone(), events_channel: Arc::new(Mutex::new(None)) };
    let (to_call, channel) = (inject.clone(), closer.events_channel.clone());
    let (reported, reports_to_call) = (track.clone(), inject.clone());
    let transport = Transport {
        kind: TransportKind::WebRtc,
        codec,
        events,
        inject,
        sink: PacketSink::WebRtc(TrackSink { track, packetizer: RtpPacketizer::new(ssrc, payload_type, samples_per_frame(codec)) }),
        heard: None,
        start_reader: Box::new(move |_call_id, ingress, metrics| {
            // The caller's first audio track is the call's input; later ones are ignored.
            let mut ingress = Some(ingress);
            let on_track: OnTrack = Box::new(move |remote| {
                if let Some(producer) = ingress.take() {
                    tokio::spawn(read_track(remote, producer, inbound, metrics.clone()));
                }
            });
            vec![
                tokio::spawn(drive(early, rx, to_call, channel, EVENTS_LABEL, on_track)),
                tokio::spawn(reports::forward_reports(reported, ssrc, reports_to_call)),
            ]
        }),
        closer: Closer::WebRtc(closer),
        ice: Some(IceControl::driver(peer.clone())),
    };
    Ok((transport, local_sdp))
}

/// Applies `offer`, binds `late` tracks to the offer's m-lines (in order, one each), answers,
/// and waits for ICE gathering. Returns the events seen meanwhile and the answer SDP. On error
/// the caller closes the peer.
pub(super) async fn negotiate(
    peer: &Peer,
    rx: &mut mpsc::UnboundedReceiver<PeerEvent>,
    offer: String,
    late: &[Arc<TrackLocalStaticRTP>],
) -> Result<(Vec<PeerEvent>, String), ApiError> {
    let offer = rtc::peer_connection::sdp::RTCSessionDescription::offer(offer)
        .map_err(|e| ApiError::bad_request("invalid_offer", format!("malformed SDP offer: {e}")))?;
    peer.set_remote_description(offer)
        .await
        .map_err(|e| ApiError::bad_request("invalid_offer", format!("the SDP offer was not accepted: {e}")))?;
    for track in late {
        peer.add_track(track.clone()).await.map_err(|e| ApiError::internal(format!("adding an outbound track: {e}")))?;
    }
    let answer =
        peer.create_answer(None).await.map_err(|e| ApiError::bad_request("invalid_offer", format!("no answer for this offer: {e}")))?;
    peer.set_local_description(answer).await.map_err(|e| ApiError::internal(format!("setting the local description: {e}")))?;
    let early = wait_gathered(rx).await.map_err(ApiError::internal)?;
    let local = peer.local_description().await.ok_or_else(|| ApiError::internal("no local description after gathering"))?;
    Ok((early, local.sdp))
}

/// The events data channel and the task writing to it, once it opened.
type EventsChannel = Arc<Mutex<Option<(Arc<dyn DataChannel>, tokio::task::JoinHandle<()>)>>>;

/// What to do with each remote track as it arrives.
type OnTrack = Box<dyn FnMut(Arc<dyn TrackRemote>) + Send>;

/// Turns the peer connection's events into transport events, for the life of the call: the
/// data channel labelled `events_label` carries the events, tracks go to `on_track`.
async fn drive(
    early: Vec<PeerEvent>,
    raw: mpsc::UnboundedReceiver<PeerEvent>,
    to_call: mpsc::UnboundedSender<TransportEvent>,
    events_channel: EventsChannel,
    events_label: &'static str,
    mut on_track: OnTrack,
) {
    let mut raw = PeerEvents::new(early, raw);
    let mut events_open = false;
    loop {
        let Some(ev) = raw.next().await else {
            let _ = to_call.send(TransportEvent::Closed(Departure::Failed("peer connection dropped")));
            return;
        };
        let event = match ev {
            PeerEvent::Track(remote) => {
                on_track(remote);
                None
            }
            PeerEvent::DataChannelOpen(channel) => {
                if events_open || !channel.label().await.is_ok_and(|l| l == events_label) {
                    continue;
                }
                events_open = true;
                let (outlet, texts) = mpsc::unbounded_channel();
                let writer = tokio::spawn(write_events(channel.clone(), texts));
                *events_channel.lock().unwrap_or_else(|p| p.into_inner()) = Some((channel, writer));
                Some(TransportEvent::EventsOpened(outlet))
            }
            PeerEvent::DataChannelText(text) => Some(TransportEvent::ClientText(text)),
            PeerEvent::DataChannelClosed(label) if label == events_label && events_open => Some(events_channel_closed()),
            PeerEvent::State(state) => state_event(state),
            PeerEvent::GatheringComplete | PeerEvent::DataChannelClosed(_) => None,
        };
        if let Some(event) = event
            && to_call.send(event).is_err()
        {
            return;
        }
    }
}

/// What a call hears of its peer connection's state (both the driver and the loops).
pub(crate) fn state_event(state: RTCPeerConnectionState) -> Option<TransportEvent> {
    match state {
        RTCPeerConnectionState::Connected => Some(TransportEvent::Connected),
        RTCPeerConnectionState::Disconnected => Some(TransportEvent::Interrupted),
        RTCPeerConnectionState::Failed => Some(TransportEvent::Closed(Departure::Failed("ICE/DTLS failed"))),
        RTCPeerConnectionState::Closed => Some(TransportEvent::Closed(Departure::HungUp("peer closed"))),
        _ => None,
    }
}

/// A browser hanging up (pc.close(), a closed tab) closes the events channel and sends DTLS
/// close_notify, but the connection state stays "connected" until ICE times out; the events
/// channel closing is the prompt signal.
pub(crate) fn events_channel_closed() -> TransportEvent {
    TransportEvent::Closed(Departure::HungUp("the peer closed the events channel"))
}

/// Writes the call's events to the data channel, in order, until the call drops its outlet.
async fn write_events(channel: Arc<dyn DataChannel>, mut texts: mpsc::UnboundedReceiver<String>) {
    while let Some(text) = texts.recv().await {
        if let Err(e) = channel.send_text(&text).await {
            debug!("data channel send failed: {e}");
        }
    }
}

/// Reads the caller's RTP and hands payloads to the worker. Never blocks: a full ring drops
/// the packet and counts it (the jitter buffer conceals the gap).
async fn read_track(track: Arc<dyn TrackRemote>, mut ingress: rtrb::Producer<RtpIn>, inbound: Inbound, metrics: Arc<Metrics>) {
    while let Some(event) = track.poll().await {
        if let TrackRemoteEvent::OnRtpPacket(packet) = event {
            ingest_rtp(&packet, inbound, &mut ingress, &metrics);
        }
    }
}

/// The call's outbound track: frames become RTP packets the stack encrypts and sends.
pub struct TrackSink {
    track: Arc<TrackLocalStaticRTP>,
    packetizer: RtpPacketizer,
}

impl TrackSink {
    pub async fn send(&mut self, frame: &EncodedFrame) -> bool {
        self.track.write_rtp(self.packetizer.packetize(frame)).await.is_ok()
    }
}

/// Closes a call's peer connection, after the last events when asked.
pub struct PeerCloser {
    peer: Peer,
    events_channel: EventsChannel,
}

impl PeerCloser {
    pub async fn close(self, call: Option<&CallId>, flush_events: bool) {
        let opened = self.events_channel.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((channel, writer)) = opened {
            if flush_events {
                // The call has dropped its outlet: the writer ends once it has sent everything.
                let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
                let _ = tokio::time::timeout_at(deadline, writer).await;
                while channel.outstanding_bytes().await.is_ok_and(|n| n > 0) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } else {
                writer.abort();
            }
        }
        if let Err(e) = self.peer.close().await {
            debug!(call = call.map(CallId::as_str), "closing peer: {e}");
        }
    }
}
