//! Per-frame cost of the provider adapters' wire work, on the tokio side (never the audio
//! thread): caller audio into an upstream message, and provider audio back into 20 ms frames.
//! `cargo bench --bench provider_wire`; numbers in BENCHMARKS.md.

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use std::time::Duration;
use voxrelay::agent::bridge::{Cmd, Link};
use voxrelay::agent::gemini::Gemini;
use voxrelay::agent::openai::wire::{Session, audio_append};
use voxrelay::agent::providers::{GeminiConfig, OpenAiConfig, OpenAiDialect};
use voxrelay::agent::upstream::Protocol;
use voxrelay_media::AudioTime;
use voxrelay_signaling::SessionConfig;

fn speechlike() -> [i16; 480] {
    std::array::from_fn(|i| ((i as f64 * 0.07).sin() * 6000.0 + (i as f64 * 0.31).sin() * 2000.0) as i16)
}

fn openai() -> Session {
    let cfg = OpenAiConfig {
        api_key: "k".into(),
        model: "m".into(),
        voice: "v".into(),
        base_url: "ws://127.0.0.1:1/v1/realtime".into(),
        dialect: OpenAiDialect::Ga,
        transcription_model: "t".into(),
        connect_timeout: Duration::from_secs(1),
    };
    Session::new(cfg, SessionConfig::default())
}

fn bench(c: &mut Criterion) {
    let pcm = speechlike();
    c.bench_function("openai: caller frame -> input_audio_buffer.append", |b| b.iter(|| black_box(audio_append(black_box(&pcm)))));

    let (mut link, _tx, mut up) = Link::detached();
    let mut s = openai();
    s.on_cmd(Cmd::StartResponse(1, Default::default()), &mut link);
    s.on_event(&json!({"type": "response.created", "response": {"id": "r"}}), &mut link);
    let bytes: Vec<u8> = (0..2400).flat_map(|i| ((i % 300) as i16 * 20).to_le_bytes()).collect();
    let delta = json!({"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "output_index": 0,
        "content_index": 0, "delta": base64::engine::general_purpose::STANDARD.encode(&bytes)})
    .to_string();
    c.bench_function("openai: 100 ms audio delta (parse + decode + 5 frames)", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_str(black_box(&delta)).unwrap();
            s.on_event(&v, &mut link);
            while up.try_recv().is_ok() {}
        })
    });

    let cfg = GeminiConfig {
        api_key: "k".into(),
        model: "models/m".into(),
        voice: "v".into(),
        base_url: "ws://127.0.0.1:1/ws".into(),
        connect_timeout: Duration::from_secs(1),
    };
    let mut g = Gemini::new(cfg, SessionConfig::default());
    g.opening(false);
    g.on_message(r#"{"setupComplete":{}}"#, &mut link);
    c.bench_function("gemini: caller frame -> 16 kHz realtimeInput", |b| {
        b.iter(|| black_box(g.on_cmd(Cmd::Audio { start: AudioTime::from_ms(0), pcm: Box::new(pcm) }, &mut link)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
