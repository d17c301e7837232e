//! A phone caller in a room (PROTOCOL.md §4): a Twilio stream whose `customParameters` carry
//! `room` joins it as a participant. Against the fake phone line (Twilio's messages byte for
//! byte, real mu-law speech) and a real webrtc-rs participant: each hears the other, an echo
//! agent answers the caller's turn and both hear it, and hanging up leaves the room.

use crate::common;
use crate::fakes::phone_line;

use common::rooms::{events_until, join, of_type, until, voice};
use common::{API_KEY, http, speech, start_server};
use phone_line::{FakeLine, Impairments, to_8k};
use serde_json::{Value, json};
use voxrelay::transport::webrtc::room_client::{RoomClient, RoomClientOptions};

/// Packets a participant received that carry speech (Opus silence is 3 bytes).
fn voiced_received(c: &RoomClient) -> usize {
    c.received().iter().filter(|p| p.payload.len() > 10).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_phone_caller_and_a_browser_hear_each_other_and_the_agent_in_one_room() {
    let server = start_server().await;
    let base = server.url();
    let mut alice = join(&base, "mixed", "alice", RoomClientOptions { slots: 1, ..Default::default() }, json!({})).await;
    let ws = format!("{}/v1/telephony/twilio", base.replacen("http", "ws", 1));
    let line = FakeLine::connect(&ws, json!({"room": "mixed", "identity": "carol", "name": "Carol (phone)"}), Impairments::default()).await;
    let mut seen = Vec::new();
    events_until(&mut alice, &mut seen, |e| of_type(e, "participant.joined").iter().any(|p| p["participant"]["identity"] == "carol")).await;
    let joined = of_type(&seen, "participant.joined").into_iter().find(|p| p["participant"]["identity"] == "carol").unwrap().clone();
    assert_eq!(joined["participant"]["name"], "Carol (phone)");
    assert_eq!(joined["participant"]["publishing"], true);

    // Alice speaks: the caller hears her, decoded and mixed down to 8 kHz mu-law.
    alice.say(&voice(1.0));
    until("the caller heard alice", || line.log.lock().unwrap().voiced_played() > 60).await;

    // The caller speaks: alice hears it, encoded to Opus once and forwarded like anyone's.
    let before = voiced_received(&alice);
    line.say(&to_8k(&speech()));
    until("alice heard the caller", || voiced_received(&alice) > before + 60).await;
    let info: Value = http().get(format!("{base}/v1/rooms/mixed")).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
    let carol = info["participants"].as_array().unwrap().iter().find(|p| p["identity"] == "carol").unwrap().clone();
    assert_eq!(carol["slots"], 1, "a phone caller hears the room's top speaker on one slot");
    assert!(carol["packets_in"].as_u64().unwrap() > 100, "{carol}");

    // An echo agent joins: the caller's turn is answered, attributed to the caller, and both
    // the caller and alice hear the answer.
    let resp =
        http().post(format!("{base}/v1/rooms/mixed/agent")).bearer_auth(API_KEY).json(&json!({"agent": "echo"})).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    events_until(&mut alice, &mut seen, |e| of_type(e, "participant.joined").iter().any(|p| p["participant"]["identity"] == "agent")).await;
    let (heard_by_line, heard_by_alice) = (line.log.lock().unwrap().voiced_played(), voiced_received(&alice));
    line.say(&to_8k(&speech()));
    events_until(&mut alice, &mut seen, |e| of_type(e, "response.done").iter().any(|d| d["identity"] == "agent")).await;
    let committed = of_type(&seen, "input_audio_buffer.committed");
    assert_eq!(committed.last().unwrap()["speaker"], "carol", "{committed:?}");
    let done = of_type(&seen, "response.done").last().unwrap()["response"]["status"].clone();
    assert_eq!(done, "completed");
    until("the caller heard the agent", || line.log.lock().unwrap().voiced_played() > heard_by_line + 60).await;
    until("alice heard the caller and the agent", || voiced_received(&alice) > heard_by_alice + 120).await;

    // The caller hangs up: it leaves the room.
    line.stop();
    events_until(&mut alice, &mut seen, |e| of_type(e, "participant.left").iter().any(|p| p["identity"] == "carol")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_phone_stream_naming_a_bad_room_is_closed() {
    let server = start_server().await;
    let ws = format!("{}/v1/telephony/twilio", server.url().replacen("http", "ws", 1));
    let line = FakeLine::connect(&ws, json!({"room": "no room!"}), Impairments::default()).await;
    until("the server closed the stream", || line.log.lock().unwrap().closed).await;
}
