//! Abuse limits at the edge (README "Limits"): request rates per IP and per credential on the
//! costly routes (429, Retry-After, the JSON error body, counted), open WebSockets per IP, and a
//! header read timeout that drops slow or silent connections while others are served.

use crate::common;

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
    assert!((200..SENT).contains(&updated), "{updated} of {SENT} taken (a burst of 200 and 50 a second)");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_capped_with_a_json_503_and_given_back() {
    let server = start_with(|c| {
        c.max_http_connections = 3;
        c.header_read_timeout = 60;
    })
    .await;
    let base = server.url();
    let addr = server.addr;
    // Three idle connections hold every place (a reqwest client's pool would share them).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let refused = || async {
        let resp = reqwest::Client::new().get(format!("{base}/healthz")).send().await.unwrap();
        let status = resp.status();
        (status, resp.headers().get("retry-after").cloned(), resp.json::<Value>().await.unwrap_or_default())
    };
    // The server may not have accepted all three yet: the fourth is refused once it has.
    let deadline = Instant::now() + WAIT;
    let (status, retry, body) = loop {
        let r = refused().await;
        if r.0 == 503 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 503);
    assert_eq!(retry.unwrap(), "1");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    drop(held.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = reqwest::Client::new().get(format!("{base}/metrics")).send().await.unwrap();
        if resp.status() == 200 {
            let text = resp.text().await.unwrap();
            let refused: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("voxrelay_http_connections_refused_total{cap=\"server\"} "))
                .unwrap()
                .parse()
                .unwrap();
            assert!(refused >= 1);
            break;
        }
        assert!(Instant::now() < deadline, "a closed connection's place comes back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_json_and_metrics_are_not_cross_origin() {
    let server = start_server().await;
    let base = server.url();
    let json_error = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        assert_eq!(resp.headers()["content-type"], "application/json", "status {status}");
        let body: Value = resp.json().await.unwrap();
        (status, body["error"]["code"].as_str().unwrap().to_string())
    };
    // A path id that is not UTF-8 (axum's own rejection).
    let resp = http().delete(format!("{base}/v1/realtime/calls/%FF%FE")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(json_error(resp).await, (400, "invalid_request".into()));
    // A phone stream request without the WebSocket upgrade.
    let resp = http().get(format!("{base}/v1/telephony/twilio")).send().await.unwrap();
    assert_eq!(json_error(resp).await.0, 400);
    // Too many headers: the API's JSON 431.
    let mut req = http().get(format!("{base}/healthz"));
    for i in 0..100 {
        req = req.header(format!("x-h{i}"), "v");
    }
    assert_eq!(json_error(req.send().await.unwrap()).await, (431, "request_headers_too_large".into()));
    // Far beyond the parser's buffer, hyper refuses by itself (431, no body), and the
    // connection closes; the server goes on.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let huge = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n", "a".repeat(1_000_000));
    let _ = raw.write_all(huge.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut answer)).await.expect("closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"), "{}", String::from_utf8_lossy(&answer));
    // Unknown path and wrong method.
    assert_eq!(json_error(http().get(format!("{base}/nope")).send().await.unwrap()).await, (404, "not_found".into()));
    assert_eq!(json_error(http().put(format!("{base}/v1/rooms")).send().await.unwrap()).await, (405, "method_not_allowed".into()));
    // /metrics: no CORS header (it is not for pages), served to loopback.
    let resp = http().get(format!("{base}/metrics")).header("origin", "http://elsewhere.example").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let text = resp.text().await.unwrap();
    let counted = |code: &str| text.lines().any(|l| l.starts_with(&format!("voxrelay_api_errors_total{{code=\"{code}\"}} ")));
    assert!(counted("request_headers_too_large") && counted("invalid_request"), "rewritten errors are counted:\n{text}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_secret_starts_one_call_at_a_time() {
    let server = start_server().await;
    let base = server.url();
    let secret = client_secret(&base, json!({})).await;
    let mut first = Call::connect(&base, "/v1/realtime", &secret).await;
    first.expect("session.created").await;
    // The same secret again: an offer and a Realtime socket are refused, nothing is started.
    let offer = http()
        .post(format!("{base}/v1/realtime"))
        .bearer_auth(&secret)
        .header("content-type", "application/sdp")
        .body(MINIMAL_OFFER.to_string() + "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n");
    let refused = offer.send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "client_secret_in_use");
    let socket = || async {
        let mut req = format!("{}/v1/realtime?model=gpt-realtime", base.replacen("http", "ws", 1)).into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {secret}").parse().unwrap());
        tokio_tungstenite::connect_async(req).await
    };
    match socket().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!("a second session on one secret is refused, got {:?}", other.map(|(_, r)| r.status())),
    }
    assert_eq!(server.engine.live_calls(), 1);
    // Others are not affected: the API key starts a call meanwhile.
    let mut other = Call::connect(&base, "/v1/realtime", API_KEY).await;
    other.expect("session.created").await;
    // Once the call ends, the secret may start another.
    first.client.close().await;
    let deadline = Instant::now() + WAIT;
    let again = loop {
        if let Ok((ws, _)) = socket().await {
            break ws;
        }
        assert!(Instant::now() < deadline, "the secret calls again after its call ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(again);
    other.client.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_its_share_and_few_unconnected_calls() {
    let server = start_with(|c| {
        c.rtp_ingest = true;
        c.max_calls = Some(20);
        c.max_calls_per_ip = Some(3);
        c.max_pending_calls_per_ip = 2;
        // Loopback stands for a remote client here.
        c.rate_limit_loopback = true;
    })
    .await;
    let base = server.url();
    let open = || http().post(format!("{base}/v1/rtp")).bearer_auth(API_KEY).json(&json!({})).send();
    let port = |v: &Value| v["rtp"]["port"].as_u64().unwrap() as u16;
    let a: Value = open().await.unwrap().json().await.unwrap();
    let b: Value = open().await.unwrap().json().await.unwrap();
    // Two sessions nobody sends to yet: a third waits for one of them to connect.
    let refused = open().await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("not connected"), "{body}");
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let connected = |n: usize| {
        let engine = server.engine.clone();
        async move {
            let deadline = Instant::now() + WAIT;
            while engine.live_calls() < n {
                assert!(Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    connected(2).await;
    for v in [&a, &b] {
        // Any datagram from the peer connects a plain-RTP session (its first packet names it).
        udp.send_to(&[0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], ("127.0.0.1", port(v))).await.unwrap();
    }
    let deadline = Instant::now() + WAIT;
    let c = loop {
        let resp = open().await.unwrap();
        if resp.status() == 201 {
            break resp.json::<Value>().await.unwrap();
        }
        assert!(Instant::now() < deadline, "connected sessions leave the unconnected count");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Three calls are this address's share (of 20): a fourth is refused, by the share.
    let refused = open().await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("share"), "{body}");
    assert_eq!(server.engine.live_calls(), 3);
    for v in [&a, &b, &c] {
        let id = v["id"].as_str().unwrap();
        assert_eq!(http().delete(format!("{base}/v1/rtp/{id}")).bearer_auth(API_KEY).send().await.unwrap().status(), 200);
    }
    assert_eq!(open().await.unwrap().status(), 201, "the share comes back when its calls end");
    server.shutdown().await;
}
