//! The official OpenAI SDKs, unmodified, against the real server (PROTOCOL §8, issue 19). Only
//! the base URLs differ from an app talking to OpenAI.
//!
//! - Python (`openai` 3.60, tests/sdk/python/interop.py): `client_secrets.create`,
//!   `realtime.connect` over `ws://` (a spoken turn from the speech fixture answered with audio
//!   deltas, a text turn answered with text), `calls.create` (multipart) with an aiortc WebRTC
//!   peer whose turn is answered on its track, and `calls.hangup`. It lives in a venv under the
//!   target directory (`target/sdk-venv`, pinned by tests/sdk/python/requirements.txt), which
//!   `.ci/run` creates when missing; by hand: `python3 -m venv target/sdk-venv &&
//!   target/sdk-venv/bin/pip install -r tests/sdk/python/requirements.txt`.
//! - npm (`openai` 6.49, tests/sdk/node/interop.mjs, pinned in its package-lock.json; `npm ci`
//!   in tests/sdk/node): `clientSecrets.create`, `OpenAIRealtimeWS` (the same two turns) and
//!   `calls.hangup`. The npm SDK always opens `wss://`, so it goes through a TLS-terminating
//!   proxy started here (what a deployment puts in front of voxrelay), its certificate trusted
//!   with NODE_EXTRA_CA_CERTS. (6.49 has no `calls.create`: the call it hangs up is started by
//!   the Rust client.)
//!
//! Without the SDKs the tests fail saying how to install them; `VOXRELAY_SKIP_SDK=1` skips
//! them (with a notice).

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The whole SDK run: a spoken turn over the socket (≈ 5 s of audio paced in real time), a text
/// turn, a WebRTC call with its turn, on a possibly loaded 2-core machine.
const SDK_BUDGET: Duration = Duration::from_secs(120);

fn skipped() -> bool {
    let skip = std::env::var("VOXRELAY_SKIP_SDK").as_deref() == Ok("1");
    if skip {
        eprintln!("NOTICE: VOXRELAY_SKIP_SDK=1: the official-SDK interop test is skipped");
    }
    skip
}

/// Runs `program args`, bounded by [`SDK_BUDGET`]; returns the last stdout line as JSON after
/// checking the run succeeded.
async fn run_sdk(mut cmd: std::process::Command) -> Value {
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("the SDK runtime starts");
    let pid = child.id() as libc::pid_t;
    let out = match tokio::time::timeout(SDK_BUDGET, tokio::task::spawn_blocking(move || child.wait_with_output())).await {
        Ok(out) => out.unwrap().unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the child this test started; no memory is touched.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the SDK run took longer than {SDK_BUDGET:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the SDK run failed ({}):\n{stderr}\n{stdout}", out.status);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Waits until no call is live (a hangup took effect).
async fn until_no_calls(server: &voxrelay::RunningServer) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.engine.live_calls() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "calls left after the SDK run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn venv_python() -> PathBuf {
    if let Some(p) = std::env::var_os("VOXRELAY_SDK_PYTHON") {
        return p.into();
    }
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory").join("sdk-venv/bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_works_unmodified() {
    if skipped() {
        return;
    }
    let python = venv_python();
    assert!(
        python.exists(),
        "{} is missing: the official openai SDK is needed for this test. Create it with\n  \
         python3 -m venv {venv} && {venv}/bin/pip install -r tests/sdk/python/requirements.txt\n\
         (.ci/run does this), or set VOXRELAY_SKIP_SDK=1 to skip the test",
        python.display(),
        venv = python.parent().and_then(|p| p.parent()).unwrap().display(),
    );
    let server = start_server().await;
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(format!("{root}/tests/sdk/python/interop.py")).arg(server.url()).arg(API_KEY).arg(format!("{root}/tests/fixtures/speech.wav"));
    let summary = run_sdk(cmd).await;
    eprintln!("SDK_INTEROP_PYTHON={summary}");
    // What the script checked, restated where the numbers matter.
    let (echoed, spoken) = (summary["ws_echoed_ms"].as_i64().unwrap(), summary["ws_speech_ms"].as_i64().unwrap());
    assert!((echoed - spoken).abs() < 600, "echoed {echoed} ms of a {spoken} ms turn over the socket");
    assert_eq!(summary["text"], "hello from python");
    assert!(summary["call_voiced_frames"].as_i64().unwrap() > 20, "{summary}");
    until_no_calls(&server).await;
    server.shutdown().await;
}

/// A TLS-terminating proxy on 127.0.0.1 in front of `upstream` (a self-signed certificate for
/// `localhost`); returns its port and the certificate (PEM) for the client to trust.
async fn tls_proxy(upstream: std::net::SocketAddr) -> (u16, String) {
    voxrelay::install_tls_provider();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert.cert.der().clone()], key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let (Ok(mut tls), Ok(mut plain)) = (acceptor.accept(tcp).await, tokio::net::TcpStream::connect(upstream).await) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, cert.cert.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_npm_sdk_works_unmodified() {
    if skipped() {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let sdk = PathBuf::from(root).join("tests/sdk/node");
    assert!(
        sdk.join("node_modules/openai/package.json").exists() && std::process::Command::new("node").arg("--version").output().is_ok(),
        "the npm openai SDK is needed for this test: Node.js >= 20 and `npm ci` in {} (.ci/run does this), \
         or set VOXRELAY_SKIP_SDK=1 to skip the test",
        sdk.display()
    );
    let server = start_server().await;
    let upstream: std::net::SocketAddr = server.url().trim_start_matches("http://").parse().unwrap();
    let (port, cert_pem) = tls_proxy(upstream).await;
    let cert_path = std::env::temp_dir().join(format!("voxrelay-sdk-proxy-{}.pem", std::process::id()));
    std::fs::write(&cert_path, cert_pem).unwrap();
    // A live WebRTC call for the SDK's calls.hangup.
    let call = Call::connect_with(&server.url(), "/v1/realtime/calls", API_KEY, ClientOptions::default()).await;
    let call_id = call.location.rsplit('/').next().unwrap().to_string();

    let mut cmd = std::process::Command::new("node");
    cmd.current_dir(&sdk)
        .env("NODE_EXTRA_CA_CERTS", &cert_path)
        .arg("interop.mjs")
        .arg(format!("https://localhost:{port}"))
        .arg(API_KEY)
        .arg(format!("{root}/tests/fixtures/speech.wav"))
        .arg(&call_id);
    let summary = run_sdk(cmd).await;
    eprintln!("SDK_INTEROP_NODE={summary}");
    let (echoed, spoken) = (summary["ws_echoed_ms"].as_i64().unwrap(), summary["ws_speech_ms"].as_i64().unwrap());
    assert!((echoed - spoken).abs() < 600, "echoed {echoed} ms of a {spoken} ms turn over wss://");
    assert_eq!(summary["text"], "hello from node");
    until_no_calls(&server).await;
    call.close().await;
    let _ = std::fs::remove_file(&cert_path);
    server.shutdown().await;
}
