//! Agents: what answers the caller. An agent hears the caller's audio (24 kHz, in order, with
//! turn events) and, when asked for a response, produces transcript text and 24 kHz speech.
//! It is driven by the call task on tokio and never touches the audio thread: its output goes
//! through the call task into the worker's ring.
//!
//! Built in: `echo` (plays each committed turn back). Provider agents (OpenAI Realtime, Gemini
//! Live, cascade) implement the same trait.

mod echo;

pub use echo::EchoAgent;

use voxrelay_media::SAMPLES_24K;
use voxrelay_signaling::ApiError;

/// One step of a response, pulled by the call task.
pub enum AgentOutput {
    TranscriptDelta(String),
    Audio(Box<[i16; SAMPLES_24K]>),
    /// The response has no more output.
    Done,
}

pub trait Agent: Send {
    /// Caller audio at 24 kHz; `start_ms` counts from the call's first inbound sample.
    fn on_audio(&mut self, start_ms: u64, pcm: &[i16; SAMPLES_24K]);
    fn on_speech_started(&mut self, audio_start_ms: u64);
    /// The user turn ending at `audio_end_ms` is committed.
    fn on_committed(&mut self, audio_end_ms: u64);
    fn on_input_cleared(&mut self);
    fn on_text(&mut self, text: &str);
    fn start_response(&mut self, response: u64);
    fn cancel_response(&mut self, response: u64);
    /// Next output of the current response, if any is ready now.
    fn poll_output(&mut self) -> Option<AgentOutput>;
}

pub const AGENTS: &[&str] = &["echo"];

pub fn check_agent(name: &str) -> Result<(), ApiError> {
    match name {
        "echo" => Ok(()),
        "openai-realtime" | "gemini-live" | "cascade" => Err(ApiError::bad_request(
            "agent_not_configured",
            format!("agent {name:?} is not configured on this server (available: {})", AGENTS.join(", ")),
        )),
        other => Err(ApiError::bad_request(
            "unknown_agent",
            format!("unknown agent {other:?} (available: {})", AGENTS.join(", ")),
        )),
    }
}

pub fn new_agent(name: &str) -> Result<Box<dyn Agent>, ApiError> {
    check_agent(name)?;
    Ok(Box::new(EchoAgent::new()))
}
