//! Room helpers: tokens from the API, joining participants, reading their room events.

use std::time::Instant;

use serde_json::{Value, json};
use voxrelay::transport::webrtc::room_client::{RoomClient, RoomClientOptions};

use super::{API_KEY, WAIT, http, speech};

pub async fn mint(base: &str, room: &str, body: Value) -> String {
    let resp = http().post(format!("{base}/v1/rooms/{room}/tokens")).bearer_auth(API_KEY).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["room"], room);
    assert!(v["expires_at"].as_u64().unwrap() > 1_700_000_000);
    v["token"].as_str().unwrap().to_string()
}

pub async fn join(base: &str, room: &str, identity: &str, opts: RoomClientOptions, grants: Value) -> RoomClient {
    let mut body = json!({"identity": identity});
    body.as_object_mut().unwrap().extend(grants.as_object().unwrap().clone());
    let token = mint(base, room, body).await;
    RoomClient::join(&http(), base, room, &token, opts).await.expect("joins")
}

/// The fixture at a gain, so each participant's Opus payloads differ from the others'.
pub fn voice(gain: f32) -> Vec<i16> {
    speech().iter().map(|&s| (f32::from(s) * gain) as i16).collect()
}

/// Waits until `pred` holds on the client's events so far; returns them.
pub async fn events_until(client: &mut RoomClient, seen: &mut Vec<Value>, pred: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !pred(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, client.events.recv()).await {
            Ok(Some((_, ev))) => seen.push(ev),
            _ => panic!("timed out waiting for room events; saw {seen:#?}"),
        }
    }
}

pub fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

/// Waits (bounded by `WAIT`) until `cond` holds, looking every 20 ms: for states a client can
/// only observe by looking (what it has sent or received so far).
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until `talker` has sent all it queued and `listener` has received the last of its
/// speech (its last voiced packet), so everything forwarded in between has arrived too.
pub async fn heard_to_the_end(talker: &RoomClient, listener: &RoomClient) {
    until("the talker sent all it queued", || talker.queued() == 0).await;
    let last = talker.sent().into_iter().rev().find(|p| p.voiced).expect("the talker said something").payload;
    until("the listener received the talker's last word", || listener.received().iter().any(|p| p.payload == last)).await;
}
