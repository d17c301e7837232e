//! A room participant's client (PROTOCOL.md §4), as a browser would be: joins with a room
//! token, offers its microphone on the first audio m-line and one receiving m-line per slot,
//! opens `room-events`, sends Opus paced at 20 ms (with RFC 6464 levels when asked, as
//! browsers do), and records every packet it receives with its payload. Used by the tests and
//! the load generator's room mode.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::Value;
use tokio::sync::mpsc;
use voxrelay_media::{AudioCodec, AudioLevel, MAX_OPUS_PACKET, OPUS_SILENCE, OpusEncoder, SAMPLES_48K};
use voxrelay_signaling::room_wire::ROOM_EVENTS_LABEL;
use voxrelay_signaling::sdpfrag::{IceFragment, sdp_attribute};
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemoteEvent;
use webrtc::peer_connection::{RTCConfigurationBuilder, RTCPeerConnectionState};

use super::client::{ClientError, server_event};
use super::ice_client::{Resource, candidates_of};
use super::peer::{
    OPUS_PAYLOAD_TYPE, Peer, PeerEvent, PeerEvents, Sockets, audio_track, build_peer_configured, spawn_data_channel_reader, wait_gathered,
};

#[derive(Clone, Debug)]
pub struct RoomClientOptions {
    /// Receiving audio m-lines to offer (the speakers heard at once); 0 offers none.
    pub slots: usize,
    /// Send a microphone (the first m-line sends).
    pub publish: bool,
    /// Negotiate and send RFC 6464 levels with every packet, as browsers do.
    pub audio_levels: bool,
    pub bind_ip: std::net::IpAddr,
    pub connect_timeout: Duration,
    /// ICE servers (TURN) and whether to use only their relays.
    pub ice_servers: Vec<webrtc::peer_connection::RTCIceServer>,
    pub relay_only: bool,
    /// Where to send the offer: a room join, or WHIP/WHEP (PROTOCOL.md §3: no data channel).
    pub endpoint: Endpoint,
    /// WHIP/WHEP: post the offer without candidates and send them in a `PATCH` afterwards.
    pub trickle: bool,
    /// Where received packets go instead of the client's own log (`received()`), for a client
    /// that runs for hours (`voxrelay talk`).
    pub packets_out: Option<mpsc::UnboundedSender<ReceivedPacket>>,
}

/// How the client enters the room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Endpoint {
    #[default]
    Join,
    /// WHIP ingest: publishes only.
    Whip,
    /// WHEP playback: receives only.
    Whep,
}

impl Default for RoomClientOptions {
    fn default() -> Self {
        RoomClientOptions {
            slots: 3,
            publish: true,
            audio_levels: true,
            bind_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            connect_timeout: Duration::from_secs(20),
            ice_servers: Vec::new(),
            relay_only: false,
            endpoint: Endpoint::Join,
            trickle: false,
            packets_out: None,
        }
    }
}

/// Frames louder than this (-dBov) count as voiced: speech, not the fixture's pauses.
const VOICED_BELOW_DBOV: u8 = 50;

/// One packet sent: its payload (what a subscriber must receive unchanged).
#[derive(Clone, Debug)]
pub struct SentPacket {
    pub at: Instant,
    pub payload: Bytes,
    pub voiced: bool,
}

/// One packet received on a slot.
#[derive(Clone, Debug)]
pub struct ReceivedPacket {
    pub at: Instant,
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
}

/// A frame to send: its Opus payload and level.
struct Frame {
    payload: Bytes,
    level: AudioLevel,
    voiced: bool,
}

pub struct RoomClient {
    peer: Peer,
    /// Extra packets the send loop sends at once on its next tick (see [`RoomClient::flood`]).
    flood: Arc<std::sync::atomic::AtomicUsize>,
    /// `room-events` (none over WHIP/WHEP).
    dc: Option<Arc<dyn DataChannel>>,
    pub events: mpsc::UnboundedReceiver<(Instant, Value)>,
    pub location: String,
    /// WHIP/WHEP: the resource's current ETag, the `Link` headers of the answer, and the
    /// status of the trickle `PATCH` (when `trickle`).
    pub etag: Mutex<Option<String>>,
    pub links: Vec<String>,
    pub trickle_status: Option<u16>,
    resource: Resource,
    /// POST → answer, and start → connected.
    pub answer_time: Duration,
    /// The answer asked for Opus DTX (`usedtx=1`); this client sends every frame regardless.
    pub asks_for_dtx: bool,
    pub connect_time: Duration,
    outbox: Arc<Mutex<VecDeque<Frame>>>,
    sent: Arc<Mutex<Vec<SentPacket>>>,
    received: Arc<Mutex<Vec<ReceivedPacket>>>,
}

impl RoomClient {
    /// Joins `room` at `base` (e.g. `http://127.0.0.1:8080`) with a room token and waits until
    /// the peer connection is up.
    pub async fn join(
        http: &reqwest::Client,
        base: &str,
        room: &str,
        token: &str,
        opts: RoomClientOptions,
    ) -> Result<RoomClient, ClientError> {
        let begin = Instant::now();
        let webrtc_err = |e: webrtc::error::Error| ClientError::WebRtc(e.to_string());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sockets = Sockets::udp(std::net::SocketAddr::new(opts.bind_ip, 0));
        let mut config = RTCConfigurationBuilder::new().with_ice_servers(opts.ice_servers.clone());
        if opts.relay_only {
            config = config.with_ice_transport_policy(webrtc::peer_connection::RTCIceTransportPolicy::Relay);
        }
        let config = config.build();
        let peer = build_peer_configured(sockets, tx.clone(), &[AudioCodec::Opus], config, opts.audio_levels).await.map_err(webrtc_err)?;
        let recv_only =
            || RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, streams: vec![], send_encodings: vec![] };
        let (track, ssrc) = audio_track("participant", AudioCodec::Opus);
        let mut receiving_lines = opts.slots;
        if opts.publish {
            let direction = if opts.slots > 0 { RTCRtpTransceiverDirection::Sendrecv } else { RTCRtpTransceiverDirection::Sendonly };
            receiving_lines = receiving_lines.saturating_sub(1);
            let init = RTCRtpTransceiverInit { direction, streams: vec![], send_encodings: vec![] };
            peer.add_transceiver_from_track(track.clone(), Some(init)).await.map_err(webrtc_err)?;
        }
        for _ in 0..receiving_lines {
            peer.add_transceiver_from_kind(RtpCodecKind::Audio, Some(recv_only())).await.map_err(webrtc_err)?;
        }
        let dc = match opts.endpoint {
            Endpoint::Join => {
                let dc = peer.create_data_channel(ROOM_EVENTS_LABEL, None).await.map_err(webrtc_err)?;
                spawn_data_channel_reader(dc.clone(), tx);
                Some(dc)
            }
            Endpoint::Whip | Endpoint::Whep => None,
        };
        let offer = peer.create_offer(None).await.map_err(webrtc_err)?;
        peer.set_local_description(offer).await.map_err(webrtc_err)?;
        let early = wait_gathered(&mut rx).await.map_err(ClientError::Timeout)?;
        let mut offer_sdp = peer.local_description().await.ok_or(ClientError::Timeout("no local description"))?.sdp;
        let trickled = if opts.trickle { Some(take_candidates(&mut offer_sdp)) } else { None };
        let path = match opts.endpoint {
            Endpoint::Join => format!("{base}/v1/rooms/{room}/join"),
            Endpoint::Whip => format!("{base}/v1/whip/{room}"),
            Endpoint::Whep => format!("{base}/v1/whep/{room}"),
        };
        let posted = Instant::now();
        let resp = http
            .post(path)
            .bearer_auth(token)
            .header("content-type", "application/sdp")
            .body(offer_sdp)
            .send()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let location = header("location").unwrap_or_default();
        let etag = header("etag");
        let links: Vec<String> = resp.headers().get_all("link").iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect();
        let body = resp.text().await.map_err(|e| ClientError::Http(e.to_string()))?;
        if status != 201 {
            let _ = peer.close().await;
            return Err(ClientError::Refused(status, body));
        }
        let answer_time = posted.elapsed();
        let asks_for_dtx = voxrelay_signaling::sdp_dtx::asks_for_dtx(&body);
        let answer = rtc::peer_connection::sdp::RTCSessionDescription::answer(body).map_err(webrtc_err)?;
        peer.set_remote_description(answer).await.map_err(webrtc_err)?;
        let resource = Resource::new(http, &format!("{base}{location}"), token);
        let trickle_status = match trickled {
            Some(fragment) => Some(resource.patch(fragment.to_text(), etag.as_deref()).await?.0),
            None => None,
        };

        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
        let (open_tx, open_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(pump(early, rx, ev_tx, connected_tx, open_tx, received.clone(), opts.packets_out.clone()));
        if !matches!(tokio::time::timeout(opts.connect_timeout, connected_rx).await, Ok(Ok(()))) {
            let _ = peer.close().await;
            return Err(ClientError::Timeout("ICE/DTLS did not connect"));
        }
        // Ready once `room-events` is open at both ends (the server acknowledged it): from then
        // on a hang-up reaches the server at once, as the channel's close.
        if dc.is_some() && !matches!(tokio::time::timeout(opts.connect_timeout, open_rx).await, Ok(Ok(()))) {
            let _ = peer.close().await;
            return Err(ClientError::Timeout("the room-events channel did not open"));
        }
        let outbox = Arc::new(Mutex::new(VecDeque::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let flood = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        if opts.publish {
            tokio::spawn(send_loop(track, ssrc, opts.audio_levels, outbox.clone(), sent.clone(), flood.clone()));
        }
        Ok(RoomClient {
            peer,
            flood,
            dc,
            events: ev_rx,
            location,
            etag: Mutex::new(etag),
            links,
            trickle_status,
            resource,
            answer_time,
            asks_for_dtx,
            connect_time: begin.elapsed(),
            outbox,
            sent,
            received,
        })
    }

    /// Queues 48 kHz PCM, encoded now, in 20 ms frames.
    pub fn say(&self, pcm: &[i16]) {
        if let Ok(frames) = encode_speech(pcm, 1.0) {
            self.queue_encoded(frames);
        }
    }

    /// Queues frames already encoded, with their levels.
    pub fn queue_encoded(&self, frames: impl IntoIterator<Item = (Bytes, AudioLevel)>) {
        let frames = frames.into_iter().map(|(payload, level)| Frame { payload, level, voiced: level.minus_dbov < VOICED_BELOW_DBOV });
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).extend(frames);
    }

    /// Queues `n` frames of silence (the 3-byte Opus silence packet).
    pub fn queue_silence(&self, n: usize) {
        let frames = (0..n).map(|_| Frame {
            payload: Bytes::from_static(&OPUS_SILENCE),
            level: AudioLevel { minus_dbov: 127, voice: false },
            voiced: false,
        });
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).extend(frames);
    }

    /// Sends `n` extra packets at once, outside the 20 ms pacing (same stream, consecutive
    /// numbers), as a broken or hostile sender would: tests of the server's rate cap.
    pub fn flood(&self, n: usize) {
        self.flood.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn queued(&self) -> usize {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn sent(&self) -> Vec<SentPacket> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn received(&self) -> Vec<ReceivedPacket> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub async fn send_event(&self, ev: &Value) -> Result<(), ClientError> {
        let dc = self.dc.as_ref().ok_or(ClientError::Timeout("no room-events channel (WHIP/WHEP)"))?;
        dc.send_text(&ev.to_string()).await.map_err(|e| ClientError::WebRtc(e.to_string()))
    }

    /// The connection's round-trip time as ICE last measured it.
    pub async fn rtt(&self) -> Option<Duration> {
        super::peer::ice_rtt(&self.peer).await
    }

    /// Hangs up as a browser tab does: the events channel closes, then the connection.
    pub async fn close(&self) {
        if let Some(dc) = &self.dc {
            let _ = dc.close().await;
        }
        let _ = self.peer.close().await;
    }

    /// `PATCH`es the WHIP/WHEP resource with a fragment: (status, ETag, body).
    pub async fn patch(&self, fragment: String, if_match: Option<&str>) -> Result<(u16, Option<String>, String), ClientError> {
        self.resource.patch(fragment, if_match).await
    }

    /// `DELETE`s the WHIP/WHEP resource (or the participant): the status.
    pub async fn delete(&self) -> Result<u16, ClientError> {
        let resp = self.resource.http.delete(&self.resource.url).bearer_auth(&self.resource.token).send().await;
        let status = resp.map_err(|e| ClientError::Http(e.to_string()))?.status().as_u16();
        let _ = self.peer.close().await;
        Ok(status)
    }

    /// WHIP/WHEP ICE restart (RFC 9725 §4.3.2): see [`super::ice_client::restart`].
    pub async fn restart_ice(&self) -> Result<(), ClientError> {
        let etag = self.etag.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let etag = super::ice_client::restart(&self.peer, &self.resource, etag.as_deref()).await?;
        *self.etag.lock().unwrap_or_else(|p| p.into_inner()) = etag;
        Ok(())
    }
}

/// Takes the candidates out of an offer (to trickle them instead): the fragment that carries them.
fn take_candidates(sdp: &mut String) -> IceFragment {
    let fragment = IceFragment {
        mid: sdp_attribute(sdp, "mid").map(str::to_string),
        candidates: candidates_of(sdp),
        end_of_candidates: true,
        ..Default::default()
    };
    *sdp = sdp.lines().filter(|l| !l.starts_with("a=candidate:") && *l != "a=end-of-candidates").map(|l| format!("{l}\r\n")).collect();
    fragment
}

/// 48 kHz PCM at `gain` as Opus frames of 20 ms (the last one zero-padded), each with its
/// RFC 6464 level: what a participant sends. Shared by the room client and the load generator.
pub fn encode_speech(pcm: &[i16], gain: f32) -> Result<Vec<(Bytes, AudioLevel)>, String> {
    let mut enc = OpusEncoder::new().map_err(|e| format!("opus encoder: {e}"))?;
    let mut buf = [0u8; MAX_OPUS_PACKET];
    let mut frames = Vec::with_capacity(pcm.len().div_ceil(SAMPLES_48K));
    for chunk in pcm.chunks(SAMPLES_48K) {
        let mut f = [0i16; SAMPLES_48K];
        for (o, &s) in f.iter_mut().zip(chunk) {
            *o = (f32::from(s) * gain) as i16;
        }
        let n = enc.encode(&f, &mut buf).map_err(|e| format!("opus encode: {e:?}"))?;
        frames.push((Bytes::copy_from_slice(&buf[..n]), AudioLevel::from_pcm(&f, true)));
    }
    Ok(frames)
}

async fn pump(
    early: Vec<PeerEvent>,
    rx: mpsc::UnboundedReceiver<PeerEvent>,
    ev_tx: mpsc::UnboundedSender<(Instant, Value)>,
    connected_tx: tokio::sync::oneshot::Sender<()>,
    open_tx: tokio::sync::oneshot::Sender<()>,
    received: Arc<Mutex<Vec<ReceivedPacket>>>,
    packets_out: Option<mpsc::UnboundedSender<ReceivedPacket>>,
) {
    let mut connected_tx = Some(connected_tx);
    let mut open_tx = Some(open_tx);
    let mut events = PeerEvents::new(early, rx);
    while let Some(ev) = events.next().await {
        match ev {
            PeerEvent::State(RTCPeerConnectionState::Connected) => {
                if let Some(tx) = connected_tx.take() {
                    let _ = tx.send(());
                }
            }
            PeerEvent::State(RTCPeerConnectionState::Closed | RTCPeerConnectionState::Failed) => break,
            PeerEvent::DataChannelOpen(_) => {
                if let Some(tx) = open_tx.take() {
                    let _ = tx.send(());
                }
            }
            PeerEvent::DataChannelText(text) => {
                let _ = ev_tx.send((Instant::now(), server_event(text)));
            }
            PeerEvent::Track(remote) => {
                let received = received.clone();
                let packets_out = packets_out.clone();
                tokio::spawn(async move {
                    while let Some(ev) = remote.poll().await {
                        let TrackRemoteEvent::OnRtpPacket(p) = ev else { continue };
                        let packet = ReceivedPacket {
                            at: Instant::now(),
                            ssrc: p.header.ssrc,
                            seq: p.header.sequence_number,
                            timestamp: p.header.timestamp,
                            marker: p.header.marker,
                            payload: p.payload,
                        };
                        match &packets_out {
                            Some(out) => {
                                let _ = out.send(packet);
                            }
                            None => received.lock().unwrap_or_else(|e| e.into_inner()).push(packet),
                        }
                    }
                });
            }
            _ => {}
        }
    }
}

async fn send_loop(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    levels: bool,
    outbox: Arc<Mutex<VecDeque<Frame>>>,
    sent: Arc<Mutex<Vec<SentPacket>>>,
    flood: Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut was_voiced = false;
    loop {
        tick.tick().await;
        for _ in 0..flood.swap(0, std::sync::atomic::Ordering::Relaxed) {
            let header = rtc::rtp::Header {
                version: 2,
                payload_type: OPUS_PAYLOAD_TYPE,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
                ..Default::default()
            };
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(960);
            if track.write_rtp(rtc::rtp::Packet { header, payload: Bytes::from_static(&OPUS_SILENCE) }).await.is_err() {
                return;
            }
        }
        let frame = outbox.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        let frame = frame.unwrap_or(Frame {
            payload: Bytes::from_static(&OPUS_SILENCE),
            level: AudioLevel { minus_dbov: 127, voice: false },
            voiced: false,
        });
        let header = rtc::rtp::Header {
            version: 2,
            payload_type: OPUS_PAYLOAD_TYPE,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            // RFC 3551: the first packet of a talkspurt.
            marker: frame.voiced && !was_voiced,
            ..Default::default()
        };
        was_voiced = frame.voiced;
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(960);
        let packet = rtc::rtp::Packet { header, payload: frame.payload.clone() };
        let written = if levels {
            let ext = HeaderExtension::AudioLevel(AudioLevelExtension { level: frame.level.minus_dbov, voice: frame.level.voice });
            track.write_rtp_with_extensions(packet, &[ext]).await
        } else {
            track.write_rtp(packet).await
        };
        if written.is_err() {
            break;
        }
        sent.lock().unwrap_or_else(|p| p.into_inner()).push(SentPacket {
            at: Instant::now(),
            payload: frame.payload,
            voiced: frame.voiced,
        });
    }
}
