//! Plain RTP over UDP (PROTOCOL.md §7: no DTLS/SRTP, for load testing and gateways). The peer
//! is learned from its first packet (comedia) and packets from any other address are ignored,
//! so a stray sender cannot inject audio into, or steal the audio of, a session whose 5-tuple
//! it does not own.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rtc::rtp::Packet;
use rtc::shared::marshal::{Marshal, Unmarshal};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::warn;
use voxrelay_media::{AudioCodec, EncodedFrame, RtpIn};
use voxrelay_signaling::ApiError;

use super::packetizer::RtpPacketizer;
use super::webrtc::{OPUS_PAYLOAD_TYPE, samples_per_frame};
use super::{Closer, Inbound, PacketSink, Transport, TransportEvent, TransportKind, ingest_rtp};
use crate::metrics::Metrics;

/// Largest datagram read; RTP over UDP stays under the path MTU, 1500 covers Ethernet.
const MAX_DATAGRAM: usize = 1500;
/// Plain RTP has no connectivity checks: a peer that sent nothing for this long counts as
/// interrupted (Opus DTX still sends a packet every 400 ms), and the call's `Link` ends it after
/// its grace unless packets resume. Without this, a session abandoned without `DELETE` would
/// live for ever.
pub const QUIET_PEER: Duration = Duration::from_secs(5);

/// Parses one datagram as RTP version 2.
pub fn parse(datagram: &[u8]) -> Option<Packet> {
    let mut buf = datagram;
    Packet::unmarshal(&mut buf).ok().filter(|p| p.header.version == 2)
}

/// Opens a plain-RTP session's socket on `ip` (Opus, payload type 111). Returns the transport
/// and the address the peer must send to.
pub async fn open(ip: IpAddr) -> Result<(Transport, SocketAddr), ApiError> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await.map_err(|e| {
        warn!("binding a plain RTP socket on {ip}: {e}");
        ApiError::overloaded("could not open a media socket")
    })?;
    let addr = socket.local_addr().map_err(|e| ApiError::internal(e.to_string()))?;
    let (socket, peer) = (Arc::new(socket), Arc::new(OnceLock::new()));
    let (inject, events) = mpsc::unbounded_channel();
    let codec = AudioCodec::Opus;
    let packetizer = RtpPacketizer::new(rand::random(), OPUS_PAYLOAD_TYPE, samples_per_frame(codec));
    let sink = UdpSink { socket: socket.clone(), peer: peer.clone(), packetizer };
    let to_call = inject.clone();
    let transport = Transport {
        kind: TransportKind::PlainRtp,
        codec,
        events,
        inject,
        sink: PacketSink::PlainRtp(sink),
        heard: None,
        start_reader: Box::new(move |_call_id, ingress, metrics| {
            vec![tokio::spawn(read(socket, peer, ingress, OPUS_PAYLOAD_TYPE, metrics, to_call))]
        }),
        closer: Closer::Nothing,
        ice: None,
    };
    Ok((transport, addr))
}

/// The session's outbound side: packets go to the peer once its address is known.
pub struct UdpSink {
    socket: Arc<UdpSocket>,
    /// Unset until the far end is known (comedia); until then packets are dropped.
    peer: Arc<OnceLock<SocketAddr>>,
    packetizer: RtpPacketizer,
}

impl UdpSink {
    pub async fn send(&mut self, frame: &EncodedFrame) -> bool {
        let Some(to) = self.peer.get() else { return false };
        match self.packetizer.packetize(frame).marshal() {
            Ok(bytes) => self.socket.send_to(&bytes, to).await.is_ok(),
            Err(_) => false,
        }
    }
}

/// Reads the peer's packets into the worker's ring. The first RTP packet of the session's
/// payload type fixes the peer address and reports the session as connected (anything else
/// first, such as a previous session's sender still going to a reused port, is ignored);
/// [`QUIET_PEER`] without a datagram from the peer reports it interrupted, the next one connected
/// again. Datagrams from other addresses do not count as the peer's.
async fn read(
    socket: Arc<UdpSocket>,
    peer: Arc<OnceLock<SocketAddr>>,
    mut ingress: rtrb::Producer<RtpIn>,
    payload_type: u8,
    metrics: Arc<Metrics>,
    events: mpsc::UnboundedSender<TransportEvent>,
) {
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut quiet = false;
    let mut quiet_at = tokio::time::Instant::now() + QUIET_PEER;
    loop {
        let (n, from) = match tokio::time::timeout_at(quiet_at, socket.recv_from(&mut buf)).await {
            Ok(Ok(got)) => got,
            Ok(Err(_)) => break,
            Err(_) => {
                if peer.get().is_some() && !quiet {
                    quiet = true;
                    let _ = events.send(TransportEvent::Interrupted);
                }
                quiet_at = tokio::time::Instant::now() + QUIET_PEER;
                continue;
            }
        };
        let packet = parse(&buf[..n]);
        match peer.get() {
            None if packet.as_ref().is_some_and(|p| p.header.payload_type == payload_type) => {
                let _ = peer.set(from);
                let _ = events.send(TransportEvent::Connected);
            }
            None => continue,
            Some(known) if *known != from => continue,
            Some(_) if quiet => {
                quiet = false;
                let _ = events.send(TransportEvent::Connected);
            }
            Some(_) => {}
        }
        quiet_at = tokio::time::Instant::now() + QUIET_PEER;
        if let Some(packet) = packet {
            ingest_rtp(&packet, Inbound { payload_type, audio_level_ext: None }, &mut ingress, &metrics);
        }
    }
}
