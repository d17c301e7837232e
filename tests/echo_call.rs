//! A real one-to-one call with the built-in echo agent: a webrtc-rs client speaks the speech
//! fixture over DTLS/SRTP; the server detects the turn at the right audio times and plays the
//! turn back on the track, with the realtime events of PROTOCOL.md §2.

use crate::common;

use common::*;
use serde_json::json;

const MAX_ONSET_ERROR_MS: i64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_call_round_trip() {
    let server = start_server().await;
    let base = server.url();
    let secret = client_secret(&base, json!({"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}})).await;
    let mut c = Call::connect(&base, "/v1/realtime", &secret).await;
    let created = c.expect("session.created").await;
    assert!(created["session"]["id"].as_str().unwrap().starts_with("sess_"));
    assert_eq!(created["session"]["turn_detection"]["silence_duration_ms"], 500);

    let speech = speech();
    let speech_ms = (speech.len() / 48) as i64;
    let start = c.say(&silence_ms(1000)) as i64 + 1000;
    c.say(&speech);
    c.say(&silence_ms(5000));

    let started = c.expect("input_audio_buffer.speech_started").await;
    let onset = started["audio_start_ms"].as_i64().unwrap();
    assert!((onset - start).abs() <= MAX_ONSET_ERROR_MS, "speech_started at {onset} ms, speech starts at {start} ms");
    let stopped = c.expect("input_audio_buffer.speech_stopped").await;
    let end = stopped["audio_end_ms"].as_i64().unwrap();
    assert!((end - (start + speech_ms)).abs() <= MAX_ONSET_ERROR_MS, "speech_stopped at {end} ms, speech ends at {} ms", start + speech_ms);
    assert_eq!(started["item_id"], stopped["item_id"]);
    let committed = c.expect("input_audio_buffer.committed").await;
    assert_eq!(committed["item_id"], started["item_id"]);
    c.expect("response.created").await;
    let delta = c.expect("response.audio_transcript.delta").await;
    let text = delta["delta"].as_str().unwrap();
    let secs: f64 = text.trim_start_matches("[echo ").trim_end_matches(" s]").parse().expect("\"[echo <seconds> s]\"");
    assert!((secs * 1000.0 - (end - onset) as f64).abs() <= 100.0, "{text} for a {} ms turn", end - onset);
    c.expect("output_audio_buffer.started").await;
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    for kind in [
        "response.output_item.added",
        "conversation.item.created",
        "response.audio.done",
        "response.audio_transcript.done",
        "output_audio_buffer.stopped",
    ] {
        assert!(c.types().iter().any(|t| t == kind), "missing {kind} in {:?}", c.types());
    }

    // The echoed audio has the energy envelope of what was said.
    let received = c.levels();
    let first = received.iter().position(|(_, r)| *r > VOICED_RMS).expect("echoed audio arrives");
    let echoed: Vec<f64> = received[first..].iter().map(|(_, r)| *r).take(speech.len() / 960).collect();
    let voiced = echoed.iter().filter(|&&r| r > VOICED_RMS).count();
    let sent_env = envelope(&speech);
    let sent_voiced = sent_env.iter().filter(|&&r| r > VOICED_RMS).count();
    assert!(voiced as f64 >= 0.8 * sent_voiced as f64, "echo has {voiced} voiced frames, speech had {sent_voiced}");
    let corr = best_lag_correlation(&sent_env, &echoed);
    assert!(corr > 0.8, "envelope correlation {corr:.2}");

    // Turn latency: last voiced frame sent -> first voiced frame received, minus the silence
    // the turn detector must wait for. Reported, not asserted (machines are noisy).
    let last_voiced_sent = c.sent().iter().rev().find(|s| s.voiced).map(|s| s.at).unwrap();
    let latency = received[first].0.duration_since(last_voiced_sent).as_millis() as i64 - 500;
    eprintln!("TURN_LATENCY_MS={latency} (end of speech to first echoed packet, minus silence_duration_ms=500)");
    // Where it went, as the client saw it: each step's arrival after the end of speech, minus
    // the silence (the events and the audio take different paths out of the server).
    let after = |at: std::time::Instant| at.duration_since(last_voiced_sent).as_millis() as i64 - 500;
    let event_at = |kind: &str| c.log.iter().find(|(_, ev)| ev["type"] == kind).map(|(at, _)| after(*at));
    eprintln!(
        "TURN_SPLIT_MS committed={:?} response_created={:?} output_started={:?} first_voiced_packet={latency}",
        event_at("input_audio_buffer.committed"),
        event_at("response.created"),
        event_at("output_audio_buffer.started")
    );
    eprintln!("ENVELOPE_CORRELATION={corr:.3} VOICED_ECHO_FRAMES={voiced}/{sent_voiced}");

    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_do_not_hear_each_other() {
    let server = start_server().await;
    let base = server.url();
    let mut a = Call::connect(&base, "/v1/realtime/calls", &client_secret(&base, json!({})).await).await;
    let mut b = Call::connect(&base, "/v1/realtime/calls", &client_secret(&base, json!({})).await).await;
    a.expect("session.created").await;
    b.expect("session.created").await;
    a.say(&silence_ms(300));
    a.say(&speech());
    a.say(&silence_ms(5000));
    b.say(&silence_ms(8000));
    a.expect("input_audio_buffer.speech_started").await;
    // GA call: GA event names.
    a.expect("conversation.item.added").await;
    a.expect("response.output_audio_transcript.delta").await;
    let done = a.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed");
    assert!(a.levels().iter().any(|(_, r)| *r > VOICED_RMS), "A hears its echo");

    b.drain();
    assert!(!b.types().iter().any(|t| t.starts_with("input_audio_buffer.speech") || t.starts_with("response.")), "B saw {:?}", b.types());
    let b_rx = b.levels();
    assert!(b_rx.len() > 50, "B's stream keeps flowing ({} packets)", b_rx.len());
    assert!(b_rx.iter().all(|(_, r)| *r <= VOICED_RMS), "B heard voice that was not its own");
    a.close().await;
    b.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_without_delete_frees_the_call() {
    let server = start_server().await;
    let base = server.url();
    let mut c = Call::connect(&base, "/v1/realtime", &client_secret(&base, json!({})).await).await;
    c.expect("session.created").await;
    assert_eq!(server.engine.live_calls(), 1);
    // What a browser does when its tab closes or it calls pc.close(): no DELETE.
    c.close().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while server.engine.live_calls() > 0 || server.engine.media_sessions() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "call still held after the peer hung up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_only_offer_gets_a_g711_echo() {
    let server = start_server().await;
    let base = server.url();
    let opts = ClientOptions { codec: voxrelay_media::AudioCodec::Pcmu, ..Default::default() };
    let mut c = Call::connect_with(&base, "/v1/realtime", &client_secret(&base, json!({})).await, opts).await;
    c.expect("session.created").await;
    let speech = speech();
    let start = c.say(&silence_ms(500)) as i64 + 500;
    c.say(&speech);
    c.say(&silence_ms(4500));
    let started = c.expect("input_audio_buffer.speech_started").await;
    let onset = started["audio_start_ms"].as_i64().unwrap();
    assert!((onset - start).abs() <= 100, "G.711 speech_started at {onset} ms, speech at {start} ms");
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed");
    // Echoed G.711 audio, decoded by the client, follows the speech envelope.
    let received = c.levels();
    let first = received.iter().position(|(_, r)| *r > VOICED_RMS).expect("echoed G.711 audio");
    let echoed: Vec<f64> = received[first..].iter().map(|(_, r)| *r).take(speech.len() / 960).collect();
    let corr = best_lag_correlation(&envelope(&speech), &echoed);
    assert!(corr > 0.8, "G.711 echo envelope correlation {corr:.2}");
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_keeps_the_call_and_its_conversation() {
    let server = start_server().await;
    let base = server.url();
    let secret = client_secret(&base, json!({})).await;
    let mut c = Call::connect(&base, "/v1/realtime", &secret).await;
    c.expect("session.created").await;
    c.say(&speech());
    c.say(&silence_ms(1500));
    let first = c.expect("response.done").await;
    assert_eq!(first["response"]["status"], "completed");

    // The page's move on a network change: PATCH new ICE credentials, keep everything else.
    let etag = c.restart_ice(&http(), &base, &secret).await.expect("ICE restarts");
    assert!(etag.is_some_and(|e| e.starts_with('"')));
    c.say(&speech());
    c.say(&silence_ms(1500));
    let second = c.expect("response.done").await;
    assert_eq!(second["response"]["status"], "completed", "the same call answers after the restart");
    assert_eq!(c.types().iter().filter(|t| *t == "session.created").count(), 1, "no new session");
    let items = c.types().iter().filter(|t| *t == "input_audio_buffer.committed").count();
    assert_eq!(items, 2, "one conversation with both turns");

    // A PATCH names a live call of the caller's own session, with a fragment.
    let patch = |url: String| http().patch(url).bearer_auth(&secret).header("content-type", "application/trickle-ice-sdpfrag");
    let resp = patch(format!("{base}/v1/realtime/calls/rtc_nope")).body("a=end-of-candidates\r\n").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let url = format!("{base}{}", c.location);
    let restart = "a=ice-ufrag:Qq11\r\na=ice-pwd:abcdefabcdefabcdefabcdefab\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
    let resp = patch(url.clone()).header("if-match", "\"stale\"").body(restart).send().await.unwrap();
    assert_eq!(resp.status(), 412);
    let resp = patch(url).body("a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n").send().await.unwrap();
    assert_eq!(resp.status(), 204);
    c.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_call_shapes_multipart_create_hangup_and_json_errors() {
    let server = start_server().await;
    let base = server.url();
    // `calls.create(sdp=..., session=...)` as the OpenAI SDKs post it: a multipart form.
    let session = json!({"type": "realtime", "instructions": "be brief", "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}}});
    let opts = ClientOptions { form_session: Some(session), ..Default::default() };
    let mut c = Call::connect_with(&base, "/v1/realtime/calls", API_KEY, opts).await;
    let created = c.expect("session.created").await;
    assert_eq!(created["session"]["instructions"], "be brief", "{created}");
    assert_eq!(created["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"], 400, "{created}");
    assert_eq!(created["session"]["output_modalities"], json!(["audio"]), "GA names one output modality");
    c.say(&speech());
    c.say(&silence_ms(1500));
    assert_eq!(c.expect("response.done").await["response"]["status"], "completed");

    // `calls.hangup(id)`: POST .../hangup → 200, and the call ends.
    let id = c.location.rsplit('/').next().unwrap().to_string();
    let resp = http().post(format!("{base}/v1/realtime/calls/{id}/hangup")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.engine.live_calls() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the call is still live after hangup");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // A setting voxrelay does not implement is refused by name, not replaced.
    let opts = ClientOptions {
        form_session: Some(json!({"type": "realtime", "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}})),
        ..Default::default()
    };
    let err = voxrelay::client::Client::connect(&http(), &format!("{base}/v1/realtime/calls"), API_KEY, opts).await.err().unwrap();
    assert!(
        matches!(err, voxrelay::client::ClientError::Refused(400, ref b) if b.contains("unsupported_value") && b.contains("semantic_vad")),
        "{err}"
    );

    // A known path with a method it does not take: a JSON error, counted like the others.
    let resp = http().get(format!("{base}/v1/realtime/calls")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("code=\"method_not_allowed\""), "405s are counted");
    c.close().await;
    server.shutdown().await;
}

/// The `udp` host candidates' ports in an answer (each m-line lists them).
fn udp_host_ports(sdp: &str) -> std::collections::BTreeSet<u16> {
    udp_host_addrs(sdp).into_iter().map(|(_, port)| port).collect()
}

/// The `udp` host candidates' addresses in an answer.
fn udp_host_addrs(sdp: &str) -> std::collections::BTreeSet<(String, u16)> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .map(|c| c.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 7 && f[2].eq_ignore_ascii_case("udp") && f[7] == "host")
        .filter_map(|f| Some((f[4].to_string(), f[5].parse().ok()?)))
        .collect()
}

/// One spoken turn on `call`, answered in full, and its echo heard.
async fn hears_its_echo(call: &mut Call, what: &str) {
    call.expect("session.created").await;
    call.say(&silence_ms(300));
    call.say(&speech());
    call.say(&silence_ms(3000));
    let done = call.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{what}");
    assert!(call.levels().iter().any(|(_, r)| *r > VOICED_RMS), "{what}: the caller hears its echo");
}

/// Calls on one audio worker ride its loop's one socket (issue 20); with `rtc_loop` off each call
/// gets a peer connection driver and a socket of its own, and still echoes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_share_the_loops_socket_and_the_driver_still_works() {
    for shared in [true, false] {
        let server = start_with(|c| {
            c.audio_workers = Some(1);
            c.rtc_loop = shared;
        })
        .await;
        let base = server.url();
        let mut a = Call::connect(&base, "/v1/realtime", &client_secret(&base, json!({})).await).await;
        let b = Call::connect(&base, "/v1/realtime", &client_secret(&base, json!({})).await).await;
        let (pa, pb) = (udp_host_ports(&a.answer_sdp), udp_host_ports(&b.answer_sdp));
        assert_eq!((pa.len(), pb.len()), (1, 1), "one UDP host port each: {pa:?} {pb:?}");
        assert_eq!(pa == pb, shared, "loop {shared}: ports {pa:?} and {pb:?}");
        hears_its_echo(&mut a, &format!("loop {shared}")).await;
        a.close().await;
        b.close().await;
        server.shutdown().await;
    }
}

/// A wildcard media IP (the Docker image's `0.0.0.0`) still gets the shared loop: a socket per
/// interface address, one port, each address a host candidate; the call connects to one of them
/// (all are this machine's, reached over loopback routing) and echoes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_media_ip_runs_on_the_loop_with_a_candidate_per_address() {
    let v4 = wildcard_call(std::net::Ipv4Addr::UNSPECIFIED.into()).await;
    assert!(v4.iter().all(|(ip, _)| !ip.contains(':')), "IPv4 only on 0.0.0.0: {v4:?}");
    // `::` is dual-stack: the same IPv4 addresses, and the host's IPv6 ones (none link-local).
    if std::net::UdpSocket::bind("[::]:0").is_err() {
        eprintln!("skipped the :: half: this host has no IPv6");
        return;
    }
    let any = wildcard_call(std::net::Ipv6Addr::UNSPECIFIED.into()).await;
    let ips = |c: &std::collections::BTreeSet<(String, u16)>| -> Vec<String> { c.iter().map(|(ip, _)| ip.clone()).collect() };
    let (v4, any) = (ips(&v4), ips(&any));
    assert!(v4.iter().filter(|ip| *ip != "127.0.0.1").all(|ip| any.contains(ip)), "{v4:?} in {any:?}");
    assert!(any.iter().all(|ip| !ip.starts_with("fe80")), "no link-local candidates: {any:?}");
}

/// With a driver per call (`--rtc-loop false`) a dual-stack `::` answers with the host's IPv4
/// addresses too, so an IPv4 caller connects (the driver's library alone would bind IPv6 only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_on_the_dual_stack_wildcard_offers_ipv4_too() {
    if std::net::UdpSocket::bind("[::]:0").is_err() {
        eprintln!("skipped: this host has no IPv6");
        return;
    }
    let server = start_with(|c| {
        c.rtc_loop = false;
        c.rtc_ip = Some(std::net::Ipv6Addr::UNSPECIFIED.into());
    })
    .await;
    let base = server.url();
    let mut call = Call::connect(&base, "/v1/realtime", &client_secret(&base, json!({})).await).await;
    let addrs = udp_host_addrs(&call.answer_sdp);
    assert!(addrs.iter().any(|(ip, _)| !ip.contains(':')), "an IPv4 host candidate: {addrs:?}");
    assert!(addrs.iter().all(|(ip, _)| ip != "0.0.0.0" && ip != "::" && !ip.starts_with("fe80")), "{addrs:?}");
    assert_eq!(server.engine.loop_connections(), 0, "a driver, not the loop");
    hears_its_echo(&mut call, "driver on ::").await;
    call.close().await;
    server.shutdown().await;
}

/// Two calls on a server whose media IP is `ip` (a wildcard): their UDP host candidates, after
/// checking they are one loop's, on one port, and that the first call echoes.
async fn wildcard_call(ip: std::net::IpAddr) -> std::collections::BTreeSet<(String, u16)> {
    let server = start_with(|c| {
        c.audio_workers = Some(1);
        c.rtc_ip = Some(ip);
    })
    .await;
    let base = server.url();
    let mut a = Call::connect(&base, "/v1/realtime", &client_secret(&base, json!({})).await).await;
    let b = Call::connect(&base, "/v1/realtime", &client_secret(&base, json!({})).await).await;
    let (ca, cb) = (udp_host_addrs(&a.answer_sdp), udp_host_addrs(&b.answer_sdp));
    assert!(!ca.is_empty() && ca.iter().all(|(ip, _)| ip != "0.0.0.0" && ip != "::"), "concrete addresses: {ca:?}");
    assert_eq!(ca, cb, "both calls on the one loop's sockets");
    assert_eq!(udp_host_ports(&a.answer_sdp).len(), 1, "one port: {ca:?}");
    assert_eq!(server.engine.loop_connections(), 2, "on the loop, not the per-call driver");
    hears_its_echo(&mut a, &format!("wildcard media IP {ip}")).await;
    a.close().await;
    b.close().await;
    server.shutdown().await;
    ca
}
