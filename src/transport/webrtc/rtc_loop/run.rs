//! The loop: one task owns its UDP sockets (and an ICE-TCP listener) and every connection on them.
//! It wakes for a datagram, a command from a call, an accepted stream or the earliest protocol
//! deadline, and does everything a packet needs on the spot: routing, the sans-IO core (ICE,
//! DTLS, SRTP, SCTP), and the peer's RTP into the worker's ring or the room's queue.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportProtocol};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use super::conn::{self, Conn, LocalAddrs};
use super::{Command, ConnKey, IceOp, Media};
use crate::transport::shared_udp::{Deadlines, Router};
use crate::transport::{Departure, TransportEvent};

/// Datagrams read per wake-up before the loop looks at its commands and deadlines again.
const READ_BATCH: usize = 64;
/// ICE-TCP streams one loop keeps open (each costs two tasks); more are closed on accept.
const MAX_TCP_STREAMS: usize = 1024;
/// How long the loop sleeps when no connection has a deadline, and the longest a connection
/// goes unchecked.
const IDLE: Duration = Duration::from_secs(1);

struct Wire {
    /// One socket per local address (`LocalAddrs::udp`, same order); almost always one.
    udp: Vec<(SocketAddr, UdpSocket)>,
    /// The socket `readable` looks at first: the one after the last read, so a busy address
    /// cannot starve the others.
    first: usize,
    tcp: HashMap<SocketAddr, super::tcp::Stream>,
}

impl Wire {
    fn send(&mut self, out: TaggedBytesMut) {
        let to = out.transport.peer_addr;
        if out.transport.transport_protocol == TransportProtocol::TCP {
            if let Some(stream) = self.tcp.get(&to)
                && stream.frames.try_send(out.message.freeze()).is_err()
            {
                debug!(peer = %to, "ICE-TCP stream too slow or gone: frame dropped");
            }
            return;
        }
        // From the address the peer's checks reached: ICE pairs are addresses.
        let from = out.transport.local_addr;
        let Some((_, socket)) = self.udp.iter().find(|(addr, _)| *addr == from).or(self.udp.first()) else { return };
        if let Err(e) = socket.try_send_to(&out.message, to) {
            debug!(peer = %to, "UDP send: {e}");
        }
    }

    /// Waits until one of the UDP sockets has a datagram; its index.
    async fn readable(&self) -> std::io::Result<usize> {
        let n = self.udp.len();
        std::future::poll_fn(|cx| {
            for i in (self.first..self.first + n).map(|i| i % n) {
                if let std::task::Poll::Ready(ready) = self.udp[i].1.poll_recv_ready(cx) {
                    return std::task::Poll::Ready(ready.map(|()| i));
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

struct State {
    local: Arc<LocalAddrs>,
    wire: Wire,
    conns: HashMap<ConnKey, Conn>,
    udp_routes: Router<ConnKey>,
    tcp_routes: Router<ConnKey>,
    deadlines: Deadlines<ConnKey>,
    me: mpsc::WeakUnboundedSender<Command>,
    media_tx: mpsc::WeakSender<Media>,
    connections: Arc<AtomicUsize>,
}

/// A loop's inbound queues, and weak ends of them for the tasks it starts.
pub(super) struct Queues {
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub media: mpsc::Receiver<Media>,
    pub me: mpsc::WeakUnboundedSender<Command>,
    pub media_tx: mpsc::WeakSender<Media>,
    pub connections: Arc<AtomicUsize>,
}

pub(super) async fn run(queues: Queues, udp: Vec<UdpSocket>, tcp: Option<TcpListener>, local: Arc<LocalAddrs>) {
    let Queues { mut commands, mut media, me, media_tx, connections } = queues;
    let wire = Wire { udp: local.udp.iter().copied().zip(udp).collect(), first: 0, tcp: HashMap::new() };
    let mut state = State {
        local,
        wire,
        conns: HashMap::new(),
        udp_routes: Router::default(),
        tcp_routes: Router::default(),
        deadlines: Deadlines::default(),
        me,
        media_tx,
        connections,
    };
    let mut buf = vec![0u8; 2048];
    let mut due = Vec::new();
    loop {
        let next = state.deadlines.next().unwrap_or_else(|| Instant::now() + IDLE);
        tokio::select! {
            biased;
            command = commands.recv() => {
                let Some(command) = command else { break };
                state.command(command);
                // Whatever else the calls queued meanwhile, in one go.
                for _ in 0..READ_BATCH {
                    let Ok(command) = commands.try_recv() else { break };
                    state.command(command);
                }
            }
            Some(first) = media.recv() => {
                state.media(first);
                for _ in 0..READ_BATCH {
                    let Ok(next) = media.try_recv() else { break };
                    state.media(next);
                }
            }
            readable = state.wire.readable() => {
                let Ok(i) = readable else { break };
                let local = state.wire.udp[i].0;
                state.wire.first = i + 1;
                for _ in 0..READ_BATCH {
                    let Ok((n, from)) = state.wire.udp[i].1.try_recv_from(&mut buf) else { break };
                    state.datagram_at(local, from, &buf[..n], false);
                }
            }
            accepted = accept(tcp.as_ref()) => {
                if let Ok((stream, peer)) = accepted {
                    // On a dual-stack `::` listener an IPv4 peer reads as `::ffff:a.b.c.d`; ICE
                    // knows it (and us) by its IPv4 address.
                    let peer = canonical(peer);
                    if state.wire.tcp.len() >= MAX_TCP_STREAMS {
                        debug!(%peer, "ICE-TCP stream refused: {MAX_TCP_STREAMS} open on this loop");
                        continue;
                    }
                    let local = stream.local_addr().map_or(state.wire.udp[0].0, canonical);
                    let stream = super::tcp::start(stream, local, peer, state.me.clone(), state.media_tx.clone());
                    state.wire.tcp.insert(peer, stream);
                }
            }
            _ = tokio::time::sleep_until(next.into()) => {
                let now = Instant::now();
                // Due first, then serviced: a core that asks to be woken again at once waits
                // for the next turn instead of holding the loop.
                while let Some(key) = state.deadlines.pop_due(now) {
                    due.push(key);
                }
                for key in due.drain(..) {
                    state.timeout(key, now);
                }
                state.wire.tcp.retain(|_, s| s.routed || now.duration_since(s.opened) < super::tcp::UNROUTED_TIMEOUT);
            }
        }
    }
    for (_, mut conn) in state.conns.drain() {
        let _ = conn.pc.close();
        while let Some(out) = conn.pc.poll_write() {
            state.wire.send(out);
        }
        state.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl State {
    fn command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Adopt { key, conn } => {
                self.route_ufrag(&conn.ufrag, key);
                if self.conns.insert(key, *conn).is_none() {
                    self.connections.fetch_add(1, Ordering::Relaxed);
                }
                self.with_conn(key, |_| {});
            }
            Command::Start { key, input, metrics } => {
                if let Some(conn) = self.conns.get_mut(&key) {
                    conn.attach(input, metrics);
                }
            }
            Command::Text { key, text } => self.with_conn(key, |conn| conn.send_text(now, text)),
            Command::Outstanding { key, reply } => {
                let _ = reply.send(self.conns.get_mut(&key).map_or(0, Conn::outstanding));
            }
            Command::Ice { key, op } => self.ice(key, op, now),
            Command::Close { key } => self.close(key),
            Command::TcpGone { peer } => {
                self.wire.tcp.remove(&peer);
            }
        }
    }

    fn media(&mut self, media: Media) {
        match media {
            Media::Rtp { key, sender, packet } => self.with_conn(key, |conn| {
                conn.send_rtp(Instant::now(), sender, packet);
            }),
            Media::TcpIn { local, peer, data } => self.datagram_at(local, peer, &data, true),
        }
    }

    fn datagram_at(&mut self, local: SocketAddr, from: SocketAddr, data: &[u8], tcp: bool) {
        let routes = if tcp { &mut self.tcp_routes } else { &mut self.udp_routes };
        let Some(key) = routes.route(from, data) else { return };
        if tcp && let Some(stream) = self.wire.tcp.get_mut(&from) {
            stream.routed = true;
        }
        self.with_conn(key, |conn| conn.receive(conn::tagged(Instant::now(), local, from, tcp, data)));
    }

    fn timeout(&mut self, key: ConnKey, now: Instant) {
        let Some(conn) = self.conns.get_mut(&key) else { return };
        if conn.owner.strong_count() == 0 {
            self.close(key);
            return;
        }
        self.with_conn(key, |conn| {
            let _ = conn.pc.handle_timeout(now);
        });
    }

    /// Runs `step` on one connection, then drains its output and reschedules it. A panic in
    /// its core (input it did not expect) ends that call, not the loop and every call on it.
    fn with_conn(&mut self, key: ConnKey, step: impl FnOnce(&mut Conn)) {
        let Some(conn) = self.conns.get_mut(&key) else { return };
        let wire = &mut self.wire;
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            step(conn);
            // At least once a second, so a connection whose owner vanished is noticed even
            // when its core has nothing scheduled.
            conn.service(&mut |out| wire.send(out)).unwrap_or_else(|| Instant::now() + IDLE)
        }));
        match stepped {
            Ok(next) => self.deadlines.set(key, Some(next)),
            Err(_) => {
                error!("a WebRTC connection's core panicked: that call ends, the loop goes on");
                if let Some(conn) = self.forget(key) {
                    let _ = conn.events.send(TransportEvent::Closed(Departure::Failed("internal error in the WebRTC stack")));
                }
            }
        }
    }

    fn route_ufrag(&mut self, ufrag: &str, key: ConnKey) {
        if self.udp_routes.add(ufrag, key).is_some() | self.tcp_routes.add(ufrag, key).is_some() {
            warn!(ufrag, "two connections on one loop drew the same ICE ufrag; the newer one takes it");
        }
    }

    fn close(&mut self, key: ConnKey) {
        // Its routes first: the stream to an ICE-TCP peer closes after the goodbye is queued.
        let tcp_peers = self.tcp_routes.remove(key);
        let Some(mut conn) = self.forget(key) else { return };
        // Queues the SCTP abort and DTLS close_notify, so the peer learns at once.
        let _ = conn.pc.close();
        while let Some(out) = conn.pc.poll_write() {
            self.wire.send(out);
        }
        for peer in tcp_peers {
            self.wire.tcp.remove(&peer);
        }
    }

    /// Takes a connection off the loop: its routes, deadline and ICE-TCP streams.
    fn forget(&mut self, key: ConnKey) -> Option<Conn> {
        let conn = self.conns.remove(&key)?;
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.udp_routes.remove(key);
        for peer in self.tcp_routes.remove(key) {
            self.wire.tcp.remove(&peer);
        }
        self.deadlines.remove(key);
        Some(conn)
    }

    fn ice(&mut self, key: ConnKey, op: IceOp, now: Instant) {
        let Some(conn) = self.conns.get_mut(&key) else { return };
        match op {
            IceOp::Descriptions { reply } => {
                let local = conn.pc.local_description().map(|d| d.sdp);
                let remote = conn.pc.remote_description().map(|d| d.sdp.clone());
                let _ = reply.send((local, remote));
            }
            IceOp::AddCandidate { init, reply } => {
                let _ = reply.send(conn.pc.add_remote_candidate(init).map_err(|e| e.to_string()));
            }
            IceOp::Renegotiate { offer, reply } => {
                let old = conn.ufrag.clone();
                let renegotiated = conn.renegotiate(offer, &self.local, now);
                if let Ok(sdp) = &renegotiated
                    && let Some(ufrag) = voxrelay_signaling::sdpfrag::sdp_attribute(sdp, "ice-ufrag")
                    && ufrag != old
                {
                    let ufrag = ufrag.to_string();
                    self.udp_routes.forget_ufrag(&old);
                    self.tcp_routes.forget_ufrag(&old);
                    self.route_ufrag(&ufrag, key);
                    if let Some(conn) = self.conns.get_mut(&key) {
                        conn.ufrag = ufrag;
                    }
                }
                let _ = reply.send(renegotiated);
            }
        }
        self.with_conn(key, |_| {});
    }
}
