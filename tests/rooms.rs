//! Rooms (PROTOCOL.md §4) with real webrtc-rs participants on 127.0.0.1: tokens, joining,
//! forwarding without decoding, slots, room events, leaving.

use crate::common;

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use common::rooms::{events_until, heard_to_the_end, join, mint, of_type, voice};
use common::{API_KEY, http, start_server, start_with};
use serde_json::{Value, json};
use voxrelay::transport::webrtc::room_client::{RoomClient, RoomClientOptions};

/// On the server's shared loops (the default; issue 20): every participant's connection is on one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn participants_hear_each_other_unchanged_and_never_themselves() {
    hear_each_other(start_server().await, 4).await;
}

/// With `--rtc-loop false`: a webrtc-rs driver per participant, none on a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_driver_per_participant_too() {
    hear_each_other(start_with(|c| c.rtc_loop = false).await, 0).await;
}

async fn hear_each_other(server: voxrelay::RunningServer, on_loops: usize) {
    let base = server.url();
    let two_slots = RoomClientOptions { slots: 2, ..Default::default() };
    let mut alice = join(&base, "standup", "alice", two_slots.clone(), json!({})).await;
    let mut bob = join(&base, "standup", "bob", two_slots.clone(), json!({})).await;
    // Carol's client sends no RFC 6464 levels: the server measures hers.
    let mut carol = join(&base, "standup", "carol", RoomClientOptions { audio_levels: false, ..two_slots }, json!({})).await;
    let mut dave =
        join(&base, "standup", "dave", RoomClientOptions { slots: 3, publish: false, ..Default::default() }, json!({"publish": false}))
            .await;

    let mut seen: HashMap<&str, Vec<Value>> = HashMap::new();
    for (name, c) in [("alice", &mut alice), ("bob", &mut bob), ("carol", &mut carol), ("dave", &mut dave)] {
        let events = seen.entry(name).or_default();
        events_until(c, events, |e| !of_type(e, "room.joined").is_empty()).await;
        let joined = of_type(events, "room.joined")[0];
        assert_eq!(joined["identity"], name);
        assert_eq!(joined["room"], "standup");
    }
    let dave_joined = of_type(&seen["dave"], "room.joined")[0].clone();
    assert_eq!(dave_joined["slots"].as_array().unwrap().len(), 3);
    let earlier: Vec<&str> = dave_joined["participants"].as_array().unwrap().iter().map(|p| p["identity"].as_str().unwrap()).collect();
    assert_eq!(earlier, ["alice", "bob", "carol"]);

    alice.say(&voice(1.0));
    bob.say(&voice(0.6));
    carol.say(&voice(0.35));
    for (talker, listener) in [(&alice, &bob), (&bob, &carol), (&carol, &alice), (&alice, &dave), (&bob, &dave), (&carol, &dave)] {
        heard_to_the_end(talker, listener).await;
    }

    let voiced = |c: &RoomClient| -> HashSet<Bytes> { c.sent().into_iter().filter(|p| p.voiced).map(|p| p.payload).collect() };
    let said: HashMap<&str, HashSet<Bytes>> = [("alice", voiced(&alice)), ("bob", voiced(&bob)), ("carol", voiced(&carol))].into();
    for (a, b) in [("alice", "bob"), ("alice", "carol"), ("bob", "carol")] {
        assert!(said[a].is_disjoint(&said[b]), "{a} and {b} sent identical payloads: the test could not tell them apart");
        assert!(said[a].len() > 100, "{a} sent {} voiced frames", said[a].len());
    }
    for (name, client) in [("alice", &alice), ("bob", &bob), ("carol", &carol), ("dave", &dave)] {
        let got: Vec<_> = client.received();
        let payloads: HashSet<Bytes> = got.iter().map(|p| p.payload.clone()).collect();
        if let Some(own) = said.get(name) {
            assert!(own.is_disjoint(&payloads), "{name} heard itself");
        }
        for (other, theirs) in &said {
            if *other == name {
                continue;
            }
            // Payload bytes arrive exactly as sent (no decode, no re-encode); a speaker's first
            // ≈ 140 ms is heard by nobody, since it takes that long to count as speaking.
            let heard = theirs.intersection(&payloads).count();
            let share = heard as f64 / theirs.len() as f64;
            assert!(share > 0.8, "{name} heard {heard} of {other}'s {} voiced frames", theirs.len());
        }
        // Every slot is one continuous stream: consecutive sequence numbers, timestamps that
        // never run backwards, one SSRC per slot.
        let mut by_ssrc: HashMap<u32, Vec<_>> = HashMap::new();
        for p in &got {
            by_ssrc.entry(p.ssrc).or_default().push(p.clone());
        }
        let slots = if name == "dave" { 3 } else { 2 };
        assert!(by_ssrc.len() <= slots, "{name} got {} streams on {slots} slots", by_ssrc.len());
        for stream in by_ssrc.values() {
            for w in stream.windows(2) {
                assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "{name}: a gap in a slot's sequence numbers");
                let dt = w[1].timestamp.wrapping_sub(w[0].timestamp);
                assert!((960..48_000 * 60).contains(&dt), "{name}: timestamp step {dt}");
            }
        }
    }
    // Events: who speaks, and who is on each slot.
    for (name, client) in [("alice", &mut alice), ("dave", &mut dave)] {
        let events = seen.get_mut(name).unwrap();
        events_until(client, events, |e| {
            let assigned: HashSet<&str> = of_type(e, "slot.assigned").iter().filter_map(|ev| ev["identity"].as_str()).collect();
            let spoke: HashSet<&str> = of_type(e, "active_speakers")
                .iter()
                .flat_map(|ev| ev["speakers"].as_array().unwrap())
                .filter_map(|s| s["identity"].as_str())
                .collect();
            let want = if name == "dave" { 3 } else { 2 };
            assigned.len() == want && spoke.len() == 3
        })
        .await;
        let assigned: HashSet<&str> = of_type(events, "slot.assigned").iter().filter_map(|ev| ev["identity"].as_str()).collect();
        assert!(!assigned.contains(name), "{name} was put on its own slot");
    }
    let info: Value = http().get(format!("{base}/v1/rooms/standup")).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
    let people: Vec<&str> = info["participants"].as_array().unwrap().iter().map(|p| p["identity"].as_str().unwrap()).collect();
    assert_eq!(people, ["alice", "bob", "carol", "dave"]);
    assert!(info["counters"]["packets_forwarded"].as_u64().unwrap() > 600, "{info}");
    assert_eq!(server.engine.loop_connections(), on_loops, "participants' connections on the loops");
    for c in [&alice, &bob, &carol, &dave] {
        c.close().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_and_dropping_free_the_participant_and_tell_the_others() {
    let server = start_server().await;
    let base = server.url();
    let mut alice = join(&base, "r1", "alice", RoomClientOptions::default(), json!({})).await;
    let bob = join(&base, "r1", "bob", RoomClientOptions::default(), json!({})).await;
    let carol = join(&base, "r1", "carol", RoomClientOptions::default(), json!({})).await;
    let mut seen = Vec::new();
    events_until(&mut alice, &mut seen, |e| of_type(e, "participant.joined").len() == 2).await;

    // Bob leaves by DELETE on his Location, with his own token.
    assert_eq!(bob.location, "/v1/rooms/r1/participants/bob");
    let token = mint(&base, "r1", json!({"identity": "bob"})).await;
    let resp = http().delete(format!("{base}{}", bob.location)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    events_until(&mut alice, &mut seen, |e| of_type(e, "participant.left").iter().any(|l| l["identity"] == "bob" && l["reason"] == "left"))
        .await;
    // Carol hangs up as a browser tab does.
    carol.close().await;
    events_until(&mut alice, &mut seen, |e| {
        of_type(e, "participant.left").iter().any(|l| l["identity"] == "carol" && l["reason"] == "left")
    })
    .await;
    let info: Value = http().get(format!("{base}/v1/rooms/r1")).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
    let people: Vec<&str> = info["participants"].as_array().unwrap().iter().map(|p| p["identity"].as_str().unwrap()).collect();
    assert_eq!(people, ["alice"]);
    // Bob's and Carol's connections are gone from the server's loops, Alice's is not.
    loops_hold(&server, 1).await;
    // Leaving twice: 404.
    let resp = http().delete(format!("{base}/v1/rooms/r1/participants/bob")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    alice.close().await;
    loops_hold(&server, 0).await;
    bob.close().await;
    server.shutdown().await;
}

/// Waits (2 s at most) for the server's loops to hold `n` connections: closing is asynchronous.
async fn loops_hold(server: &voxrelay::RunningServer, n: usize) {
    for _ in 0..100 {
        if server.engine.loop_connections() == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the loops hold {} connections, not {n}", server.engine.loop_connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_on_every_path() {
    let server = start_server().await;
    let base = server.url();
    let offer = common::MINIMAL_OFFER;
    let join = |token: Option<String>, room: &'static str| {
        let base = base.clone();
        async move {
            let mut req = http().post(format!("{base}/v1/rooms/{room}/join")).header("content-type", "application/sdp").body(offer);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            (status, body["error"]["code"].as_str().unwrap_or_default().to_string())
        }
    };
    assert_eq!(join(None, "a").await, (401, "missing_credentials".into()));
    assert_eq!(join(Some("not.a.token".into()), "a").await, (401, "invalid_room_token".into()));
    let token = mint(&base, "a", json!({"identity": "alice"})).await;
    assert_eq!(join(Some(token.clone()), "b").await, (403, "wrong_room".into()));
    // Tampered: one character of the signature changed.
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(join(Some(tampered), "a").await.0, 401);
    // Expired and not yet valid, signed with the server's real key.
    let tokens = voxrelay_signaling::room_token::RoomTokens::new(API_KEY);
    let now = voxrelay_signaling::auth::unix_now();
    let claims = |nbf: u64, exp: u64| voxrelay_signaling::room_token::RoomClaims {
        sub: voxrelay_signaling::ParticipantId::parse("alice").unwrap(),
        name: "alice".into(),
        iat: now,
        nbf,
        exp,
        room: voxrelay_signaling::room_token::RoomGrant {
            name: voxrelay_signaling::RoomName::parse("a").unwrap(),
            publish: true,
            subscribe: true,
            publish_data: true,
            admin: false,
        },
    };
    assert_eq!(join(Some(tokens.mint(&claims(now - 100, now - 10)).unwrap()), "a").await, (401, "room_token_expired".into()));
    assert_eq!(join(Some(tokens.mint(&claims(now + 100, now + 200)).unwrap()), "a").await, (401, "room_token_not_yet_valid".into()));
    // A G.711-only offer cannot join a room (packets are forwarded as they are).
    let pcmu = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n";
    let resp = http()
        .post(format!("{base}/v1/rooms/a/join"))
        .bearer_auth(&token)
        .header("content-type", "application/sdp")
        .body(pcmu)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Minting needs the API key, an identity and a sane ttl.
    let resp = http().post(format!("{base}/v1/rooms/a/tokens")).bearer_auth(&token).json(&json!({"identity": "x"})).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    for (body, code) in [
        (json!({}), "missing_identity"),
        (json!({"identity": "a b"}), "invalid_name"),
        (json!({"identity": "x", "ttl_seconds": 0}), "invalid_ttl"),
    ] {
        let resp = http().post(format!("{base}/v1/rooms/a/tokens")).bearer_auth(API_KEY).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], code);
    }
    // Another participant's removal needs the admin grant.
    let bob = mint(&base, "a", json!({"identity": "bob"})).await;
    let resp = http().delete(format!("{base}/v1/rooms/a/participants/alice")).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    server.shutdown().await;
}
