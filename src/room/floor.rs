//! Group turn-taking for an agent in a room: who holds the floor, and when a participant's
//! finished turn reaches the agent. Each participant has its own VAD and turn detector (its own
//! worker session); this keeps each one's audio from the onset of its speech to its commit, and
//! releases committed turns only while **nobody has a turn open** (speech started and not yet
//! committed). Two people talking over each other therefore make the agent wait until both
//! have finished, then it hears both turns, in the order they were committed, and answers once.
//!
//! The agent hears released turns on a timeline of its own (`fed`): turns are laid end to end,
//! so overlapping speech never interleaves in what the agent hears. No I/O and no clock here.

use std::collections::VecDeque;

use voxrelay_media::{AudioTime, FRAME, SAMPLES_24K};

pub type Pcm = [i16; SAMPLES_24K];

/// Audio kept from before a participant's speech onset is confirmed: the turn detector reports
/// an onset up to its prefix padding (300 ms by default) earlier than it decides.
const PREROLL_FRAMES: usize = 50;
/// The longest turn kept (30 s); longer ones keep their last 30 s.
pub const MAX_TURN_FRAMES: usize = 1_500;
/// Committed turns waiting for the floor; past this the oldest is dropped (and counted).
const MAX_WAITING: usize = 16;

/// A committed turn, ready for the agent.
#[derive(Debug)]
pub struct Turn<K> {
    pub speaker: K,
    pub item_id: String,
    /// Where the turn begins on the agent's timeline; it lasts `frames.len()` frames.
    pub start: AudioTime,
    pub frames: Vec<Pcm>,
}

struct OpenTurn {
    item_id: String,
    frames: VecDeque<(AudioTime, Pcm)>,
}

struct Speaker<K> {
    key: K,
    preroll: VecDeque<(AudioTime, Pcm)>,
    open: Option<OpenTurn>,
}

pub struct Floor<K> {
    speakers: Vec<Speaker<K>>,
    waiting: VecDeque<(K, String, Vec<Pcm>)>,
    /// The end of what the agent has heard, on its own timeline.
    fed: AudioTime,
    /// Turns dropped because too many waited.
    pub dropped_turns: u64,
}

impl<K: Copy + PartialEq> Default for Floor<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + PartialEq> Floor<K> {
    pub fn new() -> Self {
        Floor { speakers: Vec::new(), waiting: VecDeque::new(), fed: AudioTime::ZERO, dropped_turns: 0 }
    }

    fn speaker(&mut self, key: K) -> &mut Speaker<K> {
        match self.speakers.iter().position(|s| s.key == key) {
            Some(i) => &mut self.speakers[i],
            None => {
                self.speakers.push(Speaker { key, preroll: VecDeque::with_capacity(PREROLL_FRAMES), open: None });
                self.speakers.last_mut().expect("just pushed")
            }
        }
    }

    /// One frame of a participant's audio, `start` on that participant's own timeline.
    pub fn audio(&mut self, key: K, start: AudioTime, pcm: &Pcm) {
        let s = self.speaker(key);
        let frames = match &mut s.open {
            Some(open) => {
                if open.frames.len() == MAX_TURN_FRAMES {
                    open.frames.pop_front();
                }
                &mut open.frames
            }
            None => {
                if s.preroll.len() == PREROLL_FRAMES {
                    s.preroll.pop_front();
                }
                &mut s.preroll
            }
        };
        frames.push_back((start, *pcm));
    }

    /// The participant's speech began at `audio_start` (its timeline); its turn will be
    /// `item_id`. The audio kept from the onset on joins the turn.
    pub fn speech_started(&mut self, key: K, audio_start: AudioTime, item_id: String) {
        let s = self.speaker(key);
        if s.open.is_some() {
            return;
        }
        let frames: VecDeque<_> = s.preroll.drain(..).filter(|(t, _)| *t + FRAME > audio_start).collect();
        s.open = Some(OpenTurn { item_id, frames });
    }

    /// The participant's turn ended at `audio_end`; it waits for the floor. Returns its item id
    /// (`None` when no turn was open, e.g. a commit without speech).
    pub fn committed(&mut self, key: K, audio_end: AudioTime) -> Option<String> {
        let s = self.speaker(key);
        let open = s.open.take()?;
        let mut frames = Vec::with_capacity(open.frames.len());
        for (t, pcm) in open.frames {
            if t < audio_end {
                frames.push(pcm);
            } else {
                // What followed the end (the detector's silence wait) may start the next turn.
                s.preroll.push_back((t, pcm));
            }
        }
        if self.waiting.len() == MAX_WAITING {
            self.waiting.pop_front();
            self.dropped_turns += 1;
        }
        self.waiting.push_back((key, open.item_id.clone(), frames));
        Some(open.item_id)
    }

    /// Whether any participant has a turn open (the floor is taken).
    pub fn taken(&self) -> bool {
        self.speakers.iter().any(|s| s.open.is_some())
    }

    /// The committed turns the agent may hear now: all that wait, once nobody has a turn open.
    pub fn release(&mut self) -> Vec<Turn<K>> {
        if self.taken() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(self.waiting.len());
        while let Some((speaker, item_id, frames)) = self.waiting.pop_front() {
            let start = self.fed;
            self.fed = start + FRAME * frames.len() as u32;
            out.push(Turn { speaker, item_id, start, frames });
        }
        out
    }

    /// The participant left: its open turn goes (it was never finished); what it committed
    /// still reaches the agent.
    pub fn remove(&mut self, key: K) {
        self.speakers.retain(|s| s.key != key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(frame: u64) -> AudioTime {
        AudioTime::from_ms(frame * 20)
    }

    /// `n` frames of `key`'s audio from frame `from`, each frame's first sample its index.
    fn speak(floor: &mut Floor<u32>, key: u32, from: u64, n: u64) {
        for f in from..from + n {
            floor.audio(key, at(f), &[f as i16; SAMPLES_24K]);
        }
    }

    #[test]
    fn a_lone_turn_is_released_at_its_commit_with_its_onset_and_without_the_tail() {
        let mut floor = Floor::new();
        speak(&mut floor, 1, 0, 20);
        floor.speech_started(1, at(15), "item_a".into());
        speak(&mut floor, 1, 20, 30);
        assert!(floor.release().is_empty());
        assert_eq!(floor.committed(1, at(40)), Some("item_a".into()));
        let turns = floor.release();
        assert_eq!(turns.len(), 1);
        let firsts: Vec<i16> = turns[0].frames.iter().map(|f| f[0]).collect();
        assert_eq!(firsts, (15..40).collect::<Vec<i16>>());
        assert_eq!(turns[0].start, AudioTime::ZERO);
        assert!(floor.release().is_empty(), "a turn is released once");
    }

    #[test]
    fn overlapping_speakers_make_the_agent_wait_then_it_hears_both_in_commit_order_end_to_end() {
        let mut floor = Floor::new();
        floor.speech_started(1, at(0), "item_a".into());
        speak(&mut floor, 1, 0, 10);
        floor.speech_started(2, at(5), "item_b".into());
        speak(&mut floor, 2, 5, 10);
        floor.committed(1, at(10));
        assert!(floor.taken());
        assert!(floor.release().is_empty(), "bob is still talking");
        floor.committed(2, at(15));
        let turns = floor.release();
        let order: Vec<(u32, &str)> = turns.iter().map(|t| (t.speaker, t.item_id.as_str())).collect();
        assert_eq!(order, [(1, "item_a"), (2, "item_b")]);
        assert_eq!(turns[1].start, at(10), "laid after alice's 10 frames, never interleaved");
    }

    #[test]
    fn a_speaker_who_leaves_mid_turn_frees_the_floor_and_keeps_what_was_committed() {
        let mut floor = Floor::new();
        floor.speech_started(1, at(0), "item_a".into());
        speak(&mut floor, 1, 0, 5);
        floor.committed(1, at(5));
        floor.speech_started(2, at(0), "item_b".into());
        assert!(floor.release().is_empty());
        floor.remove(2);
        let turns = floor.release();
        assert_eq!(turns.len(), 1);
        assert_eq!(turns[0].frames.len(), 5);
        assert_eq!(floor.committed(2, at(9)), None, "its open turn went with it");
    }

    #[test]
    fn memory_is_bounded_per_turn_and_in_waiting_turns() {
        let mut floor = Floor::new();
        floor.speech_started(1, at(0), "long".into());
        speak(&mut floor, 1, 0, MAX_TURN_FRAMES as u64 + 100);
        floor.speech_started(2, at(0), "hold".into());
        floor.committed(1, at(MAX_TURN_FRAMES as u64 + 100));
        for i in 0..MAX_WAITING as u64 + 3 {
            floor.speech_started(3, at(i), format!("short{i}"));
            floor.committed(3, at(i + 1));
        }
        assert_eq!(floor.dropped_turns, 4);
        floor.committed(2, at(1));
        let turns = floor.release();
        assert_eq!(turns.len(), MAX_WAITING);
        assert!(turns.iter().all(|t| t.frames.len() <= MAX_TURN_FRAMES));
    }
}
