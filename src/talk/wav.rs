//! WAV files in place of the microphone and the speaker (`--input-wav`, `--output-wav`): what a
//! machine without sound devices, and the tests, use.

use std::path::Path;

use anyhow::{Context, bail};
use voxrelay_media::{Resampler, SampleRate};

/// The rate the client encodes from and decodes to (Opus's).
pub const RATE: u32 = 48_000;
const FRAME: usize = RATE as usize / 50;

/// A WAV file's audio as 48 kHz mono: 16-bit PCM, mono or stereo (mixed down), at 8, 16, 24 or
/// 48 kHz (other rates are refused with the `sox` line that converts them).
pub fn read_48k_mono(path: &Path) -> anyhow::Result<Vec<i16>> {
    let mut reader = hound::WavReader::open(path).with_context(|| format!("--input-wav {}", path.display()))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        bail!(
            "--input-wav {}: 16-bit PCM only ({}-bit {:?}); convert with `sox IN -b 16 OUT.wav`",
            path.display(),
            spec.bits_per_sample,
            spec.sample_format
        );
    }
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<i16> = reader.samples::<i16>().collect::<Result<_, _>>().with_context(|| format!("--input-wav {}", path.display()))?;
    let mono: Vec<i16> = samples.chunks(channels).map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / c.len() as i32) as i16).collect();
    to_48k(&mono, spec.sample_rate).with_context(|| format!("--input-wav {}", path.display()))
}

fn to_48k(mono: &[i16], rate: u32) -> anyhow::Result<Vec<i16>> {
    if rate == RATE {
        return Ok(mono.to_vec());
    }
    let mut up = Resampler::new(SampleRate(rate), SampleRate(RATE))
        .map_err(|_| anyhow::anyhow!("{rate} Hz is not supported (8, 16, 24 or 48 kHz); convert with `sox IN -r 48000 OUT.wav`"))?;
    let mut out = Vec::with_capacity(mono.len() * (RATE / rate) as usize + FRAME);
    let mut frame_out = vec![0i16; up.output_len()];
    let mut frame_in = vec![0i16; up.input_len()];
    for chunk in mono.chunks(up.input_len()) {
        frame_in.fill(0);
        frame_in[..chunk.len()].copy_from_slice(chunk);
        up.process(&frame_in, &mut frame_out);
        out.extend_from_slice(&frame_out);
    }
    Ok(out)
}

/// Where heard audio goes, 48 kHz mono, in order: a WAV file, or a speaker.
pub trait PcmOut: Send {
    fn push(&mut self, pcm: &[i16]) -> anyhow::Result<()>;
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

/// A 48 kHz mono WAV file.
pub struct WavFile(hound::WavWriter<std::io::BufWriter<std::fs::File>>);

impl WavFile {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let spec = hound::WavSpec { channels: 1, sample_rate: RATE, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        Ok(WavFile(hound::WavWriter::create(path, spec).with_context(|| format!("--output-wav {}", path.display()))?))
    }
}

impl PcmOut for WavFile {
    fn push(&mut self, pcm: &[i16]) -> anyhow::Result<()> {
        let mut w = self.0.get_i16_writer(pcm.len() as u32);
        pcm.iter().for_each(|&s| w.write_sample(s));
        Ok(w.flush()?)
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        self.0.finalize().context("--output-wav: finishing the file")
    }
}

/// What the server sends, laid out as it arrives: each frame where its RTP timestamp puts it, so
/// the server's pauses stay pauses (zeros) and the output's time is the call's. A frame older
/// than what is out already (late, reordered) is dropped.
pub struct Timeline {
    out: Box<dyn PcmOut>,
    /// The timestamp of the first sample, and how many samples are out.
    origin: Option<u32>,
    written: u64,
}

/// A timestamp more than this far ahead is a new stream (the sender restarted), not a pause:
/// placed right after what is out.
const MAX_GAP_SAMPLES: u64 = 60 * RATE as u64;

impl Timeline {
    /// Into a 48 kHz mono WAV file.
    pub fn wav(path: &Path) -> anyhow::Result<Self> {
        Ok(Timeline::new(Box::new(WavFile::create(path)?)))
    }

    pub fn new(out: Box<dyn PcmOut>) -> Self {
        Timeline { out, origin: None, written: 0 }
    }

    /// Places one decoded 48 kHz frame sent at `timestamp`.
    pub fn write(&mut self, timestamp: u32, pcm: &[i16]) -> anyhow::Result<()> {
        let origin = *self.origin.get_or_insert(timestamp);
        let at = u64::from(timestamp.wrapping_sub(origin));
        if at < self.written {
            return Ok(());
        }
        if at > self.written + MAX_GAP_SAMPLES {
            self.origin = Some(timestamp.wrapping_sub(self.written as u32));
        } else {
            const ZEROS: [i16; FRAME] = [0; FRAME];
            let mut gap = (at - self.written) as usize;
            while gap > 0 {
                let n = gap.min(FRAME);
                self.out.push(&ZEROS[..n])?;
                gap -= n;
            }
            self.written = at;
        }
        self.out.push(pcm)?;
        self.written += pcm.len() as u64;
        Ok(())
    }

    /// Seconds out so far.
    pub fn seconds(&self) -> f64 {
        self.written as f64 / f64::from(RATE)
    }

    pub fn finish(self) -> anyhow::Result<()> {
        self.out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("voxrelay-talk-{}-{name}", std::process::id()))
    }

    #[test]
    fn input_of_any_supported_rate_and_layout_becomes_48k_mono() {
        let path = tmp("in.wav");
        let spec = hound::WavSpec { channels: 2, sample_rate: 16_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..16_000 {
            let s = ((i as f32 * 0.05).sin() * 8000.0) as i16;
            w.write_sample(s).unwrap();
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        let pcm = read_48k_mono(&path).unwrap();
        assert_eq!(pcm.len(), 48_000, "one second");
        let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((7000..9000).contains(&peak), "level kept through the mix-down and the resampler: {peak}");
        let spec = hound::WavSpec { sample_rate: 44_100, channels: 1, ..spec };
        hound::WavWriter::create(&path, spec).unwrap().finalize().unwrap();
        let e = read_48k_mono(&path).unwrap_err();
        assert!(format!("{e:#}").contains("sox"), "{e:#}");
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn output_keeps_pauses_and_drops_late_frames() {
        let path = tmp("out.wav");
        let mut sink = Timeline::wav(&path).unwrap();
        let frame = vec![1000i16; FRAME];
        sink.write(u32::MAX - 100, &frame).unwrap();
        // A 40 ms pause, across the timestamp's wrap.
        sink.write((u32::MAX - 100).wrapping_add(3 * FRAME as u32), &frame).unwrap();
        // Late: before what is written.
        sink.write((u32::MAX - 100).wrapping_add(FRAME as u32), &vec![5i16; FRAME]).unwrap();
        assert!((sink.seconds() - 0.08).abs() < 1e-9, "{}", sink.seconds());
        sink.finish().unwrap();
        let samples: Vec<i16> = hound::WavReader::open(&path).unwrap().samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(samples.len(), 4 * FRAME);
        assert!(samples[..FRAME].iter().all(|&s| s == 1000));
        assert!(samples[FRAME..3 * FRAME].iter().all(|&s| s == 0), "the pause is silence");
        assert!(samples[3 * FRAME..].iter().all(|&s| s == 1000));
        std::fs::remove_file(&path).ok();
    }
}
