//! Plain RTP ingest (PROTOCOL.md §7) and event sockets: off by default; when on, the load
//! generator's RTP transport gets every turn echoed over unencrypted UDP with events on the
//! session's WebSocket; an operator can watch any WebRTC call's events over a WebSocket.

use crate::common;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use voxrelay::loadgen::{LoadTransport, LoadgenConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_ingest_is_off_by_default() {
    let server = start_server().await;
    let resp = http().post(format!("{}/v1/rtp", server.url())).bearer_auth(API_KEY).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "rtp_ingest_disabled");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_over_plain_rtp_gets_every_turn_echoed() {
    let server = start_with(|c| c.rtp_ingest = true).await;
    let base = server.url();
    let resp = http().post(format!("{base}/v1/rtp")).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 401, "API key required");

    let mut cfg = LoadgenConfig::new(&base, API_KEY, 2, 6.0);
    cfg.transport = LoadTransport::Rtp;
    let report = run(cfg).await.expect("loadgen runs");
    eprintln!("{}", report.summary());
    assert_eq!(report.sessions_connected, 2, "{}", report.summary());
    assert!(report.turns_sent >= 2);
    assert_eq!(report.turns_answered, report.turns_sent, "{}", report.summary());
    assert!(report.events_by_type.get("session.created").copied().unwrap_or(0) == 2, "{:?}", report.events_by_type);
    assert!(report.events_by_type.get("input_audio_buffer.speech_started").copied().unwrap_or(0) >= 2);
    assert_eq!(server.engine.live_calls(), 0, "DELETE ended both sessions");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_watches_a_webrtc_call() {
    let server = start_server().await;
    let base = server.url();
    let mut call = Call::connect(&base, "/v1/realtime", API_KEY).await;
    call.expect("session.created").await;
    let id = call.location.rsplit('/').next().unwrap().to_string();

    let url = format!("{}/v1/calls/{id}/events", base.replacen("http", "ws", 1));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    let refused = tokio_tungstenite::connect_async(req.clone()).await;
    assert!(refused.is_err(), "no API key, no events");
    req.headers_mut().insert("authorization", format!("Bearer {API_KEY}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("watch socket");

    call.say(&silence_ms(300));
    call.say(&speech());
    call.say(&silence_ms(2000));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("watched events").unwrap().unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "input_audio_buffer.speech_started" {
                break;
            }
        }
    }
    call.expect("input_audio_buffer.speech_started").await;
    call.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_app_controls_a_live_call_over_the_sideband_socket() {
    use futures_util::SinkExt;
    let server = start_server().await;
    let base = server.url();
    let mut call = Call::connect(&base, "/v1/realtime/calls", API_KEY).await;
    call.expect("session.created").await;
    let id = call.location.rsplit('/').next().unwrap().to_string();

    // OpenAI's sideband: GET /v1/realtime?call_id=<id> with the API key.
    let url = format!("{}/v1/realtime?call_id={id}&model=gpt-realtime", base.replacen("http", "ws", 1));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    assert!(tokio_tungstenite::connect_async(req.clone()).await.is_err(), "no API key, no control");
    req.headers_mut().insert("authorization", format!("Bearer {API_KEY}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("sideband socket");

    // The app changes the session from the server side; the call and the app both see it.
    let update = json!({"type": "session.update", "session": {"type": "realtime", "instructions": "from the sideband"}});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(update.to_string().into())).await.unwrap();
    let updated = call.expect("session.updated").await;
    assert_eq!(updated["session"]["instructions"], "from the sideband");
    call.say(&silence_ms(300));
    call.say(&speech());
    call.say(&silence_ms(2000));
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while !seen.iter().any(|t| t == "response.done") {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("sideband events").unwrap().unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            seen.push(v["type"].as_str().unwrap_or_default().to_string());
        }
    }
    assert!(seen.iter().any(|t| t == "session.updated") && seen.iter().any(|t| t == "input_audio_buffer.committed"), "{seen:?}");

    // Without call_id it is a Realtime session socket (tests/realtime_ws.rs): a plain GET is
    // told so in JSON.
    let resp = http().get(format!("{base}/v1/realtime?model=gpt-realtime")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "websocket_upgrade_required");
    call.close().await;
    server.shutdown().await;
}

/// Comedia latches onto the session's own RTP only: a stray datagram that is not RTP, or RTP of
/// another payload type (a previous session's sender still going to a reused port, a scanner),
/// sent first, neither takes the session's audio nor keeps it from its real peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_datagram_sent_first_does_not_take_the_session() {
    use std::time::Duration;
    use tokio::net::UdpSocket;
    let server = start_with(|c| c.rtp_ingest = true).await;
    let base = server.url();
    let v: Value = http().post(format!("{base}/v1/rtp")).bearer_auth(API_KEY).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let port = v["rtp"]["port"].as_u64().unwrap() as u16;
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let rtp = |pt: u8, seq: u16| {
        let mut p = vec![0x80, pt, (seq >> 8) as u8, seq as u8, 0, 0, 0, seq as u8, 0, 0, 0, 7];
        p.extend_from_slice(&voxrelay_media::OPUS_SILENCE);
        p
    };
    let stray = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stray.send_to(b"not rtp at all", to).await.unwrap();
    stray.send_to(&rtp(0, 1), to).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 1500];
    let mut heard = false;
    for seq in 0..100u16 {
        caller.send_to(&rtp(111, seq), to).await.unwrap();
        if let Ok(Ok((_, from))) = tokio::time::timeout(Duration::from_millis(20), caller.recv_from(&mut buf)).await {
            assert_eq!(from, to);
            heard = true;
            break;
        }
    }
    assert!(heard, "the session's audio goes to the caller that sent its RTP");
    let to_stray = tokio::time::timeout(Duration::from_millis(300), stray.recv_from(&mut buf)).await;
    assert!(to_stray.is_err(), "nothing goes to the stray sender");
    server.shutdown().await;
}
