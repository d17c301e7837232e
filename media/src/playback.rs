//! Response playback: which agent response is on air, what is cancelled, and the playback events.
//! Owns: the response lifecycle on the worker side (started / finished / cleared) and skipping
//! frames of cancelled responses in the agent ring.
//! Must never: encode or resample (the chain does), allocate, or block on the ring.

use std::time::Duration;

use crate::{AgentFrame, FRAME, MediaEvent, SAMPLES_24K};
use rtrb::Consumer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OnAir {
    response: u64,
    frames: u64,
}

impl OnAir {
    fn played(&self) -> Duration {
        FRAME * self.frames as u32
    }
}

/// The next frame to play.
pub(crate) struct Next {
    pub pcm: [i16; SAMPLES_24K],
    /// First frame of a response after silence: the caller resets its encoder state.
    pub after_silence: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Playback {
    on_air: Option<OnAir>,
    /// Responses with ids up to and including this one are dropped.
    cancelled_upto: Option<u64>,
    /// Whether the previous tick played agent audio.
    was_playing_audio: bool,
}

impl Playback {
    fn is_cancelled(&self, response: u64) -> bool {
        self.cancelled_upto.is_some_and(|upto| response <= upto)
    }

    fn cancel_upto(&mut self, response: u64) {
        self.cancelled_upto = Some(self.cancelled_upto.map_or(response, |c| c.max(response)));
    }

    /// Takes the next audio frame due this tick, handling `End` markers and skipping cancelled
    /// responses. Emits PlaybackStarted / PlaybackFinished through `emit`; counts skipped frames.
    pub fn next_frame(&mut self, ring: &mut Consumer<AgentFrame>, emit: &mut impl FnMut(MediaEvent), dropped: &mut u64) -> Option<Next> {
        let after_silence = !self.was_playing_audio;
        self.was_playing_audio = false;
        loop {
            let response = ring.peek().ok()?.response();
            let frame = ring.pop().ok()?;
            if self.is_cancelled(response) {
                *dropped += 1;
                continue;
            }
            match frame {
                AgentFrame::End { response } => {
                    let played = match self.on_air {
                        Some(on_air) if on_air.response == response => on_air.played(),
                        _ => Duration::ZERO,
                    };
                    if self.on_air.is_some_and(|a| a.response <= response) {
                        self.on_air = None;
                    }
                    emit(MediaEvent::PlaybackFinished { response, played });
                }
                AgentFrame::Audio { response, pcm } => {
                    match self.on_air {
                        Some(on_air) if on_air.response == response => {}
                        previous => {
                            // A newer response without an End for the previous one ends it.
                            if let Some(prev) = previous {
                                emit(MediaEvent::PlaybackFinished { response: prev.response, played: prev.played() });
                            }
                            self.on_air = Some(OnAir { response, frames: 0 });
                            emit(MediaEvent::PlaybackStarted { response });
                        }
                    }
                    if let Some(on_air) = self.on_air.as_mut() {
                        on_air.frames += 1;
                    }
                    self.was_playing_audio = true;
                    return Some(Next { pcm, after_silence });
                }
            }
        }
    }

    /// Whether a response's first frame is waiting with nothing playing: the previous tick
    /// played no agent audio and the ring's next frame is audio of a live response.
    pub fn starts(&self, ring: &Consumer<AgentFrame>) -> bool {
        !self.was_playing_audio && ring.peek().is_ok_and(|f| matches!(f, AgentFrame::Audio { .. }) && !self.is_cancelled(f.response()))
    }

    /// Whether agent audio is on air or queued (what a barge-in would cut).
    pub fn is_speaking(&self, ring: &Consumer<AgentFrame>) -> bool {
        self.on_air.is_some() || !ring.is_empty()
    }

    /// Barge-in and ClearOutput: drops everything queued, cancels the response on air and every
    /// response seen in the ring, and emits PlaybackCleared for the response on air (or, if none,
    /// the first one queued, with `played` zero). Does nothing if nothing is on air or queued.
    pub fn cut(&mut self, ring: &mut Consumer<AgentFrame>, emit: &mut impl FnMut(MediaEvent), dropped: &mut u64) {
        let mut target = self.on_air;
        let mut newest = self.on_air.map(|a| a.response);
        while let Ok(frame) = ring.pop() {
            *dropped += 1;
            let response = frame.response();
            if self.is_cancelled(response) {
                continue;
            }
            target.get_or_insert(OnAir { response, frames: 0 });
            newest = Some(newest.map_or(response, |n| n.max(response)));
        }
        if let (Some(target), Some(newest)) = (target, newest) {
            self.cancel_upto(newest);
            self.on_air = None;
            emit(MediaEvent::PlaybackCleared { response: target.response, played: target.played() });
        }
    }

    /// CancelResponse: cancels `response` and older ones, drops their queued frames, and emits
    /// PlaybackCleared if one of them is on air.
    pub fn cancel(&mut self, response: u64, ring: &mut Consumer<AgentFrame>, emit: &mut impl FnMut(MediaEvent), dropped: &mut u64) {
        self.cancel_upto(response);
        if let Some(on_air) = self.on_air.filter(|a| a.response <= response) {
            self.on_air = None;
            emit(MediaEvent::PlaybackCleared { response: on_air.response, played: on_air.played() });
        }
        while ring.peek().is_ok_and(|f| self.is_cancelled(f.response())) {
            let _ = ring.pop();
            *dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtrb::RingBuffer;

    fn audio(response: u64) -> AgentFrame {
        AgentFrame::Audio { response, pcm: [0; SAMPLES_24K] }
    }

    fn run(pb: &mut Playback, ring: &mut Consumer<AgentFrame>, ticks: usize) -> (usize, Vec<MediaEvent>) {
        let (mut played, mut events, mut dropped) = (0, Vec::new(), 0);
        for _ in 0..ticks {
            if pb.next_frame(ring, &mut |e| events.push(e), &mut dropped).is_some() {
                played += 1;
            }
        }
        (played, events)
    }

    #[test]
    fn a_response_starts_plays_and_finishes_after_its_last_frame() {
        let (mut tx, mut rx) = RingBuffer::new(16);
        for _ in 0..3 {
            tx.push(audio(1)).unwrap();
        }
        tx.push(AgentFrame::End { response: 1 }).unwrap();
        let mut pb = Playback::default();
        let (played, events) = run(&mut pb, &mut rx, 5);
        assert_eq!(played, 3);
        assert_eq!(
            events,
            vec![
                MediaEvent::PlaybackStarted { response: 1 },
                MediaEvent::PlaybackFinished { response: 1, played: Duration::from_millis(60) }
            ]
        );
    }

    #[test]
    fn cancel_drops_queued_and_future_frames_of_that_response() {
        let (mut tx, mut rx) = RingBuffer::new(16);
        for _ in 0..3 {
            tx.push(audio(4)).unwrap();
        }
        let mut pb = Playback::default();
        let (mut events, mut dropped) = (Vec::new(), 0);
        assert!(pb.next_frame(&mut rx, &mut |e| events.push(e), &mut dropped).is_some());
        pb.cancel(4, &mut rx, &mut |e| events.push(e), &mut dropped);
        assert_eq!(dropped, 2);
        tx.push(audio(4)).unwrap(); // late frame of the cancelled response
        tx.push(AgentFrame::End { response: 4 }).unwrap();
        tx.push(audio(5)).unwrap();
        let (played, more) = run(&mut pb, &mut rx, 2);
        events.extend(more);
        assert_eq!(played, 1);
        assert_eq!(
            events,
            vec![
                MediaEvent::PlaybackStarted { response: 4 },
                MediaEvent::PlaybackCleared { response: 4, played: Duration::from_millis(20) },
                MediaEvent::PlaybackStarted { response: 5 },
            ]
        );
    }

    #[test]
    fn cut_clears_everything_queued_even_before_playback_started() {
        let (mut tx, mut rx) = RingBuffer::new(16);
        tx.push(audio(2)).unwrap();
        tx.push(AgentFrame::End { response: 2 }).unwrap();
        tx.push(audio(3)).unwrap();
        let mut pb = Playback::default();
        let (mut events, mut dropped) = (Vec::new(), 0);
        pb.cut(&mut rx, &mut |e| events.push(e), &mut dropped);
        assert_eq!(events, vec![MediaEvent::PlaybackCleared { response: 2, played: Duration::from_millis(0) }]);
        tx.push(audio(3)).unwrap();
        assert_eq!(run(&mut pb, &mut rx, 2).0, 0, "response 3 was queued at the cut and stays cancelled");
        pb.cut(&mut rx, &mut |e| events.push(e), &mut dropped);
        assert_eq!(events.len(), 1, "nothing on air or queued: no event");
    }
}
