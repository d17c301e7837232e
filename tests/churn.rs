//! Churn through the real binary: 300 calls over every transport join, talk and leave, half of
//! them abruptly (no DELETE, no `stop`, no close frame; a plain-RTP sender that just stops), 60
//! at a time, driven by `voxrelay loadgen --churn`'s code. Afterwards the server holds no call,
//! no worker session, no more file descriptors and no more tokio tasks than after a warm-up.
//! The 10,000-call run with its memory numbers is in BENCHMARKS.md ("Churn").

use crate::common;

use common::process::{KillOnDrop, serve};
use common::{API_KEY, speech};
use voxrelay::loadgen::{ChurnReport, LoadTransport, LoadgenConfig, ServerGauges, run_churn};

/// A short talk spurt (0.8 s of the fixture sentence), so a call is ≈ 3 s long.
fn short_spurt() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("voxrelay-churn-{}.wav", std::process::id()));
    let spec = hound::WavSpec { channels: 1, sample_rate: 48_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for &s in speech().iter().take(48_000 * 8 / 10) {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    path
}

async fn churn(base: &str, wav: &std::path::Path, transport: LoadTransport, calls: usize, at_once: usize) -> ChurnReport {
    let mut cfg = LoadgenConfig::new(base, API_KEY, at_once, 0.5);
    cfg.transport = transport;
    cfg.wav = Some(wav.to_path_buf());
    cfg.ramp = 30.0;
    cfg.churn_idle = 0.0;
    let report = run_churn(cfg, calls).await.expect("churn runs");
    println!("{}", report.summary());
    assert_eq!(report.failed, 0, "{transport:?}: {:?}", report.failures);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_churned_calls_leave_nothing_behind() {
    let (server, base, _) = serve(&["--listen", "127.0.0.1:0", "--api-key", API_KEY, "--rtp-ingest"], &[]).await;
    let _server = KillOnDrop(server);
    let wav = short_spurt();
    let http = common::http();
    // Warm-up: what lives as long as the process (worker threads, pools, lazily made tables)
    // exists after the first calls of each kind. (Plain RTP has nothing of its own to warm.)
    for transport in [LoadTransport::Webrtc, LoadTransport::Ws, LoadTransport::Twilio] {
        churn(&base, &wav, transport, 4, 4).await;
    }
    let baseline = ServerGauges::read(&http, &base).await.unwrap();

    // All four transports at once, 8 calls each at a time (32 at once: a debug build on 2 cores
    // still answers turns; at 15 each the answers came after the callers had hung up).
    let (webrtc, ws, phone, rtp) = tokio::join!(
        churn(&base, &wav, LoadTransport::Webrtc, 120, 8),
        churn(&base, &wav, LoadTransport::Ws, 60, 8),
        churn(&base, &wav, LoadTransport::Twilio, 60, 8),
        churn(&base, &wav, LoadTransport::Rtp, 60, 8),
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let end = ServerGauges::read(&http, &base).await.unwrap();
    println!("baseline {baseline:?}\nend      {end:?}");
    let answered: usize = [&webrtc, &ws, &phone, &rtp].iter().map(|r| r.turns_answered).sum();
    assert!(answered > 0, "the agent answered nobody");
    assert_eq!((end.active_calls, end.media_sessions, end.loop_connections), (0, 0, 0), "calls left behind");
    // Small slack: a connection pool may keep one more idle socket, a timer one more task.
    assert!(end.open_fds <= baseline.open_fds + 4, "fds grew from {} to {} over 300 calls", baseline.open_fds, end.open_fds);
    assert!(end.alive_tasks <= baseline.alive_tasks + 4, "tokio tasks grew from {} to {}", baseline.alive_tasks, end.alive_tasks);
    // Every call ended and was counted: hang-ups, DELETEs, and the silent plain-RTP senders as lost.
    let ended = |g: &ServerGauges, reason: &str| g.ended_by_reason.get(reason).copied().unwrap_or(0);
    let total = |g: &ServerGauges| g.ended_by_reason.values().sum::<u64>();
    assert_eq!(total(&end) - total(&baseline), 300, "{:?}", end.ended_by_reason);
    assert_eq!(ended(&end, "lost") - ended(&baseline, "lost"), 30, "the 30 abandoned plain-RTP sessions end as lost");
    assert_eq!(ended(&end, "requested") - ended(&baseline, "requested"), 90, "60 WebRTC + 30 plain-RTP DELETEs");
    assert_eq!(ended(&end, "hung_up") - ended(&baseline, "hung_up"), 180, "60 WebRTC closes without DELETE, 60 + 60 sockets");

    let _ = std::fs::remove_file(wav);
}
