//! Abuse limits at the edge (README "Limits"): request rates per IP and per credential on the
//! costly routes (429, Retry-After, the JSON error body, counted), open WebSockets per IP, and a
//! header read timeout that drops slow or silent connections while others are served.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn metric(base: &str, line_start: &str) -> u64 {
    let text = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with(line_start)).unwrap_or_else(|| panic!("no {line_start} in /metrics"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minting_over_the_per_ip_rate_is_refused_with_retry_after() {
    let server = start_with(|c| {
        c.rate_limit_per_ip = 5;
        c.rate_limit_loopback = true;
    })
    .await;
    let base = server.url();
    let mint = || http().post(format!("{base}/v1/realtime/client_secrets")).bearer_auth(API_KEY).json(&json!({})).send();
    for n in 0..5 {
        assert_eq!(mint().await.unwrap().status(), 200, "mint {n}");
    }
    let refused = mint().await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "Retry-After {retry}: one token back at 5 a minute");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // Offers count against the same rate; reading does not.
    let offer =
        http().post(format!("{base}/v1/realtime")).bearer_auth(API_KEY).header("content-type", "application/sdp").body(MINIMAL_OFFER);
    assert_eq!(offer.send().await.unwrap().status(), 429);
    assert_eq!(http().get(format!("{base}/v1/rooms")).bearer_auth(API_KEY).send().await.unwrap().status(), 200);
    assert_eq!(metric(&base, "voxrelay_limited_total{limit=\"per_ip\"}").await, 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_websockets_per_ip_are_capped_and_given_back() {
    let server = start_with(|c| {
        c.max_websockets_per_ip = 2;
        c.rate_limit_loopback = true;
    })
    .await;
    let base = server.url();
    let open = || async {
        let mut req = format!("{}/v1/realtime?model=gpt-realtime", base.replacen("http", "ws", 1)).into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {API_KEY}").parse().unwrap());
        tokio_tungstenite::connect_async(req).await
    };
    let first = open().await.expect("first socket").0;
    let _second = open().await.expect("second socket").0;
    match open().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 429);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        }
        other => panic!("a third socket from one address is refused, got {:?}", other.map(|(_, r)| r.status())),
    }
    assert_eq!(server.engine.live_calls(), 2, "the refused socket started no call");
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        if open().await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the closed socket's place comes back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The refusal above, and any retry above that came before the server saw the close.
    assert!(metric(&base, "voxrelay_limited_total{limit=\"websockets_per_ip\"}").await >= 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_are_dropped_while_others_are_served() {
    let server = start_with(|c| c.header_read_timeout = 1).await;
    let base = server.url();
    let addr = server.addr;
    // A slowloris: half a request line, then nothing.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // A connection that never says a word.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Meanwhile others are served.
    assert_eq!(http().get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    for (name, conn) in [("slow", &mut slow), ("silent", &mut silent)] {
        let mut buf = Vec::new();
        // The server closes it (an error response, or none): the read ends, well before WAIT.
        let read = tokio::time::timeout(WAIT, conn.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "{name} connection still open after {WAIT:?}");
        let text = String::from_utf8_lossy(&buf);
        assert!(!text.contains("200 OK"), "{name}: {text}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_client_events_gets_one_error_and_the_session_goes_on() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = start_server().await;
    let mut req = format!("{}/v1/realtime?model=gpt-realtime", server.url().replacen("http", "ws", 1)).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {API_KEY}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("upgrade");
    let update = json!({"type": "session.update", "session": {"instructions": "again"}}).to_string();
    const SENT: usize = 400;
    for _ in 0..SENT {
        ws.send(Message::text(update.clone())).await.unwrap();
    }
    // Read until the answers stop coming: every event taken is answered, the rest dropped.
    let (mut updated, mut limited) = (0, 0);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        match v["type"].as_str().unwrap() {
            "session.updated" => updated += 1,
            "error" if v["error"]["code"] == "rate_limited" => limited += 1,
            _ => {}
        }
    }
    assert!(limited >= 1, "the flood is told: {updated} answered, {limited} errors");
    assert!(updated < SENT && updated >= 200, "{updated} of {SENT} taken (a burst of 200 and 50 a second)");
    assert!(limited <= 3, "one error per burst of refusals, not one per event: {limited}");
    // The connection stays and takes events at the normal rate again.
    ws.send(Message::text(update)).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline.into(), ws.next()).await.expect("answered").unwrap().unwrap();
        if msg.to_text().unwrap_or_default().contains("session.updated") {
            break;
        }
    }
    assert!(metric(&server.url(), "voxrelay_client_events_limited_total").await >= 1);
    server.shutdown().await;
}
