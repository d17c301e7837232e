//! A caller that sends Opus with DTX, as a browser does once the answer says `usedtx=1` (issue
//! 20): its pauses are one DTX packet and then nothing, sequence numbers continuing where it
//! resumes. The turn must be timed as for a caller that sends every frame, the echo must come
//! back whole, and the server must neither decode nor conceal the pauses. On the shared loop
//! and on the per-call driver (both answer with the same media engine).

use crate::common;

use common::*;
use serde_json::json;

const MAX_ONSET_ERROR_MS: i64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_in_dtx_is_heard_and_answered_and_its_pauses_cost_no_decode() {
    for shared in [true, false] {
        let server = start_with(|c| c.rtc_loop = shared).await;
        let base = server.url();
        let secret = client_secret(&base, json!({"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}})).await;
        let opts = ClientOptions { dtx: true, ..Default::default() };
        let mut c = Call::connect_with(&base, "/v1/realtime", &secret, opts).await;
        assert!(c.dtx, "loop {shared}: the answer asks for DTX: {}", c.answer_sdp);
        c.expect("session.created").await;

        let speech = speech();
        let speech_ms = (speech.len() / 48) as i64;
        let start = c.say(&silence_ms(1500)) as i64 + 1500;
        c.say(&speech);
        c.say(&silence_ms(4000));

        let started = c.expect("input_audio_buffer.speech_started").await;
        let onset = started["audio_start_ms"].as_i64().unwrap();
        assert!((onset - start).abs() <= MAX_ONSET_ERROR_MS, "loop {shared}: speech_started at {onset} ms, speech starts at {start} ms");
        let stopped = c.expect("input_audio_buffer.speech_stopped").await;
        let end = stopped["audio_end_ms"].as_i64().unwrap();
        let expected_end = start + speech_ms;
        assert!(
            (end - expected_end).abs() <= MAX_ONSET_ERROR_MS,
            "loop {shared}: speech_stopped at {end} ms, speech ends at {expected_end} ms"
        );
        let done = c.expect("response.done").await;
        assert_eq!(done["response"]["status"], "completed", "{done}");
        c.wait_sent().await;

        // The echo has the energy envelope of what was said.
        let received = c.levels();
        let first = received.iter().position(|(_, r)| *r > VOICED_RMS).expect("echoed audio arrives");
        let echoed: Vec<f64> = received[first..].iter().map(|(_, r)| *r).take(speech.len() / 960).collect();
        let corr = best_lag_correlation(&envelope(&speech), &echoed);

        let media = server.engine.media_totals();
        println!(
            "DTX_CALL loop {shared}: packets in {}, decoded {}, DTX frames {}, concealed {}, underruns {}, echo envelope correlation {corr:.3}",
            media.packets_in, media.frames_decoded, media.dtx_frames, media.concealed, media.underruns
        );
        assert!(corr > 0.8, "loop {shared}: echo envelope correlation {corr:.2}");
        // 1.5 s before the speech and 4 s after it, less the encoder's ≈ 200 ms hangover each
        // time: well over 200 frames of pause.
        assert!(media.dtx_frames > 200, "loop {shared}: the pauses are DTX silence: {media:?}");
        assert!(media.packets_in < media.frames_decoded + media.dtx_frames, "loop {shared}: fewer packets than frames: {media:?}");
        // Treated as lateness, every paused tick would have been concealed (hundreds); a busy
        // machine may still make a packet or two late.
        assert!(media.concealed < 10, "loop {shared}: a pause is not a loss: {media:?}");
        c.close().await;
        server.shutdown().await;
    }
}
