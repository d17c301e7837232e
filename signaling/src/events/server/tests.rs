//! Each event family written out, compared with the JSON the call emitted before these types
//! existed (the `json!` literals of `call/conversation.rs` and `call/tools.rs`, stamped the way
//! `server_event` stamped them): field sets and values must be the same, in both dialects.

use serde_json::{Value, json};

use super::*;
use crate::events::items::{CancelReason, ItemStatus, ResponseError, ResponseStatus, StatusDetails};

/// What the old `server_event(dialect, beta_type, body)` produced, with a fixed event id; in GA,
/// with the one change made since: an assistant message's `audio` content is `output_audio`
/// (GA's name; `ga_names_assistant_content_output_audio_and_output_text` tests it alone).
fn before(dialect: Dialect, beta_type: &str, body: Value) -> Value {
    let mut body = body;
    if dialect == Dialect::Ga {
        rename_assistant_audio(&mut body);
    }
    let mut map = body.as_object().cloned().expect("bodies are objects");
    map.insert("type".into(), json!(dialect.name(beta_type)));
    map.insert("event_id".into(), json!("event_7"));
    Value::Object(map)
}

/// Asserts that `event` writes out as `beta_type` + `body` did, in both dialects.
fn same(event: ServerEvent, beta_type: &str, body: Value) {
    for dialect in [Dialect::Beta, Dialect::Ga] {
        let text = event.to_json(dialect, "event_7");
        let now: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(now, before(dialect, beta_type, body.clone()), "{dialect:?} {beta_type}");
    }
}

/// Every assistant message inside `v`: content `audio` -> `output_audio`.
fn rename_assistant_audio(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("role") == Some(&json!("assistant")) {
                for part in map.get_mut("content").and_then(Value::as_array_mut).into_iter().flatten() {
                    if part["type"] == "audio" {
                        part["type"] = json!("output_audio");
                    }
                }
            }
            map.values_mut().for_each(rename_assistant_audio);
        }
        Value::Array(items) => items.iter_mut().for_each(rename_assistant_audio),
        _ => {}
    }
}

fn at() -> PartRef {
    PartRef { response_id: "resp_1".into(), item_id: "item_2".into(), output_index: 0, content_index: 0 }
}

fn part_ids() -> Value {
    json!({"response_id": "resp_1", "item_id": "item_2", "output_index": 0, "content_index": 0})
}

#[test]
fn session_events_carry_the_session_object_as_given() {
    let session = json!({"id": "sess_1", "object": "realtime.session", "turn_detection": null, "tools": []});
    same(ServerEvent::SessionCreated { session: session.clone() }, "session.created", json!({"session": session}));
    same(ServerEvent::SessionUpdated { session: session.clone() }, "session.updated", json!({"session": session}));
}

#[test]
fn input_audio_buffer_events() {
    same(
        ServerEvent::SpeechStarted { audio_start_ms: 200, item_id: "item_1".into() },
        "input_audio_buffer.speech_started",
        json!({"audio_start_ms": 200, "item_id": "item_1"}),
    );
    for item_id in [Some("item_1".to_string()), None] {
        same(
            ServerEvent::SpeechStopped { audio_end_ms: 600, item_id: item_id.clone() },
            "input_audio_buffer.speech_stopped",
            json!({"audio_end_ms": 600, "item_id": item_id}),
        );
    }
    for previous in [Some("item_0".to_string()), None] {
        same(
            ServerEvent::InputCommitted { previous_item_id: previous.clone(), item_id: "item_1".into() },
            "input_audio_buffer.committed",
            json!({"previous_item_id": previous, "item_id": "item_1"}),
        );
    }
    same(ServerEvent::InputCleared, "input_audio_buffer.cleared", json!({}));
    same(
        ServerEvent::DtmfReceived { event: "#".into(), received_at: 1_700_000_000 },
        "input_audio_buffer.dtmf_event_received",
        json!({"event": "#", "received_at": 1_700_000_000u64}),
    );
}

#[test]
fn conversation_item_events() {
    let user_text = Item::user_text("item_1", "hello");
    same(
        ServerEvent::ItemCreated { previous_item_id: None, item: user_text },
        "conversation.item.created",
        json!({"previous_item_id": null, "item": {"id": "item_1", "object": "realtime.item", "type": "message",
            "status": "completed", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}}),
    );
    same(
        ServerEvent::ItemCreated { previous_item_id: Some("item_1".into()), item: Item::user_audio("item_2") },
        "conversation.item.created",
        json!({"previous_item_id": "item_1", "item": {
            "id": "item_2", "object": "realtime.item", "type": "message", "status": "completed", "role": "user",
            "content": [{"type": "input_audio", "transcript": null}],
        }}),
    );
    same(
        ServerEvent::ItemCreated {
            previous_item_id: Some("item_2".into()),
            item: Item::assistant("item_3", ItemStatus::InProgress, vec![]),
        },
        "conversation.item.created",
        json!({"previous_item_id": "item_2", "item": {"id": "item_3", "object": "realtime.item", "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
    );
    same(
        ServerEvent::ItemCreated {
            previous_item_id: Some("item_3".into()),
            item: Item::function_call("item_4", ItemStatus::InProgress, "call_a", "get_weather", ""),
        },
        "conversation.item.created",
        json!({"previous_item_id": "item_3", "item": {"id": "item_4", "object": "realtime.item", "type": "function_call", "status": "in_progress",
            "call_id": "call_a", "name": "get_weather", "arguments": ""}}),
    );
    same(
        ServerEvent::ItemCreated {
            previous_item_id: Some("item_4".into()),
            item: Item::function_call_output("item_5", "call_a", r#"{"t":21}"#),
        },
        "conversation.item.created",
        json!({"previous_item_id": "item_4", "item":
            {"id": "item_5", "object": "realtime.item", "type": "function_call_output", "call_id": "call_a", "output": r#"{"t":21}"#}}),
    );
    same(
        ServerEvent::InputTranscriptionCompleted { item_id: "item_2".into(), content_index: 0, transcript: "hi there".into() },
        "conversation.item.input_audio_transcription.completed",
        json!({"item_id": "item_2", "content_index": 0, "transcript": "hi there"}),
    );
    same(
        ServerEvent::ItemTruncated { item_id: "item_3".into(), content_index: 0, audio_end_ms: 80 },
        "conversation.item.truncated",
        json!({"item_id": "item_3", "content_index": 0, "audio_end_ms": 80}),
    );
}

#[test]
fn response_lifecycle_events() {
    same(
        ServerEvent::ResponseCreated { response: Response::in_progress("resp_1") },
        "response.created",
        json!({"response": {"id": "resp_1", "object": "realtime.response", "status": "in_progress", "status_details": null, "output": [], "usage": null}}),
    );
    let started = Item::assistant("item_2", ItemStatus::InProgress, vec![]);
    let started_json =
        json!({"id": "item_2", "object": "realtime.item", "type": "message", "status": "in_progress", "role": "assistant", "content": []});
    same(
        ServerEvent::OutputItemAdded { response_id: "resp_1".into(), output_index: 0, item: started },
        "response.output_item.added",
        json!({"response_id": "resp_1", "output_index": 0, "item": started_json}),
    );
    same(
        ServerEvent::ContentPartAdded { at: at(), part: ContentPart::Audio { transcript: String::new() } },
        "response.content_part.added",
        json!({"response_id": "resp_1", "item_id": "item_2", "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}}),
    );
    let mut delta = part_ids();
    delta["delta"] = json!("[echo 0.4 s]");
    same(ServerEvent::AudioTranscriptDelta { at: at(), delta: "[echo 0.4 s]".into() }, "response.audio_transcript.delta", delta);
    same(ServerEvent::AudioDone { at: at() }, "response.audio.done", part_ids());
    let mut done = part_ids();
    done["transcript"] = json!("[echo 0.4 s]");
    same(ServerEvent::AudioTranscriptDone { at: at(), transcript: "[echo 0.4 s]".into() }, "response.audio_transcript.done", done);
    let mut part = part_ids();
    part["part"] = json!({"type": "audio", "transcript": "[echo 0.4 s]"});
    same(
        ServerEvent::ContentPartDone { at: at(), part: ContentPart::Audio { transcript: "[echo 0.4 s]".into() } },
        "response.content_part.done",
        part,
    );
    for (status, wire) in [(ItemStatus::Completed, "completed"), (ItemStatus::Incomplete, "incomplete")] {
        let item = Item::assistant("item_2", status, vec![ContentPart::Audio { transcript: "[echo 0.4 s]".into() }]);
        same(
            ServerEvent::OutputItemDone { response_id: "resp_1".into(), output_index: 0, item },
            "response.output_item.done",
            json!({"response_id": "resp_1", "output_index": 0, "item": {"id": "item_2", "object": "realtime.item", "type": "message", "status": wire, "role": "assistant",
                "content": [{"type": "audio", "transcript": "[echo 0.4 s]"}]}}),
        );
    }
}

#[test]
fn response_done_in_each_status() {
    let message = |status| Item::assistant("item_2", status, vec![ContentPart::Audio { transcript: "hi".into() }]);
    let message_json = |status: &str| {
        json!({"id": "item_2", "object": "realtime.item", "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "audio", "transcript": "hi"}]})
    };
    let call = Item::function_call("item_3", ItemStatus::Completed, "call_a", "f", "{}");
    let call_json = json!({"id": "item_3", "object": "realtime.item", "type": "function_call", "status": "completed",
        "call_id": "call_a", "name": "f", "arguments": "{}"});

    let completed = Response::new("resp_1", ResponseStatus::Completed, None, vec![message(ItemStatus::Completed), call]);
    same(
        ServerEvent::ResponseDone { response: completed },
        "response.done",
        json!({"response": {"id": "resp_1", "object": "realtime.response", "status": "completed", "status_details": null,
            "output": [message_json("completed"), call_json], "usage": null}}),
    );

    let error = ResponseError { kind: ErrorKind::ServerError, code: "provider_unavailable".into(), message: "down".into() };
    let failed =
        Response::new("resp_1", ResponseStatus::Failed, Some(StatusDetails::Failed { error }), vec![message(ItemStatus::Incomplete)]);
    let (code, message_text) = ("provider_unavailable", "down");
    same(
        ServerEvent::ResponseDone { response: failed },
        "response.done",
        json!({"response": {"id": "resp_1", "object": "realtime.response", "status": "failed",
            "status_details": json!({"type": "failed", "error": {"type": "server_error", "code": code, "message": message_text}}),
            "output": [message_json("incomplete")], "usage": null}}),
    );

    for (reason, wire) in [
        (CancelReason::TurnDetected, "turn_detected"),
        (CancelReason::ClientCancelled, "client_cancelled"),
        (CancelReason::CallEnded, "call_ended"),
    ] {
        let details = Some(StatusDetails::Cancelled { reason });
        let cancelled = Response::new("resp_1", ResponseStatus::Cancelled, details, vec![message(ItemStatus::Incomplete)]);
        same(
            ServerEvent::ResponseDone { response: cancelled },
            "response.done",
            json!({"response": {"id": "resp_1", "object": "realtime.response", "status": "cancelled",
                "status_details": {"type": "cancelled", "reason": wire}, "output": [message_json("incomplete")], "usage": null}}),
        );
    }
}

#[test]
fn function_call_events() {
    let call = || CallRef { response_id: "resp_1".into(), item_id: "item_4".into(), output_index: 1, call_id: "call_a".into() };
    let ids = json!({"response_id": "resp_1", "item_id": "item_4", "output_index": 1, "call_id": "call_a"});
    let arguments = r#"{"city":"Oslo"}"#;
    let mut delta = ids.clone();
    delta["delta"] = json!(arguments);
    same(
        ServerEvent::FunctionCallArgumentsDelta { call: call(), delta: arguments.into() },
        "response.function_call_arguments.delta",
        delta,
    );
    let mut args_done = ids;
    args_done["name"] = json!("get_weather");
    args_done["arguments"] = json!(arguments);
    same(
        ServerEvent::FunctionCallArgumentsDone { call: call(), name: "get_weather".into(), arguments: arguments.into() },
        "response.function_call_arguments.done",
        args_done,
    );
    let done = Item::function_call("item_4", ItemStatus::Completed, "call_a", "get_weather", arguments);
    same(
        ServerEvent::OutputItemDone { response_id: "resp_1".into(), output_index: 1, item: done },
        "response.output_item.done",
        json!({"response_id": "resp_1", "output_index": 1, "item": {"id": "item_4", "object": "realtime.item", "type": "function_call",
            "status": "completed", "call_id": "call_a", "name": "get_weather", "arguments": arguments}}),
    );
}

#[test]
fn output_audio_buffer_events() {
    same(ServerEvent::OutputAudioStarted { response_id: "resp_1".into() }, "output_audio_buffer.started", json!({"response_id": "resp_1"}));
    same(ServerEvent::OutputAudioStopped { response_id: "resp_1".into() }, "output_audio_buffer.stopped", json!({"response_id": "resp_1"}));
    same(
        ServerEvent::OutputAudioCleared { response_id: Some("resp_1".into()) },
        "output_audio_buffer.cleared",
        json!({"response_id": "resp_1"}),
    );
    same(ServerEvent::OutputAudioCleared { response_id: None }, "output_audio_buffer.cleared", json!({"response_id": null}));
}

#[test]
fn errors_and_rate_limits() {
    let (code, message) = ("response_cancel_not_active", "there is no active response to cancel");
    for event_id in [Some("ev1".to_string()), None] {
        same(
            ServerEvent::invalid_request(code, message, event_id.clone()),
            "error",
            json!({"error": {"type": "invalid_request_error", "code": code, "message": message, "param": null, "event_id": event_id}}),
        );
    }
    let (code, message) = ("provider_unavailable", "the provider closed the connection");
    same(
        ServerEvent::server_error(code, message),
        "error",
        json!({"error": {"type": "server_error", "code": code, "message": message, "param": null, "event_id": null}}),
    );
    let limits = json!([{"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 0.06}]);
    same(ServerEvent::RateLimitsUpdated { rate_limits: limits.clone() }, "rate_limits.updated", json!({"rate_limits": limits}));
}

#[test]
fn ga_calls_get_ga_names_and_every_event_its_id() {
    let stamped = StampedEvent { dialect: Dialect::Ga, event_id: "event_3".into(), event: ServerEvent::AudioDone { at: at() } };
    let v: Value = serde_json::from_str(&stamped.to_json()).unwrap();
    assert_eq!((v["type"].as_str(), v["event_id"].as_str()), (Some("response.output_audio.done"), Some("event_3")));
    let created = ServerEvent::ItemCreated { previous_item_id: None, item: Item::user_text("item_1", "x") };
    let v: Value = serde_json::from_str(&created.to_json(Dialect::Ga, "event_4")).unwrap();
    assert_eq!(v["type"], "conversation.item.added");
    let v: Value = serde_json::from_str(&created.to_json(Dialect::Beta, "event_4")).unwrap();
    assert_eq!(v["type"], "conversation.item.created");
}

#[test]
fn ga_names_assistant_content_output_audio_and_output_text() {
    let item = Item::assistant("item_2", ItemStatus::Completed, vec![ContentPart::Audio { transcript: "hi".into() }]);
    let added = ServerEvent::OutputItemDone { response_id: "resp_1".into(), output_index: 0, item: item.clone() };
    let ga: Value = serde_json::from_str(&added.to_json(Dialect::Ga, "e")).unwrap();
    assert_eq!(ga["item"]["content"][0]["type"], "output_audio");
    let beta: Value = serde_json::from_str(&added.to_json(Dialect::Beta, "e")).unwrap();
    assert_eq!(beta["item"]["content"][0]["type"], "audio");
    let text = Item::assistant("item_3", ItemStatus::Completed, vec![ContentPart::Text { text: "hi".into() }]);
    let done = ServerEvent::ResponseDone { response: Response::new("resp_1", ResponseStatus::Completed, None, vec![text]) };
    let ga: Value = serde_json::from_str(&done.to_json(Dialect::Ga, "e")).unwrap();
    assert_eq!(ga["response"]["output"][0]["content"][0]["type"], "output_text");
    // The part of a content-part event keeps its short name; user content is untouched.
    let part = ServerEvent::ContentPartAdded { at: at(), part: ContentPart::Audio { transcript: String::new() } };
    assert_eq!(serde_json::from_str::<Value>(&part.to_json(Dialect::Ga, "e")).unwrap()["part"]["type"], "audio");
    let user = ServerEvent::ItemCreated { previous_item_id: None, item: Item::user_text("item_1", "x") };
    assert_eq!(serde_json::from_str::<Value>(&user.to_json(Dialect::Ga, "e")).unwrap()["item"]["content"][0]["type"], "input_text");
}
