//! The room API (PROTOCOL.md §4) against the real server: create/list/delete, `max_participants`,
//! auto-create off, server-side mute, `data.send`, and the room metrics.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::rooms::{events_until, heard_to_the_end, join, mint, of_type, until, voice};
use common::{API_KEY, http, start_server, start_with};
use serde_json::{Value, json};
use voxrelay::transport::webrtc::room_client::{RoomClient, RoomClientOptions};

async fn api(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = http().request(method, url).bearer_auth(API_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_created_listed_filled_and_deleted() {
    let server = start_with(|c| c.rooms_auto_create = false).await;
    let base = server.url();
    // Auto-create off: a join of an unknown room is 404.
    let token = mint(&base, "small", json!({"identity": "alice"})).await;
    let err = RoomClient::join(&http(), &base, "small", &token, RoomClientOptions::default()).await.err().unwrap();
    assert!(matches!(err, voxrelay::client::ClientError::Refused(404, ref b) if b.contains("room_not_found")), "{err}");

    let (status, room) =
        api(reqwest::Method::POST, format!("{base}/v1/rooms"), Some(json!({"name": "small", "max_participants": 2}))).await;
    assert_eq!(status, 201, "{room}");
    assert_eq!(
        (room["name"].as_str(), room["max_participants"].as_u64(), room["empty_timeout_seconds"].as_u64()),
        (Some("small"), Some(2), Some(300))
    );
    let (status, err) = api(reqwest::Method::POST, format!("{base}/v1/rooms"), Some(json!({"name": "small"}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("room_exists")));
    for (body, code) in [
        (json!({}), "missing_name"),
        (json!({"name": "x", "max_participants": 0}), "invalid_max_participants"),
        // A bad agent body is refused before the room exists (the list below has no "x").
        (json!({"name": "x", "agent": {"agent": "nope"}}), "unknown_agent"),
        (json!({"name": "x", "colour": "red"}), "invalid_json"),
    ] {
        let (status, err) = api(reqwest::Method::POST, format!("{base}/v1/rooms"), Some(body.clone())).await;
        assert_eq!((status, err["error"]["code"].as_str()), (400, Some(code)), "{body}");
    }

    let mut alice = RoomClient::join(&http(), &base, "small", &token, RoomClientOptions::default()).await.unwrap();
    let _bob = join(&base, "small", "bob", RoomClientOptions::default(), json!({})).await;
    let carol = mint(&base, "small", json!({"identity": "carol"})).await;
    let err = RoomClient::join(&http(), &base, "small", &carol, RoomClientOptions::default()).await.err().unwrap();
    assert!(matches!(err, voxrelay::client::ClientError::Refused(429, ref b) if b.contains("room_full")), "{err}");
    // Bob joining again replaces his first connection (no room_full for him).
    let _bob2 = join(&base, "small", "bob", RoomClientOptions::default(), json!({})).await;
    let mut seen = Vec::new();
    events_until(&mut alice, &mut seen, |e| {
        of_type(e, "participant.left").iter().any(|l| l["identity"] == "bob" && l["reason"] == "replaced")
    })
    .await;

    let (status, list) = api(reqwest::Method::GET, format!("{base}/v1/rooms"), None).await;
    assert_eq!(status, 200);
    let rooms: Vec<(&str, usize)> = list["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["participants"].as_array().unwrap().len()))
        .collect();
    assert_eq!(rooms, [("small", 2)]);

    let (status, _) = api(reqwest::Method::DELETE, format!("{base}/v1/rooms/small"), None).await;
    assert_eq!(status, 204);
    events_until(&mut alice, &mut seen, |e| {
        of_type(e, "participant.left").iter().any(|l| l["identity"] == "alice" && l["reason"] == "room_deleted")
    })
    .await;
    let (status, err) = api(reqwest::Method::GET, format!("{base}/v1/rooms/small"), None).await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("room_not_found")));
    let (status, _) = api(reqwest::Method::DELETE, format!("{base}/v1/rooms/small"), None).await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_side_mute_stops_forwarding_and_data_reaches_whom_it_should() {
    let server = start_server().await;
    let base = server.url();
    let mut alice = join(&base, "m", "alice", RoomClientOptions::default(), json!({})).await;
    let mut bob = join(&base, "m", "bob", RoomClientOptions::default(), json!({})).await;
    let mut carol =
        join(&base, "m", "carol", RoomClientOptions { publish: false, ..Default::default() }, json!({"publish_data": false})).await;
    let (mut a_seen, mut b_seen, mut c_seen) = (Vec::new(), Vec::new(), Vec::new());
    events_until(&mut alice, &mut a_seen, |e| of_type(e, "participant.joined").len() == 2).await;

    // Alice talks; once Bob hears her, the API mutes her mid-sentence.
    alice.say(&voice(1.0));
    let alices = |alice: &RoomClient| -> HashSet<Bytes> { alice.sent().into_iter().filter(|p| p.voiced).map(|p| p.payload).collect() };
    until("bob hears alice", || bob.received().iter().filter(|p| alices(&alice).contains(&p.payload)).count() >= 20).await;
    let (status, body) =
        api(reqwest::Method::POST, format!("{base}/v1/rooms/m/participants/alice/mute"), Some(json!({"muted": true}))).await;
    assert_eq!(status, 200, "{body}");
    let muted_at = Instant::now();
    let sent_before_mute = alice.sent().len();
    until("alice says more after the mute", || alice.sent()[sent_before_mute..].iter().filter(|p| p.voiced).count() > 30).await;
    // Alice kept sending; nothing she sent after the mute reached Bob. (Packets already queued
    // to Bob before the mute may land within a few ms of it.)
    let after: HashSet<Bytes> = alice.sent()[sent_before_mute..].iter().filter(|p| p.voiced).map(|p| p.payload.clone()).collect();
    assert!(after.len() > 20, "alice sent {} voiced frames after the mute", after.len());
    let leaked: Vec<_> = bob
        .received()
        .into_iter()
        .filter(|p| after.contains(&p.payload) || (p.at > muted_at + Duration::from_millis(100) && alices(&alice).contains(&p.payload)))
        .collect();
    assert!(leaked.is_empty(), "{} of alice's packets reached bob after the mute", leaked.len());
    events_until(&mut bob, &mut b_seen, |e| of_type(e, "track.muted").iter().any(|m| m["identity"] == "alice")).await;
    let info: Value = api(reqwest::Method::GET, format!("{base}/v1/rooms/m"), None).await.1;
    let alice_info = info["participants"].as_array().unwrap().iter().find(|p| p["identity"] == "alice").unwrap().clone();
    assert_eq!(alice_info["muted"], true);
    assert!(info["counters"]["dropped_not_publishing"].as_u64().unwrap() > 20, "{info}");
    let (status, _) = api(reqwest::Method::POST, format!("{base}/v1/rooms/m/participants/nobody/mute"), Some(json!({"muted": true}))).await;
    assert_eq!(status, 404);

    // data.send: to everyone else, to a list, refused without the grant or when too big.
    alice.send_event(&json!({"type": "data.send", "payload": {"text": "hi all"}, "topic": "chat"})).await.unwrap();
    alice.send_event(&json!({"type": "data.send", "payload": "just carol", "to": ["carol"]})).await.unwrap();
    events_until(&mut carol, &mut c_seen, |e| of_type(e, "data.received").len() == 2).await;
    let got = of_type(&c_seen, "data.received");
    assert_eq!(
        (got[0]["from"].as_str(), got[0]["payload"]["text"].as_str(), got[0]["topic"].as_str()),
        (Some("alice"), Some("hi all"), Some("chat"))
    );
    assert_eq!(got[1]["payload"], "just carol");
    events_until(&mut bob, &mut b_seen, |e| !of_type(e, "data.received").is_empty()).await;
    carol.send_event(&json!({"type": "data.send", "payload": "no grant"})).await.unwrap();
    events_until(&mut carol, &mut c_seen, |e| of_type(e, "error").iter().any(|x| x["error"]["code"] == "grant_missing")).await;
    let big = "x".repeat(17 * 1024);
    alice.send_event(&json!({"type": "data.send", "payload": big})).await.unwrap();
    alice.send_event(&json!({"type": "no.such.event"})).await.unwrap();
    events_until(&mut alice, &mut a_seen, |e| {
        let codes: Vec<&str> = of_type(e, "error").iter().filter_map(|x| x["error"]["code"].as_str()).collect();
        codes.contains(&"payload_too_large") && codes.contains(&"invalid_event")
    })
    .await;
    // Bob got only the message to everyone; the connection of whoever erred goes on: a last
    // message, sent after the refused ones, arrives (so they were all handled before it).
    alice.send_event(&json!({"type": "data.send", "payload": "last"})).await.unwrap();
    events_until(&mut bob, &mut b_seen, |e| of_type(e, "data.received").iter().any(|d| d["payload"] == "last")).await;
    let got: Vec<&Value> = of_type(&b_seen, "data.received").iter().map(|d| &d["payload"]).collect();
    assert_eq!(got, [&json!({"text": "hi all"}), &json!("last")]);
    alice.send_event(&json!({"type": "mute", "muted": false})).await.unwrap();
    events_until(&mut bob, &mut b_seen, |e| of_type(e, "track.unmuted").iter().any(|m| m["identity"] == "alice")).await;

    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(-1.0)
    };
    assert_eq!(value("voxrelay_rooms "), 1.0, "{metrics}");
    assert_eq!(value("voxrelay_room_participants "), 3.0);
    assert!(value("voxrelay_room_packets_forwarded_total") > 20.0);
    assert!(value("voxrelay_room_packets_dropped_total{reason=\"not_publishing\"}") > 20.0);
    for c in [&alice, &bob, &carol] {
        c.close().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooding_publisher_is_capped_and_the_others_are_heard() {
    let server = start_server().await;
    let base = server.url();
    let alice = join(&base, "f", "alice", RoomClientOptions::default(), json!({})).await;
    let bob = join(&base, "f", "bob", RoomClientOptions::default(), json!({})).await;
    let mallory = join(&base, "f", "mallory", RoomClientOptions::default(), json!({})).await;
    alice.say(&voice(1.0));
    // Mallory sends 2000 extra packets at once while Alice talks.
    mallory.flood(2000);
    heard_to_the_end(&alice, &bob).await;
    let (_, info) = api(reqwest::Method::GET, format!("{base}/v1/rooms/f"), None).await;
    let capped = info["counters"]["dropped_rate_limited"].as_u64().unwrap();
    assert!(capped > 1000, "only {capped} of mallory's 2000 packets were capped: {info}");
    // Alice is heard by Bob as if nobody flooded.
    let alices: HashSet<Bytes> = alice.sent().into_iter().filter(|p| p.voiced).map(|p| p.payload).collect();
    let heard = bob.received().iter().filter(|p| alices.contains(&p.payload)).count();
    assert!(heard as f64 > 0.8 * alices.len() as f64, "bob heard {heard} of alice's {} voiced frames", alices.len());
    for c in [&alice, &bob, &mallory] {
        c.close().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_without_audio_is_refused() {
    let server = start_server().await;
    let base = server.url();
    let token = mint(&base, "n", json!({"identity": "alice"})).await;
    let video_only = "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
    let resp = http()
        .post(format!("{base}/v1/rooms/n/join"))
        .bearer_auth(&token)
        .header("content-type", "application/sdp")
        .body(video_only)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "offer_without_audio");
    // Nothing was left behind: the room made by the refused join (if any) has nobody in it.
    let (status, info) = api(reqwest::Method::GET, format!("{base}/v1/rooms/n"), None).await;
    assert!(status == 404 || info["participants"].as_array().unwrap().is_empty(), "{info}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_publish_grant_nothing_is_forwarded_even_if_sent() {
    let server = start_server().await;
    let base = server.url();
    // Eve's token has no publish grant, but her client offers and sends a microphone anyway.
    let eve = join(&base, "g", "eve", RoomClientOptions::default(), json!({"publish": false})).await;
    let bob = join(&base, "g", "bob", RoomClientOptions::default(), json!({})).await;
    eve.say(&voice(1.0));
    until("eve sent all she queued", || eve.queued() == 0).await;
    // Everything she sent has reached the room (it counts her packets in) before Bob is checked.
    let sent = eve.sent().len();
    let deadline = Instant::now() + common::WAIT;
    let info = loop {
        let (_, info) = api(reqwest::Method::GET, format!("{base}/v1/rooms/g"), None).await;
        let eve_in =
            info["participants"].as_array().unwrap().iter().find(|p| p["identity"] == "eve").unwrap()["packets_in"].as_u64().unwrap();
        if eve_in as usize >= sent {
            break info;
        }
        assert!(Instant::now() < deadline, "the room never got eve's packets: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let eves: HashSet<Bytes> = eve.sent().into_iter().filter(|p| p.voiced).map(|p| p.payload).collect();
    assert!(eves.len() > 100);
    assert_eq!(bob.received().iter().filter(|p| eves.contains(&p.payload)).count(), 0, "bob heard eve");
    assert!(info["counters"]["dropped_not_publishing"].as_u64().unwrap() > 100, "{info}");
    let eve_info = info["participants"].as_array().unwrap().iter().find(|p| p["identity"] == "eve").unwrap().clone();
    assert_eq!(eve_info["publishing"], false);
    eve.close().await;
    bob.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_participants_count_against_the_servers_call_limit() {
    // --max-calls 1: four quarters. A room participant costs two, a WebRTC call four.
    let server = start_with(|c| c.max_calls = Some(1)).await;
    let base = server.url();
    let mut people = Vec::new();
    for name in ["a", "b"] {
        people.push(join(&base, "cap", name, RoomClientOptions { slots: 1, ..Default::default() }, json!({})).await);
    }
    let token = mint(&base, "cap", json!({"identity": "e"})).await;
    let err = RoomClient::join(&http(), &base, "cap", &token, RoomClientOptions::default()).await.err().unwrap();
    assert!(matches!(err, voxrelay::client::ClientError::Refused(503, ref b) if b.contains("limit")), "{err}");
    let secret = common::client_secret(&base, json!({})).await;
    let call = voxrelay::client::Client::connect(&http(), &format!("{base}/v1/realtime"), &secret, Default::default()).await;
    assert!(matches!(call, Err(voxrelay::client::ClientError::Refused(503, _))), "a call got in past the limit");
    // One leaves: its place is free again.
    let (status, _) = api(reqwest::Method::DELETE, format!("{base}/v1/rooms/cap/participants/a"), None).await;
    assert_eq!(status, 204);
    let deadline = Instant::now() + common::WAIT;
    loop {
        match RoomClient::join(&http(), &base, "cap", &token, RoomClientOptions::default()).await {
            Ok(e) => {
                people.push(e);
                break;
            }
            Err(err) => assert!(Instant::now() < deadline, "the freed place was not given back: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for p in &people {
        p.close().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_room_events_is_capped_with_one_error_and_the_room_goes_on() {
    let server = start_server().await;
    let base = server.url();
    let mut alice = join(&base, "f", "alice", RoomClientOptions::default(), json!({})).await;
    let mut bob = join(&base, "f", "bob", RoomClientOptions::default(), json!({})).await;
    let (mut a_seen, mut b_seen) = (Vec::new(), Vec::new());
    events_until(&mut alice, &mut a_seen, |e| of_type(e, "participant.joined").len() == 1).await;
    // 400 messages at once: the burst (200) and what the rate refills meanwhile get through.
    for n in 0..400 {
        alice.send_event(&json!({"type": "data.send", "payload": n})).await.unwrap();
    }
    events_until(&mut alice, &mut a_seen, |e| of_type(e, "error").iter().any(|x| x["error"]["code"] == "rate_limited")).await;
    // After the flood, once the rate has refilled, a message gets through again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice.send_event(&json!({"type": "data.send", "payload": "after"})).await.unwrap();
    events_until(&mut bob, &mut b_seen, |e| of_type(e, "data.received").iter().any(|d| d["payload"] == "after")).await;
    let got = of_type(&b_seen, "data.received").len() - 1;
    assert!((200..400).contains(&got), "{got} of 400 flooded messages forwarded");
    let errors = of_type(&a_seen, "error").iter().filter(|x| x["error"]["code"] == "rate_limited").count();
    assert_eq!(errors, 1, "one error per burst of refusals");
    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let limited: u64 =
        metrics.lines().find_map(|l| l.strip_prefix("voxrelay_client_events_limited_total ")).unwrap().trim().parse().unwrap();
    assert_eq!(limited as usize, 400 - got);
    for c in [&alice, &bob] {
        c.close().await;
    }
    server.shutdown().await;
}
