//! The load generator against a real server: a few full WebRTC sessions, each answered by the
//! echo agent (or, with `--agent`, a provider's, through the local OpenAI fake); its JSON report
//! shows every session connected and every turn answered, and the server's /metrics moved with
//! the traffic. The same for simulated phone calls over Twilio
//! Media Streams (`--transport twilio`).

use crate::common;

use common::*;
use voxrelay::loadgen::{LoadTransport, LoadgenConfig, run};

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_small_run_reports_answered_turns() {
    let server = start_server().await;
    let base = server.url();
    let before = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let json_path = std::env::temp_dir().join(format!("voxrelay-loadgen-{}.json", std::process::id()));
    let mut cfg = LoadgenConfig::new(&base, API_KEY, 3, 6.0);
    cfg.json = Some(json_path.clone());
    let report = run(cfg).await.expect("loadgen runs");
    eprintln!("{}", report.summary());

    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json_path);
    assert_eq!(v["sessions_requested"], 3);
    assert_eq!(v["sessions_connected"], 3, "{}", report.summary());
    assert_eq!(v["sessions_failed"], 0);
    let sent = v["turns_sent"].as_u64().unwrap();
    assert!(sent >= 3, "at least one turn per session");
    assert_eq!(v["turns_answered"].as_u64().unwrap(), sent, "every turn echoed");
    assert_eq!(v["turn_latency_ms"]["count"].as_u64().unwrap(), sent);
    assert!(v["turn_latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(v["events_by_type"]["response.done"].as_u64().unwrap() >= sent);
    assert!(v["loss_pct"]["max"].as_f64().unwrap() < 1.0, "no loss on loopback");
    assert_eq!(v["sessions"].as_array().unwrap().len(), 3);
    assert!(v["duration_s"].as_f64().unwrap() >= 6.0, "a run is never shorter than --duration: {}", report.summary());

    let after = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for name in ["voxrelay_calls_started_total", "voxrelay_rtp_packets_in_total", "voxrelay_rtp_packets_out_total", "voxrelay_turns_committed_total"] {
        assert!(metric(&after, name) > metric(&before, name), "{name} did not move");
    }
    assert!(metric(&after, "voxrelay_turns_committed_total") >= sent as f64);
    assert!(metric(&after, "voxrelay_media_frames_decoded_total") > 100.0, "jitter/decoder counters exported");
    // Its callers send with DTX, as browsers do against the answer's usedtx=1: the silences
    // between spurts arrive as DTX pauses, not decoded frames.
    let dtx = metric(&after, "voxrelay_media_dtx_frames_total");
    assert!(dtx > 100.0, "the load generator's silences are DTX: {dtx} frames");
    // Concealed, each paused tick would count (as many as the DTX frames); a busy machine may
    // still make a packet or two late.
    assert!(metric(&after, "voxrelay_media_concealed_total") < dtx / 10.0, "a DTX pause is not concealed as a loss");
    assert!(metric(&after, "voxrelay_media_voiced_out_total") > 0.0);
    assert!(metric(&after, "voxrelay_agent_first_audio_seconds_count") >= sent as f64, "agent latency observed per response");
    let ticks = metric(&after, "voxrelay_worker_tick_seconds_count{worker=\"0\"}");
    assert!(ticks > 0.0 && metric(&after, "voxrelay_worker_tick_seconds_bucket{worker=\"0\",le=\"+Inf\"}") == ticks);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_phone_calls_are_answered_over_twilio_media_streams() {
    let server = start_server().await;
    let base = server.url();
    let mut cfg = LoadgenConfig::new(&base, API_KEY, 2, 6.0);
    cfg.transport = LoadTransport::Twilio;
    let report = run(cfg).await.expect("loadgen runs");
    eprintln!("{}", report.summary());
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["sessions_connected"], 2, "{}", report.summary());
    assert_eq!(v["sessions_failed"], 0, "{}", report.summary());
    let sent = v["turns_sent"].as_u64().unwrap();
    assert!(sent >= 2, "at least one turn per call");
    assert_eq!(v["turns_answered"].as_u64().unwrap(), sent, "every turn echoed: {}", report.summary());
    assert!(v["turn_latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    // Every voiced frame the bridge sent came with its mark, and every mark was returned.
    let media = v["events_by_type"]["media"].as_u64().unwrap();
    assert!(media >= sent * 100, "{media} media frames for {sent} turns of 2.8 s");
    assert_eq!(v["events_by_type"]["mark"].as_u64().unwrap(), media);
    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&metrics, "voxrelay_turns_committed_total") >= sent as f64);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_realtime_websocket_sessions_are_answered_with_audio_deltas() {
    let server = start_server().await;
    let base = server.url();
    let mut cfg = LoadgenConfig::new(&base, API_KEY, 2, 6.0);
    cfg.transport = LoadTransport::Ws;
    let report = run(cfg).await.expect("loadgen runs");
    eprintln!("{}", report.summary());
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!((v["sessions_connected"].as_u64(), v["sessions_failed"].as_u64()), (Some(2), Some(0)), "{}", report.summary());
    let sent = v["turns_sent"].as_u64().unwrap();
    assert!(sent >= 2, "at least one turn per session");
    assert_eq!(v["turns_answered"].as_u64().unwrap(), sent, "every turn echoed: {}", report.summary());
    assert!(v["turn_latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    let deltas = v["events_by_type"]["response.audio.delta"].as_u64().unwrap();
    assert!(deltas >= sent * 100, "{deltas} audio deltas for {sent} turns of 2.8 s");
    assert_eq!(v["events_by_type"]["response.done"].as_u64(), Some(sent));
    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&metrics, "voxrelay_turns_committed_total") >= sent as f64);
    server.shutdown().await;
}

#[tokio::test]
async fn loadgen_phone_calls_refuse_a_silence_the_bridge_cannot_set() {
    let mut cfg = LoadgenConfig::new("http://127.0.0.1:9", API_KEY, 1, 1.0);
    cfg.transport = LoadTransport::Twilio;
    cfg.silence_ms = 800;
    let err = run(cfg).await.expect_err("refused before dialling");
    assert!(err.to_string().contains("--silence-ms"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_room_mode_measures_forwarding_through_the_sfu() {
    let server = start_server().await;
    let base = server.url();
    let mut cfg = LoadgenConfig::new(&base, API_KEY, 0, 4.0);
    cfg.room = Some("load".into());
    cfg.publishers = 2;
    cfg.subscribers = 3;
    cfg.slots = 2;
    cfg.server_pid = Some(std::process::id());
    let report = voxrelay::loadgen::run_room(cfg).await.expect("room loadgen runs");
    eprintln!("{}", report.summary());
    assert_eq!((report.joined, report.failed), (5, 0), "{}", report.summary());
    // Two publishers at 50 packets/s; each subscriber hears both on its two slots (minus each
    // spurt's speaking onset): ≈ 100 in, ≈ 300 out.
    assert!((80.0..=110.0).contains(&report.packets_in_per_s), "{}", report.summary());
    assert!((200.0..=320.0).contains(&report.packets_out_per_s), "{}", report.summary());
    assert!(report.mouth_to_ear_ms.count > 500, "latency measured on forwarded packets");
    assert!(report.mouth_to_ear_ms.p50 > 0.0);
    assert!(report.loss_pct.max < 1.0, "no loss on loopback: {}", report.summary());
    assert_eq!(report.join_ms.count, 5);
    assert!(report.server_cpu_pct.is_some());
    let info: serde_json::Value = http().get(format!("{base}/v1/rooms/load")).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
    assert!(info["counters"]["packets_forwarded"].as_u64().unwrap() > 500, "{info}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_room_mode_with_an_agent_measures_its_turn_latency() {
    let server = start_server().await;
    let base = server.url();
    let mut cfg = LoadgenConfig::new(&base, API_KEY, 0, 8.0);
    cfg.room = Some("meeting".into());
    cfg.publishers = 2;
    cfg.subscribers = 1;
    cfg.slots = 1;
    cfg.agent = Some("echo".into());
    let report = voxrelay::loadgen::run_room(cfg).await.expect("room loadgen with an agent runs");
    eprintln!("{}", report.summary());
    assert_eq!((report.joined, report.failed), (3, 0), "{}", report.summary());
    // Two publishers in turn, each answered before the next speaks (≈ 3 s per sentence and as
    // much for its echo: at least two turns in 8 s).
    assert!(report.agent_turns >= 2, "{}", report.summary());
    assert_eq!(report.agent_answered, report.agent_turns, "{}", report.summary());
    assert_eq!(report.agent_turn_ms.count, report.agent_answered, "a latency per answered turn: {}", report.summary());
    assert!(report.agent_turn_ms.p50 > 0.0, "{}", report.summary());
    let info: serde_json::Value = http().get(format!("{base}/v1/rooms/meeting")).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
    assert!(info["participants"].as_array().unwrap().iter().any(|p| p["identity"] == "agent"), "{info}");
    server.shutdown().await;
}

/// `--agent`: the calls are answered by a provider agent (here the local OpenAI Realtime fake,
/// through voxrelay's real adapter) instead of the echo agent, as a provider-bridge capacity
/// run uses it (BENCHMARKS.md "The default call limit").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_calls_can_be_answered_by_a_provider_agent() {
    use crate::fakes::openai_realtime::{Behaviour, FakeOpenAi};
    const KEY: &str = "sk-test-fake";
    let fake = FakeOpenAi::start(KEY, Behaviour::default()).await;
    let toml = format!("[providers.openai]\nbase_url = \"{}\"\n", fake.url);
    let providers = providers(&toml, &[("OPENAI_API_KEY", KEY)]);
    let server = start_with(|c| c.providers = Some(providers)).await;
    let mut cfg = LoadgenConfig::new(&server.url(), API_KEY, 2, 5.0);
    cfg.agent = Some("openai-realtime".into());
    let report = run(cfg).await.expect("loadgen runs");
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["sessions_connected"], 2, "{}", report.summary());
    let sent = v["turns_sent"].as_u64().unwrap();
    assert!(sent >= 2, "at least one turn per session: {}", report.summary());
    assert_eq!(v["turns_answered"].as_u64().unwrap(), sent, "every turn answered through the provider: {}", report.summary());
    assert_eq!(fake.log.lock().unwrap().connections, 2, "one provider connection per call");
    assert!(fake.types().iter().filter(|t| *t == "response.create").count() as u64 >= sent, "{:?}", fake.types());

    // An agent the server has no provider for: every call fails, with the cause in the report.
    let mut cfg = LoadgenConfig::new(&server.url(), API_KEY, 1, 1.0);
    cfg.agent = Some("gemini-live".into());
    let report = run(cfg).await.expect("loadgen runs");
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!((v["sessions_connected"].as_u64(), v["sessions_failed"].as_u64()), (Some(0), Some(1)), "{}", report.summary());
    server.shutdown().await;
}
