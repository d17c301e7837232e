//! Barge-in (PROTOCOL.md §2): the caller speaking while the echo agent plays cancels the
//! response; outbound audio falls silent and the client gets the cleared/truncated/cancelled
//! events, in order after speech_started.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_cancels_response() {
    let server = start_server().await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, json!({})).await).await;
    c.expect("session.created").await;
    let speech = speech();
    c.say(&silence_ms(500));
    c.say(&speech);
    c.say(&silence_ms(3000));
    c.expect("response.created").await;
    c.expect("output_audio_buffer.started").await;

    // Let the echo play for a while, then cut in.
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.levels().iter().filter(|(_, r)| *r > VOICED_RMS).count() < 25 {
        assert!(tokio::time::Instant::now() < deadline, "echo never played");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.interrupt_with(&speech);
    c.say(&silence_ms(3000));

    c.expect("input_audio_buffer.speech_started").await;
    c.expect("output_audio_buffer.cleared").await;
    let truncated = c.expect("conversation.item.truncated").await;
    let done = c.expect("response.done").await;
    let done_at = std::time::Instant::now();
    assert_eq!(done["response"]["status"], "cancelled", "{done}");
    assert_eq!(done["response"]["status_details"]["reason"], "turn_detected");
    let played = truncated["audio_end_ms"].as_u64().unwrap();
    let full = (speech.len() / 48) as u64;
    assert!(played >= 400 && played < full, "truncated at {played} ms of a {full} ms echo");

    // Measure what the client hears after the cancel: the stream goes on, silent. 100 ms of
    // slack covers packets already in flight when the event was sent.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after: Vec<_> = c.levels().into_iter().filter(|(at, _)| *at > done_at + Duration::from_millis(100)).collect();
    assert!(after.len() >= 10, "audio keeps flowing after the cancel ({} packets)", after.len());
    let loud = after.iter().filter(|(_, r)| *r > VOICED_RMS).count();
    assert_eq!(loud, 0, "{loud} voiced packets after the cancel");

    // The interruption is itself a turn, which the echo answers once it is over.
    let next = c.expect("response.done").await;
    assert_eq!(next["response"]["status"], "completed");
    c.close().await;
    server.shutdown().await;
}
