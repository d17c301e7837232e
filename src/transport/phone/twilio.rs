//! The Twilio Media Streams dialect (bidirectional `<Connect><Stream>`): the JSON messages Twilio
//! sends (`connected`, `start`, `media`, `dtmf`, `mark`, `stop`) and the ones the server sends
//! back (`media`, `mark`, `clear`), as documented at
//! <https://www.twilio.com/docs/voice/media-streams/websocket-messages>.
//! Owns: parsing and validating one text message into a [`Inbound`] value, and formatting the
//! outbound messages byte for byte. Must never: touch sockets, sessions or audio beyond the
//! base64 payload bytes. Another carrier (Telnyx, Vonage) is one more file like this one.
//!
//! Twilio sends numbers as JSON strings (`"sequenceNumber": "3"`, `"timestamp": "5"`), except
//! `mediaFormat.sampleRate` and `.channels`, which are numbers; both are accepted either way.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::Value;
use voxrelay_media::G711_FRAME_BYTES;

/// The largest decoded `media` payload accepted: 6 frames of 20 ms (120 ms, the longest packet
/// the session codec takes). Twilio sends 160 bytes (20 ms); anything much larger is not a
/// phone line and is refused without touching the session.
pub const MAX_MEDIA_PAYLOAD_BYTES: usize = 6 * G711_FRAME_BYTES;

/// The stream's format, from `start.mediaFormat`; Twilio always sends mu-law, 8 kHz, mono.
pub const ENCODING_MULAW: &str = "audio/x-mulaw";

/// One message from Twilio, validated.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    Connected,
    Start(Start),
    Media(Media),
    Dtmf { digit: char },
    /// A mark the server sent came back: the audio before it has played (or was cleared).
    Mark { name: String },
    Stop,
}

#[derive(Debug, PartialEq)]
pub struct Start {
    pub stream_sid: String,
    pub call_sid: String,
    pub account_sid: String,
    pub tracks: Vec<String>,
    pub custom_parameters: BTreeMap<String, String>,
}

#[derive(Debug, PartialEq)]
pub struct Media {
    /// `sequenceNumber` of the message: counts every message Twilio sends (marks and DTMF too).
    pub sequence_number: u64,
    /// `media.chunk`: counts media messages from 1 without gaps, so the jitter buffer orders audio
    /// by it (falls back to `timestamp / 20 ms` when absent).
    pub chunk: u64,
    /// `media.timestamp`: ms of stream time where this chunk starts.
    pub timestamp_ms: u64,
    /// Decoded mu-law bytes, a whole number of 20 ms frames.
    pub payload: Vec<u8>,
}

/// Why a message was refused; `code` is stable (logged, sent to the call's event stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialectError {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> DialectError {
    DialectError { code, message: message.into() }
}

/// A number Twilio may send as a string or as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Num {
    Text(String),
    Int(u64),
}

impl Num {
    fn get(&self) -> Option<u64> {
        match self {
            Num::Text(s) => s.parse().ok(),
            Num::Int(n) => Some(*n),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStart {
    stream_sid: String,
    #[serde(default)]
    call_sid: String,
    #[serde(default)]
    account_sid: String,
    #[serde(default)]
    tracks: Vec<String>,
    #[serde(default)]
    custom_parameters: BTreeMap<String, Value>,
    media_format: Option<RawFormat>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFormat {
    encoding: String,
    sample_rate: Num,
    channels: Num,
}

#[derive(Deserialize)]
struct RawMedia {
    #[serde(default)]
    track: Option<String>,
    chunk: Option<Num>,
    timestamp: Option<Num>,
    payload: String,
}

#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
enum Raw {
    Connected {},
    Start {
        start: RawStart,
    },
    Media {
        #[serde(rename = "sequenceNumber")]
        sequence_number: Num,
        media: RawMedia,
    },
    Dtmf {
        dtmf: RawDtmf,
    },
    Mark {
        mark: RawMark,
    },
    Stop {},
}

#[derive(Deserialize)]
struct RawDtmf {
    digit: String,
}

#[derive(Deserialize)]
struct RawMark {
    name: String,
}

/// Parses one text message. Unknown events, malformed JSON, bad base64, payloads that are not
/// whole 20 ms frames or larger than [`MAX_MEDIA_PAYLOAD_BYTES`] are errors.
pub fn parse(text: &str) -> Result<Inbound, DialectError> {
    let value: Value = serde_json::from_str(text).map_err(|e| err("invalid_json", format!("not JSON: {e}")))?;
    let event = value.get("event").and_then(Value::as_str).ok_or_else(|| err("missing_event", "message has no \"event\""))?.to_string();
    if !matches!(event.as_str(), "connected" | "start" | "media" | "dtmf" | "mark" | "stop") {
        return Err(err("unknown_event", format!("unknown event {:?}", truncate(&event))));
    }
    let raw: Raw = serde_json::from_value(value).map_err(|e| err("invalid_message", format!("malformed {event} message: {e}")))?;
    Ok(match raw {
        Raw::Connected {} => Inbound::Connected,
        Raw::Start { start } => {
            if let Some(f) = &start.media_format {
                let (rate, channels) = (f.sample_rate.get(), f.channels.get());
                if f.encoding != ENCODING_MULAW || rate != Some(8000) || channels != Some(1) {
                    return Err(err(
                        "unsupported_media_format",
                        format!("only {ENCODING_MULAW}, 8000 Hz, mono is supported (got {:?}, {rate:?} Hz, {channels:?} channels)", truncate(&f.encoding)),
                    ));
                }
            }
            let custom_parameters = start
                .custom_parameters
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect();
            Inbound::Start(Start {
                stream_sid: start.stream_sid,
                call_sid: start.call_sid,
                account_sid: start.account_sid,
                tracks: start.tracks,
                custom_parameters,
            })
        }
        Raw::Media { sequence_number, media } => {
            let sequence_number = sequence_number.get().ok_or_else(|| err("invalid_message", "sequenceNumber is not a number"))?;
            if media.track.as_deref().is_some_and(|t| t != "inbound") {
                return Err(err("unsupported_track", "only the inbound track is bridged"));
            }
            // Refuse by encoded size before decoding: base64 is 4 chars per 3 bytes.
            if media.payload.len() > MAX_MEDIA_PAYLOAD_BYTES.div_ceil(3) * 4 {
                return Err(err("payload_too_large", format!("media payload larger than {MAX_MEDIA_PAYLOAD_BYTES} bytes")));
            }
            let payload = B64.decode(media.payload.as_bytes()).map_err(|e| err("invalid_base64", format!("media payload: {e}")))?;
            if payload.is_empty() || payload.len() % G711_FRAME_BYTES != 0 {
                return Err(err(
                    "invalid_payload_length",
                    format!("media payload of {} bytes is not a whole number of 20 ms frames ({G711_FRAME_BYTES} bytes)", payload.len()),
                ));
            }
            let timestamp_ms = media.timestamp.and_then(|t| t.get()).unwrap_or(0);
            let chunk = media.chunk.and_then(|c| c.get()).unwrap_or(timestamp_ms / u64::from(voxrelay_media::FRAME_MS));
            Inbound::Media(Media { sequence_number, chunk, timestamp_ms, payload })
        }
        Raw::Dtmf { dtmf } => {
            let mut chars = dtmf.digit.chars();
            match (chars.next(), chars.next()) {
                (Some(d), None) if d.is_ascii_digit() || matches!(d, '*' | '#' | 'A'..='D') => Inbound::Dtmf { digit: d },
                _ => return Err(err("invalid_dtmf", format!("not a DTMF digit: {:?}", truncate(&dtmf.digit)))),
            }
        }
        Raw::Mark { mark } => Inbound::Mark { name: mark.name },
        Raw::Stop {} => Inbound::Stop,
    })
}

/// Keeps client-supplied text in log lines and errors short.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Outbound `media`: one 20 ms frame of mu-law for the caller.
pub fn media_message(stream_sid: &str, mulaw: &[u8]) -> String {
    format!(r#"{{"event":"media","streamSid":{},"media":{{"payload":"{}"}}}}"#, json_str(stream_sid), B64.encode(mulaw))
}

/// Outbound `mark`: Twilio sends it back once the audio queued before it has played.
pub fn mark_message(stream_sid: &str, name: &str) -> String {
    format!(r#"{{"event":"mark","streamSid":{},"mark":{{"name":{}}}}}"#, json_str(stream_sid), json_str(name))
}

/// Outbound `clear`: Twilio drops the audio it has buffered (and returns the pending marks).
pub fn clear_message(stream_sid: &str) -> String {
    format!(r#"{{"event":"clear","streamSid":{}}}"#, json_str(stream_sid))
}

fn json_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_twilios_documented_messages() {
        assert_eq!(parse(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#).unwrap(), Inbound::Connected);
        let start = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1",
            "tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},
            "customParameters":{"agent":"echo","instructions":"be brief"}},"streamSid":"MZ1"}"#;
        let Inbound::Start(s) = parse(start).unwrap() else { panic!() };
        assert_eq!((s.stream_sid.as_str(), s.call_sid.as_str(), s.account_sid.as_str()), ("MZ1", "CA1", "AC1"));
        assert_eq!(s.custom_parameters["instructions"], "be brief");
        let media = r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"#;
        let payload = B64.encode([0xFFu8; 160]);
        let Inbound::Media(m) = parse(&format!(r#"{media}"{payload}"}},"streamSid":"MZ1"}}"#)).unwrap() else { panic!() };
        assert_eq!((m.sequence_number, m.chunk, m.timestamp_ms, m.payload.len()), (3, 1, 5, 160));
        let dtmf = r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#;
        assert_eq!(parse(dtmf).unwrap(), Inbound::Dtmf { digit: '1' });
        let mark = r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1","mark":{"name":"f7"}}"#;
        assert_eq!(parse(mark).unwrap(), Inbound::Mark { name: "f7".into() });
        let stop = r#"{"event":"stop","sequenceNumber":"5","stop":{"accountSid":"AC1","callSid":"CA1"},"streamSid":"MZ1"}"#;
        assert_eq!(parse(stop).unwrap(), Inbound::Stop);
    }

    #[test]
    fn bad_messages_have_stable_codes() {
        let media = |p: &str| format!(r#"{{"event":"media","sequenceNumber":"3","media":{{"track":"inbound","timestamp":"5","payload":"{p}"}}}}"#);
        let cases = [
            ("{oops".to_string(), "invalid_json"),
            (r#"{"event":"dance"}"#.to_string(), "unknown_event"),
            (r#"{"nothing":1}"#.to_string(), "missing_event"),
            (media("!!!!"), "invalid_base64"),
            (media(&B64.encode([0u8; 100])), "invalid_payload_length"),
            (media(&B64.encode(vec![0u8; 64 * 1024])), "payload_too_large"),
            (r#"{"event":"media","sequenceNumber":"x","media":{"payload":""}}"#.to_string(), "invalid_message"),
            (r#"{"event":"dtmf","dtmf":{"digit":"12"}}"#.to_string(), "invalid_dtmf"),
            (
                r#"{"event":"start","start":{"streamSid":"MZ","mediaFormat":{"encoding":"audio/l16","sampleRate":16000,"channels":1}}}"#.to_string(),
                "unsupported_media_format",
            ),
        ];
        for (text, code) in cases {
            assert_eq!(parse(&text).unwrap_err().code, code, "{text}");
        }
    }

    #[test]
    fn outbound_messages_match_twilios_shapes_byte_for_byte() {
        assert_eq!(media_message("MZ1", &[0xFF, 0x7F, 0x00]), r#"{"event":"media","streamSid":"MZ1","media":{"payload":"/38A"}}"#);
        assert_eq!(mark_message("MZ1", "f1"), r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"f1"}}"#);
        assert_eq!(clear_message("MZ\"1"), r#"{"event":"clear","streamSid":"MZ\"1"}"#);
    }
}
