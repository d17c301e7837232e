//! A room participant's peer connection (PROTOCOL.md §4): answers an offer with one outbound
//! track per audio m-line, reads the participant's microphone (its first audio m-line) for
//! forwarding, and carries room events on the `room-events` data channel.
//!
//! Answered on a shared loop (`RtcLoops::answer_room`, the default) or on a webrtc-rs driver of
//! its own ([`answer_room`], with `--rtc-loop false`). Either way the room never waits on a
//! subscriber's connection: on the driver, outgoing packets are queued per participant and
//! written by one task per participant; on a loop, they join the loop's bounded queue. A full
//! queue drops the packet and says so, so a slow subscriber cannot hold up the others' packets.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::warn;
use voxrelay_media::AudioCodec;
use voxrelay_signaling::ApiError;
use voxrelay_signaling::room_wire::ROOM_EVENTS_LABEL;
use voxrelay_signaling::sdp::AudioLine;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::peer::{audio_track, build_room_peer};
use super::rtc_loop::LoopConn;
use super::{OnTrack, PeerCloser, Sockets, drive, negotiate};
use crate::metrics::Metrics;
use crate::transport::{Closer, DeliverRtp, Inbound, RtpPacketOut, TransportEvent, packet_in};

/// Outgoing packets queued per participant (all its slots): ≈ 1 s of three slots.
const SEND_QUEUE: usize = 150;

/// One of the participant's slots: the m-line it rides on and the SSRC it is sent with.
#[derive(Clone, Debug)]
pub struct SlotSink {
    pub mid: String,
    pub ssrc: u32,
}

/// Why a packet could not be queued for a participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    Full,
    Closed,
}

/// Where a participant's outgoing packets go.
pub(crate) enum SlotSender {
    /// The queue of its driver's writer task.
    Driver(mpsc::Sender<(usize, RtpPacketOut)>),
    /// Its loop, which encrypts and sends them on the spot.
    Loop { conn: LoopConn, payload_type: u8 },
}

type StartMic = Box<dyn FnOnce(DeliverRtp) -> Vec<tokio::task::JoinHandle<()>> + Send>;

/// A participant's answered peer connection.
pub struct RoomPeer {
    pub events: mpsc::UnboundedReceiver<TransportEvent>,
    /// One per audio m-line of the offer that can receive, in m-line order.
    pub slots: Vec<SlotSink>,
    sender: SlotSender,
    start: StartMic,
    pub closer: Closer,
    /// Trickle ICE and ICE restarts (WHIP/WHEP `PATCH`).
    pub ice: super::IceControl,
}

impl RoomPeer {
    pub(crate) fn new(
        events: mpsc::UnboundedReceiver<TransportEvent>,
        slots: Vec<SlotSink>,
        sender: SlotSender,
        start: StartMic,
        closer: Closer,
        ice: super::IceControl,
    ) -> Self {
        RoomPeer { events, slots, sender, start, closer, ice }
    }

    /// Starts reading the participant's microphone into `deliver`, and its events; returns the
    /// tasks that end with the participant.
    pub fn start(&mut self, deliver: DeliverRtp) -> Vec<tokio::task::JoinHandle<()>> {
        let start = std::mem::replace(&mut self.start, Box::new(|_| Vec::new()));
        start(deliver)
    }

    /// Queues one packet on slot `slot` without waiting.
    pub fn send(&self, slot: usize, packet: RtpPacketOut) -> Result<(), SendError> {
        match &self.sender {
            SlotSender::Driver(queue) => queue.try_send((slot, packet)).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::Full,
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            }),
            SlotSender::Loop { conn, payload_type } => conn.send_rtp(slot, rtp_packet(&packet, *payload_type)),
        }
    }
}

/// Answers a room participant's `offer`: every audio m-line gets an outbound Opus track (sent
/// with the offer's `inbound.payload_type`); those the participant can receive on are its slots.
pub async fn answer_room(
    sockets: Sockets,
    offer: String,
    lines: &[AudioLine],
    inbound: Inbound,
    metrics: Arc<Metrics>,
) -> Result<(RoomPeer, String), ApiError> {
    let Some(addr) = sockets.udp else { return Err(ApiError::internal("no UDP media socket was allocated")) };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let peer = build_room_peer(sockets, tx).await.map_err(|e| {
        warn!("building peer connection on {addr}: {e}");
        ApiError::overloaded("could not open a media socket")
    })?;
    let tracks: Vec<(Arc<TrackLocalStaticRTP>, u32)> =
        (0..lines.len()).map(|i| audio_track(&format!("slot{i}"), AudioCodec::Opus)).collect();
    let late: Vec<Arc<TrackLocalStaticRTP>> = tracks.iter().map(|(t, _)| t.clone()).collect();
    let (early, answer) = match negotiate(&peer, &mut rx, offer, &late).await {
        Ok(n) => n,
        Err(e) => {
            let _ = peer.close().await;
            return Err(e);
        }
    };
    let mut slots = Vec::new();
    let mut slot_tracks = Vec::new();
    for (i, (line, (track, ssrc))) in lines.iter().zip(tracks).enumerate() {
        if line.direction.receives() {
            slots.push(SlotSink { mid: line.mid.clone().unwrap_or_else(|| i.to_string()), ssrc });
            slot_tracks.push(track);
        }
    }
    let (sender, queue) = mpsc::channel(SEND_QUEUE);
    let writer = tokio::spawn(write_slots(queue, slot_tracks, inbound.payload_type));
    let (to_room, events) = mpsc::unbounded_channel();
    let ice = super::IceControl::driver(peer.clone());
    let closer = PeerCloser { peer: peer.clone(), events_channel: Arc::new(Mutex::new(None)) };
    let channel = closer.events_channel.clone();
    let closer = Closer::WebRtc(closer);
    let start = Box::new(move |deliver: DeliverRtp| {
        // The microphone is the first track the participant sends; later ones are ignored.
        let mut deliver = Some(deliver);
        let on_track: OnTrack = Box::new(move |remote| {
            if let Some(deliver) = deliver.take() {
                tokio::spawn(read_mic(remote, deliver, inbound, metrics.clone()));
            }
        });
        vec![writer, tokio::spawn(drive(early, rx, to_room, channel, ROOM_EVENTS_LABEL, on_track))]
    });
    Ok((RoomPeer { events, slots, sender: SlotSender::Driver(sender), start, closer, ice }, answer))
}

/// Hands the participant's packets to the room, as they arrive.
async fn read_mic(track: Arc<dyn TrackRemote>, mut deliver: DeliverRtp, inbound: Inbound, metrics: Arc<Metrics>) {
    while let Some(event) = track.poll().await {
        if let TrackRemoteEvent::OnRtpPacket(packet) = event
            && let Some(p) = packet_in(&packet, inbound, &metrics)
        {
            deliver(p);
        }
    }
}

/// Writes queued packets to their slot's track (SRTP by the stack), until the room drops the
/// participant's queue.
async fn write_slots(mut queue: mpsc::Receiver<(usize, RtpPacketOut)>, tracks: Vec<Arc<TrackLocalStaticRTP>>, payload_type: u8) {
    while let Some((slot, p)) = queue.recv().await {
        let Some(track) = tracks.get(slot) else { continue };
        // A write fails only once the connection is closing; the room notices that on its own.
        let _ = track.write_rtp(rtp_packet(&p, payload_type)).await;
    }
}

/// A forwarded packet as the stack sends it (the payload is shared, not copied).
fn rtp_packet(p: &RtpPacketOut, payload_type: u8) -> rtc::rtp::Packet {
    let header = rtc::rtp::Header {
        version: 2,
        payload_type,
        sequence_number: p.seq,
        timestamp: p.timestamp,
        ssrc: p.ssrc,
        marker: p.marker,
        ..Default::default()
    };
    rtc::rtp::Packet { header, payload: p.payload.clone() }
}
