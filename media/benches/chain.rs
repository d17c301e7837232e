//! Per-20 ms-frame costs of the media chain, one thread. Compare with shared/MEASURED.md; the
//! results and the commands are in BENCHMARKS.md.
//! Input is the espeak-ng fixture (tests/fixtures/speech_16k.wav) upsampled to 48 kHz, so the
//! codecs and VADs see real speech. Before measuring, the setup prints (stderr) the SNR of an
//! Opus round trip per encoder complexity, the quality side of the complexity choice.

use criterion::{Criterion, criterion_group, criterion_main};

// The fixture loaders the media tests use (one copy of speech_48k).
#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;
use common::speech_48k;
use std::hint::black_box;
use voxrelay_media::{
    AgentFrame, AudioCodec, EarshotVad, EnergyVad, G711Law, JitterBuffer, MAX_DECODED_48K, MAX_OPUS_PACKET, OpusDecoder, OpusEncoder, Pop,
    Resampler, RtpIn, SAMPLES_16K, SAMPLES_24K, SAMPLES_48K, SESSION_RATE, SampleRate, SessionChain, SessionOptions, TurnDetectConfig, Vad,
    VadKind, mix,
};

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

fn resample_all<const N: usize>(frames: &[[i16; SAMPLES_48K]], to: SampleRate) -> Vec<[i16; N]> {
    let mut down = Resampler::new(SampleRate::HZ_48K, to).unwrap();
    frames
        .iter()
        .map(|f| {
            let mut out = [0i16; N];
            down.process(f, &mut out);
            out
        })
        .collect()
}

/// SNR (dB) of an Opus round trip at `complexity`, best alignment: a crude but monotonic proxy
/// for how much the encoder's extra analysis buys on speech.
fn round_trip_snr_db(frames: &[[i16; SAMPLES_48K]], complexity: i32, fec: bool) -> f64 {
    let mut enc = OpusEncoder::with_settings(complexity, fec).unwrap();
    let mut dec = OpusDecoder::new().unwrap();
    let (mut buf, mut pcm) = ([0u8; MAX_OPUS_PACKET], [0i16; MAX_DECODED_48K]);
    let mut out = Vec::new();
    for f in frames {
        let len = enc.encode(f, &mut buf).unwrap();
        let n = dec.decode(&buf[..len], &mut pcm).unwrap();
        out.extend_from_slice(&pcm[..n]);
    }
    let input: Vec<i16> = frames.iter().flatten().copied().collect();
    (0..600)
        .map(|lag| {
            let (mut sig, mut err) = (0.0f64, 0.0f64);
            for (x, y) in input.iter().zip(&out[lag..]) {
                sig += (*x as f64).powi(2);
                err += (*x as f64 - *y as f64).powi(2);
            }
            10.0 * (sig / err.max(1.0)).log10()
        })
        .fold(f64::MIN, f64::max)
}

fn codecs(c: &mut Criterion, frames: &[[i16; SAMPLES_48K]], packets: &[Vec<u8>]) {
    let n = frames.len();
    let mut i = 0;
    let mut dec = OpusDecoder::new().unwrap();
    let mut pcm = [0i16; MAX_DECODED_48K];
    c.bench_function("opus_decode_48k", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(dec.decode(&packets[i], &mut pcm).unwrap())
        })
    });
    // What a session runs: straight to its 24 kHz.
    let mut dec24 = OpusDecoder::at(SESSION_RATE).unwrap();
    c.bench_function("opus_decode_24k", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(dec24.decode(&packets[i], &mut pcm).unwrap())
        })
    });

    let mut out = [0u8; MAX_OPUS_PACKET];
    for complexity in [0, 3, 5, 8, 10] {
        for fec in [true, false] {
            eprintln!("opus complexity {complexity:>2} fec {fec:>5}: round-trip SNR {:.2} dB", round_trip_snr_db(frames, complexity, fec));
            let mut enc = OpusEncoder::with_settings(complexity, fec).unwrap();
            let name = format!("opus_encode_voip_32k_c{complexity}_fec_{}", if fec { "on" } else { "off" });
            c.bench_function(&name, |b| {
                b.iter(|| {
                    i = (i + 1) % n;
                    black_box(enc.encode(&frames[i], &mut out).unwrap())
                })
            });
        }
    }

    // What a session runs: the agent's 24 kHz speech as it is, at the session's settings.
    let frames24: Vec<[i16; SAMPLES_24K]> = resample_all(frames, SampleRate::HZ_24K);
    // The server's encoder: no FEC until its peer reports loss (`PeerLoss`), then FEC for it.
    for (name, loss) in [("opus_encode_24k_input_session", 0), ("opus_encode_24k_input_session_peer_loss_10", 10)] {
        let mut enc24 = OpusEncoder::for_input(SESSION_RATE).unwrap();
        enc24.set_expected_loss(loss);
        c.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(enc24.encode(&frames24[i], &mut out).unwrap())
            })
        });
    }

    // G.711, one 20 ms frame (160 samples at 8 kHz) each way.
    let frames8: Vec<[i16; 160]> = resample_all(frames, SampleRate::HZ_8K);
    for law in [G711Law::Mu, G711Law::A] {
        let mut codes = [0u8; 160];
        let mut back = [0i16; 160];
        c.bench_function(&format!("g711_{law:?}_encode_decode_20ms").to_lowercase(), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                law.encode(&frames8[i], &mut codes);
                law.decode(black_box(&codes), &mut back);
                black_box(back[0])
            })
        });
    }
    for (name, from, to) in [
        ("resample_48k_to_16k", SampleRate::HZ_48K, SampleRate::HZ_16K),
        ("resample_48k_to_24k", SampleRate::HZ_48K, SampleRate::HZ_24K),
        ("resample_48k_to_8k", SampleRate::HZ_48K, SampleRate::HZ_8K),
    ] {
        let mut r = Resampler::new(from, to).unwrap();
        let mut o = vec![0i16; r.output_len()];
        c.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % n;
                r.process(&frames[i], &mut o);
                black_box(o[0])
            })
        });
    }
    {
        let mut r = Resampler::for_analysis(SampleRate::HZ_48K, SampleRate::HZ_16K).unwrap();
        let mut o = vec![0i16; r.output_len()];
        c.bench_function("resample_48k_to_16k_analysis", |b| {
            b.iter(|| {
                i = (i + 1) % n;
                r.process(&frames[i], &mut o);
                black_box(o[0])
            })
        });
    }
    // The session's own: the VAD feed (2/3, analysis filter) and G.711 both ways.
    for (name, to, analysis) in
        [("resample_24k_to_16k_analysis", SampleRate::HZ_16K, true), ("resample_24k_to_8k", SampleRate::HZ_8K, false)]
    {
        let mut r = if analysis { Resampler::for_analysis(SESSION_RATE, to) } else { Resampler::new(SESSION_RATE, to) }.unwrap();
        let mut o = vec![0i16; r.output_len()];
        c.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % n;
                r.process(&frames24[i], &mut o);
                black_box(o[0])
            })
        });
    }
    for (name, from, to) in [
        ("resample_24k_to_48k", SampleRate::HZ_24K, SampleRate::HZ_48K),
        ("resample_8k_to_48k", SampleRate::HZ_8K, SampleRate::HZ_48K),
        ("resample_8k_to_24k", SampleRate::HZ_8K, SESSION_RATE),
    ] {
        let mut r = Resampler::new(from, to).unwrap();
        let input = vec![1000i16; r.input_len()];
        let mut o = vec![0i16; r.output_len()];
        c.bench_function(name, |b| b.iter(|| r.process(black_box(&input), &mut o)));
    }

    // Mixer (at the session rate): one source (the agent alone, the common case) and three loud
    // ones (limiter busy).
    let mut mixed = [0i16; SAMPLES_24K];
    c.bench_function("mix_1_source", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            mix(&[&frames24[i]], &mut mixed);
            black_box(mixed[0])
        })
    });
    let loud: Vec<[i16; SAMPLES_24K]> = frames24.iter().map(|f| f.map(|s| s.saturating_mul(4))).collect();
    c.bench_function("mix_3_loud_sources", |b| {
        b.iter(|| {
            i = (i + 1) % (n - 2);
            mix(&[&loud[i], &loud[i + 1], &loud[i + 2]], &mut mixed);
            black_box(mixed[0])
        })
    });
}

fn vads(c: &mut Criterion, frames16: &[[i16; SAMPLES_16K]]) {
    let n = frames16.len();
    let mut i = 0;
    #[allow(unused_mut)]
    let mut list: Vec<(&str, Box<dyn Vad>)> =
        vec![("vad_earshot_20ms", Box::new(EarshotVad::new())), ("vad_energy_20ms", Box::new(EnergyVad::new()))];
    // Only with `--features silero`: one 512-sample inference every 1.6 frames on average.
    #[cfg(feature = "silero")]
    list.push(("vad_silero_20ms", Box::new(voxrelay_media::SileroVad::new())));
    for (name, mut vad) in list {
        c.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(vad.frame_16k(&frames16[i]))
            })
        });
    }
}

/// Inbound: jitter buffer + Opus decode to 24 kHz (the uplink) + 24->16 + VAD, per VAD.
fn inbound(c: &mut Criterion, packets: &[Vec<u8>]) {
    let n = packets.len();
    let rtp: Vec<RtpIn> = packets.iter().enumerate().map(|(s, p)| RtpIn::new(s as u16, s as u32 * 960, p).unwrap()).collect();
    #[allow(unused_mut)]
    let mut kinds = vec![("inbound_chain_earshot", VadKind::Earshot), ("inbound_chain_energy", VadKind::Energy)];
    #[cfg(feature = "silero")]
    kinds.push(("inbound_chain_silero", VadKind::Silero));
    for (name, kind) in kinds {
        let mut jitter = JitterBuffer::new();
        let mut dec = OpusDecoder::at(SESSION_RATE).unwrap();
        let mut to16 = Resampler::for_analysis(SESSION_RATE, SampleRate::HZ_16K).unwrap();
        let mut vad = kind.build();
        let mut seq = 1usize;
        jitter.push(&rtp[0], 0);
        jitter.push(&rtp[1], 0);
        c.bench_function(name, |b| {
            b.iter(|| {
                seq += 1;
                // Sequence numbers keep counting (u16 wrap) while the payloads cycle.
                let p = &rtp[seq % n];
                jitter.push(&RtpIn { seq: seq as u16, timestamp: (seq as u32).wrapping_mul(960), ..*p }, seq as u64 * 20);
                let mut pcm = [0i16; SAMPLES_24K];
                match jitter.pop() {
                    Pop::Packet(p) => dec.decode(p.bytes(), &mut pcm).unwrap(),
                    _ => dec.conceal(&mut pcm).unwrap(),
                };
                let mut p16 = [0i16; SAMPLES_16K];
                to16.process(&pcm, &mut p16);
                black_box(vad.frame_16k(&p16))
            })
        });
    }
}

/// Outbound: mix (one source) + Opus encode of 24 kHz input at the session's settings.
fn outbound(c: &mut Criterion, frames24: &[[i16; SAMPLES_24K]]) {
    let n = frames24.len();
    let mut i = 0;
    let mut enc = OpusEncoder::for_input(SESSION_RATE).unwrap();
    let mut out = [0u8; MAX_OPUS_PACKET];
    c.bench_function("outbound_chain", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            let mut pcm = [0i16; SAMPLES_24K];
            mix(&[&frames24[i]], &mut pcm);
            black_box(enc.encode(&pcm, &mut out).unwrap())
        })
    });
}

/// One whole SessionChain tick, caller and agent both talking (the worst case per session), for
/// Opus + earshot, Opus + energy, PCMU + energy and L16 (a Realtime WebSocket session) + earshot.
fn session_ticks(c: &mut Criterion, frames: &[[i16; SAMPLES_48K]], packets: &[Vec<u8>], frames24: &[[i16; SAMPLES_24K]]) {
    let n = frames.len();
    let frames8: Vec<[i16; 160]> = resample_all(frames, SampleRate::HZ_8K);
    let turn = TurnDetectConfig { interrupt_response: false, ..TurnDetectConfig::default() };
    for (name, codec, vad) in [
        ("session_tick_full_duplex_opus_earshot", AudioCodec::Opus, VadKind::Earshot),
        ("session_tick_full_duplex_opus_energy", AudioCodec::Opus, VadKind::Energy),
        ("session_tick_full_duplex_pcmu_energy", AudioCodec::Pcmu, VadKind::Energy),
        ("session_tick_full_duplex_l16_earshot", AudioCodec::L16, VadKind::Earshot),
    ] {
        let (mut chain, mut handle) = SessionChain::with_options(turn, SessionOptions { codec, vad, ..SessionOptions::default() }).unwrap();
        let mut k = 0usize;
        c.bench_function(name, |b| {
            b.iter(|| {
                k += 1;
                let packet = match codec {
                    AudioCodec::Opus => RtpIn::new(k as u16, (k as u32).wrapping_mul(960), &packets[k % n]).unwrap(),
                    AudioCodec::L16 => {
                        let bytes: Vec<u8> = frames24[k % n].iter().flat_map(|s| s.to_le_bytes()).collect();
                        RtpIn::new(k as u16, (k as u32).wrapping_mul(480), &bytes).unwrap()
                    }
                    _ => {
                        let mut codes = [0u8; 160];
                        G711Law::Mu.encode(&frames8[k % n], &mut codes);
                        RtpIn::new(k as u16, (k as u32).wrapping_mul(160), &codes).unwrap()
                    }
                };
                let _ = handle.ingress.push(packet);
                let _ = handle.agent_out.push(AgentFrame::Audio { response: 1, pcm: frames24[k % n] });
                chain.tick();
                while handle.egress.pop().is_ok() {}
                while handle.uplink.pop().is_ok() {}
            })
        });
    }
}

/// One whole tick of a silent caller while the agent is quiet too, the ways a caller's silence
/// arrives: coded every 20 ms (a browser without DTX), the 3-byte silence packet every 20 ms (the
/// load generator with `--dtx false`), or in DTX (one DTX packet, then a comfort-noise update
/// every 400 ms; `usedtx=1` in the answer). The input is faint noise
/// (≈ −72 dBFS), what a microphone with noise suppression sends while nobody talks.
fn silent_caller_ticks(c: &mut Criterion) {
    let mut seed = 1u32;
    let noise: Vec<[i16; SAMPLES_48K]> = (0..400)
        .map(|_| {
            let mut f = [0i16; SAMPLES_48K];
            for s in f.iter_mut() {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *s = ((seed >> 16) as i16) >> 12;
            }
            f
        })
        .collect();
    // The steady state after the encoder's hangover: `None` where a DTX sender sends nothing.
    let coded: Vec<Option<Vec<u8>>> = packets(&noise).into_iter().skip(100).map(Some).collect();
    let dtx: Vec<Option<Vec<u8>>> =
        common::dtx_rtp_packets(&noise, 0).into_iter().skip(100).map(|p| p.map(|p| p.bytes().to_vec())).collect();
    let sent = dtx.iter().flatten().count();
    eprintln!("silent caller: DTX sends {sent} of {} frames (coded: {} bytes per frame)", dtx.len(), coded[0].as_ref().map_or(0, Vec::len));
    // What the load generator sends without DTX: the 3-byte CELT silence packet every frame.
    let silence_packet: Vec<Option<Vec<u8>>> = vec![Some(voxrelay_media::OPUS_SILENCE.to_vec())];
    for (name, stream) in [
        ("session_tick_silent_caller_coded", &coded),
        ("session_tick_silent_caller_silence_packet", &silence_packet),
        ("session_tick_silent_caller_dtx", &dtx),
    ] {
        let (mut chain, mut handle) = SessionChain::with_options(TurnDetectConfig::default(), SessionOptions::default()).unwrap();
        let (mut k, mut seq) = (0usize, 0u16);
        c.bench_function(name, |b| {
            b.iter(|| {
                k += 1;
                if let Some(payload) = &stream[k % stream.len()] {
                    let _ = handle.ingress.push(RtpIn::new(seq, (k as u32).wrapping_mul(960), payload).unwrap());
                    seq = seq.wrapping_add(1);
                }
                chain.tick();
                while handle.egress.pop().is_ok() {}
                while handle.uplink.pop().is_ok() {}
            })
        });
        let stats = handle.stats.snapshot();
        eprintln!("{name}: decoded {}, DTX frames {}, concealed {}", stats.frames_decoded, stats.dtx_frames, stats.concealed);
    }
}

fn benches(c: &mut Criterion) {
    let frames = speech_48k();
    let packets = packets(&frames);
    let frames16: Vec<[i16; SAMPLES_16K]> = resample_all(&frames, SampleRate::HZ_16K);
    let frames24: Vec<[i16; SAMPLES_24K]> = resample_all(&frames, SampleRate::HZ_24K);
    codecs(c, &frames, &packets);
    vads(c, &frames16);
    inbound(c, &packets);
    outbound(c, &frames24);
    session_ticks(c, &frames, &packets, &frames24);
    silent_caller_ticks(c);
}

criterion_group!(chain, benches);
criterion_main!(chain);
