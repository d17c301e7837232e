//! Transport prototype (issue 20): what a call's packets cost in webrtc-rs's async driver (a UDP
//! socket and a driver task per peer connection, as the server runs today) against the same
//! sans-IO core (`rtc`) driven from one loop over one shared UDP socket, as an audio worker
//! would own it. Both servers reflect every RTP packet back on their outbound track (SRTP both
//! ways, the library's default interceptors, the client's `oai-events` data channel open), so
//! the difference is the transport's own cost: no codec, no VAD.
//!
//! The server runs on one thread (a current-thread runtime, pinned to CPU 0) and its CPU time
//! is read from the kernel (`/proc/self/task/<tid>/schedstat`, user + system); the clients are
//! voxrelay's own load-generator client (webrtc-rs, CPU 1) sending 50 packets/s each.
//!
//! ```sh
//! cargo bench --bench transport_loop -- webrtc 200 20    # variant, calls, seconds measured
//! cargo bench --bench transport_loop -- shared 200 20
//! cargo bench --bench transport_loop -- server 200 20
//! ```
//!
//! `server` is the server's own loop (`RtcLoops`, what 1:1 calls run on): packets reach the
//! bench through the worker's ingress rings and go back through the calls' packet sinks, drained
//! every 10 ms as a worker tick would, so the rings and the sinks' queue are counted too.
//!
//! The shared loop routes and schedules with `voxrelay::transport::shared_udp` (the server's
//! pieces for it). Not a server: UDP host candidates only (no ICE-TCP), and it never closes a
//! connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodecParameters, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::{mpsc, oneshot};
use voxrelay::client::{Client, ClientOptions, OutFrame};
use voxrelay::transport::shared_udp::{Deadlines, Router};
use voxrelay::transport::webrtc::{OPUS_PAYLOAD_TYPE, PortAllocator, RtcLoops, audio_stream_track, rtp_codec};
use voxrelay_media::AudioCodec;
use voxrelay_signaling::sdpfrag::sdp_attribute;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState};

/// A 32 kbps Opus frame is ≈ 80 bytes; the servers never decode it.
const PAYLOAD: [u8; 80] = [0x5a; 80];

type Offer = (String, oneshot::Sender<Result<String, String>>);

fn media_engine() -> MediaEngine {
    let mut engine = MediaEngine::default();
    let opus = RTCRtpCodecParameters { rtp_codec: rtp_codec(AudioCodec::Opus), payload_type: OPUS_PAYLOAD_TYPE };
    engine.register_codec(opus, RtpCodecKind::Audio).expect("opus registers");
    engine
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn gettid() -> i64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// Nanoseconds the thread `tid` has run (user + system), from the scheduler.
fn thread_cpu_ns(tid: i64) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).expect("schedstat");
    text.split_whitespace().next().and_then(|v| v.parse().ok()).expect("schedstat runtime")
}

// ---- today's transport: a webrtc-rs peer connection (socket + driver task) per call ----

struct Gathered(mpsc::UnboundedSender<Arc<dyn TrackRemote>>, mpsc::UnboundedSender<()>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Gathered {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.1.send(());
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.0.send(track);
    }
}

async fn serve_webrtc(mut offers: mpsc::UnboundedReceiver<Offer>, echoed: Arc<AtomicU64>) {
    while let Some((sdp, reply)) = offers.recv().await {
        let echoed = echoed.clone();
        tokio::spawn(async move {
            let (tracks_tx, mut tracks) = mpsc::unbounded_channel();
            let (gathered_tx, mut gathered) = mpsc::unbounded_channel();
            let mut engine = media_engine();
            let registry = register_default_interceptors(rtc::interceptor::Registry::new(), &mut engine).expect("interceptors");
            let peer = PeerConnectionBuilder::<SocketAddr>::new()
                .with_media_engine(engine)
                .with_interceptor_registry(registry)
                .with_handler(Arc::new(Gathered(tracks_tx, gathered_tx)))
                .with_udp_addrs(vec![SocketAddr::from(([127, 0, 0, 1], 0))])
                .build()
                .await
                .expect("peer");
            let (track, ssrc) = audio_stream_track("echo", AudioCodec::Opus);
            let track = Arc::new(TrackLocalStaticRTP::new(track));
            peer.add_track(track.clone() as Arc<dyn TrackLocal>).await.expect("track");
            peer.set_remote_description(RTCSessionDescription::offer(sdp).expect("offer")).await.expect("remote");
            let answer = peer.create_answer(None).await.expect("answer");
            peer.set_local_description(answer).await.expect("local");
            gathered.recv().await;
            let local = peer.local_description().await.expect("local description").sdp;
            let _ = reply.send(Ok(local));
            let Some(remote) = tracks.recv().await else { return };
            while let Some(event) = remote.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(mut packet) = event {
                    packet.header.ssrc = ssrc;
                    packet.header.payload_type = OPUS_PAYLOAD_TYPE;
                    if track.write_rtp(packet).await.is_ok() {
                        echoed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            drop(peer);
        });
    }
}

// ---- the prototype: every call's sans-IO core on one loop and one UDP socket ----

struct Conn {
    pc: RTCPeerConnection,
    sender: RTCRtpSenderId,
    ssrc: u32,
}

fn accept(sdp: String, local: SocketAddr) -> Result<(Conn, String), String> {
    let e = |e: rtc::shared::error::Error| e.to_string();
    let mut engine = media_engine();
    let registry = register_default_interceptors(rtc::interceptor::Registry::new(), &mut engine).map_err(e)?;
    let now = Instant::now();
    let mut pc = rtc::peer_connection::RTCPeerConnectionBuilder::new()
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(e)?;
    let (track, ssrc) = audio_stream_track("echo", AudioCodec::Opus);
    let sender = pc.add_track(track).map_err(e)?;
    pc.set_remote_description(now, RTCSessionDescription::offer(sdp).map_err(e)?).map_err(e)?;
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(e)?;
    pc.add_local_candidate(RTCIceCandidate::from(&host).to_json().map_err(e)?).map_err(e)?;
    let answer = pc.create_answer(None).map_err(e)?;
    pc.set_local_description(now, answer).map_err(e)?;
    let sdp = pc.local_description().ok_or("no local description")?.sdp;
    Ok((Conn { pc, sender, ssrc }, sdp))
}

/// Drains what `conn` has for the application (reflecting RTP) and for the wire; returns its
/// next deadline.
fn service(conn: &mut Conn, socket: &tokio::net::UdpSocket, now: Instant, echoed: &AtomicU64) -> Option<Instant> {
    while let Some(TaggedRTCMessage { message, .. }) = conn.pc.poll_read() {
        if let RTCMessage::RtpPacket(_, mut packet) = message {
            packet.header.ssrc = conn.ssrc;
            packet.header.payload_type = OPUS_PAYLOAD_TYPE;
            if let Some(mut sender) = conn.pc.rtp_sender(conn.sender)
                && sender.write_rtp(now, packet).is_ok()
            {
                echoed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    while conn.pc.poll_event().is_some() {}
    while let Some(out) = conn.pc.poll_write() {
        let _ = socket.try_send_to(&out.message, out.transport.peer_addr);
    }
    conn.pc.poll_timeout()
}

async fn serve_shared(mut offers: mpsc::UnboundedReceiver<Offer>, echoed: Arc<AtomicU64>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("socket");
    let local = socket.local_addr().expect("local addr");
    let mut conns: Vec<Conn> = Vec::new();
    let mut router: Router<usize> = Router::default();
    let mut deadlines: Deadlines<usize> = Deadlines::default();
    let mut buf = vec![0u8; 2048];
    loop {
        let next = deadlines.next().unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            biased;
            offer = offers.recv() => {
                let Some((sdp, reply)) = offer else { return };
                match accept(sdp, local) {
                    Ok((mut conn, answer)) => {
                        let key = conns.len();
                        if let Some(ufrag) = sdp_attribute(&answer, "ice-ufrag") {
                            router.add(ufrag, key);
                        }
                        deadlines.set(key, service(&mut conn, &socket, Instant::now(), &echoed));
                        conns.push(conn);
                        let _ = reply.send(Ok(answer));
                    }
                    Err(e) => { let _ = reply.send(Err(e)); }
                }
            }
            readable = socket.readable() => {
                if readable.is_err() { return; }
                // Everything queued, not one datagram per wake-up.
                while let Ok((n, from)) = socket.try_recv_from(&mut buf) {
                    let now = Instant::now();
                    let Some(key) = router.route(from, &buf[..n]) else { continue };
                    let conn = &mut conns[key];
                    let transport = TransportContext { local_addr: local, peer_addr: from, ecn: None, transport_protocol: TransportProtocol::UDP };
                    if conn.pc.handle_read(TaggedBytesMut { now, transport, message: BytesMut::from(&buf[..n]) }).is_ok() {
                        deadlines.set(key, service(conn, &socket, now, &echoed));
                    }
                }
            }
            _ = tokio::time::sleep_until(next.into()) => {
                let now = Instant::now();
                while let Some(key) = deadlines.pop_due(now) {
                    let conn = &mut conns[key];
                    let _ = conn.pc.handle_timeout(now);
                    deadlines.set(key, service(conn, &socket, now, &echoed));
                }
            }
        }
    }
}

/// The server's loop: one `RtcLoops` on this thread; every 10 ms the packets in each call's
/// ingress ring go back out through its sink.
async fn serve_server(mut offers: mpsc::UnboundedReceiver<Offer>, echoed: Arc<AtomicU64>) {
    use voxrelay::transport::{Inbound, Transport};
    use voxrelay_media::{EncodedFrame, MAX_OPUS_PACKET, RtpIn};
    let ports = PortAllocator::new("127.0.0.1".parse().expect("ip"), None);
    let loops = RtcLoops::start(&ports, 1).await.expect("loop starts");
    let metrics = Arc::new(voxrelay::metrics::Metrics::default());
    let mut calls: Vec<(rtrb::Consumer<RtpIn>, Transport)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut frame = EncodedFrame { frame_index: 0, voiced: false, len: 0, data: [0; MAX_OPUS_PACKET] };
    let inbound = Inbound { payload_type: OPUS_PAYLOAD_TYPE, audio_level_ext: None };
    loop {
        tokio::select! {
            offer = offers.recv() => {
                let Some((sdp, reply)) = offer else { return };
                match loops.answer(sdp, AudioCodec::Opus, inbound).await {
                    Ok((mut transport, answer, _addr)) => {
                        let (producer, consumer) = rtrb::RingBuffer::new(32);
                        let start = std::mem::replace(&mut transport.start_reader, Box::new(|_, _, _| Vec::new()));
                        start(&voxrelay_signaling::CallId::random("rtc_"), producer, metrics.clone());
                        calls.push((consumer, transport));
                        let _ = reply.send(Ok(answer));
                    }
                    Err(e) => { let _ = reply.send(Err(e.message)); }
                }
            }
            _ = tick.tick() => {
                for (ring, transport) in &mut calls {
                    while let Ok(packet) = ring.pop() {
                        let n = packet.bytes().len().min(MAX_OPUS_PACKET);
                        frame.data[..n].copy_from_slice(&packet.bytes()[..n]);
                        frame.len = n as u16;
                        frame.frame_index += 1;
                        if matches!(transport.sink.send(&frame).await, voxrelay::transport::Sent::Wire(true)) {
                            echoed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
}

// ---- the bench ----

fn main() {
    voxrelay::install_tls_provider();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let variant = args.first().cloned().unwrap_or_else(|| "shared".into());
    let calls: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(100);
    let seconds: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(20);

    let (offer_tx, offer_rx) = mpsc::unbounded_channel::<Offer>();
    let echoed = Arc::new(AtomicU64::new(0));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let server_echoed = echoed.clone();
    let server_variant = variant.clone();
    std::thread::spawn(move || {
        pin_to(0);
        let _ = tid_tx.send(gettid());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        match server_variant.as_str() {
            "webrtc" => rt.block_on(serve_webrtc(offer_rx, server_echoed)),
            "server" => rt.block_on(serve_server(offer_rx, server_echoed)),
            _ => rt.block_on(serve_shared(offer_rx, server_echoed)),
        }
    });
    let server_tid = tid_rx.recv().expect("server thread");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(|| pin_to(1))
        .build()
        .expect("client runtime");
    pin_to(1);
    rt.block_on(async move {
        let app = axum::Router::new().route(
            "/offer",
            axum::routing::post(move |body: String| {
                let offers = offer_tx.clone();
                async move {
                    let (reply, answer) = oneshot::channel();
                    let _ = offers.send((body, reply));
                    match answer.await {
                        Ok(Ok(sdp)) => (axum::http::StatusCode::CREATED, sdp),
                        Ok(Err(e)) => (axum::http::StatusCode::BAD_REQUEST, e),
                        Err(_) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("http");
        let url = format!("http://{}/offer", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        let opts = ClientOptions {
            decode: false,
            connect_timeout: Duration::from_secs(10),
            codec: AudioCodec::Opus,
            bind_ip: "127.0.0.1".parse().expect("ip"),
            ice_servers: vec![],
            relay_only: false,
            tcp_only: false,
            form_session: None,
            faults: voxrelay::transport::impair::NetworkFaults::NONE,
            audio_out: None,
            // Every frame on the wire: the bench measures the transport per packet.
            dtx: false,
        };
        let frames = (seconds as usize + 10) * 50;
        let mut clients = Vec::with_capacity(calls);
        for _ in 0..calls {
            let client = Client::connect(&http, &url, "prototype", opts.clone()).await.expect("client connects");
            client.queue((0..frames).map(|_| OutFrame::Opus { payload: Bytes::from_static(&PAYLOAD), voiced: false }));
            clients.push(client);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (cpu0, echoed0, at0) = (thread_cpu_ns(server_tid), echoed.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (cpu1, echoed1, elapsed) = (thread_cpu_ns(server_tid), echoed.load(Ordering::Relaxed), at0.elapsed());
        let received: usize = clients.iter().map(|c| c.received().len()).sum();
        let cpu_s = (cpu1 - cpu0) as f64 / 1e9;
        let packets = echoed1 - echoed0;
        let call_seconds = calls as f64 * elapsed.as_secs_f64();
        println!(
            "| {variant} | {calls} | {:.1} | {:.2} | {:.1} | {:.0} | {received} |",
            100.0 * cpu_s / elapsed.as_secs_f64(),
            1000.0 * cpu_s / call_seconds,
            1e6 * cpu_s / packets.max(1) as f64,
            packets as f64 / call_seconds,
        );
        std::process::exit(0);
    });
}
