//! The AI participant of a room (PROTOCOL.md §4), with real webrtc-rs participants on
//! 127.0.0.1 and the built-in echo agent: it hears each participant's turns (attributed to its
//! speaker), answers each once, everyone hears its answer, anyone's speech barges in, it waits
//! while two people talk over each other, and it leaves cleanly mid-response.

use crate::common;

use std::collections::HashSet;

use bytes::Bytes;
use common::rooms::{events_until, join, of_type, voice};
use common::{API_KEY, http, start_server};
use serde_json::{Value, json};
use voxrelay::transport::webrtc::room_client::{RoomClient, RoomClientOptions};

async fn attach(base: &str, room: &str, body: Value) -> reqwest::Response {
    http().post(format!("{base}/v1/rooms/{room}/agent")).bearer_auth(API_KEY).json(&body).send().await.unwrap()
}

async fn media_sessions(base: &str) -> u64 {
    let text = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with("voxrelay_media_sessions ")).expect("the gauge is exported");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Waits (bounded) until the audio workers hold `n` sessions.
async fn sessions_become(base: &str, n: u64) {
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let now = media_sessions(base).await;
        if now == n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the workers hold {now} sessions, not {n}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The agent's events among a participant's room events.
fn agents<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    of_type(events, t).into_iter().filter(|e| e["identity"] == "agent").collect()
}

/// Voiced packets a participant received from the agent: not silence (3 bytes) and not what
/// another person sent (forwarded payloads are byte-identical).
fn heard_from_agent(client: &RoomClient, events: &[Value], people: &HashSet<Bytes>) -> usize {
    let slots = of_type(events, "slot.assigned");
    assert!(slots.iter().any(|e| e["identity"] == "agent"), "the agent never got a slot: {events:#?}");
    client.received().iter().filter(|p| p.payload.len() > 10 && !people.contains(&p.payload)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_answers_each_speaker_once_and_everyone_hears_it() {
    let server = start_server().await;
    let base = server.url();
    let one_slot = RoomClientOptions { slots: 1, ..Default::default() };
    let mut alice = join(&base, "huddle", "alice", one_slot.clone(), json!({"name": "Alice"})).await;
    let mut bob = join(&base, "huddle", "bob", one_slot.clone(), json!({})).await;
    let (mut a_seen, mut b_seen) = (Vec::new(), Vec::new());
    events_until(&mut bob, &mut b_seen, |e| !of_type(e, "room.joined").is_empty()).await;
    // No agent, nothing decoded: the room only forwards.
    assert_eq!(media_sessions(&base).await, 0);

    let resp = attach(&base, "huddle", json!({"agent": "echo"})).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["location"], "/v1/rooms/huddle/agent");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, json!({"room": "huddle", "identity": "agent", "agent": "echo"}));
    events_until(&mut alice, &mut a_seen, |e| of_type(e, "participant.joined").iter().any(|p| p["participant"]["identity"] == "agent"))
        .await;
    let joined = of_type(&a_seen, "participant.joined").into_iter().find(|p| p["participant"]["identity"] == "agent").unwrap().clone();
    assert_eq!(joined["participant"]["agent"], true);
    // One voice session and one listen session per publishing participant.
    sessions_become(&base, 3).await;

    let info: Value = http().get(format!("{base}/v1/rooms/huddle")).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = info["participants"].as_array().unwrap().iter().map(|p| p["identity"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob", "agent"]);

    alice.say(&voice(1.0));
    events_until(&mut bob, &mut b_seen, |e| !agents(e, "response.done").is_empty()).await;
    bob.say(&voice(0.6));
    events_until(&mut alice, &mut a_seen, |e| agents(e, "response.done").len() >= 2).await;
    events_until(&mut bob, &mut b_seen, |e| agents(e, "response.done").len() >= 2).await;

    for (name, seen) in [("alice", &a_seen), ("bob", &b_seen)] {
        let committed = agents(seen, "input_audio_buffer.committed");
        let speakers: Vec<&str> = committed.iter().map(|e| e["speaker"].as_str().unwrap()).collect();
        assert_eq!(speakers, ["alice", "bob"], "{name} saw turns attributed as {speakers:?}");
        let created: Vec<&str> = agents(seen, "conversation.item.created")
            .iter()
            .filter(|e| e["item"]["role"] == "user")
            .map(|e| e["speaker"].as_str().unwrap())
            .collect();
        assert_eq!(created, ["alice", "bob"]);
        let started = agents(seen, "input_audio_buffer.speech_started");
        assert!(started.iter().all(|e| e["speaker"] == "alice" || e["speaker"] == "bob"), "{started:?}");
        // Each turn answered once, completely.
        let done = agents(seen, "response.done");
        assert_eq!(agents(seen, "response.created").len(), 2, "{name}");
        assert!(done.iter().all(|d| d["response"]["status"] == "completed"), "{done:#?}");
        // A beta session body: the beta event names.
        let transcripts: Vec<&str> =
            agents(seen, "response.audio_transcript.done").iter().map(|e| e["transcript"].as_str().unwrap()).collect();
        assert_eq!(transcripts.len(), 2);
        assert!(transcripts.iter().all(|t| t.starts_with("[echo ")), "{transcripts:?}");
        // The agent's events never name a speaker on its own output.
        assert!(agents(seen, "response.created").iter().all(|e| e.get("speaker").is_none()));
    }
    // Both heard the agent's answers (encoded once, forwarded like anyone's speech): two
    // echoes of ≈ 2.5 s each, a few frames short at the edges.
    let people: HashSet<Bytes> = alice.sent().into_iter().chain(bob.sent()).map(|p| p.payload).collect();
    for (name, client, seen) in [("alice", &alice, &a_seen), ("bob", &bob, &b_seen)] {
        let n = heard_from_agent(client, seen, &people);
        assert!(n > 150, "{name} heard {n} voiced packets");
    }
    let speakers = of_type(&a_seen, "active_speakers");
    assert!(
        speakers.iter().any(|e| e["speakers"].as_array().unwrap().iter().any(|s| s["identity"] == "agent")),
        "the agent was never an active speaker"
    );

    // A second agent is refused; the first leaves on DELETE and its sessions go.
    let resp = attach(&base, "huddle", json!({"agent": "echo", "identity": "agent2"})).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "agent_exists");
    let del = http().delete(format!("{base}/v1/rooms/huddle/agent")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(del.status(), 204);
    events_until(&mut alice, &mut a_seen, |e| of_type(e, "participant.left").iter().any(|p| p["identity"] == "agent")).await;
    let left = of_type(&a_seen, "participant.left").into_iter().find(|p| p["identity"] == "agent").unwrap().clone();
    assert_eq!(left["reason"], "removed");
    sessions_become(&base, 0).await;
    let again = http().delete(format!("{base}/v1/rooms/huddle/agent")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(again.json::<Value>().await.unwrap()["error"]["code"], "agent_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_participant_barges_in_and_the_agent_waits_while_two_talk_at_once() {
    let server = start_server().await;
    let base = server.url();
    let opts = RoomClientOptions { slots: 1, ..Default::default() };
    let mut alice = join(&base, "debate", "alice", opts.clone(), json!({})).await;
    let bob = join(&base, "debate", "bob", opts.clone(), json!({})).await;
    assert_eq!(attach(&base, "debate", json!({"agent": "echo"})).await.status(), 201);
    let mut seen = Vec::new();
    events_until(&mut alice, &mut seen, |e| of_type(e, "participant.joined").iter().any(|p| p["participant"]["identity"] == "agent")).await;

    // Alice speaks; while the agent plays her words back, Bob speaks: the answer is cut.
    alice.say(&voice(1.0));
    events_until(&mut alice, &mut seen, |e| !agents(e, "output_audio_buffer.started").is_empty()).await;
    bob.say(&voice(0.6));
    events_until(&mut alice, &mut seen, |e| !agents(e, "response.done").is_empty()).await;
    let done = agents(&seen, "response.done")[0].clone();
    assert_eq!(done["response"]["status"], "cancelled", "{done:#}");
    assert_eq!(done["response"]["status_details"]["reason"], "turn_detected");
    assert!(!agents(&seen, "conversation.item.truncated").is_empty());
    // Bob's turn is then answered.
    events_until(&mut alice, &mut seen, |e| agents(e, "response.done").len() >= 2).await;
    assert_eq!(agents(&seen, "response.done")[1]["response"]["status"], "completed");

    // Both at once: the agent answers after both have finished, once.
    let before = seen.len();
    alice.say(&voice(1.0));
    bob.say(&voice(0.6));
    events_until(&mut alice, &mut seen, |e| agents(e, "response.done").len() >= 3).await;
    let now: Vec<&Value> = seen[before..].iter().filter(|e| e["identity"] == "agent").collect();
    let pos = |t: &str| now.iter().position(|e| e["type"] == t);
    let commits: Vec<usize> = now.iter().enumerate().filter(|(_, e)| e["type"] == "input_audio_buffer.committed").map(|(i, _)| i).collect();
    let speakers: HashSet<&str> =
        now.iter().filter(|e| e["type"] == "input_audio_buffer.committed").map(|e| e["speaker"].as_str().unwrap()).collect();
    assert_eq!(speakers, HashSet::from(["alice", "bob"]), "{now:#?}");
    let created = pos("response.created").expect("a response");
    assert!(commits.iter().all(|&c| c < created), "the agent answered before both had finished: {now:#?}");
    assert_eq!(now.iter().filter(|e| e["type"] == "response.created").count(), 1, "{now:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaving_mid_response_ends_the_response_and_bad_agent_bodies_get_clear_errors() {
    let server = start_server().await;
    let base = server.url();
    for (body, status, code) in [
        (json!({"agent": "nope"}), 400, "unknown_agent"),
        (json!({"agent": "openai-realtime"}), 400, "agent_not_configured"),
        (json!({"identity": "bad name!"}), 400, "invalid_name"),
        (json!({"identity": 5}), 400, "invalid_json"),
        (json!({"turn_detection": "loud"}), 400, "invalid_json"),
    ] {
        let resp = attach(&base, "lab", body.clone()).await;
        assert_eq!(resp.status(), status, "{body}");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], code, "{body}");
    }
    let no_key = http().post(format!("{base}/v1/rooms/lab/agent")).json(&json!({})).send().await.unwrap();
    assert_eq!(no_key.status(), 401);

    // POST /v1/rooms with an agent: the room starts with it (GA body: the events use GA names).
    let resp = http()
        .post(format!("{base}/v1/rooms"))
        .bearer_auth(API_KEY)
        .json(&json!({"name": "lab", "agent": {"type": "realtime", "agent": "echo", "identity": "helper"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["participants"][0]["identity"], "helper");
    assert_eq!(info["participants"][0]["agent"], true);

    let mut alice = join(&base, "lab", "alice", RoomClientOptions { slots: 1, ..Default::default() }, json!({})).await;
    let mut seen = Vec::new();
    alice.say(&voice(1.0));
    events_until(&mut alice, &mut seen, |e| of_type(e, "output_audio_buffer.started").iter().any(|e| e["identity"] == "helper")).await;
    let del = http().delete(format!("{base}/v1/rooms/lab/agent")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(del.status(), 204);
    events_until(&mut alice, &mut seen, |e| of_type(e, "participant.left").iter().any(|p| p["identity"] == "helper")).await;
    let done: Vec<&Value> = of_type(&seen, "response.done");
    assert_eq!(done.len(), 1, "{seen:#?}");
    assert_eq!(done[0]["response"]["status"], "cancelled");
    // The response ended before the agent left.
    let done_at = seen.iter().position(|e| e["type"] == "response.done").unwrap();
    let left_at = seen.iter().position(|e| e["type"] == "participant.left").unwrap();
    assert!(done_at < left_at);
    // A participant's identity cannot be taken by an agent.
    let resp = attach(&base, "lab", json!({"agent": "echo", "identity": "alice"})).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "identity_taken");
    alice.close().await;
}
