//! Per-20 ms-frame cost of the telephony bridge (issue 9), one thread, on real speech (the
//! fixture as mu-law 8 kHz):
//! - inbound: base64 payload decode -> the session's worker tick (jitter buffer, mu-law decode,
//!   8 -> 48 kHz, 48 -> 24 kHz uplink, 48 -> 16 kHz, earshot VAD, echo guard, turn detector);
//! - outbound: an agent frame (24 kHz) -> worker tick (24 -> 48 kHz, mix, 48 -> 8 kHz, mu-law)
//!   -> base64 into the `media` message text and the `mark` after it.
//!
//! The JSON parse of the inbound message (src/telephony/twilio.rs, tokio side) is not included:
//! this crate has no JSON. Numbers in BENCHMARKS.md ("Telephony bridge");
//! `cargo bench -p voxrelay-media --bench phone_chain`.

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use voxrelay_media::{
    AgentFrame, AudioCodec, EarshotVad, EchoGuardConfig, G711Law, Resampler, RtpIn, SAMPLES_16K, SAMPLES_24K,
    SAMPLES_48K, SampleRate, SessionChain, SessionOptions, TurnDetectConfig, Uplink, Vad, VadKind, linear_to_ulaw,
};

/// The 48 kHz speech fixture as 20 ms mu-law frames at 8 kHz.
fn mulaw_frames() -> Vec<[u8; 160]> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/speech.wav");
    let samples: Vec<i16> = hound::WavReader::open(path).unwrap().samples::<i16>().map(Result::unwrap).collect();
    let mut down = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_8K).unwrap();
    samples
        .chunks_exact(SAMPLES_48K)
        .map(|f| {
            let mut pcm8 = [0i16; 160];
            down.process(f, &mut pcm8);
            pcm8.map(linear_to_ulaw)
        })
        .collect()
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const SID: &str = "MZ00000000000000000000000000000001";

fn phone_session() -> (SessionChain, voxrelay_media::SessionHandle) {
    let options =
        SessionOptions { codec: AudioCodec::Pcmu, vad: VadKind::Earshot, echo_guard: EchoGuardConfig::DEFAULT, ..SessionOptions::default() };
    SessionChain::with_options(TurnDetectConfig::default(), options).unwrap()
}

fn bench(c: &mut Criterion) {
    let frames = mulaw_frames();
    let payloads: Vec<String> = frames.iter().map(|f| B64.encode(f)).collect();

    c.bench_function("phone inbound: base64 payload decode", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % payloads.len();
            black_box(B64.decode(black_box(&payloads[i])).unwrap())
        })
    });

    c.bench_function("phone inbound: mu-law decode + 8->16 kHz + earshot VAD", |b| {
        let mut up = Resampler::new(SampleRate::HZ_8K, SampleRate::HZ_16K).unwrap();
        let mut vad = EarshotVad::new();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % frames.len();
            let mut pcm8 = [0i16; 160];
            G711Law::Mu.decode(&frames[i], &mut pcm8);
            let mut pcm16 = [0i16; SAMPLES_16K];
            up.process(&pcm8, &mut pcm16);
            black_box(vad.frame_16k(&pcm16))
        })
    });

    c.bench_function("phone inbound chain: base64 -> worker tick (mu-law, resample, VAD, echo guard, turn)", |b| {
        let (mut chain, mut handle) = phone_session();
        let mut chunk = 0u64;
        b.iter(|| {
            chunk += 1;
            let payload = B64.decode(&payloads[(chunk as usize - 1) % payloads.len()]).unwrap();
            handle.ingress.push(RtpIn::new(chunk as u16, (chunk * 160) as u32, &payload).unwrap()).unwrap();
            chain.tick();
            while let Ok(u) = handle.uplink.pop() {
                black_box(matches!(u, Uplink::Audio { .. }));
            }
            while handle.egress.pop().is_ok() {}
        })
    });

    c.bench_function("phone outbound chain: agent frame -> worker tick (resample, mu-law) -> base64 media + mark", |b| {
        let (mut chain, mut handle) = phone_session();
        let pcm24: Vec<[i16; SAMPLES_24K]> = (0..50)
            .map(|f| std::array::from_fn(|i| (((f * SAMPLES_24K + i) as f64 * 0.07).sin() * 6000.0) as i16))
            .collect();
        let mut n = 0usize;
        b.iter(|| {
            n += 1;
            let _ = handle.agent_out.push(AgentFrame::Audio { response: 1, pcm: pcm24[n % pcm24.len()] });
            chain.tick();
            while handle.uplink.pop().is_ok() {}
            if let Ok(out) = handle.egress.pop() {
                // The exact text src/telephony/twilio.rs sends.
                black_box(format!(r#"{{"event":"media","streamSid":"{SID}","media":{{"payload":"{}"}}}}"#, B64.encode(out.bytes())));
                black_box(format!(r#"{{"event":"mark","streamSid":"{SID}","mark":{{"name":"{n}"}}}}"#));
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
