//! A caller on a bad network: 5 % of its RTP lost at random, every packet delayed by 0–40 ms
//! (so about one in nine overtakes the one before it). The jitter buffer reorders and conceals,
//! the decoded stream stays continuous, turn detection still finds every turn, and the echo still
//! has the shape of what was said. The numbers are printed; BENCHMARKS.md ("Network faults")
//! has a longer run from the load generator.

mod common;

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
