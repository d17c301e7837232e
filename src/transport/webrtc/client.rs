//! A WebRTC client of voxrelay's realtime API, as a browser would be: offers Opus audio and the
//! `oai-events` data channel, sends audio paced at 20 ms, and records what comes back. Used by
//! the load generator and by the integration tests, so both exercise exactly the code path a
//! real client takes (ICE, DTLS, SRTP, SCTP over 127.0.0.1 or any address given).
//!
//! Sending costs nothing between spurts: the outbox holds frames already encoded (or PCM,
//! encoded on the way), and an empty outbox sends the 3-byte Opus silence packet, or with DTX
//! (`ClientOptions::dtx`) what a browser's encoder sends in silence.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use voxrelay_media::{AudioCodec, OPUS_SILENCE, SAMPLES_48K};
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemoteEvent;
use webrtc::peer_connection::{RTCConfigurationBuilder, RTCIceTransportPolicy, RTCPeerConnectionState};

use super::client_audio::{ClientSink, FrameDecoder, send_loop};
use super::peer::{
    OPUS_PAYLOAD_TYPE, Peer, PeerEvent, PeerEvents, Sockets, audio_track, build_peer_configured, default_payload_type,
    spawn_data_channel_reader, wait_gathered,
};

/// A frame waiting to be sent.
#[derive(Clone)]
pub enum OutFrame {
    Pcm(Box<[i16; SAMPLES_48K]>),
    /// Already encoded; `voiced` says whether it carries speech (for latency measurement).
    Opus {
        payload: Bytes,
        voiced: bool,
    },
}

#[derive(Default)]
pub(super) struct Outbox {
    pub queue: VecDeque<OutFrame>,
    /// Frames sent so far: the server's audio clock starts at the first one.
    pub sent_frames: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub at: Instant,
    pub voiced: bool,
}

/// One RTP packet received from the server.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub at: Instant,
    pub seq: u16,
    pub timestamp: u32,
    pub payload_len: usize,
    /// RMS of the decoded frame, when the client decodes (see [`ClientOptions::decode`]).
    pub rms: Option<f64>,
    /// The payload carried Opus in-band FEC for the frame before it.
    pub fec: bool,
}

impl Received {
    /// Voiced by decoded energy when decoded, else by size: the server sends the 3-byte silence
    /// packet whenever the agent is quiet, and real speech frames are tens of bytes.
    pub fn voiced(&self) -> bool {
        match self.rms {
            Some(r) => r > VOICED_RMS,
            None => self.payload_len > OPUS_SILENCE.len() + 4,
        }
    }
}

/// Decoded frames above this RMS count as voiced (speech frames are in the thousands; Opus
/// silence decodes to zeros).
pub const VOICED_RMS: f64 = 200.0;

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Decode received audio to measure its energy (costs a decoder per client).
    pub decode: bool,
    pub connect_timeout: Duration,
    /// The only codec offered (browsers offer Opus; SIP gateways often G.711 only).
    pub codec: AudioCodec,
    /// Local address for ICE host candidates: loopback for a local server; a routable address
    /// (or 0.0.0.0, every interface) for a remote one.
    pub bind_ip: std::net::IpAddr,
    /// ICE servers (e.g. the session's `ice_servers`) and whether to use only their relays.
    pub ice_servers: Vec<webrtc::peer_connection::RTCIceServer>,
    pub relay_only: bool,
    /// ICE over TCP only (no UDP sockets), as a client behind a UDP-blocking firewall; needs
    /// a server with `--rtc-tcp`.
    pub tcp_only: bool,
    /// Post the offer as the OpenAI SDKs' `calls.create` does: a multipart form with `sdp` and
    /// this `session` object.
    pub form_session: Option<Value>,
    /// Loss, delay and reordering applied to the RTP this client sends (a bad network).
    pub faults: crate::transport::impair::NetworkFaults,
    /// Where the decoded audio it receives goes (`voxrelay talk`'s speaker or WAV file); needs
    /// `decode`.
    pub audio_out: Option<mpsc::UnboundedSender<Heard>>,
    /// Send Opus with DTX when the answer asks for it (`usedtx=1`), as browsers do
    /// ([`voxrelay_media::DtxGate`]).
    /// Off (the default): a packet every 20 ms, as aiortc sends.
    pub dtx: bool,
}

/// A received frame, decoded: its RTP timestamp (the sender's clock, so gaps and order can be
/// rebuilt) and its samples at `rate` (48 kHz for Opus, 8 kHz for G.711).
#[derive(Clone, Debug)]
pub struct Heard {
    pub seq: u16,
    pub timestamp: u32,
    pub rate: u32,
    pub pcm: Vec<i16>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            decode: true,
            connect_timeout: Duration::from_secs(20),
            codec: AudioCodec::Opus,
            bind_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            ice_servers: Vec::new(),
            relay_only: false,
            tcp_only: false,
            form_session: None,
            faults: crate::transport::impair::NetworkFaults::NONE,
            audio_out: None,
            dtx: false,
        }
    }
}

#[derive(Debug)]
pub enum ClientError {
    Http(String),
    /// The server answered the offer with this status and body.
    Refused(u16, String),
    WebRtc(String),
    Timeout(&'static str),
}

impl ClientError {
    /// A short stable label, for counting failures by cause.
    pub fn cause(&self) -> String {
        match self {
            ClientError::Http(_) => "http".into(),
            ClientError::Refused(status, _) => format!("http_{status}"),
            ClientError::WebRtc(_) => "webrtc".into(),
            ClientError::Timeout(what) => format!("timeout: {what}"),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Http(e) => write!(f, "HTTP: {e}"),
            ClientError::Refused(s, body) => write!(f, "offer refused with {s}: {body}"),
            ClientError::WebRtc(e) => write!(f, "WebRTC: {e}"),
            ClientError::Timeout(what) => write!(f, "timed out: {what}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Timings of the call setup.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetupTimes {
    /// POST offer → answer received.
    pub answer: Duration,
    /// Start → ICE + DTLS connected.
    pub connected: Duration,
}

/// How the client reaches the server.
enum Transport {
    WebRtc {
        peer: Peer,
        dc: Arc<dyn DataChannel>,
        /// The outbound track and its SSRC, for the RTCP this client writes itself.
        track: Arc<TrackLocalStaticRTP>,
        ssrc: u32,
        /// The server's stream, from its first packet: what this client's reports are about.
        server_ssrc: Arc<std::sync::OnceLock<u32>>,
    },
    /// Plain RTP (PROTOCOL.md §7) with its events WebSocket.
    Rtp {
        ws_out: mpsc::UnboundedSender<String>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    },
}

pub struct Client {
    transport: Transport,
    pub events: mpsc::UnboundedReceiver<(Instant, Value)>,
    pub location: String,
    pub setup: SetupTimes,
    /// The server's answer SDP (empty for plain RTP).
    pub answer_sdp: String,
    /// This client sends with DTX: it asked to ([`ClientOptions::dtx`]) and the answer agreed.
    pub dtx: bool,
    outbox: Arc<Mutex<Outbox>>,
    sent: Arc<Mutex<Vec<Sent>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

pub fn rms(frame: &[i16]) -> f64 {
    (frame.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / frame.len().max(1) as f64).sqrt()
}

impl Client {
    /// Offers a call at `url` (e.g. `http://127.0.0.1:8080/v1/realtime`) with `token` and waits
    /// until the peer connection is up.
    pub async fn connect(http: &reqwest::Client, url: &str, token: &str, opts: ClientOptions) -> Result<Client, ClientError> {
        let begin = Instant::now();
        let webrtc_err = |e: webrtc::error::Error| ClientError::WebRtc(e.to_string());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut config = RTCConfigurationBuilder::new().with_ice_servers(opts.ice_servers.clone());
        if opts.relay_only {
            config = config.with_ice_transport_policy(RTCIceTransportPolicy::Relay);
        }
        let config = config.build();
        let local = std::net::SocketAddr::new(opts.bind_ip, 0);
        let sockets = if opts.tcp_only { Sockets { udp: None, tcp: Some(local) } } else { Sockets::udp(local) };
        let peer = build_peer_configured(sockets, tx.clone(), &[opts.codec], config, false).await.map_err(webrtc_err)?;
        let (track, ssrc) = audio_track("client", opts.codec);
        peer.add_track(track.clone()).await.map_err(webrtc_err)?;
        let dc = peer.create_data_channel("oai-events", None).await.map_err(webrtc_err)?;
        spawn_data_channel_reader(dc.clone(), tx);
        let offer = peer.create_offer(None).await.map_err(webrtc_err)?;
        peer.set_local_description(offer).await.map_err(webrtc_err)?;
        let early = wait_gathered(&mut rx).await.map_err(ClientError::Timeout)?;
        let offer_sdp = peer.local_description().await.ok_or(ClientError::Timeout("no local description"))?.sdp;
        let posted = Instant::now();
        let (content_type, body) = match &opts.form_session {
            None => ("application/sdp".to_string(), offer_sdp),
            Some(session) => sdk_form(&offer_sdp, session),
        };
        let resp = http
            .post(url)
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body = resp.text().await.map_err(|e| ClientError::Http(e.to_string()))?;
        if status != 201 {
            let _ = peer.close().await;
            return Err(ClientError::Refused(status, body));
        }
        let answer_time = posted.elapsed();
        let answer = rtc::peer_connection::sdp::RTCSessionDescription::answer(body.clone()).map_err(webrtc_err)?;
        peer.set_remote_description(answer).await.map_err(webrtc_err)?;
        if opts.tcp_only {
            // webrtc-rs dials a passive TCP candidate only when it arrives through
            // add_ice_candidate, not from the SDP.
            for line in body
                .lines()
                .filter(|l| l.starts_with("a=candidate:") && l.to_ascii_lowercase().contains(" tcp ") && l.contains("tcptype passive"))
            {
                let candidate = webrtc::peer_connection::RTCIceCandidateInit {
                    candidate: line.trim_start_matches("a=").to_string(),
                    ..Default::default()
                };
                peer.add_ice_candidate(candidate).await.map_err(webrtc_err)?;
            }
        }

        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
        let decode = opts.decode.then_some(opts.codec);
        let server_ssrc = Arc::new(std::sync::OnceLock::new());
        let inbound = Inbound { received: received.clone(), server_ssrc: server_ssrc.clone(), decode, audio_out: opts.audio_out.clone() };
        tokio::spawn(pump_peer_events(early, rx, ev_tx, connected_tx, inbound));
        match tokio::time::timeout(opts.connect_timeout, connected_rx).await {
            Ok(Ok(())) => {}
            _ => {
                let _ = peer.close().await;
                return Err(ClientError::Timeout("ICE/DTLS did not connect"));
            }
        }
        let setup = SetupTimes { answer: answer_time, connected: begin.elapsed() };
        let outbox = Arc::new(Mutex::new(Outbox::default()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let pt = default_payload_type(opts.codec);
        let dtx = opts.dtx && opts.codec == AudioCodec::Opus && voxrelay_signaling::sdp_dtx::asks_for_dtx(&body);
        let sink = ClientSink::Track(track.clone());
        tokio::spawn(send_loop(sink, ssrc, pt, opts.codec, dtx, outbox.clone(), sent.clone(), opts.faults));
        Ok(Client {
            transport: Transport::WebRtc { peer, dc, track, ssrc, server_ssrc },
            events: ev_rx,
            location,
            setup,
            answer_sdp: body,
            dtx,
            outbox,
            sent,
            received,
        })
    }

    /// Starts a plain-RTP session (`POST {base}/v1/rtp`, API key) and attaches to its events
    /// WebSocket; audio goes over unencrypted UDP to the port the server gives.
    pub async fn connect_rtp(http: &reqwest::Client, base: &str, api_key: &str, session: &Value) -> Result<Client, ClientError> {
        let begin = Instant::now();
        let resp = http
            .post(format!("{base}/v1/rtp"))
            .bearer_auth(api_key)
            .json(session)
            .send()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| ClientError::Http(e.to_string()))?;
        if status != 201 {
            return Err(ClientError::Refused(status, body));
        }
        let answer = begin.elapsed();
        let v: Value = serde_json::from_str(&body).map_err(|e| ClientError::Http(format!("bad JSON: {e}")))?;
        let ip: std::net::IpAddr = v["rtp"]["ip"].as_str().and_then(|s| s.parse().ok()).ok_or(ClientError::Http("no rtp.ip".into()))?;
        let port = v["rtp"]["port"].as_u64().and_then(|p| u16::try_from(p).ok()).ok_or(ClientError::Http("no rtp.port".into()))?;
        let pt = v["payload_type"].as_u64().unwrap_or(u64::from(OPUS_PAYLOAD_TYPE)) as u8;
        let location = v["location"].as_str().unwrap_or("").to_string();
        let id = v["id"].as_str().unwrap_or("").to_string();
        let server = std::net::SocketAddr::new(ip, port);
        let unspecified: std::net::IpAddr =
            if ip.is_ipv4() { std::net::Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
        let local = std::net::SocketAddr::new(unspecified, 0);
        let socket = Arc::new(tokio::net::UdpSocket::bind(local).await.map_err(|e| ClientError::WebRtc(e.to_string()))?);

        let ws_url = format!("{}/v1/rtp/{id}/events", base.replacen("http", "ws", 1));
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str())
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let auth = format!("Bearer {api_key}").parse().map_err(|_| ClientError::Http("bad API key".into()))?;
        request.headers_mut().insert("authorization", auth);
        let (ws, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| ClientError::Http(format!("events socket: {e}")))?;
        let (mut ws_sink, mut ws_stream) = futures_util::StreamExt::split(ws);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (ws_out, mut ws_out_rx) = mpsc::unbounded_channel::<String>();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(Ok(msg)) = ws_stream.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(text) = msg {
                    let v = serde_json::from_str::<Value>(&text).unwrap_or_else(|_| serde_json::json!({"type": "client.invalid_json"}));
                    let _ = ev_tx.send((Instant::now(), v));
                }
            }
        }));
        tasks.push(tokio::spawn(async move {
            use futures_util::SinkExt;
            while let Some(text) = ws_out_rx.recv().await {
                if ws_sink.send(tokio_tungstenite::tungstenite::Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        }));
        let received = Arc::new(Mutex::new(Vec::new()));
        {
            let (socket, received) = (socket.clone(), received.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                    if from != server {
                        continue;
                    }
                    let Some(p) = crate::transport::plain_rtp::parse(&buf[..n]) else {
                        continue;
                    };
                    received.lock().unwrap_or_else(|e| e.into_inner()).push(Received {
                        at: Instant::now(),
                        seq: p.header.sequence_number,
                        timestamp: p.header.timestamp,
                        payload_len: p.payload.len(),
                        rms: None,
                        fec: p.header.payload_type == OPUS_PAYLOAD_TYPE && voxrelay_media::opus_has_fec(&p.payload),
                    });
                }
            }));
        }
        let outbox = Arc::new(Mutex::new(Outbox::default()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let sink = ClientSink::Udp { socket, to: server };
        let faults = crate::transport::impair::NetworkFaults::NONE;
        tasks.push(tokio::spawn(send_loop(sink, rand::random(), pt, AudioCodec::Opus, false, outbox.clone(), sent.clone(), faults)));
        let setup = SetupTimes { answer, connected: begin.elapsed() };
        Ok(Client {
            transport: Transport::Rtp { ws_out, tasks },
            events: ev_rx,
            location,
            setup,
            answer_sdp: String::new(),
            dtx: false,
            outbox,
            sent,
            received,
        })
    }

    /// Queues frames after what is already queued; returns the audio time (ms since the call's
    /// first sent sample) at which they start.
    pub fn queue(&self, frames: impl IntoIterator<Item = OutFrame>) -> u64 {
        let mut o = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        let start_ms = (o.sent_frames + o.queue.len() as u64) * 20;
        o.queue.extend(frames);
        start_ms
    }

    /// Queues 48 kHz PCM in 20 ms frames (zero-padded at the end).
    pub fn say(&self, pcm: &[i16]) -> u64 {
        self.queue(pcm.chunks(SAMPLES_48K).map(|chunk| {
            let mut f = Box::new([0i16; SAMPLES_48K]);
            f[..chunk.len()].copy_from_slice(chunk);
            OutFrame::Pcm(f)
        }))
    }

    /// Drops whatever is queued and says `pcm` right away (a caller cutting in).
    pub fn interrupt_with(&self, pcm: &[i16]) -> u64 {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).queue.clear();
        self.say(pcm)
    }

    pub fn queued(&self) -> usize {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).queue.len()
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub async fn send_event(&self, ev: &Value) -> Result<(), ClientError> {
        self.send_text(&ev.to_string()).await
    }

    /// Sends raw text as a client event (tests use it to send malformed events).
    pub async fn send_text(&self, text: &str) -> Result<(), ClientError> {
        match &self.transport {
            Transport::WebRtc { dc, .. } => dc.send_text(text).await.map_err(|e| ClientError::WebRtc(e.to_string())),
            Transport::Rtp { ws_out, .. } => ws_out.send(text.to_string()).map_err(|_| ClientError::Http("events socket closed".into())),
        }
    }

    /// Sends the server an RTCP receiver report saying this client lost `fraction_lost` / 256
    /// of the server's packets since its previous report, as a receiver on a lossy path would
    /// (WebRTC, once a packet came; the library's own reports of the real loss keep going too).
    pub async fn report_loss(&self, fraction_lost: u8) -> Result<(), ClientError> {
        use rtc::rtcp::{receiver_report::ReceiverReport, reception_report::ReceptionReport};
        let Transport::WebRtc { track, ssrc, server_ssrc, .. } = &self.transport else {
            return Err(ClientError::Http("plain RTP has no RTCP here".into()));
        };
        let Some(&server_ssrc) = server_ssrc.get() else {
            return Err(ClientError::Timeout("no packet from the server to report on yet"));
        };
        let block = ReceptionReport { ssrc: server_ssrc, fraction_lost, ..Default::default() };
        let report = ReceiverReport { ssrc: *ssrc, reports: vec![block], ..Default::default() };
        track.write_rtcp(vec![Box::new(report)]).await.map_err(|e| ClientError::WebRtc(e.to_string()))
    }

    pub async fn close(&self) {
        match &self.transport {
            Transport::WebRtc { peer, .. } => {
                let _ = peer.close().await;
            }
            Transport::Rtp { tasks, .. } => tasks.iter().for_each(|t| t.abort()),
        }
    }

    /// The connection's round-trip time as ICE last measured it (WebRTC only).
    pub async fn rtt(&self) -> Option<Duration> {
        match &self.transport {
            Transport::WebRtc { peer, .. } => super::peer::ice_rtt(peer).await,
            Transport::Rtp { .. } => None,
        }
    }

    /// ICE restart of the call (`PATCH` of its `Location` at `base`, `If-Match: *`), as the
    /// web page does on a network change; returns the call's new ETag.
    pub async fn restart_ice(&self, http: &reqwest::Client, base: &str, token: &str) -> Result<Option<String>, ClientError> {
        let Transport::WebRtc { peer, .. } = &self.transport else { return Err(ClientError::Http("plain RTP has no ICE".into())) };
        let resource = super::ice_client::Resource::new(http, &format!("{base}{}", self.location), token);
        super::ice_client::restart(peer, &resource, None).await
    }
}

/// The multipart form the OpenAI SDKs post to `/v1/realtime/calls`: (content type, body).
fn sdk_form(sdp: &str, session: &Value) -> (String, String) {
    let boundary = format!("voxrelay{:016x}", rand::random::<u64>());
    let part = |name: &str, extra: &str, value: &str| {
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n{extra}\r\n{value}\r\n")
    };
    let body = format!(
        "{}{}--{boundary}--\r\n",
        part("sdp", "", sdp),
        part("session", "Content-Type: application/json\r\n", &session.to_string())
    );
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A server event as JSON. A non-JSON one is a server bug: surfaced as `client.invalid_json`
/// rather than dropped.
pub(crate) fn server_event(text: String) -> Value {
    serde_json::from_str::<Value>(&text).unwrap_or_else(|_| serde_json::json!({"type": "client.invalid_json", "raw": text}))
}

/// Where the server's packets go as they arrive.
struct Inbound {
    received: Arc<Mutex<Vec<Received>>>,
    server_ssrc: Arc<std::sync::OnceLock<u32>>,
    decode: Option<AudioCodec>,
    audio_out: Option<mpsc::UnboundedSender<Heard>>,
}

async fn pump_peer_events(
    early: Vec<PeerEvent>,
    rx: mpsc::UnboundedReceiver<PeerEvent>,
    ev_tx: mpsc::UnboundedSender<(Instant, Value)>,
    connected_tx: tokio::sync::oneshot::Sender<()>,
    inbound: Inbound,
) {
    let Inbound { received, server_ssrc, decode, audio_out } = inbound;
    let mut connected_tx = Some(connected_tx);
    let mut events = PeerEvents::new(early, rx);
    while let Some(ev) = events.next().await {
        match ev {
            PeerEvent::State(RTCPeerConnectionState::Connected) => {
                if let Some(tx) = connected_tx.take() {
                    let _ = tx.send(());
                }
            }
            PeerEvent::State(RTCPeerConnectionState::Closed | RTCPeerConnectionState::Failed) => break,
            PeerEvent::DataChannelText(text) => {
                let _ = ev_tx.send((Instant::now(), server_event(text)));
            }
            PeerEvent::Track(remote) => {
                let (received, server_ssrc) = (received.clone(), server_ssrc.clone());
                let audio_out = audio_out.clone();
                tokio::spawn(async move {
                    let mut decoder = decode.and_then(FrameDecoder::new);
                    while let Some(ev) = remote.poll().await {
                        let TrackRemoteEvent::OnRtpPacket(p) = ev else { continue };
                        let level = decoder.as_mut().map(|d| {
                            let (rate, pcm) = d.decode(&p.payload);
                            if let Some(out) = &audio_out {
                                let _ = out.send(Heard {
                                    seq: p.header.sequence_number,
                                    timestamp: p.header.timestamp,
                                    rate,
                                    pcm: pcm.to_vec(),
                                });
                            }
                            rms(pcm)
                        });
                        let _ = server_ssrc.set(p.header.ssrc);
                        received.lock().unwrap_or_else(|e| e.into_inner()).push(Received {
                            at: Instant::now(),
                            seq: p.header.sequence_number,
                            timestamp: p.header.timestamp,
                            payload_len: p.payload.len(),
                            rms: level,
                            fec: p.header.payload_type == OPUS_PAYLOAD_TYPE && voxrelay_media::opus_has_fec(&p.payload),
                        });
                    }
                });
            }
            _ => {}
        }
    }
}
