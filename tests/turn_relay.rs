//! The embedded TURN server against an independent client, coturn's `turnutils_uclient`
//! (Debian package `coturn`, installed by `.ci/run`), on 127.0.0.1: two clients allocate with
//! REST credentials and relay to each other (`-y`) over UDP, TCP and TLS (self-signed
//! certificate made at test time). With `allow-loopback-peers`
//! every packet arrives; with the default policy the loopback relay addresses are refused with
//! 403 and nothing is relayed. Also: `serve --turn-config` hands each session working
//! `ice_servers` credentials.

use crate::common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use voxrelay::relay::core::TurnStats;
use voxrelay::relay::{RelayConfig, RelayServer};

const SECRET: &str = "relay-test-secret";
/// uclient sends every 20 ms; 50 messages per client take ~1 s, setup a few more.
const UCLIENT_DEADLINE: Duration = Duration::from_secs(60);

fn test_config(allow_loopback: bool) -> RelayConfig {
    RelayConfig {
        listening_ips: vec!["127.0.0.1".parse().unwrap()],
        listening_port: 0, // OS-assigned (the file parser refuses 0; the library accepts it)
        min_port: 0,
        max_port: 0,
        use_auth_secret: true,
        static_auth_secrets: vec![SECRET.into()],
        allow_loopback_peers: allow_loopback,
        no_tls: true,
        ..RelayConfig::default()
    }
}

/// What uclient reported.
#[derive(Debug, Default)]
struct Uclient {
    sent: u64,
    received: u64,
    lost: Option<u64>,
    output: String,
}

/// Runs turnutils_uclient with `args` (plus the server port) and parses its summary.
fn uclient(port: u16, args: &[&str]) -> Uclient {
    let mut child = Command::new("turnutils_uclient")
        .args(args)
        .args(["-p", &port.to_string(), "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("turnutils_uclient (Debian package coturn; .ci/run installs it)");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > UCLIENT_DEADLINE {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
    let mut output = String::new();
    child.stdout.take().unwrap().read_to_string(&mut output).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut output).unwrap();
    let mut r = Uclient::default();
    for line in output.lines() {
        if let Some(rest) = line.split("tot_send_msgs=").nth(1) {
            r.sent = rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap_or(0);
        }
        if let Some(rest) = line.split("tot_recv_msgs=").nth(1) {
            r.received = rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap_or(0);
        }
        if let Some(rest) = line.split("Total lost packets ").nth(1) {
            r.lost = rest.split(' ').next().and_then(|n| n.parse().ok());
        }
    }
    r.output = output;
    r
}

/// Runs uclient off the async runtime (it blocks for seconds).
async fn uclient_async(port: u16, args: &[&str]) -> Uclient {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || uclient(port, &args.iter().map(|s| s.as_str()).collect::<Vec<_>>())).await.unwrap()
}

const LOAD: [&str; 10] = ["-y", "-c", "-n", "50", "-m", "2", "-l", "160", "-e", "127.0.0.1"];

async fn relays_without_loss(transport: &[&str]) {
    let server = RelayServer::start(&test_config(true), None).await.unwrap();
    let port = server.udp_addrs[0].port();
    assert_eq!(server.tcp_addrs[0].port(), port);
    let mut args = transport.to_vec();
    args.extend(["-W", SECRET, "-u", "alice"]);
    args.extend(LOAD);
    let r = uclient_async(port, &args).await;
    assert_eq!((r.sent, r.received, r.lost), (100, 100, Some(0)), "uclient output:\n{}", r.output);
    assert!(TurnStats::get(&server.stats.relayed_to_peer) >= 100);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_relays_over_udp_without_loss() {
    relays_without_loss(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_relays_over_tcp_without_loss() {
    relays_without_loss(&["-t"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_relays_with_send_indications_without_loss() {
    relays_without_loss(&["-s"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_relays_over_tls_without_loss() {
    let dir = std::env::temp_dir().join(format!("voxrelay-turn-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("turn.crt"), dir.join("turn.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let cfg = RelayConfig { cert: Some(cert_path), pkey: Some(key_path), no_tls: false, tls_listening_port: 0, ..test_config(true) };
    let server = RelayServer::start(&cfg, None).await.unwrap();
    let tls_port = server.tls_addrs[0].port();
    let mut args = vec!["-t", "-S", "-W", SECRET, "-u", "alice"];
    args.extend(LOAD);
    let r = uclient_async(tls_port, &args).await;
    assert_eq!((r.sent, r.received, r.lost), (100, 100, Some(0)), "server {:?}\nuclient output:\n{}", server.stats, r.output);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_refuses_loopback_peers_with_403() {
    let server = RelayServer::start(&test_config(false), None).await.unwrap();
    let port = server.udp_addrs[0].port();
    for transport in [&[][..], &["-t"][..]] {
        let mut args = transport.to_vec();
        args.extend(["-W", SECRET, "-u", "mallory"]);
        args.extend(LOAD);
        let r = uclient_async(port, &args).await;
        assert!(r.output.contains("403"), "expected a 403 in uclient's output:\n{}", r.output);
        assert_eq!(r.received, 0, "{}", r.output);
    }
    assert!(TurnStats::get(&server.stats.forbidden_peer) >= 2);
    assert_eq!(TurnStats::get(&server.stats.relayed_to_peer), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_rest_secret_cannot_allocate() {
    let server = RelayServer::start(&test_config(true), None).await.unwrap();
    let port = server.udp_addrs[0].port();
    let r = uclient_async(port, &["-W", "not-the-secret", "-u", "eve", "-y", "-c", "-n", "5", "-e", "127.0.0.1"]).await;
    assert_eq!(r.received, 0, "{}", r.output);
    assert_eq!(server.allocations(), 0);
    assert!(TurnStats::get(&server.stats.unauthorized) >= 1);
    server.shutdown().await;
}

/// A port free for both UDP and TCP on 127.0.0.1 (turn.conf cannot say "any port").
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_get_ice_servers_that_work_with_the_embedded_turn() {
    let dir = std::env::temp_dir().join(format!("voxrelay-turn-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("turn.conf");
    // turn.conf takes no port 0, so one is picked in advance; tests running beside this one bind
    // ephemeral ports too, so a taken pick is picked again.
    let mut tries = 0;
    let (port, server) = loop {
        let port = free_port();
        std::fs::write(
            &conf,
            format!(
                "listening-ip=127.0.0.1\nlistening-port={port}\nrealm=voxrelay\nuse-auth-secret\nstatic-auth-secret={SECRET}\n\
                 allow-loopback-peers\nno-tls\nmin-port=49152\nmax-port=65535\n"
            ),
        )
        .unwrap();
        match common::try_start_with(|c| c.turn_config = Some(conf.clone())).await {
            Ok(server) => break (port, server),
            Err(e) if tries < 8 && format!("{e:#}").contains("Address already in use") => tries += 1,
            Err(e) => panic!("server starts: {e:#}"),
        }
    };
    let resp = common::http().post(format!("{}/v1/realtime/sessions", server.url())).bearer_auth(common::API_KEY).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let ice = &body["ice_servers"][0];
    let urls: Vec<&str> = ice["urls"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    assert_eq!(urls, [format!("turn:127.0.0.1:{port}?transport=udp"), format!("turn:127.0.0.1:{port}?transport=tcp")]);
    let username = ice["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, body["id"].as_str().unwrap(), "the REST user is the session id");
    let ttl = ice["ttl"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(expiry.parse::<u64>().unwrap().abs_diff(now + ttl) <= 5);
    let r = uclient_async(port, &["-u", username, "-w", ice["credential"].as_str().unwrap(), "-y", "-c", "-n", "20", "-m", "1", "-e", "127.0.0.1"]).await;
    // -m 1 with -y is one pair of clients: 2 x 20 messages.
    assert_eq!((r.sent, r.received, r.lost), (40, 40, Some(0)), "uclient output:\n{}", r.output);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A STUN Binding request (RFC 5389 §6): type 0x0001, no attributes.
fn binding_request(txid: u8) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    m.extend([txid; 12]);
    m
}

/// Reads one STUN message over TCP and returns its type.
async fn read_stun_type(s: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 20];
    s.read_exact(&mut header).await.unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[2], header[3]]))];
    s.read_exact(&mut body).await.unwrap();
    u16::from_be_bytes([header[0], header[1]])
}

/// Reads until the server closes the connection (EOF or reset); false if it stays open.
async fn closed_by_server(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(common::WAIT, s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_capped_and_silent_ones_closed() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    const BINDING_SUCCESS: u16 = 0x0101;
    let cfg = RelayConfig { max_tcp_connections: 2, tcp_hello_timeout: Duration::from_millis(500), ..test_config(false) };
    let server = RelayServer::start(&cfg, None).await.unwrap();
    let addr = server.tcp_addrs[0];

    // Two clients: one talks (and keeps its slot), one stays silent.
    let mut talker = TcpStream::connect(addr).await.unwrap();
    talker.write_all(&binding_request(1)).await.unwrap();
    assert_eq!(read_stun_type(&mut talker).await, BINDING_SUCCESS);
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // The third is over the cap and is closed at once.
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_server(&mut third).await, "a connection beyond max-tcp-connections is closed");
    assert_eq!(TurnStats::get(&server.stats.tcp_refused), 1);

    // The silent one is closed after the hello timeout, which frees its slot.
    assert!(closed_by_server(&mut silent).await, "a silent connection is closed");
    assert_eq!(TurnStats::get(&server.stats.tcp_silent_closed), 1);
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while TurnStats::get(&server.stats.tcp_connections) != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the silent connection's slot was not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut next = TcpStream::connect(addr).await.unwrap();
    next.write_all(&binding_request(2)).await.unwrap();
    assert_eq!(read_stun_type(&mut next).await, BINDING_SUCCESS, "a freed slot serves a new client");

    // The talker was past its hello and is still served.
    talker.write_all(&binding_request(3)).await.unwrap();
    assert_eq!(read_stun_type(&mut talker).await, BINDING_SUCCESS);
    server.shutdown().await;
}
