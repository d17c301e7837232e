//! The SFU's per-packet work without I/O (issue 17's forwarding hot path): a publisher's packet
//! updates its speaker window, then goes out on every subscriber slot carrying it with a
//! rewritten header; and the slot policy run when the ranking changes.
//! `cargo bench --bench forwarding`; numbers in BENCHMARKS.md.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use voxrelay::room::{ActiveSpeakers, Slot, SourceHeader, SpeakerConfig, TrackKey, selection};
use voxrelay_media::AudioLevel;

const SPEAKER: TrackKey = TrackKey(1);

fn header(i: u32) -> SourceHeader {
    SourceHeader { ssrc: 0xA, seq: i as u16, timestamp: i.wrapping_mul(960), marker: false }
}

fn benches(c: &mut Criterion) {
    let t0 = Instant::now();
    let frame = |i: u32| t0 + Duration::from_millis(20 * u64::from(i));

    let mut slot = Slot::new(7, 0, 0);
    slot.assign(Some(SPEAKER));
    let mut i = 0u32;
    c.bench_function("slot_forward_1_packet", |b| {
        b.iter(|| {
            i += 1;
            black_box(slot.forward(SPEAKER, black_box(header(i)), frame(i)).unwrap())
        })
    });

    let mut speakers = ActiveSpeakers::new(SpeakerConfig::DEFAULT, t0);
    for k in 0..10 {
        speakers.on_level(TrackKey(k), AudioLevel { minus_dbov: 30, voice: true }, t0);
    }
    c.bench_function("speaker_level_1_packet_of_10_publishers", |b| {
        b.iter(|| {
            i += 1;
            let level = AudioLevel { minus_dbov: (i % 60) as u8, voice: true };
            black_box(speakers.on_level(TrackKey(i % 10), level, frame(i / 10)))
        })
    });

    // One packet of the room's top speaker fanned out to 100 subscribers (one slot each):
    // per packet in, 100 headers out.
    let mut slots: Vec<Slot> = (0..100).map(|s| Slot::new(s, 0, 0)).collect();
    for s in &mut slots {
        s.assign(Some(SPEAKER));
    }
    c.bench_function("fan_out_1_packet_to_100_subscribers", |b| {
        b.iter(|| {
            i += 1;
            let now = frame(i);
            speakers.on_level(SPEAKER, AudioLevel { minus_dbov: 20, voice: true }, now);
            for s in &mut slots {
                black_box(s.forward(SPEAKER, header(i), now).unwrap());
            }
        })
    });

    let ranking: Vec<TrackKey> = (0..5).map(TrackKey).collect();
    c.bench_function("select_3_slots_of_5_speakers", |b| {
        b.iter(|| {
            let mut three = [Some(TrackKey(9)), None, Some(TrackKey(3))];
            black_box(selection::assign(&mut three, black_box(&ranking), Some(TrackKey(0))))
        })
    });
}

criterion_group!(forwarding, benches);
criterion_main!(forwarding);
