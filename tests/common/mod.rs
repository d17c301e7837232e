//! Test harness: starts the real server on 127.0.0.1 and drives it as a client would: HTTP with
//! reqwest, and a real webrtc-rs peer (ICE, DTLS, SRTP, SCTP) that sends Opus encoded from a
//! speech WAV and decodes what comes back.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;
use voxrelay::ServeConfig;
use voxrelay::peer::{OPUS_PAYLOAD_TYPE, Peer, PeerEvent, build_peer, opus_track, spawn_data_channel_reader, wait_gathered};
use voxrelay_media::{MAX_OPUS_PACKET, OpusDecoder, OpusEncoder, SAMPLES_48K};
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemoteEvent;

pub const API_KEY: &str = "sk_test_voxrelay";
/// Every wait in these tests is bounded by this, so a broken server fails a test instead of
/// hanging CI.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn start_server() -> voxrelay::RunningServer {
    let mut cfg = ServeConfig::defaults();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.api_key = Some(API_KEY.into());
    cfg.audio_workers = Some(2);
    cfg.drain_grace_secs = 1;
    voxrelay::start(cfg).await.expect("server starts")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

/// Mints a beta client secret with the given session body.
pub async fn client_secret(base: &str, body: Value) -> String {
    let resp = http().post(format!("{base}/v1/realtime/sessions")).bearer_auth(API_KEY).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    v["client_secret"]["value"].as_str().unwrap().to_string()
}

/// 48 kHz mono PCM of the checked-in speech fixture (see tests/fixtures/README.md).
pub fn speech() -> Vec<i16> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/speech.wav");
    let mut r = hound::WavReader::open(path).expect("fixture");
    assert_eq!(r.spec().sample_rate, 48_000);
    r.samples::<i16>().map(|s| s.unwrap()).collect()
}

pub fn silence_ms(ms: usize) -> Vec<i16> {
    vec![0; ms * 48]
}

/// RMS of each 20 ms frame.
pub fn envelope(pcm: &[i16]) -> Vec<f64> {
    pcm.chunks(SAMPLES_48K).map(rms).collect()
}

pub fn rms(frame: &[i16]) -> f64 {
    (frame.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / frame.len().max(1) as f64).sqrt()
}

/// Frames with RMS above this count as voiced (the fixture's speech frames are in the
/// thousands; Opus silence decodes to 0).
pub const VOICED_RMS: f64 = 200.0;

#[derive(Default)]
pub struct Outbox {
    queue: VecDeque<[i16; SAMPLES_48K]>,
    /// Frames sent so far: the server's audio clock starts at the first one.
    sent_frames: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub at: Instant,
    pub rms: f64,
}

pub struct Sent {
    pub at: Instant,
    pub voiced: bool,
}

/// A client peer connected to a voxrelay call.
pub struct Client {
    pub peer: Peer,
    pub events: mpsc::UnboundedReceiver<Value>,
    /// Every event received, in order, with its arrival time.
    pub log: Vec<(Instant, Value)>,
    pub dc: Arc<dyn DataChannel>,
    /// Audio frames queued for sending; silence is sent when empty.
    pub outbox: Arc<Mutex<Outbox>>,
    pub sent: Arc<Mutex<Vec<Sent>>>,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub location: String,
}

impl Client {
    /// Offers a call at `path` (`/v1/realtime` or `/v1/realtime/calls`) with `token`.
    pub async fn connect(base: &str, path: &str, token: &str) -> Client {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let peer = build_peer("127.0.0.1:0".parse().unwrap(), tx.clone()).await.unwrap();
        let (track, ssrc) = opus_track("client");
        peer.add_track(track.clone()).await.unwrap();
        let dc = peer.create_data_channel("oai-events", None).await.unwrap();
        spawn_data_channel_reader(dc.clone(), tx);
        let offer = peer.create_offer(None).await.unwrap();
        peer.set_local_description(offer).await.unwrap();
        let early = wait_gathered(&mut rx).await.unwrap();
        let offer_sdp = peer.local_description().await.unwrap().sdp;
        let resp = http()
            .post(format!("{base}{path}"))
            .bearer_auth(token)
            .header("content-type", "application/sdp")
            .body(offer_sdp)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "offer refused: {:?}", resp.text().await);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(resp.headers()["content-type"], "application/sdp");
        let answer = resp.text().await.unwrap();
        let answer = rtc::peer_connection::sdp::RTCSessionDescription::answer(answer).unwrap();
        peer.set_remote_description(answer).await.unwrap();

        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
        let mut connected_tx = Some(connected_tx);
        {
            let received = received.clone();
            tokio::spawn(async move {
                let mut events = replay(early, rx);
                while let Some(ev) = events.next().await {
                    match ev {
                        PeerEvent::State(webrtc::peer_connection::RTCPeerConnectionState::Connected) => {
                            if let Some(tx) = connected_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        PeerEvent::DataChannelText(text) => {
                            let _ = ev_tx.send(serde_json::from_str::<Value>(&text).expect("server events are JSON"));
                        }
                        PeerEvent::Track(remote) => {
                            let received = received.clone();
                            tokio::spawn(async move {
                                let mut decoder = OpusDecoder::new().unwrap();
                                let mut pcm = [0i16; SAMPLES_48K * 6];
                                while let Some(ev) = remote.poll().await {
                                    if let TrackRemoteEvent::OnRtpPacket(p) = ev {
                                        let n = decoder.decode(&p.payload, &mut pcm).unwrap_or(0);
                                        let level = rms(&pcm[..n]);
                                        received.lock().unwrap().push(Received { at: Instant::now(), rms: level });
                                    }
                                }
                            });
                        }
                        _ => {}
                    }
                }
            });
        }
        tokio::time::timeout(WAIT, connected_rx).await.expect("peer connects").unwrap();

        let outbox = Arc::new(Mutex::new(Outbox::default()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        {
            let (outbox, sent, track) = (outbox.clone(), sent.clone(), track.clone());
            tokio::spawn(async move {
                let mut enc = OpusEncoder::new().unwrap();
                let mut buf = [0u8; MAX_OPUS_PACKET];
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let mut seq: u16 = 1;
                let mut ts: u32 = 0;
                loop {
                    tick.tick().await;
                    let frame = {
                        let mut o = outbox.lock().unwrap();
                        o.sent_frames += 1;
                        o.queue.pop_front().unwrap_or([0; SAMPLES_48K])
                    };
                    let n = enc.encode(&frame, &mut buf).unwrap();
                    let packet = rtc::rtp::Packet {
                        header: rtc::rtp::Header {
                            version: 2,
                            payload_type: OPUS_PAYLOAD_TYPE,
                            sequence_number: seq,
                            timestamp: ts,
                            ssrc,
                            ..Default::default()
                        },
                        payload: bytes::Bytes::copy_from_slice(&buf[..n]),
                    };
                    seq = seq.wrapping_add(1);
                    ts = ts.wrapping_add(SAMPLES_48K as u32);
                    if track.write_rtp(packet).await.is_err() {
                        break;
                    }
                    sent.lock().unwrap().push(Sent { at: Instant::now(), voiced: rms(&frame) > VOICED_RMS });
                }
            });
        }
        Client { peer, events: ev_rx, log: Vec::new(), dc, outbox, sent, received, location }
    }

    /// Queues 48 kHz PCM to be sent in 20 ms frames after what is already queued; returns the
    /// audio time (ms since the call's first sent sample) at which it will start.
    pub fn say(&self, pcm: &[i16]) -> u64 {
        let mut o = self.outbox.lock().unwrap();
        let start_ms = (o.sent_frames + o.queue.len() as u64) * 20;
        for chunk in pcm.chunks(SAMPLES_48K) {
            let mut f = [0i16; SAMPLES_48K];
            f[..chunk.len()].copy_from_slice(chunk);
            o.queue.push_back(f);
        }
        start_ms
    }

    /// Waits until everything queued has been sent.
    pub async fn wait_sent(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.outbox.lock().unwrap().queue.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "audio not sent in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Drops whatever is queued and says `pcm` right away (a caller cutting in).
    pub fn interrupt_with(&self, pcm: &[i16]) -> u64 {
        self.outbox.lock().unwrap().queue.clear();
        self.say(pcm)
    }

    pub async fn send_event(&self, ev: Value) {
        self.dc.send_text(&ev.to_string()).await.unwrap();
    }

    /// Waits for the next event of type `kind`, keeping all events seen in `log`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {kind}; saw {:?}", self.types()))
                .expect("event stream open");
            self.log.push((Instant::now(), ev.clone()));
            if ev["type"] == kind {
                return ev;
            }
        }
    }

    pub fn types(&self) -> Vec<String> {
        self.log.iter().map(|(_, e)| e["type"].as_str().unwrap_or("?").to_string()).collect()
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub async fn close(self) {
        let _ = self.peer.close().await;
    }
}

/// Replays events seen during gathering, then the live stream.
struct Replay {
    early: std::vec::IntoIter<PeerEvent>,
    rx: mpsc::UnboundedReceiver<PeerEvent>,
}

impl Replay {
    async fn next(&mut self) -> Option<PeerEvent> {
        match self.early.next() {
            Some(e) => Some(e),
            None => self.rx.recv().await,
        }
    }
}

fn replay(early: Vec<PeerEvent>, rx: mpsc::UnboundedReceiver<PeerEvent>) -> Replay {
    Replay { early: early.into_iter(), rx }
}

/// Pearson correlation of two equally long series.
pub fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va.sqrt() * vb.sqrt()).max(f64::EPSILON)
}
