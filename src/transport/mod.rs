//! Transports: every way a person's audio reaches the server and goes back. Each transport knows
//! its wire and nothing else; the call task above it sees the same three things whatever the
//! wire is:
//!
//! 1. **media in**: the transport's reader pushes the person's packets, tagged with their source
//!    (SSRC, sequence, timestamp, audio level; [`RtpIn`]), into the worker session's ingress
//!    ring; it never waits on the ring (a full ring drops and counts).
//! 2. **media out**: a [`PacketSink`] takes the worker's encoded frames and puts them on the
//!    wire (RTP over SRTP, plain RTP, carrier `media` messages).
//! 3. **lifecycle and control**: one ordered stream of [`TransportEvent`]s (connected,
//!    interrupted, closed with a reason, client events, keypad digits, refused input).
//!
//! - `webrtc` — peer connections over webrtc-rs (the only module that knows its types): offer
//!   → answer, the track reader, the `oai-events` data channel; also the client side
//!   (`webrtc::client`) the load generator and tests use.
//! - `plain_rtp` — RTP over UDP without DTLS/SRTP (PROTOCOL.md §7), comedia.
//! - `phone` — carrier media streams (Twilio Media Streams; PROTOCOL.md §5).
//! - `ws` — Realtime sessions over WebSocket (PROTOCOL.md §8): audio in and out as events.
//! - `impair` — loss, delay and reordering the project's RTP client applies to what it sends.
//! - `link` — a participant's connection state and when the server gives up on it.
//! - `packetizer` — encoded frames → RTP packets (timestamps from the worker's frame index).
//! - `shared_udp` — one UDP socket for many peer connections: routing and deadlines (issue 20).
//!
//! Transports read packets and messages from the network: no `unwrap`/`expect` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod impair;
pub mod link;
pub mod packetizer;
pub mod phone;
pub mod plain_rtp;
pub mod shared_udp;
pub mod webrtc;
pub mod ws;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::mpsc;
use voxrelay_media::{AudioCodec, AudioLevel, EncodedFrame, RtpIn};
use voxrelay_signaling::CallId;

use crate::metrics::Metrics;
pub use link::Departure;

/// How a call reaches the server (ids, `/metrics` labels, admission cost, which events URL may
/// attach).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    WebRtc,
    PlainRtp,
    Twilio,
    /// A Realtime session over WebSocket (PROTOCOL.md §8).
    WebSocket,
}

impl TransportKind {
    pub const ALL: [TransportKind; 4] = [TransportKind::WebRtc, TransportKind::PlainRtp, TransportKind::Twilio, TransportKind::WebSocket];

    /// The `/metrics` label.
    pub fn label(self) -> &'static str {
        match self {
            TransportKind::WebRtc => "webrtc",
            TransportKind::PlainRtp => "rtp",
            TransportKind::Twilio => "twilio",
            TransportKind::WebSocket => "websocket",
        }
    }

    /// The prefix of a call id on this transport.
    pub fn id_prefix(self) -> &'static str {
        match self {
            TransportKind::WebRtc => "rtc_",
            TransportKind::PlainRtp => "rtp_",
            TransportKind::Twilio => "tel_",
            TransportKind::WebSocket => "ws_",
        }
    }
}

/// Where a call's server events (JSON text, one event per message) are sent: the data channel,
/// an events WebSocket, an operator's watch socket.
pub type EventOutlet = mpsc::UnboundedSender<String>;

/// What happened on a transport, in order.
#[derive(Debug)]
pub enum TransportEvent {
    /// Media can flow (ICE + DTLS up; a plain-RTP peer's first packet; a phone stream started).
    Connected,
    /// Connectivity was lost but may come back (ICE "disconnected": often a Wi-Fi blip).
    Interrupted,
    /// The far end is gone (hung up or failed); the call ends.
    Closed(Departure),
    /// A place to send the call's events opened. The first one opening starts the session
    /// (`session.created`).
    EventsOpened(EventOutlet),
    /// A Realtime client event (JSON text) from any of the call's event channels.
    ClientText(String),
    /// A keypad digit (phone transports).
    Dtmf(char),
    /// Input the transport refused (a malformed carrier message, a bad `append`), for the
    /// call's `error` events; `event_id` is the refused client event's, when it had one.
    Refused { code: &'static str, message: String, event_id: Option<String> },
    /// The server will end the call (its drain): the client is told the seconds left.
    Ending { reason: &'static str, seconds_left: u64 },
    /// An RTCP report from the peer about the call's outbound audio: the fraction of its packets
    /// lost since the previous report (RFC 3550 §6.4.1, in 256ths).
    PeerReport { fraction_lost: u8 },
}

/// The outbound side of a call's audio. An enum, not a trait object: the per-frame send is a
/// match, and each wire keeps its own state (packetizer, peer address).
pub enum PacketSink {
    WebRtc(self::webrtc::TrackSink),
    /// A 1:1 call on a shared loop.
    WebRtcLoop(self::webrtc::LoopSink),
    PlainRtp(plain_rtp::UdpSink),
    Phone(Arc<phone::PhoneLine>),
    /// The audio travels as events (a Realtime WebSocket): the call writes them.
    Events(ws::AudioOut),
}

/// What became of one outbound frame.
pub enum Sent {
    /// Put on the wire (false: it could not be: no peer yet, socket gone).
    Wire(bool),
    /// The frame's audio in the client's format, for the call to send as an event.
    AsEvent(Vec<u8>),
}

impl PacketSink {
    /// Sends one encoded frame.
    pub async fn send(&mut self, frame: &EncodedFrame) -> Sent {
        match self {
            PacketSink::WebRtc(track) => Sent::Wire(track.send(frame).await),
            PacketSink::WebRtcLoop(conn) => Sent::Wire(conn.send(frame)),
            PacketSink::PlainRtp(udp) => Sent::Wire(udp.send(frame).await),
            PacketSink::Phone(line) => Sent::Wire(line.send_frame(frame.bytes())),
            PacketSink::Events(out) => Sent::AsEvent(out.convert(frame)),
        }
    }

    /// Whether silent frames are sent too. RTP streams stay continuous; a carrier plays silence
    /// by itself when nothing is queued, so the phone line only gets the agent's speech, and a
    /// Realtime client gets audio deltas only while the agent speaks.
    pub fn sends_silence(&self) -> bool {
        !matches!(self, PacketSink::Phone(_) | PacketSink::Events(_))
    }

    /// Drops audio the far end has buffered but not played yet (only carriers buffer).
    pub fn flush(&self) {
        if let PacketSink::Phone(line) = self {
            line.clear();
        }
    }
}

/// What a transport negotiated for the RTP it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// Packets of any other payload type are counted and dropped.
    pub payload_type: u8,
    /// The RFC 6464 audio-level extension's id, when the peer offered it.
    pub audio_level_ext: Option<u8>,
}

/// Hands one received RTP packet to the worker: counted, checked against the negotiated
/// payload type, tagged with its source, pushed without waiting (a full ring drops the packet
/// and counts it; the jitter buffer conceals the gap). Shared by the RTP transports.
pub(crate) fn ingest_rtp(packet: &rtc::rtp::Packet, format: Inbound, ingress: &mut rtrb::Producer<RtpIn>, metrics: &Metrics) {
    metrics.rtp_in(packet.payload.len() as u64);
    let h = &packet.header;
    if h.payload_type != format.payload_type {
        return;
    }
    let level = format.audio_level_ext.and_then(|id| h.get_extension(id)).and_then(|ext| AudioLevel::from_extension(&ext));
    if level.is_some() {
        metrics.audio_level_in();
    }
    if let Some(frame) = RtpIn::new(h.sequence_number, h.timestamp, &packet.payload)
        && ingress.push(frame.with_source(h.ssrc, level)).is_err()
    {
        metrics.ring_overflow();
    }
}

/// One received RTP packet with its source, for forwarding without decoding (rooms). The
/// payload is reference-counted: forwarding it to many subscribers copies nothing.
#[derive(Clone, Debug)]
pub struct RtpPacketIn {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    /// RFC 6464 level, when the sender negotiated and sent it.
    pub level: Option<AudioLevel>,
    pub payload: bytes::Bytes,
    pub at: std::time::Instant,
}

/// One RTP packet to send on one of a participant's outgoing streams (a slot).
#[derive(Clone, Debug)]
pub struct RtpPacketOut {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: bytes::Bytes,
}

/// Where a transport's reader hands each received packet (rooms: into the room's queue).
pub type DeliverRtp = Box<dyn FnMut(RtpPacketIn) + Send>;

/// Reads one received RTP packet for forwarding: counted, checked against the negotiated payload
/// type, its level read.
pub(crate) fn packet_in(packet: &rtc::rtp::Packet, format: Inbound, metrics: &Metrics) -> Option<RtpPacketIn> {
    metrics.rtp_in(packet.payload.len() as u64);
    let h = &packet.header;
    if h.payload_type != format.payload_type {
        return None;
    }
    let level = format.audio_level_ext.and_then(|id| h.get_extension(id)).and_then(|ext| AudioLevel::from_extension(&ext));
    if level.is_some() {
        metrics.audio_level_in();
    }
    Some(RtpPacketIn {
        ssrc: h.ssrc,
        seq: h.sequence_number,
        timestamp: h.timestamp,
        marker: h.marker,
        level,
        payload: packet.payload.clone(),
        at: std::time::Instant::now(),
    })
}

/// Starts the transport's media reader once the worker session exists: gets the session's
/// ingress ring, returns the tasks that end with the call.
pub type StartReader = Box<dyn FnOnce(&CallId, rtrb::Producer<RtpIn>, Arc<Metrics>) -> Vec<tokio::task::JoinHandle<()>> + Send>;

/// A transport ready to carry a call: what the engine needs to start the worker session and
/// the call task.
pub struct Transport {
    pub kind: TransportKind,
    pub codec: AudioCodec,
    pub events: mpsc::UnboundedReceiver<TransportEvent>,
    /// Feeds `events` from outside the transport (event sockets attached to the call).
    pub inject: mpsc::UnboundedSender<TransportEvent>,
    pub sink: PacketSink,
    /// Phone transports: frames the caller has heard, per marks (see `Conversation::with_heard`).
    pub heard: Option<Arc<AtomicU64>>,
    pub start_reader: StartReader,
    pub closer: Closer,
    /// WebRTC: trickle ICE and ICE restarts on the live connection (`PATCH` of the call).
    pub ice: Option<self::webrtc::IceControl>,
}

/// How a transport is taken down at the end of a call.
pub enum Closer {
    /// Nothing to close beyond the tasks (plain RTP, phone streams: dropping the call's ends
    /// closes them).
    Nothing,
    WebRtc(self::webrtc::PeerCloser),
    WebRtcLoop(self::webrtc::LoopCloser),
}

impl Closer {
    /// Closes the transport. `flush_events`: the call ended on the server's side, so the last
    /// events are worth a short, bounded wait for the peer to receive them.
    /// `call`: the call it carried, for the log (none when the call never started).
    pub async fn close(self, call: Option<&CallId>, flush_events: bool) {
        match self {
            Closer::Nothing => {}
            Closer::WebRtc(peer) => peer.close(call, flush_events).await,
            Closer::WebRtcLoop(conn) => conn.close(call, flush_events).await,
        }
    }
}
