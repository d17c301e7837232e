use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::agent::bridge::Up;

fn cfg(dialect: OpenAiDialect) -> OpenAiConfig {
    OpenAiConfig {
        api_key: "sk".into(),
        model: "gpt-realtime".into(),
        voice: "marin".into(),
        base_url: "ws://127.0.0.1:1/v1/realtime".into(),
        dialect,
        transcription_model: "whisper-1".into(),
        connect_timeout: Duration::from_secs(1),
    }
}

fn session() -> (Session, Link, mpsc::UnboundedReceiver<Up>) {
    let (link, _tx, up) = Link::detached();
    let mut sc = SessionConfig::default();
    sc.instructions = "be brief".into();
    (Session::new(cfg(OpenAiDialect::Ga), sc), link, up)
}

fn drain(up: &mut mpsc::UnboundedReceiver<Up>) -> Vec<Up> {
    let mut v = Vec::new();
    while let Ok(u) = up.try_recv() {
        v.push(u);
    }
    v
}

fn ev(s: &mut Session, link: &mut Link, v: Value) {
    s.on_event(&v, link);
}

fn pcm_b64(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

#[test]
fn session_update_turns_upstream_vad_off_in_both_dialects() {
    let (s, ..) = session();
    assert_eq!(s.url(), "ws://127.0.0.1:1/v1/realtime?model=gpt-realtime");
    let ga = s.session_update();
    assert_eq!(ga["session"]["type"], "realtime");
    assert_eq!(ga["session"]["instructions"], "be brief");
    assert!(ga["session"]["audio"]["input"]["turn_detection"].is_null());
    assert_eq!(ga["session"]["audio"]["input"]["format"], json!({"type": "audio/pcm", "rate": 24000}));
    assert_eq!(ga["session"]["audio"]["output"]["voice"], "marin", "operator's voice when the session keeps the default");
    let mut sc = SessionConfig::default();
    sc.voice = "verse".into();
    sc.input_audio_transcription = Some(json!({"model": "gpt-4o-transcribe"}));
    let beta = Session::new(cfg(OpenAiDialect::Beta), sc).session_update();
    assert_eq!(beta["session"]["voice"], "verse");
    assert_eq!(beta["session"]["input_audio_format"], "pcm16");
    assert!(beta["session"]["turn_detection"].is_null());
    assert_eq!(beta["session"]["input_audio_transcription"]["model"], "gpt-4o-transcribe");
}

#[test]
fn audio_append_is_base64_little_endian_pcm16() {
    let mut pcm = [0i16; SAMPLES_24K];
    pcm[0] = 1;
    pcm[1] = -2;
    let v: Value = serde_json::from_str(&audio_append(&pcm)).unwrap();
    assert_eq!(v["type"], "input_audio_buffer.append");
    let bytes = B64.decode(v["audio"].as_str().unwrap()).unwrap();
    assert_eq!(bytes.len(), SAMPLES_24K * 2);
    assert_eq!(&bytes[..4], &[1, 0, 0xfe, 0xff]);
}

#[test]
fn a_response_streams_frames_and_transcript_in_either_naming() {
    for (audio, transcript) in [
        ("response.output_audio.delta", "response.output_audio_transcript.delta"),
        ("response.audio.delta", "response.audio_transcript.delta"),
    ] {
        let (mut s, mut link, mut up) = session();
        assert_eq!(s.on_cmd(Cmd::StartResponse(7, Default::default()), &mut link), [r#"{"type":"response.create"}"#]);
        ev(&mut s, &mut link, json!({"type": "response.created", "response": {"id": "resp_up"}}));
        ev(&mut s, &mut link, json!({"type": "response.output_item.added", "item": {"id": "item_up", "type": "message"}}));
        // 700 samples split at an odd byte: one whole frame plus a padded tail.
        let samples: Vec<i16> = (0..700).map(|i| i as i16).collect();
        let bytes = pcm_b64(&samples);
        for chunk in [&bytes[..333], &bytes[333..]] {
            ev(&mut s, &mut link, json!({"type": audio, "item_id": "item_up", "delta": B64.encode(chunk)}));
        }
        ev(&mut s, &mut link, json!({"type": transcript, "delta": "hello"}));
        ev(&mut s, &mut link, json!({"type": "response.done", "response": {"id": "resp_up", "status": "completed"}}));
        let outs: Vec<AgentOutput> = drain(&mut up)
            .into_iter()
            .map(|u| match u {
                Up::Output { response: 7, out } => out,
                other => panic!("{other:?}"),
            })
            .collect();
        let AgentOutput::Audio(f1) = &outs[0] else { panic!("{outs:?}") };
        assert_eq!((f1[0], f1[479]), (0, 479));
        assert!(matches!(&outs[1], AgentOutput::TranscriptDelta(t) if t == "hello"));
        let AgentOutput::Audio(f2) = &outs[2] else { panic!("{outs:?}") };
        assert_eq!((f2[0], f2[219], f2[220]), (480, 699, 0), "tail flushed, zero padded");
        assert!(matches!(outs[3], AgentOutput::Done));
    }
}

#[test]
fn cancel_sends_cancel_and_truncate_and_drops_late_deltas() {
    let (mut s, mut link, mut up) = session();
    s.on_cmd(Cmd::StartResponse(1, Default::default()), &mut link);
    ev(&mut s, &mut link, json!({"type": "response.created", "response": {"id": "resp_up"}}));
    ev(&mut s, &mut link, json!({"type": "response.output_item.added", "item": {"id": "item_up", "type": "message"}}));
    ev(&mut s, &mut link, json!({"type": "response.output_audio_transcript.delta", "delta": "a long answer"}));
    let sent: Vec<Value> = s
        .on_cmd(Cmd::CancelResponse { response: 1, played: Duration::from_millis(640) }, &mut link)
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect();
    assert_eq!(sent[0], json!({"type": "response.cancel", "response_id": "resp_up"}));
    assert_eq!(sent[1], json!({"type": "conversation.item.truncate", "item_id": "item_up", "content_index": 0, "audio_end_ms": 640}));
    drain(&mut up);
    ev(&mut s, &mut link, json!({"type": "response.output_audio.delta", "delta": B64.encode([0u8; 960])}));
    ev(&mut s, &mut link, json!({"type": "response.done", "response": {"status": "cancelled"}}));
    assert!(drain(&mut up).is_empty(), "nothing after the cancel");
    assert_eq!(s.replay().len(), 1, "the heard part of the answer is remembered");
}

#[test]
fn cancel_before_response_created_still_cancels_upstream() {
    let (mut s, mut link, mut up) = session();
    s.on_cmd(Cmd::StartResponse(1, Default::default()), &mut link);
    assert_eq!(
        s.on_cmd(Cmd::CancelResponse { response: 1, played: Duration::from_millis(0) }, &mut link),
        [r#"{"type":"response.cancel"}"#]
    );
    ev(&mut s, &mut link, json!({"type": "response.created", "response": {"id": "r"}}));
    ev(&mut s, &mut link, json!({"type": "response.output_audio.delta", "delta": B64.encode([0u8; 960])}));
    assert!(drain(&mut up).is_empty());
}

#[test]
fn a_cancelled_response_the_provider_never_created_is_not_waited_for() {
    let (mut s, mut link, mut up) = session();
    s.on_cmd(Cmd::StartResponse(1, Default::default()), &mut link);
    s.on_cmd(Cmd::CancelResponse { response: 1, played: Duration::ZERO }, &mut link);
    ev(&mut s, &mut link, json!({"type": "error", "error": {"code": "response_cancel_not_active", "message": "no active response"}}));
    s.on_cmd(Cmd::StartResponse(2, Default::default()), &mut link);
    ev(&mut s, &mut link, json!({"type": "response.created", "response": {"id": "r2"}}));
    ev(&mut s, &mut link, json!({"type": "response.output_audio_transcript.delta", "response_id": "r2", "delta": "hi"}));
    let outputs: Vec<u64> =
        drain(&mut up).into_iter().filter_map(|u| if let Up::Output { response, .. } = u { Some(response) } else { None }).collect();
    assert_eq!(outputs, [2], "the second response's output is its own");
}

#[test]
fn caller_transcripts_map_to_our_item_ids() {
    let (mut s, mut link, mut up) = session();
    s.on_cmd(Cmd::Commit { item_id: "item_ours".into() }, &mut link);
    ev(&mut s, &mut link, json!({"type": "input_audio_buffer.committed", "item_id": "item_theirs"}));
    ev(
        &mut s,
        &mut link,
        json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_theirs", "content_index": 0, "transcript": "hi there"}),
    );
    match drain(&mut up).pop() {
        Some(Up::Notice(AgentNotice::InputTranscript { item_id, transcript })) => {
            assert_eq!((item_id.as_str(), transcript.as_str()), ("item_ours", "hi there"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_lost_connection_fails_the_responses_in_flight() {
    let (mut s, mut link, mut up) = session();
    s.on_cmd(Cmd::StartResponse(1, Default::default()), &mut link);
    ev(&mut s, &mut link, json!({"type": "response.created", "response": {"id": "r1"}}));
    s.on_cmd(Cmd::StartResponse(2, Default::default()), &mut link);
    s.on_disconnect(&mut link, "provider_disconnected", "gone");
    let failed: Vec<u64> = drain(&mut up)
        .into_iter()
        .filter_map(|u| match u {
            Up::Output { response, out: AgentOutput::Failed { code, .. } } if code == "provider_disconnected" => Some(response),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [1, 2]);
}

#[test]
fn provider_errors_become_notices_and_auth_failures_stick() {
    let (mut s, mut link, mut up) = session();
    ev(
        &mut s,
        &mut link,
        json!({"type": "error", "error": {"type": "invalid_request_error", "code": "rate_limit_exceeded", "message": "slow down"}}),
    );
    ev(&mut s, &mut link, json!({"type": "error", "error": {"code": "response_cancel_not_active", "message": "x"}}));
    ev(&mut s, &mut link, json!({"type": "error", "error": {"code": "invalid_api_key", "message": "Incorrect API key"}}));
    let codes: Vec<String> = drain(&mut up)
        .into_iter()
        .map(|u| match u {
            Up::Notice(AgentNotice::Error { code, .. }) => code,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(codes, ["provider_rate_limited", "provider_auth_failed"]);
    assert!(s.auth_failed);
    s.on_cmd(Cmd::StartResponse(3, Default::default()), &mut link);
    assert!(matches!(drain(&mut up).pop(), Some(Up::Output { response: 3, out: AgentOutput::Failed { .. } })));
}

#[test]
fn history_is_replayed_within_its_budget() {
    let (mut s, mut link, _up) = session();
    for i in 0..100 {
        s.on_cmd(Cmd::Text { item_id: format!("i{i}"), text: "x".repeat(1000) }, &mut link);
    }
    let replay = s.replay();
    assert_eq!(replay.len(), HISTORY_BUDGET_CHARS / 1000);
    assert_eq!(replay[0]["item"]["content"][0]["type"], "input_text");
}

#[test]
fn barge_in_after_the_provider_finished_truncates_only() {
    let (mut s, mut link, _up) = session();
    s.on_cmd(Cmd::StartResponse(4, Default::default()), &mut link);
    ev(&mut s, &mut link, json!({"type": "response.created", "response": {"id": "r"}}));
    ev(&mut s, &mut link, json!({"type": "response.output_item.added", "item": {"id": "item_up", "type": "message"}}));
    ev(&mut s, &mut link, json!({"type": "response.output_audio_transcript.delta", "delta": "all of it"}));
    ev(&mut s, &mut link, json!({"type": "response.done", "response": {"id": "r", "status": "completed"}}));
    let sent = s.on_cmd(Cmd::CancelResponse { response: 4, played: Duration::from_millis(300) }, &mut link);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let v: Value = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(v, json!({"type": "conversation.item.truncate", "item_id": "item_up", "content_index": 0, "audio_end_ms": 300}));
    assert_eq!(s.replay().len(), 1);
}

fn weather_tool() -> voxrelay_signaling::wire::Tool {
    voxrelay_signaling::wire::Tool {
        name: "get_weather".into(),
        description: "Weather now".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }
}

#[test]
fn tools_go_upstream_and_function_calls_come_back() {
    let sc = SessionConfig { tools: vec![weather_tool()], tool_choice: json!("required"), ..SessionConfig::default() };
    for dialect in [OpenAiDialect::Ga, OpenAiDialect::Beta] {
        let update = Session::new(cfg(dialect), sc.clone()).session_update();
        assert_eq!(
            update["session"]["tools"][0],
            json!({"type": "function", "name": "get_weather", "description": "Weather now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}})
        );
        assert_eq!(update["session"]["tool_choice"], "required");
    }

    let (mut s, mut link, mut up) = session();
    s.on_cmd(Cmd::StartResponse(4, Default::default()), &mut link);
    ev(&mut s, &mut link, json!({"type": "response.created", "response": {"id": "resp_u"}}));
    let item =
        json!({"id": "item_f", "type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"});
    ev(
        &mut s,
        &mut link,
        json!({"type": "response.output_item.added", "item": {"id": "item_f", "type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": ""}}),
    );
    ev(
        &mut s,
        &mut link,
        json!({"type": "response.function_call_arguments.delta", "item_id": "item_f", "call_id": "call_9", "delta": "{\"city\""}),
    );
    ev(&mut s, &mut link, json!({"type": "response.output_item.done", "item": item}));
    ev(&mut s, &mut link, json!({"type": "response.done", "response": {"id": "resp_u", "status": "completed", "output": [item]}}));
    let outs: Vec<AgentOutput> =
        drain(&mut up).into_iter().filter_map(|u| if let Up::Output { response: 4, out } = u { Some(out) } else { None }).collect();
    match &outs[..] {
        [AgentOutput::FunctionCall { call_id, name, arguments }, AgentOutput::Done] => {
            assert_eq!((call_id.as_str(), name.as_str(), arguments.as_str()), ("call_9", "get_weather", "{\"city\":\"Oslo\"}"));
        }
        other => panic!("{other:?}"),
    }

    let sent = s.on_cmd(Cmd::FunctionOutput { call_id: "call_9".into(), output: "{\"c\":21}".into() }, &mut link);
    let v: Value = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(
        v,
        json!({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_9", "output": "{\"c\":21}"}})
    );
}

#[test]
fn rate_limits_are_passed_on() {
    let (mut s, mut link, mut up) = session();
    let limits = json!([{"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60}]);
    ev(&mut s, &mut link, json!({"type": "rate_limits.updated", "rate_limits": limits}));
    ev(&mut s, &mut link, json!({"type": "rate_limits.updated", "rate_limits": "garbage"}));
    let notices: Vec<AgentNotice> = drain(&mut up).into_iter().filter_map(|u| if let Up::Notice(n) = u { Some(n) } else { None }).collect();
    assert_eq!(notices, [AgentNotice::RateLimits(limits)]);
}

#[test]
fn in_a_room_a_text_item_names_the_speaker_before_the_audio_turn() {
    let (mut s, mut link, _up) = session();
    let sent: Vec<Value> = s.on_cmd(Cmd::Speaker("alice".into()), &mut link).iter().map(|m| serde_json::from_str(m).unwrap()).collect();
    assert_eq!(
        sent,
        [
            json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "[alice]"}]}})
        ]
    );
    let commit: Vec<Value> =
        s.on_cmd(Cmd::Commit { item_id: "item_1".into() }, &mut link).iter().map(|m| serde_json::from_str(m).unwrap()).collect();
    assert_eq!(commit[0]["type"], "input_audio_buffer.commit");
    assert_eq!(s.replay()[0]["item"]["content"][0]["text"], "[alice]", "remembered for a reconnect");
}

#[test]
fn response_create_carries_the_clients_modalities_and_instructions_in_the_upstream_dialect() {
    let (mut s, mut link, _up) = session();
    let options = voxrelay_signaling::events::ResponseOptions { text_only: Some(true), instructions: Some("Be brief.".into()) };
    let sent: Vec<Value> = s.on_cmd(Cmd::StartResponse(1, options), &mut link).iter().map(|t| serde_json::from_str(t).unwrap()).collect();
    let response = &sent[0]["response"];
    assert_eq!(sent[0]["type"], "response.create");
    assert_eq!(response["instructions"], "Be brief.");
    assert_eq!(response["output_modalities"], json!(["text"]), "the GA upstream's name");
    let beta = Session::new(cfg(OpenAiDialect::Beta), SessionConfig::default())
        .response_create(&voxrelay_signaling::events::ResponseOptions { text_only: Some(true), instructions: None });
    assert_eq!(beta, json!({"type": "response.create", "response": {"modalities": ["text"]}}));
}
