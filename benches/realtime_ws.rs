//! Per-frame cost of a Realtime WebSocket session on the tokio side (never the audio thread):
//! reading a client's 20 ms `input_audio_buffer.append` (JSON + base64) and writing the agent's
//! 20 ms `response.audio.delta` (base64 + JSON). `cargo bench --bench realtime_ws`; numbers in
//! BENCHMARKS.md.

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use voxrelay_signaling::events::{Dialect, PartRef, ServerEvent, parse_append};

fn frame_bytes() -> Vec<u8> {
    (0..480).flat_map(|i| (((i as f64 * 0.07).sin() * 6000.0) as i16).to_le_bytes()).collect()
}

fn benches(c: &mut Criterion) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let append = json!({"type": "input_audio_buffer.append", "event_id": "evt_1", "audio": b64.encode(frame_bytes())}).to_string();
    c.bench_function("ws_parse_append_20ms", |b| b.iter(|| black_box(parse_append(black_box(&append)))));
    let frame = frame_bytes();
    let at = PartRef { response_id: "resp_1".into(), item_id: "item_1".into(), output_index: 0, content_index: 0 };
    c.bench_function("ws_audio_delta_event_20ms", |b| {
        b.iter(|| {
            let event = ServerEvent::AudioDelta { at: at.clone(), delta: b64.encode(black_box(&frame)) };
            black_box(event.to_json(Dialect::Ga, "event_1"))
        })
    });
}

criterion_group!(realtime_ws, benches);
criterion_main!(realtime_ws);
