//! The conversation as lines of text, one per event worth a person's attention: what the
//! server heard (speech starts and stops, your words once transcribed), what the agent said,
//! barge-ins and errors. Streaming deltas and bookkeeping events are left out. This is the view
//! without a terminal (a pipe, a log, the tests); the live view draws from the same lines.

use serde_json::Value;

/// The line for a server event, or `None` for events not shown.
pub fn line(event: &Value) -> Option<String> {
    let kind = event["type"].as_str()?;
    let text = |field: &str| event[field].as_str().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    Some(match kind {
        "session.created" => {
            let s = &event["session"];
            let agent = s["agent"].as_str().unwrap_or("?");
            format!("connected: agent {agent}, session {}", s["id"].as_str().unwrap_or("?"))
        }
        "input_audio_buffer.speech_started" => "you: speaking…".into(),
        "input_audio_buffer.speech_stopped" => "you: stopped".into(),
        "input_audio_buffer.committed" => "you: turn sent".into(),
        "conversation.item.input_audio_transcription.completed" => format!("you said: {}", text("transcript")?),
        "response.created" => "agent: answering…".into(),
        "response.audio_transcript.done" | "response.output_audio_transcript.done" => format!("agent said: {}", text("transcript")?),
        "response.text.done" | "response.output_text.done" => format!("agent wrote: {}", text("text")?),
        "response.done" => {
            let r = &event["response"];
            match r["status"].as_str() {
                Some("completed") | None => "agent: done".into(),
                Some("cancelled") => "agent: cut off (barge-in)".into(),
                Some(other) => format!("agent: {other}"),
            }
        }
        "response.function_call_arguments.done" => {
            format!("agent calls {}({})", text("name").unwrap_or_default(), text("arguments").unwrap_or_default())
        }
        "error" => {
            let e = &event["error"];
            format!("error {}: {}", e["code"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or(""))
        }
        // Rooms (PROTOCOL.md §4).
        "room.joined" => {
            let others: Vec<&str> = event["participants"]
                .as_array()
                .map(|p| p.iter().filter_map(|p| p["identity"].as_str()).filter(|i| Some(*i) != event["identity"].as_str()).collect())
                .unwrap_or_default();
            let with = if others.is_empty() { "nobody else yet".to_string() } else { others.join(", ") };
            format!("joined {} as {}: {with}", event["room"].as_str().unwrap_or("?"), event["identity"].as_str().unwrap_or("?"))
        }
        "participant.joined" => format!("{} joined", event["participant"]["identity"].as_str().unwrap_or("?")),
        "participant.left" => format!("{} left", event["identity"].as_str().unwrap_or("?")),
        "active_speakers" => {
            let names: Vec<&str> = event["speakers"].as_array()?.iter().filter_map(|s| s["identity"].as_str()).collect();
            if names.is_empty() { "nobody speaking".into() } else { format!("speaking: {}", names.join(", ")) }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_read_as_a_conversation_and_deltas_are_left_out() {
        let shown = |v: Value| line(&v);
        assert_eq!(
            shown(json!({"type": "session.created", "session": {"id": "sess_1", "agent": "echo"}})).as_deref(),
            Some("connected: agent echo, session sess_1")
        );
        assert_eq!(shown(json!({"type": "input_audio_buffer.speech_started"})).as_deref(), Some("you: speaking…"));
        assert_eq!(
            shown(json!({"type": "conversation.item.input_audio_transcription.completed", "transcript": " hello there "})).as_deref(),
            Some("you said: hello there")
        );
        assert_eq!(shown(json!({"type": "conversation.item.input_audio_transcription.completed", "transcript": ""})), None);
        assert_eq!(shown(json!({"type": "response.output_audio_transcript.done", "transcript": "hi"})).as_deref(), Some("agent said: hi"));
        assert_eq!(
            shown(json!({"type": "response.done", "response": {"status": "cancelled"}})).as_deref(),
            Some("agent: cut off (barge-in)")
        );
        assert_eq!(
            shown(json!({"type": "error", "error": {"code": "invalid_event", "message": "no"}})).as_deref(),
            Some("error invalid_event: no")
        );
        assert_eq!(shown(json!({"type": "response.output_audio.delta", "delta": "AAAA"})), None);
        assert_eq!(shown(json!({"type": "rate_limits.updated"})), None);
        assert_eq!(shown(json!({"no": "type"})), None);
        let joined = json!({"type": "room.joined", "room": "standup", "identity": "me",
            "participants": [{"identity": "me"}, {"identity": "ann"}]});
        assert_eq!(shown(joined).as_deref(), Some("joined standup as me: ann"));
        assert_eq!(
            shown(json!({"type": "active_speakers", "speakers": [{"identity": "ann"}, {"identity": "bo"}]})).as_deref(),
            Some("speaking: ann, bo")
        );
    }
}
