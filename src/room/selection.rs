//! Which speakers a subscriber's slots carry ("top-N audio"): the room's current speakers,
//! loudest first, never the subscriber itself.
//! Owns: the slot policy. Must never: rewrite packets (slot.rs) or judge who speaks (speakers.rs).
//!
//! The policy is sticky, because every change is a switch the listener can hear: a speaker keeps
//! its slot for as long as it speaks, and after it stops, until another speaker needs the slot.
//! A new speaker takes an empty slot first, then the slot of someone who has stopped. A speaker
//! is never pushed off by a louder one: with more simultaneous speakers than slots, the first N
//! keep them (a crowd talking over each other is not helped by slots flipping between them).

/// Updates `slots` (each `None` or a track) for the current `speakers` (loudest first),
/// skipping `exclude` (the subscriber's own track). Returns the slots that changed, by index,
/// as a bit set (at most 64 slots per subscriber).
pub fn assign<K: Copy + PartialEq>(slots: &mut [Option<K>], speakers: &[K], exclude: Option<K>) -> u64 {
    debug_assert!(slots.len() <= 64);
    let mut changed = 0u64;
    for &speaker in speakers {
        if Some(speaker) == exclude || slots.contains(&Some(speaker)) {
            continue;
        }
        let free = slots.iter().position(Option::is_none);
        let stopped = || slots.iter().position(|s| s.is_some_and(|k| !speakers.contains(&k)));
        let Some(i) = free.or_else(stopped) else { break };
        slots[i] = Some(speaker);
        changed |= 1 << i;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::assign;

    #[test]
    fn speakers_fill_empty_slots_loudest_first_and_never_hear_themselves() {
        let mut slots = [None; 2];
        assert_eq!(assign(&mut slots, &[7, 1, 3], Some(7)), 0b11);
        assert_eq!(slots, [Some(1), Some(3)]);
    }

    #[test]
    fn a_speaker_keeps_its_slot_while_speaking_even_when_outranked() {
        let mut slots = [Some(1), Some(3)];
        assert_eq!(assign(&mut slots, &[5, 3, 1], None), 0);
        assert_eq!(slots, [Some(1), Some(3)]);
    }

    #[test]
    fn a_stopped_speaker_stays_until_someone_needs_the_slot() {
        let mut slots = [Some(1), Some(3)];
        assert_eq!(assign(&mut slots, &[3], None), 0, "1 stopped, nobody new: nothing switches");
        assert_eq!(slots, [Some(1), Some(3)]);
        assert_eq!(assign(&mut slots, &[4, 3], None), 0b01, "4 takes the slot 1 no longer uses");
        assert_eq!(slots, [Some(4), Some(3)]);
        let mut one = [Some(9)];
        assert_eq!(assign(&mut one, &[], None), 0);
        assert_eq!(assign(&mut one, &[2, 9], Some(2)), 0, "only the subscriber itself is new");
        assert_eq!(one, [Some(9)]);
    }
}
