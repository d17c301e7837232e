//! Media over ICE-TCP (RFC 6544): with `--rtc-tcp` the answer carries passive TCP host
//! candidates, so a caller whose firewall blocks UDP still completes a call without TURN.
//! The client here has no UDP socket at all, so a connected call proves the TCP path.

mod common;

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
    let base = server.url();
    let mut c = Call::connect_with(&base, "/v1/realtime", API_KEY, tcp_only()).await;
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
