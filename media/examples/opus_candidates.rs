//! Opus candidates side by side (issue 16, "a build that needs only Rust"): the pure-Rust port
//! `opus-rs` against the system libopus 1.3.1 (`opus` 0.3, what the server links today), with the
//! server's settings (48 kHz mono, VOIP, 32 kbps, complexity 5, in-band FEC at 10 % loss).
//! For every encoder x decoder pair: µs per 20 ms frame, the bitrate reached, the round-trip SNR
//! on the speech fixture (best lag), and on every 10th packet lost the SNR of PLC and of FEC
//! against the clean decode. Numbers and the decision: BENCHMARKS.md "Opus without libopus-dev".
//!
//!     cargo run --release -p voxrelay-media --example opus_candidates
//!     OPUS_INPUT_RATE=16000 cargo run --release -p voxrelay-media --example opus_candidates
//!
//! The second form feeds both encoders 16 kHz input (the fixture averaged over 3 samples), which
//! makes them code wideband; decoding and the SNR stay at 48 kHz.

use std::time::Instant;
const N: usize = 960;
fn snr(a: &[f32], b: &[f32]) -> f64 {
    // best lag in 0..=1000 samples
    let mut best = f64::MIN;
    for lag in 0..1000 {
        let (mut s, mut e) = (0f64, 0f64);
        for i in 0..a.len().saturating_sub(lag + 2000) {
            let x = a[i] as f64; let y = b[i + lag] as f64;
            s += x * x; e += (x - y) * (x - y);
        }
        let v = 10.0 * (s / e.max(1e-9)).log10();
        if v > best { best = v; }
    }
    best
}
trait Enc { fn enc(&mut self, pcm: &[i16], out: &mut [u8]) -> usize; }
trait Dec { fn dec(&mut self, p: &[u8], out: &mut [f32]) -> usize; fn plc(&mut self, out: &mut [f32]) -> usize; fn fec(&mut self, next: &[u8], out: &mut [f32]) -> usize; }
struct RsE(opus_rs::OpusEncoder); struct RsD(opus_rs::OpusDecoder);
struct CE(opus::Encoder); struct CD(opus::Decoder, Vec<i16>);
impl Enc for RsE { fn enc(&mut self, pcm: &[i16], out: &mut [u8]) -> usize { self.0.encode_i16(pcm, pcm.len(), out).unwrap() } }
impl Enc for CE { fn enc(&mut self, pcm: &[i16], out: &mut [u8]) -> usize { self.0.encode(pcm, out).unwrap() } }
impl Dec for RsD {
    fn dec(&mut self, p: &[u8], out: &mut [f32]) -> usize { self.0.decode(p, N, out).unwrap() }
    fn plc(&mut self, out: &mut [f32]) -> usize { self.0.decode(&[], N, out).unwrap() }
    fn fec(&mut self, next: &[u8], out: &mut [f32]) -> usize { self.0.decode_fec(next, N, out).unwrap() }
}
impl CD { fn conv(&self, n: usize, out: &mut [f32]) -> usize { for i in 0..n { out[i] = self.1[i] as f32 / 32768.0; } n } }
impl Dec for CD {
    fn dec(&mut self, p: &[u8], out: &mut [f32]) -> usize { let n = self.0.decode(p, &mut self.1, false).unwrap(); self.conv(n, out) }
    fn plc(&mut self, out: &mut [f32]) -> usize { let n = self.0.decode(&[], &mut self.1[..N], false).unwrap(); self.conv(n, out) }
    fn fec(&mut self, next: &[u8], out: &mut [f32]) -> usize { let n = self.0.decode(next, &mut self.1[..N], true).unwrap(); self.conv(n, out) }
}
fn rs_enc() -> Box<dyn Enc> { let mut e = opus_rs::OpusEncoder::new(input_rate(), 1, opus_rs::Application::Voip).unwrap(); e.bitrate_bps = 32000; e.complexity = 5; e.use_inband_fec = true; e.packet_loss_perc = 10; e.use_cbr = false; Box::new(RsE(e)) }
fn c_enc() -> Box<dyn Enc> { let mut e = opus::Encoder::new(input_rate() as u32, opus::Channels::Mono, opus::Application::Voip).unwrap(); e.set_bitrate(opus::Bitrate::Bits(32000)).unwrap(); e.set_complexity(5).unwrap(); e.set_inband_fec(true).unwrap(); e.set_packet_loss_perc(10).unwrap(); Box::new(CE(e)) }
fn rs_dec() -> Box<dyn Dec> { Box::new(RsD(opus_rs::OpusDecoder::new(48000, 1).unwrap())) }
fn c_dec() -> Box<dyn Dec> { Box::new(CD(opus::Decoder::new(48000, opus::Channels::Mono).unwrap(), vec![0; 5760])) }
/// The encoders' input rate: 48 kHz, or what `OPUS_INPUT_RATE` says (16000 or 24000).
fn input_rate() -> i32 {
    std::env::var("OPUS_INPUT_RATE").ok().and_then(|r| r.parse().ok()).filter(|r| [16000, 24000, 48000].contains(r)).unwrap_or(48000)
}

fn main() {
    let mut r = hound::WavReader::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/speech.wav")).unwrap();
    let mut pcm: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    // 3 copies for a longer clip
    let one = pcm.clone(); pcm.extend(&one); pcm.extend(&one);
    pcm.truncate(pcm.len() / N * N);
    let step = (48000 / input_rate()) as usize;
    let input: Vec<i16> = pcm.chunks(step).map(|c| (c.iter().map(|&s| s as i32).sum::<i32>() / step as i32) as i16).collect();
    let m = N / step;
    let reff: Vec<f32> = pcm.iter().map(|&s| s as f32 / 32768.0).collect();
    let frames = pcm.len() / N;
    for (en, mk_e) in [("opus-rs", rs_enc as fn() -> Box<dyn Enc>), ("libopus1.3.1", c_enc)] {
        // encode timing
        let mut e = mk_e();
        let mut packets = Vec::new();
        let mut buf = [0u8; 1500];
        let mut times = vec![];
        for rep in 0..5 {
            let mut e2 = mk_e();
            let t = Instant::now();
            for f in 0..frames { let n = e2.enc(&input[f*m..(f+1)*m], &mut buf); if rep == 0 { packets.push(buf[..n].to_vec()); } }
            times.push(t.elapsed().as_secs_f64() * 1e6 / frames as f64);
        }
        let _ = &mut e;
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let bytes: usize = packets.iter().map(|p| p.len()).sum();
        println!("encoder {en} ({} Hz input):", input_rate()); println!("  encoder {en}: {:.1} us/frame (median of 5), {:.1} kbps", times[2], bytes as f64 * 8.0 / (frames as f64 * 0.02) / 1000.0);
        for (dn, mk_d) in [("opus-rs", rs_dec as fn() -> Box<dyn Dec>), ("libopus1.3.1", c_dec)] {
            let mut dtimes = vec![];
            let mut out = vec![0f32; pcm.len()];
            for _ in 0..5 {
                let mut d = mk_d();
                let t = Instant::now();
                for (f, p) in packets.iter().enumerate() { d.dec(p, &mut out[f*N..(f+1)*N]); }
                dtimes.push(t.elapsed().as_secs_f64() * 1e6 / frames as f64);
            }
            dtimes.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let clean = snr(&reff, &out);
            // loss every 10th packet: PLC and FEC
            let (mut plc_out, mut fec_out) = (vec![0f32; pcm.len()], vec![0f32; pcm.len()]);
            let (mut dp, mut df) = (mk_d(), mk_d());
            for (f, p) in packets.iter().enumerate() {
                let (a, b) = (f*N, (f+1)*N);
                if f % 10 == 5 { dp.plc(&mut plc_out[a..b]); df.fec(&packets[f+1], &mut fec_out[a..b]); }
                else { dp.dec(p, &mut plc_out[a..b]); df.dec(p, &mut fec_out[a..b]); }
            }
            // SNR on lost frames only, vs clean decode
            let (mut s, mut ep, mut ef) = (0f64, 0f64, 0f64);
            for f in (5..frames-1).step_by(10) { for i in f*N..(f+1)*N { let c = out[i] as f64; s += c*c; ep += (c - plc_out[i] as f64).powi(2); ef += (c - fec_out[i] as f64).powi(2); } }
            println!("  -> decoder {dn}: {:.1} us/frame, round-trip SNR {:.2} dB, lost frames vs clean: PLC {:.2} dB, FEC {:.2} dB",
                dtimes[2], clean, 10.0*(s/ep).log10(), 10.0*(s/ef).log10());
        }
    }
}
