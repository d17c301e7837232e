//! WHIP ingest and WHEP playback (PROTOCOL.md §3) with real webrtc-rs peers on 127.0.0.1: a
//! WHIP publisher is heard, byte for byte, by a WHEP viewer and by a room participant; trickle
//! ICE and an ICE restart keep the same participant; the resource rules (ETag, If-Match,
//! DELETE, OPTIONS) and bad requests answer as RFC 9725 says.

use crate::common;

use std::collections::HashSet;

use bytes::Bytes;
use common::rooms::{events_until, heard_to_the_end, join, mint, of_type, voice};
use common::{API_KEY, http, start_server};
use serde_json::{Value, json};
use voxrelay::transport::webrtc::room_client::{Endpoint, RoomClient, RoomClientOptions};

fn whip() -> RoomClientOptions {
    RoomClientOptions { endpoint: Endpoint::Whip, slots: 0, ..Default::default() }
}

fn whep() -> RoomClientOptions {
    RoomClientOptions { endpoint: Endpoint::Whep, slots: 1, publish: false, ..Default::default() }
}

fn voiced(c: &RoomClient) -> HashSet<Bytes> {
    c.sent().into_iter().filter(|p| p.voiced).map(|p| p.payload).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whip_publisher_is_heard_by_a_whep_viewer_and_a_participant_and_leaves_on_delete() {
    let server = start_server().await;
    let base = server.url();
    let mut alice = join(&base, "stage", "alice", RoomClientOptions { slots: 1, ..Default::default() }, json!({})).await;
    let token = mint(&base, "stage", json!({"identity": "obs", "subscribe": false, "publish_data": false})).await;
    let obs = RoomClient::join(&http(), &base, "stage", &token, whip()).await.expect("WHIP publishes");
    assert_eq!(obs.location, "/v1/whip/stage/obs");
    assert!(alice.asks_for_dtx && obs.asks_for_dtx, "room and WHIP answers ask publishers for DTX (usedtx=1)");
    let etag = obs.etag.lock().unwrap().clone().expect("an ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2, "{etag}");
    assert!(obs.links.is_empty(), "no TURN here, so no ice-server links: {:?}", obs.links);
    let viewer_token = mint(&base, "stage", json!({"identity": "viewer", "publish": false, "publish_data": false})).await;
    let viewer = RoomClient::join(&http(), &base, "stage", &viewer_token, whep()).await.expect("WHEP plays");
    assert_eq!(viewer.location, "/v1/whep/stage/viewer");

    obs.say(&voice(1.0));
    heard_to_the_end(&obs, &viewer).await;
    heard_to_the_end(&obs, &alice).await;
    let said = voiced(&obs);
    for (name, c) in [("viewer", &viewer), ("alice", &alice)] {
        let got: HashSet<Bytes> = c.received().into_iter().map(|p| p.payload).collect();
        let share = said.intersection(&got).count() as f64 / said.len() as f64;
        assert!(share > 0.8, "{name} heard {share:.2} of the WHIP publisher's frames unchanged");
    }
    let mut seen = Vec::new();
    events_until(&mut alice, &mut seen, |e| of_type(e, "participant.joined").len() >= 2).await;
    let info: Value = http().get(format!("{base}/v1/rooms/stage")).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
    let who: Vec<(&str, u64)> =
        info["participants"].as_array().unwrap().iter().map(|p| (p["identity"].as_str().unwrap(), p["slots"].as_u64().unwrap())).collect();
    assert_eq!(who, [("alice", 1), ("obs", 0), ("viewer", 1)]);

    assert_eq!(obs.delete().await.unwrap(), 200);
    events_until(&mut alice, &mut seen, |e| of_type(e, "participant.left").iter().any(|l| l["identity"] == "obs" && l["reason"] == "left"))
        .await;
    // The resource is gone: a second DELETE is a 404.
    let again = http().delete(format!("{base}/v1/whip/stage/obs")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(again.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickled_candidates_and_an_ice_restart_keep_the_same_participant() {
    let server = start_server().await;
    let base = server.url();
    let mut alice = join(&base, "live", "alice", RoomClientOptions { slots: 1, ..Default::default() }, json!({})).await;
    let token = mint(&base, "live", json!({"identity": "cam"})).await;
    let cam =
        RoomClient::join(&http(), &base, "live", &token, RoomClientOptions { trickle: true, ..whip() }).await.expect("WHIP with trickle");
    assert_eq!(cam.trickle_status, Some(204), "the trickled candidates were accepted");
    cam.say(&voice(1.0));
    heard_to_the_end(&cam, &alice).await;

    let before = cam.etag.lock().unwrap().clone().unwrap();
    cam.restart_ice().await.expect("ICE restarts");
    let after = cam.etag.lock().unwrap().clone().unwrap();
    assert_ne!(before, after, "a restart gives the resource a new ETag");
    // Still the same participant, still heard.
    let heard_before = alice.received().len();
    cam.say(&voice(0.8));
    heard_to_the_end(&cam, &alice).await;
    assert!(alice.received().len() > heard_before + 100);
    let mut seen = Vec::new();
    events_until(&mut alice, &mut seen, |e| !of_type(e, "participant.joined").is_empty()).await;
    let info: Value = http().get(format!("{base}/v1/rooms/live")).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["participants"].as_array().unwrap().len(), 2);
    assert!(of_type(&seen, "participant.left").is_empty(), "nobody left: {seen:#?}");
    assert_eq!(of_type(&seen, "participant.joined").len(), 1, "cam joined once: {seen:#?}");

    // Conditional requests: a stale ETag is 412, a restart without If-Match is 412.
    let candidate = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n";
    let (status, _, body) = cam.patch(candidate.into(), Some(&before)).await.unwrap();
    assert_eq!(status, 412, "{body}");
    let restart = "a=ice-ufrag:Zz99\r\na=ice-pwd:abcdefabcdefabcdefabcdefab\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
    let (status, _, body) = cam.patch(restart.into(), None).await.unwrap();
    assert_eq!((status, body.contains("if_match_required")), (412, true), "{body}");
    let (status, _, _) = cam.patch(candidate.into(), Some(&after)).await.unwrap();
    assert_eq!(status, 204);
    let (status, _, body) = cam.patch("a=candidate:garbage\r\n".into(), None).await.unwrap();
    assert_eq!((status, body.contains("invalid_candidate")), (400, true), "{body}");
    let (status, _, body) = cam.patch("hello".into(), None).await.unwrap();
    assert_eq!((status, body.contains("invalid_sdpfrag")), (400, true), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_whip_and_whep_requests_get_clear_errors() {
    let server = start_server().await;
    let base = server.url();
    let listener = mint(&base, "hall", json!({"identity": "ear", "publish": false})).await;
    let err = RoomClient::join(&http(), &base, "hall", &listener, whip()).await.err().unwrap();
    assert!(matches!(err, voxrelay::client::ClientError::Refused(403, ref b) if b.contains("grant_missing")), "{err}");
    let talker = mint(&base, "hall", json!({"identity": "mouth", "subscribe": false})).await;
    let err = RoomClient::join(&http(), &base, "hall", &talker, whep()).await.err().unwrap();
    assert!(matches!(err, voxrelay::client::ClientError::Refused(403, ref b) if b.contains("grant_missing")), "{err}");
    // A WHIP offer that only receives, and a WHEP offer that only sends.
    let full = mint(&base, "hall", json!({"identity": "both"})).await;
    let err =
        RoomClient::join(&http(), &base, "hall", &full, RoomClientOptions { publish: false, slots: 1, ..whip() }).await.err().unwrap();
    assert!(matches!(err, voxrelay::client::ClientError::Refused(400, ref b) if b.contains("invalid_offer")), "{err}");
    let err = RoomClient::join(&http(), &base, "hall", &full, RoomClientOptions { publish: true, slots: 0, ..whep() }).await.err().unwrap();
    assert!(matches!(err, voxrelay::client::ClientError::Refused(400, ref b) if b.contains("invalid_offer")), "{err}");

    let client = http();
    let resp = client.post(format!("{base}/v1/whip/hall")).header("content-type", "application/sdp").body("v=0").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client
        .post(format!("{base}/v1/whip/hall"))
        .bearer_auth(&full)
        .header("content-type", "text/plain")
        .body("v=0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let resp = client
        .patch(format!("{base}/v1/whip/hall/nobody"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body("a=end-of-candidates\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client
        .patch(format!("{base}/v1/whip/hall/nobody"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/sdp")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    // OPTIONS: the CORS preflight a browser-based WHIP client sends.
    let resp = client
        .request(reqwest::Method::OPTIONS, format!("{base}/v1/whip/hall"))
        .header("origin", "https://studio.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let resp = client.post(format!("{base}/v1/whip/hall")).header("origin", "https://studio.example").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let exposed = resp.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    for h in ["location", "etag", "link", "accept-patch"] {
        assert!(exposed.contains(h), "{h} is not exposed to browsers: {exposed}");
    }
}
