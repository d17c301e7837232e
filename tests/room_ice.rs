//! A room participant whose network vanishes (no hang-up, no packets at all) is taken out of the
//! room by ICE within seconds. The vanishing is real: the participant reaches the server only
//! through a TURN relay run by this test, which is then shut down.

use crate::common;

use std::time::{Duration, Instant};

use common::rooms::{events_until, join, mint, of_type};
use common::{API_KEY, http, start_server, start_with};
use serde_json::{Value, json};
use voxrelay::transport::webrtc::room_client::{RoomClient, RoomClientOptions};

/// On the server's shared loops (the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_network_vanishes_leaves_within_seconds() {
    vanishes(start_server().await).await;
}

/// On a webrtc-rs driver per participant (`--rtc-loop false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_on_a_driver_whose_network_vanishes_leaves_within_seconds() {
    vanishes(start_with(|c| c.rtc_loop = false).await).await;
}

async fn vanishes(server: voxrelay::RunningServer) {
    let base = server.url();
    let (relay, ice_servers) = common::loopback_relay("dan").await;

    let mut alice = join(&base, "v", "alice", RoomClientOptions::default(), json!({})).await;
    let token = mint(&base, "v", json!({"identity": "dan"})).await;
    let opts = RoomClientOptions { ice_servers, relay_only: true, ..Default::default() };
    let dan = RoomClient::join(&http(), &base, "v", &token, opts).await.expect("dan joins through the relay");
    let mut seen = Vec::new();
    events_until(&mut alice, &mut seen, |e| of_type(e, "participant.joined").iter().any(|j| j["participant"]["identity"] == "dan")).await;

    // Dan's only path to the server disappears.
    let vanished = Instant::now();
    relay.shutdown().await;
    events_until(&mut alice, &mut seen, |e| {
        of_type(e, "participant.left").iter().any(|l| l["identity"] == "dan" && l["reason"] == "disconnected")
    })
    .await;
    let held = vanished.elapsed();
    // ICE: 2 s without answers to keepalives, failed 2 s later (webrtc-rs's defaults would be
    // 5 s + 25 s). Generous bound; the point is seconds, not half a minute.
    assert!(held < Duration::from_secs(10), "dan was held {held:?} after his network vanished");
    let info: Value = http().get(format!("{base}/v1/rooms/v")).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
    let people: Vec<&str> = info["participants"].as_array().unwrap().iter().map(|p| p["identity"].as_str().unwrap()).collect();
    assert_eq!(people, ["alice"]);
    dan.close().await;
    alice.close().await;
    server.shutdown().await;
}
