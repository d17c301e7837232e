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
