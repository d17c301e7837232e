//! The `voxrelay serve` binary as an operator runs it: no configuration, a generated API key
//! printed once and stored (0600) in the data directory, one log line saying where it
//! listens, and SIGTERM draining live calls (not ready, no new calls, clean exit).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_generates_a_key_and_drains_on_sigterm() {
    let data_dir = std::env::temp_dir().join(format!("voxrelay-cli-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_voxrelay"))
        .args(["serve", "--listen", "127.0.0.1:0", "--drain-grace-secs", "2", "--log-format", "json"])
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("VOXRELAY_API_KEY")
        .env_remove("VOXRELAY_LISTEN")
        .stdout(Stdio::piped())
        .spawn()
        .expect("voxrelay binary runs");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut key = None;
    let mut base = None;
    while key.is_none() || base.is_none() {
        let line = tokio::time::timeout(WAIT, lines.recv()).await.expect("server output").expect("server running");
        if let Some(rest) = line.strip_prefix("Generated API key") {
            key = rest.rsplit(": ").next().map(str::to_string);
        } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if let Some(addr) = v["fields"]["addr"].as_str() {
                base = Some(format!("http://{addr}"));
            }
        }
    }
    let (key, base) = (key.unwrap(), base.unwrap());
    let stored = std::fs::read_to_string(data_dir.join("api_key")).unwrap();
    assert_eq!(stored.trim(), key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data_dir.join("api_key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is private");
    }

    assert_eq!(http().get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    let resp = http().post(format!("{base}/v1/realtime/sessions")).bearer_auth(&key).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut call = Call::connect(&base, "/v1/realtime", &key).await;
    call.expect("session.created").await;

    // SIGTERM: not ready, no new calls, then a clean exit once the grace period ends the call.
    // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM delivered");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ready = http().get(format!("{base}/readyz")).send().await.unwrap();
        if ready.status() == 503 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never stopped being ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = http()
        .post(format!("{base}/v1/realtime"))
        .bearer_auth(&key)
        .header("content-type", "application/sdp")
        .body("v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.json::<serde_json::Value>().await.unwrap()["error"]["code"], "overloaded");

    let exited = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let status = exited.expect("server exits after the drain");
    assert!(status.success(), "clean exit, got {status}");
    call.close().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
