//! `voxrelay-talk`: `voxrelay talk` with the machine's microphone and speaker (issue 23). Built
//! with `--features devices` it opens them through cpal ([`devices`]); without it, or with
//! `--input-wav`/`--output-wav`, it is `voxrelay talk` with files. Kept apart from the server's
//! binary so the server never links ALSA.

#[cfg(feature = "devices")]
mod devices;

use clap::Parser;
use voxrelay::talk::TalkArgs;

#[derive(Parser)]
#[command(name = "voxrelay-talk", version, about = "Talk to a voxrelay agent or room from this machine's microphone and speaker")]
struct Cli {
    #[command(flatten)]
    args: TalkArgs,
}

#[tokio::main]
async fn main() {
    voxrelay::install_tls_provider();
    let filter = tracing_subscriber::EnvFilter::new("warn,rtc=error,webrtc=error");
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Err(e) = run(Cli::parse().args).await {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
}

#[cfg(not(feature = "devices"))]
async fn run(args: TalkArgs) -> anyhow::Result<()> {
    voxrelay::talk::run(args).await.map(drop)
}

#[cfg(feature = "devices")]
async fn run(args: TalkArgs) -> anyhow::Result<()> {
    use voxrelay::talk::{Input, Io, wav};
    if args.list_devices {
        print!("{}", devices::list()?);
        return Ok(());
    }
    let (mic, speaker) = (args.input_wav.is_none(), args.output_wav.is_none());
    let mut opened = devices::open(mic.then_some(args.input_device.as_deref()), speaker.then_some(args.output_device.as_deref()))?;
    if !opened.description.is_empty() {
        eprintln!("using {}", opened.description);
    }
    let input = match (&args.input_wav, opened.mic.take()) {
        (Some(path), _) => Input::File(wav::read_48k_mono(path)?),
        (None, Some(frames)) => Input::Live(frames),
        (None, None) => anyhow::bail!("the microphone did not open"),
    };
    let (output, output_name): (Box<dyn wav::PcmOut>, String) = match (&args.output_wav, opened.speaker.take()) {
        (Some(path), _) => (Box::new(wav::WavFile::create(path)?), path.display().to_string()),
        (None, Some(speaker)) => (speaker, "the speaker".into()),
        (None, None) => anyhow::bail!("the speaker did not open"),
    };
    let args = TalkArgs { input_device: None, output_device: None, ..args };
    voxrelay::talk::run_with(args, Io { input, output, output_name }).await?;
    let (dropped, starved) =
        (opened.dropped.load(std::sync::atomic::Ordering::Relaxed), opened.starved.load(std::sync::atomic::Ordering::Relaxed));
    if dropped > 0 {
        eprintln!("the microphone's ring overflowed: {dropped} samples dropped");
    }
    if speaker {
        eprintln!("speaker underruns: {starved} samples of silence filled in");
    }
    Ok(())
}
