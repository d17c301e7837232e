//! The session's audio settings: turn detection (server VAD parameters, push-to-talk) and the
//! audio formats of events, with the checks that make a bad value a 400 at the edge.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;

/// Limits on turn detection values: wide enough for any real use, narrow enough that a typo
/// (milliseconds given as seconds * 1000 * 1000) cannot stall a turn for hours.
pub const MAX_TURN_MS: u32 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnDetection {
    /// Speech probability at or above which a frame counts as voiced, 0..1.
    pub threshold: f32,
    /// Voiced audio needed before speech_started, ms.
    pub prefix_padding_ms: u32,
    /// Silence needed before speech_stopped and the commit, ms.
    pub silence_duration_ms: u32,
    pub create_response: bool,
    pub interrupt_response: bool,
}

impl Default for TurnDetection {
    fn default() -> Self {
        Self { threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500, create_response: true, interrupt_response: true }
    }
}

impl TurnDetection {
    pub fn to_json(&self) -> Value {
        json!({
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        })
    }
}

const SEMANTIC_VAD_HINT: &str = "use \"server_vad\" and tune silence_duration_ms, or null for push-to-talk";

/// 400 `unsupported_value`: a valid OpenAI setting voxrelay does not implement (never replaced
/// by something else without a word).
pub(super) fn unsupported(what: &str, instead: &str) -> ApiError {
    ApiError::bad_request("unsupported_value", format!("{what} is not supported by voxrelay: {instead}"))
}

/// A partial `turn_detection` object: missing fields keep their current value.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnDetectionPatch {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub threshold: Option<f32>,
    pub prefix_padding_ms: Option<u32>,
    pub silence_duration_ms: Option<u32>,
    pub create_response: Option<bool>,
    pub interrupt_response: Option<bool>,
    /// `semantic_vad`'s setting: refused with it (see `apply`).
    pub eagerness: Option<String>,
    pub idle_timeout_ms: Option<Value>,
}

impl TurnDetectionPatch {
    pub fn apply(&self, base: Option<TurnDetection>) -> Result<TurnDetection, ApiError> {
        match self.kind.as_deref() {
            None | Some("server_vad") => {}
            // Refused, not quietly replaced: a client asking for a model-based end of turn must
            // learn it gets silence-based detection only if it asks for that.
            Some("semantic_vad") => return Err(unsupported("turn_detection.type \"semantic_vad\"", SEMANTIC_VAD_HINT)),
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_turn_detection",
                    format!("turn_detection.type must be \"server_vad\" (or null for push-to-talk), got {other:?}"),
                ));
            }
        }
        if self.eagerness.is_some() {
            return Err(unsupported("turn_detection.eagerness (a semantic_vad setting)", SEMANTIC_VAD_HINT));
        }
        let mut td = base.unwrap_or_default();
        if let Some(t) = self.threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(ApiError::bad_request("invalid_turn_detection", "turn_detection.threshold must be within 0..1"));
            }
            td.threshold = t;
        }
        for (value, name, slot) in [
            (self.prefix_padding_ms, "prefix_padding_ms", &mut td.prefix_padding_ms),
            (self.silence_duration_ms, "silence_duration_ms", &mut td.silence_duration_ms),
        ] {
            if let Some(v) = value {
                if v > MAX_TURN_MS {
                    return Err(ApiError::bad_request(
                        "invalid_turn_detection",
                        format!("turn_detection.{name} must be at most {MAX_TURN_MS} ms"),
                    ));
                }
                *slot = v;
            }
        }
        if let Some(v) = self.create_response {
            td.create_response = v;
        }
        if let Some(v) = self.interrupt_response {
            td.interrupt_response = v;
        }
        Ok(td)
    }
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`): for
/// `turn_detection`, null means push-to-talk while absent means "keep the default".
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// An audio format of the Realtime API (`input_audio_format`/`output_audio_format`, GA
/// `audio.*.format`). It matters where audio travels in events (the WebSocket transport); over
/// WebRTC the track's codec is the format and this is only reported back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AudioFormat {
    /// 16-bit little-endian PCM, 24 kHz mono.
    #[default]
    #[serde(rename = "pcm16")]
    Pcm16,
    #[serde(rename = "g711_ulaw")]
    G711Ulaw,
    #[serde(rename = "g711_alaw")]
    G711Alaw,
}

impl AudioFormat {
    /// The beta name (`"pcm16"`, `"g711_ulaw"`, `"g711_alaw"`).
    pub fn parse_beta(name: &str, field: &str) -> Result<Self, ApiError> {
        match name {
            "pcm16" => Ok(AudioFormat::Pcm16),
            "g711_ulaw" => Ok(AudioFormat::G711Ulaw),
            "g711_alaw" => Ok(AudioFormat::G711Alaw),
            other => Err(ApiError::bad_request(
                "invalid_value",
                format!("{field} must be \"pcm16\", \"g711_ulaw\" or \"g711_alaw\", not {other:?}"),
            )),
        }
    }

    /// The GA object (`{"type": "audio/pcm", "rate": 24000}`, `{"type": "audio/pcmu"}`,
    /// `{"type": "audio/pcma"}`).
    pub fn parse_ga(format: &GaFormat, field: &str) -> Result<Self, ApiError> {
        match (format.kind.as_str(), format.rate) {
            ("audio/pcm", None | Some(24_000)) => Ok(AudioFormat::Pcm16),
            ("audio/pcm", Some(rate)) => Err(unsupported(&format!("{field}.rate {rate}"), "audio/pcm is 24000 Hz (OpenAI's only rate)")),
            ("audio/pcmu", _) => Ok(AudioFormat::G711Ulaw),
            ("audio/pcma", _) => Ok(AudioFormat::G711Alaw),
            (other, _) => Err(ApiError::bad_request(
                "invalid_value",
                format!("{field}.type must be \"audio/pcm\", \"audio/pcmu\" or \"audio/pcma\", not {other:?}"),
            )),
        }
    }

    pub fn ga_json(self) -> Value {
        match self {
            AudioFormat::Pcm16 => json!({"type": "audio/pcm", "rate": 24000}),
            AudioFormat::G711Ulaw => json!({"type": "audio/pcmu"}),
            AudioFormat::G711Alaw => json!({"type": "audio/pcma"}),
        }
    }
}

/// A GA audio format object.
#[derive(Clone, Debug, Deserialize)]
pub struct GaFormat {
    #[serde(rename = "type")]
    pub kind: String,
    pub rate: Option<u32>,
}
