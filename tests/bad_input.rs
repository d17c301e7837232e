//! Bad input gets a clear error (status + JSON body, or an `error` event) and the server keeps
//! serving: credentials, content type, size, malformed and audio-less offers, bad events.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

async fn post_offer(base: &str, token: Option<&str>, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let mut req = http().post(format!("{base}/v1/realtime")).header("content-type", content_type).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_else(|| panic!("JSON error body expected, got {v}"))
}

const NO_AUDIO: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=sctp-port:5000\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let server = start_server().await;
    let base = server.url();
    let sdp = "application/sdp";

    let (s, v) = post_offer(&base, None, sdp, "v=0").await;
    assert_eq!((s, code(&v)), (401, "missing_credentials"));
    let (s, v) = post_offer(&base, Some("wrong"), sdp, "v=0").await;
    assert_eq!((s, code(&v)), (401, "invalid_api_key"));
    assert_eq!(v["error"]["type"], "authentication_error");
    let (s, v) = post_offer(&base, Some(API_KEY), "text/plain", "v=0").await;
    assert_eq!((s, code(&v)), (415, "unsupported_content_type"));
    let (s, v) = post_offer(&base, Some(API_KEY), sdp, "this is not SDP").await;
    assert_eq!((s, code(&v)), (400, "invalid_offer"));
    let (s, v) = post_offer(&base, Some(API_KEY), sdp, NO_AUDIO).await;
    assert_eq!((s, code(&v)), (400, "offer_without_audio"));
    let huge = format!("v=0\r\n{}", "a=x\r\n".repeat(70 * 1024 / 5));
    let (s, v) = post_offer(&base, Some(API_KEY), sdp, huge).await;
    assert_eq!((s, code(&v)), (413, "body_too_large"));

    let resp =
        http().post(format!("{base}/v1/realtime/sessions")).bearer_auth(API_KEY).json(&json!({"agent": "nope"})).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(code(&resp.json().await.unwrap()), "unknown_agent");
    let resp = http()
        .post(format!("{base}/v1/realtime/client_secrets"))
        .bearer_auth(API_KEY)
        .json(&json!({"expires_after": {"anchor": "created_at", "seconds": 5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(code(&resp.json().await.unwrap()), "invalid_expires_after");
    let resp = http()
        .post(format!("{base}/v1/realtime/sessions"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http().get(format!("{base}/no/such/thing")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(code(&resp.json().await.unwrap()), "not_found");
    let resp = http().delete(format!("{base}/v1/realtime/calls/rtc_unknown")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    // Still serving, and the errors are counted by code.
    assert_eq!(http().get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for code in
        ["missing_credentials", "invalid_api_key", "unsupported_content_type", "invalid_offer", "offer_without_audio", "body_too_large"]
    {
        assert!(metrics.contains(&format!("voxrelay_api_errors_total{{code=\"{code}\"}}")), "{code} not counted in\n{metrics}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_secret_is_rejected() {
    let server = start_server().await;
    let base = server.url();
    let resp = http()
        .post(format!("{base}/v1/realtime/client_secrets"))
        .bearer_auth(API_KEY)
        .json(&json!({"expires_after": {"anchor": "created_at", "seconds": 10}, "session": {"type": "realtime"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let secret = v["value"].as_str().unwrap().to_string();
    assert!(secret.starts_with("ek_"));
    assert_eq!(v["session"]["type"], "realtime");
    let mut call = Call::connect(&base, "/v1/realtime/calls", &secret).await;
    call.expect("session.created").await;
    // Expiry is a wall-clock property: the shortest allowed lifetime is 10 s, so wait it out.
    let expires_at = v["expires_at"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    tokio::time::sleep(Duration::from_secs(expires_at.saturating_sub(now) + 1)).await;
    let (s, v) = post_offer(&base, Some(&secret), "application/sdp", "v=0").await;
    assert_eq!((s, code(&v)), (401, "expired_client_secret"));
    // The call it started is still its own to end (and to PATCH): expiry limits new calls.
    let other = client_secret(&base, json!({})).await;
    let delete = |token: String| http().delete(format!("{base}{}", call.location)).bearer_auth(token).send();
    assert_eq!(delete(other).await.unwrap().status(), 404, "another secret's session has no such call");
    assert_eq!(server.engine.live_calls(), 1);
    let resp = delete(secret.clone()).await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.engine.live_calls() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the call did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_get_error_events_and_the_call_goes_on() {
    let server = start_server().await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", API_KEY).await;
    c.expect("session.created").await;
    c.send_text("{not json").await.unwrap();
    let e = c.expect("error").await;
    assert_eq!(e["error"]["code"], "invalid_json");
    c.send(json!({"type": "no.such.event", "event_id": "evt_1"})).await;
    let e = c.expect("error").await;
    assert_eq!(e["error"]["code"], "unknown_event_type");
    assert_eq!(e["error"]["event_id"], "evt_1");
    c.send(json!({"type": "session.update", "session": {"turn_detection": {"threshold": 3}}, "event_id": "evt_2"})).await;
    let e = c.expect("error").await;
    assert_eq!(e["error"]["event_id"], "evt_2");
    // The call goes on: a valid update is applied, and push-to-talk works end to end.
    c.send(json!({"type": "session.update", "session": {"turn_detection": null}})).await;
    let updated = c.expect("session.updated").await;
    assert_eq!(updated["session"]["turn_detection"], Value::Null);
    c.say(&speech());
    c.say(&silence_ms(300));
    c.wait_sent().await;
    c.send(json!({"type": "input_audio_buffer.commit"})).await;
    c.expect("input_audio_buffer.committed").await;
    c.send(json!({"type": "response.create"})).await;
    c.expect("response.created").await;
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed");
    assert!(!c.types().iter().any(|t| t == "input_audio_buffer.speech_started"), "no server VAD in push-to-talk");

    // DELETE ends the call and frees its audio worker slot.
    let resp = http().delete(format!("{base}{}", c.location)).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(server.engine.live_calls(), 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.engine.media_sessions() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "worker slot not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = http().delete(format!("{base}{}", c.location)).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tools_and_function_outputs_get_error_events_on_an_echo_call() {
    let server = start_server().await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", API_KEY).await;
    c.expect("session.created").await;
    let tool = json!({"type": "function", "name": "lookup", "parameters": {"type": "object"}});
    for (i, bad) in [
        json!({"type": "session.update", "session": {"tools": [{"type": "function", "name": "no spaces allowed"}]}}),
        json!({"type": "session.update", "session": {"tools": [{"type": "function", "name": "f", "parameters": []}]}}),
        json!({"type": "session.update", "session": {"tools": [{"type": "retrieval"}]}}),
        json!({"type": "session.update", "session": {"tools": [tool], "tool_choice": {"type": "function", "name": "other"}}}),
        json!({"type": "conversation.item.create", "item": {"type": "function_call_output", "output": "no call id"}}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut ev = bad;
        ev["event_id"] = json!(format!("evt_{i}"));
        c.send(ev).await;
        let e = c.expect("error").await;
        assert_eq!(
            (e["error"]["code"].as_str(), e["error"]["event_id"].as_str()),
            (Some("invalid_value"), Some(format!("evt_{i}").as_str())),
            "{e}"
        );
    }
    // The echo agent calls no functions, so no output can be expected from the client.
    c.send(json!({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_1", "output": "{}"}}))
        .await;
    assert_eq!(c.expect("error").await["error"]["code"], "unknown_call_id");
    // Nothing was half-applied, a valid declaration is echoed, and the call still answers turns.
    c.send(json!({"type": "session.update", "session": {"tools": [tool], "tool_choice": "required"}})).await;
    let updated = c.expect("session.updated").await;
    assert_eq!(
        updated["session"]["tools"],
        json!([{"type": "function", "name": "lookup", "description": "", "parameters": {"type": "object"}}])
    );
    assert_eq!(updated["session"]["tool_choice"], "required");
    c.speak_turn(500);
    assert_eq!(c.expect("response.done").await["response"]["status"], "completed");
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_beyond_max_calls_get_503_with_retry_after() {
    let server = start_with(|c| c.max_calls = Some(1)).await;
    let base = server.url();
    let mut first = Call::connect(&base, "/v1/realtime", API_KEY).await;
    first.expect("session.created").await;
    let resp = http()
        .post(format!("{base}/v1/realtime"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/sdp")
        .body(MINIMAL_OFFER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(code(&resp.json().await.unwrap()), "overloaded");
    // The live call is untouched.
    first.send(json!({"type": "response.create"})).await;
    first.expect("response.created").await;
    first.close().await;
    server.shutdown().await;
}
