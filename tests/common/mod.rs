//! Test harness: starts the real server on 127.0.0.1 and drives it as a client would, through
//! `voxrelay::client` (a real webrtc-rs peer: ICE, DTLS, SRTP, SCTP) and reqwest.
#![allow(dead_code, unused_imports)]

pub mod process;
pub mod rooms;

use std::time::{Duration, Instant};

use serde_json::Value;
use voxrelay::ServeConfig;
pub use voxrelay::client::{Client, ClientOptions, VOICED_RMS, rms};
use voxrelay_media::SAMPLES_48K;

pub const API_KEY: &str = "sk_test_voxrelay";
/// Every wait in these tests is bounded by this, so a broken server fails a test instead of
/// hanging CI.
pub const WAIT: Duration = Duration::from_secs(20);
/// The smallest SDP offer the server parses (Opus, no ICE candidates): enough for tests that
/// only need the offer to be admitted or refused.
pub const MINIMAL_OFFER: &str =
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";

pub async fn start_server() -> voxrelay::RunningServer {
    start_with(|_| {}).await
}

pub async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> voxrelay::RunningServer {
    try_start_with(tweak).await.expect("server starts")
}

/// [`start_with`] for tests that may retry (a port picked in advance can be taken meanwhile).
pub async fn try_start_with(tweak: impl FnOnce(&mut ServeConfig)) -> anyhow::Result<voxrelay::RunningServer> {
    let mut cfg = ServeConfig::defaults();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.api_key = Some(API_KEY.into());
    cfg.audio_workers = Some(2);
    cfg.drain_grace_secs = 1;
    // Each server its own history: tests run in parallel and must not see each other's calls.
    cfg.database = Some(":memory:".into());
    // Hermetic: a developer's OPENAI_API_KEY must not send test audio to a real provider.
    cfg.providers = Some(voxrelay::agent::Providers::resolve_with(&Default::default(), &|_| None).unwrap());
    tweak(&mut cfg);
    voxrelay::start(cfg).await
}

pub fn http() -> reqwest::Client {
    voxrelay::install_tls_provider();
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

/// A call under test: the client plus the log of every event it received.
pub struct Call {
    pub client: Client,
    pub log: Vec<(Instant, Value)>,
}

impl std::ops::Deref for Call {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Call {
    /// Offers a call at `path` (`/v1/realtime` or `/v1/realtime/calls`) with `token`.
    pub async fn connect(base: &str, path: &str, token: &str) -> Call {
        Self::connect_with(base, path, token, ClientOptions::default()).await
    }

    pub async fn connect_with(base: &str, path: &str, token: &str, opts: ClientOptions) -> Call {
        let client = Client::connect(&http(), &format!("{base}{path}"), token, opts).await.expect("call connects");
        Call { client, log: Vec::new() }
    }

    /// Waits for the next event of type `kind`, keeping all events seen in `log`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (at, ev) = tokio::time::timeout_at(deadline, self.client.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {kind}; saw {:?}; errors {:?}", self.types(), self.errors()))
                .expect("event stream open");
            self.log.push((at, ev.clone()));
            if ev["type"] == kind {
                return ev;
            }
        }
    }

    /// Takes every event already received into the log.
    pub fn drain(&mut self) {
        while let Ok(ev) = self.client.events.try_recv() {
            self.log.push(ev);
        }
    }

    /// The `error` events seen, whole (a timeout's message names them).
    pub fn errors(&self) -> Vec<&Value> {
        self.log.iter().map(|(_, e)| e).filter(|e| e["type"] == "error").collect()
    }

    pub fn types(&self) -> Vec<String> {
        self.log.iter().map(|(_, e)| e["type"].as_str().unwrap_or("?").to_string()).collect()
    }

    pub async fn send(&self, ev: Value) {
        self.client.send_event(&ev).await.unwrap();
    }

    /// Waits until everything queued has been sent.
    pub async fn wait_sent(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.client.queued() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "audio not sent in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Queues one spoken turn: `lead_ms` of silence, the speech fixture, then silence long
    /// enough for the turn to commit. Returns the speech's length in ms.
    pub fn speak_turn(&self, lead_ms: usize) -> usize {
        let speech = speech();
        self.say(&silence_ms(lead_ms));
        self.say(&speech);
        self.say(&silence_ms(2500));
        speech.len() / 48
    }

    /// Waits until at least `n` voiced frames have been received.
    pub async fn wait_voiced(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.levels().iter().filter(|(_, r)| *r > VOICED_RMS).count() < n {
            assert!(tokio::time::Instant::now() < deadline, "fewer than {n} voiced frames arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The barge-in every provider test makes: a spoken turn, half a second of the agent's
    /// reply heard (25 voiced frames), then the caller talks over it and goes quiet.
    pub async fn barge_into_reply(&self) {
        self.speak_turn(1500);
        self.wait_voiced(25).await;
        self.interrupt_with(&speech());
        self.say(&silence_ms(2500));
    }

    /// RMS of received frames (the test client always decodes).
    pub fn levels(&self) -> Vec<(Instant, f64)> {
        self.client.received().iter().map(|r| (r.at, r.rms.unwrap_or(0.0))).collect()
    }
}

/// Best correlation over small lags in either direction (a detected onset may be a frame or two
/// off the real one, so an echo may start a little early or late).
pub fn best_lag_correlation(sent: &[f64], received: &[f64]) -> f64 {
    let mut best = f64::MIN;
    for lag in 0..12 {
        let a = &sent[lag.min(sent.len())..];
        let n = a.len().min(received.len());
        best = best.max(correlation(&a[..n], &received[..n]));
        let b = &received[lag.min(received.len())..];
        let n = b.len().min(sent.len());
        best = best.max(correlation(&sent[..n], &b[..n]));
    }
    best
}

/// A TURN relay on loopback (REST credentials for `user`) and the ICE servers to reach it: a
/// client that uses only this relay loses its network for real when the relay shuts down.
pub async fn loopback_relay(user: &str) -> (voxrelay::relay::RelayServer, Vec<webrtc::peer_connection::RTCIceServer>) {
    let config = voxrelay::relay::RelayConfig {
        listening_ips: vec!["127.0.0.1".parse().unwrap()],
        listening_port: 0,
        min_port: 0,
        max_port: 0,
        use_auth_secret: true,
        static_auth_secrets: vec!["vanish-secret".into()],
        allow_loopback_peers: true,
        no_tls: true,
        ..voxrelay::relay::RelayConfig::default()
    };
    let relay = voxrelay::relay::RelayServer::start(&config, None).await.unwrap();
    let ice = relay.advert().ice_servers(user, voxrelay_signaling::auth::unix_now())[0].clone();
    let servers = vec![webrtc::peer_connection::RTCIceServer {
        urls: ice["urls"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()).collect(),
        username: ice["username"].as_str().unwrap().into(),
        credential: ice["credential"].as_str().unwrap().into(),
    }];
    (relay, servers)
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

/// Providers from a `[providers.*]` TOML snippet, with `env` standing in for the environment.
pub fn providers(toml_text: &str, env: &[(&str, &str)]) -> voxrelay::agent::Providers {
    #[derive(serde::Deserialize)]
    struct Top {
        #[serde(default)]
        providers: voxrelay::agent::ProvidersFile,
    }
    let file: Top = toml::from_str(toml_text).unwrap();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    voxrelay::agent::Providers::resolve_with(&file.providers, &|n| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())).unwrap()
}

/// The tool the function-calling tests declare.
pub fn weather_tool() -> Value {
    serde_json::json!({"type": "function", "name": "get_weather", "description": "The weather in a city now.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
}

/// The client's side of one function call, on a call started at `/v1/realtime/calls` (GA
/// names): declares [`weather_tool`], speaks a turn, checks the call's events (output item,
/// argument deltas adding up to `.done`, the call in `response.done`), answers with `output`,
/// asks for the next response and waits for it to finish with speech. Returns the
/// `.function_call_arguments.done` event.
pub async fn function_call_round_trip(c: &mut Call, output: &str) -> Value {
    use serde_json::json;
    c.send(json!({"type": "session.update", "session": {"type": "realtime", "tools": [weather_tool()], "tool_choice": "auto"}})).await;
    let updated = c.expect("session.updated").await;
    assert_eq!(updated["session"]["tools"][0], weather_tool(), "tools are echoed");
    c.speak_turn(1500);
    let args = c.expect("response.function_call_arguments.done").await;
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    let call_id = args["call_id"].as_str().expect("call_id").to_string();
    assert_eq!(args["name"], "get_weather");
    let deltas: String = c
        .log
        .iter()
        .filter(|(_, e)| e["type"] == "response.function_call_arguments.delta" && e["call_id"] == call_id.as_str())
        .map(|(_, e)| e["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deltas, args["arguments"].as_str().unwrap(), "the deltas add up to the arguments");
    assert!(
        c.log.iter().any(|(_, e)| e["type"] == "response.output_item.added"
            && e["item"]["type"] == "function_call"
            && e["item"]["call_id"] == call_id.as_str()),
        "the call's item was announced: {:?}",
        c.types()
    );
    let in_output =
        done["response"]["output"].as_array().unwrap().iter().find(|i| i["type"] == "function_call").expect("call in response.done");
    assert_eq!((&in_output["call_id"], &in_output["arguments"]), (&args["call_id"], &args["arguments"]));
    let voiced_before = c.levels().iter().filter(|(_, r)| *r > VOICED_RMS).count();

    c.send(json!({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_unknown", "output": "x"}}))
        .await;
    assert_eq!(c.expect("error").await["error"]["code"], "unknown_call_id");
    c.send(json!({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": call_id, "output": output}}))
        .await;
    let added = c.expect("conversation.item.added").await;
    assert_eq!((&added["item"]["type"], &added["item"]["output"]), (&json!("function_call_output"), &json!(output)));
    c.send(json!({"type": "response.create"})).await;
    let next = c.expect("response.done").await;
    assert_eq!(next["response"]["status"], "completed", "{next}");
    c.wait_voiced(voiced_before + 10).await;
    args
}
