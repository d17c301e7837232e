//! An echo call whose client may use only relay candidates (ICE transport policy `relay`),
//! allocated on the embedded TURN with the session's own `ice_servers` credentials: the call
//! connects and the caller hears its echo, all through the relay. The test config allows
//! loopback peers, since on 127.0.0.1 the relay addresses are loopback.

use crate::common;

use common::*;
use serde_json::{Value, json};
use webrtc::peer_connection::RTCIceServer;

fn metric(text: &str, name: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_echo_call_through_the_embedded_turn() {
    let dir = std::env::temp_dir().join(format!("voxrelay-turn-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let conf = dir.join("turn.conf");
    std::fs::write(
        &conf,
        format!("listening-ip=127.0.0.1\nlistening-port={port}\nuse-auth-secret\nstatic-auth-secret=echo-secret\nallow-loopback-peers\nno-tcp\nno-tls\n"),
    )
    .unwrap();
    let server = start_with(|c| c.turn_config = Some(conf.clone())).await;
    let base = server.url();
    let resp = http().post(format!("{base}/v1/realtime/sessions")).bearer_auth(API_KEY).json(&json!({})).send().await.unwrap();
    let session: Value = resp.json().await.unwrap();
    let secret = session["client_secret"]["value"].as_str().unwrap();
    let ice = &session["ice_servers"][0];
    let opts = ClientOptions {
        ice_servers: vec![RTCIceServer {
            urls: ice["urls"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()).collect(),
            username: ice["username"].as_str().unwrap().into(),
            credential: ice["credential"].as_str().unwrap().into(),
        }],
        relay_only: true,
        ..Default::default()
    };
    let mut c = Call::connect_with(&base, "/v1/realtime", secret, opts).await;
    c.expect("session.created").await;
    c.say(&silence_ms(500));
    c.say(&speech());
    c.say(&silence_ms(4000));
    c.expect("input_audio_buffer.speech_started").await;
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    let voiced = c.levels().iter().filter(|(_, r)| *r > VOICED_RMS).count();
    assert!(voiced > 50, "the echo arrives through the relay ({voiced} voiced frames)");
    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let (to_peer, to_client) = (metric(&metrics, "voxrelay_turn_relayed_to_peer_total"), metric(&metrics, "voxrelay_turn_relayed_to_client_total"));
    assert!(to_peer > 100 && to_client > 100, "media went through the TURN relay: {to_peer} out, {to_client} back");
    every_family_has_help_and_type(&metrics);
    c.close().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// What `promtool check metrics` asks of every metric family: a `# HELP` and a `# TYPE` line
/// (with every kind of metric the server exports present here: calls, media, workers, rooms,
/// TURN).
fn every_family_has_help_and_type(text: &str) {
    let declared = |kind: &str| -> std::collections::HashSet<String> {
        text.lines().filter_map(|l| l.strip_prefix(kind)).filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
    };
    let (help, types) = (declared("# HELP "), declared("# TYPE "));
    let mut missing = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s).filter(|f| types.contains(*f))).unwrap_or(name);
        if !help.contains(family) || !types.contains(family) {
            missing.push(family.to_string());
        }
    }
    missing.dedup();
    assert!(missing.is_empty(), "metric families without # HELP or # TYPE: {missing:?}");
    assert!(types.len() > 40, "the families checked: {}", types.len());
}
