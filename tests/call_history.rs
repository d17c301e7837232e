//! Call history (issue 22, PROTOCOL.md §5) against the real server on 127.0.0.1: a WebRTC echo
//! call with a completed and a barged-in response, listed and read back with its transcript; a
//! room's participants and its agent; the API's refusals; and a server killed with SIGKILL
//! whose restart still has the call (closed as `interrupted`).

use crate::common;

use std::time::Duration;

use common::process::{KillOnDrop, serve};
use common::rooms::{events_until, join, of_type, voice};
use common::*;
use serde_json::{Value, json};
use voxrelay::transport::webrtc::room_client::RoomClientOptions;

async fn get(base: &str, path: &str) -> (u16, Value) {
    let resp = http().get(format!("{base}{path}")).bearer_auth(API_KEY).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// The record once the server has ended it (bounded wait: a hang-up is noticed asynchronously).
async fn ended(base: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, v) = get(base, &format!("/v1/calls/{id}")).await;
        assert_eq!(status, 200, "{v}");
        if !v["ended_at"].is_null() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "the call never ended: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn call_id(c: &Call) -> String {
    c.location.rsplit('/').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_call_is_listed_with_its_transcript_and_barge_in() {
    let server = start_server().await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, json!({})).await).await;
    c.expect("session.created").await;
    let id = call_id(&c);

    // While live: listed, not ended.
    let (status, list) = get(&base, "/v1/calls").await;
    assert_eq!(status, 200, "{list}");
    let live = &list["data"][0];
    assert_eq!(
        (live["id"].as_str(), live["transport"].as_str(), live["agent"].as_str()),
        (Some(id.as_str()), Some("webrtc"), Some("echo"))
    );
    assert!(live["ended_at"].is_null() && live["end_reason"].is_null() && live["room"].is_null(), "{live}");
    assert_eq!(list["has_more"], false);

    // A turn answered in full, then one cut short by the caller.
    c.speak_turn(300);
    c.expect("response.done").await;
    let heard_so_far = c.levels().iter().filter(|(_, r)| *r > VOICED_RMS).count();
    c.speak_turn(300);
    c.expect("output_audio_buffer.started").await;
    c.wait_voiced(heard_so_far + 25).await;
    c.interrupt_with(&speech());
    c.say(&silence_ms(2500));
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "cancelled", "{done}");
    c.expect("response.done").await;
    c.close().await;

    let record = ended(&base, &id).await;
    assert_eq!(record["end_reason"], "hung_up", "{record}");
    assert!(record["duration_ms"].as_u64().unwrap() > 3000, "{record}");
    assert!(record["counters"]["packets_in"].as_u64().unwrap() > 100, "{record}");
    let t = record["transcript"].as_array().unwrap();
    let roles: Vec<&str> = t.iter().map(|e| e["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user", "assistant"], "{t:#?}");
    // No speech-to-text runs for the echo agent: a spoken turn has no words.
    assert!(t[0]["text"].is_null() && t[0]["identity"].is_null(), "{}", t[0]);
    let (full, cut) = (&t[1], &t[3]);
    assert!(full["text"].as_str().unwrap().starts_with("[echo "), "{full}");
    assert_eq!((full["status"].as_str(), full["interrupted"].as_bool()), (Some("completed"), Some(false)));
    assert!(full["audio_ms"].as_u64().unwrap() >= 1000, "{full}");
    assert_eq!((cut["status"].as_str(), cut["interrupted"].as_bool()), (Some("cancelled"), Some(true)), "{cut}");
    let (heard, fraction) = (cut["heard_ms"].as_u64().unwrap(), cut["heard_fraction"].as_f64().unwrap());
    assert!(heard >= 400 && fraction > 0.0 && fraction < 1.0, "{cut}");
    let at: Vec<u64> = t.iter().map(|e| e["at_ms"].as_u64().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]) && at[0] > 0, "lines in order, since the call's start: {at:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_api_refuses_what_it_cannot_answer() {
    let server = start_server().await;
    let base = server.url();
    let secret = client_secret(&base, json!({})).await;
    for (path, token) in [("/v1/calls", None), ("/v1/calls", Some(secret.as_str())), ("/v1/calls/rtc_x", Some(secret.as_str()))] {
        let mut req = http().get(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert!([401, 403].contains(&resp.status().as_u16()), "{path}: {}", resp.status());
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    for (path, status, code) in [
        ("/v1/calls?limit=0", 400, "invalid_parameter"),
        ("/v1/calls?limit=9999", 400, "invalid_parameter"),
        ("/v1/calls?since=yesterday", 400, "invalid_parameter"),
        ("/v1/calls?room=no%20spaces", 400, "invalid_name"),
        ("/v1/calls?sort=asc", 400, "unknown_parameter"),
        ("/v1/calls?before=rtc_unknown", 404, "call_not_found"),
        ("/v1/calls/rtc_unknown", 404, "call_not_found"),
        ("/v1/calls/not-an-id", 400, "invalid_call_id"),
    ] {
        let (got, v) = get(&base, path).await;
        assert_eq!((got, v["error"]["code"].as_str()), (status, Some(code)), "{path}: {v}");
    }
    let (status, v) = get(&base, "/v1/calls?limit=5").await;
    assert_eq!((status, v), (200, json!({"data": [], "has_more": false})));
    server.shutdown().await;

    let off = start_with(|c| c.database = Some("off".into())).await;
    let (status, v) = get(&off.url(), "/v1/calls").await;
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("history_disabled")), "{v}");
    off.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rooms_participants_and_its_agent_have_records() {
    let server = start_server().await;
    let base = server.url();
    let one_slot = RoomClientOptions { slots: 1, ..Default::default() };
    let mut alice = join(&base, "standup", "alice", one_slot.clone(), json!({})).await;
    let mut seen = Vec::new();
    events_until(&mut alice, &mut seen, |e| !of_type(e, "room.joined").is_empty()).await;
    let body = json!({"agent": "echo", "conversation": "conv_standup_0123456789"});
    let resp = http().post(format!("{base}/v1/rooms/standup/agent")).bearer_auth(API_KEY).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    events_until(&mut alice, &mut seen, |e| of_type(e, "participant.joined").iter().any(|p| p["participant"]["identity"] == "agent")).await;
    alice.say(&voice(1.0));
    events_until(&mut alice, &mut seen, |e| of_type(e, "response.done").iter().any(|d| d["identity"] == "agent")).await;
    let resp = http().delete(format!("{base}/v1/rooms/standup/agent")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    alice.close().await;

    let (status, list) = get(&base, "/v1/calls?room=standup").await;
    assert_eq!(status, 200);
    let data = list["data"].as_array().unwrap();
    let who: Vec<(&str, &str)> = data.iter().map(|c| (c["identity"].as_str().unwrap(), c["transport"].as_str().unwrap())).collect();
    assert_eq!(who, [("agent", "agent"), ("alice", "webrtc")], "newest first: {data:#?}");
    assert_eq!((data[0]["agent"].as_str(), data[1]["agent"].as_str()), (Some("echo"), None));
    assert_eq!((data[0]["conversation"].as_str(), data[1]["conversation"].as_str()), (Some("conv_standup_0123456789"), None));
    let agent = ended(&base, data[0]["id"].as_str().unwrap()).await;
    assert_eq!(agent["end_reason"], "removed");
    let t = agent["transcript"].as_array().unwrap();
    assert!(t.len() >= 2, "{t:#?}");
    assert_eq!((t[0]["role"].as_str(), t[0]["identity"].as_str()), (Some("user"), Some("alice")), "the speaker: {}", t[0]);
    let reply = t.iter().find(|e| e["role"] == "assistant").unwrap();
    assert_eq!(reply["identity"], "agent");
    assert!(reply["text"].as_str().unwrap().starts_with("[echo "), "{reply}");
    let alice_record = ended(&base, data[1]["id"].as_str().unwrap()).await;
    assert_eq!((alice_record["room"].as_str(), alice_record["end_reason"].as_str()), (Some("standup"), Some("left")), "{alice_record}");
    let (_, other) = get(&base, "/v1/calls?room=elsewhere").await;
    assert_eq!(other["data"], json!([]));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_keeps_what_was_said_and_closes_the_call_as_interrupted() {
    let dir = std::env::temp_dir().join(format!("voxrelay-history-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = ["--listen", "127.0.0.1:0", "--api-key", API_KEY, "--data-dir", dir.to_str().unwrap()];
    let (child, base, _) = serve(&args, &[]).await;
    let child = KillOnDrop(child);
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, json!({})).await).await;
    c.expect("session.created").await;
    let id = call_id(&c);
    c.speak_turn(300);
    c.expect("response.done").await;
    // The promise: a crash loses at most the last second of events.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(child); // SIGKILL: nothing runs on the way out
    c.close().await;

    let (child, base, _) = serve(&args, &[]).await;
    let _child = KillOnDrop(child);
    let (status, record) = get(&base, &format!("/v1/calls/{id}")).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["end_reason"], "interrupted", "{record}");
    let roles: Vec<&str> = record["transcript"].as_array().unwrap().iter().map(|e| e["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant"], "{record}");
    assert!(record["duration_ms"].as_u64().unwrap() > 0);
    let _ = std::fs::remove_dir_all(&dir);
}
