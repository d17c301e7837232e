//! The Twilio Media Streams bridge (PROTOCOL.md §5) against a fake phone line that speaks
//! Twilio's messages byte for byte with real mu-law speech (the speech fixture): full turns
//! with marks, barge-in with `clear`, no self-interruption from line echo, bursty and
//! reordered media, bad input, and request signatures.
//!
//! `VOXRELAY_SELF_INTERRUPT_TURNS` sets the agent turns of the self-interruption test (default
//! 6 to keep CI short; the issue's acceptance run is 20: see BENCHMARKS.md "Telephony bridge").

mod common;
#[path = "fakes/phone_line.rs"]
mod phone_line;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use phone_line::{FakeLine, Impairments, to_8k};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use voxrelay::engine::TransportKind;

fn ws_base(server: &voxrelay::RunningServer) -> String {
    server.url().replacen("http", "ws", 1)
}

fn speech_8k() -> Vec<i16> {
    to_8k(&speech())
}

fn silence_8k(ms: usize) -> Vec<i16> {
    vec![0; ms * 8]
}

/// Waits until `cond` holds on the line's log.
async fn until(line: &FakeLine, what: &str, cond: impl Fn(&phone_line::LineLog) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if cond(&line.log.lock().unwrap()) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let l = line.log.lock().unwrap();
            panic!(
                "timed out waiting for {what}: {} media received, {} played ({} voiced), {} marks returned, {} clears",
                l.media_received(),
                l.played.len(),
                l.voiced_played(),
                l.marks_returned.len(),
                l.clears.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The only live phone call's id.
async fn phone_call_id(server: &voxrelay::RunningServer) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ids = server.engine.call_ids(TransportKind::Twilio);
        if ids.len() == 1 {
            return ids[0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "phone call never started ({ids:?})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An operator's events socket on a call (`GET /v1/calls/<id>/events`).
struct Events {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    pub log: Vec<Value>,
}

impl Events {
    async fn attach(server: &voxrelay::RunningServer, id: &str) -> Events {
        let url = format!("{}/v1/calls/{id}/events", ws_base(server));
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {API_KEY}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("events socket");
        Events { ws, log: Vec::new() }
    }

    /// Next event matching `pred`, keeping everything seen in `log`.
    async fn expect_where(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {:?}", self.types()))
                .expect("events socket open")
                .expect("events socket ok");
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).unwrap();
                self.log.push(v.clone());
                if pred(&v) {
                    return v;
                }
            }
        }
    }

    async fn expect(&mut self, kind: &str) -> Value {
        self.expect_where(kind, |v| v["type"] == kind).await
    }

    fn types(&self) -> Vec<String> {
        self.log.iter().map(|e| e["type"].as_str().unwrap_or("?").to_string()).collect()
    }

    fn count(&self, kind: &str) -> usize {
        self.log.iter().filter(|e| e["type"] == kind).count()
    }
}

async fn metrics(server: &voxrelay::RunningServer) -> String {
    http().get(format!("{}/metrics", server.url())).send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answers_twiml_connecting_the_stream() {
    let server = start_with(|c| c.public_url = Some("https://voice.example.test/".into())).await;
    let resp = http()
        .post(format!("{}/v1/telephony/twilio/voice?agent=echo&instructions=Be%20brief%20%26%20kind", server.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("CallSid=CA1&From=%2B15550100&To=%2B15550101")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/xml");
    assert_eq!(
        resp.text().await.unwrap(),
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://voice.example.test/v1/telephony/twilio"><Parameter name="agent" value="echo"/><Parameter name="instructions" value="Be brief &amp; kind"/></Stream></Connect></Response>"#
    );
    let resp = http().post(format!("{}/v1/telephony/twilio/voice?agent=nope", server.url())).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "unknown_agent");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_turn_echoes_mulaw_with_marks_and_events() {
    let server = start_server().await;
    let line = FakeLine::connect(&format!("{}/v1/telephony/twilio", ws_base(&server)), json!({"agent": "echo"}), Impairments::default()).await;
    let id = phone_call_id(&server).await;
    assert!(id.starts_with("tel_"), "{id}");
    let mut events = Events::attach(&server, &id).await;
    let created = events.expect("session.created").await;
    assert_eq!(created["session"]["agent"], "echo", "{created}");
    assert!(metrics(&server).await.contains("voxrelay_active_calls_by_transport{transport=\"twilio\"} 1"));

    let speech = speech_8k();
    line.say(&silence_8k(500));
    line.say(&speech);
    line.say(&silence_8k(3000));
    let started = events.expect("input_audio_buffer.speech_started").await;
    let onset = started["audio_start_ms"].as_i64().unwrap();
    let (voice_from, voice_to) = voiced_span_ms(&speech);
    let said = line.log.lock().unwrap().said_at_ms[1] as i64;
    let truth = said + voice_from;
    assert!((onset - truth).abs() <= 100, "speech_started at {onset} ms, speech starts at {truth} ms");
    let stopped = events.expect("input_audio_buffer.speech_stopped").await;
    let end = stopped["audio_end_ms"].as_i64().unwrap();
    assert!((end - (said + voice_to)).abs() <= 150, "speech_stopped at {end} ms, speech ends at {} ms", said + voice_to);
    events.expect("response.created").await;
    events.expect("output_audio_buffer.started").await;
    let done = events.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");

    // The echo came back as 160-byte mu-law frames, each followed by its mark, and the line
    // played and acknowledged all of them.
    let frames = ((end - onset) / 20) as usize;
    until(&line, "the echo to play out", |l| l.media_received() >= frames * 9 / 10 && l.marks_returned.len() == l.media_received()).await;
    let sent_voiced = speech.chunks(160).filter(|f| phone_line::rms(f) > 300.0).count();
    let played_voiced = line.log.lock().unwrap().voiced_played();
    assert!(played_voiced as f64 >= 0.8 * sent_voiced as f64, "echo has {played_voiced} voiced frames, speech had {sent_voiced}");
    {
        let log = line.log.lock().unwrap();
        let msgs: Vec<&Value> = log.messages.iter().map(|(_, m)| m).collect();
        for pair in msgs.windows(2) {
            if pair[0]["event"] == "media" {
                assert_eq!(pair[1]["event"], "mark", "every media is followed by its mark");
                let payload = pair[0]["media"]["payload"].as_str().unwrap();
                assert_eq!(payload.len(), 216, "160 bytes of mu-law per message");
                assert_eq!(pair[0].as_object().unwrap().keys().collect::<Vec<_>>(), ["event", "media", "streamSid"]);
            }
        }
        assert!(log.media_received() >= frames * 9 / 10, "{} media for a {frames}-frame turn", log.media_received());
        // The echo has the speech's energy envelope (the first voiced frames of each).
        let sent: Vec<f64> = speech.chunks(160).map(phone_line::rms).collect();
        let played: Vec<f64> = log.played.iter().map(|(_, f)| phone_line::rms(f)).collect();
        let s0 = sent.iter().position(|&r| r > 300.0).unwrap();
        let p0 = played.iter().position(|&r| r > 300.0).unwrap();
        let n = (sent.len() - s0).min(played.len() - p0).min(100);
        let corr = best_lag(&sent[s0..s0 + n], &played[p0..p0 + n]);
        assert!(corr > 0.7, "envelope correlation {corr:.2}");
    }

    // DTMF reaches the event stream.
    line.dtmf('5');
    let dtmf = events.expect("input_audio_buffer.dtmf_event_received").await;
    assert_eq!(dtmf["event"], "5");

    // `stop` ends the call.
    line.stop();
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.engine.live_calls() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "stop did not end the call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics(&server).await.contains("voxrelay_active_calls_by_transport{transport=\"twilio\"} 0"));
    server.shutdown().await;
}

/// Where the fixture's voice begins and ends (ms), by 20 ms frame level.
fn voiced_span_ms(pcm8: &[i16]) -> (i64, i64) {
    let levels: Vec<f64> = pcm8.chunks(160).map(phone_line::rms).collect();
    let first = levels.iter().position(|&r| r > 300.0).unwrap();
    let last = levels.iter().rposition(|&r| r > 300.0).unwrap();
    (first as i64 * 20, (last as i64 + 1) * 20)
}

fn best_lag(a: &[f64], b: &[f64]) -> f64 {
    let mut best = f64::MIN;
    for lag in 0..6 {
        let n = a.len().saturating_sub(lag).min(b.len());
        best = best.max(correlation(&a[lag..lag + n], &b[..n]));
        let n = b.len().saturating_sub(lag).min(a.len());
        best = best.max(correlation(&a[..n], &b[lag..lag + n]));
    }
    best
}
