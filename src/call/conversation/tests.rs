//! The response lifecycle and client-event handling, fed by hand (no audio thread, no network).

use super::*;
use crate::agent::EchoAgent;

fn conv() -> Conversation {
    let mut c = Conversation::new(Dialect::Beta, "sess_x".into(), SessionConfig::default(), Box::new(EchoAgent::new()));
    for i in 0..100u64 {
        c.on_caller_audio(i * 20, &[1000; voxrelay_media::SAMPLES_24K]);
    }
    c
}

fn types(c: &mut Conversation) -> Vec<String> {
    c.take_json().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
}

#[test]
fn committed_turn_starts_a_response_that_completes_after_playback() {
    let mut c = conv();
    c.on_media(MediaEvent::SpeechStarted { audio_start_ms: 200 });
    c.on_media(MediaEvent::SpeechStopped { audio_end_ms: 600 });
    c.on_media(MediaEvent::Committed { audio_end_ms: 600 });
    let t = types(&mut c);
    assert!(t.contains(&"response.created".to_string()), "{t:?}");
    let mut frames = 0;
    while let Some(f) = c.next_agent_frame() {
        if let AgentFrame::End { response } = f {
            assert_eq!(response, 1);
            break;
        }
        frames += 1;
    }
    assert_eq!(frames, 20);
    assert!(types(&mut c).contains(&"response.audio_transcript.delta".to_string()));
    c.on_media(MediaEvent::PlaybackStarted { response: 1 });
    c.on_media(MediaEvent::PlaybackFinished { response: 1, played_ms: 400 });
    let t = types(&mut c);
    assert_eq!(t.last().unwrap(), "response.done");
    assert!(t.contains(&"output_audio_buffer.stopped".to_string()));
}

#[test]
fn speech_during_a_response_cancels_it() {
    let mut c = conv();
    c.on_media(MediaEvent::SpeechStarted { audio_start_ms: 200 });
    c.on_media(MediaEvent::Committed { audio_end_ms: 600 });
    let _ = c.next_agent_frame();
    assert!(c.on_egress_frame(true));
    c.out.clear();
    c.on_media(MediaEvent::SpeechStarted { audio_start_ms: 900 });
    let events = c.take_json();
    let done = events.iter().find(|e| e["type"] == "response.done").unwrap();
    assert_eq!(done["response"]["status"], "cancelled");
    let trunc = events.iter().find(|e| e["type"] == "conversation.item.truncated").unwrap();
    assert_eq!(trunc["audio_end_ms"], 20);
    assert!(matches!(c.controls.last(), Some(Control::CancelResponse(1))));
    assert!(!c.on_egress_frame(true), "stale voiced frames are dropped after a cancel");
}

#[test]
fn response_create_right_after_a_manual_commit_answers_that_turn() {
    let mut c = conv();
    c.on_client_text(r#"{"type":"session.update","session":{"turn_detection":null}}"#);
    c.on_client_text(r#"{"type":"input_audio_buffer.commit"}"#);
    c.on_client_text(r#"{"type":"response.create"}"#);
    assert!(!types(&mut c).contains(&"response.created".to_string()), "waits for the worker's commit");
    c.on_media(MediaEvent::Committed { audio_end_ms: 2000 });
    let t = types(&mut c);
    let (committed, created) = (t.iter().position(|x| x == "input_audio_buffer.committed"), t.iter().position(|x| x == "response.created"));
    assert!(committed.is_some() && created > committed, "{t:?}");
    assert!(matches!(c.next_agent_frame(), Some(AgentFrame::Audio { response: 1, .. })));
    let events = c.take_json();
    let delta = events.iter().find(|e| e["type"] == "response.audio_transcript.delta").expect("transcript");
    assert_eq!(delta["delta"], "[echo 2.0 s]", "the echo covers the committed 2 s");
}

#[test]
fn with_marks_a_cancel_truncates_at_what_the_caller_heard_and_flushes_the_transport() {
    let heard = Arc::new(AtomicU64::new(0));
    let mut c = conv().with_heard(heard.clone());
    c.on_media(MediaEvent::SpeechStarted { audio_start_ms: 200 });
    c.on_media(MediaEvent::Committed { audio_end_ms: 600 });
    for _ in 0..10 {
        let _ = c.next_agent_frame();
        assert!(c.on_egress_frame(true));
    }
    // 10 frames sent, marks came back for 4 of them.
    heard.store(4, Ordering::Relaxed);
    c.out.clear();
    c.on_media(MediaEvent::SpeechStarted { audio_start_ms: 900 });
    let events = c.take_json();
    let trunc = events.iter().find(|e| e["type"] == "conversation.item.truncated").unwrap();
    assert_eq!(trunc["audio_end_ms"], 80);
    assert!(c.flush_transport);
    c.on_dtmf('#');
    let out = c.take_json();
    assert_eq!(out[0]["type"], "input_audio_buffer.dtmf_event_received");
    assert_eq!(out[0]["event"], "#");
    // The digit joins the conversation as a user text item (what the agent is given).
    assert_eq!(out[1]["type"], "conversation.item.created");
    assert_eq!(out[1]["item"]["role"], "user");
    assert_eq!(out[1]["item"]["content"][0]["text"], super::dtmf_text('#'));
}

#[test]
fn bad_client_events_answer_with_error_events() {
    let mut c = conv();
    c.on_client_text("{oops");
    c.on_client_text(r#"{"type":"response.cancel","event_id":"ev1"}"#);
    c.on_client_text(r#"{"type":"session.update","session":{"turn_detection":{"threshold":7}}}"#);
    let out = c.take_json();
    let codes: Vec<String> = out.iter().map(|e| e["error"]["code"].as_str().unwrap().to_string()).collect();
    assert_eq!(codes, ["invalid_json", "response_cancel_not_active", "invalid_turn_detection"]);
    assert_eq!(out[1]["error"]["event_id"], "ev1");
}
