//! The built-in `echo` agent: answers each committed turn by playing that turn's audio back,
//! with the transcript `"[echo <seconds> s]"`, and a text turn (`conversation.item.create`) with
//! the same text and no audio. It needs no network and no keys, so a fresh server is useful (and
//! testable end to end) out of the box.

use std::collections::VecDeque;

use std::time::Duration;

use voxrelay_media::{AudioTime, FRAME_MS, SAMPLES_24K};

use super::{Agent, AgentOutput, ResponseOptions};

/// How much caller audio is kept to echo: turns longer than this are echoed truncated to their
/// last 15 s. Bounds memory per call at 15 s * 24 kHz * 2 B = 720 KB.
pub const MAX_ECHO_MS: u64 = 15_000;
const MAX_FRAMES: usize = (MAX_ECHO_MS / FRAME_MS as u64) as usize;

pub struct EchoAgent {
    /// Recent caller audio, (start, pcm), oldest first.
    history: VecDeque<(AudioTime, [i16; SAMPLES_24K])>,
    /// Where the turn being spoken began (speech onset, or the end of the last commit).
    turn_start: AudioTime,
    /// The committed turn waiting for a response: [start, end) on the audio timeline.
    committed: Option<(AudioTime, AudioTime)>,
    /// Text the user sent since the last committed turn: the next response echoes it.
    text: Option<String>,
    /// Output of the response in progress.
    pending: VecDeque<AgentOutput>,
}

impl Default for EchoAgent {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoAgent {
    pub fn new() -> Self {
        // Grows with the turn instead of holding 15 s (726 KB) from the first frame: most of a
        // call's memory was this buffer (issue 20, "a megabyte per call").
        Self { history: VecDeque::new(), turn_start: AudioTime::ZERO, committed: None, text: None, pending: VecDeque::new() }
    }
}

impl Agent for EchoAgent {
    fn on_audio(&mut self, start: AudioTime, pcm: &[i16; SAMPLES_24K]) {
        // Only what a response may still echo: from the turn in progress (or the committed turn
        // not yet answered) on, at most 15 s.
        let keep_from = self.committed.map_or(self.turn_start, |(from, _)| from.min(self.turn_start));
        while self.history.front().is_some_and(|(t, _)| *t < keep_from) || self.history.len() >= MAX_FRAMES {
            self.history.pop_front();
        }
        self.history.push_back((start, *pcm));
    }

    fn on_speech_started(&mut self, audio_start: AudioTime) {
        self.turn_start = audio_start;
    }

    fn on_committed(&mut self, audio_end: AudioTime, _item_id: &str) {
        self.committed = Some((self.turn_start, audio_end));
        self.turn_start = audio_end;
        self.text = None;
    }

    fn on_input_cleared(&mut self) {
        self.history.clear();
    }

    fn on_text(&mut self, _item_id: &str, text: &str) {
        self.committed = None;
        self.text = Some(text.to_string());
    }

    fn start_response(&mut self, _response: u64, _options: &ResponseOptions) {
        self.pending.clear();
        if let Some(text) = self.text.take() {
            self.pending.push_back(AgentOutput::TranscriptDelta(text));
            self.pending.push_back(AgentOutput::Done);
            return;
        }
        let (start, end) = self.committed.take().unwrap_or_default();
        let frames: Vec<_> =
            self.history.iter().filter(|(t, _)| *t >= start && *t < end).map(|(_, pcm)| AgentOutput::Audio(Box::new(*pcm))).collect();
        let seconds = frames.len() as f64 * f64::from(FRAME_MS) / 1000.0;
        self.pending.push_back(AgentOutput::TranscriptDelta(format!("[echo {seconds:.1} s]")));
        self.pending.extend(frames);
        self.pending.push_back(AgentOutput::Done);
    }

    fn cancel_response(&mut self, _response: u64, _played: Duration) {
        self.pending.clear();
    }

    fn poll_output(&mut self) -> Option<AgentOutput> {
        self.pending.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_exactly_the_committed_turn() {
        let mut a = EchoAgent::new();
        for i in 0..100u64 {
            a.on_audio(AudioTime::from_ms(i * 20), &[i as i16; SAMPLES_24K]);
        }
        a.on_speech_started(AudioTime::from_ms(400));
        a.on_committed(AudioTime::from_ms(1000), "item_1");
        a.start_response(1, &ResponseOptions::default());
        let Some(AgentOutput::TranscriptDelta(t)) = a.poll_output() else { panic!("transcript first") };
        assert_eq!(t, "[echo 0.6 s]");
        let mut firsts = Vec::new();
        while let Some(out) = a.poll_output() {
            match out {
                AgentOutput::Audio(pcm) => firsts.push(pcm[0]),
                AgentOutput::Done => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(firsts, (20..50).collect::<Vec<i16>>());
    }

    #[test]
    fn holds_only_the_turn_it_may_still_echo() {
        let mut a = EchoAgent::new();
        let feed = |a: &mut EchoAgent, from: u64, to: u64| {
            for ms in (from..to).step_by(20) {
                a.on_audio(AudioTime::from_ms(ms), &[0; SAMPLES_24K]);
            }
        };
        feed(&mut a, 0, 4000);
        a.on_speech_started(AudioTime::from_ms(3000));
        feed(&mut a, 4000, 5000);
        assert_eq!(a.history.len(), 100, "the 2 s since the onset, not the 3 s of silence before it");
        a.on_committed(AudioTime::from_ms(5000), "item_1");
        feed(&mut a, 5000, 6000);
        assert_eq!(a.history.len(), 150, "the committed turn waits for its response");
        a.start_response(1, &ResponseOptions::default());
        feed(&mut a, 6000, 6020);
        assert_eq!(a.history.len(), 51, "answered: only what came after it");
        assert_eq!(a.history.front().map(|(t, _)| *t), Some(AudioTime::from_ms(5000)));
    }
}
