//! The embedded web page (`GET /`) and its helpers (`POST /web/session`, `/web/room-token`),
//! checked over HTTP as the page and a hostile page would use them: security headers, minted
//! secrets and room tokens that work, the helpers' origin, host and call-limit checks, and the
//! page without them. The page driven by a real Chromium is in browser_page.rs.

use crate::common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use voxrelay::transport::webrtc::room_client::{RoomClient, RoomClientOptions};
use voxrelay_signaling::web::PAGE_WEIGHT_BYTES;

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_else(|| panic!("JSON error body expected, got {v}"))
}

/// POSTs `body` to the session helper as the page would (same-origin `Origin`), with extra headers.
async fn helper(base: &str, content_type: &str, body: &str, extra: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    helper_at(base, "/web/session", content_type, body, extra).await
}

/// The same for the room token helper, with a JSON body.
async fn room_helper(base: &str, body: Value, extra: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    helper_at(base, "/web/room-token", "application/json", &body.to_string(), extra).await
}

async fn helper_at(
    base: &str,
    path: &str,
    content_type: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = http().post(format!("{base}{path}")).header("content-type", content_type).body(body.to_string());
    if !extra.iter().any(|(k, _)| *k == "origin") {
        req = req.header("origin", base);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

/// A same-origin-looking POST to the helper addressed to `host`, as a DNS-rebinding page would
/// send it (raw HTTP/1.1: reqwest sets `Host` from the URL).
/// A page helper refuses a DNS-rebinding host name (403 `cross_origin`) and answers no CORS
/// preflight, so browsers never send it cross-origin.
async fn refuses_rebinding_and_preflight(server: &voxrelay::RunningServer, path: &str) {
    let answer = post_with_host(server.addr, path, &format!("rebound.example:{}", server.addr.port())).await;
    assert!(answer.starts_with("HTTP/1.1 403") && answer.contains("cross_origin"), "{path}: {answer}");
    let resp = http()
        .request(reqwest::Method::OPTIONS, format!("{}{path}", server.url()))
        .header("origin", "http://elsewhere.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none(), "no CORS preflight answer for {path}");
}

async fn post_with_host(addr: std::net::SocketAddr, path: &str, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut answer)).await.unwrap().unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_is_served_with_security_headers() {
    let server = start_server().await;
    let base = server.url();
    let mut total = 0;
    for (path, content_type) in [("/", "text/html"), ("/web/app.js", "text/javascript"), ("/web/style.css", "text/css")] {
        let resp = http().get(format!("{base}{path}")).header("origin", "http://elsewhere.example").send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(header("content-type").starts_with(content_type), "{path}: {}", header("content-type"));
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let csp = header("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert!(header("access-control-allow-origin").is_empty(), "{path} must not be readable cross-origin");
        total += resp.bytes().await.unwrap().len();
    }
    assert_eq!(total, PAGE_WEIGHT_BYTES);
    let cfg: Value = http().get(format!("{base}/web/config")).send().await.unwrap().json().await.unwrap();
    assert_eq!(cfg["session_helper"], true);
    // The API keeps its CORS for pages on other origins.
    let resp = http().get(format!("{base}/healthz")).header("origin", "http://elsewhere.example").send().await.unwrap();
    assert_eq!(resp.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some("*"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_helper_mints_a_working_secret() {
    let server = start_server().await;
    let base = server.url();
    let (status, headers, v) =
        helper(&base, "application/json", r#"{"turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}"#, &[]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    let secret = v["client_secret"]["value"].as_str().unwrap().to_string();
    assert!(secret.starts_with("ek_"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expires_at = v["client_secret"]["expires_at"].as_u64().unwrap();
    assert!((now + 50..=now + 61).contains(&expires_at), "beta secrets live 60 s: {expires_at} vs now {now}");
    assert_eq!((v["object"].as_str(), v["agent"].as_str()), (Some("realtime.session"), Some("echo")));
    assert_eq!(v["turn_detection"]["silence_duration_ms"], 400);
    assert!(v.get("api_key").is_none() && !v.to_string().contains(API_KEY), "the API key never leaves the server");

    // The secret places a call, with the settings it was minted with.
    let mut c = Call::connect(&base, "/v1/realtime/calls", &secret).await;
    let created = c.expect("session.created").await;
    assert_eq!(created["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"], 400);
    c.close().await;

    // Mistakes get JSON errors.
    let (s, _, v) = helper(&base, "application/json", "{nope", &[]).await;
    assert_eq!((s, code(&v)), (400, "invalid_json"));
    let (s, _, v) = helper(&base, "application/json", r#"{"agent": "openai-realtime"}"#, &[]).await;
    assert_eq!((s, code(&v)), (400, "agent_not_configured"));
    assert!(v["error"]["message"].as_str().unwrap().contains("openai-realtime"));
    // A cross-site form can post text/plain without a preflight: refused.
    let (s, _, v) = helper(&base, "text/plain", "{}", &[]).await;
    assert_eq!((s, code(&v)), (415, "unsupported_content_type"));
    // Same-origin only: another page's Origin, a cross-site fetch, a DNS-rebinding host name.
    let (s, _, v) = helper(&base, "application/json", "{}", &[("origin", "http://127.0.0.1:1")]).await;
    assert_eq!((s, code(&v)), (403, "cross_origin"));
    let (s, _, v) = helper(&base, "application/json", "{}", &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!((s, code(&v)), (403, "cross_origin"));
    refuses_rebinding_and_preflight(&server, "/web/session").await;
    // ... while the API itself still answers preflights from any origin.
    let resp = http()
        .request(reqwest::Method::OPTIONS, format!("{base}/v1/realtime/calls"))
        .header("origin", "http://elsewhere.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some("*"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_helper_is_bounded_by_the_call_limit() {
    let server = start_with(|c| c.max_calls = Some(2)).await;
    let base = server.url();
    for _ in 0..2 {
        let (s, _, v) = helper(&base, "application/json", "{}", &[]).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, headers, v) = helper(&base, "application/json", "{}", &[]).await;
    assert_eq!((s, code(&v)), (429, "rate_limited"));
    let retry: u64 = headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}: until the oldest helper secret expires");
    // The API key's own minting is not limited by the page's helper.
    client_secret(&base, json!({})).await;
    server.shutdown().await;
}

/// The claims of a JWT, unverified (the server verifies them when the token is used).
fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap_or_else(|| panic!("not a JWT: {token}"));
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_token_helper_mints_a_token_that_joins() {
    let server = start_server().await;
    let base = server.url();
    let (status, headers, v) = room_helper(&base, json!({"room": "standup", "identity": "alice-1a2b", "name": "Alice Ng"}), &[]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    assert!(headers.get("access-control-allow-origin").is_none());
    assert_eq!((v["room"].as_str(), v["identity"].as_str()), (Some("standup"), Some("alice-1a2b")));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expires_at = v["expires_at"].as_u64().unwrap();
    assert!((now + 3590..=now + 3601).contains(&expires_at), "room tokens from the helper live an hour: {expires_at} vs now {now}");
    let token = v["token"].as_str().unwrap().to_string();
    assert!(!v.to_string().contains(API_KEY), "the API key never leaves the server");
    // Default grants, never admin.
    let claims = jwt_claims(&token);
    assert_eq!(
        (claims["sub"].as_str(), claims["name"].as_str(), claims["exp"].as_u64()),
        (Some("alice-1a2b"), Some("Alice Ng"), Some(expires_at))
    );
    assert_eq!(claims["room"], json!({"name": "standup", "publish": true, "subscribe": true, "publish_data": true, "admin": false}));

    // The token joins its room, under its identity and name.
    let mut alice =
        RoomClient::join(&http(), &base, "standup", &token, RoomClientOptions::default()).await.expect("joins with the helper's token");
    let joined = loop {
        let (_, ev) = tokio::time::timeout(WAIT, alice.events.recv()).await.expect("room.joined in time").expect("events open");
        if ev["type"] == "room.joined" {
            break ev;
        }
    };
    assert_eq!((joined["identity"].as_str(), joined["slots"].as_array().map(Vec::len)), (Some("alice-1a2b"), Some(3)));
    let info: Value = http().get(format!("{base}/v1/rooms/standup")).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (info["participants"][0]["identity"].as_str(), info["participants"][0]["name"].as_str()),
        (Some("alice-1a2b"), Some("Alice Ng"))
    );
    // ... and not another room.
    let resp = http()
        .post(format!("{base}/v1/rooms/elsewhere/join"))
        .bearer_auth(&token)
        .header("content-type", "application/sdp")
        .body(MINIMAL_OFFER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    alice.close().await;
    // The name defaults to the identity.
    let (_, _, v) = room_helper(&base, json!({"room": "standup", "identity": "bob"}), &[]).await;
    assert_eq!(jwt_claims(v["token"].as_str().unwrap())["name"], "bob");

    // Mistakes get JSON errors.
    for (body, want) in [
        (json!({"identity": "alice"}), "missing_room"),
        (json!({"room": "standup"}), "missing_identity"),
        (json!({"room": "stand up", "identity": "alice"}), "invalid_name"),
        (json!({"room": "standup", "identity": "alice/../admin"}), "invalid_name"),
        (json!({"room": "r".repeat(129), "identity": "alice"}), "invalid_name"),
        (json!({"room": "standup", "identity": "alice", "name": "n".repeat(257)}), "invalid_name"),
        (json!({"room": "standup", "identity": "alice", "admin": true}), "invalid_json"),
    ] {
        let (s, _, v) = room_helper(&base, body.clone(), &[]).await;
        assert_eq!((s, code(&v)), (400, want), "{body}: {v}");
    }
    let (s, _, v) = helper_at(&base, "/web/room-token", "application/json", "{nope", &[]).await;
    assert_eq!((s, code(&v)), (400, "invalid_json"));
    let (s, _, v) = helper_at(&base, "/web/room-token", "text/plain", r#"{"room": "standup", "identity": "eve"}"#, &[]).await;
    assert_eq!((s, code(&v)), (415, "unsupported_content_type"));
    // Same-origin only, as the session helper.
    let ok = json!({"room": "standup", "identity": "eve"});
    let (s, _, v) = room_helper(&base, ok.clone(), &[("origin", "http://127.0.0.1:1")]).await;
    assert_eq!((s, code(&v)), (403, "cross_origin"));
    let (s, _, v) = room_helper(&base, ok.clone(), &[("origin", "http://evil.example")]).await;
    assert_eq!((s, code(&v)), (403, "cross_origin"));
    let (s, _, v) = room_helper(&base, ok.clone(), &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!((s, code(&v)), (403, "cross_origin"));
    refuses_rebinding_and_preflight(&server, "/web/room-token").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_token_helper_is_bounded_by_the_call_limit() {
    let server = start_with(|c| c.max_calls = Some(2)).await;
    let base = server.url();
    for who in ["a", "b"] {
        let (s, _, v) = room_helper(&base, json!({"room": "r", "identity": who}), &[]).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, headers, v) = room_helper(&base, json!({"room": "r", "identity": "c"}), &[]).await;
    assert_eq!((s, code(&v)), (429, "rate_limited"));
    let retry: u64 = headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&retry), "Retry-After {retry}: until the oldest helper room token expires");
    // Counted apart from the session helper's secrets, and from the API key's own minting.
    let (s, _, v) = helper(&base, "application/json", "{}", &[]).await;
    assert_eq!(s, 200, "{v}");
    let resp = http().post(format!("{base}/v1/rooms/r/tokens")).bearer_auth(API_KEY).json(&json!({"identity": "c"})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_session_helper_answers_404_and_the_page_still_loads() {
    let server = start_with(|c| c.web_session = false).await;
    let base = server.url();
    let (s, _, v) = helper(&base, "application/json", "{}", &[]).await;
    assert_eq!((s, code(&v)), (404, "web_session_disabled"));
    let (s, _, v) = room_helper(&base, json!({"room": "r", "identity": "a"}), &[]).await;
    assert_eq!((s, code(&v)), (404, "web_session_disabled"));
    assert!(v["error"]["message"].as_str().unwrap().contains("/v1/rooms/<room>/tokens"), "{v}");
    let resp = http().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("id=\"secret\"") && html.contains("id=\"room-token\""),
        "the page can take a client secret or room token instead"
    );
    let cfg: Value = http().get(format!("{base}/web/config")).send().await.unwrap().json().await.unwrap();
    assert_eq!(cfg["session_helper"], false);
    server.shutdown().await;
}
