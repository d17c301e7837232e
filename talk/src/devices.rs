//! The machine's microphone and speaker through cpal (ALSA on Linux). Each device runs at a
//! rate the media resampler reaches from 48 kHz (48, 24, 16 or 8 kHz; ALSA's `default` and
//! `plughw:` devices convert anything else), mono or more channels (mixed down, copied out).
//!
//! The device callbacks never block or allocate: the microphone's pushes its samples into a
//! lock-free ring, the speaker's pops from one (zeros when it runs dry); everything else (framing,
//! resampling, the call) happens on the other side of the rings. cpal's streams are not `Send`,
//! so they live on a thread of their own until the devices are dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{SampleFormat, SupportedStreamConfig};
use tokio::sync::mpsc;
use voxrelay::talk::wav::PcmOut;
use voxrelay_media::{Resampler, SampleRate};

/// Rates tried, best first: no resampling, then integer ratios from 48 kHz.
const RATES: [u32; 4] = [48_000, 24_000, 16_000, 8_000];
/// Each ring holds this much audio (at the device's rate and layout, mono in the rings).
const RING_MS: u32 = 400;

/// Every device, one line each (the names `--input-device`/`--output-device` take), then the
/// defaults (ALSA names its default by description, not by one of the listed names).
pub fn list() -> anyhow::Result<String> {
    let host = cpal::default_host();
    let mut out = String::new();
    for d in host.input_devices().context("listing input devices")? {
        out.push_str(&format!("input   {d}\n"));
    }
    for d in host.output_devices().context("listing output devices")? {
        out.push_str(&format!("output  {d}\n"));
    }
    if out.is_empty() {
        out.push_str("no sound devices found\n");
    }
    let name = |d: Option<cpal::Device>| d.map_or_else(|| "none".to_string(), |d| d.to_string());
    out.push_str(&format!(
        "default input: {}; default output: {}\n",
        name(host.default_input_device()),
        name(host.default_output_device())
    ));
    Ok(out)
}

/// Open devices: the microphone's 48 kHz frames, the speaker to play into, and the thread that
/// keeps their streams (stopped when this is dropped).
pub struct Devices {
    pub mic: Option<mpsc::UnboundedReceiver<Vec<i16>>>,
    pub speaker: Option<Box<dyn PcmOut>>,
    pub description: String,
    stop: Arc<AtomicBool>,
    /// Samples the rings had no room for (mic) or lacked (speaker), as counted by the callbacks.
    pub dropped: Arc<AtomicU64>,
    pub starved: Arc<AtomicU64>,
}

impl Drop for Devices {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Opens the named (or default) microphone and/or speaker.
pub fn open(input: Option<Option<&str>>, output: Option<Option<&str>>) -> anyhow::Result<Devices> {
    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    let starved = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (input, output) = (input.map(|n| n.map(String::from)), output.map(|n| n.map(String::from)));
    let (stop_t, dropped_t, starved_t) = (stop.clone(), dropped.clone(), starved.clone());
    std::thread::Builder::new().name("voxrelay-talk-devices".into()).spawn(move || {
        let opened = start_streams(input, output, dropped_t, starved_t);
        let (streams, result) = match opened {
            Ok((streams, rings)) => (streams, Ok(rings)),
            Err(e) => (Vec::new(), Err(e)),
        };
        let _ = ready_tx.send(result);
        while !stop_t.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(streams);
    })?;
    let Rings { mic, speaker, description } = ready_rx.recv().map_err(|_| anyhow!("the sound device thread died"))??;
    let mic = mic.map(|(consumer, rate)| frames_from(consumer, rate, stop.clone())).transpose()?;
    let speaker = speaker.map(|(producer, rate)| SpeakerOut::new(producer, rate).map(|s| Box::new(s) as Box<dyn PcmOut>)).transpose()?;
    Ok(Devices { mic, speaker, description, stop, dropped, starved })
}

struct Rings {
    mic: Option<(rtrb::Consumer<i16>, u32)>,
    speaker: Option<(rtrb::Producer<i16>, u32)>,
    description: String,
}

fn find(host: &cpal::Host, name: Option<&str>, input: bool) -> anyhow::Result<cpal::Device> {
    let kind = if input { "input" } else { "output" };
    let all: Vec<cpal::Device> = if input { host.input_devices()?.collect() } else { host.output_devices()?.collect() };
    let names = || all.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
    match name {
        Some(name) => all
            .iter()
            .find(|d| d.to_string() == name)
            .cloned()
            .ok_or_else(|| anyhow!("no {kind} device named {name:?}; found: {}", if all.is_empty() { "none".into() } else { names() })),
        None => {
            let default = if input { host.default_input_device() } else { host.default_output_device() };
            default.ok_or_else(|| {
                anyhow!(
                    "no default {kind} device; found: {} (or use --{kind}-wav FILE)",
                    if all.is_empty() { "none".into() } else { names() }
                )
            })
        }
    }
}

/// A configuration at one of [`RATES`] in a sample format we convert (i16, f32), fewest channels.
fn pick_config(device: &cpal::Device, input: bool) -> anyhow::Result<SupportedStreamConfig> {
    let ranges: Vec<_> = if input { device.supported_input_configs()?.collect() } else { device.supported_output_configs()?.collect() };
    for rate in RATES {
        let mut fits: Vec<_> = ranges
            .iter()
            .filter(|r| matches!(r.sample_format(), SampleFormat::I16 | SampleFormat::F32))
            .filter_map(|r| (*r).try_with_sample_rate(rate))
            .collect();
        fits.sort_by_key(|c| (c.channels(), c.sample_format() != SampleFormat::I16));
        if let Some(c) = fits.into_iter().next() {
            return Ok(c);
        }
    }
    let offered: Vec<String> = ranges
        .iter()
        .map(|r| format!("{:?} {}–{} Hz {} ch", r.sample_format(), r.min_sample_rate(), r.max_sample_rate(), r.channels()))
        .collect();
    bail!("{device} offers none of 48/24/16/8 kHz in i16 or f32 ({}); ALSA's `default` or `plughw:` devices convert", offered.join("; "))
}

type Streams = Vec<cpal::Stream>;

fn start_streams(
    input: Option<Option<String>>,
    output: Option<Option<String>>,
    dropped: Arc<AtomicU64>,
    starved: Arc<AtomicU64>,
) -> anyhow::Result<(Streams, Rings)> {
    let host = cpal::default_host();
    let mut streams = Vec::new();
    let mut rings = Rings { mic: None, speaker: None, description: String::new() };
    let timeout = Some(Duration::from_secs(5));
    if let Some(name) = input {
        let device = find(&host, name.as_deref(), true)?;
        let config = pick_config(&device, true)?;
        let (rate, channels) = (config.sample_rate(), usize::from(config.channels()));
        let (mut producer, consumer) = rtrb::RingBuffer::new((rate * RING_MS / 1000) as usize);
        let err = |e| tracing::warn!("microphone: {e}");
        let stream = match config.sample_format() {
            SampleFormat::I16 => device.build_input_stream(
                config.config(),
                move |data: &[i16], _: &_| push_mono(data, channels, &mut producer, &dropped, |s| s),
                err,
                timeout,
            ),
            _ => device.build_input_stream(
                config.config(),
                move |data: &[f32], _: &_| push_mono(data, channels, &mut producer, &dropped, |s| (s.clamp(-1.0, 1.0) * 32767.0) as i16),
                err,
                timeout,
            ),
        }
        .with_context(|| format!("opening the microphone {device}"))?;
        stream.play().with_context(|| format!("starting the microphone {device}"))?;
        rings.description.push_str(&format!("microphone {device} ({rate} Hz, {channels} ch)"));
        rings.mic = Some((consumer, rate));
        streams.push(stream);
    }
    if let Some(name) = output {
        let device = find(&host, name.as_deref(), false)?;
        let config = pick_config(&device, false)?;
        let (rate, channels) = (config.sample_rate(), usize::from(config.channels()));
        let (producer, mut consumer) = rtrb::RingBuffer::new((rate * RING_MS / 1000) as usize);
        let err = |e| tracing::warn!("speaker: {e}");
        let stream = match config.sample_format() {
            SampleFormat::I16 => device.build_output_stream(
                config.config(),
                move |data: &mut [i16], _: &_| pop_into(data, channels, &mut consumer, &starved, |s| s),
                err,
                timeout,
            ),
            _ => device.build_output_stream(
                config.config(),
                move |data: &mut [f32], _: &_| pop_into(data, channels, &mut consumer, &starved, |s| f32::from(s) / 32768.0),
                err,
                timeout,
            ),
        }
        .with_context(|| format!("opening the speaker {device}"))?;
        stream.play().with_context(|| format!("starting the speaker {device}"))?;
        if !rings.description.is_empty() {
            rings.description.push_str(", ");
        }
        rings.description.push_str(&format!("speaker {device} ({rate} Hz, {channels} ch)"));
        rings.speaker = Some((producer, rate));
        streams.push(stream);
    }
    Ok((streams, rings))
}

/// The microphone callback: interleaved samples mixed to mono into the ring; what does not fit
/// is counted, never waited for.
fn push_mono<T: Copy>(data: &[T], channels: usize, ring: &mut rtrb::Producer<i16>, dropped: &AtomicU64, to_i16: impl Fn(T) -> i16) {
    for frame in data.chunks(channels.max(1)) {
        let sum: i32 = frame.iter().map(|&s| i32::from(to_i16(s))).sum();
        if ring.push((sum / frame.len() as i32) as i16).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The speaker callback: one ring sample per frame, copied to every channel; silence when the
/// ring runs dry.
fn pop_into<T: Copy>(data: &mut [T], channels: usize, ring: &mut rtrb::Consumer<i16>, starved: &AtomicU64, from_i16: impl Fn(i16) -> T) {
    for frame in data.chunks_mut(channels.max(1)) {
        let s = ring.pop().unwrap_or_else(|_| {
            starved.fetch_add(1, Ordering::Relaxed);
            0
        });
        frame.fill(from_i16(s));
    }
}

/// 48 kHz 20 ms frames from the microphone's ring, resampled when the device runs at another
/// rate, taken every 10 ms.
fn frames_from(mut ring: rtrb::Consumer<i16>, rate: u32, stop: Arc<AtomicBool>) -> anyhow::Result<mpsc::UnboundedReceiver<Vec<i16>>> {
    let mut up = (rate != 48_000).then(|| Resampler::new(SampleRate(rate), SampleRate::HZ_48K)).transpose()?;
    let frame_in = (rate / 50) as usize;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut pending: Vec<i16> = Vec::with_capacity(frame_in * 4);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            while let Ok(s) = ring.pop() {
                pending.push(s);
            }
            while pending.len() >= frame_in {
                let frame = match up.as_mut() {
                    Some(up) => {
                        let mut out = vec![0i16; 960];
                        up.process(&pending[..frame_in], &mut out);
                        out
                    }
                    None => pending[..frame_in].to_vec(),
                };
                pending.drain(..frame_in);
                if tx.send(frame).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// What the call plays, resampled to the speaker's rate when needed and pushed into its ring (a
/// full ring drops: the speaker is behind, and waiting would only add delay).
struct SpeakerOut {
    ring: rtrb::Producer<i16>,
    down: Option<Resampler>,
    pending: Vec<i16>,
    out: Vec<i16>,
}

impl SpeakerOut {
    fn new(ring: rtrb::Producer<i16>, rate: u32) -> anyhow::Result<Self> {
        let down = (rate != 48_000).then(|| Resampler::new(SampleRate::HZ_48K, SampleRate(rate))).transpose()?;
        let out = vec![0; (rate / 50) as usize];
        Ok(SpeakerOut { ring, down, pending: Vec::with_capacity(960 * 2), out })
    }

    fn write(&mut self, samples: &[i16]) {
        for &s in samples {
            if self.ring.push(s).is_err() {
                break;
            }
        }
    }
}

impl PcmOut for SpeakerOut {
    fn push(&mut self, pcm: &[i16]) -> anyhow::Result<()> {
        if self.down.is_none() {
            self.write(pcm);
            return Ok(());
        }
        self.pending.extend_from_slice(pcm);
        while self.pending.len() >= 960 {
            let mut out = std::mem::take(&mut self.out);
            if let Some(down) = self.down.as_mut() {
                down.process(&self.pending[..960], &mut out);
            }
            self.write(&out);
            self.out = out;
            self.pending.drain(..960);
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }
}
