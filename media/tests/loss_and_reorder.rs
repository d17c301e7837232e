//! Issue 3's loss scenario: 5 % random loss plus reordering (deterministic PRNG) through a whole
//! `SessionChain`. Proves that concealment keeps audio time continuous, that the counters add up,
//! that the jitter buffer deepens to absorb the reordering, and that the caller's audio survives
//! (its envelope matches a loss-free run of the same packets).

mod common;

use common::*;
use voxrelay_media::{SAMPLES_24K, SAMPLES_48K, SessionChain, StatsSnapshot, TurnDetectConfig, Uplink};

/// Delivery plan: for each packet, the tick it arrives at, or None if the network drops it.
fn plan(packets: usize, seed: u64) -> Vec<Option<usize>> {
    let mut rng = SplitMix64(seed);
    (0..packets)
        .map(|i| {
            let r = rng.unit();
            if r < 0.05 && i + 1 < packets {
                None // 5 % lost (never the last packet, so every drop is followed by a later one)
            } else if r < 0.12 {
                Some(i + 1 + (rng.next_u64() % 3) as usize) // 7 % held back 20-60 ms: reordered
            } else {
                Some(i)
            }
        })
        .collect()
}

/// Runs the packets through a chain with the given delivery plan; returns the uplink audio as
/// (start_ms, pcm) in order, and the final stats.
fn run(packets: &[voxrelay_media::RtpIn], delivery: &[Option<usize>]) -> (Vec<(u64, [i16; SAMPLES_24K])>, StatsSnapshot, u64) {
    let (mut chain, mut handle) = SessionChain::new(TurnDetectConfig { server_vad: false, ..TurnDetectConfig::default() }).unwrap();
    let last_tick = delivery.iter().flatten().max().copied().unwrap_or(0) + 15;
    let mut audio = Vec::new();
    for tick in 0..=last_tick {
        for (i, _) in delivery.iter().enumerate().filter(|(_, d)| **d == Some(tick)) {
            handle.ingress.push(packets[i]).unwrap();
        }
        chain.tick();
        while let Ok(item) = handle.uplink.pop() {
            if let Uplink::Audio { start, pcm } = item {
                audio.push((start.as_ms(), pcm));
            }
        }
        while handle.egress.pop().is_ok() {}
    }
    (audio, handle.stats.snapshot(), chain.audio_time().as_ms())
}

/// RMS of each 20 ms frame.
fn envelope(audio: &[(u64, [i16; SAMPLES_24K])]) -> Vec<f64> {
    audio.iter().map(|(_, pcm)| (pcm.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / SAMPLES_24K as f64).sqrt()).collect()
}

/// Pearson correlation of `a` against `b` shifted by `lag` frames.
fn correlation(a: &[f64], b: &[f64], lag: usize) -> f64 {
    let n = a.len().min(b.len().saturating_sub(lag));
    let (x, y) = (&a[..n], &b[lag..lag + n]);
    let (mx, my) = (x.iter().sum::<f64>() / n as f64, y.iter().sum::<f64>() / n as f64);
    let cov: f64 = x.iter().zip(y).map(|(p, q)| (p - mx) * (q - my)).sum();
    let vx: f64 = x.iter().map(|p| (p - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|q| (q - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

#[test]
fn five_percent_loss_and_reordering_are_concealed_without_breaking_audio_time() {
    // The fixture three times over: ≈ 14.5 s, 723 packets, sequence numbers wrapping mid-way.
    let speech: Vec<[i16; SAMPLES_48K]> = std::iter::repeat_n(speech_48k(), 3).flatten().collect();
    let packets = rtp_packets(&speech, 65_200);
    let delivery = plan(packets.len(), 0x5EED_0003);
    let dropped = delivery.iter().filter(|d| d.is_none()).count() as u64;
    let reordered = delivery.iter().enumerate().filter(|(i, d)| d.is_some_and(|t| t > *i)).count();
    assert!((20..=60).contains(&dropped) && reordered > 30, "pattern: {dropped} dropped, {reordered} held back");

    let (clean, clean_stats, _) = run(&packets, &packets.iter().enumerate().map(|(i, _)| Some(i)).collect::<Vec<_>>());
    let (lossy, s, audio_ms) = run(&packets, &delivery);

    // Audio time is continuous: one uplink frame per tick once playing, start_ms = index × 20 ms.
    assert!(lossy.iter().enumerate().all(|(k, (start_ms, _))| *start_ms == k as u64 * 20), "audio time has a gap");
    assert_eq!(audio_ms, lossy.len() as u64 * 20);

    // Counters add up.
    assert_eq!(s.packets_in, packets.len() as u64 - dropped);
    assert_eq!(s.codec_errors, 0);
    assert_eq!(s.frames_decoded + s.concealed + s.recovered, lossy.len() as u64, "{s:?}");
    assert_eq!(s.plc_frames, s.concealed + s.recovered);
    // The buffer drained at the end, so every packet was played, late, duplicate or skipped.
    assert_eq!(s.packets_in, s.frames_decoded + s.late + s.duplicates + s.jitter_skipped, "{s:?}");
    // Every dropped packet and every late one was given up on as lost (none are trailing).
    assert_eq!(s.lost, dropped + s.late, "{s:?}");
    // FEC rebuilt some losses from the next packet; PLC covered the rest and the underruns.
    assert!(s.recovered > 0 && s.recovered <= s.lost, "{s:?}");
    assert!(s.concealed >= s.underruns, "{s:?}");
    // Reordering by up to 60 ms raised the depth, so few of the held-back packets came too late.
    assert!(s.jitter_target_ms >= 40, "target depth {} ms", s.jitter_target_ms);
    assert!(s.late * 4 < reordered as u64, "{} of {reordered} held-back packets were late", s.late);
    // Without loss nothing is concealed but the empty tail after the last packet.
    assert_eq!((clean_stats.lost, clean_stats.recovered, clean_stats.late), (0, 0, 0), "{clean_stats:?}");
    assert_eq!(clean_stats.concealed, clean_stats.underruns);

    // The caller's audio survives: envelope correlation with the loss-free run, best lag (the
    // adaptive depth adds up to a few frames of delay).
    let (a, b) = (envelope(&clean), envelope(&lossy));
    let best = (0..15).map(|lag| correlation(&a, &b, lag)).fold(f64::MIN, f64::max);
    assert!(best > 0.9, "envelope correlation {best:.3}");
    eprintln!("loss+reorder: {dropped} dropped, {reordered} held back; {s:?}; envelope correlation {best:.3}");
}
