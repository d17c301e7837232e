//! Wire types of PROTOCOL.md §1: the session settings a client asks for (beta and GA request
//! shapes), validated into one normalized `SessionConfig` that the engine uses. Validation lives
//! here so a bad value is a 400 at the edge (or an `error` event for `session.update`), never a
//! surprise deeper in.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::ids::ConversationId;

mod audio;
mod tools;

use audio::unsupported;
pub use audio::{AudioFormat, GaFormat, MAX_TURN_MS, TurnDetection, TurnDetectionPatch, nullable};
pub use tools::{MAX_TOOL_NAME, MAX_TOOLS, Tool, parse_tool_choice, parse_tools};

pub const DEFAULT_AGENT: &str = "echo";
pub const DEFAULT_VOICE: &str = "alloy";
pub const DEFAULT_MODEL: &str = "voxrelay-echo";

pub const MAX_INSTRUCTIONS_BYTES: usize = 32 * 1024;
/// The normalized settings of one voice session (also how a client secret's settings travel
/// between the nodes of a cluster).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionConfig {
    pub model: String,
    pub voice: String,
    pub instructions: String,
    pub modalities: Vec<String>,
    /// `None`: push-to-talk (the client commits turns itself).
    pub turn_detection: Option<TurnDetection>,
    pub input_audio_transcription: Option<Value>,
    pub agent: String,
    /// Functions the model may call; the client runs them.
    pub tools: Vec<Tool>,
    /// `"auto"`, `"none"`, `"required"` or `{"type":"function","name":...}` (validated).
    pub tool_choice: Value,
    /// What the client's `input_audio_buffer.append` carries (WebSocket sessions).
    pub input_audio_format: AudioFormat,
    /// What `response.audio.delta` carries (WebSocket sessions).
    pub output_audio_format: AudioFormat,
    /// voxrelay's own: seconds with nothing said (by the caller or the agent) before the call
    /// ends, and the longest the call may last. `None`: the server's; a session may lower the
    /// server's values, not raise them.
    pub idle_timeout_s: Option<u64>,
    pub max_call_duration_s: Option<u64>,
    /// voxrelay's own: the conversation this call continues (or begins).
    pub conversation: Option<ConversationId>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.into(),
            voice: DEFAULT_VOICE.into(),
            instructions: String::new(),
            modalities: vec!["audio".into(), "text".into()],
            turn_detection: Some(TurnDetection::default()),
            input_audio_transcription: None,
            agent: DEFAULT_AGENT.into(),
            tools: Vec::new(),
            tool_choice: json!("auto"),
            input_audio_format: AudioFormat::Pcm16,
            output_audio_format: AudioFormat::Pcm16,
            idle_timeout_s: None,
            max_call_duration_s: None,
            conversation: None,
        }
    }
}

impl SessionConfig {
    pub fn turn_detection_json(&self) -> Value {
        self.turn_detection.map(|t| t.to_json()).unwrap_or(Value::Null)
    }

    fn set_instructions(&mut self, text: Option<String>) -> Result<(), ApiError> {
        if let Some(text) = text {
            if text.len() > MAX_INSTRUCTIONS_BYTES {
                return Err(ApiError::bad_request(
                    "instructions_too_long",
                    format!("instructions must be at most {MAX_INSTRUCTIONS_BYTES} bytes"),
                ));
            }
            self.instructions = text;
        }
        Ok(())
    }

    /// `tools` replaces the list (as OpenAI does); a `tool_choice` must name a tool of the
    /// resulting list. Nothing changes unless both are valid.
    fn set_tools(&mut self, tools: Option<Vec<Value>>, choice: Option<Value>) -> Result<(), ApiError> {
        let tools = match tools {
            Some(t) => parse_tools(&t)?,
            None => self.tools.clone(),
        };
        let choice = match choice {
            Some(c) => parse_tool_choice(&c, &tools)?,
            // A forced function that no longer exists falls back to the default.
            None => parse_tool_choice(&self.tool_choice, &tools).unwrap_or_else(|_| json!("auto")),
        };
        self.tools = tools;
        self.tool_choice = choice;
        Ok(())
    }

    pub fn tools_json(&self) -> Value {
        Value::Array(self.tools.iter().map(Tool::to_json).collect())
    }

    fn set_turn(&mut self, td: Option<Option<TurnDetectionPatch>>) -> Result<(), ApiError> {
        match td {
            None => {}
            Some(None) => self.turn_detection = None,
            Some(Some(p)) => self.turn_detection = Some(p.apply(self.turn_detection)?),
        }
        Ok(())
    }

    /// Applies a beta-shaped body (`POST /v1/realtime/sessions`, and `session` of a beta
    /// `session.update`).
    pub fn apply_beta(&mut self, req: BetaSession) -> Result<(), ApiError> {
        if let Some(m) = req.model {
            self.model = m;
        }
        if let Some(v) = req.voice {
            self.voice = v;
        }
        if let Some(m) = req.modalities {
            if m.is_empty() || m.iter().any(|x| x != "audio" && x != "text") {
                return Err(ApiError::bad_request("invalid_modalities", "modalities must be a non-empty subset of [\"audio\", \"text\"]"));
            }
            self.modalities = m;
        }
        if let Some(t) = req.input_audio_transcription {
            self.input_audio_transcription = t;
        }
        if let Some(a) = req.agent {
            self.agent = a;
        }
        let input_format = req.input_audio_format.as_deref().map(|f| AudioFormat::parse_beta(f, "input_audio_format")).transpose()?;
        let output_format = req.output_audio_format.as_deref().map(|f| AudioFormat::parse_beta(f, "output_audio_format")).transpose()?;
        self.set_instructions(req.instructions)?;
        self.set_tools(req.tools, req.tool_choice)?;
        self.set_turn(req.turn_detection)?;
        self.input_audio_format = input_format.unwrap_or(self.input_audio_format);
        self.output_audio_format = output_format.unwrap_or(self.output_audio_format);
        self.set_conversation(req.conversation)?;
        self.set_call_limits(req.idle_timeout, req.max_call_duration)
    }

    fn set_conversation(&mut self, id: Option<String>) -> Result<(), ApiError> {
        if let Some(id) = id {
            self.conversation = Some(ConversationId::parse(&id)?);
        }
        Ok(())
    }

    /// `idle_timeout`/`max_call_duration` (seconds; `null` or absent: the server's).
    fn set_call_limits(&mut self, idle: Option<Option<u64>>, max: Option<Option<u64>>) -> Result<(), ApiError> {
        for (value, name, slot) in
            [(idle, "idle_timeout", &mut self.idle_timeout_s), (max, "max_call_duration", &mut self.max_call_duration_s)]
        {
            if let Some(v) = value {
                if v.is_some_and(|s| !(1..=MAX_CALL_LIMIT_S).contains(&s)) {
                    return Err(ApiError::bad_request(
                        "invalid_call_limit",
                        format!("{name} is in seconds, 1..={MAX_CALL_LIMIT_S} (or null for the server's)"),
                    ));
                }
                *slot = v;
            }
        }
        Ok(())
    }

    /// Applies a GA-shaped `session` object (`POST /v1/realtime/client_secrets`, GA
    /// `session.update`).
    pub fn apply_ga(&mut self, req: GaSession) -> Result<(), ApiError> {
        if let Some(kind) = req.kind.as_deref()
            && kind != "realtime"
        {
            return Err(ApiError::bad_request("invalid_session_type", "session.type must be \"realtime\""));
        }
        if let Some(m) = req.model {
            self.model = m;
        }
        if let Some(m) = req.output_modalities {
            // GA allows exactly one: ["audio"] (with its transcript) or ["text"].
            match m.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["audio"] => self.modalities = vec!["audio".into(), "text".into()],
                ["text"] => self.modalities = vec!["text".into()],
                _ => return Err(ApiError::bad_request("invalid_output_modalities", "output_modalities must be [\"audio\"] or [\"text\"]")),
            }
        }
        if let Some(a) = req.agent {
            self.agent = a;
        }
        self.set_instructions(req.instructions)?;
        self.set_tools(req.tools, req.tool_choice)?;
        if let Some(audio) = req.audio {
            if let Some(output) = audio.output {
                if let Some(f) = &output.format {
                    self.output_audio_format = AudioFormat::parse_ga(f, "audio.output.format")?;
                }
                if let Some(v) = output.voice {
                    self.voice = v;
                }
            }
            if let Some(input) = audio.input {
                if let Some(f) = &input.format {
                    self.input_audio_format = AudioFormat::parse_ga(f, "audio.input.format")?;
                }
                if input.noise_reduction.as_ref().is_some_and(|n| !n.is_null()) {
                    return Err(unsupported(
                        "audio.input.noise_reduction",
                        "send null or leave it out (browsers' noise suppression runs on the client)",
                    ));
                }
                if let Some(t) = input.transcription {
                    self.input_audio_transcription = t;
                }
                self.set_turn(input.turn_detection)?;
            }
        }
        self.set_conversation(req.conversation)?;
        self.set_call_limits(req.idle_timeout, req.max_call_duration)
    }

    /// The beta `realtime.session` object.
    pub fn beta_json(&self, id: &str) -> Value {
        self.with_common_fields(json!({
            "id": id,
            "object": "realtime.session",
            "model": self.model,
            "modalities": self.modalities,
            "instructions": self.instructions,
            "voice": self.voice,
            "input_audio_format": self.input_audio_format,
            "output_audio_format": self.output_audio_format,
            "input_audio_transcription": self.input_audio_transcription,
            "turn_detection": self.turn_detection_json(),
        }))
    }

    /// The GA `session` object.
    pub fn ga_json(&self, id: &str) -> Value {
        self.with_common_fields(json!({
            "type": "realtime",
            "id": id,
            "object": "realtime.session",
            "model": self.model,
            // GA names one output modality; audio comes with its transcript.
            "output_modalities": if self.modalities.iter().any(|m| m == "audio") { vec!["audio"] } else { vec!["text"] },
            "instructions": self.instructions,
            "audio": {
                "input": {
                    "format": self.input_audio_format.ga_json(),
                    "transcription": self.input_audio_transcription,
                    "turn_detection": self.turn_detection_json(),
                },
                "output": {"format": self.output_audio_format.ga_json(), "voice": self.voice},
            },
        }))
    }

    /// What both shapes carry alike: the tools, and voxrelay's own settings.
    fn with_common_fields(&self, mut session: Value) -> Value {
        session["tools"] = self.tools_json();
        session["tool_choice"] = self.tool_choice.clone();
        session["agent"] = json!(self.agent);
        session["idle_timeout"] = json!(self.idle_timeout_s);
        session["max_call_duration"] = json!(self.max_call_duration_s);
        session["conversation"] = json!(self.conversation);
        session
    }
}

/// The longest `idle_timeout`/`max_call_duration` a session may name: a day.
pub const MAX_CALL_LIMIT_S: u64 = 86_400;

#[derive(Debug, Default, Deserialize)]
pub struct BetaSession {
    pub model: Option<String>,
    pub voice: Option<String>,
    pub instructions: Option<String>,
    pub modalities: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub turn_detection: Option<Option<TurnDetectionPatch>>,
    #[serde(default, deserialize_with = "nullable")]
    pub input_audio_transcription: Option<Option<Value>>,
    pub agent: Option<String>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub input_audio_format: Option<String>,
    pub output_audio_format: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub idle_timeout: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_call_duration: Option<Option<u64>>,
    pub conversation: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GaSession {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub model: Option<String>,
    pub instructions: Option<String>,
    pub output_modalities: Option<Vec<String>>,
    pub audio: Option<GaAudio>,
    pub agent: Option<String>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub idle_timeout: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_call_duration: Option<Option<u64>>,
    pub conversation: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GaAudio {
    pub input: Option<GaAudioInput>,
    pub output: Option<GaAudioOutput>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GaAudioInput {
    #[serde(default, deserialize_with = "nullable")]
    pub turn_detection: Option<Option<TurnDetectionPatch>>,
    #[serde(default, deserialize_with = "nullable")]
    pub transcription: Option<Option<Value>>,
    /// Refused unless null (no noise reduction runs on input audio).
    #[serde(default)]
    pub noise_reduction: Option<Value>,
    pub format: Option<GaFormat>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GaAudioOutput {
    pub voice: Option<String>,
    pub format: Option<GaFormat>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ClientSecretRequest {
    pub expires_after: Option<ExpiresAfter>,
    pub session: Option<GaSession>,
}

#[derive(Debug, Deserialize)]
pub struct ExpiresAfter {
    pub anchor: Option<String>,
    pub seconds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_turn_detection_means_push_to_talk_and_absent_keeps_default() {
        let mut c = SessionConfig::default();
        c.apply_beta(serde_json::from_str(r#"{"voice":"x"}"#).unwrap()).unwrap();
        assert_eq!(c.turn_detection, Some(TurnDetection::default()));
        c.apply_beta(serde_json::from_str(r#"{"turn_detection":null}"#).unwrap()).unwrap();
        assert_eq!(c.turn_detection, None);
        c.apply_beta(serde_json::from_str(r#"{"turn_detection":{"silence_duration_ms":300}}"#).unwrap()).unwrap();
        assert_eq!(c.turn_detection.unwrap().silence_duration_ms, 300);
        assert_eq!(c.turn_detection.unwrap().prefix_padding_ms, 300);
    }

    #[test]
    fn out_of_range_threshold_is_rejected() {
        let mut c = SessionConfig::default();
        let err = c.apply_beta(serde_json::from_str(r#"{"turn_detection":{"threshold":1.5}}"#).unwrap()).unwrap_err();
        assert_eq!(err.code, "invalid_turn_detection");
    }

    #[test]
    fn tools_are_validated_echoed_and_replaced_whole() {
        let mut c = SessionConfig::default();
        let weather = r#"{"type":"function","name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}"#;
        c.apply_beta(serde_json::from_str(&format!(r#"{{"tools":[{weather}],"tool_choice":"required"}}"#)).unwrap()).unwrap();
        assert_eq!(c.tools[0].name, "get_weather");
        assert_eq!(c.beta_json("s")["tools"][0]["parameters"]["properties"]["city"]["type"], "string");
        assert_eq!(c.ga_json("s")["tool_choice"], "required");
        for (body, why) in [
            (r#"{"tools":[{"type":"code_interpreter"}]}"#, "type"),
            (r#"{"tools":[{"type":"function","name":"has space"}]}"#, "name"),
            (r#"{"tools":[{"type":"function","name":"f","parameters":"x"}]}"#, "parameters"),
            (r#"{"tools":[{"type":"function","name":"f"},{"type":"function","name":"f"}]}"#, "duplicate"),
            (r#"{"tools":"f"}"#, "not a list"),
            (r#"{"tool_choice":{"type":"function","name":"nope"}}"#, "choice"),
            (r#"{"tool_choice":"sometimes"}"#, "choice"),
        ] {
            let parsed: Result<BetaSession, _> = serde_json::from_str(body);
            if let Ok(s) = parsed {
                let before = c.clone();
                assert_eq!(c.apply_beta(s).unwrap_err().code, "invalid_value", "{why}");
                assert_eq!(c, before, "a refused update changes nothing ({why})");
            }
        }
        c.apply_beta(serde_json::from_str(r#"{"tools":[]}"#).unwrap()).unwrap();
        assert!(c.tools.is_empty());
        assert_eq!(c.tool_choice, "required");
    }

    #[test]
    fn ga_shape_sets_voice_and_turn() {
        let mut c = SessionConfig::default();
        let ga: GaSession = serde_json::from_str(
            r#"{"type":"realtime","audio":{"input":{"turn_detection":{"type":"server_vad","prefix_padding_ms":100}},"output":{"voice":"marin"}}}"#,
        )
        .unwrap();
        c.apply_ga(ga).unwrap();
        assert_eq!(c.voice, "marin");
        assert_eq!(c.turn_detection.unwrap().prefix_padding_ms, 100);
    }

    #[test]
    fn a_text_only_session_in_either_shape() {
        let mut c = SessionConfig::default();
        c.apply_ga(serde_json::from_str(r#"{"output_modalities":["text"]}"#).unwrap()).unwrap();
        assert_eq!(c.modalities, ["text"]);
        assert_eq!(c.ga_json("s")["output_modalities"], json!(["text"]));
        let mut b = SessionConfig::default();
        b.apply_beta(serde_json::from_str(r#"{"modalities":["text"]}"#).unwrap()).unwrap();
        assert_eq!(b.beta_json("s")["modalities"], json!(["text"]));
    }

    #[test]
    fn audio_formats_in_both_shapes() {
        let mut c = SessionConfig::default();
        c.apply_beta(serde_json::from_str(r#"{"input_audio_format":"g711_ulaw","output_audio_format":"g711_alaw"}"#).unwrap()).unwrap();
        assert_eq!((c.input_audio_format, c.output_audio_format), (AudioFormat::G711Ulaw, AudioFormat::G711Alaw));
        assert_eq!(c.beta_json("s")["input_audio_format"], "g711_ulaw");
        assert_eq!(c.ga_json("s")["audio"]["output"]["format"], json!({"type": "audio/pcma"}));
        let ga = r#"{"type":"realtime","audio":{"input":{"format":{"type":"audio/pcm","rate":24000}},"output":{"format":{"type":"audio/pcmu"}}}}"#;
        c.apply_ga(serde_json::from_str(ga).unwrap()).unwrap();
        assert_eq!((c.input_audio_format, c.output_audio_format), (AudioFormat::Pcm16, AudioFormat::G711Ulaw));
        let before = c.clone();
        let e = c.apply_beta(serde_json::from_str(r#"{"input_audio_format":"opus"}"#).unwrap()).unwrap_err();
        assert_eq!(e.code, "invalid_value");
        let e =
            c.apply_ga(serde_json::from_str(r#"{"audio":{"input":{"format":{"type":"audio/pcm","rate":16000}}}}"#).unwrap()).unwrap_err();
        assert_eq!(e.code, "unsupported_value");
        assert_eq!(c, before);
    }

    #[test]
    fn unsupported_settings_are_refused_by_name_never_replaced() {
        for (body, named) in [
            (r#"{"audio":{"input":{"turn_detection":{"type":"semantic_vad"}}}}"#, "semantic_vad"),
            (r#"{"audio":{"input":{"turn_detection":{"type":"server_vad","eagerness":"high"}}}}"#, "eagerness"),
            (r#"{"audio":{"input":{"noise_reduction":{"type":"near_field"}}}}"#, "noise_reduction"),
        ] {
            let mut c = SessionConfig::default();
            let e = c.apply_ga(serde_json::from_str(body).unwrap()).unwrap_err();
            assert_eq!((e.code, e.message.contains(named)), ("unsupported_value", true), "{body}: {}", e.message);
        }
        let beta: BetaSession = serde_json::from_str(r#"{"turn_detection":{"type":"semantic_vad","eagerness":"low"}}"#).unwrap();
        assert_eq!(SessionConfig::default().apply_beta(beta).unwrap_err().code, "unsupported_value");
        let mut c = SessionConfig::default();
        let e = c.apply_ga(serde_json::from_str(r#"{"output_modalities":["audio","text"]}"#).unwrap()).unwrap_err();
        assert_eq!(e.code, "invalid_output_modalities");
        c.apply_ga(serde_json::from_str(r#"{"output_modalities":["audio"],"audio":{"input":{"noise_reduction":null}}}"#).unwrap()).unwrap();
        assert_eq!(c.ga_json("s")["output_modalities"], serde_json::json!(["audio"]), "GA names one output modality");
    }
}
