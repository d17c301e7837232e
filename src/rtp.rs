//! Where a call's RTP goes, and plain RTP over UDP (PROTOCOL.md §7: no DTLS/SRTP, for load
//! testing and gateways). A plain-RTP peer is learned from its first packet (comedia) and
//! packets from any other address are ignored, so a stray sender cannot inject audio into or
//! steal the audio of a session it does not own the 5-tuple of.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use rtc::rtp::Packet;
use rtc::shared::marshal::{Marshal, Unmarshal};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use voxrelay_media::RtpIn;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::metrics::Metrics;
use crate::peer::PeerEvent;

/// Largest datagram read; RTP over UDP stays under the path MTU, 1500 covers Ethernet.
const MAX_DATAGRAM: usize = 1500;

/// The outbound side of a call's audio: a WebRTC track (SRTP by the stack) or a plain socket.
#[derive(Clone)]
pub enum PacketSink {
    Track(Arc<TrackLocalStaticRTP>),
    /// `peer` is unset until the far end is known (comedia); until then packets are dropped.
    Udp { socket: Arc<UdpSocket>, peer: Arc<OnceLock<SocketAddr>> },
    /// A carrier media stream (telephony): the payload goes out as a `media` + `mark` pair.
    Phone(Arc<crate::telephony::PhoneLine>),
}

impl PacketSink {
    /// Sends one packet; false when it could not be sent (not bound yet, or the socket failed).
    pub async fn send(&self, packet: Packet) -> bool {
        match self {
            PacketSink::Track(track) => track.write_rtp(packet).await.is_ok(),
            PacketSink::Udp { socket, peer } => {
                let Some(to) = peer.get() else { return false };
                match packet.marshal() {
                    Ok(bytes) => socket.send_to(&bytes, to).await.is_ok(),
                    Err(_) => false,
                }
            }
            PacketSink::Phone(line) => line.send_frame(&packet.payload),
        }
    }

    /// Whether silent frames are sent too. RTP streams stay continuous; a carrier plays silence
    /// by itself when nothing is queued, so the phone line only gets the agent's speech.
    pub fn sends_silence(&self) -> bool {
        !matches!(self, PacketSink::Phone(_))
    }

    /// Drops audio the far end has buffered but not played yet (only carriers buffer).
    pub fn flush(&self) {
        if let PacketSink::Phone(line) = self {
            line.clear();
        }
    }
}

pub fn parse(datagram: &[u8]) -> Option<Packet> {
    let mut buf = datagram;
    Packet::unmarshal(&mut buf).ok().filter(|p| p.header.version == 2)
}

/// Server side of a plain-RTP session: reads the peer's packets into the worker's ring. The
/// first packet fixes the peer address and reports the session as connected.
pub async fn read_plain_rtp(
    socket: Arc<UdpSocket>,
    peer: Arc<OnceLock<SocketAddr>>,
    mut ingress: rtrb::Producer<RtpIn>,
    payload_type: u8,
    metrics: Arc<Metrics>,
    events: mpsc::UnboundedSender<PeerEvent>,
) {
    let mut buf = [0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else { break };
        match peer.get() {
            None => {
                let _ = peer.set(from);
                let _ = events.send(PeerEvent::State(RTCPeerConnectionState::Connected));
            }
            Some(known) if *known != from => continue,
            Some(_) => {}
        }
        let Some(packet) = parse(&buf[..n]) else { continue };
        metrics.rtp_in(packet.payload.len() as u64);
        if packet.header.payload_type != payload_type {
            continue;
        }
        if let Some(frame) = RtpIn::new(packet.header.sequence_number, packet.header.timestamp, &packet.payload) {
            if ingress.push(frame).is_err() {
                metrics.ring_overflow();
            }
        }
    }
}
