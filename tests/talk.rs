//! `voxrelay talk` (issue 23, first part): the real binary against a real server on loopback,
//! with WAV files in place of the microphone and the speaker. An echo call's recorded output
//! follows the speech it sent; in a room, talk and a webrtc-rs participant hear each other;
//! without devices or credentials it says what is missing.

use crate::common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::rooms::{events_until, join, voice};
use common::*;
use serde_json::json;
use voxrelay::transport::webrtc::client::VOICED_RMS;
use voxrelay::transport::webrtc::room_client::RoomClientOptions;

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `voxrelay talk ARGS` to its end (bounded: killed after a minute).
async fn talk(args: Vec<String>) -> Ran {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_voxrelay"))
            .arg("talk")
            .args(&args)
            .env_remove("VOXRELAY_API_KEY")
            .env_remove("VOXRELAY_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("voxrelay binary runs");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().ok();
                panic!("voxrelay talk did not finish in a minute");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (mut stdout, mut stderr) = (String::new(), String::new());
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        Ran { code: status.code(), stdout, stderr }
    })
    .await
    .unwrap()
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("voxrelay-talk-test-{}-{name}", std::process::id()))
}

fn write_wav(path: &std::path::Path, pcm: &[i16]) {
    let spec = hound::WavSpec { channels: 1, sample_rate: 48_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    pcm.iter().for_each(|&s| w.write_sample(s).unwrap());
    w.finalize().unwrap();
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_call_from_wav_files_records_the_echo() {
    let server = start_server().await;
    let (input, output) = (temp("in.wav"), temp("out.wav"));
    let speech = speech();
    let mut sent = silence_ms(400);
    sent.extend_from_slice(&speech);
    write_wav(&input, &sent);
    let ran = talk(args(&[
        "--url",
        &server.url(),
        "--api-key",
        API_KEY,
        "--agent",
        "echo",
        "--input-wav",
        input.to_str().unwrap(),
        "--output-wav",
        output.to_str().unwrap(),
        "--linger",
        "1.5",
    ]))
    .await;
    assert_eq!(ran.code, Some(0), "stdout:\n{}\nstderr:\n{}", ran.stdout, ran.stderr);
    // The conversation, one line per event.
    for expected in ["connected: agent echo", "you: speaking…", "you: stopped", "agent: done", "hung up"] {
        assert!(ran.stdout.contains(expected), "no {expected:?} in:\n{}", ran.stdout);
    }
    // What the speaker would have played: the speech, echoed.
    let heard: Vec<i16> = hound::WavReader::open(&output).unwrap().samples::<i16>().map(Result::unwrap).collect();
    let corr = best_lag_correlation(&envelope(&speech), &from_first_voiced(&envelope(&heard), &speech));
    assert!(corr > 0.8, "recorded echo envelope correlation {corr:.2}");
    // The call was hung up, not left to time out.
    let deadline = Instant::now() + WAIT;
    while server.engine.live_calls() != 0 {
        assert!(Instant::now() < deadline, "the call outlived the client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_file(&input).ok();
    std::fs::remove_file(&output).ok();
    server.shutdown().await;
}

/// The envelope from the first voiced frame on, as long as `reference`: what an echo or a
/// listener's copy is compared with.
fn from_first_voiced(levels: &[f64], reference: &[i16]) -> Vec<f64> {
    let first = levels.iter().position(|&r| r > VOICED_RMS).unwrap_or_else(|| panic!("nothing voiced in {} frames", levels.len()));
    levels[first..].iter().copied().take(reference.len() / 960).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_room_talk_and_another_participant_hear_each_other() {
    let server = start_server().await;
    let base = server.url();
    let mut bob = join(&base, "huddle", "bob", RoomClientOptions { slots: 1, ..Default::default() }, json!({})).await;
    let (input, output) = (temp("room-in.wav"), temp("room-out.wav"));
    let speech = speech();
    let mut sent = silence_ms(400);
    sent.extend_from_slice(&speech);
    write_wav(&input, &sent);
    let run = tokio::spawn(talk(args(&[
        "--url",
        &base,
        "--api-key",
        API_KEY,
        "--room",
        "huddle",
        "--identity",
        "talker",
        "--input-wav",
        input.to_str().unwrap(),
        "--output-wav",
        output.to_str().unwrap(),
        "--linger",
        "1.5",
    ])));
    let mut seen = Vec::new();
    events_until(&mut bob, &mut seen, |e| e.iter().any(|e| e["type"] == "participant.joined" && e["participant"]["identity"] == "talker"))
        .await;
    let bobs = voice(0.8);
    bob.say(&bobs);
    let ran = run.await.unwrap();
    assert_eq!(ran.code, Some(0), "stdout:\n{}\nstderr:\n{}", ran.stdout, ran.stderr);
    for expected in ["joined huddle as talker: bob", "left: sent"] {
        assert!(ran.stdout.contains(expected), "no {expected:?} in:\n{}", ran.stdout);
    }
    // Talk heard Bob: its recording follows what he said.
    let heard: Vec<i16> = hound::WavReader::open(&output).unwrap().samples::<i16>().map(Result::unwrap).collect();
    let corr = best_lag_correlation(&envelope(&bobs), &from_first_voiced(&envelope(&heard), &bobs));
    assert!(corr > 0.8, "talk's recording of Bob: envelope correlation {corr:.2}");
    // Bob heard talk: his slot carried the WAV's speech.
    let mut decoder = voxrelay_media::OpusDecoder::new().unwrap();
    let mut pcm = vec![0i16; voxrelay_media::MAX_DECODED_48K];
    let levels: Vec<f64> = bob
        .received()
        .iter()
        .map(|p| {
            let n = decoder.decode(&p.payload, &mut pcm).unwrap_or(0);
            voxrelay::transport::webrtc::client::rms(&pcm[..n])
        })
        .collect();
    let corr = best_lag_correlation(&envelope(&speech), &from_first_voiced(&levels, &speech));
    assert!(corr > 0.8, "Bob's copy of talk's speech: envelope correlation {corr:.2}");
    // What the live view shows as RTT: ICE's measurement, a loopback's fraction of a second.
    let rtt = bob.rtt().await.expect("ICE measured a round trip in five seconds");
    assert!(rtt < Duration::from_secs(1), "{rtt:?}");
    bob.close().await;
    std::fs::remove_file(&input).ok();
    std::fs::remove_file(&output).ok();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_missing_is_named() {
    let server = start_server().await;
    let input = temp("quiet.wav");
    write_wav(&input, &silence_ms(200));
    let output = temp("unused.wav");
    // No sound devices in this build: the WAV options are named.
    let ran = talk(args(&["--url", &server.url(), "--api-key", API_KEY])).await;
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("--input-wav") && ran.stderr.contains("--output-wav"), "{}", ran.stderr);
    // A secret the server does not know: its refusal, in words.
    let files = ["--input-wav", input.to_str().unwrap(), "--output-wav", output.to_str().unwrap()];
    let mut with_token = args(&["--url", &server.url(), "--token", "ek_not_a_secret"]);
    with_token.extend(args(&files));
    let ran = talk(with_token).await;
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("401") && ran.stderr.contains("invalid_api_key"), "{}", ran.stderr);
    // A wrong API key: the mint is refused.
    let mut wrong_key = args(&["--url", &server.url(), "--api-key", "sk_wrong"]);
    wrong_key.extend(args(&files));
    let ran = talk(wrong_key).await;
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("refused a client secret"), "{}", ran.stderr);
    // An input file that is not there.
    let ran = talk(args(&[
        "--url",
        &server.url(),
        "--api-key",
        API_KEY,
        "--input-wav",
        "/nonexistent.wav",
        "--output-wav",
        output.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("/nonexistent.wav"), "{}", ran.stderr);
    assert_eq!(server.engine.live_calls(), 0);
    std::fs::remove_file(&input).ok();
    std::fs::remove_file(&output).ok();
    server.shutdown().await;
}
