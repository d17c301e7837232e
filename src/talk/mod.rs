//! `voxrelay talk`: a voice client for a voxrelay server from a terminal (issue 23). It mints
//! its own client secret with the API key (or takes `--token`), connects as a WebRTC peer with
//! the project's client (`transport::webrtc::client`), sends the microphone's audio and plays
//! what the server sends, and prints the conversation as it goes ([`lines`]).
//!
//! This part: 1:1 calls, with WAV files in place of the microphone and the speaker
//! (`--input-wav`, `--output-wav`: what a machine without sound devices and the tests use).
//! Still to come (issue 23 stays open): the devices themselves (cpal, behind a cargo feature so
//! the server's build needs no ALSA headers), rooms, and the live terminal view with its keys.

pub mod lines;
pub mod wav;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::transport::webrtc::client::{Client, ClientOptions, VOICED_RMS, rms};

#[derive(clap::Args, Clone, Debug)]
pub struct TalkArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The agent to talk to (the server's default when not given): echo, openai-realtime, ...
    #[arg(long)]
    pub agent: Option<String>,
    /// The agent's instructions for this call.
    #[arg(long)]
    pub instructions: Option<String>,
    /// A client secret to call with, instead of minting one with the API key (for a user who
    /// holds only a secret).
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
}

/// What a finished run did.
#[derive(Debug)]
pub struct TalkSummary {
    pub sent_s: f64,
    pub received_s: f64,
    pub events: usize,
}

pub async fn run(args: TalkArgs) -> anyhow::Result<TalkSummary> {
    let (Some(input), Some(output)) = (&args.input_wav, &args.output_wav) else {
        bail!(
            "this build opens no sound devices: give --input-wav FILE and --output-wav FILE \
             (microphone and speaker through cpal are the next part of issue 23)"
        );
    };
    if !(args.linger.is_finite() && args.linger >= 0.0) {
        bail!("--linger is a number of seconds ≥ 0");
    }
    let base = args.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
    let pcm = wav::read_48k_mono(input)?;
    let mut sink = wav::WavSink::create(output)?;
    let secret = match &args.token {
        Some(t) => t.clone(),
        None => mint_secret(&http, &base, &args).await?,
    };
    let (audio_tx, mut audio_rx) = mpsc::unbounded_channel();
    let opts = ClientOptions { audio_out: Some(audio_tx), bind_ip: bind_ip_for(&base), ..Default::default() };
    let mut client =
        Client::connect(&http, &format!("{base}/v1/realtime/calls"), &secret, opts).await.map_err(|e| anyhow!("calling {base}: {e}"))?;
    let started = Instant::now();
    let print = |line: String| println!("[{:>7.2}s] {line}", started.elapsed().as_secs_f64());
    client.say(&pcm);
    let linger = Duration::from_secs_f64(args.linger);
    let mut last_activity = Instant::now();
    let mut events = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            ev = client.events.recv() => match ev {
                Some((_, ev)) => {
                    events += 1;
                    last_activity = Instant::now();
                    if let Some(line) = lines::line(&ev) {
                        print(line);
                    }
                }
                None => {
                    print("the server closed the call".into());
                    break;
                }
            },
            Some(heard) = audio_rx.recv() => {
                if heard.rate == wav::RATE {
                    sink.write(heard.timestamp, &heard.pcm)?;
                    if rms(&heard.pcm) > VOICED_RMS {
                        last_activity = Instant::now();
                    }
                }
            }
            _ = tick.tick() => {
                // The input's end counts as activity: the answer to it comes after.
                if client.queued() > 0 {
                    last_activity = Instant::now();
                } else if last_activity.elapsed() >= linger {
                    break;
                }
            }
            _ = &mut interrupted => break,
        }
    }
    hang_up(&http, &base, &client.location, &secret).await;
    client.close().await;
    while let Ok(heard) = audio_rx.try_recv() {
        if heard.rate == wav::RATE {
            sink.write(heard.timestamp, &heard.pcm)?;
        }
    }
    let summary = TalkSummary { sent_s: pcm.len() as f64 / f64::from(wav::RATE), received_s: sink.seconds(), events };
    sink.finish()?;
    print(format!("hung up: sent {:.1} s, received {:.1} s → {}", summary.sent_s, summary.received_s, output.display()));
    Ok(summary)
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
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let e = &body["error"];
        bail!("{base} refused a client secret ({status}): {} {}", e["code"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""));
    }
    body["value"].as_str().map(String::from).ok_or_else(|| anyhow!("{base} answered a client secret without a value: {body}"))
}

/// Ends the call on the server (the peer closing would end it too, after ICE notices).
async fn hang_up(http: &reqwest::Client, base: &str, location: &str, secret: &str) {
    if location.is_empty() {
        return;
    }
    if let Err(e) = http.delete(format!("{base}{location}")).bearer_auth(secret).send().await {
        tracing::warn!("hanging up: {e}");
    }
}

/// Loopback for a server on this machine (ICE then offers only loopback candidates), every
/// interface otherwise.
fn bind_ip_for(base: &str) -> std::net::IpAddr {
    let host = reqwest::Url::parse(base).ok().and_then(|u| u.host_str().map(String::from)).unwrap_or_default();
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv4Addr::UNSPECIFIED.into() }
}
