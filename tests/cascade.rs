//! The `cascade` agent end to end: a real WebRTC client, voxrelay's real Deepgram, LLM (OpenAI
//! chat / Anthropic, SSE) and ElevenLabs adapters, and local fakes of all three (tests/fakes).

use crate::common;
use crate::fakes::cascade as fake;

use common::*;
use fake::{ANTHROPIC_CALL_ID, FakeCascade, Keys, OPENAI_CALL_ID, TOOL_ARGS, reply_for, reply_for_tool};
use serde_json::{Value, json};

fn keys() -> Keys {
    Keys { deepgram: "dg-key".into(), assemblyai: "aai-key".into(), llm: "llm-key".into(), elevenlabs: "el-key".into() }
}

async fn server_for(fake: &FakeCascade, llm: &str, elevenlabs_key: &str) -> voxrelay::RunningServer {
    let toml = format!(
        "[providers.cascade]\nllm = \"{llm}\"\nllm_base_url = \"{}\"\nllm_model = \"test-model\"\n\
         [providers.deepgram]\nbase_url = \"{}\"\n[providers.elevenlabs]\nbase_url = \"{}\"\nvoice = \"voice1\"\n",
        fake.llm_url, fake.stt_url, fake.tts_url
    );
    let providers = providers(
        &toml,
        &[
            ("DEEPGRAM_API_KEY", "dg-key"),
            ("OPENAI_API_KEY", "llm-key"),
            ("ANTHROPIC_API_KEY", "llm-key"),
            ("ELEVENLABS_API_KEY", elevenlabs_key),
        ],
    );
    start_with(|c| c.providers = Some(providers)).await
}

fn body() -> Value {
    json!({"agent": "cascade", "instructions": "Be a test.", "input_audio_transcription": {"model": "any"}})
}

async fn full_turn(llm: &str) {
    let fake = FakeCascade::start(keys(), 20).await;
    let server = server_for(&fake, llm, "el-key").await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, body()).await).await;
    c.expect("session.created").await;
    let speech_ms = c.speak_turn(1500);

    let committed = c.expect("input_audio_buffer.committed").await;
    let heard = c.expect("conversation.item.input_audio_transcription.completed").await;
    assert_eq!(heard["item_id"], committed["item_id"]);
    let user_text = heard["transcript"].as_str().unwrap().to_string();
    assert!(user_text.starts_with("heard "), "{heard}");
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    assert_eq!(done["response"]["output"][0]["content"][0]["transcript"], reply_for(&user_text));
    let voiced = c.levels().iter().filter(|(_, r)| *r > VOICED_RMS).count();
    assert!(voiced >= 20, "{voiced} voiced frames of synthesized speech");

    let log = fake.log.lock().unwrap();
    // Only the speech went to STT (16 kHz), not the leading silence.
    let stt_ms = log.stt_samples / 16;
    assert!(stt_ms >= speech_ms * 8 / 10 && stt_ms <= speech_ms + 1600, "{stt_ms} ms to STT for {speech_ms} ms of speech");
    assert_eq!(log.finalizes, 1);
    let req = &log.llm_requests[0];
    assert_eq!(req["model"], "test-model");
    let system = if llm == "anthropic" { req["system"].clone() } else { req["messages"][0]["content"].clone() };
    assert_eq!(system, "Be a test.");
    // Speech started on the first sentence, before the reply was complete.
    let first_audio = log.tts_events.iter().position(|(k, _)| k == "audio-out").expect("audio");
    let end = log.tts_events.iter().position(|(k, _)| k == "end").expect("end of input");
    assert!(first_audio < end, "TTS spoke before the LLM finished: {:?}", log.tts_events);
    let texts: Vec<&str> = log.tts_events.iter().filter(|(k, _)| k == "text").map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts.len(), 2, "one message per sentence: {texts:?}");
    drop(log);
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_turn_openai_llm() {
    full_turn("openai").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_turn_anthropic_llm() {
    full_turn("anthropic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_keeps_only_what_was_heard() {
    // 300 ms of speech per character: a reply far longer than the interruption.
    let fake = FakeCascade::start(keys(), 300).await;
    let server = server_for(&fake, "openai", "el-key").await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, body()).await).await;
    c.expect("session.created").await;
    c.barge_into_reply().await;
    c.expect("output_audio_buffer.started").await;
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "cancelled");
    let next = c.expect("response.created").await;
    assert!(next["response"]["id"].is_string());
    let deadline = tokio::time::Instant::now() + WAIT;
    while fake.log.lock().unwrap().llm_requests.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no second LLM request");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let second = fake.log.lock().unwrap().llm_requests[1].clone();
    let assistant =
        second["messages"].as_array().unwrap().iter().find(|m| m["role"] == "assistant").expect("the first answer is in the context");
    let said = assistant["content"].as_str().unwrap();
    let full = reply_for(second["messages"][1]["content"].as_str().unwrap());
    assert!(said.ends_with('…') && said.len() < full.len(), "only the heard part is remembered: {said:?} of {full:?}");
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tts_key_fails_the_response_and_the_call_lives() {
    let fake = FakeCascade::start(keys(), 20).await;
    let server = server_for(&fake, "openai", "wrong").await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, body()).await).await;
    c.expect("session.created").await;
    c.speak_turn(500);
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "failed", "{done}");
    assert_eq!(done["response"]["status_details"]["error"]["code"], "provider_auth_failed");
    assert!(c.types().contains(&"error".to_string()));
    assert_eq!(fake.log.lock().unwrap().tts_rejected, 1);
    c.send(json!({"type": "session.update", "session": {"instructions": "still here"}})).await;
    c.expect("session.updated").await;
    c.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn cascade_names_every_missing_key() {
    let server = start_with(|c| c.providers = Some(providers("", &[("DEEPGRAM_API_KEY", "x")]))).await;
    let resp = http()
        .post(format!("{}/v1/realtime/sessions", server.url()))
        .bearer_auth(API_KEY)
        .json(&json!({"agent": "cascade"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("ELEVENLABS_API_KEY") && msg.contains("OPENAI_API_KEY") && !msg.contains("DEEPGRAM"), "{msg}");
    server.shutdown().await;
}

async fn tool_call(llm: &str) {
    let fake = FakeCascade::start(keys(), 20).await;
    let server = server_for(&fake, llm, "el-key").await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime/calls", &client_secret(&base, body()).await).await;
    c.expect("session.created").await;
    let output = r#"{"temp_c":21}"#;
    let args = function_call_round_trip(&mut c, output).await;
    assert_eq!(args["arguments"], TOOL_ARGS, "streamed argument chunks assembled");
    let call_id = if llm == "anthropic" { ANTHROPIC_CALL_ID } else { OPENAI_CALL_ID };
    assert_eq!(args["call_id"], call_id);
    let done = c.log.iter().rev().find(|(_, e)| e["type"] == "response.done").map(|(_, e)| e.clone()).unwrap();
    assert_eq!(done["response"]["output"][0]["content"][0]["transcript"], reply_for_tool(output), "the model continued from the result");

    {
        let log = fake.log.lock().unwrap();
        assert_eq!(log.llm_requests.len(), 2, "one request per response");
        let (first, second) = (&log.llm_requests[0], &log.llm_requests[1]);
        let tool = weather_tool();
        let messages = second["messages"].as_array().unwrap();
        if llm == "anthropic" {
            assert_eq!(
                first["tools"],
                json!([{"name": "get_weather", "description": tool["description"], "input_schema": tool["parameters"]}])
            );
            assert_eq!(first["tool_choice"], json!({"type": "auto"}));
            let call = &messages[messages.len() - 2];
            assert_eq!(call["role"], "assistant");
            assert_eq!(call["content"], json!([{"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"city": "Oslo"}}]));
            let result = messages.last().unwrap();
            assert_eq!(result["role"], "user");
            assert_eq!(
                result["content"],
                json!([{"type": "tool_result", "tool_use_id": call_id, "content": output}]),
                "the output, exactly"
            );
        } else {
            assert_eq!(
                first["tools"],
                json!([{"type": "function", "function": {"name": "get_weather", "description": tool["description"], "parameters": tool["parameters"]}}])
            );
            assert_eq!(first["tool_choice"], "auto");
            let call = &messages[messages.len() - 2];
            assert_eq!(call["role"], "assistant");
            assert_eq!(
                call["tool_calls"],
                json!([{"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": TOOL_ARGS}}])
            );
            assert_eq!(
                messages.last().unwrap(),
                &json!({"role": "tool", "tool_call_id": call_id, "content": output}),
                "the output, exactly"
            );
        }
        // The call itself was not spoken: every text sent to speech belongs to the follow-up.
        let spoken: String = log.tts_events.iter().filter(|(k, _)| k == "text").map(|(_, t)| t.as_str()).collect();
        assert_eq!(spoken.trim(), reply_for_tool(output), "{:?}", log.tts_events);
    }
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_round_trip_openai_llm() {
    tool_call("openai").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_round_trip_anthropic_llm() {
    tool_call("anthropic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_turn_with_assemblyai_stt() {
    let fake = FakeCascade::start(keys(), 20).await;
    let toml = format!(
        "[providers.cascade]\nstt = \"assemblyai\"\nllm = \"anthropic\"\nllm_base_url = \"{}\"\nllm_model = \"test-model\"\n\
         [providers.assemblyai]\nbase_url = \"{}\"\n[providers.elevenlabs]\nbase_url = \"{}\"\nvoice = \"voice1\"\n",
        fake.llm_url, fake.assemblyai_url, fake.tts_url
    );
    // No Deepgram key: AssemblyAI's is all the STT needs.
    let providers =
        providers(&toml, &[("ASSEMBLYAI_API_KEY", "aai-key"), ("ANTHROPIC_API_KEY", "llm-key"), ("ELEVENLABS_API_KEY", "el-key")]);
    let server = start_with(|c| c.providers = Some(providers)).await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, body()).await).await;
    c.expect("session.created").await;
    let speech_ms = c.speak_turn(1500);

    let committed = c.expect("input_audio_buffer.committed").await;
    let heard = c.expect("conversation.item.input_audio_transcription.completed").await;
    assert_eq!(heard["item_id"], committed["item_id"]);
    let user_text = heard["transcript"].as_str().unwrap().to_string();
    assert!(user_text.starts_with("Heard ") && user_text.ends_with(" ms."), "the formatted end of turn: {heard}");
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    assert_eq!(done["response"]["output"][0]["content"][0]["transcript"], reply_for(&user_text));
    let voiced = c.levels().iter().filter(|(_, r)| *r > VOICED_RMS).count();
    assert!(voiced >= 20, "{voiced} voiced frames of synthesized speech");
    {
        let log = fake.log.lock().unwrap();
        let stt_ms = log.stt_samples / 16;
        assert!(stt_ms >= speech_ms * 8 / 10 && stt_ms <= speech_ms + 1600, "{stt_ms} ms to STT for {speech_ms} ms of speech");
        assert!(
            log.aai_frames > 0 && log.aai_bad_frames == 0,
            "{} of {} audio messages outside 50-1000 ms",
            log.aai_bad_frames,
            log.aai_frames
        );
        assert_eq!(log.aai_force_endpoints, 1, "our commit ended the turn");
        assert_eq!(log.llm_requests[0]["messages"][0]["content"], user_text.as_str(), "the transcript went to the LLM");
    }
    c.close().await;
    // The session is ended politely, so AssemblyAI stops billing it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while fake.log.lock().unwrap().aai_terminated == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no Terminate sent at the end of the call");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_429_and_5xx_fail_one_response_each_and_the_conversation_goes_on() {
    let fake = FakeCascade::start(keys(), 20).await;
    fake.log.lock().unwrap().llm_failures.extend([429, 503, 500]);
    let server = server_for(&fake, "openai", "el-key").await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, body()).await).await;
    c.expect("session.created").await;
    for expected in ["provider_rate_limited", "provider_error", "provider_error"] {
        c.speak_turn(500);
        let done = c.expect("response.done").await;
        assert_eq!(done["response"]["status"], "failed", "{done}");
        assert_eq!(done["response"]["status_details"]["error"]["code"], expected, "{done}");
        let error = c.log.iter().rev().map(|(_, e)| e).find(|e| e["type"] == "error").expect("an error event").clone();
        assert_eq!(error["error"]["code"], expected, "{error}");
    }
    // The provider is back: the next turn is answered, with the whole dialogue so far.
    c.speak_turn(500);
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    let log = fake.log.lock().unwrap();
    assert_eq!(log.llm_requests.len(), 4);
    let users = log.llm_requests[3]["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "user").count();
    assert_eq!(users, 4, "the failed turns stay in the conversation: {}", log.llm_requests[3]);
    drop(log);
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_conversation_reaches_the_llm_with_the_next_turn() {
    let fake = FakeCascade::start(keys(), 20).await;
    let server = server_for(&fake, "openai", "el-key").await;
    let base = server.url();
    let mut with_conversation = body();
    with_conversation["conversation"] = json!("conv_cascade_0123456789");
    let mut first = Call::connect(&base, "/v1/realtime", &client_secret(&base, with_conversation.clone()).await).await;
    first.expect("session.created").await;
    first.speak_turn(1500);
    let heard = first.expect("conversation.item.input_audio_transcription.completed").await["transcript"].as_str().unwrap().to_string();
    first.expect("response.done").await;
    first.close().await;

    let mut second = Call::connect(&base, "/v1/realtime", &client_secret(&base, with_conversation).await).await;
    second.expect("session.created").await;
    second.speak_turn(1500);
    second.expect("response.done").await;
    let log = fake.log.lock().unwrap();
    assert_eq!(log.llm_requests.len(), 2);
    let messages: Vec<(&str, &str)> = log.llm_requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap_or("")))
        .collect();
    let reply = reply_for(&heard);
    assert_eq!(&messages[..3], [("system", "Be a test."), ("user", heard.as_str()), ("assistant", reply.as_str())], "{messages:#?}");
    assert_eq!(messages.len(), 4, "then the new call's turn: {messages:#?}");
    drop(log);
    second.close().await;
    server.shutdown().await;
}
