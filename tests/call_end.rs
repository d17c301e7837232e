//! How 1:1 calls end, counted by reason in `/metrics`: a hang-up, a DELETE, and a peer whose
//! network vanishes (no hang-up, no packets at all), which ICE consent freshness (RFC 7675)
//! must drop within 30 s. The vanishing is real: the caller reaches the server only through a
//! TURN relay run by this test, which is then shut down.

use crate::common;

use std::time::{Duration, Instant};

use common::{API_KEY, Call, client_secret, http, start_server};
use serde_json::json;
use voxrelay::transport::webrtc::client::ClientOptions;

async fn ended_by(base: &str, reason: &str) -> u64 {
    let text = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let key = format!("voxrelay_calls_ended_by_reason_total{{reason=\"{reason}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&key)).unwrap_or_else(|| panic!("no {key} in /metrics"));
    line[key.len()..].parse().unwrap()
}

/// Waits (bounded) until the server has no live call.
async fn until_no_calls(server: &voxrelay::RunningServer, bound: Duration) -> Duration {
    let start = Instant::now();
    while server.engine.live_calls() > 0 {
        assert!(start.elapsed() < bound, "the call was still live after {bound:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_ups_and_deletes_are_counted_by_reason() {
    let server = start_server().await;
    let base = server.url();

    let token = client_secret(&base, json!({})).await;
    let mut c = Call::connect(&base, "/v1/realtime", &token).await;
    c.expect("session.created").await;
    c.close().await;
    until_no_calls(&server, Duration::from_secs(10)).await;
    assert_eq!(ended_by(&base, "hung_up").await, 1);

    let token = client_secret(&base, json!({})).await;
    let mut c = Call::connect(&base, "/v1/realtime", &token).await;
    c.expect("session.created").await;
    let resp = http().delete(format!("{base}{}", c.location)).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(ended_by(&base, "requested").await, 1);
    assert_eq!(ended_by(&base, "hung_up").await, 1);
    for reason in ["failed", "never_connected", "lost"] {
        assert_eq!(ended_by(&base, reason).await, 0, "{reason}");
    }
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_network_vanishes_is_dropped_within_the_consent_bound() {
    let server = start_server().await;
    let base = server.url();
    let (relay, ice_servers) = common::loopback_relay("caller").await;
    let token = client_secret(&base, json!({})).await;
    let opts = ClientOptions { ice_servers, relay_only: true, decode: false, ..Default::default() };
    let mut c = Call::connect_with(&base, "/v1/realtime", &token, opts).await;
    c.expect("session.created").await;

    // The caller's only path to the server disappears: no hang-up reaches the server.
    relay.shutdown().await;
    // ICE notices after 5 s without answers to its keepalives ("disconnected"); the call gets
    // 15 s of grace for an ICE restart, then ends: ≈ 20 s, inside RFC 7675's 30 s.
    let held = until_no_calls(&server, Duration::from_secs(30)).await;
    assert_eq!(ended_by(&base, "lost").await, 1, "ended as lost after {held:?}");
    assert_eq!(ended_by(&base, "hung_up").await, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.engine.media_sessions() > 0 {
        assert!(Instant::now() < deadline, "the worker session outlived the call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realtime_socket_that_stops_answering_pings_is_dropped() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = start_server().await;
    let base = server.url();
    let mut req = format!("{}/v1/realtime?model=gpt-realtime", base.replacen("http", "ws", 1)).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {API_KEY}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("upgrade");
    let first = ws.next().await.expect("an event").expect("read");
    assert!(first.to_text().unwrap().contains("session.created"), "{first:?}");
    // The client goes on holding its socket but never reads again, so it answers no ping: as a
    // peer whose network vanished without a FIN looks to the server.
    let held = until_no_calls(&server, Duration::from_secs(40)).await;
    assert_eq!(ended_by(&base, "failed").await, 1, "ended as failed after {held:?}");
    drop(ws);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_where_nobody_speaks_is_told_then_ended_as_idle() {
    let server = start_server().await;
    let base = server.url();
    let refused =
        http().post(format!("{base}/v1/realtime/sessions")).bearer_auth(API_KEY).json(&json!({"idle_timeout": 0})).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.json::<serde_json::Value>().await.unwrap()["error"]["code"], "invalid_call_limit");

    let token = client_secret(&base, json!({"idle_timeout": 4})).await;
    let mut c = Call::connect(&base, "/v1/realtime", &token).await;
    let created = c.expect("session.created").await;
    assert_eq!(created["session"]["idle_timeout"], 4, "{created}");
    // A turn and its answer keep the call alive; the idle count starts when the agent stops.
    c.speak_turn(300);
    c.expect("response.done").await;
    let ending = c.expect("session.ending").await;
    assert_eq!((ending["reason"].as_str(), ending["seconds_left"].as_u64()), (Some("idle_timeout"), Some(1)), "{ending}");
    let types = c.types();
    let done_at = types.iter().rposition(|t| t == "output_audio_buffer.stopped").expect("the answer played out");
    assert!(types.iter().rposition(|t| t == "session.ending").unwrap() > done_at, "{types:?}");
    until_no_calls(&server, Duration::from_secs(10)).await;
    assert_eq!(ended_by(&base, "idle_timeout").await, 1);
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ends_at_its_maximum_duration_after_a_warning() {
    let server = start_server().await;
    let base = server.url();
    let token = client_secret(&base, json!({"max_call_duration": 3})).await;
    let started = Instant::now();
    let mut c = Call::connect(&base, "/v1/realtime", &token).await;
    c.expect("session.created").await;
    let ending = c.expect("session.ending").await;
    assert_eq!((ending["reason"].as_str(), ending["seconds_left"].as_u64()), (Some("max_call_duration"), Some(1)), "{ending}");
    until_no_calls(&server, Duration::from_secs(10)).await;
    assert!(started.elapsed() >= Duration::from_secs(3), "not before its time: {:?}", started.elapsed());
    assert_eq!(ended_by(&base, "max_call_duration").await, 1);
    c.close().await;
    server.shutdown().await;
}
