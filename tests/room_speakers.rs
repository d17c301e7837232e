//! The active-speaker rule on real speech: the fixture sentence (with a 360 ms pause inside),
//! twice, between silences, as RFC 6464 levels per 20 ms packet, the way a browser sends them.
//! Pins the default's behaviour (one speaking span per sentence, no flapping at the pause, how
//! late it starts and stops) and prints the alternatives it was chosen over (BENCHMARKS.md).

use crate::common;

use std::time::{Duration, Instant};

use voxrelay::room::{LevelWindow, SpeakerConfig};
use voxrelay_media::AudioLevel;

const FRAME: usize = 960;

/// Levels of: 1 s silence, sentence, 1.5 s silence, sentence, 1 s silence; and the frames that
/// are loud by the config's threshold (the ground truth the detector smooths).
fn levels() -> Vec<AudioLevel> {
    let speech = common::speech();
    let mut pcm = common::silence_ms(1000);
    pcm.extend(&speech);
    pcm.extend(common::silence_ms(1500));
    pcm.extend(&speech);
    pcm.extend(common::silence_ms(1000));
    pcm.chunks(FRAME).map(|f| AudioLevel::from_pcm(f, false)).collect()
}

/// Frames at which the window starts (true) or stops (false) speaking. Silent frames are sent
/// as packets too, as a browser does without DTX.
fn transitions(config: SpeakerConfig, levels: &[AudioLevel]) -> Vec<(usize, bool)> {
    let t0 = Instant::now();
    let mut w = LevelWindow::new(config, t0);
    let mut out = Vec::new();
    for (i, &l) in levels.iter().enumerate() {
        if w.push(l, t0 + Duration::from_millis(20 * i as u64)) {
            out.push((i, w.is_speaking()));
        }
    }
    out
}

/// The first and last loud frame of each sentence.
fn loud_spans(config: SpeakerConfig, levels: &[AudioLevel]) -> Vec<(usize, usize)> {
    let loud: Vec<usize> = levels.iter().enumerate().filter(|(_, l)| l.minus_dbov < config.loud_minus_dbov).map(|(i, _)| i).collect();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for i in loud {
        match spans.last_mut() {
            // Gaps under 1 s are inside a sentence (the fixture's own pause is 360 ms).
            Some((_, end)) if i - *end < 50 => *end = i,
            _ => spans.push((i, i)),
        }
    }
    spans
}

#[test]
fn the_default_rule_gives_one_speaking_span_per_sentence() {
    let levels = levels();
    let config = SpeakerConfig::DEFAULT;
    let spans = loud_spans(config, &levels);
    assert_eq!(spans.len(), 2, "the fixture twice: {spans:?}");

    for (name, stop) in [("stop when all quiet (default)", 0.0), ("stop at 10 %", 0.1), ("stop at 20 %", 0.2), ("no hysteresis", 0.39)] {
        let t = transitions(SpeakerConfig { stop_fraction: stop, ..config }, &levels);
        eprintln!("{name}: {} transitions: {t:?}", t.len());
    }
    let t = transitions(config, &levels);
    eprintln!("loud spans (frames of 20 ms): {spans:?}");
    assert_eq!(t.len(), 4, "start and stop once per sentence, no flapping in the pause: {t:?}");
    for (k, &(first, last)) in spans.iter().enumerate() {
        let (start, started) = t[2 * k];
        let (stop, stopped) = t[2 * k + 1];
        assert!(started && !stopped, "{t:?}");
        // Starting needs 8 loud buckets of the 20: never before the 8th loud frame, and speech
        // is dense enough that it takes at most 300 ms.
        assert!((first + 7..=first + 15).contains(&start), "start at frame {start}, speech from {first}");
        // Stopping waits for a whole quiet window: exactly 400 ms after the last loud frame.
        assert_eq!(stop, last + 20, "stop at frame {stop}, last loud frame {last}");
        eprintln!("sentence {k}: starts {} ms after its first loud frame, stops 400 ms after its last", (start - first) * 20);
    }
}
