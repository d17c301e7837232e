//! Several nodes on one Redis (issue 22, part 3): a real `redis-server` on a free loopback port
//! and real servers on 127.0.0.1. Participants joining one room through three different nodes
//! end up in one room and hear each other; a secret minted on one node works on another; a killed owner's room is free again after its claim's
//! lifetime; with Redis gone a node keeps its rooms, refuses what needs Redis with 503, and
//! recovers when Redis is back.

use crate::common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::KillOnDrop;
use common::rooms::{events_until, heard_to_the_end, join, mint, of_type, voice};
use common::*;
use serde_json::{Value, json};
use voxrelay::transport::webrtc::room_client::{RoomClient, RoomClientOptions};

/// A throwaway `redis-server` (no persistence) on `port`.
fn redis(port: u16) -> KillOnDrop {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (.ci/run installs it; Debian package redis-server)");
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    KillOnDrop(child)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn node(port: u16) -> voxrelay::RunningServer {
    start_with(|c| {
        c.redis_url = Some(format!("redis://127.0.0.1:{port}/"));
        c.room_claim_ttl = 2;
    })
    .await
}

/// Polls `base`'s `/metrics` until `ok` holds, bounded by `WAIT`.
async fn metrics_until(base: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        if ok(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "the cluster's view never got there: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn participants(base: &str, room: &str) -> (u16, Vec<String>) {
    let resp = http().get(format!("{base}/v1/rooms/{room}")).bearer_auth(API_KEY).send().await.unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    let names =
        v["participants"].as_array().map_or(Vec::new(), |p| p.iter().map(|p| p["identity"].as_str().unwrap().to_string()).collect());
    (status, names)
}

/// Joins through `base`, retrying while the cluster answers 503 (a claim changing hands),
/// bounded by `WAIT`.
async fn join_when_ready(base: &str, room: &str, identity: &str) -> RoomClient {
    let deadline = Instant::now() + WAIT;
    loop {
        let token = mint(base, room, json!({"identity": identity})).await;
        match RoomClient::join(&http(), base, room, &token, RoomClientOptions { slots: 1, ..Default::default() }).await {
            Ok(c) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "{identity} could not join {room} through {base}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_lives_on_one_node_and_moves_when_its_node_dies() {
    let port = free_port();
    let _redis = redis(port);
    let (a, b, c) = (node(port).await, node(port).await, node(port).await);
    let one_slot = RoomClientOptions { slots: 1, ..Default::default() };

    // Alice reaches node A first: the room is A's. Bob comes in through B and is forwarded.
    let mut alice = join(&a.url(), "huddle", "alice", one_slot.clone(), json!({})).await;
    let bob = join(&b.url(), "huddle", "bob", one_slot.clone(), json!({})).await;
    let mut seen = Vec::new();
    events_until(&mut alice, &mut seen, |e| of_type(e, "participant.joined").iter().any(|p| p["participant"]["identity"] == "bob")).await;
    assert_eq!(a.engine.rooms.count(), 1);
    assert_eq!(b.engine.rooms.count(), 0, "the room was not made twice");
    for base in [a.url(), b.url()] {
        let (status, names) = participants(&base, "huddle").await;
        assert_eq!((status, names), (200, vec!["alice".to_string(), "bob".to_string()]), "the same room seen through {base}");
    }
    // The cluster's view from either node: one room, on A; two nodes.
    for base in [a.url(), b.url()] {
        let list: Value = http().get(format!("{base}/v1/rooms")).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
        let rooms = list["rooms"].as_array().unwrap();
        assert_eq!(rooms.len(), 1, "{list}");
        assert_eq!((rooms[0]["name"].as_str(), rooms[0]["node"].as_str()), (Some("huddle"), Some(a.url().as_str())), "{list}");
        assert_eq!(rooms[0]["participants"].as_array().unwrap().len(), 2);
    }
    metrics_until(&b.url(), |m| m.contains("voxrelay_cluster_nodes 3\n") && m.contains("voxrelay_cluster_redis_up 1\n")).await;
    bob.say(&voice(0.8));
    heard_to_the_end(&bob, &alice).await;
    // A client secret minted on A is good on B; its call goes to a node without the room's
    // load (A holds two participants, B and C nothing).
    let secret = client_secret(&a.url(), json!({"instructions": "from A"})).await;
    let mut call = Call::connect(&b.url(), "/v1/realtime", &secret).await;
    let created = call.expect("session.created").await;
    assert_eq!(created["session"]["instructions"], "from A");
    assert_eq!((a.engine.live_calls(), b.engine.live_calls() + c.engine.live_calls()), (0, 1));
    call.close().await;
    alice.say(&voice(1.0));
    heard_to_the_end(&alice, &bob).await;

    // Creating it through another node finds it where it lives.
    let resp = http().post(format!("{}/v1/rooms", b.url())).bearer_auth(API_KEY).json(&json!({"name": "huddle"})).send().await.unwrap();
    assert_eq!(resp.status(), 409);
    assert_eq!(b.engine.rooms.count(), 0);
    // A third node forwards to the same owner.
    let dan = join(&c.url(), "huddle", "dan", one_slot.clone(), json!({})).await;
    let (status, names) = participants(&c.url(), "huddle").await;
    assert_eq!((status, names), (200, vec!["alice".to_string(), "bob".to_string(), "dan".to_string()]));
    assert_eq!(c.engine.rooms.count(), 0);

    // Node A goes away: its claim lapses within its lifetime and the room is made again where
    // the next participant arrives; the third node then forwards there.
    drop((alice, bob, dan));
    a.shutdown().await;
    let carol = join_when_ready(&b.url(), "huddle", "carol").await;
    assert_eq!(b.engine.rooms.count(), 1, "the room now lives on B");
    let erin = join_when_ready(&c.url(), "huddle", "erin").await;
    let (status, names) = participants(&c.url(), "huddle").await;
    assert_eq!((status, names), (200, vec!["carol".to_string(), "erin".to_string()]));
    assert_eq!(c.engine.rooms.count(), 0);
    drop((carol, erin));
    b.shutdown().await;
    c.shutdown().await;
}

/// The node (index into `nodes`) whose tag a call's id carries.
fn holder(nodes: &[voxrelay::RunningServer], call_id: &str) -> usize {
    let tag = call_id.split('_').nth(1).unwrap();
    nodes.iter().position(|n| n.engine.cluster.get().unwrap().tag() == tag).unwrap_or_else(|| panic!("no node made {call_id}"))
}

fn live(nodes: &[voxrelay::RunningServer]) -> Vec<usize> {
    nodes.iter().map(|n| n.engine.live_calls()).collect()
}

async fn wait_live(nodes: &[voxrelay::RunningServer], want: Vec<usize>) {
    let deadline = Instant::now() + WAIT;
    while live(nodes) != want {
        assert!(Instant::now() < deadline, "live calls per node {:?}, not {want:?}", live(nodes));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn socket(base: &str, path: &str, token: &str) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = format!("{}{path}", base.replacen("http", "ws", 1));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads events until one of type `kind`, bounded by `WAIT`.
async fn socket_event(ws: &mut Socket, kind: &str) -> Value {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.unwrap_or_else(|_| panic!("no {kind}")).unwrap().unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == kind {
                return v;
            }
        }
    }
}

async fn send_event(ws: &mut Socket, event: Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(event.to_string().into())).await.unwrap();
}

fn refusal(e: tokio_tungstenite::tungstenite::Error) -> (u16, Value) {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            let body = resp.body().clone().unwrap_or_default();
            (resp.status().as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))
        }
        other => panic!("not an HTTP refusal: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_go_to_the_least_loaded_node_and_are_reached_through_any() {
    let port = free_port();
    let _redis = redis(port);
    let nodes = [node(port).await, node(port).await, node(port).await];
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    metrics_until(&urls[0], |m| m.contains("voxrelay_cluster_nodes 3\n")).await;

    // Three calls by the API key, all offered to the first node: a tie stays there, then each
    // goes to an emptier node, so one lands on each. Their ids name their nodes.
    let mut calls = Vec::new();
    for _ in 0..3 {
        let mut call = Call::connect(&urls[0], "/v1/realtime/calls", API_KEY).await;
        call.expect("session.created").await;
        calls.push(call);
    }
    assert_eq!(live(&nodes), vec![1, 1, 1]);
    let ids: Vec<String> = calls.iter().map(|c| c.location.rsplit('/').next().unwrap().to_string()).collect();
    let mut holders: Vec<usize> = ids.iter().map(|id| holder(&nodes, id)).collect();
    assert_eq!(holders[0], 0, "the first call stays where it was offered");
    holders.sort();
    assert_eq!(holders, vec![0, 1, 2]);
    let on = |node: usize| (0..3).find(|&i| holder(&nodes, &ids[i]) == node).unwrap();
    let (on_b, on_c) = (on(1), on(2));

    // The sideband socket of B's call, opened through C: the app's update reaches the call and
    // the call's answer comes back through both nodes.
    let mut sideband = socket(&urls[2], &format!("/v1/realtime?call_id={}", ids[on_b]), API_KEY).await.expect("sideband through C");
    send_event(&mut sideband, json!({"type": "session.update", "session": {"type": "realtime", "instructions": "via C"}})).await;
    assert_eq!(calls[on_b].expect("session.updated").await["session"]["instructions"], "via C");
    assert_eq!(socket_event(&mut sideband, "session.updated").await["session"]["instructions"], "via C");
    // C's call watched through A.
    let mut events = socket(&urls[0], &format!("/v1/calls/{}/events", ids[on_c]), API_KEY).await.expect("events through A");
    calls[on_c].send(json!({"type": "session.update", "session": {"instructions": "watched"}})).await;
    assert_eq!(socket_event(&mut events, "session.updated").await["session"]["instructions"], "watched");
    // A refusal comes back as the holding node gave it.
    let e = socket(&urls[0], &format!("/v1/calls/{}/events", ids[on_c]), "sk_wrong").await.unwrap_err();
    assert_eq!(refusal(e).0, 401);

    // C's call ended through B; its record read through A.
    let resp = http().delete(format!("{}/v1/realtime/calls/{}", urls[1], ids[on_c])).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    wait_live(&nodes, vec![1, 1, 0]).await;
    let record: Value =
        http().get(format!("{}/v1/calls/{}", urls[0], ids[on_c])).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(record["id"], ids[on_c].as_str(), "{record}");
    // An id made by a node that is not (or no longer) in the cluster.
    let resp = http()
        .delete(format!("{}/v1/realtime/calls/rtc_ZZZZzzzz_abcdefghijklmnopqrstuvwx", urls[1]))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "call_not_found");

    // Once the view shows C empty, a Realtime session socket offered to A goes there.
    metrics_until(&urls[0], |m| {
        m.lines().filter(|l| l.starts_with("voxrelay_cluster_node_load") && l.ends_with(" 1")).count() == 2
            && m.lines().any(|l| l.starts_with("voxrelay_cluster_node_load") && l.ends_with(" 0"))
    })
    .await;
    let mut session = socket(&urls[0], "/v1/realtime?model=gpt-realtime", API_KEY).await.expect("session through A");
    socket_event(&mut session, "session.created").await;
    assert_eq!(live(&nodes), vec![1, 1, 1], "the session is C's");
    send_event(&mut session, json!({"type": "session.update", "session": {"instructions": "relayed"}})).await;
    assert_eq!(socket_event(&mut session, "session.updated").await["session"]["instructions"], "relayed");
    drop(session);
    wait_live(&nodes, vec![1, 1, 0]).await;

    // A client secret's calls meet on the node chosen when it was minted: one at a time, whichever
    // node the client reaches.
    let before = live(&nodes);
    let secret = client_secret(&urls[0], json!({})).await;
    let mut first = Call::connect(&urls[1], "/v1/realtime", &secret).await;
    first.expect("session.created").await;
    let pinned = holder(&nodes, first.location.rsplit('/').next().unwrap());
    assert_eq!(nodes[pinned].engine.live_calls(), before[pinned] + 1);
    for url in &urls {
        let second =
            voxrelay::transport::webrtc::client::Client::connect(&http(), &format!("{url}/v1/realtime"), &secret, Default::default()).await;
        match second {
            Err(voxrelay::transport::webrtc::client::ClientError::Refused(429, body)) => {
                let v: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["error"]["code"], "client_secret_in_use", "through {url}: {body}");
            }
            Err(e) => panic!("through {url}: {e}"),
            Ok(_) => panic!("through {url}: a second call on one secret"),
        }
    }
    let elsewhere = (pinned + 1) % 3;
    let (status, body) = refusal(socket(&urls[elsewhere], "/v1/realtime?model=gpt-realtime", &secret).await.unwrap_err());
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("client_secret_in_use")), "{body}");
    first.close().await;
    for call in calls {
        call.close().await;
    }
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_a_node_keeps_its_rooms_refuses_new_ones_and_recovers() {
    let port = free_port();
    let redis_server = redis(port);
    let b = node(port).await;
    let dave = join_when_ready(&b.url(), "kept", "dave").await;

    drop(redis_server);
    let resp = {
        let token = mint(&b.url(), "fresh", json!({"identity": "erin"})).await;
        let offer = MINIMAL_OFFER;
        http()
            .post(format!("{}/v1/rooms/fresh/join", b.url()))
            .bearer_auth(token)
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await
            .unwrap()
    };
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "cluster_unavailable", "{v}");
    // Its own room is served as before.
    let (status, names) = participants(&b.url(), "kept").await;
    assert_eq!((status, names), (200, vec!["dave".to_string()]));

    let _redis_again = redis(port);
    let erin = join_when_ready(&b.url(), "fresh", "erin").await;
    assert_eq!(b.engine.rooms.count(), 2);
    drop((dave, erin));
    b.shutdown().await;
}

/// An offer a room answers (the peer never connects: only the answer is timed).
const ROOM_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=setup:actpass\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

/// Join latency, direct vs forwarded, and Redis commands per join (BENCHMARKS "Several nodes"):
/// `cargo test --release --test integration cluster::join_latency -- --ignored --nocapture`. Prints numbers;
/// asserts only that every join was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; run by hand"]
async fn join_latency_direct_and_forwarded() {
    const N: usize = 50;
    let port = free_port();
    let _redis = redis(port);
    let (a, b) = (node(port).await, node(port).await);
    let redis_client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut conn = redis_client.get_multiplexed_async_connection().await.unwrap();
    let offer_once = |base: String, room: String, token: String| async move {
        let started = Instant::now();
        let resp = http()
            .post(format!("{base}/v1/rooms/{room}/join"))
            .bearer_auth(token)
            .header("content-type", "application/sdp")
            .body(ROOM_OFFER)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        started.elapsed()
    };
    // `cmdstat_get:calls=12,...` → ("get", 12)
    let commands = |info: &str| -> std::collections::BTreeMap<String, u64> {
        info.lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                Some((name.to_string(), rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()?))
            })
            .collect()
    };
    let mut report = Vec::new();
    for (label, via) in [("direct (owner)", a.url()), ("forwarded (other node)", b.url())] {
        let mut times = Vec::new();
        let before: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
        for i in 0..N {
            let room = format!("bench-{i}");
            if label.starts_with("direct") {
                // The first join claims the room for A; the measured one is A's second.
                let t = mint(&a.url(), &room, json!({"identity": "owner"})).await;
                offer_once(a.url(), room.clone(), t).await;
            }
            let token = mint(&via, &room, json!({"identity": format!("p{i}-{}", label.len())})).await;
            times.push(offer_once(via.clone(), room, token).await);
        }
        let after: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (before, after) = (commands(&before), commands(&after));
        let per_join: Vec<String> = after
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(name, n)| format!("{name} {:.2}", (n - before.get(name).copied().unwrap_or(0)) as f64 / N as f64))
            .collect();
        report.push(format!(
            "{label}: p50 {:.2} ms, p90 {:.2} ms; Redis commands per iteration (upkeep included): {}",
            ms(times[N / 2]),
            ms(times[N * 9 / 10]),
            per_join.join(", ")
        ));
    }
    // 1:1 calls: offered to B directly, then to A, which (holding the rooms' participants) places
    // them on B. The offers never connect; they stay live (and counted) until the test ends.
    metrics_until(&a.url(), |m| m.contains("voxrelay_cluster_nodes 2\n")).await;
    let b_tag = b.engine.cluster.get().unwrap().tag().to_string();
    const CALLS: usize = 40;
    for (label, via) in [("call offered to the node it lands on", b.url()), ("call placed on another node (forwarded)", a.url())] {
        let before: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
        let mut times = Vec::new();
        for _ in 0..CALLS {
            let started = Instant::now();
            let resp = http()
                .post(format!("{via}/v1/realtime/calls"))
                .bearer_auth(API_KEY)
                .header("content-type", "application/sdp")
                .body(ROOM_OFFER)
                .send()
                .await
                .unwrap();
            times.push(started.elapsed());
            assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
            let location = resp.headers()["location"].to_str().unwrap().to_string();
            assert!(location.contains(&format!("_{b_tag}_")), "placed on B: {location}");
        }
        let after: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
        let (before, after) = (commands(&before), commands(&after));
        let per_call: Vec<String> = after
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(name, n)| format!("{name} {:.2}", (n - before.get(name).copied().unwrap_or(0)) as f64 / CALLS as f64))
            .collect();
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        report.push(format!(
            "{label}: p50 {:.2} ms, p90 {:.2} ms; Redis commands per call (upkeep included): {}",
            ms(times[CALLS / 2]),
            ms(times[CALLS * 9 / 10]),
            per_call.join(", ")
        ));
    }
    for line in report {
        println!("{line}");
    }
    a.shutdown().await;
    b.shutdown().await;
}
