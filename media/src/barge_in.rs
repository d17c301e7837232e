//! The barge-in policy: whether the caller starting to speak cuts the agent. One decision, asked
//! by both halves of a call so they can never disagree: the audio worker (which cuts the
//! agent's audio within the tick the speech was detected: `chain.rs`) and the protocol state
//! (which cancels the response upstream, truncates it at what the caller heard and tells the
//! client: the root crate's `call::Conversation`).
//!
//! What the caller's speech is has been decided before this point: the VAD and the turn
//! detector say speech started (after `prefix_padding_ms` of voiced audio), and on phone lines
//! the echo guard has already kept the agent's own echo from counting as the caller
//! (`echo_guard.rs`, `min_barge_in_ms`).

/// Where the agent's current response stands, as the one asking sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponsePhase {
    /// No response: nothing to cut.
    Idle,
    /// Created, its audio not on air yet (the provider is still thinking). Only the protocol
    /// side sees this phase; the worker has no audio for it yet.
    Pending,
    /// Its audio is queued or playing.
    Speaking,
}

/// What to do about the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BargeIn {
    /// Let the response go on (or there is none).
    Continue,
    /// Cut it: drop its queued audio now, cancel it with reason `turn_detected`.
    Cut,
}

/// The caller started speaking. `interrupt_response` is the session's
/// `turn_detection.interrupt_response`; without server VAD there is no speech start to ask
/// about (push-to-talk clients cut with `output_audio_buffer.clear` / `response.cancel`).
pub fn on_speech_started(interrupt_response: bool, phase: ResponsePhase) -> BargeIn {
    match (interrupt_response, phase) {
        (false, _) | (_, ResponsePhase::Idle) => BargeIn::Continue,
        (true, ResponsePhase::Pending | ResponsePhase::Speaking) => BargeIn::Cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BargeIn::{Continue, Cut};
    use ResponsePhase::{Idle, Pending, Speaking};

    #[test]
    fn the_table() {
        // (interrupt_response, phase) -> decision
        let table = [
            (true, Idle, Continue),
            (true, Pending, Cut),
            (true, Speaking, Cut),
            (false, Idle, Continue),
            (false, Pending, Continue),
            (false, Speaking, Continue),
        ];
        for (interrupt, phase, want) in table {
            assert_eq!(on_speech_started(interrupt, phase), want, "interrupt_response={interrupt}, {phase:?}");
        }
    }
}
