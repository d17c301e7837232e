//! A fake phone line: plays Twilio's side of a bidirectional Media Stream against voxrelay,
//! byte for byte as documented (<https://www.twilio.com/docs/voice/media-streams/websocket-messages>):
//! `connected`, `start`, `media` every 20 ms (base64 mu-law 8 kHz, string-typed counters),
//! `dtmf`, `stop`; it plays the server's `media` in order on its own 20 ms clock, returns each
//! `mark` when the audio before it has played, and on `clear` drops its buffer and returns the
//! pending marks, as Twilio does.
//!
//! Line impairments, all optional: an echo of what it plays, reflected into the inbound stream
//! at a gain and delay (a phone's hybrid echo), inbound media sent in bursts, and reordering.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use voxrelay_media::{G711Law, Resampler, SampleRate, linear_to_ulaw};

pub const FRAME_BYTES: usize = 160;
pub const STREAM_SID: &str = "MZ00000000000000000000000000000001";

#[derive(Clone, Debug, Default)]
pub struct Impairments {
    /// Reflect what the line plays back into the inbound stream: (gain in dB, delay in ms).
    pub echo: Option<(f32, u32)>,
    /// Send inbound media in bursts of this many ms (multiples of 20).
    pub burst_ms: u32,
    /// Swap this share of adjacent inbound messages inside a burst (0..1).
    pub reorder: f64,
}

/// What the line saw; shared with the test.
#[derive(Default)]
pub struct LineLog {
    /// Every message from the server, in order, with its arrival time.
    pub messages: Vec<(Instant, Value)>,
    /// Frames played to the "caller" (mu-law decoded), in order.
    pub played: Vec<(Instant, [i16; FRAME_BYTES])>,
    /// Marks returned, in order.
    pub marks_returned: Vec<String>,
    /// `clear` messages received.
    pub clears: Vec<Instant>,
    /// When the inbound stream started carrying each `say` (caller speech onset), ms of stream time.
    pub said_at_ms: Vec<u64>,
    pub closed: bool,
    /// Running counts, so the tests' polls stay O(1): scanning a long call's log under the lock
    /// the line's own 20 ms task needs made that task late, and the line bursty, in proportion
    /// to the call's length.
    media: usize,
    voiced: usize,
}

impl LineLog {
    pub fn media_received(&self) -> usize {
        self.media
    }

    pub fn voiced_played(&self) -> usize {
        self.voiced
    }

    fn record_message(&mut self, v: Value) {
        self.media += usize::from(v["event"] == "media");
        self.messages.push((Instant::now(), v));
    }

    fn record_played(&mut self, frame: [i16; FRAME_BYTES]) {
        self.voiced += usize::from(rms(&frame) > 300.0);
        self.played.push((Instant::now(), frame));
    }
}

pub fn rms(pcm: &[i16]) -> f64 {
    (pcm.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt()
}

enum Command {
    Say(Vec<i16>),
    Dtmf(char),
    Raw(Message),
    Stop,
    SetEcho(Option<(f32, u32)>),
}

pub struct FakeLine {
    commands: mpsc::UnboundedSender<Command>,
    pub log: Arc<Mutex<LineLog>>,
}

/// 48 kHz speech (the test fixture) as 8 kHz PCM, through voxrelay's own resampler.
pub fn to_8k(pcm48: &[i16]) -> Vec<i16> {
    let mut down = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_8K).unwrap();
    let mut out = Vec::with_capacity(pcm48.len() / 6);
    for frame in pcm48.chunks(960) {
        let mut f = [0i16; 960];
        f[..frame.len()].copy_from_slice(frame);
        let mut o = [0i16; FRAME_BYTES];
        down.process(&f, &mut o);
        out.extend_from_slice(&o);
    }
    out
}

pub fn start_message(params: Value) -> String {
    json!({"event": "start", "sequenceNumber": "1", "start": {
        "accountSid": "AC00000000000000000000000000000001", "streamSid": STREAM_SID,
        "callSid": "CA00000000000000000000000000000001", "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": params}, "streamSid": STREAM_SID})
    .to_string()
}

impl FakeLine {
    /// Connects to `ws_url` (…/v1/telephony/twilio) and starts the stream with `params` as
    /// `customParameters`.
    pub async fn connect(ws_url: &str, params: Value, impairments: Impairments) -> FakeLine {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("media stream upgrade");
        Self::run(ws, params, impairments).await
    }

    pub async fn run(
        ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        params: Value,
        impairments: Impairments,
    ) -> FakeLine {
        let (mut tx, mut rx) = ws.split();
        tx.send(Message::text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#)).await.unwrap();
        tx.send(Message::text(start_message(params))).await.unwrap();
        let log = Arc::new(Mutex::new(LineLog::default()));
        let (commands, mut cmd_rx) = mpsc::unbounded_channel();
        let log2 = log.clone();
        tokio::spawn(async move {
            let mut line = LineState::new(impairments);
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tokio::select! {
                    cmd = cmd_rx.recv() => match cmd {
                        Some(Command::Say(pcm)) => {
                            let at = line.tick * 20 + line.to_say.len() as u64 / 8;
                            log2.lock().unwrap().said_at_ms.push(at);
                            line.to_say.extend(pcm);
                        }
                        Some(Command::Dtmf(d)) => {
                            let msg = json!({"event": "dtmf", "streamSid": STREAM_SID, "sequenceNumber": line.next_seq().to_string(),
                                "dtmf": {"track": "inbound_track", "digit": d.to_string()}});
                            let _ = tx.send(Message::text(msg.to_string())).await;
                        }
                        Some(Command::Raw(m)) => { let _ = tx.send(m).await; }
                        Some(Command::SetEcho(e)) => line.impairments.echo = e,
                        Some(Command::Stop) | None => {
                            let msg = json!({"event": "stop", "sequenceNumber": line.next_seq().to_string(), "streamSid": STREAM_SID,
                                "stop": {"accountSid": "AC00000000000000000000000000000001", "callSid": "CA00000000000000000000000000000001"}});
                            let _ = tx.send(Message::text(msg.to_string())).await;
                            let _ = tx.close().await;
                            break;
                        }
                    },
                    msg = rx.next() => match msg {
                        Some(Ok(Message::Text(t))) => {
                            let v: Value = serde_json::from_str(&t).expect("server sends JSON");
                            let returned = line.on_server(&v);
                            {
                                let mut log = log2.lock().unwrap();
                                if v["event"] == "clear" { log.clears.push(Instant::now()); }
                                log.record_message(v);
                                log.marks_returned.extend(returned.iter().cloned());
                            }
                            for name in returned { let _ = tx.send(Message::text(line.mark_msg(&name))).await; }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => { log2.lock().unwrap().closed = true; break; }
                        Some(Ok(_)) => {}
                    },
                    _ = tick.tick() => {
                        let (played, marks) = line.play_one();
                        if let Some(f) = played { log2.lock().unwrap().record_played(f); }
                        for name in marks {
                            log2.lock().unwrap().marks_returned.push(name.clone());
                            let _ = tx.send(Message::text(line.mark_msg(&name))).await;
                        }
                        for m in line.inbound_tick() { if tx.send(Message::text(m)).await.is_err() { break; } }
                    }
                }
            }
        });
        FakeLine { commands, log }
    }

    /// Queues 8 kHz caller audio (spoken after anything queued before).
    pub fn say(&self, pcm8: &[i16]) {
        let _ = self.commands.send(Command::Say(pcm8.to_vec()));
    }

    /// Queues 8 kHz caller audio and returns where it starts in stream time (ms), once the
    /// line has taken it (`say` is asynchronous: reading `said_at_ms` right after it races).
    pub async fn say_located(&self, pcm8: &[i16]) -> u64 {
        let before = self.log.lock().unwrap().said_at_ms.len();
        self.say(pcm8);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(&at) = self.log.lock().unwrap().said_at_ms.get(before) {
                return at;
            }
            assert!(Instant::now() < deadline, "the line never took the audio");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn dtmf(&self, digit: char) {
        let _ = self.commands.send(Command::Dtmf(digit));
    }

    pub fn raw(&self, msg: Message) {
        let _ = self.commands.send(Command::Raw(msg));
    }

    pub fn set_echo(&self, echo: Option<(f32, u32)>) {
        let _ = self.commands.send(Command::SetEcho(echo));
    }

    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }
}

enum Queued {
    Frame(Vec<u8>),
    Mark(String),
}

struct LineState {
    impairments: Impairments,
    seq: u64,
    chunk: u64,
    tick: u64,
    to_say: VecDeque<i16>,
    /// The server's audio waiting to be played, with its marks.
    playout: VecDeque<Queued>,
    /// Echo path: played samples delayed by the echo delay.
    echo_line: VecDeque<i16>,
    /// Inbound messages held back to form a burst.
    held: Vec<String>,
    rng: u64,
}

impl LineState {
    fn new(impairments: Impairments) -> Self {
        LineState {
            impairments,
            seq: 1,
            chunk: 0,
            tick: 0,
            to_say: VecDeque::new(),
            playout: VecDeque::new(),
            echo_line: VecDeque::new(),
            held: Vec::new(),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn mark_msg(&mut self, name: &str) -> String {
        json!({"event": "mark", "sequenceNumber": self.next_seq().to_string(), "streamSid": STREAM_SID, "mark": {"name": name}}).to_string()
    }

    /// Handles one server message; returns marks to send back at once (on `clear`).
    fn on_server(&mut self, v: &Value) -> Vec<String> {
        assert_eq!(v["streamSid"], STREAM_SID, "every server message names the stream: {v}");
        match v["event"].as_str() {
            Some("media") => {
                let bytes = B64.decode(v["media"]["payload"].as_str().expect("payload")).expect("base64 payload");
                self.playout.push_back(Queued::Frame(bytes));
                Vec::new()
            }
            Some("mark") => {
                self.playout.push_back(Queued::Mark(v["mark"]["name"].as_str().expect("mark name").to_string()));
                Vec::new()
            }
            Some("clear") => {
                // Twilio empties its buffer and returns every pending mark.
                self.playout
                    .drain(..)
                    .filter_map(|q| match q {
                        Queued::Mark(n) => Some(n),
                        Queued::Frame(_) => None,
                    })
                    .collect()
            }
            other => panic!("unexpected server message {other:?}: {v}"),
        }
    }

    /// One 20 ms of playback: the next frame (if any), and the marks it completes.
    fn play_one(&mut self) -> (Option<[i16; FRAME_BYTES]>, Vec<String>) {
        let mut marks = Vec::new();
        while let Some(Queued::Mark(_)) = self.playout.front() {
            if let Some(Queued::Mark(n)) = self.playout.pop_front() {
                marks.push(n);
            }
        }
        let mut played = None;
        if let Some(Queued::Frame(bytes)) = self.playout.front() {
            let mut pcm = [0i16; FRAME_BYTES];
            G711Law::Mu.decode(&bytes[..FRAME_BYTES.min(bytes.len())], &mut pcm);
            played = Some(pcm);
            self.playout.pop_front();
            // Marks right after this frame complete with it.
            while let Some(Queued::Mark(_)) = self.playout.front() {
                if let Some(Queued::Mark(n)) = self.playout.pop_front() {
                    marks.push(n);
                }
            }
        }
        if let Some((gain_db, delay_ms)) = self.impairments.echo {
            let delay = delay_ms as usize * 8;
            while self.echo_line.len() < delay {
                self.echo_line.push_back(0);
            }
            let gain = 10f32.powf(gain_db / 20.0);
            let frame = played.unwrap_or([0; FRAME_BYTES]);
            self.echo_line.extend(frame.iter().map(|&s| (s as f32 * gain) as i16));
        }
        (played, marks)
    }

    /// One 20 ms of caller audio (speech + echo) as a `media` message; returns what to send now.
    fn inbound_tick(&mut self) -> Vec<String> {
        self.tick += 1;
        let mut pcm = [0i16; FRAME_BYTES];
        for s in pcm.iter_mut() {
            *s = self.to_say.pop_front().unwrap_or(0);
        }
        if self.impairments.echo.is_some() {
            for s in pcm.iter_mut() {
                let e = self.echo_line.pop_front().unwrap_or(0);
                *s = s.saturating_add(e);
            }
        }
        let codes: Vec<u8> = pcm.iter().map(|&s| linear_to_ulaw(s)).collect();
        self.chunk += 1;
        let timestamp = (self.chunk - 1) * 20;
        let msg = json!({"event": "media", "sequenceNumber": self.next_seq().to_string(),
            "media": {"track": "inbound", "chunk": self.chunk.to_string(), "timestamp": timestamp.to_string(), "payload": B64.encode(&codes)},
            "streamSid": STREAM_SID});
        self.held.push(msg.to_string());
        let burst = (self.impairments.burst_ms / 20).max(1) as usize;
        if self.held.len() < burst {
            return Vec::new();
        }
        let mut out = std::mem::take(&mut self.held);
        if self.impairments.reorder > 0.0 {
            for i in 0..out.len().saturating_sub(1) {
                if self.random() < self.impairments.reorder {
                    out.swap(i, i + 1);
                }
            }
        }
        out
    }
}
