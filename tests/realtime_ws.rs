//! Realtime sessions over WebSocket (PROTOCOL.md §8), driven as an OpenAI Realtime WebSocket
//! client drives them: `input_audio_buffer.append` with base64 audio (the speech fixture at
//! 24 kHz pcm16, or mu-law at 8 kHz), server VAD and push-to-talk turns, the echo agent's answer
//! back as `response.audio.delta` chunks (decoded here and compared with what was said), beta
//! and GA names, barge-in, the browser subprotocol credential, and refusals.

use crate::common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use voxrelay_media::{G711Law, Resampler, SAMPLES_24K, SAMPLES_48K, SampleRate};

/// A Realtime WebSocket client: a task writes what `send` queues (so a server taking audio in
/// real time never blocks the reading side), and every event received is logged.
struct Session {
    out: mpsc::UnboundedSender<Message>,
    events: futures_util::stream::SplitStream<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>,
    log: Vec<Value>,
}

impl Session {
    async fn connect(server: &voxrelay::RunningServer, query: &str, headers: &[(&str, &str)]) -> Result<Self, WsError> {
        let url = format!("{}/v1/realtime?model=gpt-realtime{query}", server.url().replacen("http", "ws", 1));
        let mut req = url.into_client_request().unwrap();
        for (k, v) in headers {
            let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
            req.headers_mut().insert(name, v.parse().unwrap());
        }
        let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await.expect("handshake in time")?;
        if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-protocol")) {
            assert_eq!(resp.headers()["sec-websocket-protocol"], "realtime", "the server selects the realtime subprotocol");
        }
        let (mut sink, events) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        Ok(Session { out, events, log: Vec::new() })
    }

    async fn with_key(server: &voxrelay::RunningServer, query: &str) -> Self {
        Self::connect(server, query, &[("authorization", &format!("Bearer {API_KEY}"))]).await.expect("connects")
    }

    fn send(&self, event: Value) {
        self.out.send(Message::Text(event.to_string().into())).unwrap();
    }

    /// Appends audio bytes in chunks of `chunk_ms` (all queued at once: the server paces).
    fn append(&self, bytes: &[u8], bytes_per_ms: usize, chunk_ms: usize) {
        for chunk in bytes.chunks(bytes_per_ms * chunk_ms) {
            self.send(json!({"type": "input_audio_buffer.append", "audio": B64.encode(chunk)}));
        }
    }

    /// Reads events until one of type `kind` arrives (every event is logged); returns it.
    async fn until(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.events.next())
                .await
                .unwrap_or_else(|_| panic!("no {kind} in time; seen {:?}", self.types()))
                .unwrap_or_else(|| panic!("socket closed before {kind}; seen {:?}", self.types()))
                .expect("socket read");
            if let Message::Text(text) = msg {
                let v: Value = serde_json::from_str(&text).unwrap();
                self.log.push(v.clone());
                if v["type"] == kind {
                    return v;
                }
            }
        }
    }

    fn types(&self) -> Vec<String> {
        self.log.iter().map(|v| v["type"].as_str().unwrap_or_default().to_string()).collect()
    }

    fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.log.iter().filter(|v| v["type"] == kind).collect()
    }

    /// The audio of every delta event of `kind` so far, concatenated.
    fn delta_bytes(&self, kind: &str) -> Vec<u8> {
        self.of_type(kind).iter().flat_map(|v| B64.decode(v["delta"].as_str().unwrap()).unwrap()).collect()
    }
}

/// The speech fixture at 24 kHz.
fn speech_24k() -> Vec<i16> {
    let mut down = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_24K).unwrap();
    let mut out = Vec::new();
    for frame in speech().chunks_exact(SAMPLES_48K) {
        let mut pcm = [0i16; SAMPLES_24K];
        down.process(frame, &mut pcm);
        out.extend_from_slice(&pcm);
    }
    out
}

fn le_bytes(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn from_le(bytes: &[u8]) -> Vec<i16> {
    bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// How well an echo follows what was said: both 20 ms envelopes from their first voiced frame,
/// the best Pearson correlation over lags of up to 5 frames either way.
fn echo_correlation(said: &[f64], heard: &[f64]) -> f64 {
    let voiced_from = |e: &[f64]| e.iter().position(|&r| r > VOICED_RMS).unwrap_or(0);
    let (a, b) = (&said[voiced_from(said)..], &heard[voiced_from(heard)..]);
    let mut best = f64::MIN;
    for lag in 0..6 {
        let n = a.len().saturating_sub(lag).min(b.len());
        best = best.max(correlation(&a[lag..lag + n], &b[..n]));
        let n = b.len().saturating_sub(lag).min(a.len());
        best = best.max(correlation(&a[..n], &b[lag..lag + n]));
    }
    best
}

fn envelope_at(pcm: &[i16], frame: usize) -> Vec<f64> {
    pcm.chunks(frame).map(rms).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_turn_is_answered_with_audio_deltas_in_real_time() {
    let server = start_server().await;
    let mut s = Session::with_key(&server, "").await;
    let created = s.until("session.created").await;
    assert_eq!(created["session"]["input_audio_format"], "pcm16", "beta names and session by default");

    let speech = speech_24k();
    let mut audio = le_bytes(&vec![0; 24 * 300]);
    audio.extend(le_bytes(&speech));
    audio.extend(le_bytes(&vec![0; 24 * 1500]));
    let sent_at = Instant::now();
    // 100 ms chunks, all at once (a file): the server takes them at the speed of speech.
    s.append(&audio, 48, 100);

    let stopped = s.until("input_audio_buffer.speech_stopped").await;
    let audio_end_ms = stopped["audio_end_ms"].as_u64().unwrap();
    let speech_ms = (speech.len() / 24) as u64;
    assert!(
        (300 + speech_ms - 200..=300 + speech_ms + 300).contains(&audio_end_ms),
        "speech ends at {audio_end_ms} ms (spoken {speech_ms} ms after 300)"
    );
    assert!(sent_at.elapsed() >= Duration::from_millis(audio_end_ms), "audio is consumed in real time, not faster");
    s.until("input_audio_buffer.committed").await;
    let created = s.until("response.created").await;
    let response_id = created["response"]["id"].as_str().unwrap().to_string();
    s.until("response.audio.done").await;
    let done = s.until("response.done").await;
    assert_eq!(done["response"]["status"], "completed");

    // Every delta belongs to the response and came before its audio.done.
    let deltas = s.of_type("response.audio.delta");
    assert!(!deltas.is_empty(), "{:?}", s.types());
    assert!(deltas.iter().all(|d| d["response_id"] == response_id.as_str() && d["content_index"] == 0 && d["output_index"] == 0));
    let first_delta = s.types().iter().position(|t| t == "response.audio.delta").unwrap();
    let audio_done = s.types().iter().position(|t| t == "response.audio.done").unwrap();
    let last_delta = s.types().iter().rposition(|t| t == "response.audio.delta").unwrap();
    assert!(first_delta < audio_done && last_delta < audio_done, "{:?}", s.types());
    assert_eq!(deltas[0]["item_id"], done["response"]["output"][0]["id"]);

    // What came back is what was said: pcm16 at 24 kHz, as long as the turn, same envelope.
    let heard = from_le(&s.delta_bytes("response.audio.delta"));
    let heard_ms = heard.len() / 24;
    assert!(heard_ms as u64 >= speech_ms - 100, "echoed {heard_ms} ms of a {speech_ms} ms turn");
    let r = echo_correlation(&envelope_at(&speech, SAMPLES_24K), &envelope_at(&heard, SAMPLES_24K));
    assert!(r > 0.8, "echo correlation {r}");
    assert!(s.of_type("error").is_empty(), "{:?}", s.of_type("error"));

    let metrics = http().get(format!("{}/metrics", server.url())).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("voxrelay_active_calls_by_transport{transport=\"websocket\"} 1"), "{metrics}");
    drop(s);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_talk_in_mulaw_with_ga_names() {
    let server = start_server().await;
    let mut s = Session::with_key(&server, "").await;
    s.until("session.created").await;
    // A GA client: its session.update switches the names; mu-law both ways; push-to-talk.
    s.send(json!({"type": "session.update", "session": {
        "type": "realtime",
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": null}, "output": {"format": {"type": "audio/pcmu"}}},
    }}));
    let updated = s.until("session.updated").await;
    assert_eq!(updated["session"]["audio"]["input"]["format"]["type"], "audio/pcmu");
    assert_eq!(updated["session"]["audio"]["input"]["turn_detection"], Value::Null);

    let mut pcm8 = vec![0i16; 8 * 200];
    pcm8.extend(speech().iter().step_by(6).copied());
    pcm8.extend(vec![0i16; 8 * 200]);
    let mulaw: Vec<u8> = pcm8.iter().map(|&s| G711Law::Mu.encode_sample(s)).collect();
    // Uneven chunks (73 ms): frames are cut by the server, not by the client.
    s.append(&mulaw, 8, 73);
    s.send(json!({"type": "input_audio_buffer.commit", "event_id": "c1"}));
    s.send(json!({"type": "response.create"}));
    let committed = s.until("input_audio_buffer.committed").await;
    let audio_ms = pcm8.len() as u64 / 8;
    s.until("conversation.item.added").await;
    s.until("response.output_audio.done").await;
    let done = s.until("response.done").await;
    assert_eq!(done["response"]["status"], "completed");
    assert!(s.of_type("input_audio_buffer.speech_started").is_empty(), "no server VAD events in push-to-talk");
    assert!(s.of_type("response.audio.delta").is_empty(), "GA names only");
    let _ = committed;

    // The answer is the whole committed buffer, in mu-law at 8 kHz.
    let heard: Vec<i16> = s.delta_bytes("response.output_audio.delta").iter().map(|&c| G711Law::Mu.decode_sample(c)).collect();
    let heard_ms = heard.len() as u64 / 8;
    // The commit lands after the last appended frame has played through the jitter buffer, so
    // the turn may end with up to ≈ 160 ms of the silence concealed after it.
    assert!((audio_ms - 150..=audio_ms + 200).contains(&heard_ms), "echoed {heard_ms} ms of {audio_ms} ms committed");
    let r = echo_correlation(&envelope_at(&pcm8, 160), &envelope_at(&heard, 160));
    assert!(r > 0.8, "echo correlation {r}");
    drop(s);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_turns_are_answered_with_text() {
    let server = start_server().await;
    let mut s = Session::with_key(&server, "").await;
    s.until("session.created").await;
    let say = |s: &Session, text: &str| {
        s.send(json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
    };
    // Text-only: text deltas, no audio at all.
    say(&s, "What is the capital of France?");
    s.send(json!({"type": "response.create", "response": {"modalities": ["text"], "instructions": "Answer in one word."}}));
    let delta = s.until("response.text.delta").await;
    assert_eq!(delta["delta"], "What is the capital of France?", "the echo agent answers a text turn with its text");
    let done = s.until("response.text.done").await;
    assert_eq!(done["text"], "What is the capital of France?");
    let r = s.until("response.done").await;
    assert_eq!(
        (r["response"]["status"].as_str(), r["response"]["output"][0]["content"][0]["type"].as_str()),
        (Some("completed"), Some("text"))
    );
    assert!(!s.types().iter().any(|t| t.contains("audio")), "{:?}", s.types());
    // With audio (the default), the echo's words are the transcript of an answer with no audio.
    say(&s, "Bonjour");
    s.send(json!({"type": "response.create"}));
    assert_eq!(s.until("response.audio_transcript.delta").await["delta"], "Bonjour");
    s.until("response.done").await;
    assert!(s.of_type("response.audio.delta").is_empty());
    assert!(s.of_type("error").is_empty(), "{:?}", s.of_type("error"));
    drop(s);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaking_over_the_answer_cancels_it_and_its_deltas_stop() {
    let server = start_server().await;
    let mut s = Session::with_key(&server, "").await;
    s.until("session.created").await;
    let speech = le_bytes(&speech_24k());
    let silence = |ms: usize| le_bytes(&vec![0; 24 * ms]);
    s.append(&[silence(300), speech.clone(), silence(700)].concat(), 48, 100);
    s.until("response.created").await;
    s.until("response.audio.delta").await;
    // Keep talking over the answer.
    s.append(&[silence(200), speech, silence(800)].concat(), 48, 20);
    s.until("input_audio_buffer.speech_started").await;
    let done = s.until("response.done").await;
    assert_eq!(done["response"]["status"], "cancelled");
    let truncated = s.of_type("conversation.item.truncated");
    assert_eq!(truncated.len(), 1, "{:?}", s.types());
    let cut_at = s.types().iter().rposition(|t| t == "response.done").unwrap();
    let deltas_before = s.of_type("response.audio.delta").len();
    // Deltas sent before the cancel match what the server counts as heard (20 ms each).
    assert_eq!(truncated[0]["audio_end_ms"].as_u64().unwrap(), deltas_before as u64 * 20);
    // The second turn is answered in turn; nothing of the first comes after its cancel.
    s.until("input_audio_buffer.committed").await;
    let second = s.until("response.created").await["response"]["id"].clone();
    s.until("response.done").await;
    let late = s.log[cut_at..].iter().filter(|v| v["type"] == "response.audio.delta" && v["response_id"] != second).count();
    assert_eq!(late, 0, "no delta of the cancelled response after its response.done");
    drop(s);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_barge_in_as_the_sdk_examples_do_it() {
    let server = start_server().await;
    let mut s = Session::with_key(&server, "").await;
    s.until("session.created").await;
    let speech = le_bytes(&speech_24k());
    s.append(&[le_bytes(&vec![0; 24 * 300]), speech, le_bytes(&vec![0; 24 * 700])].concat(), 48, 100);
    s.until("response.created").await;
    let first = s.until("response.audio.delta").await;
    let item_id = first["item_id"].as_str().unwrap().to_string();
    // The client's own VAD hears its user: it stops playback, cancels, and truncates the item
    // at what it played (here: 100 ms, whatever the server has sent by then).
    s.send(json!({"type": "response.cancel"}));
    let done = s.until("response.done").await;
    assert_eq!(
        (done["response"]["status"].as_str(), done["response"]["status_details"]["reason"].as_str()),
        (Some("cancelled"), Some("client_cancelled"))
    );
    s.send(json!({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 20}));
    let truncated = s.until("conversation.item.truncated").await;
    assert_eq!((truncated["item_id"].as_str(), truncated["audio_end_ms"].as_u64()), (Some(item_id.as_str()), Some(20)));
    // Beyond what was sent is refused, by name.
    s.send(json!({"type": "conversation.item.truncate", "event_id": "t2", "item_id": item_id, "content_index": 0, "audio_end_ms": 60_000}));
    let e = s.until("error").await;
    assert_eq!((e["error"]["code"].as_str(), e["error"]["event_id"].as_str()), (Some("invalid_audio_end_ms"), Some("t2")));
    // output_audio_buffer.clear with nothing playing is answered, not refused.
    s.send(json!({"type": "output_audio_buffer.clear"}));
    assert_eq!(s.until("output_audio_buffer.cleared").await["response_id"], Value::Null);
    drop(s);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_subprotocol_credentials_and_bad_input() {
    let server = start_server().await;
    let base = server.url();
    let secret = client_secret(&base, json!({"turn_detection": null})).await;
    let protocols = format!("realtime, openai-insecure-api-key.{secret}, openai-beta.realtime-v1");
    let mut s =
        Session::connect(&server, "&dialect=ga", &[("sec-websocket-protocol", &protocols)]).await.expect("the secret opens a session");
    let created = s.until("session.created").await;
    assert_eq!(created["session"]["type"], "realtime", "?dialect=ga: GA from the first event");
    assert_eq!(created["session"]["audio"]["input"]["turn_detection"], Value::Null, "the secret's session");

    s.out.send(Message::Binary(vec![1, 2, 3].into())).unwrap();
    assert_eq!(s.until("error").await["error"]["code"], "binary_frame");
    s.send(json!({"type": "input_audio_buffer.append", "event_id": "a1", "audio": "not base64!"}));
    let e = s.until("error").await;
    assert_eq!((e["error"]["code"].as_str(), e["error"]["event_id"].as_str()), (Some("invalid_value"), Some("a1")));
    s.send(json!({"type": "session.update", "session": {"input_audio_format": "opus"}}));
    assert_eq!(s.until("error").await["error"]["code"], "invalid_value");
    // Still a working session.
    s.send(json!({"type": "response.cancel", "event_id": "x"}));
    assert_eq!(s.until("error").await["error"]["code"], "response_cancel_not_active");

    // Refused upgrades are JSON errors before any socket exists.
    for (headers, status, code) in [
        (vec![], 401, "missing_credentials"),
        (vec![("authorization", "Bearer nope")], 401, "invalid_api_key"),
        (vec![("sec-websocket-protocol", "realtime, openai-insecure-api-key.ek_unknown")], 401, "invalid_api_key"),
    ] {
        match Session::connect(&server, "", &headers).await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status(), status);
                let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["error"]["code"], code);
            }
            Err(e) => panic!("expected an HTTP refusal, got {e}"),
            Ok(_) => panic!("{headers:?} must be refused"),
        }
    }
    match Session::connect(&server, "&dialect=nope", &[("authorization", &format!("Bearer {API_KEY}"))]).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 400),
        _ => panic!("a bad dialect is refused"),
    }
    drop(s);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_count_against_max_calls_and_end_with_the_socket() {
    // A session counts as half a call (src/admission.rs): --max-calls 1 takes two.
    let server = start_with(|c| c.max_calls = Some(1)).await;
    let mut first = Session::with_key(&server, "").await;
    first.until("session.created").await;
    let mut second = Session::with_key(&server, "").await;
    second.until("session.created").await;
    match Session::connect(&server, "", &[("authorization", &format!("Bearer {API_KEY}"))]).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["type"], "server_error", "{body}");
        }
        _ => panic!("a third session over --max-calls 1 is refused"),
    }
    drop((first, second));
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics = || async { http().get(format!("{}/metrics", server.url())).send().await.unwrap().text().await.unwrap() };
    while !metrics().await.contains("\nvoxrelay_active_calls 0\n") {
        assert!(tokio::time::Instant::now() < deadline, "the call ends when its socket closes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = Session::with_key(&server, "").await;
    again.until("session.created").await;
    drop(again);
    server.shutdown().await;
}
