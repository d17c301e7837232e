//! The `openai-realtime` agent end to end: a real WebRTC client talks to voxrelay, whose real
//! adapter talks to a local fake of OpenAI's Realtime WebSocket API (tests/fakes). Covers a full
//! turn in both upstream dialects, barge-in, an upstream drop mid-response with recovery, and a
//! refused key with the call kept alive.

use crate::common;
use crate::fakes::openai_realtime as fake;

use std::time::Duration;

use common::*;
use fake::{Behaviour, FakeOpenAi, REPLY_TRANSCRIPT, TOOL_ARGUMENTS, rate_limits};
use serde_json::{Value, json};
use voxrelay::agent::{Providers, ProvidersFile};

const KEY: &str = "sk-test-fake";

async fn server_for(fake: &FakeOpenAi, key: &str, dialect: &str) -> voxrelay::RunningServer {
    let toml = format!("[providers.openai]\nbase_url = \"{}\"\ndialect = \"{dialect}\"\n", fake.url);
    let providers = providers(&toml, &[("OPENAI_API_KEY", key)]);
    start_with(|c| c.providers = Some(providers)).await
}

fn session_body() -> Value {
    json!({"agent": "openai-realtime", "instructions": "You are a test.", "input_audio_transcription": {"model": "whisper-1"}})
}

async fn full_turn(dialect: &str, path: &str) {
    let fake = FakeOpenAi::start(KEY, Behaviour::default()).await;
    let server = server_for(&fake, KEY, dialect).await;
    let base = server.url();
    let mut c = Call::connect(&base, path, &client_secret(&base, session_body()).await).await;
    c.expect("session.created").await;
    let speech_ms = c.speak_turn(1500);

    let committed = c.expect("input_audio_buffer.committed").await;
    let transcript = c.expect("conversation.item.input_audio_transcription.completed").await;
    assert_eq!(transcript["item_id"], committed["item_id"], "the caller's transcript belongs to the committed item");
    assert!(transcript["transcript"].as_str().unwrap().starts_with("user said"), "{transcript}");
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    assert_eq!(done["response"]["output"][0]["content"][0]["transcript"], REPLY_TRANSCRIPT);
    let deltas: String = c
        .log
        .iter()
        .filter(|(_, e)| e["type"].as_str().is_some_and(|t| t.ends_with("audio_transcript.delta")))
        .map(|(_, e)| e["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deltas, REPLY_TRANSCRIPT);
    let limits = c.log.iter().find(|(_, e)| e["type"] == "rate_limits.updated").map(|(_, e)| e.clone()).expect("rate limits passed on");
    assert_eq!(limits["rate_limits"], rate_limits());

    // The provider's audio (the fake says the caller's turn back) reached the WebRTC client.
    let voiced = c.levels().iter().filter(|(_, r)| *r > VOICED_RMS).count();
    assert!(voiced * 20 >= speech_ms / 2, "{voiced} voiced frames back for {speech_ms} ms of speech");

    // Upstream saw: settings first (its own VAD off, our instructions), then only the speech
    // (the 1.5 s of leading silence stayed local), a commit and a response request.
    let types = fake.types();
    assert_eq!(types[0], "session.update", "{types:?}");
    let update = &fake.events_of("session.update")[0]["session"];
    assert_eq!(update["instructions"], "You are a test.");
    let td = if dialect == "beta" { &update["turn_detection"] } else { &update["audio"]["input"]["turn_detection"] };
    assert!(td.is_null(), "upstream turn detection is off: {update}");
    let appended_ms = fake.log.lock().unwrap().appended_samples / 24;
    assert!(appended_ms >= speech_ms * 8 / 10 && appended_ms <= speech_ms + 1600, "{appended_ms} ms appended for {speech_ms} ms of speech");
    let pos = |t: &str| types.iter().position(|x| x == t).unwrap_or_else(|| panic!("{t} not sent: {types:?}"));
    assert!(pos("input_audio_buffer.append") < pos("input_audio_buffer.commit"));
    assert!(pos("input_audio_buffer.commit") < pos("response.create"));
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_turn_ga() {
    full_turn("ga", "/v1/realtime/calls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_turn_beta_upstream() {
    full_turn("beta", "/v1/realtime").await;
}

async fn function_call_round_trip_with(dialect: &str) {
    let fake = FakeOpenAi::start(KEY, Behaviour::default()).await;
    let server = server_for(&fake, KEY, dialect).await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime/calls", &client_secret(&base, session_body()).await).await;
    c.expect("session.created").await;
    let output = r#"{"temp_c": 21, "sky": "clear"}"#;
    let args = function_call_round_trip(&mut c, output).await;
    assert_eq!(args["arguments"], TOOL_ARGUMENTS, "the provider's arguments, unchanged");
    assert!(args["call_id"].as_str().unwrap().starts_with("call_fake"), "the provider's call id: {args}");

    let update = fake.events_of("session.update").pop().unwrap();
    assert_eq!(update["session"]["tools"][0], weather_tool(), "the tool reached the provider as declared");
    let outputs: Vec<Value> = fake.events_of("conversation.item.create").into_iter().map(|e| e["item"].clone()).collect();
    assert_eq!(
        outputs,
        [json!({"type": "function_call_output", "call_id": args["call_id"], "output": output})],
        "the output went upstream exactly"
    );
    let types = fake.types();
    let last = |t: &str| types.iter().rposition(|x| x == t).unwrap();
    assert!(last("conversation.item.create") < last("response.create"), "output first, then the follow-up response: {types:?}");
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_round_trip_ga() {
    function_call_round_trip_with("ga").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_round_trip_beta_upstream() {
    function_call_round_trip_with("beta").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_cancels_and_truncates_upstream() {
    let fake = FakeOpenAi::start(KEY, Behaviour { tone_ms: Some(20_000), ..Default::default() }).await;
    let server = server_for(&fake, KEY, "ga").await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, session_body()).await).await;
    c.expect("session.created").await;
    c.barge_into_reply().await;
    c.expect("output_audio_buffer.started").await;
    let truncated = c.expect("conversation.item.truncated").await;
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "cancelled");
    let played = truncated["audio_end_ms"].as_u64().unwrap();

    let deadline = tokio::time::Instant::now() + WAIT;
    while fake.events_of("conversation.item.truncate").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no truncate upstream: {:?}", fake.types());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.events_of("response.cancel").len(), 1, "{:?}", fake.types());
    let up = &fake.events_of("conversation.item.truncate")[0];
    assert_eq!(up["audio_end_ms"].as_u64(), Some(played), "upstream truncated where the caller stopped hearing");
    assert!(played >= 400, "{played}");
    assert!(up["item_id"].as_str().unwrap().starts_with("item_fake"), "the provider's own item id: {up}");
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_drop_mid_response_then_recovery() {
    let fake = FakeOpenAi::start(KEY, Behaviour { drop_after_deltas: Some(3), ..Default::default() }).await;
    let server = server_for(&fake, KEY, "ga").await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, session_body()).await).await;
    c.expect("session.created").await;
    c.speak_turn(1500);

    let err = c.expect("error").await;
    assert_eq!(err["error"]["code"], "provider_disconnected", "{err}");
    assert_eq!(err["error"]["type"], "server_error");
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "failed", "{done}");
    assert_eq!(done["response"]["status_details"]["error"]["code"], "provider_disconnected");

    // The next turn runs on a new upstream connection that was given the dialogue so far.
    c.wait_sent().await;
    c.speak_turn(1500);
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    assert_eq!(fake.log.lock().unwrap().connections, 2);
    let updates = fake.events_of("session.update");
    assert_eq!(updates.len(), 2, "settings sent again after the reconnect");
    let replayed = fake.events_of("conversation.item.create");
    assert!(
        replayed.iter().any(|e| e["item"]["content"][0]["text"].as_str().is_some_and(|t| t.starts_with("user said"))),
        "the caller's first turn is replayed as context: {replayed:?}"
    );
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_key_is_an_error_event_and_the_call_lives() {
    let fake = FakeOpenAi::start(KEY, Behaviour::default()).await;
    let server = server_for(&fake, "sk-wrong", "ga").await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, session_body()).await).await;
    c.expect("session.created").await;
    let err = c.expect("error").await;
    assert_eq!(err["error"]["code"], "provider_auth_failed", "{err}");
    assert!(!err["error"]["message"].as_str().unwrap().contains("sk-wrong"), "never echo the key");
    assert!(fake.log.lock().unwrap().rejected >= 1);

    c.speak_turn(1500);
    c.expect("input_audio_buffer.committed").await;
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "failed");
    assert_eq!(done["response"]["status_details"]["error"]["code"], "provider_auth_failed");

    // Still a working call: settings are answered and DELETE ends it normally.
    c.send(json!({"type": "session.update", "session": {"instructions": "still here"}})).await;
    c.expect("session.updated").await;
    c.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn unconfigured_provider_is_a_clear_400() {
    let server = start_with(|c| c.providers = Some(Providers::resolve_with(&ProvidersFile::default(), &|_| None).unwrap())).await;
    let resp = http()
        .post(format!("{}/v1/realtime/sessions", server.url()))
        .bearer_auth(API_KEY)
        .json(&json!({"agent": "openai-realtime"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "agent_not_configured");
    assert!(body["error"]["message"].as_str().unwrap().contains("OPENAI_API_KEY"), "{body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_room_the_provider_hears_each_turn_named_after_its_speaker() {
    use common::rooms::{events_until, join, of_type, voice};
    use voxrelay::transport::webrtc::room_client::RoomClientOptions;
    let fake = FakeOpenAi::start(KEY, Behaviour::default()).await;
    let server = server_for(&fake, KEY, "ga").await;
    let base = server.url();
    let one_slot = RoomClientOptions { slots: 1, ..Default::default() };
    let mut alice = join(&base, "panel", "alice", one_slot.clone(), json!({"name": "Alice"})).await;
    let bob = join(&base, "panel", "bob", one_slot, json!({})).await;
    let resp = http()
        .post(format!("{base}/v1/rooms/panel/agent"))
        .bearer_auth(API_KEY)
        .json(&json!({"agent": "openai-realtime"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let mut seen = Vec::new();
    events_until(&mut alice, &mut seen, |e| of_type(e, "participant.joined").iter().any(|p| p["participant"]["identity"] == "agent")).await;

    alice.say(&voice(1.0));
    events_until(&mut alice, &mut seen, |e| of_type(e, "response.done").iter().any(|d| d["identity"] == "agent")).await;
    let done = of_type(&seen, "response.done")[0].clone();
    assert_eq!(done["response"]["status"], "completed", "{done}");
    assert_eq!(of_type(&seen, "input_audio_buffer.committed")[0]["speaker"], "alice");

    // Upstream: a text item naming the speaker, then her audio, its commit, the answer's request.
    let events = fake.log.lock().unwrap().events.clone();
    let at = |pred: &dyn Fn(&Value) -> bool| events.iter().position(pred).expect("upstream got it");
    let named = at(&|e| e["type"] == "conversation.item.create" && e["item"]["content"][0]["text"] == "[Alice]");
    let audio = at(&|e| e["type"] == "input_audio_buffer.append");
    let commit = at(&|e| e["type"] == "input_audio_buffer.commit");
    let answer = at(&|e| e["type"] == "response.create");
    assert!(named < audio && audio < commit && commit < answer, "order: named {named}, audio {audio}, commit {commit}, answer {answer}");
    // Bob, who did not speak, heard the provider's answer through the room.
    common::rooms::until("bob heard the agent", || bob.received().iter().filter(|p| p.payload.len() > 10).count() > 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_then_unavailable_at_connect_then_recovered_with_backoff() {
    let fake = FakeOpenAi::start(KEY, Behaviour { refuse_first: vec![429, 503], ..Default::default() }).await;
    let server = server_for(&fake, KEY, "ga").await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, session_body()).await).await;
    c.expect("session.created").await;
    // One error event for the outage (not one per attempt), with the first cause.
    let err = c.expect("error").await;
    assert_eq!(err["error"]["code"], "provider_rate_limited", "{err}");
    assert_eq!(err["error"]["type"], "server_error");

    // Backoff (250 ms, then ≈ 500 ms) reaches the provider on the third attempt: the turn works.
    c.speak_turn(1500);
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    let log = fake.log.lock().unwrap();
    assert_eq!((log.rejected, log.connections), (2, 1));
    drop(log);
    assert_eq!(c.types().iter().filter(|t| *t == "error").count(), 1, "{:?}", c.types());
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_gone_quiet_fails_the_response_and_the_call_goes_on() {
    let fake = FakeOpenAi::start(KEY, Behaviour { ignore_responses: 1, ..Default::default() }).await;
    let server = server_for(&fake, KEY, "ga").await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, session_body()).await).await;
    c.expect("session.created").await;
    c.speak_turn(1500);
    c.expect("response.created").await;
    // Nothing comes back for the response: after AGENT_SILENCE_LIMIT (10 s) it fails.
    let err = c.expect("error").await;
    assert_eq!(err["error"]["code"], "provider_timeout", "{err}");
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "failed", "{done}");
    assert_eq!(done["response"]["status_details"]["error"]["code"], "provider_timeout");
    // The cancel goes out on the provider's socket as the client is told, so it can reach the
    // fake a moment after the client's `response.done`.
    common::rooms::until("the provider is told to drop it", || !fake.events_of("response.cancel").is_empty()).await;
    assert_eq!(fake.events_of("response.cancel").len(), 1, "the provider is told to drop it once");

    // The provider answers again: so does the call.
    c.wait_sent().await;
    c.speak_turn(500);
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_the_same_conversation_continues_where_the_last_one_stopped() {
    let fake = FakeOpenAi::start(KEY, Behaviour::default()).await;
    let server = server_for(&fake, KEY, "ga").await;
    let base = server.url();
    let conversation = "conv_5d1f0c9e8b7a6d4c";
    let body = |conv: &str| {
        let mut b = session_body();
        b["conversation"] = json!(conv);
        b
    };
    let mut first = Call::connect(&base, "/v1/realtime", &client_secret(&base, body(conversation)).await).await;
    let created = first.expect("session.created").await;
    assert_eq!(created["session"]["conversation"], conversation);
    first.speak_turn(1500);
    first.expect("conversation.item.input_audio_transcription.completed").await;
    first.expect("response.done").await;
    first.close().await;
    assert!(fake.events_of("conversation.item.create").is_empty(), "a new conversation starts with nothing: {:?}", fake.types());

    // A later call (a reconnecting page) on the same conversation: its fresh upstream session
    // is given the dialogue so far before anything else is said.
    let mut second = Call::connect(&base, "/v1/realtime", &client_secret(&base, body(conversation)).await).await;
    second.expect("session.created").await;
    let deadline = std::time::Instant::now() + WAIT;
    let items = loop {
        let items: Vec<Value> = fake.events_of("conversation.item.create").into_iter().map(|e| e["item"].clone()).collect();
        if items.len() >= 2 {
            break items;
        }
        assert!(std::time::Instant::now() < deadline, "the dialogue was not replayed: {:?}", fake.types());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(items[0]["role"], "user");
    assert!(items[0]["content"][0]["text"].as_str().unwrap().starts_with("user said"), "{items:?}");
    assert_eq!((items[1]["role"].as_str(), items[1]["content"][0]["text"].as_str()), (Some("assistant"), Some(REPLY_TRANSCRIPT)));
    assert_eq!(fake.log.lock().unwrap().connections, 2);

    // The conversation is fixed for the call's life.
    second.send(json!({"type": "session.update", "session": {"type": "realtime", "conversation": "conv_ffffffffffffffff"}})).await;
    let err = second.expect("error").await;
    assert_eq!(err["error"]["code"], "conversation_change_unsupported", "{err}");

    // The history lists both calls under the conversation.
    let resp = http().get(format!("{base}/v1/calls?conversation={conversation}")).bearer_auth(API_KEY).send().await.unwrap();
    let list: Value = resp.json().await.unwrap();
    let calls = list["data"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{list}");
    assert!(calls.iter().all(|c| c["conversation"] == conversation));
    second.close().await;
    server.shutdown().await;
}
