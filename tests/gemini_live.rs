//! The `gemini-live` agent end to end: a real WebRTC client, voxrelay's real adapter, and a
//! local fake of the Gemini Live WebSocket API (tests/fakes). Covers a full turn, barge-in
//! (activityStart interrupts the model), `goAway` answered by resuming with the handle, and a
//! refused key with the call kept alive.

use crate::common;
use crate::fakes::gemini_live as fake;

use common::*;
use fake::{Behaviour, FakeGemini, REPLY_TRANSCRIPT, TOOL_CALL_ID, tool_args};
use serde_json::json;

const KEY: &str = "gm-test-key";

async fn server_for(fake: &FakeGemini, key: &str) -> voxrelay::RunningServer {
    let toml = format!("[providers.gemini]\nbase_url = \"{}\"\nmodel = \"gemini-test-live\"\n", fake.url);
    let providers = providers(&toml, &[("GEMINI_API_KEY", key)]);
    start_with(|c| c.providers = Some(providers)).await
}

fn body() -> serde_json::Value {
    json!({"agent": "gemini-live", "instructions": "Answer briefly.", "input_audio_transcription": {"model": "any"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_turn() {
    let fake = FakeGemini::start(KEY, Behaviour::default()).await;
    let server = server_for(&fake, KEY).await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime/calls", &client_secret(&base, body()).await).await;
    c.expect("session.created").await;
    let speech_ms = c.speak_turn(1500);

    let committed = c.expect("input_audio_buffer.committed").await;
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    assert_eq!(done["response"]["output"][0]["content"][0]["transcript"], REPLY_TRANSCRIPT);
    c.drain();
    let transcript = c
        .log
        .iter()
        .find(|(_, e)| e["type"] == "conversation.item.input_audio_transcription.completed")
        .map(|(_, e)| e.clone())
        .expect("caller transcript event");
    assert_eq!(transcript["item_id"], committed["item_id"]);
    assert!(transcript["transcript"].as_str().unwrap().starts_with("user said"));
    let voiced = c.levels().iter().filter(|(_, r)| *r > VOICED_RMS).count();
    assert!(voiced * 20 >= speech_ms / 2, "{voiced} voiced frames back for {speech_ms} ms of speech");

    let log = fake.log.lock().unwrap();
    let setup = &log.setups[0];
    assert_eq!(setup["model"], "models/gemini-test-live");
    assert_eq!(setup["realtimeInputConfig"]["automaticActivityDetection"]["disabled"], true);
    assert_eq!(setup["systemInstruction"]["parts"][0]["text"], "Answer briefly.");
    let sent_ms = log.audio_samples / 16;
    assert!(sent_ms >= speech_ms * 8 / 10 && sent_ms <= speech_ms + 1600, "{sent_ms} ms sent for {speech_ms} ms of speech");
    drop(log);
    let kinds = fake.kinds();
    let pos = |k: &str| kinds.iter().position(|x| x == k).unwrap_or_else(|| panic!("no {k}: {kinds:?}"));
    assert!(pos("setup") < pos("activityStart") && pos("activityStart") < pos("audio") && pos("audio") < pos("activityEnd"));
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_interrupts_the_model() {
    let fake = FakeGemini::start(KEY, Behaviour { tone_ms: Some(20_000), ..Default::default() }).await;
    let server = server_for(&fake, KEY).await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, body()).await).await;
    c.expect("session.created").await;
    c.barge_into_reply().await;
    c.expect("output_audio_buffer.started").await;
    c.expect("conversation.item.truncated").await;
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "cancelled");
    // The interruption is a turn of its own, answered by the model after its activity ends.
    let next = c.expect("response.done").await;
    assert_eq!(next["response"]["status"], "completed", "{next}");
    assert_eq!(fake.log.lock().unwrap().interruptions, 1, "the model was still speaking upstream and was interrupted");
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_away_resumes_with_the_handle() {
    let fake = FakeGemini::start(KEY, Behaviour { go_away_after_first_turn: true, ..Default::default() }).await;
    let server = server_for(&fake, KEY).await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, body()).await).await;
    c.expect("session.created").await;
    c.speak_turn(1500);
    assert_eq!(c.expect("response.done").await["response"]["status"], "completed");
    c.wait_sent().await;
    c.speak_turn(500);
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    assert!(!c.types().contains(&"error".to_string()), "a planned handover is not an error: {:?}", c.types());
    let log = fake.log.lock().unwrap();
    assert_eq!(log.connections, 2);
    assert_eq!(log.setups[1]["sessionResumption"]["handle"], "handle-1", "the new connection resumes the session");
    drop(log);
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_key_is_an_error_event_and_the_call_lives() {
    let fake = FakeGemini::start(KEY, Behaviour::default()).await;
    let server = server_for(&fake, "wrong-key").await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, body()).await).await;
    c.expect("session.created").await;
    let err = c.expect("error").await;
    assert_eq!(err["error"]["code"], "provider_auth_failed", "{err}");
    c.speak_turn(500);
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "failed");
    c.send(json!({"type": "session.update", "session": {"instructions": "still here"}})).await;
    c.expect("session.updated").await;
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_call_round_trip() {
    let fake = FakeGemini::start(KEY, Behaviour::default()).await;
    let server = server_for(&fake, KEY).await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime/calls", &client_secret(&base, body()).await).await;
    c.expect("session.created").await;
    let output = "Sunny, 21 degrees";
    let args = function_call_round_trip(&mut c, output).await;
    assert_eq!(args["call_id"], TOOL_CALL_ID);
    let parsed: serde_json::Value = serde_json::from_str(args["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(parsed, tool_args(), "toolCall args as a JSON string");

    {
        let log = fake.log.lock().unwrap();
        // The tools change reconnected (Gemini takes settings at setup); the last setup has them.
        let decl = &log.setups.last().unwrap()["tools"][0]["functionDeclarations"][0];
        assert_eq!((&decl["name"], &decl["parameters"]), (&weather_tool()["name"], &weather_tool()["parameters"]));
        let responses: Vec<&serde_json::Value> = log.messages.iter().filter(|m| m.get("toolResponse").is_some()).collect();
        assert_eq!(
            responses,
            [&json!({"toolResponse": {"functionResponses": [{"id": TOOL_CALL_ID, "name": "get_weather", "response": {"output": output}}]}})],
            "a plain-text output is wrapped as {{\"output\": ...}}"
        );
    }
    c.close().await;
    server.shutdown().await;
}
