//! `voxrelay talk`: a voice client for a voxrelay server from a terminal (issue 23). It mints
//! its own client secret with the API key (or takes `--token`), connects as a WebRTC peer with
//! the project's client (`transport::webrtc::client`), sends the microphone's audio and plays
//! what the server sends, and prints the conversation as it goes ([`lines`]).
//!
//! This part: 1:1 calls and rooms (`--room`, the slots mixed, [`mix`]), with WAV files in place
//! of the microphone and the speaker (`--input-wav`, `--output-wav`: what a machine without
//! sound devices and the tests use). Still to come (issue 23 stays open): the devices themselves
//! (cpal, behind a cargo feature so the server's build needs no ALSA headers) and the live
//! terminal view with its keys.

pub mod lines;
pub mod mix;
pub mod view;
pub mod wav;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::transport::webrtc::client::{Client, ClientOptions, Heard, VOICED_RMS, rms};
use crate::transport::webrtc::room_client::{ReceivedPacket, RoomClient, RoomClientOptions};

#[derive(clap::Args, Clone, Debug)]
pub struct TalkArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The agent to talk to (the server's default when not given): echo, openai-realtime, ...
    #[arg(long, conflicts_with = "room")]
    pub agent: Option<String>,
    /// The agent's instructions for this call.
    #[arg(long, conflicts_with = "room")]
    pub instructions: Option<String>,
    /// Join this room (with --identity) instead of a 1:1 call: you hear its speakers mixed.
    #[arg(long, requires = "identity")]
    pub room: Option<String>,
    /// Your identity in the room.
    #[arg(long, requires = "room")]
    pub identity: Option<String>,
    /// A client secret (1:1) or room token (--room) to use, instead of minting one with the API
    /// key (for a user who holds only that).
    #[arg(long, env = "VOXRELAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The server's API key. Default: the key file in the data directory.
    #[arg(long, env = "VOXRELAY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The server's data directory (where its key file is).
    #[arg(long, env = "VOXRELAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Send this WAV file as the microphone (16-bit PCM, mono or stereo, 8/16/24/48 kHz).
    #[arg(long)]
    pub input_wav: Option<PathBuf>,
    /// Write what the server sends to this WAV file (48 kHz mono) instead of playing it.
    #[arg(long)]
    pub output_wav: Option<PathBuf>,
    /// With --input-wav: hang up once the file is sent and nothing was heard or said for this
    /// many seconds (the agent's answer comes in the meantime).
    #[arg(long, default_value_t = 3.0)]
    pub linger: f64,
    /// Hang up after this many seconds at most (default: Ctrl-C, or --linger with --input-wav).
    #[arg(long)]
    pub duration: Option<f64>,
    /// The microphone to use, by name (`--list-devices`); default: the system's default input.
    #[arg(long)]
    pub input_device: Option<String>,
    /// The speaker to use, by name; default: the system's default output.
    #[arg(long)]
    pub output_device: Option<String>,
    /// List the sound devices and exit.
    #[arg(long)]
    pub list_devices: bool,
    /// Push-to-talk (1:1, on a terminal): the server's turn detection is off, space starts your
    /// turn and space sends it.
    #[arg(long, conflicts_with = "room")]
    pub push_to_talk: bool,
    /// Print one line per event even on a terminal (no live view).
    #[arg(long)]
    pub plain: bool,
}

/// How to get a build that opens sound devices (`voxrelay` itself never links ALSA).
pub const DEVICES_BUILD: &str = "sound devices need the voxrelay-talk binary built with its devices feature \
     (apt install libasound2-dev pkg-config; cargo build --release -p voxrelay-talk --features devices); \
     this one takes --input-wav FILE and --output-wav FILE";

/// Where the call's audio comes from and goes.
pub struct Io {
    /// The microphone: a file sent at once, or live 48 kHz mono 20 ms frames.
    pub input: Input,
    pub output: Box<dyn wav::PcmOut>,
    /// How the output is named in the last line.
    pub output_name: String,
}

pub enum Input {
    File(Vec<i16>),
    Live(mpsc::UnboundedReceiver<Vec<i16>>),
}

/// With a live microphone, frames beyond this many waiting to be sent (100 ms) are dropped:
/// the device's clock and the sender's 20 ms tick drift apart, and latency must not grow.
const MAX_QUEUED_FRAMES: usize = 5;

/// What a finished run did.
#[derive(Debug)]
pub struct TalkSummary {
    pub sent_s: f64,
    pub received_s: f64,
    pub events: usize,
}

/// `voxrelay talk`: WAV files in place of the devices.
pub async fn run(args: TalkArgs) -> anyhow::Result<TalkSummary> {
    if args.list_devices || args.input_device.is_some() || args.output_device.is_some() {
        bail!("{DEVICES_BUILD}");
    }
    let (Some(input), Some(output)) = (&args.input_wav, &args.output_wav) else {
        bail!("{DEVICES_BUILD}");
    };
    let io = Io {
        input: Input::File(wav::read_48k_mono(input)?),
        output: Box::new(wav::WavFile::create(output)?),
        output_name: output.display().to_string(),
    };
    run_with(args, io).await
}

/// What was heard, recorded: its level marks the call active when it is speech.
fn note_activity(level: anyhow::Result<f64>, last_activity: &mut Instant) -> anyhow::Result<()> {
    if level? > VOICED_RMS {
        *last_activity = Instant::now();
    }
    Ok(())
}

/// A call (or a room) with `io` as its microphone and speaker.
pub async fn run_with(args: TalkArgs, io: Io) -> anyhow::Result<TalkSummary> {
    if !(args.linger.is_finite() && args.linger >= 0.0) {
        bail!("--linger is a number of seconds ≥ 0");
    }
    if args.duration.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
        bail!("--duration is a number of seconds > 0");
    }
    let base = args.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
    let Io { input, output: out, output_name } = io;
    let (pcm, mut mic) = match input {
        Input::File(pcm) => (pcm, None),
        Input::Live(rx) => (Vec::new(), Some(rx)),
    };
    let sink = wav::Timeline::new(out);
    let (heard_tx, mut heard_rx) = mpsc::unbounded_channel();
    let (packets_tx, mut packets_rx) = mpsc::unbounded_channel::<ReceivedPacket>();
    let (mut peer, credential, mut recording) = match (&args.room, &args.identity) {
        (Some(room), Some(identity)) => {
            let token = match &args.token {
                Some(t) => t.clone(),
                None => mint_room_token(&http, &base, room, identity, &args).await?,
            };
            let opts = RoomClientOptions { bind_ip: bind_ip_for(&base), packets_out: Some(packets_tx), ..Default::default() };
            let client = RoomClient::join(&http, &base, room, &token, opts).await.map_err(|e| anyhow!("joining {room} at {base}: {e}"))?;
            (Peer::Room(client), token, Recording::Room(mix::Mixer::new(sink, Instant::now())))
        }
        (None, None) => {
            let secret = match &args.token {
                Some(t) => t.clone(),
                None => mint_secret(&http, &base, &args).await?,
            };
            let opts = ClientOptions { audio_out: Some(heard_tx), bind_ip: bind_ip_for(&base), ..Default::default() };
            let url = format!("{base}/v1/realtime/calls");
            let client = Client::connect(&http, &url, &secret, opts).await.map_err(|e| anyhow!("calling {base}: {e}"))?;
            (Peer::Call(client), secret, Recording::Call(sink))
        }
        _ => bail!("--room and --identity go together"),
    };
    let started = Instant::now();
    // The live view with a live microphone on a terminal; else one line per event.
    let mut terminal = if args.plain || mic.is_none() { None } else { view::Terminal::open() };
    if args.push_to_talk && terminal.is_none() {
        peer.leave(&http, &base, &credential).await;
        bail!("--push-to-talk needs a microphone and a terminal (its keys)");
    }
    let mut view = view::View::new(args.room.as_deref(), args.push_to_talk);
    let print = |view: &mut view::View, terminal: &Option<view::Terminal>, line: String| {
        let at = started.elapsed().as_secs_f64();
        if terminal.is_some() { view.line(format!("{at:>6.1}s  {line}")) } else { println!("[{at:>7.2}s] {line}") }
    };
    // Push-to-talk turns the server's turn detection off once the events channel is open (the
    // session's first event says so).
    let mut turn_detection_off = args.push_to_talk;
    peer.say(&pcm);
    // A live microphone never runs out: the call lasts until Ctrl-C or --duration.
    let linger = if mic.is_some() { Duration::MAX } else { Duration::from_secs_f64(args.linger) };
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    let mut sent_frames = 0usize;
    let mut last_activity = Instant::now();
    let mut events = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut ticks = 0u64;
    // An error inside the call (the output cannot be written) still hangs up first.
    let mut failure: Option<anyhow::Error> = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    'call: loop {
        tokio::select! {
            ev = peer.events().recv() => match ev {
                Some((_, ev)) => {
                    events += 1;
                    last_activity = Instant::now();
                    if turn_detection_off && ev["type"] == "session.created" {
                        turn_detection_off = false;
                        let off = json!({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": null}}}});
                        if let Err(e) = peer.send(&off).await {
                            failure = Some(e.context("turning the server's turn detection off"));
                            break;
                        }
                    }
                    if terminal.is_some() {
                        view.on_event(&ev, started.elapsed().as_secs_f64());
                    } else if let Some(line) = lines::line(&ev) {
                        print(&mut view, &terminal, line);
                    }
                }
                None => {
                    print(&mut view, &terminal, "the server closed the connection".into());
                    break;
                }
            },
            Some(heard) = heard_rx.recv() => {
                view.stats.on_packet(0, heard.seq, heard.timestamp, Instant::now(), started);
                if let Err(e) = note_activity(recording.heard(&heard), &mut last_activity) {
                    failure = Some(e);
                    break;
                }
            }
            Some(mut frame) = async { match mic.as_mut() { Some(m) => m.recv().await, None => std::future::pending().await } } => {
                view.on_mic(&frame);
                if !view.sending() {
                    frame.fill(0);
                }
                if peer.queued() < MAX_QUEUED_FRAMES {
                    peer.say(&frame);
                    sent_frames += 1;
                }
            }
            Some(packet) = packets_rx.recv() => {
                view.stats.on_packet(packet.ssrc, packet.seq, packet.timestamp, packet.at, started);
                if let Err(e) = note_activity(recording.packet(&packet), &mut last_activity) {
                    failure = Some(e);
                    break;
                }
            }
            Some(key) = async { match terminal.as_mut() { Some(t) => t.keys.recv().await, None => std::future::pending().await } } => {
                for action in view.on_key(key) {
                    match action {
                        view::Action::Quit => break 'call,
                        view::Action::Send(ev) => {
                            if let Err(e) = peer.send(&ev).await {
                                view.line(format!("  could not send {}: {e}", ev["type"]));
                            }
                        }
                    }
                }
            }
            _ = tick.tick() => {
                if let Some(t) = &terminal {
                    ticks += 1;
                    if ticks.is_multiple_of(10) {
                        view.rtt = peer.rtt().await.or(view.rtt);
                    }
                    t.draw(&view);
                }
                // The input's end counts as activity: the answer to it comes after.
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if peer.queued() > 0 {
                    last_activity = Instant::now();
                } else if last_activity.elapsed() >= linger {
                    break;
                }
            }
            _ = &mut interrupted => break,
        }
    }
    // Back to a normal terminal before the last line.
    terminal.take();
    peer.leave(&http, &base, &credential).await;
    if let Some(e) = failure {
        return Err(e);
    }
    while let Ok(heard) = heard_rx.try_recv() {
        recording.heard(&heard)?;
    }
    while let Ok(packet) = packets_rx.try_recv() {
        recording.packet(&packet)?;
    }
    let received_s = recording.finish()?;
    let sent_s = (pcm.len() + sent_frames * 960) as f64 / f64::from(wav::RATE);
    let summary = TalkSummary { sent_s, received_s, events };
    let left = if args.room.is_some() { "left" } else { "hung up" };
    print(&mut view, &terminal, format!("{left}: sent {:.1} s, received {:.1} s → {output_name}", summary.sent_s, summary.received_s));
    Ok(summary)
}

/// The connection: a 1:1 call or a room.
enum Peer {
    Call(Client),
    Room(RoomClient),
}

impl Peer {
    fn events(&mut self) -> &mut mpsc::UnboundedReceiver<(Instant, Value)> {
        match self {
            Peer::Call(c) => &mut c.events,
            Peer::Room(r) => &mut r.events,
        }
    }

    fn say(&self, pcm: &[i16]) {
        match self {
            Peer::Call(c) => {
                c.say(pcm);
            }
            Peer::Room(r) => r.say(pcm),
        }
    }

    async fn send(&self, event: &Value) -> anyhow::Result<()> {
        match self {
            Peer::Call(c) => c.send_event(event).await,
            Peer::Room(r) => r.send_event(event).await,
        }
        .map_err(|e| anyhow!("{e}"))
    }

    async fn rtt(&self) -> Option<Duration> {
        match self {
            Peer::Call(c) => c.rtt().await,
            Peer::Room(r) => r.rtt().await,
        }
    }

    fn queued(&self) -> usize {
        match self {
            Peer::Call(c) => c.queued(),
            Peer::Room(r) => r.queued(),
        }
    }

    /// A call is ended on the server (the peer closing would end it too, once ICE notices); a
    /// room is left as a browser tab leaves it (its events channel closes, then the connection).
    async fn leave(&self, http: &reqwest::Client, base: &str, credential: &str) {
        match self {
            Peer::Call(c) => {
                if !c.location.is_empty()
                    && let Err(e) = http.delete(format!("{base}{}", c.location)).bearer_auth(credential).send().await
                {
                    tracing::warn!("hanging up: {e}");
                }
                c.close().await;
            }
            Peer::Room(r) => r.close().await,
        }
    }
}

/// Where what is heard goes: one stream written as it comes, or a room's slots mixed.
enum Recording {
    Call(wav::Timeline),
    Room(mix::Mixer),
}

impl Recording {
    /// Records a decoded frame of a call; returns its RMS.
    fn heard(&mut self, heard: &Heard) -> anyhow::Result<f64> {
        match self {
            Recording::Call(sink) if heard.rate == wav::RATE => {
                sink.write(heard.timestamp, &heard.pcm)?;
                Ok(rms(&heard.pcm))
            }
            _ => Ok(0.0),
        }
    }

    /// Records a room packet; returns its RMS.
    fn packet(&mut self, p: &ReceivedPacket) -> anyhow::Result<f64> {
        match self {
            Recording::Room(mixer) => mixer.add(p.at, p.ssrc, p.timestamp, &p.payload),
            Recording::Call(_) => Ok(0.0),
        }
    }

    /// Seconds recorded.
    fn finish(self) -> anyhow::Result<f64> {
        match self {
            Recording::Call(sink) => {
                let s = sink.seconds();
                sink.finish()?;
                Ok(s)
            }
            Recording::Room(mixer) => {
                let s = mixer.seconds() + mix::HOLD_FRAMES as f64 * 0.02;
                mixer.finish()?;
                Ok(s)
            }
        }
    }
}

/// A room token for `identity` (default grants), minted with the API key
/// (`POST /v1/rooms/<room>/tokens`).
async fn mint_room_token(http: &reqwest::Client, base: &str, room: &str, identity: &str, args: &TalkArgs) -> anyhow::Result<String> {
    let key = crate::room::token_cli::api_key(args.api_key.as_deref(), args.data_dir.clone())?;
    let resp = http
        .post(format!("{base}/v1/rooms/{room}/tokens"))
        .bearer_auth(key)
        .json(&json!({"identity": identity}))
        .send()
        .await
        .with_context(|| format!("reaching {base}"))?;
    let body = answer(resp, base, "a room token").await?;
    body["token"].as_str().map(String::from).ok_or_else(|| anyhow!("{base} answered a room token without one: {body}"))
}

/// A successful answer's JSON body, or the refusal in words.
async fn answer(resp: reqwest::Response, base: &str, what: &str) -> anyhow::Result<Value> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let e = &body["error"];
        bail!("{base} refused {what} ({status}): {} {}", e["code"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""));
    }
    Ok(body)
}

/// A client secret for this call, minted with the API key (`POST /v1/realtime/client_secrets`).
async fn mint_secret(http: &reqwest::Client, base: &str, args: &TalkArgs) -> anyhow::Result<String> {
    let key = crate::room::token_cli::api_key(args.api_key.as_deref(), args.data_dir.clone())?;
    let mut session = json!({"type": "realtime"});
    if let Some(agent) = &args.agent {
        session["agent"] = json!(agent);
    }
    if let Some(instructions) = &args.instructions {
        session["instructions"] = json!(instructions);
    }
    let resp = http
        .post(format!("{base}/v1/realtime/client_secrets"))
        .bearer_auth(key)
        .json(&json!({"session": session}))
        .send()
        .await
        .with_context(|| format!("reaching {base}"))?;
    let body = answer(resp, base, "a client secret").await?;
    body["value"].as_str().map(String::from).ok_or_else(|| anyhow!("{base} answered a client secret without a value: {body}"))
}

/// Loopback for a server on this machine (ICE then offers only loopback candidates), every
/// interface otherwise.
fn bind_ip_for(base: &str) -> std::net::IpAddr {
    let host = reqwest::Url::parse(base).ok().and_then(|u| u.host_str().map(String::from)).unwrap_or_default();
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv4Addr::UNSPECIFIED.into() }
}
