//! Adapter latency of `openai-realtime`, p50/p99, against a local WebSocket peer on loopback:
//! - uplink: a caller frame handed to the agent (what the call task does when the audio worker
//!   delivers it) → the `input_audio_buffer.append` carrying it read by the provider;
//! - downlink: the provider writes a 20 ms audio delta → the agent yields the frame to the
//!   call task (which hands it to the audio worker on its next 10 ms poll).
//!
//! `cargo bench --bench provider_latency` (prints a table; numbers in BENCHMARKS.md).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use voxrelay::agent::bridge::Bridge;
use voxrelay::agent::providers::{OpenAiConfig, OpenAiDialect};
use voxrelay::agent::{Agent, AgentOutput, openai};
use voxrelay_media::AudioTime;
use voxrelay_signaling::SessionConfig;

const FRAMES: usize = 500;
const RESPONSES: usize = 200;

#[derive(Default)]
struct Seen {
    /// Arrival time of each uplink frame, by the sequence number in its first sample.
    uplink: Vec<Option<Instant>>,
    /// When each response's audio delta was written.
    delta_sent: Vec<Instant>,
}

async fn peer(listener: TcpListener, seen: Arc<Mutex<Seen>>) {
    let (tcp, _) = listener.accept().await.unwrap();
    // As a provider's server would: no Nagle delay on small messages.
    tcp.set_nodelay(true).unwrap();
    let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(json!({"type": "session.created", "session": {}}).to_string())).await.unwrap();
    let mut n = 0;
    while let Some(Ok(msg)) = rx.next().await {
        // Pings (every 15 s) and the like are not for us.
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        match v["type"].as_str() {
            Some("input_audio_buffer.append") => {
                let now = Instant::now();
                let bytes = B64.decode(v["audio"].as_str().unwrap()).unwrap();
                let seq = i16::from_le_bytes([bytes[0], bytes[1]]) as usize;
                seen.lock().unwrap().uplink[seq] = Some(now);
            }
            Some("response.create") => {
                n += 1;
                let id = format!("resp_{n}");
                tx.send(Message::text(json!({"type": "response.created", "response": {"id": id}}).to_string())).await.unwrap();
                let delta = json!({"type": "response.output_audio.delta", "response_id": id, "item_id": "i", "delta": B64.encode([1u8; 960])});
                seen.lock().unwrap().delta_sent.push(Instant::now());
                tx.send(Message::text(delta.to_string())).await.unwrap();
                tx.send(Message::text(json!({"type": "response.done", "response": {"id": id, "status": "completed"}}).to_string())).await.unwrap();
            }
            _ => {}
        }
    }
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (at(0.5), at(0.99), *v.last().unwrap())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    voxrelay::install_tls_provider();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1/realtime", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen { uplink: vec![None; FRAMES], delta_sent: Vec::new() }));
    tokio::spawn(peer(listener, seen.clone()));
    let cfg = OpenAiConfig {
        api_key: "k".into(),
        model: "m".into(),
        voice: "v".into(),
        base_url: url,
        dialect: OpenAiDialect::Ga,
        transcription_model: "t".into(),
        connect_timeout: Duration::from_secs(5),
    };
    // Push-to-talk settings: every frame goes up (no VAD gate in the way of the measurement).
    let session = SessionConfig { turn_detection: None, ..SessionConfig::default() };
    let s2 = session.clone();
    let mut agent = Bridge::spawn(&session, move |link| openai::run(cfg, s2, Default::default(), link));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut sent = Vec::with_capacity(FRAMES);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for seq in 0..FRAMES {
        tick.tick().await;
        let mut pcm = [0i16; 480];
        pcm[0] = seq as i16;
        sent.push(Instant::now());
        agent.on_audio(AudioTime::from_ms(seq as u64 * 20), &pcm);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let uplink: Vec<Duration> = {
        let seen = seen.lock().unwrap();
        sent.iter().zip(&seen.uplink).filter_map(|(s, r)| r.map(|r| r - *s)).collect()
    };
    assert_eq!(uplink.len(), FRAMES, "every frame arrived");

    let mut downlink = Vec::with_capacity(RESPONSES);
    for num in 1..=RESPONSES as u64 {
        agent.start_response(num, &Default::default());
        let got = loop {
            match agent.poll_output() {
                Some(AgentOutput::Audio(_)) => break Instant::now(),
                Some(AgentOutput::Failed { message, .. }) => panic!("response failed: {message}"),
                Some(_) => {}
                None => tokio::time::sleep(Duration::from_micros(200)).await,
            }
        };
        while !matches!(agent.poll_output(), Some(AgentOutput::Done)) {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let sent_at = seen.lock().unwrap().delta_sent[num as usize - 1];
        downlink.push(got - sent_at);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (u50, u99, umax) = percentiles(uplink);
    let (d50, d99, dmax) = percentiles(downlink);
    println!("openai-realtime adapter latency on loopback ({FRAMES} frames, {RESPONSES} responses)");
    println!("| direction | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!("| caller frame -> provider reads append | {u50:.2?} | {u99:.2?} | {umax:.2?} |");
    println!("| provider writes delta -> frame out of the agent (200 µs polling) | {d50:.2?} | {d99:.2?} | {dmax:.2?} |");
}
