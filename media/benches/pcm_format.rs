//! The Realtime WebSocket's audio edge, per 20 ms frame: a client's pcm16 or mu-law chunk cut
//! into the session's L16 frame (PcmInput) and the session's frame turned back into the client's
//! format (PcmOutput). Run: `cargo bench -p voxrelay-media --bench pcm_format`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use voxrelay_media::{G711Law, L16_FRAME_BYTES, PcmInput, PcmOutput};

fn tone_24k() -> Vec<u8> {
    (0..480).flat_map(|i| ((6000.0 * (i as f64 * 0.08).sin()) as i16).to_le_bytes()).collect()
}

fn benches(c: &mut Criterion) {
    let l16 = tone_24k();
    let mut ulaw = Vec::new();
    PcmOutput::new(Some(G711Law::Mu)).unwrap().convert(&l16, &mut ulaw);
    let mut pcm16_in = PcmInput::new(None).unwrap();
    c.bench_function("ws_in_pcm16_frame", |b| {
        b.iter(|| {
            let mut rest = &l16[..];
            black_box(pcm16_in.next_frame(&mut rest))
        })
    });
    let mut ulaw_in = PcmInput::new(Some(G711Law::Mu)).unwrap();
    c.bench_function("ws_in_ulaw_frame_to_24k", |b| {
        b.iter(|| {
            let mut rest = &ulaw[..];
            black_box(ulaw_in.next_frame(&mut rest))
        })
    });
    let mut out = Vec::with_capacity(L16_FRAME_BYTES);
    let mut pcm16_out = PcmOutput::new(None).unwrap();
    c.bench_function("ws_out_pcm16_frame", |b| {
        b.iter(|| {
            out.clear();
            pcm16_out.convert(&l16, &mut out);
            black_box(out.len())
        })
    });
    let mut ulaw_out = PcmOutput::new(Some(G711Law::Mu)).unwrap();
    c.bench_function("ws_out_24k_frame_to_ulaw", |b| {
        b.iter(|| {
            out.clear();
            ulaw_out.convert(&l16, &mut out);
            black_box(out.len())
        })
    });
}

criterion_group!(pcm_format, benches);
criterion_main!(pcm_format);
