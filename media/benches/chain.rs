//! Per-20 ms-frame costs of the media chain, one thread. Compare with shared/MEASURED.md.
//! Input is the espeak-ng fixture (tests/fixtures/speech_16k.wav) upsampled to 48 kHz, so the
//! codec and VAD see real speech.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use voxrelay_media::{
    AgentFrame, EarshotVad, EnergyVad, JitterBuffer, MAX_DECODED_48K, MAX_OPUS_PACKET, OpusDecoder, OpusEncoder, Pop,
    Resampler, RtpIn, SAMPLES_16K, SAMPLES_24K, SAMPLES_48K, SampleRate, SessionChain, TurnConfig, Vad,
};

/// The fixture as 20 ms frames at 48 kHz.
fn speech_48k() -> Vec<[i16; SAMPLES_48K]> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/speech_16k.wav");
    let samples: Vec<i16> = hound::WavReader::open(path).unwrap().samples::<i16>().map(Result::unwrap).collect();
    let mut up = Resampler::new(SampleRate::HZ_16K, SampleRate::HZ_48K).unwrap();
    samples
        .chunks_exact(SAMPLES_16K)
        .map(|f| {
            let mut out = [0i16; SAMPLES_48K];
            up.process(f, &mut out);
            out
        })
        .collect()
}

fn packets(frames: &[[i16; SAMPLES_48K]]) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new().unwrap();
    let mut buf = [0u8; MAX_OPUS_PACKET];
    frames
        .iter()
        .map(|f| {
            let len = enc.encode(f, &mut buf).unwrap();
            buf[..len].to_vec()
        })
        .collect()
}

fn speech_16k(frames: &[[i16; SAMPLES_48K]]) -> Vec<[i16; SAMPLES_16K]> {
    let mut down = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_16K).unwrap();
    frames
        .iter()
        .map(|f| {
            let mut out = [0i16; SAMPLES_16K];
            down.process(f, &mut out);
            out
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let frames = speech_48k();
    let packets = packets(&frames);
    let frames16 = speech_16k(&frames);
    let n = frames.len();

    let mut dec = OpusDecoder::new().unwrap();
    let mut pcm = [0i16; MAX_DECODED_48K];
    let mut i = 0;
    c.bench_function("opus_decode_48k", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(dec.decode(&packets[i], &mut pcm).unwrap())
        })
    });

    let mut enc = OpusEncoder::new().unwrap();
    let mut out = [0u8; MAX_OPUS_PACKET];
    c.bench_function("opus_encode_48k_voip_32k", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(enc.encode(&frames[i], &mut out).unwrap())
        })
    });

    for (name, from, to) in [
        ("resample_48k_to_16k", SampleRate::HZ_48K, SampleRate::HZ_16K),
        ("resample_48k_to_24k", SampleRate::HZ_48K, SampleRate::HZ_24K),
    ] {
        let mut r = Resampler::new(from, to).unwrap();
        let mut out = vec![0i16; r.output_len()];
        c.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % n;
                r.process(&frames[i], &mut out);
                black_box(out[0])
            })
        });
    }
    let mut r = Resampler::new(SampleRate::HZ_24K, SampleRate::HZ_48K).unwrap();
    let in24 = [1000i16; SAMPLES_24K];
    let mut out48 = [0i16; SAMPLES_48K];
    c.bench_function("resample_24k_to_48k", |b| b.iter(|| r.process(black_box(&in24), &mut out48)));

    let mut earshot = EarshotVad::new();
    c.bench_function("vad_earshot_20ms", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(earshot.frame_16k(&frames16[i]))
        })
    });
    let mut energy = EnergyVad::new();
    c.bench_function("vad_energy_20ms", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(energy.frame_16k(&frames16[i]))
        })
    });

    // Inbound: jitter buffer + decode + 48->24 (uplink) + 48->16 + earshot.
    let mut jitter = JitterBuffer::new();
    let mut dec = OpusDecoder::new().unwrap();
    let mut to24 = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_24K).unwrap();
    let mut to16 = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_16K).unwrap();
    let mut vad = EarshotVad::new();
    let rtp: Vec<RtpIn> = packets.iter().enumerate().map(|(s, p)| RtpIn::new(s as u16, s as u32 * 960, p).unwrap()).collect();
    let mut seq = 0usize;
    jitter.push(&rtp[0]);
    jitter.push(&rtp[1]);
    c.bench_function("inbound_chain", |b| {
        b.iter(|| {
            seq += 1;
            jitter.push(&rtp[(seq + 1) % n]);
            let mut pcm48 = [0i16; SAMPLES_48K];
            match jitter.pop() {
                Pop::Packet(p) => dec.decode(p.bytes(), &mut pcm48).unwrap(),
                _ => dec.conceal(&mut pcm48).unwrap(),
            };
            let (mut p24, mut p16) = ([0i16; SAMPLES_24K], [0i16; SAMPLES_16K]);
            to24.process(&pcm48, &mut p24);
            to16.process(&pcm48, &mut p16);
            black_box(vad.frame_16k(&p16))
        })
    });

    // Outbound: 24->48 + encode.
    let frames24: Vec<[i16; SAMPLES_24K]> = {
        let mut down = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_24K).unwrap();
        frames
            .iter()
            .map(|f| {
                let mut o = [0i16; SAMPLES_24K];
                down.process(f, &mut o);
                o
            })
            .collect()
    };
    let mut up = Resampler::new(SampleRate::HZ_24K, SampleRate::HZ_48K).unwrap();
    let mut enc = OpusEncoder::new().unwrap();
    c.bench_function("outbound_chain", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            let mut pcm48 = [0i16; SAMPLES_48K];
            up.process(&frames24[i], &mut pcm48);
            black_box(enc.encode(&pcm48, &mut out).unwrap())
        })
    });

    // One whole SessionChain tick, caller and agent both talking (the worst case per session).
    let (mut chain, mut handle) = SessionChain::new(TurnConfig { interrupt_response: false, ..TurnConfig::default() }).unwrap();
    let mut k = 0usize;
    c.bench_function("session_tick_full_duplex", |b| {
        b.iter(|| {
            k += 1;
            let _ = handle.ingress.push(rtp[k % n]);
            let _ = handle.agent_out.push(AgentFrame::Audio { response: 1, pcm: frames24[k % n] });
            chain.tick();
            while handle.egress.pop().is_ok() {}
            while handle.uplink.pop().is_ok() {}
        })
    });
}

criterion_group!(chain, benches);
criterion_main!(chain);
