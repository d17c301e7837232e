//! The conversation of an agent in a room. Many participants speak, each with its own turn
//! detector; the room's floor (`crate::room::floor`) decides when their committed turns reach
//! the agent. What stays as in a 1:1 call: the response lifecycle, barge-in, and the events.
//!
//! Two timelines: `audio_start_ms`/`audio_end_ms` in the speech events are on the room's
//! timeline (since the agent joined), while the agent hears released turns laid end to end on
//! its own (so overlapping speech never interleaves in what it hears).

use std::time::Instant;

use voxrelay_media::{AudioTime, FRAME, SAMPLES_24K};
use voxrelay_signaling::events::{Item, ResponseOptions, ServerEvent};

use super::Conversation;

/// One participant's committed turn, as the agent hears it.
pub struct HeardTurn<'a> {
    pub item_id: &'a str,
    /// The speaker's display name (the agent is told who speaks).
    pub speaker: &'a str,
    /// Where the turn begins on the agent's timeline.
    pub start: AudioTime,
    pub frames: &'a [[i16; SAMPLES_24K]],
}

impl Conversation {
    /// A participant's speech began (`audio_start` on the room's timeline). Returns the id its
    /// turn's item will have. Anyone's speech barges in, as the caller's does in a 1:1 call.
    pub fn room_speech_started(&mut self, audio_start: AudioTime) -> String {
        let item_id = self.ids.item();
        self.emit(ServerEvent::SpeechStarted { audio_start_ms: audio_start.as_ms(), item_id: item_id.clone() });
        self.barge_in();
        item_id
    }

    pub fn room_speech_stopped(&mut self, audio_end: AudioTime, item_id: &str) {
        self.emit(ServerEvent::SpeechStopped { audio_end_ms: audio_end.as_ms(), item_id: Some(item_id.to_string()) });
    }

    /// Turns the floor released, in order: the agent hears each, attributed to its speaker,
    /// and each becomes a user item; then, with `create_response` on, one response answers them
    /// all (none while one is still in progress).
    pub fn room_turns(&mut self, turns: &[HeardTurn<'_>], now: Instant) {
        if turns.is_empty() {
            return;
        }
        for turn in turns {
            self.agent.on_speaker(turn.speaker);
            self.agent.on_speech_started(turn.start);
            let mut t = turn.start;
            for pcm in turn.frames {
                self.agent.on_audio(t, pcm);
                t = t + FRAME;
            }
            self.agent.on_committed(t, turn.item_id);
            let previous = self.last_item.replace(turn.item_id.to_string());
            self.emit(ServerEvent::InputCommitted { previous_item_id: previous.clone(), item_id: turn.item_id.to_string() });
            self.notes.push(crate::store::Note::UserAudio { item_id: turn.item_id.to_string() });
            self.emit(ServerEvent::ItemCreated { previous_item_id: previous, item: Item::user_audio(turn.item_id) });
        }
        let auto = self.config.turn_detection.is_some_and(|t| t.create_response);
        if auto && self.response.is_none() {
            self.start_response(now, ResponseOptions::default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::EchoAgent;
    use voxrelay_media::MediaEvent;
    use voxrelay_signaling::events::{Dialect, IdSource};
    use voxrelay_signaling::{SessionConfig, SessionId};

    fn room_conversation() -> Conversation {
        Conversation::new(Dialect::Ga, SessionId::random(), SessionConfig::default(), Box::new(EchoAgent::new()), IdSource::sequential())
    }

    fn types(c: &mut Conversation) -> Vec<String> {
        c.take_json().iter().map(|e| e["type"].as_str().unwrap_or_default().to_string()).collect()
    }

    #[test]
    fn two_turns_become_two_user_items_and_one_echoed_response() {
        let mut c = room_conversation();
        let a = c.room_speech_started(AudioTime::from_ms(100));
        let b = c.room_speech_started(AudioTime::from_ms(120));
        c.room_speech_stopped(AudioTime::from_ms(900), &a);
        types(&mut c);
        let alice = vec![[1i16; SAMPLES_24K]; 10];
        let bob = vec![[2i16; SAMPLES_24K]; 5];
        let now = Instant::now();
        c.room_turns(
            &[
                HeardTurn { item_id: &a, speaker: "alice", start: AudioTime::ZERO, frames: &alice },
                HeardTurn { item_id: &b, speaker: "bob", start: AudioTime::from_ms(200), frames: &bob },
            ],
            now,
        );
        let t = types(&mut c);
        let committed = t.iter().filter(|t| *t == "input_audio_buffer.committed").count();
        let responses = t.iter().filter(|t| *t == "response.created").count();
        assert_eq!((committed, responses), (2, 1), "{t:?}");
        // The echo agent plays back the last committed turn it heard: bob's 5 frames.
        let mut frames = 0;
        while let Some(f) = c.next_agent_frame(now) {
            if matches!(f, voxrelay_media::AgentFrame::Audio { .. }) {
                frames += 1;
            }
        }
        assert_eq!(frames, 5);
    }

    #[test]
    fn anyone_speaking_cuts_a_playing_response() {
        let mut c = room_conversation();
        let a = c.room_speech_started(AudioTime::ZERO);
        let frames = vec![[1i16; SAMPLES_24K]; 10];
        let now = Instant::now();
        c.room_turns(&[HeardTurn { item_id: &a, speaker: "alice", start: AudioTime::ZERO, frames: &frames }], now);
        while c.next_agent_frame(now).is_some() {}
        c.on_media(MediaEvent::PlaybackStarted { response: 1 }, now);
        types(&mut c);
        c.room_speech_started(AudioTime::from_ms(500));
        let t = types(&mut c);
        assert!(t.contains(&"response.done".to_string()) && t.contains(&"output_audio_buffer.cleared".to_string()), "{t:?}");
    }
}
