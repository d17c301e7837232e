//! Agents: what answers the caller. An agent hears the caller's audio (24 kHz, in order, with
//! turn events) and, when asked for a response, produces transcript text and 24 kHz speech.
//! It is driven by the call task on tokio and never touches the audio thread: its output goes
//! through the call task into the worker's ring.
//!
//! Built in: `echo` (plays each committed turn back). Provider agents run their network side
//! as a tokio task behind [`bridge::Bridge`], so the trait stays synchronous and pull-based.
//!
//! Agents parse what providers send: no `unwrap`/`expect` outside tests (the few left are marked).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod backoff;
pub mod bridge;
pub mod cascade;
mod echo;
pub mod history;
pub mod gemini;
pub mod openai;
mod pcm;
pub mod upstream;
pub mod providers;

pub use voxrelay_signaling::events::ResponseOptions;
pub use echo::EchoAgent;
pub use providers::{Providers, ProvidersFile};

use history::Dialogue;

use std::time::Duration;

use voxrelay_media::{AudioTime, SAMPLES_24K};
use voxrelay_signaling::{ApiError, SessionConfig};

/// One step of a response, pulled by the call task.
#[derive(Debug)]
pub enum AgentOutput {
    TranscriptDelta(String),
    Audio(Box<[i16; SAMPLES_24K]>),
    /// The model calls one of the session's tools; `arguments` is a JSON string. The client
    /// runs it and answers with [`Agent::on_function_output`]. A response may hold several.
    FunctionCall { call_id: String, name: String, arguments: String },
    /// The response has no more output.
    Done,
    /// The response ended early because of the provider (it may have produced audio first).
    Failed { code: String, message: String },
}

/// Something the agent reports outside any response.
#[derive(Debug, PartialEq)]
pub enum AgentNotice {
    /// The caller's words for a committed user item (`input_audio_transcription`).
    InputTranscript { item_id: String, transcript: String },
    /// A provider problem the client should know about; the call goes on.
    Error { code: String, message: String },
    /// The provider's current limits, passed on as `rate_limits.updated` (OpenAI's list of
    /// `{"name","limit","remaining","reset_seconds"}`).
    RateLimits(serde_json::Value),
}

pub trait Agent: Send {
    /// The session's settings (instructions, voice, turn detection); called at start and on
    /// every `session.update`.
    fn configure(&mut self, _config: &SessionConfig) {}
    /// Caller audio at 24 kHz, starting at `start` on the call's audio timeline.
    fn on_audio(&mut self, start: AudioTime, pcm: &[i16; SAMPLES_24K]);
    fn on_speech_started(&mut self, audio_start: AudioTime);
    /// In a room: the turn that follows is spoken by `name`. Agents that can tell a model who
    /// speaks do; the default ignores it (the echo agent has no use for it).
    fn on_speaker(&mut self, _name: &str) {}
    /// The user turn ending at `audio_end` is committed as conversation item `item_id`.
    fn on_committed(&mut self, audio_end: AudioTime, item_id: &str);
    fn on_input_cleared(&mut self);
    fn on_text(&mut self, item_id: &str, text: &str);
    /// The client's result for function call `call_id` (only ids this agent issued get here).
    /// The model uses it in the next response the client asks for.
    fn on_function_output(&mut self, _call_id: &str, _output: &str) {}
    /// Answer now. `options`: what the client's `response.create` asked of this response
    /// (instructions instead of the session's; text only, when the agent can skip making audio:
    /// the conversation drops any audio of a text-only response anyway).
    fn start_response(&mut self, response: u64, options: &ResponseOptions);
    /// Barge-in or client cancel: `played` of the response's audio reached the caller.
    fn cancel_response(&mut self, response: u64, played: Duration);
    /// Next output of the current response, if any is ready now.
    fn poll_output(&mut self) -> Option<AgentOutput>;
    fn poll_notice(&mut self) -> Option<AgentNotice> {
        None
    }
}

/// How a provider model is told who speaks in a room: `[alice]` (the display name).
pub fn speaker_label(name: &str) -> String {
    format!("[{name}]")
}

pub fn check_agent(providers: &Providers, name: &str) -> Result<(), ApiError> {
    let available = providers.available();
    if available.contains(&name) {
        return Ok(());
    }
    match providers.why_missing(name) {
        Some(why) => Err(ApiError::bad_request(
            "agent_not_configured",
            format!("agent {name:?} is not configured on this server: {why} (available: {})", available.join(", ")),
        )),
        None => Err(ApiError::bad_request(
            "unknown_agent",
            format!("unknown agent {name:?} (available: {})", available.join(", ")),
        )),
    }
}

/// OpenAI Realtime's voices (its `session.voice`).
pub const OPENAI_VOICES: [&str; 10] = ["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"];
/// Gemini Live's prebuilt voices (`prebuiltVoiceConfig.voiceName`).
pub const GEMINI_VOICES: [&str; 30] = [
    "Achernar", "Achird", "Algenib", "Algieba", "Alnilam", "Aoede", "Autonoe", "Callirrhoe", "Charon", "Despina", "Enceladus",
    "Erinome", "Fenrir", "Gacrux", "Iapetus", "Kore", "Laomedeia", "Leda", "Orus", "Puck", "Pulcherrima", "Rasalgethi",
    "Sadachbia", "Sadaltager", "Schedar", "Sulafat", "Umbriel", "Vindemiatrix", "Zephyr", "Zubenelgenubi",
];

/// Whether the session's agent has the voice the session asks for: refused by name
/// (`unsupported_value`), never replaced by another. The default voice (`alloy`) means "the
/// server's configured voice" for every provider; the echo agent has no voice of its own and
/// takes any.
pub fn check_voice(config: &SessionConfig) -> Result<(), ApiError> {
    let voice = config.voice.as_str();
    if voice == SessionConfig::default().voice {
        return Ok(());
    }
    let refuse = |why: String| Err(ApiError::bad_request("unsupported_value", format!("voice {voice:?} is not supported by voxrelay's {} agent: {why}", config.agent)));
    match config.agent.as_str() {
        "openai-realtime" if !OPENAI_VOICES.contains(&voice) => refuse(format!("OpenAI Realtime's voices are {}", OPENAI_VOICES.join(", "))),
        "gemini-live" if !GEMINI_VOICES.contains(&voice) => refuse(format!("Gemini Live's voices are {}", GEMINI_VOICES.join(", "))),
        "cascade" => refuse("it speaks with the server's ElevenLabs voice ([providers.elevenlabs] voice); leave voice out".into()),
        _ => Ok(()),
    }
}

/// Builds the session's agent; provider agents start connecting at once (on the current tokio
/// runtime) so the first turn does not wait for a handshake.
#[allow(clippy::expect_used, reason = "check_agent said the provider is configured")]
/// `prior`: the dialogue of the conversation the call continues (empty for a new one); the echo
/// agent has no use for it.
pub fn new_agent(providers: &Providers, config: &SessionConfig, prior: Dialogue) -> Result<Box<dyn Agent>, ApiError> {
    check_agent(providers, &config.agent)?;
    check_voice(config)?;
    Ok(match config.agent.as_str() {
        "openai-realtime" => {
            let (oa, session) = (providers.openai.clone().expect("checked above"), config.clone());
            Box::new(bridge::Bridge::spawn(config, move |link| openai::run(oa, session, prior, link)))
        }
        "cascade" => {
            let (cc, session) = (providers.cascade.clone().expect("checked above"), config.clone());
            Box::new(bridge::Bridge::spawn(config, move |link| cascade::run(cc, session, prior, link)))
        }
        "gemini-live" => {
            let (gm, session) = (providers.gemini.clone().expect("checked above"), config.clone());
            Box::new(bridge::Bridge::spawn(config, move |link| gemini::run(gm, session, prior, link)))
        }
        _ => Box::new(EchoAgent::new()),
    })
}

#[cfg(test)]
mod voice_tests {
    use super::*;

    fn session(agent: &str, voice: &str) -> SessionConfig {
        SessionConfig { agent: agent.into(), voice: voice.into(), ..SessionConfig::default() }
    }

    #[test]
    fn a_voice_the_agent_lacks_is_refused_by_name() {
        assert!(check_voice(&session("openai-realtime", "marin")).is_ok());
        assert!(check_voice(&session("gemini-live", "Kore")).is_ok());
        assert!(check_voice(&session("echo", "anything")).is_ok(), "the echo agent has no voice of its own");
        for agent in ["openai-realtime", "gemini-live", "cascade"] {
            assert!(check_voice(&session(agent, "alloy")).is_ok(), "{agent}: the default is the server's configured voice");
        }
        for (agent, voice) in [("openai-realtime", "Kore"), ("gemini-live", "marin"), ("cascade", "Rachel")] {
            let e = check_voice(&session(agent, voice)).unwrap_err();
            assert_eq!(e.code, "unsupported_value", "{agent} {voice}");
            assert!(e.message.contains(voice) && e.message.contains(agent), "{}", e.message);
        }
    }
}
