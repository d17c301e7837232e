//! Media over ICE-TCP (RFC 6544): with `--rtc-tcp` the answer carries passive TCP host
//! candidates, so a caller whose firewall blocks UDP still completes a call without TURN.
//! The client here has no UDP socket at all, so a connected call proves the TCP path.

use crate::common;

use std::time::Duration;

use common::*;
use voxrelay::client::ClientError;

fn tcp_only() -> ClientOptions {
    ClientOptions { tcp_only: true, ..ClientOptions::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_only_caller_gets_its_echo_over_ice_tcp() {
    let server = start_server().await;
    assert!(voxrelay::ServeConfig::defaults().rtc_tcp, "on by default");
    echoes_over_tcp(&server.url()).await;
}

/// A wildcard media IP: `0.0.0.0`, and `::` (dual-stack), where an IPv4 caller's stream reaches
/// the listener as `::ffff:a.b.c.d` and the loop must know it by its IPv4 address, as ICE does;
/// on the loop and on a driver per call (which binds `0.0.0.0` next to `::`).
/// The caller sits on an interface address: webrtc-rs's active TCP candidate does not bind its
/// source, so from 127.0.0.1 its stream would come from an address its own ICE does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_caller_reaches_a_wildcard_media_ip() {
    let interfaces = rtc::shared::ifaces::ifaces().expect("interfaces");
    let Some(ip) = interfaces.iter().filter_map(|i| i.addr.map(|a| a.ip())).find(|ip| ip.is_ipv4() && !ip.is_loopback()) else {
        eprintln!("skipped: this host has no IPv4 address beyond loopback");
        return;
    };
    let mut wildcards = vec![std::net::IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED)];
    if std::net::TcpListener::bind("[::]:0").is_ok() {
        wildcards.push(std::net::Ipv6Addr::UNSPECIFIED.into());
    } else {
        eprintln!("no IPv6 here: only 0.0.0.0");
    }
    // On the loop, and with a driver per call (`--rtc-loop false`).
    for (wildcard, on_loop) in wildcards.into_iter().flat_map(|w| [(w, true), (w, false)]) {
        let server = start_with(|c| {
            c.rtc_ip = Some(wildcard);
            c.rtc_loop = on_loop;
        })
        .await;
        let opts = ClientOptions { bind_ip: ip, ..tcp_only() };
        let mut c = Call::connect_with(&server.url(), "/v1/realtime", API_KEY, opts).await;
        assert_eq!(server.engine.loop_connections(), usize::from(on_loop), "{wildcard}: on the loop {on_loop}");
        c.expect("session.created").await;
        c.speak_turn(500);
        let done = c.expect("response.done").await;
        assert_eq!(done["response"]["status"], "completed", "{wildcard}, loop {on_loop}: {done}");
        c.wait_voiced(50).await;
        c.close().await;
        server.shutdown().await;
    }
}

async fn echoes_over_tcp(base: &str) {
    let mut c = Call::connect_with(base, "/v1/realtime", API_KEY, tcp_only()).await;
    c.expect("session.created").await;
    c.speak_turn(500);
    let done = c.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    c.wait_voiced(50).await;
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rtc_tcp_a_tcp_only_caller_cannot_connect() {
    let server = start_with(|c| c.rtc_tcp = false).await;
    let opts = ClientOptions { connect_timeout: Duration::from_secs(3), ..tcp_only() };
    match voxrelay::client::Client::connect(&http(), &format!("{}/v1/realtime", server.url()), API_KEY, opts).await {
        Err(ClientError::Timeout(_)) => {}
        Err(e) => panic!("expected an ICE timeout, got {e:?}"),
        Ok(_) => panic!("connected without any TCP candidate on the server"),
    }
}

/// The passive TCP candidate's port in an answer.
fn tcp_port(sdp: &str) -> u16 {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .map(|c| c.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[2].eq_ignore_ascii_case("tcp") && f.contains(&"passive"))
        .and_then(|f| f[5].parse().ok())
        .expect("a passive TCP candidate")
}

/// A TCP connection to the calls' ICE-TCP port that never names a call (no STUN check with a
/// known ufrag) is closed by the server, and so is one that sends garbage: idle connections
/// cannot pile up on the shared listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_that_names_no_call_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_server().await;
    let base = server.url();
    let mut c = Call::connect_with(&base, "/v1/realtime", API_KEY, tcp_only()).await;
    c.expect("session.created").await;
    let port = tcp_port(&c.answer_sdp);
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut noisy = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    noisy.write_all(&[0, 4, 0xde, 0xad, 0xbe, 0xef]).await.unwrap();
    for stream in [&mut silent, &mut noisy] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the server closes it: {read:?}");
    }
    // The call on the same listener is unaffected.
    c.speak_turn(500);
    assert_eq!(c.expect("response.done").await["response"]["status"], "completed");
    c.close().await;
}
