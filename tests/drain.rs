//! Graceful drain (PROTOCOL.md §6), as SIGTERM runs it: the server stops being ready and refuses
//! new sessions with 503 + Retry-After, live calls keep their audio until they end by
//! themselves, and calls still running when the grace period ends are closed cleanly, a running
//! response finished with `response.done` (status `cancelled`).

use crate::common;

use std::time::Instant;

use common::*;
use serde_json::json;

const GRACE_SECS: u64 = 5;

fn voiced_since(call: &Call, since: Instant) -> usize {
    call.levels().iter().filter(|(at, r)| *at >= since && *r > VOICED_RMS).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_keeps_live_calls_then_ends_them_cleanly() {
    let server = start_with(|c| c.drain_grace_secs = GRACE_SECS).await;
    let base = server.url();

    // A: a normal server-VAD call whose answer is playing when the drain starts and ends
    // within the grace period.
    let mut a = Call::connect(&base, "/v1/realtime", API_KEY).await;
    a.expect("session.created").await;
    // B: push-to-talk with an 8.4 s utterance, so its echo outlasts the grace period.
    let mut b = Call::connect(&base, "/v1/realtime", API_KEY).await;
    b.expect("session.created").await;
    b.send(json!({"type": "session.update", "session": {"turn_detection": null}})).await;
    b.expect("session.updated").await;
    let speech = speech();
    for _ in 0..3 {
        b.say(&speech);
    }
    a.speak_turn(4000);
    b.wait_sent().await;
    b.send(json!({"type": "input_audio_buffer.commit"})).await;
    b.send(json!({"type": "response.create"})).await;
    b.expect("output_audio_buffer.started").await;
    a.expect("output_audio_buffer.started").await;

    let drain_started = Instant::now();
    let stopped = tokio::spawn(server.shutdown());

    // Not ready, and every way to a new session answers 503 with Retry-After.
    let deadline = tokio::time::Instant::now() + WAIT;
    while http().get(format!("{base}/readyz")).send().await.unwrap().status() != 503 {
        assert!(tokio::time::Instant::now() < deadline, "never stopped being ready");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let refusals = [
        http().post(format!("{base}/v1/realtime/sessions")).bearer_auth(API_KEY).json(&json!({})).send().await.unwrap(),
        http().post(format!("{base}/v1/realtime/client_secrets")).bearer_auth(API_KEY).json(&json!({})).send().await.unwrap(),
        http()
            .post(format!("{base}/v1/realtime/calls"))
            .bearer_auth(API_KEY)
            .header("content-type", "application/sdp")
            .body("v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n")
            .send()
            .await
            .unwrap(),
    ];
    for resp in refusals {
        assert_eq!(resp.status(), 503, "{}", resp.url());
        assert!(resp.headers().contains_key("retry-after"), "{}", resp.url());
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("draining"), "{body}");
    }

    // A's answer plays to its end during the drain; then A hangs up by itself.
    let done = a.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    assert!(voiced_since(&a, drain_started) >= 25, "A's audio went on during the drain");
    a.close().await;

    // B is still answering when the grace period ends: its response is closed, not dropped.
    let done = b.expect("response.done").await;
    assert_eq!(done["response"]["status"], "cancelled", "{done}");
    assert_eq!(done["response"]["status_details"]["reason"], "call_ended", "{done}");
    assert!(
        drain_started.elapsed().as_secs_f64() >= GRACE_SECS as f64 - 0.5,
        "B was cut before the grace period ended ({:?})",
        drain_started.elapsed()
    );
    assert!(voiced_since(&b, drain_started) >= 100, "B's audio went on during the grace period");

    tokio::time::timeout(WAIT, stopped).await.expect("the server stops after the grace period").unwrap();
}
