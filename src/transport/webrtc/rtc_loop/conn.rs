//! One connection on a loop: the sans-IO peer connection that answers a 1:1 caller's or a room
//! participant's offer, and what becomes of what it reports (the peer's RTP into the worker's
//! ring or the room's queue, state and data-channel texts as [`TransportEvent`]s, datagrams to
//! the wire).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use rtc::data_channel::RTCDataChannelId;
use rtc::ice::tcp_type::TcpType;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::TaggedBytesMut;
use tokio::sync::mpsc;
use voxrelay_media::{AudioCodec, RtpIn};
use voxrelay_signaling::ApiError;
use voxrelay_signaling::room_wire::ROOM_EVENTS_LABEL;
use voxrelay_signaling::sdp::AudioLine;

use super::super::EVENTS_LABEL;
use super::super::peer::{ANSWER_CODECS, PeerFeatures, ROOM_ICE_TIMEOUTS, audio_stream_track, client_text, media_engine};
use super::super::reports::reported_loss;
use super::super::room::SlotSink;
use super::{Command, ConnKey};
use crate::metrics::Metrics;
use crate::transport::{DeliverRtp, EventOutlet, Inbound, TransportEvent, ingest_rtp, packet_in};

/// The local addresses a loop's connections are reached at: one UDP socket per address of the
/// media IP (every interface's, for a wildcard), all on one port number.
#[derive(Clone, Debug)]
pub(crate) struct LocalAddrs {
    pub udp: Vec<SocketAddr>,
    /// Passive ICE-TCP (RFC 6544) candidates, when the loop listens for it: the same addresses,
    /// on the TCP port of the same number.
    pub tcp: Vec<SocketAddr>,
}

/// Where the call's events go once the events channel opened: a task forwards the texts the
/// call writes to its outlet into the loop, in order. The closer waits for it to finish.
pub(super) struct EventsWriter {
    pub key: ConnKey,
    pub to_loop: mpsc::WeakUnboundedSender<Command>,
    pub task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl EventsWriter {
    fn open(&self) -> EventOutlet {
        let (outlet, mut texts) = mpsc::unbounded_channel::<String>();
        let (key, to_loop) = (self.key, self.to_loop.clone());
        let task = tokio::spawn(async move {
            while let Some(text) = texts.recv().await {
                let Some(to_loop) = to_loop.upgrade() else { return };
                if to_loop.send(Command::Text { key, text }).is_err() {
                    return;
                }
            }
        });
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        outlet
    }
}

/// What a connection carries.
pub(crate) enum Shape<'a> {
    /// A 1:1 call: one outbound track of `codec`, events on `oai-events`.
    Call { codec: AudioCodec },
    /// A room participant (PROTOCOL.md §4): an outbound Opus track per audio m-line of its offer
    /// (those it receives on are its slots), events on `room-events`, and ICE that gives up on a
    /// vanished network within seconds (`ROOM_ICE_TIMEOUTS`).
    Room { lines: &'a [AudioLine] },
}

/// Where the peer's RTP goes once its call or room starts reading.
pub(crate) enum Input {
    /// A 1:1 call: the worker session's ring (decoded there).
    Ring(rtrb::Producer<RtpIn>),
    /// A room participant: the room's queue (forwarded, never decoded).
    Forward(DeliverRtp),
}

/// A connection answered off the loop, before the loop adopts it.
pub(super) struct Answered {
    pub conn: Conn,
    /// The answer SDP, with its candidates (we do not trickle).
    pub sdp: String,
    /// The outbound streams, in the order of the connection's senders (one for a call; a room
    /// participant's slots).
    pub streams: Vec<SlotSink>,
}

pub(crate) struct Conn {
    pub pc: RTCPeerConnection,
    /// The outbound tracks `Media::Rtp` names by index.
    senders: Vec<RTCRtpSenderId>,
    inbound: Inbound,
    /// The peer's first audio track: its packets are the input, later ones are ignored.
    track: Option<String>,
    /// Where they go, once the call or room started reading.
    input: Option<(Input, Arc<Metrics>)>,
    /// The data channel that carries the events.
    label: &'static str,
    pub events: mpsc::UnboundedSender<TransportEvent>,
    pub events_channel: Option<RTCDataChannelId>,
    /// The call's closer holds the other end: once it is gone without closing (a call that
    /// panicked), nothing else would, so the loop closes the connection.
    pub owner: std::sync::Weak<()>,
    writer: EventsWriter,
    /// The ufrag the loop routes STUN requests by (a restart replaces it).
    pub ufrag: String,
    /// A call's outbound stream, whose loss the peer's reports give the call.
    reported_ssrc: Option<u32>,
}

/// Answers `offer` with a peer connection of `shape`, reachable at `local`.
pub(super) fn answer(
    offer: String,
    shape: Shape<'_>,
    inbound: Inbound,
    local: &LocalAddrs,
    events: mpsc::UnboundedSender<TransportEvent>,
    writer: EventsWriter,
    now: Instant,
) -> Result<Answered, ApiError> {
    let internal = |what: &str, e: rtc::shared::error::Error| ApiError::internal(format!("{what}: {e}"));
    // The same codecs, audio levels, interceptors and ICE timers as the driver's peers.
    let codecs: &[AudioCodec] = match shape {
        Shape::Call { .. } => &ANSWER_CODECS,
        Shape::Room { .. } => &[AudioCodec::Opus],
    };
    let features = PeerFeatures { audio_levels: true, loss_reports: matches!(shape, Shape::Call { .. }) };
    let (engine, registry) = media_engine(codecs, features).map_err(|e| internal("the media engine", e))?;
    let mut builder = rtc::peer_connection::RTCPeerConnectionBuilder::new().with_media_engine(engine).with_interceptor_registry(registry);
    if let Shape::Room { .. } = shape {
        let t = ROOM_ICE_TIMEOUTS;
        builder = builder.with_setting_engine(
            SettingEngineBuilder::new().with_ice_timeouts(Some(t.disconnected), Some(t.failed), Some(t.keepalive)).build(),
        );
    }
    let mut pc = builder.build(now).map_err(|e| internal("building the peer connection", e))?;
    let offer =
        RTCSessionDescription::offer(offer).map_err(|e| ApiError::bad_request("invalid_offer", format!("malformed SDP offer: {e}")))?;
    let invalid = |e: rtc::shared::error::Error| ApiError::bad_request("invalid_offer", format!("the SDP offer was not accepted: {e}"));
    let (senders, streams, label) = match shape {
        Shape::Call { codec } => {
            let (track, ssrc) = audio_stream_track("voxrelay", codec);
            let sender = pc.add_track(track).map_err(|e| internal("adding the outbound track", e))?;
            pc.set_remote_description(now, offer).map_err(invalid)?;
            (vec![sender], vec![SlotSink { mid: String::new(), ssrc }], EVENTS_LABEL)
        }
        Shape::Room { lines } => {
            // After the offer, so each track binds to the offer's m-line of its index.
            pc.set_remote_description(now, offer).map_err(invalid)?;
            let (mut senders, mut streams) = (Vec::new(), Vec::new());
            for (i, line) in lines.iter().enumerate() {
                let (track, ssrc) = audio_stream_track(&format!("slot{i}"), AudioCodec::Opus);
                let sender = pc.add_track(track).map_err(|e| internal("adding an outbound track", e))?;
                if line.direction.receives() {
                    senders.push(sender);
                    streams.push(SlotSink { mid: line.mid.clone().unwrap_or_else(|| i.to_string()), ssrc });
                }
            }
            (senders, streams, ROOM_EVENTS_LABEL)
        }
    };
    add_host_candidates(&mut pc, local)?;
    let answer = pc.create_answer(None).map_err(|e| ApiError::bad_request("invalid_offer", format!("no answer for this offer: {e}")))?;
    pc.set_local_description(now, answer).map_err(|e| internal("setting the local description", e))?;
    let sdp = pc.local_description().ok_or_else(|| ApiError::internal("no local description after answering"))?.sdp;
    let ufrag = voxrelay_signaling::sdpfrag::sdp_attribute(&sdp, "ice-ufrag").unwrap_or_default().to_string();
    let conn = Conn {
        pc,
        senders,
        inbound,
        track: None,
        input: None,
        label,
        events,
        events_channel: None,
        owner: std::sync::Weak::new(),
        writer,
        ufrag,
        reported_ssrc: match shape {
            Shape::Call { .. } => streams.first().map(|s| s.ssrc),
            Shape::Room { .. } => None,
        },
    };
    Ok(Answered { conn, sdp, streams })
}

/// The loop's host candidates: its UDP sockets, and its ICE-TCP listener as passive candidates.
fn add_host_candidates(pc: &mut RTCPeerConnection, local: &LocalAddrs) -> Result<(), ApiError> {
    let host = |network: &str, addr: SocketAddr, tcp_type| {
        let config = CandidateHostConfig {
            base_config: CandidateConfig {
                network: network.to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            tcp_type,
        };
        config.new_candidate_host().and_then(|c| RTCIceCandidate::from(&c).to_json())
    };
    let udp = local.udp.iter().map(|&addr| host("udp", addr, TcpType::Unspecified));
    let candidates: Vec<_> = udp.chain(local.tcp.iter().map(|&addr| host("tcp", addr, TcpType::Passive))).collect();
    for candidate in candidates {
        let init = candidate.map_err(|e| ApiError::internal(format!("a host candidate: {e}")))?;
        pc.add_local_candidate(init).map_err(|e| ApiError::internal(format!("adding a host candidate: {e}")))?;
    }
    Ok(())
}

impl Conn {
    /// The call's or room's reader starts: the peer's packets go to `input` from now on.
    pub fn attach(&mut self, input: Input, metrics: Arc<Metrics>) {
        self.input = Some((input, metrics));
    }

    /// Sends one RTP packet on outbound track `sender` (SRTP by the core).
    pub fn send_rtp(&mut self, now: Instant, sender: usize, packet: rtc::rtp::Packet) -> bool {
        let Some(&id) = self.senders.get(sender) else { return false };
        self.pc.rtp_sender(id).is_some_and(|mut s| s.write_rtp(now, packet).is_ok())
    }

    /// Sends one of the call's events on the events channel.
    pub fn send_text(&mut self, now: Instant, text: String) {
        let Some(id) = self.events_channel else { return };
        if let Some(mut channel) = self.pc.data_channel(id)
            && let Err(e) = channel.send_text(now, text)
        {
            tracing::debug!("data channel send failed: {e}");
        }
    }

    /// An ICE restart: the client's offer with new credentials, answered with new ones of ours.
    /// Returns the local SDP, candidates in it; on error, what failed and why.
    pub fn renegotiate(&mut self, offer: String, local: &LocalAddrs, now: Instant) -> Result<String, (&'static str, String)> {
        let offer = RTCSessionDescription::offer(offer).map_err(|e| ("the renewed offer", e.to_string()))?;
        self.pc.set_remote_description(now, offer).map_err(|e| ("applying the new credentials", e.to_string()))?;
        let answer = self.pc.create_answer(None).map_err(|e| ("answering", e.to_string()))?;
        self.pc.set_local_description(now, answer).map_err(|e| ("applying the answer", e.to_string()))?;
        let described =
            |pc: &RTCPeerConnection| pc.local_description().map(|d| d.sdp).ok_or(("gathering", "no local description".to_string()));
        let sdp = described(&self.pc)?;
        if sdp.contains("a=candidate:") {
            return Ok(sdp);
        }
        add_host_candidates(&mut self.pc, local).map_err(|e| ("gathering", e.message))?;
        described(&self.pc)
    }

    /// Bytes the events channel has not had acknowledged yet.
    pub fn outstanding(&mut self) -> usize {
        self.events_channel.and_then(|id| self.pc.data_channel(id)).map_or(0, |c| c.outstanding_bytes())
    }

    /// Feeds one datagram (or ICE-TCP frame) to the core.
    pub fn receive(&mut self, message: TaggedBytesMut) {
        if let Err(e) = self.pc.handle_read(message) {
            tracing::trace!("handle_read: {e}");
        }
    }

    /// Drains what the core has for the call and for the wire (`send`); returns the next
    /// deadline.
    pub fn service(&mut self, send: &mut impl FnMut(TaggedBytesMut)) -> Option<Instant> {
        loop {
            let mut progressed = false;
            while let Some(event) = self.pc.poll_event() {
                progressed = true;
                self.on_event(event);
            }
            while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
                progressed = true;
                self.on_message(message);
            }
            if !progressed {
                break;
            }
        }
        while let Some(out) = self.pc.poll_write() {
            send(out);
        }
        self.pc.poll_timeout()
    }

    fn on_message(&mut self, message: RTCMessage) {
        match message {
            RTCMessage::RtpPacket(track, packet) => {
                if self.track.is_none() {
                    self.track = Some(track.clone());
                }
                if self.track.as_ref() != Some(&track) {
                    return;
                }
                match &mut self.input {
                    Some((Input::Ring(ingress), metrics)) => ingest_rtp(&packet, self.inbound, ingress, metrics),
                    Some((Input::Forward(deliver), metrics)) => {
                        if let Some(p) = packet_in(&packet, self.inbound, metrics) {
                            deliver(p);
                        }
                    }
                    None => {}
                }
            }
            RTCMessage::RtcpPacket(_, packets) => {
                if let Some(fraction_lost) = self.reported_ssrc.and_then(|ssrc| reported_loss(&packets, ssrc)) {
                    let _ = self.events.send(TransportEvent::PeerReport { fraction_lost });
                }
            }
            RTCMessage::DataChannelMessage(id, message) => {
                // A message may be read before its channel's open event is: open it here.
                self.open_events_channel(id);
                if self.events_channel == Some(id) {
                    let _ = self.events.send(TransportEvent::ClientText(client_text(&message.data)));
                }
            }
            _ => {}
        }
    }

    fn on_event(&mut self, event: RTCPeerConnectionEvent) {
        let event = match event {
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                if self.track.is_none() {
                    self.track = Some(init.track_id);
                }
                None
            }
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(id)) => {
                self.open_events_channel(id);
                None
            }
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnClose(id)) if self.events_channel == Some(id) => {
                Some(super::super::events_channel_closed())
            }
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => super::super::state_event(state),
            _ => None,
        };
        if let Some(event) = event {
            let _ = self.events.send(event);
        }
    }

    /// The first channel with the events label carries the events; others are ignored.
    fn open_events_channel(&mut self, id: RTCDataChannelId) {
        if self.events_channel.is_some() || self.pc.data_channel(id).is_none_or(|c| c.label() != self.label) {
            return;
        }
        self.events_channel = Some(id);
        let _ = self.events.send(TransportEvent::EventsOpened(self.writer.open()));
    }
}

/// A frame read from an ICE-TCP stream or a datagram, tagged for the core.
pub(super) fn tagged(now: Instant, local: SocketAddr, peer: SocketAddr, tcp: bool, data: &[u8]) -> TaggedBytesMut {
    use rtc::shared::{TransportContext, TransportProtocol};
    let transport_protocol = if tcp { TransportProtocol::TCP } else { TransportProtocol::UDP };
    TaggedBytesMut {
        now,
        transport: TransportContext { local_addr: local, peer_addr: peer, ecn: None, transport_protocol },
        message: BytesMut::from(data),
    }
}
