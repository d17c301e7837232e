//! The response lifecycle and client-event handling, fed by hand (no audio thread, no network).
//! Ids are sequential and time is given, so events can be asserted exactly.

use std::sync::OnceLock;

use serde_json::json;

use super::*;
use crate::agent::EchoAgent;

/// `ms` after an arbitrary fixed start: the time a test feeds the conversation.
fn at(ms: u64) -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now) + Duration::from_millis(ms)
}

fn conv() -> Conversation {
    let agent = Box::new(EchoAgent::new());
    let mut c = Conversation::new(Dialect::Beta, "sess_x".into(), SessionConfig::default(), agent, IdSource::sequential());
    for i in 0..100u64 {
        c.on_caller_audio(AudioTime::from_ms(i * 20), &[1000; voxrelay_media::SAMPLES_24K]);
    }
    c
}

fn types(c: &mut Conversation) -> Vec<String> {
    c.take_json().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
}

#[test]
fn committed_turn_starts_a_response_that_completes_after_playback() {
    let mut c = conv();
    c.on_media(MediaEvent::SpeechStarted { audio_start: AudioTime::from_ms(200) }, at(0));
    c.on_media(MediaEvent::SpeechStopped { audio_end: AudioTime::from_ms(600) }, at(0));
    c.on_media(MediaEvent::Committed { audio_end: AudioTime::from_ms(600) }, at(0));
    let t = types(&mut c);
    assert!(t.contains(&"response.created".to_string()), "{t:?}");
    let mut frames = 0;
    while let Some(f) = c.next_agent_frame(at(0)) {
        if let AgentFrame::End { response } = f {
            assert_eq!(response, 1);
            break;
        }
        frames += 1;
    }
    assert_eq!(frames, 20);
    assert!(types(&mut c).contains(&"response.audio_transcript.delta".to_string()));
    c.on_media(MediaEvent::PlaybackStarted { response: 1 }, at(0));
    c.on_media(MediaEvent::PlaybackFinished { response: 1, played: Duration::from_millis(400) }, at(0));
    let t = types(&mut c);
    assert_eq!(t.last().unwrap(), "response.done");
    assert!(t.contains(&"output_audio_buffer.stopped".to_string()));
}

#[test]
fn speech_during_a_response_cancels_it() {
    let mut c = conv();
    c.on_media(MediaEvent::SpeechStarted { audio_start: AudioTime::from_ms(200) }, at(0));
    c.on_media(MediaEvent::Committed { audio_end: AudioTime::from_ms(600) }, at(0));
    let _ = c.next_agent_frame(at(0));
    assert!(c.on_egress_frame(true));
    c.out.clear();
    c.on_media(MediaEvent::SpeechStarted { audio_start: AudioTime::from_ms(900) }, at(0));
    let events = c.take_json();
    let done = events.iter().find(|e| e["type"] == "response.done").unwrap();
    assert_eq!(done["response"]["status"], "cancelled");
    let trunc = events.iter().find(|e| e["type"] == "conversation.item.truncated").unwrap();
    assert_eq!(trunc["audio_end_ms"], 20);
    assert!(matches!(c.controls.last(), Some(Control::CancelResponse(1))));
    // Exactly: the new turn, then the cancelled response's three events (event ids aside).
    let bodies: Vec<Value> = events
        .into_iter()
        .map(|mut e| {
            e.as_object_mut().unwrap().remove("event_id");
            e
        })
        .collect();
    let cut = json!({"id": "item_2", "object": "realtime.item", "type": "message", "status": "incomplete", "role": "assistant",
        "content": [{"type": "audio", "transcript": "[echo 0.4 s]"}]});
    assert_eq!(
        bodies,
        [
            json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 900, "item_id": "item_3"}),
            json!({"type": "output_audio_buffer.cleared", "response_id": "resp_1"}),
            json!({"type": "conversation.item.truncated", "item_id": "item_2", "content_index": 0, "audio_end_ms": 20}),
            json!({"type": "response.done", "response": {"id": "resp_1", "object": "realtime.response", "status": "cancelled",
                "status_details": {"type": "cancelled", "reason": "turn_detected"}, "output": [cut], "usage": null}}),
        ]
    );
    assert!(!c.on_egress_frame(true), "stale voiced frames are dropped after a cancel");
}

#[test]
fn response_create_right_after_a_manual_commit_answers_that_turn() {
    let mut c = conv();
    c.on_client_text(r#"{"type":"session.update","session":{"turn_detection":null}}"#, at(0));
    c.on_client_text(r#"{"type":"input_audio_buffer.commit"}"#, at(0));
    c.on_client_text(r#"{"type":"response.create"}"#, at(0));
    assert!(!types(&mut c).contains(&"response.created".to_string()), "waits for the worker's commit");
    c.on_media(MediaEvent::Committed { audio_end: AudioTime::from_ms(2000) }, at(0));
    let t = types(&mut c);
    let (committed, created) = (t.iter().position(|x| x == "input_audio_buffer.committed"), t.iter().position(|x| x == "response.created"));
    assert!(committed.is_some() && created > committed, "{t:?}");
    assert!(matches!(c.next_agent_frame(at(0)), Some(AgentFrame::Audio { response: 1, .. })));
    let events = c.take_json();
    let delta = events.iter().find(|e| e["type"] == "response.audio_transcript.delta").expect("transcript");
    assert_eq!(delta["delta"], "[echo 2.0 s]", "the echo covers the committed 2 s");
}

#[test]
fn with_marks_a_cancel_truncates_at_what_the_caller_heard_and_flushes_the_transport() {
    let heard = Arc::new(AtomicU64::new(0));
    let mut c = conv().with_heard(heard.clone());
    c.on_media(MediaEvent::SpeechStarted { audio_start: AudioTime::from_ms(200) }, at(0));
    c.on_media(MediaEvent::Committed { audio_end: AudioTime::from_ms(600) }, at(0));
    for _ in 0..10 {
        let _ = c.next_agent_frame(at(0));
        assert!(c.on_egress_frame(true));
    }
    // 10 frames sent, marks came back for 4 of them.
    heard.store(4, Ordering::Relaxed);
    c.out.clear();
    c.on_media(MediaEvent::SpeechStarted { audio_start: AudioTime::from_ms(900) }, at(0));
    let events = c.take_json();
    let trunc = events.iter().find(|e| e["type"] == "conversation.item.truncated").unwrap();
    assert_eq!(trunc["audio_end_ms"], 80);
    assert!(c.flush_transport);
    c.on_dtmf('#', UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let out = c.take_json();
    assert_eq!(out[0]["type"], "input_audio_buffer.dtmf_event_received");
    assert_eq!(out[0]["event"], "#");
    assert_eq!(out[0]["received_at"], 1_700_000_000, "Unix seconds of when the transport received it");
    // The digit joins the conversation as a user text item (what the agent is given).
    assert_eq!(out[1]["type"], "conversation.item.created");
    assert_eq!(out[1]["item"]["role"], "user");
    assert_eq!(out[1]["item"]["content"][0]["text"], super::dtmf_text('#'));
    // item_1: the first turn, item_2: the answer, item_3: the barge-in turn (not committed).
    assert_eq!((out[1]["item"]["id"].as_str(), out[1]["previous_item_id"].as_str()), (Some("item_4"), Some("item_2")));
}

#[test]
fn bad_client_events_answer_with_error_events() {
    let mut c = conv();
    c.on_client_text("{oops", at(0));
    c.on_client_text(r#"{"type":"response.cancel","event_id":"ev1"}"#, at(0));
    c.on_client_text(r#"{"type":"session.update","session":{"turn_detection":{"threshold":7}}}"#, at(0));
    let out = c.take_json();
    let codes: Vec<String> = out.iter().map(|e| e["error"]["code"].as_str().unwrap().to_string()).collect();
    assert_eq!(codes, ["invalid_json", "response_cancel_not_active", "invalid_turn_detection"]);
    assert_eq!(out[1]["error"]["event_id"], "ev1");
}

/// One whole turn over the data channel, every event exact (ids included): what a beta client
/// receives from `session.created` to `response.done`.
#[test]
fn a_full_turn_is_exactly_these_events() {
    let mut c = conv();
    c.on_open();
    c.on_media(MediaEvent::SpeechStarted { audio_start: AudioTime::from_ms(200) }, at(200));
    c.on_media(MediaEvent::SpeechStopped { audio_end: AudioTime::from_ms(600) }, at(600));
    c.on_media(MediaEvent::Committed { audio_end: AudioTime::from_ms(600) }, at(600));
    let mut frames = 0;
    while let Some(AgentFrame::Audio { response: 1, .. }) = c.next_agent_frame(at(650)) {
        assert!(c.on_egress_frame(true));
        frames += 1;
    }
    assert_eq!(frames, 20, "the 400 ms turn, echoed");
    c.on_media(MediaEvent::PlaybackStarted { response: 1 }, at(700));
    c.on_media(MediaEvent::PlaybackFinished { response: 1, played: Duration::from_millis(400) }, at(1100));

    let ids = json!({"response_id": "resp_1", "item_id": "item_2", "output_index": 0, "content_index": 0});
    let with = |extra: Value| {
        let mut v = ids.clone();
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    };
    let transcript = "[echo 0.4 s]";
    let answer = json!({"id": "item_2", "object": "realtime.item", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "audio", "transcript": transcript}]});
    let expected: Vec<(&str, Value)> = vec![
        ("session.created", json!({"session": SessionConfig::default().beta_json("sess_x")})),
        ("input_audio_buffer.speech_started", json!({"audio_start_ms": 200, "item_id": "item_1"})),
        ("input_audio_buffer.speech_stopped", json!({"audio_end_ms": 600, "item_id": "item_1"})),
        ("input_audio_buffer.committed", json!({"previous_item_id": null, "item_id": "item_1"})),
        (
            "conversation.item.created",
            json!({"previous_item_id": null, "item": {"id": "item_1", "object": "realtime.item", "type": "message", "status": "completed",
                "role": "user", "content": [{"type": "input_audio", "transcript": null}]}}),
        ),
        (
            "response.created",
            json!({"response": {"id": "resp_1", "object": "realtime.response", "status": "in_progress", "status_details": null,
                "output": [], "usage": null}}),
        ),
        (
            "response.output_item.added",
            json!({"response_id": "resp_1", "output_index": 0, "item": {"id": "item_2", "object": "realtime.item", "type": "message",
                "status": "in_progress", "role": "assistant", "content": []}}),
        ),
        (
            "conversation.item.created",
            json!({"previous_item_id": "item_1", "item": {"id": "item_2", "object": "realtime.item", "type": "message",
                "status": "in_progress", "role": "assistant", "content": []}}),
        ),
        ("response.content_part.added", with(json!({"part": {"type": "audio", "transcript": ""}}))),
        ("response.audio_transcript.delta", with(json!({"delta": transcript}))),
        ("output_audio_buffer.started", json!({"response_id": "resp_1"})),
        ("response.audio.done", ids.clone()),
        ("response.audio_transcript.done", with(json!({"transcript": transcript}))),
        ("response.content_part.done", with(json!({"part": {"type": "audio", "transcript": transcript}}))),
        ("response.output_item.done", json!({"response_id": "resp_1", "output_index": 0, "item": answer})),
        ("output_audio_buffer.stopped", json!({"response_id": "resp_1"})),
        (
            "response.done",
            json!({"response": {"id": "resp_1", "object": "realtime.response", "status": "completed", "status_details": null,
                "output": [answer], "usage": null}}),
        ),
    ];
    let expected: Vec<Value> = expected
        .into_iter()
        .enumerate()
        .map(|(i, (kind, mut body))| {
            body["type"] = json!(kind);
            body["event_id"] = json!(format!("event_{}", i + 1));
            body
        })
        .collect();
    let got = c.take_json();
    for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "event {i}");
    }
    assert_eq!(got.len(), expected.len());
    assert_eq!(c.agent_latencies, [Duration::from_millis(50)], "response.created at 600 ms, first audio pulled at 650 ms");
}

#[test]
fn a_ga_call_names_the_same_events_the_ga_way() {
    let agent = Box::new(EchoAgent::new());
    let mut c = Conversation::new(Dialect::Ga, "sess_x".into(), SessionConfig::default(), agent, IdSource::sequential());
    c.on_client_text(r#"{"type":"conversation.item.create","item":{"content":[{"type":"input_text","text":"hi"}]}}"#, at(0));
    c.on_client_text(r#"{"type":"response.create"}"#, at(0));
    while c.next_agent_frame(at(10)).is_some() {}
    let got = c.take_json();
    let types: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "conversation.item.added",
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.content_part.added",
            "response.output_audio_transcript.delta",
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.done",
        ]
    );
    let typed = json!({"id": "item_1", "object": "realtime.item", "type": "message", "status": "completed", "role": "user",
        "content": [{"type": "input_text", "text": "hi"}]});
    assert_eq!(got[0]["item"], typed);
    assert_eq!((got[10]["response"]["id"].as_str(), got[10]["event_id"].as_str()), (Some("resp_1"), Some("event_11")));
    assert!(c.agent_latencies.is_empty(), "no audio, no latency sample");
}

#[test]
fn a_text_turn_is_echoed_as_text_in_an_audio_response_or_alone_in_a_text_one() {
    let mut c = conv();
    c.on_client_text(r#"{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"hello there"}]}}"#, at(0));
    c.on_client_text(r#"{"type":"response.create"}"#, at(0));
    assert!(c.next_agent_frame(at(0)).is_none(), "no audio for a text turn");
    let events = c.take_json();
    let delta = events.iter().find(|e| e["type"] == "response.audio_transcript.delta").expect("transcript");
    assert_eq!(delta["delta"], "hello there");
    let done = events.iter().find(|e| e["type"] == "response.done").expect("done at once: nothing to play");
    assert_eq!(done["response"]["output"][0]["content"][0], json!({"type": "audio", "transcript": "hello there"}));

    c.on_client_text(r#"{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"again"}]}}"#, at(0));
    c.on_client_text(r#"{"type":"response.create","response":{"modalities":["text"],"instructions":"Be brief."}}"#, at(0));
    assert!(c.next_agent_frame(at(0)).is_none());
    let t: Vec<Value> = c.take_json();
    let kinds: Vec<&str> = t.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"response.text.delta") && kinds.contains(&"response.text.done"), "{kinds:?}");
    assert!(!kinds.iter().any(|k| k.contains("audio")), "a text-only response has no audio events: {kinds:?}");
    let part = t.iter().find(|e| e["type"] == "response.content_part.added").unwrap();
    assert_eq!(part["part"]["type"], "text");
    let done = t.iter().find(|e| e["type"] == "response.done").unwrap();
    assert_eq!(done["response"]["output"][0]["content"][0], json!({"type": "text", "text": "again"}));
}

#[test]
fn a_text_only_answer_to_a_spoken_turn_drops_its_audio() {
    let mut c = conv();
    c.on_client_text(r#"{"type":"session.update","session":{"turn_detection":null}}"#, at(0));
    c.on_client_text(r#"{"type":"input_audio_buffer.commit"}"#, at(0));
    c.on_client_text(r#"{"type":"response.create","response":{"output_modalities":["text"]}}"#, at(0));
    c.on_media(MediaEvent::Committed { audio_end: AudioTime::from_ms(1000) }, at(0));
    assert!(c.next_agent_frame(at(0)).is_none(), "the echo's audio is not played");
    let t = c.take_json();
    let delta = t.iter().find(|e| e["type"] == "response.text.delta").expect("text");
    assert_eq!(delta["delta"], "[echo 1.0 s]");
    assert_eq!(t.last().unwrap()["type"], "response.done");
}

#[test]
fn a_text_only_session_answers_every_response_with_text_unless_one_asks_for_audio() {
    let mut c = conv();
    c.on_client_text(r#"{"type":"session.update","session":{"type":"realtime","output_modalities":["text"]}}"#, at(0));
    c.on_client_text(r#"{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}}"#, at(0));
    c.on_client_text(r#"{"type":"response.create"}"#, at(0));
    let _ = c.next_agent_frame(at(0));
    let kinds: Vec<String> = types(&mut c);
    assert!(kinds.contains(&"response.text.delta".to_string()) && !kinds.iter().any(|k| k.contains("audio")), "{kinds:?}");
    c.on_client_text(r#"{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"again"}]}}"#, at(0));
    c.on_client_text(r#"{"type":"response.create","response":{"output_modalities":["audio"]}}"#, at(0));
    let _ = c.next_agent_frame(at(0));
    assert!(types(&mut c).contains(&"response.audio_transcript.delta".to_string()), "this response asked for audio");
}
