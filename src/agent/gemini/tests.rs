use std::time::Duration;

use tokio::sync::mpsc;
use voxrelay_media::AudioTime;

use super::*;
use crate::agent::bridge::Up;

fn gemini() -> (Gemini, Link, mpsc::UnboundedReceiver<Up>) {
    let (link, _tx, up) = Link::detached();
    let cfg = GeminiConfig {
        api_key: "k".into(),
        model: "models/gemini-test".into(),
        voice: "Kore".into(),
        base_url: "ws://127.0.0.1:1/ws".into(),
        connect_timeout: Duration::from_secs(1),
    };
    let mut s = SessionConfig::default();
    s.instructions = "be brief".into();
    s.input_audio_transcription = Some(json!({}));
    (Gemini::new(cfg, s), link, up)
}

fn msg(g: &mut Gemini, link: &mut Link, v: Value) -> Reply {
    g.on_message(&v.to_string(), link)
}

fn ready(g: &mut Gemini, link: &mut Link) {
    g.opening(false);
    msg(g, link, json!({"setupComplete": {}}));
}

fn parsed(out: &[String]) -> Vec<Value> {
    out.iter().map(|m| serde_json::from_str(m).unwrap()).collect()
}

fn outputs(up: &mut mpsc::UnboundedReceiver<Up>) -> Vec<(u64, AgentOutput)> {
    let mut v = Vec::new();
    while let Ok(u) = up.try_recv() {
        if let Up::Output { response, out } = u {
            v.push((response, out));
        }
    }
    v
}

/// The caller spoke and the turn was committed (the activity ended: the model answers it).
fn user_turn(g: &mut Gemini, link: &mut Link, item_id: &str) {
    g.on_cmd(Cmd::SpeechStarted, link);
    g.on_cmd(Cmd::Commit { item_id: item_id.into() }, link);
}

fn audio_part(samples: usize) -> Value {
    let bytes: Vec<u8> = (0..samples).flat_map(|i| (i as i16).to_le_bytes()).collect();
    json!({"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": B64.encode(bytes)}})
}

#[test]
fn setup_disables_upstream_activity_detection() {
    let (mut g, ..) = gemini();
    let setup = &parsed(&g.opening(false))[0]["setup"];
    assert_eq!(setup["model"], "models/gemini-test");
    assert_eq!(setup["realtimeInputConfig"]["automaticActivityDetection"]["disabled"], true);
    assert_eq!(setup["systemInstruction"]["parts"][0]["text"], "be brief");
    assert_eq!(setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"], "Kore");
    assert!(setup["inputAudioTranscription"].is_object());
    assert_eq!(setup["sessionResumption"], json!({}));
}

#[test]
fn messages_wait_for_setup_complete_then_audio_is_16k_inside_an_activity() {
    let (mut g, mut link, _up) = gemini();
    g.opening(false);
    assert!(g.on_cmd(Cmd::SpeechStarted, &mut link).is_empty(), "held until setupComplete");
    g.on_cmd(Cmd::Audio { start: AudioTime::from_ms(0), pcm: Box::new([100; SAMPLES_24K]) }, &mut link);
    let sent = parsed(&msg(&mut g, &mut link, json!({"setupComplete": {}})).send);
    assert_eq!(sent[0], json!({"realtimeInput": {"activityStart": {}}}));
    let audio = &sent[1]["realtimeInput"]["audio"];
    assert_eq!(audio["mimeType"], "audio/pcm;rate=16000");
    assert_eq!(B64.decode(audio["data"].as_str().unwrap()).unwrap().len(), 640, "20 ms at 16 kHz");
    let end = parsed(&g.on_cmd(Cmd::Commit { item_id: "item_1".into() }, &mut link));
    assert_eq!(end, [json!({"realtimeInput": {"activityEnd": {}}})]);
    assert!(g.on_cmd(Cmd::StartResponse(1, Default::default()), &mut link).is_empty(), "the activity end already asks for an answer");
}

#[test]
fn a_model_turn_becomes_frames_transcript_and_done_in_either_casing() {
    for snake in [false, true] {
        let (mut g, mut link, mut up) = gemini();
        ready(&mut g, &mut link);
        user_turn(&mut g, &mut link, "item_u");
        g.on_cmd(Cmd::StartResponse(3, Default::default()), &mut link);
        let content = if snake {
            json!({"server_content": {"model_turn": {"parts": [audio_part(700)]}, "output_transcription": {"text": "hi"}, "input_transcription": {"text": "hello"}}})
        } else {
            json!({"serverContent": {"modelTurn": {"parts": [audio_part(700)]}, "outputTranscription": {"text": "hi"}, "inputTranscription": {"text": "hello"}}})
        };
        msg(&mut g, &mut link, content);
        msg(&mut g, &mut link, json!({"serverContent": {"turnComplete": true}}));
        let outs = outputs(&mut up);
        assert!(outs.iter().all(|(n, _)| *n == 3));
        assert_eq!(outs.iter().filter(|(_, o)| matches!(o, AgentOutput::Audio(_))).count(), 2, "a frame and the padded tail");
        assert!(outs.iter().any(|(_, o)| matches!(o, AgentOutput::TranscriptDelta(t) if t == "hi")));
        assert!(matches!(outs.last(), Some((_, AgentOutput::Done))));
    }
}

#[test]
fn cancelled_turns_are_dropped_and_unrequested_turns_too() {
    let (mut g, mut link, mut up) = gemini();
    ready(&mut g, &mut link);
    g.on_cmd(Cmd::Text { item_id: "i".into(), text: "hi".into() }, &mut link);
    g.on_cmd(Cmd::StartResponse(1, Default::default()), &mut link);
    msg(&mut g, &mut link, json!({"serverContent": {"modelTurn": {"parts": [audio_part(480)]}}}));
    g.on_cmd(Cmd::CancelResponse { response: 1, played: Duration::from_millis(20) }, &mut link);
    msg(&mut g, &mut link, json!({"serverContent": {"modelTurn": {"parts": [audio_part(480)]}}}));
    msg(&mut g, &mut link, json!({"serverContent": {"interrupted": true}}));
    assert_eq!(outputs(&mut up).len(), 1, "only the frame before the cancel");
    // A model turn after the cancel is nobody's: the next response asks afresh, without it.
    msg(&mut g, &mut link, json!({"serverContent": {"modelTurn": {"parts": [audio_part(480)]}, "turnComplete": true}}));
    assert!(outputs(&mut up).is_empty());
    let asked = parsed(&g.on_cmd(Cmd::StartResponse(2, Default::default()), &mut link));
    assert_eq!(asked, [json!({"clientContent": {"turnComplete": true}})]);
    assert!(outputs(&mut up).is_empty(), "the stale turn is not the new answer");
}

#[test]
fn a_model_turn_that_comes_before_its_response_is_held_for_it() {
    // Gemini answers an activity's end by itself, so its reply can overtake our StartResponse.
    let (mut g, mut link, mut up) = gemini();
    ready(&mut g, &mut link);
    user_turn(&mut g, &mut link, "item_1");
    msg(&mut g, &mut link, json!({"serverContent": {"modelTurn": {"parts": [audio_part(700)]}, "outputTranscription": {"text": "hi"}}}));
    assert!(outputs(&mut up).is_empty(), "no response has asked yet");
    assert!(g.on_cmd(Cmd::StartResponse(1, Default::default()), &mut link).is_empty(), "the activity end asked already");
    let outs = outputs(&mut up);
    assert!(matches!(&outs[..], [(1, AgentOutput::Audio(_)), (1, AgentOutput::TranscriptDelta(t))] if t == "hi"), "{outs:?}");
    msg(&mut g, &mut link, json!({"serverContent": {"turnComplete": true}}));
    assert!(matches!(&outputs(&mut up)[..], [(1, AgentOutput::Audio(_)), (1, AgentOutput::Done)]), "the rest goes straight on");

    // A whole turn (a function call) before the request.
    user_turn(&mut g, &mut link, "item_2");
    msg(&mut g, &mut link, json!({"toolCall": {"functionCalls": [{"id": "fc_1", "name": "get_weather", "args": {"city": "Oslo"}}]}}));
    assert!(outputs(&mut up).is_empty());
    g.on_cmd(Cmd::StartResponse(2, Default::default()), &mut link);
    let outs = outputs(&mut up);
    assert!(matches!(&outs[..], [(2, AgentOutput::FunctionCall { call_id, .. }), (2, AgentOutput::Done)] if call_id == "fc_1"), "{outs:?}");
    let sent = parsed(&g.on_cmd(Cmd::FunctionOutput { call_id: "fc_1".into(), output: "sunny".into() }, &mut link));
    assert_eq!(sent[0]["toolResponse"]["functionResponses"][0]["id"], "fc_1", "the held call was booked for its output");
}

#[test]
fn an_unclaimed_answer_goes_stale_when_the_user_speaks_again() {
    // create_response off: the client asks only after the second turn.
    let (mut g, mut link, mut up) = gemini();
    ready(&mut g, &mut link);
    user_turn(&mut g, &mut link, "item_1");
    msg(&mut g, &mut link, json!({"serverContent": {"modelTurn": {"parts": [audio_part(2400)]}, "turnComplete": true}}));
    user_turn(&mut g, &mut link, "item_2");
    g.on_cmd(Cmd::StartResponse(1, Default::default()), &mut link);
    assert!(outputs(&mut up).is_empty(), "the first answer is not the second turn's");
    msg(&mut g, &mut link, json!({"serverContent": {"modelTurn": {"parts": [audio_part(480)]}, "turnComplete": true}}));
    assert!(matches!(&outputs(&mut up)[..], [(1, AgentOutput::Audio(_)), (1, AgentOutput::Done)]));
}

#[test]
fn an_answer_nobody_claims_is_held_only_so_long() {
    let (mut g, mut link, mut up) = gemini();
    ready(&mut g, &mut link);
    user_turn(&mut g, &mut link, "item_1");
    for _ in 0..turn::MAX_HELD_FRAMES / 100 + 1 {
        msg(&mut g, &mut link, json!({"serverContent": {"modelTurn": {"parts": [audio_part(SAMPLES_24K * 100)]}}}));
    }
    msg(&mut g, &mut link, json!({"serverContent": {"turnComplete": true}}));
    assert!(g.unclaimed.is_none(), "dropped past the bound");
    g.on_cmd(Cmd::StartResponse(1, Default::default()), &mut link);
    assert!(outputs(&mut up).is_empty());
    msg(&mut g, &mut link, json!({"serverContent": {"modelTurn": {"parts": [audio_part(480)]}, "turnComplete": true}}));
    assert!(matches!(&outputs(&mut up)[..], [(1, AgentOutput::Audio(_)), (1, AgentOutput::Done)]), "the next answer is the response's");
}

#[test]
fn go_away_reconnects_after_the_turn_with_the_resumption_handle() {
    let (mut g, mut link, _up) = gemini();
    ready(&mut g, &mut link);
    msg(&mut g, &mut link, json!({"sessionResumptionUpdate": {"newHandle": "h1", "resumable": true}}));
    g.on_cmd(Cmd::Text { item_id: "i".into(), text: "hi".into() }, &mut link);
    g.on_cmd(Cmd::StartResponse(1, Default::default()), &mut link);
    msg(&mut g, &mut link, json!({"serverContent": {"modelTurn": {"parts": [audio_part(480)]}}}));
    assert!(msg(&mut g, &mut link, json!({"goAway": {"timeLeft": "5s"}})).reconnect.is_none(), "not mid-turn");
    assert!(msg(&mut g, &mut link, json!({"serverContent": {"turnComplete": true}})).reconnect.is_some());
    let setup = &parsed(&g.opening(true))[0]["setup"];
    assert_eq!(setup["sessionResumption"]["handle"], "h1");
    assert!(g.outbox.is_empty(), "resumed: no replay needed");
    // Idle: move at once.
    ready(&mut g, &mut link);
    assert!(msg(&mut g, &mut link, json!({"go_away": {"time_left": "1s"}})).reconnect.is_some());
}

#[test]
fn without_a_handle_the_dialogue_is_replayed_after_setup() {
    let (mut g, mut link, _up) = gemini();
    ready(&mut g, &mut link);
    g.on_cmd(Cmd::Text { item_id: "i".into(), text: "remember me".into() }, &mut link);
    g.opening(true);
    let sent = parsed(&msg(&mut g, &mut link, json!({"setupComplete": {}})).send);
    assert_eq!(sent[0]["clientContent"]["turns"][0]["parts"][0]["text"], "remember me");
    assert_eq!(sent[0]["clientContent"]["turnComplete"], false);
}

#[test]
fn settings_changes_reconnect_when_idle_and_close_frames_map_to_codes() {
    let (mut g, mut link, _up) = gemini();
    ready(&mut g, &mut link);
    let mut s = SessionConfig::default();
    s.instructions = "new".into();
    g.on_cmd(Cmd::Configure(s), &mut link);
    assert!(g.wants_reconnect().is_some());
    assert_eq!(g.close_code(1008, "API key not valid. Please pass a valid API key."), Some("provider_auth_failed"));
    assert_eq!(g.close_code(1011, "Resource has been exhausted (e.g. check quota)."), Some("provider_rate_limited"));
    assert_eq!(g.close_code(1000, ""), None);
}

#[test]
fn settings_changed_during_setup_reconnect_with_them_and_keep_the_waiting_turn() {
    let (mut g, mut link, _up) = gemini();
    g.opening(false);
    let mut s = g.session.clone();
    s.tools = vec![voxrelay_signaling::wire::Tool { name: "get_weather".into(), description: "d".into(), parameters: json!({}) }];
    g.on_cmd(Cmd::Configure(s), &mut link);
    // The caller starts speaking before the (stale) setup completes.
    g.on_cmd(Cmd::SpeechStarted, &mut link);
    g.on_cmd(Cmd::Audio { start: AudioTime::from_ms(0), pcm: Box::new([100; SAMPLES_24K]) }, &mut link);
    let stale = msg(&mut g, &mut link, json!({"setupComplete": {}}));
    assert!(stale.send.is_empty(), "nothing goes to a session set up without the tools");
    assert!(stale.reconnect.is_some());
    let setup = &parsed(&g.opening(true))[0]["setup"];
    assert_eq!(setup["tools"][0]["functionDeclarations"][0]["name"], "get_weather");
    let sent = parsed(&msg(&mut g, &mut link, json!({"setupComplete": {}})).send);
    let kinds: Vec<_> = sent.iter().map(|m| m["realtimeInput"].as_object().and_then(|o| o.keys().next().cloned())).collect();
    assert_eq!(kinds, [Some("activityStart".to_string()), Some("audio".to_string())], "{sent:?}");
    // The activity goes on: the commit ends it on this connection.
    let end = parsed(&g.on_cmd(Cmd::Commit { item_id: "i".into() }, &mut link));
    assert_eq!(end, [json!({"realtimeInput": {"activityEnd": {}}})]);
}

#[test]
fn tools_are_declared_and_tool_calls_round_trip_as_function_calls() {
    let (mut g, mut link, mut up) = gemini();
    g.session.tools = vec![voxrelay_signaling::wire::Tool {
        name: "get_weather".into(),
        description: "Weather now".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }];
    let setup = &parsed(&g.opening(false))[0]["setup"];
    assert_eq!(
        setup["tools"],
        json!([{"functionDeclarations": [{"name": "get_weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}])
    );
    msg(&mut g, &mut link, json!({"setupComplete": {}}));

    g.on_cmd(Cmd::Text { item_id: "i".into(), text: "weather?".into() }, &mut link);
    g.on_cmd(Cmd::StartResponse(1, Default::default()), &mut link);
    msg(&mut g, &mut link, json!({"toolCall": {"functionCalls": [{"id": "fc_1", "name": "get_weather", "args": {"city": "Oslo"}}]}}));
    let outs = outputs(&mut up);
    match &outs[..] {
        [(1, AgentOutput::FunctionCall { call_id, name, arguments }), (1, AgentOutput::Done)] => {
            assert_eq!((call_id.as_str(), name.as_str()), ("fc_1", "get_weather"));
            assert_eq!(serde_json::from_str::<Value>(arguments).unwrap(), json!({"city": "Oslo"}));
        }
        other => panic!("{other:?}"),
    }

    // A JSON object output is the response; anything else is wrapped.
    let sent = parsed(&g.on_cmd(Cmd::FunctionOutput { call_id: "fc_1".into(), output: r#"{"temp_c":21}"#.into() }, &mut link));
    assert_eq!(sent, [json!({"toolResponse": {"functionResponses": [{"id": "fc_1", "name": "get_weather", "response": {"temp_c": 21}}]}})]);
    assert_eq!(tool_response("x", "f", "sunny")["toolResponse"]["functionResponses"][0]["response"], json!({"output": "sunny"}));
    assert!(
        g.on_cmd(Cmd::StartResponse(2, Default::default()), &mut link).is_empty(),
        "the model continues from the result: no empty user turn"
    );
    msg(&mut g, &mut link, json!({"serverContent": {"modelTurn": {"parts": [audio_part(480)]}, "turnComplete": true}}));
    assert!(outputs(&mut up).iter().all(|(n, _)| *n == 2));

    // A cancelled call's late output is not sent.
    g.on_cmd(Cmd::StartResponse(3, Default::default()), &mut link);
    msg(&mut g, &mut link, json!({"tool_call": {"function_calls": [{"id": "fc_2", "name": "get_weather", "args": {}}]}}));
    msg(&mut g, &mut link, json!({"toolCallCancellation": {"ids": ["fc_2"]}}));
    assert!(g.on_cmd(Cmd::FunctionOutput { call_id: "fc_2".into(), output: "{}".into() }, &mut link).is_empty());
}

#[test]
fn in_a_room_the_speaker_is_named_in_the_context_without_asking_for_an_answer() {
    let (mut g, mut link, _up) = gemini();
    ready(&mut g, &mut link);
    let sent = parsed(&g.on_cmd(Cmd::Speaker("alice".into()), &mut link));
    assert_eq!(sent, [json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "[alice]"}]}], "turnComplete": false}})]);
    user_turn(&mut g, &mut link, "item_1");
    assert!(
        g.on_cmd(Cmd::StartResponse(1, Default::default()), &mut link).is_empty(),
        "the audio turn's end asks for the answer, as without a name"
    );
}

#[test]
fn per_response_instructions_ask_for_the_answer_or_are_refused_when_too_late() {
    let (mut g, mut link, mut up) = gemini();
    ready(&mut g, &mut link);
    let options = crate::agent::ResponseOptions { text_only: None, instructions: Some("Answer in French.".into()) };
    let sent = parsed(&g.on_cmd(Cmd::StartResponse(1, options.clone()), &mut link));
    assert_eq!(sent[0]["clientContent"]["turns"][0]["parts"][0]["text"], "[Instructions for this answer: Answer in French.]");
    assert_eq!(sent[0]["clientContent"]["turnComplete"], true);
    // A text turn already asked for its answer: the instructions cannot reach it.
    g.on_cmd(Cmd::Text { item_id: "i".into(), text: "hi".into() }, &mut link);
    assert!(g.on_cmd(Cmd::StartResponse(2, options), &mut link).is_empty());
    let mut refused = false;
    while let Ok(u) = up.try_recv() {
        refused |= matches!(u, Up::Notice(crate::agent::AgentNotice::Error { ref code, .. }) if code == "unsupported_value");
    }
    assert!(refused, "the client is told");
}

#[test]
fn a_resumed_conversation_is_given_to_the_first_session_as_context() {
    let (mut g, mut link, _up) = gemini();
    g.history.push("user", "my name is Ada");
    g.history.push("assistant", "Nice to meet you, Ada.");
    g.opening(false);
    let sent = parsed(&msg(&mut g, &mut link, json!({"setupComplete": {}})).send);
    let turns = &sent[0]["clientContent"]["turns"];
    assert_eq!((turns[0]["role"].as_str(), turns[0]["parts"][0]["text"].as_str()), (Some("user"), Some("my name is Ada")));
    assert_eq!((turns[1]["role"].as_str(), turns[1]["parts"][0]["text"].as_str()), (Some("model"), Some("Nice to meet you, Ada.")));
    assert_eq!(sent[0]["clientContent"]["turnComplete"], false, "context, not a turn to answer");
}
