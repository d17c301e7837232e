//! Peer connections over webrtc-rs 0.21: builds peer connections that speak Opus (or G.711)
//! audio and data channels, and turns the library's callbacks into one ordered stream of
//! [`PeerEvent`]s. Used by the server (answerer) and by the client (offerer), so both sides
//! negotiate exactly the same way.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU, MediaEngine};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use tokio::sync::mpsc;
use voxrelay_media::AudioCodec;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
};

/// Opus as browsers offer it; the answer follows the offer's payload type, 111 is only what we
/// put in our own offers.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Host candidates on a known interface gather at once; this bounds a broken network setup.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// 1:1 call answers add `usedtx=1` (RFC 7587 §6.1: we prefer to receive DTX;
/// `voxrelay_signaling::sdp_dtx`, as the stack's answer repeats the offer's parameters). A browser
/// then stops sending while its user is silent (one DTX packet, then a comfort-noise update every
/// 400 ms), and the audio worker neither decodes nor analyses those pauses (media `jitter`:
/// `Pop::Dtx`). A caller of a voice agent is silent for most of the call, while the agent talks.
pub(crate) fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// The audio codecs voxrelay negotiates (the media crate's names), with their RTP details.
pub fn rtp_codec(codec: AudioCodec) -> RTCRtpCodec {
    let g711 = |mime: &str| RTCRtpCodec {
        mime_type: mime.to_owned(),
        clock_rate: 8_000,
        channels: 1,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    };
    match codec {
        AudioCodec::Opus => opus_codec(),
        AudioCodec::Pcmu => g711(MIME_TYPE_PCMU),
        AudioCodec::Pcma => g711(MIME_TYPE_PCMA),
        // What RTP would call it (RFC 3551 §4.5.11, though its byte order is big-endian); never
        // registered: only Realtime WebSocket sessions use L16, and they have no RTP.
        AudioCodec::L16 => RTCRtpCodec { clock_rate: 24_000, ..g711("audio/L16") },
    }
}

/// The payload type we put in our own offers (RFC 3551 static types for G.711).
pub fn default_payload_type(codec: AudioCodec) -> u8 {
    match codec {
        AudioCodec::Opus => OPUS_PAYLOAD_TYPE,
        AudioCodec::Pcmu => 0,
        AudioCodec::Pcma => 8,
        AudioCodec::L16 => 96,
    }
}

/// RTP timestamp units in one 20 ms frame.
pub fn samples_per_frame(codec: AudioCodec) -> u32 {
    rtp_codec(codec).clock_rate / 50
}

/// What happened on a peer connection, in the order the library reported it.
pub(crate) enum PeerEvent {
    GatheringComplete,
    State(RTCPeerConnectionState),
    Track(Arc<dyn TrackRemote>),
    DataChannelOpen(Arc<dyn DataChannel>),
    DataChannelText(String),
    /// A data channel closed; its label.
    DataChannelClosed(String),
}

/// A peer's events in order: those seen while gathering first (see [`wait_gathered`]), then the
/// live ones.
pub(crate) struct PeerEvents {
    early: std::vec::IntoIter<PeerEvent>,
    rx: mpsc::UnboundedReceiver<PeerEvent>,
}

impl PeerEvents {
    pub(crate) fn new(early: Vec<PeerEvent>, rx: mpsc::UnboundedReceiver<PeerEvent>) -> Self {
        PeerEvents { early: early.into_iter(), rx }
    }

    /// The next event; `None` once the peer connection is gone.
    pub(crate) async fn next(&mut self) -> Option<PeerEvent> {
        match self.early.next() {
            Some(ev) => Some(ev),
            None => self.rx.recv().await,
        }
    }
}

struct Handler {
    tx: mpsc::UnboundedSender<PeerEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.send(PeerEvent::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(PeerEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tx.send(PeerEvent::Track(track));
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        spawn_data_channel_reader(dc, self.tx.clone());
    }
}

/// A data-channel message as a client event's text. A binary or non-UTF-8 message becomes text
/// the parser will refuse, so the client gets an `error` event instead of silence.
pub(crate) fn client_text(data: &[u8]) -> String {
    String::from_utf8(data.to_vec()).unwrap_or_else(|_| "\u{0}binary".to_string())
}

/// Forwards a data channel's events into the peer's event stream.
pub(crate) fn spawn_data_channel_reader(dc: Arc<dyn DataChannel>, tx: mpsc::UnboundedSender<PeerEvent>) {
    tokio::spawn(async move {
        let label = dc.label().await.unwrap_or_default();
        while let Some(event) = dc.poll().await {
            let sent = match event {
                DataChannelEvent::OnOpen => tx.send(PeerEvent::DataChannelOpen(dc.clone())),
                DataChannelEvent::OnMessage(msg) => tx.send(PeerEvent::DataChannelText(client_text(&msg.data))),
                DataChannelEvent::OnClose => {
                    let _ = tx.send(PeerEvent::DataChannelClosed(label));
                    break;
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
    });
}

/// Hands out UDP ports for media from a configured range, round robin, skipping ports that are
/// taken. `None` range: the OS picks (port 0).
pub struct PortAllocator {
    ip: IpAddr,
    range: Option<(u16, u16)>,
    /// Also listen for ICE-TCP (passive host candidates, RFC 6544) on the same port number.
    tcp: bool,
    next: AtomicU32,
}

/// Where one peer connection's ICE host candidates live.
#[derive(Clone, Copy, Debug)]
pub struct Sockets {
    pub udp: Option<SocketAddr>,
    /// Passive ICE-TCP: the peer connects to it, so calls work where UDP is blocked.
    pub tcp: Option<SocketAddr>,
}

impl Sockets {
    pub fn udp(addr: SocketAddr) -> Self {
        Self { udp: Some(addr), tcp: None }
    }
}

impl PortAllocator {
    pub fn new(ip: IpAddr, range: Option<(u16, u16)>) -> Self {
        Self { ip, range, tcp: false, next: AtomicU32::new(0) }
    }

    pub fn with_tcp(mut self, tcp: bool) -> Self {
        self.tcp = tcp;
        self
    }

    /// Whether calls also get a passive ICE-TCP candidate on each port.
    pub fn tcp(&self) -> bool {
        self.tcp
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// An address whose port was free a moment ago (the peer connection binds it right after;
    /// a lost race shows up as a build error, which the caller reports as 503).
    /// With ICE-TCP on, the TCP port has the same number as the UDP one, so an operator opens
    /// one range for both protocols.
    pub fn allocate(&self) -> Option<Sockets> {
        let Some((lo, hi)) = self.range else {
            let any = SocketAddr::new(self.ip, 0);
            return Some(Sockets { udp: Some(any), tcp: self.tcp.then_some(any) });
        };
        let span = u32::from(hi - lo) + 1;
        for _ in 0..span {
            let offset = self.next.fetch_add(1, Ordering::Relaxed) % span;
            let addr = SocketAddr::new(self.ip, lo + offset as u16);
            if UdpSocket::bind(addr).is_ok() && (!self.tcp || std::net::TcpListener::bind(addr).is_ok()) {
                return Some(Sockets { udp: Some(addr), tcp: self.tcp.then_some(addr) });
            }
        }
        None
    }
}

pub(crate) type Peer = Arc<dyn PeerConnection>;

/// Builds a peer connection bound to `addr` that negotiates Opus, PCMU and PCMA (in that order
/// of preference) and reports to `tx`: a 1:1 call's, whose outbound track hears the peer's loss
/// reports ([`super::reports`]).
pub(crate) async fn build_peer(sockets: Sockets, tx: mpsc::UnboundedSender<PeerEvent>) -> Result<Peer, webrtc::error::Error> {
    let features = PeerFeatures { audio_levels: true, loss_reports: true };
    build_peer_full(sockets, tx, &ANSWER_CODECS, webrtc::peer_connection::RTCConfiguration::default(), features, None).await
}

/// What a peer connection negotiates and hears beyond its codecs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerFeatures {
    /// RFC 6464 audio levels.
    pub audio_levels: bool,
    /// The peer's RTCP reports reach the application ([`super::reports::LossReports`]): a 1:1
    /// call's, whose encoder follows them. Elsewhere nothing would read them.
    pub loss_reports: bool,
}

/// The codecs (in order of preference) and header extensions a peer connection negotiates, and
/// the interceptors for them: shared by the driver's peers and the loops' connections.
pub(crate) fn media_engine(codecs: &[AudioCodec], features: PeerFeatures) -> Result<(MediaEngine, Registry), rtc::shared::error::Error> {
    let PeerFeatures { audio_levels, loss_reports } = features;
    let mut media_engine = MediaEngine::default();
    for &codec in codecs {
        media_engine.register_codec(
            RTCRtpCodecParameters { rtp_codec: rtp_codec(codec), payload_type: default_payload_type(codec) },
            RtpCodecKind::Audio,
        )?;
    }
    // RFC 6464 levels: browsers send them when the answer keeps the offer's extmap; rooms rank
    // speakers by them without decoding.
    if audio_levels {
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: voxrelay_signaling::sdp::AUDIO_LEVEL_URI.to_string() },
            RtpCodecKind::Audio,
            None,
        )?;
    }
    // The library's default interceptors less NACK: it is negotiated for video only (no browser
    // offers it for Opus), so its generator and responder never bind to an audio stream, yet
    // every packet in and out was walked through both (BENCHMARKS.md "Interceptors").
    configure_simulcast_extension_headers(&mut media_engine)?;
    let mut registry = configure_rtcp_reports(configure_twcc_receiver_only(Registry::new(), &mut media_engine)?);
    if loss_reports {
        registry = registry.with(super::reports::LOSS_REPORTS_SLOT.into(), super::reports::LossReports::default());
    }
    Ok((media_engine, registry))
}

/// Every codec voxrelay answers with, in order of preference.
pub(crate) const ANSWER_CODECS: [AudioCodec; 3] = [AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::Pcma];

/// ICE liveness of a room participant's peer: keepalives every 500 ms, disconnected after 2 s
/// without an answer, failed 2 s later. A participant whose network vanished is gone from the
/// room within ≈ 4-5 s (a 1:1 call keeps webrtc-rs's defaults, 5 s + 25 s, and its own grace).
pub(crate) const ROOM_ICE_TIMEOUTS: IceTimeouts =
    IceTimeouts { disconnected: Duration::from_secs(2), failed: Duration::from_secs(2), keepalive: Duration::from_millis(500) };

#[derive(Clone, Copy, Debug)]
pub(crate) struct IceTimeouts {
    pub disconnected: Duration,
    pub failed: Duration,
    pub keepalive: Duration,
}

/// A room participant's peer: as [`build_peer`], with [`ROOM_ICE_TIMEOUTS`].
pub(crate) async fn build_room_peer(sockets: Sockets, tx: mpsc::UnboundedSender<PeerEvent>) -> Result<Peer, webrtc::error::Error> {
    let codecs = [AudioCodec::Opus];
    let features = PeerFeatures { audio_levels: true, loss_reports: false };
    build_peer_full(sockets, tx, &codecs, webrtc::peer_connection::RTCConfiguration::default(), features, Some(ROOM_ICE_TIMEOUTS)).await
}

/// Like [`build_peer`], with its codecs and an RTC configuration (ICE servers, relay-only policy).
/// `audio_levels`: negotiate RFC 6464 (the server does, so browsers send levels; the project's
/// own client does not, since it sends none).
pub(crate) async fn build_peer_configured(
    sockets: Sockets,
    tx: mpsc::UnboundedSender<PeerEvent>,
    codecs: &[AudioCodec],
    configuration: webrtc::peer_connection::RTCConfiguration,
    audio_levels: bool,
) -> Result<Peer, webrtc::error::Error> {
    build_peer_full(sockets, tx, codecs, configuration, PeerFeatures { audio_levels, loss_reports: false }, None).await
}

async fn build_peer_full(
    sockets: Sockets,
    tx: mpsc::UnboundedSender<PeerEvent>,
    codecs: &[AudioCodec],
    configuration: webrtc::peer_connection::RTCConfiguration,
    features: PeerFeatures,
    ice: Option<IceTimeouts>,
) -> Result<Peer, webrtc::error::Error> {
    let (media_engine, registry) = media_engine(codecs, features)?;
    let mut builder = PeerConnectionBuilder::new()
        .with_configuration(configuration)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler { tx }))
        .with_udp_addrs(dual_stack(sockets.udp))
        .with_tcp_addrs(dual_stack(sockets.tcp));
    if sockets.udp.is_none() || ice.is_some() {
        let mut settings = webrtc::peer_connection::SettingEngineBuilder::new();
        if sockets.udp.is_none() {
            // TCP only (a client behind a UDP-blocking firewall): no UDP candidates at all.
            use rtc::ice::network_type::NetworkType;
            settings = settings.with_network_types(vec![NetworkType::Tcp4, NetworkType::Tcp6]);
        }
        if let Some(t) = ice {
            settings = settings.with_ice_timeouts(Some(t.disconnected), Some(t.failed), Some(t.keepalive));
        }
        builder = builder.with_setting_engine(settings.build());
    }
    let pc = builder.build().await?;
    Ok(Arc::new(pc))
}

/// The addresses a driver binds for `addr`. The library turns a wildcard into one address per
/// interface *of its own family*, so `::` alone would give IPv4 callers no candidate: a dual-stack
/// media IP binds `0.0.0.0` as well (as the loop does, `rtc_loop/addrs.rs`).
fn dual_stack(addr: Option<SocketAddr>) -> Vec<SocketAddr> {
    match addr {
        Some(a) if a.ip() == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) => {
            vec![SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), a.port()), a]
        }
        other => other.into_iter().collect(),
    }
}

/// A local audio track of `codec` with a random SSRC, for sending audio we packetize ourselves.
pub(crate) fn audio_track(label: &str, codec: AudioCodec) -> (Arc<TrackLocalStaticRTP>, u32) {
    let (track, ssrc) = audio_stream_track(label, codec);
    (Arc::new(TrackLocalStaticRTP::new(track)), ssrc)
}

/// The media description of such a track (a sans-IO peer connection adds it as is).
pub fn audio_stream_track(label: &str, codec: AudioCodec) -> (MediaStreamTrack, u32) {
    let ssrc: u32 = rand::random();
    let track = MediaStreamTrack::new(
        format!("{label}-stream"),
        format!("{label}-audio"),
        format!("{label} audio"),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec: rtp_codec(codec),
            ..Default::default()
        }],
    );
    (track, ssrc)
}

/// Waits for ICE gathering to complete (we do not trickle: the answer carries all candidates).
/// Other events seen meanwhile are returned so the caller can replay them.
pub(crate) async fn wait_gathered(rx: &mut mpsc::UnboundedReceiver<PeerEvent>) -> Result<Vec<PeerEvent>, &'static str> {
    let mut seen = Vec::new();
    let wait = async {
        while let Some(ev) = rx.recv().await {
            if matches!(ev, PeerEvent::GatheringComplete) {
                return Ok(());
            }
            seen.push(ev);
        }
        Err("peer connection closed while gathering")
    };
    match tokio::time::timeout(GATHER_TIMEOUT, wait).await {
        Ok(Ok(())) => Ok(seen),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("ICE gathering timed out"),
    }
}

/// The selected ICE pair's latest round-trip time (measured by ICE's consent checks), once
/// there is one.
pub(crate) async fn ice_rtt(peer: &Peer) -> Option<Duration> {
    let report = peer.get_stats(std::time::Instant::now(), webrtc::peer_connection::StatsSelector::None).await;
    report
        .candidate_pairs()
        .filter(|p| p.nominated && p.current_round_trip_time > 0.0)
        .map(|p| Duration::from_secs_f64(p.current_round_trip_time))
        .next()
}
