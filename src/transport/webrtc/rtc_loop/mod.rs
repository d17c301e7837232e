//! 1:1 calls and room participants on shared loops (issue 20): each loop is one task that owns one
//! UDP socket per media address (and an ICE-TCP listener on the same port number) and drives the
//! sans-IO core (`rtc`) of every connection on it. A packet goes socket → ICE/DTLS/SRTP → the
//! worker's ingress ring (or the room's queue) within one wake-up, with no per-connection driver
//! task, socket or track reader (BENCHMARKS.md "The transport prototype": 40–47 % less transport
//! CPU than a webrtc-rs driver per call).
//!
//! - `addrs` — the addresses a loop is reached at (each interface's, for a wildcard media IP).
//! - `conn` — one connection: answering its offer, and what its core reports.
//! - `run` — the loop itself: routing (by remote address, or by the ufrag a STUN request names),
//!   deadlines, commands from the calls.
//! - `tcp` — ICE-TCP streams (RFC 4571 framing).
//!
//! Calls and rooms reach their loop through [`Command`]s (event texts, ICE `PATCH`es, closing)
//! and [`Media`] (outbound RTP, on a bounded queue).

mod addrs;
mod conn;
mod run;
mod tcp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};
use voxrelay_media::{AudioCodec, EncodedFrame};
use voxrelay_signaling::sdp::AudioLine;
use voxrelay_signaling::{ApiError, CallId};

use super::peer::{PortAllocator, samples_per_frame};
use super::room::{RoomPeer, SendError, SlotSender};
use crate::metrics::Metrics;
use crate::transport::packetizer::RtpPacketizer;
use crate::transport::{Closer, Inbound, PacketSink, Transport, TransportEvent, TransportKind};

/// A connection on a loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ConnKey(u64);

/// What calls ask of their loop (rare: setup, events, ICE, closing; unbounded, as the driver's
/// were).
pub(crate) enum Command {
    /// A connection answered by the call (off the loop: building one costs a certificate and
    /// an SDP round, which would hold every other call's packets meanwhile).
    Adopt {
        key: ConnKey,
        conn: Box<conn::Conn>,
    },
    /// The call's or room's reader starts: the peer's RTP goes to `input`.
    Start {
        key: ConnKey,
        input: conn::Input,
        metrics: Arc<Metrics>,
    },
    /// One of the call's events, for the events channel.
    Text {
        key: ConnKey,
        text: String,
    },
    /// Bytes the events channel has not had acknowledged.
    Outstanding {
        key: ConnKey,
        reply: oneshot::Sender<usize>,
    },
    Ice {
        key: ConnKey,
        op: IceOp,
    },
    Close {
        key: ConnKey,
    },
    TcpGone {
        peer: SocketAddr,
    },
}

/// The per-packet traffic into a loop, on a bounded queue: a loop that falls behind drops the
/// calls' outbound audio (as a full socket buffer would) and slows ICE-TCP readers, instead of
/// queueing without end.
pub(crate) enum Media {
    /// One outbound packet on one of the connection's tracks (a call's only one, or a room
    /// participant's slot).
    Rtp { key: ConnKey, sender: usize, packet: rtc::rtp::Packet },
    /// A frame from an ICE-TCP stream.
    TcpIn { local: SocketAddr, peer: SocketAddr, data: Bytes },
}

/// Packets queued to one loop: 20 ms of 1024 calls (an audio worker's sessions), or of one
/// publisher's packet forwarded to 1024 subscriber slots, four times over.
const MEDIA_QUEUE: usize = 4096;

/// ICE on a live connection (WHIP-style `PATCH` of a call).
pub(crate) enum IceOp {
    /// The local and remote SDP.
    Descriptions {
        reply: oneshot::Sender<(Option<String>, Option<String>)>,
    },
    AddCandidate {
        init: RTCIceCandidateInit,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A restart's offer, answered; the local SDP, or what failed and why.
    Renegotiate {
        offer: String,
        reply: oneshot::Sender<Result<String, (&'static str, String)>>,
    },
}

/// A call's connection on its loop: what the call and its ICE control hold.
#[derive(Clone)]
pub(crate) struct LoopConn {
    key: ConnKey,
    to_loop: mpsc::UnboundedSender<Command>,
    media: mpsc::Sender<Media>,
}

impl LoopConn {
    fn send(&self, command: Command) -> bool {
        self.to_loop.send(command).is_ok()
    }

    /// Queues one outbound packet on track `sender`, without waiting: a loop too far behind (or
    /// gone) drops it.
    pub(crate) fn send_rtp(&self, sender: usize, packet: rtc::rtp::Packet) -> Result<(), SendError> {
        self.media.try_send(Media::Rtp { key: self.key, sender, packet }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    async fn ask<T>(&self, op: impl FnOnce(oneshot::Sender<T>) -> IceOp) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        if !self.send(Command::Ice { key: self.key, op: op(reply) }) {
            return None;
        }
        answer.await.ok()
    }

    /// The local and remote SDP (none once the connection closed).
    pub(crate) async fn descriptions(&self) -> (Option<String>, Option<String>) {
        self.ask(|reply| IceOp::Descriptions { reply }).await.unwrap_or((None, None))
    }

    pub(crate) async fn add_candidate(&self, init: RTCIceCandidateInit) -> Result<(), String> {
        self.ask(|reply| IceOp::AddCandidate { init, reply }).await.unwrap_or_else(|| Err("the connection is closed".into()))
    }

    pub(crate) async fn renegotiate(&self, offer: String) -> Result<String, (&'static str, String)> {
        self.ask(|reply| IceOp::Renegotiate { offer, reply })
            .await
            .unwrap_or_else(|| Err(("renegotiating", "the connection is closed".into())))
    }
}

/// The server's loops; calls are spread over them in turn.
pub struct RtcLoops {
    loops: Vec<Loop>,
    next: AtomicUsize,
    keys: AtomicU64,
    /// Connections held by all the loops (`/metrics`: a leak shows here).
    connections: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Loop {
    commands: mpsc::UnboundedSender<Command>,
    media: mpsc::Sender<Media>,
    local: Arc<conn::LocalAddrs>,
}

impl RtcLoops {
    /// Starts `count` loops on ports from `ports` (UDP, and TCP with the same number when ICE-TCP
    /// is on). A wildcard media IP gets a socket per interface address (`addrs`).
    pub async fn start(ports: &PortAllocator, count: usize) -> Result<Self, String> {
        let ips = addrs::media_addresses(ports.ip())?;
        let mut loops = Vec::with_capacity(count);
        let connections = Arc::new(AtomicUsize::new(0));
        for _ in 0..count.max(1) {
            let tcp_ip = ports.tcp().then_some(ports.ip());
            let (udp, tcp, local) = addrs::bind_free(&ips, tcp_ip, || ports.allocate()?.udp.map(|a| a.port())).await?;
            let local = Arc::new(local);
            let (to_loop, commands) = mpsc::unbounded_channel();
            let (media, media_in) = mpsc::channel(MEDIA_QUEUE);
            info!(udp = ?local.udp, tcp = ?local.tcp, "WebRTC loop started");
            let queues = run::Queues {
                commands,
                media: media_in,
                me: to_loop.downgrade(),
                media_tx: media.downgrade(),
                connections: connections.clone(),
            };
            tokio::spawn(run::run(queues, udp, tcp, local.clone()));
            loops.push(Loop { commands: to_loop, media, local });
        }
        Ok(Self { loops, next: AtomicUsize::new(0), keys: AtomicU64::new(0), connections })
    }

    /// Connections the loops hold now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Answers `offer` on the next loop, sending `codec` with the offer's payload type. Returns
    /// the transport, the answer SDP and the loop's UDP address.
    pub async fn answer(&self, offer: String, codec: AudioCodec, inbound: Inbound) -> Result<(Transport, String, SocketAddr), ApiError> {
        let placed = self.place(offer, conn::Shape::Call { codec }, inbound)?;
        let ssrc = placed.streams[0].ssrc;
        let (conn, started) = (placed.conn.clone(), placed.conn.clone());
        let transport = Transport {
            kind: TransportKind::WebRtc,
            codec,
            events: placed.events,
            inject: placed.inject,
            sink: PacketSink::WebRtcLoop(LoopSink {
                conn: conn.clone(),
                packetizer: RtpPacketizer::new(ssrc, inbound.payload_type, samples_per_frame(codec)),
            }),
            heard: None,
            start_reader: Box::new(move |_call_id, ingress, metrics| {
                started.send(Command::Start { key: started.key, input: conn::Input::Ring(ingress), metrics });
                Vec::new()
            }),
            closer: placed.closer,
            ice: Some(super::IceControl::on_loop(conn)),
        };
        Ok((transport, placed.sdp, placed.addr))
    }

    /// Answers a room participant's `offer` on the next loop: an outbound Opus track per audio
    /// m-line (`lines`, sent with the offer's payload type), those it receives on its slots.
    pub fn answer_room(
        &self,
        offer: String,
        lines: &[AudioLine],
        inbound: Inbound,
        metrics: Arc<Metrics>,
    ) -> Result<(RoomPeer, String), ApiError> {
        let placed = self.place(offer, conn::Shape::Room { lines }, inbound)?;
        let conn = placed.conn.clone();
        let start = Box::new(move |deliver| {
            conn.send(Command::Start { key: conn.key, input: conn::Input::Forward(deliver), metrics });
            Vec::new()
        });
        let peer = RoomPeer::new(
            placed.events,
            placed.streams,
            SlotSender::Loop { conn: placed.conn.clone(), payload_type: inbound.payload_type },
            start,
            placed.closer,
            super::IceControl::on_loop(placed.conn),
        );
        Ok((peer, placed.sdp))
    }

    /// Answers `offer` with a connection of `shape` (off the loop: building one costs a
    /// certificate and an SDP round) and hands it to the next loop.
    fn place(&self, offer: String, shape: conn::Shape<'_>, inbound: Inbound) -> Result<Placed, ApiError> {
        let chosen = self.loops[self.next.fetch_add(1, Ordering::Relaxed) % self.loops.len()].clone();
        let key = ConnKey(self.keys.fetch_add(1, Ordering::Relaxed));
        let (inject, events) = mpsc::unbounded_channel();
        let writer_task = Arc::new(Mutex::new(None));
        let writer = conn::EventsWriter { key, to_loop: chosen.commands.downgrade(), task: writer_task.clone() };
        let mut answered = conn::answer(offer, shape, inbound, &chosen.local, inject.clone(), writer, Instant::now())?;
        let alive = Arc::new(());
        answered.conn.owner = Arc::downgrade(&alive);
        if chosen.commands.send(Command::Adopt { key, conn: Box::new(answered.conn) }).is_err() {
            return Err(ApiError::internal("the WebRTC loop has stopped"));
        }
        let conn = LoopConn { key, to_loop: chosen.commands, media: chosen.media };
        let closer = Closer::WebRtcLoop(LoopCloser { conn: conn.clone(), writer_task, _alive: alive });
        Ok(Placed { conn, events, inject, closer, sdp: answered.sdp, streams: answered.streams, addr: chosen.local.udp[0] })
    }
}

/// A connection adopted by a loop, and the ends the call or room holds.
struct Placed {
    conn: LoopConn,
    events: mpsc::UnboundedReceiver<TransportEvent>,
    inject: mpsc::UnboundedSender<TransportEvent>,
    closer: Closer,
    sdp: String,
    streams: Vec<super::SlotSink>,
    addr: SocketAddr,
}

/// The call's outbound audio: frames become RTP packets the loop encrypts and sends.
pub struct LoopSink {
    conn: LoopConn,
    packetizer: RtpPacketizer,
}

impl LoopSink {
    /// Queues one frame for the loop; false when the loop is gone or too far behind (dropped).
    pub fn send(&mut self, frame: &EncodedFrame) -> bool {
        self.conn.send_rtp(0, self.packetizer.packetize(frame)).is_ok()
    }
}

/// Closes a call's connection on its loop, after the last events when asked.
pub struct LoopCloser {
    conn: LoopConn,
    writer_task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// The connection's `owner`: dropped without `close`, the loop closes it by itself.
    _alive: Arc<()>,
}

impl LoopCloser {
    pub async fn close(self, call: Option<&CallId>, flush_events: bool) {
        let writer = self.writer_task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            if flush_events {
                // The call has dropped its outlet: the writer ends once it has queued everything.
                let deadline = tokio::time::Instant::now() + super::FLUSH_WAIT;
                let _ = tokio::time::timeout_at(deadline, writer).await;
                while tokio::time::Instant::now() < deadline {
                    let (reply, outstanding) = oneshot::channel();
                    if !self.conn.send(Command::Outstanding { key: self.conn.key, reply }) || !outstanding.await.is_ok_and(|n| n > 0) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } else {
                writer.abort();
            }
        }
        if !self.conn.send(Command::Close { key: self.conn.key }) {
            debug!(call = call.map(CallId::as_str), "closing a connection on a stopped loop");
        }
    }
}
