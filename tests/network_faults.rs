//! A caller on a bad network: 5 % of its RTP lost at random, every packet delayed by 0–40 ms
//! (so about one in nine overtakes the one before it). The jitter buffer reorders and conceals,
//! the decoded stream stays continuous, turn detection still finds every turn, and the echo still
//! has the shape of what was said. The numbers are printed; BENCHMARKS.md ("Network faults")
//! has a longer run from the load generator.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;
use voxrelay::transport::impair::NetworkFaults;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_are_found_and_echoed_through_loss_jitter_and_reordering() {
    let server = start_server().await;
    let base = server.url();
    let secret = client_secret(&base, json!({"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}})).await;
    let faults = NetworkFaults { loss: 0.05, jitter: Duration::from_millis(40), seed: 11 };
    let mut c = Call::connect_with(&base, "/v1/realtime", &secret, ClientOptions { faults, ..Default::default() }).await;
    c.expect("session.created").await;

    const TURNS: usize = 3;
    let speech = speech();
    let sent_env = envelope(&speech);
    let mut correlations = Vec::new();
    for turn in 0..TURNS {
        let heard_before = c.levels().len();
        c.speak_turn(1000);
        c.expect("input_audio_buffer.committed").await;
        let done = c.expect("response.done").await;
        assert_eq!(done["response"]["status"], "completed", "turn {turn}: {done}");
        c.wait_sent().await;
        let received = c.levels();
        let reply = &received[heard_before..];
        let first = reply.iter().position(|(_, r)| *r > VOICED_RMS).expect("the echo arrives");
        let echoed: Vec<f64> = reply[first..].iter().map(|(_, r)| *r).take(sent_env.len()).collect();
        correlations.push(best_lag_correlation(&sent_env, &echoed));
    }
    let committed = c.types().iter().filter(|t| *t == "input_audio_buffer.committed").count();
    let started = c.types().iter().filter(|t| *t == "input_audio_buffer.speech_started").count();
    assert_eq!((started, committed), (TURNS, TURNS), "one onset and one commit per spoken turn, no more");

    let media = server.engine.media_totals();
    println!(
        "NETWORK_FAULTS loss 5 % jitter 40 ms: turns {committed}/{TURNS}, echo envelope correlation {correlations:.3?}, \
         packets in {}, concealed {}, recovered by FEC {}, lost {}, late {}, jitter buffer target {} ms",
        media.packets_in, media.concealed, media.recovered, media.lost, media.late, media.jitter_target_ms
    );
    assert!(media.plc_frames > 0, "5 % loss must show as concealed or recovered frames: {media:?}");
    for (turn, corr) in correlations.iter().enumerate() {
        assert!(*corr > 0.7, "turn {turn}: echo envelope correlation {corr:.2}");
    }
    c.close().await;
    server.shutdown().await;
}

/// The way back on a bad network: a caller whose RTCP receiver reports say it loses the server's
/// packets gets the agent's speech with Opus in-band FEC, sized by the reports; a caller whose
/// reports say it loses nothing gets none (FEC would cost the server ≈ 15 % more encoder CPU
/// for nothing). On the shared loop and with a driver per call, which read the reports apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_speech_carries_fec_once_the_caller_reports_loss() {
    for on_loop in [true, false] {
        let server = start_with(|c| c.rtc_loop = on_loop).await;
        let base = server.url();
        for reported_loss in [0u8, 26] {
            let mut c = Call::connect(&base, "/v1/realtime", API_KEY).await;
            assert_eq!(server.engine.loop_connections(), usize::from(on_loop));
            c.expect("session.created").await;
            // The server sends its silence packet every 20 ms: its stream is there to report on.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while c.received().is_empty() {
                assert!(tokio::time::Instant::now() < deadline, "no packet from the server");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // A lossy path keeps saying so: a report every 250 ms (26 / 256 ≈ 10 %) through the
            // whole turn, between the library's own reports of the (nil) real loss.
            let before = c.received().len();
            c.speak_turn(500);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let voiced_since = |c: &Call| c.received()[before..].iter().filter(|r| r.voiced()).count();
            while !(c.types().iter().any(|t| t == "response.done") && voiced_since(&c) >= 50) {
                assert!(tokio::time::Instant::now() < deadline, "loop {on_loop}: no reply heard; saw {:?}", c.types());
                c.report_loss(reported_loss).await.expect("the report is sent");
                tokio::time::sleep(Duration::from_millis(250)).await;
                c.drain();
            }
            let done = c.log.iter().map(|(_, e)| e).find(|e| e["type"] == "response.done").expect("response.done");
            assert_eq!(done["response"]["status"], "completed", "loop {on_loop}: {done}");
            let voiced: Vec<bool> = c.received()[before..].iter().filter(|r| r.voiced()).map(|r| r.fec).collect();
            let with_fec = voiced.iter().filter(|f| **f).count();
            println!("FEC loop {on_loop}, reported loss {reported_loss}/256: {with_fec} of {} voiced packets", voiced.len());
            assert!(voiced.len() >= 50, "loop {on_loop}: {} voiced packets", voiced.len());
            if reported_loss == 0 {
                assert_eq!(with_fec, 0, "loop {on_loop}: FEC without reported loss");
            } else {
                assert!(with_fec * 2 > voiced.len(), "loop {on_loop}: only {with_fec} of {} voiced packets carry FEC", voiced.len());
            }
            c.close().await;
        }
        server.shutdown().await;
    }
}
