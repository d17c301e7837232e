//! The `voxrelay serve` binary as an operator runs it: no configuration, a generated API key
//! printed once and stored (0600) in the data directory, one log line saying where it
//! listens, and SIGTERM draining live calls (not ready, no new calls, clean exit).

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{LoggedServer, serve, sigterm, wait_exit};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_generates_a_key_and_drains_on_sigterm() {
    let data_dir = std::env::temp_dir().join(format!("voxrelay-cli-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_voxrelay"))
        .args(["serve", "--listen", "127.0.0.1:0", "--drain-grace-secs", "60", "--log-format", "json"])
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
        } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(addr) = v["fields"]["addr"].as_str()
        {
            base = Some(format!("http://{addr}"));
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

    // SIGTERM: not ready, no new calls; the live call goes on, and the process exits 0 once it ends.
    sigterm(&child);
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
    // The live call is told how long it has.
    let ending = call.expect("session.ending").await;
    assert_eq!((ending["reason"].as_str(), ending["seconds_left"].as_u64()), (Some("server_draining"), Some(60)), "{ending}");

    // The live call keeps its audio: a turn spoken after SIGTERM is answered to its end.
    call.speak_turn(300);
    let done = call.expect("response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    call.wait_voiced(50).await;
    // Hanging up ends the drain: with a 60 s grace only that lets the process exit within WAIT.
    call.close().await;

    let exited = tokio::task::spawn_blocking(move || wait_exit(child)).await.unwrap();
    let status = exited.expect("server exits once its last call ended");
    assert!(status.success(), "clean exit, got {status}");
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_the_drain_at_once() {
    let (child, base, _) = serve(&["--listen", "127.0.0.1:0", "--api-key", API_KEY, "--drain-grace", "10m"], &[]).await;
    let mut call = Call::connect(&base, "/v1/realtime", API_KEY).await;
    call.expect("session.created").await;
    sigterm(&child);
    let deadline = tokio::time::Instant::now() + WAIT;
    while http().get(format!("{base}/readyz")).send().await.unwrap().status() != 503 {
        assert!(tokio::time::Instant::now() < deadline, "never started draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigterm(&child);
    // The grace period is 10 minutes; only the second signal can end the process within WAIT.
    let status = tokio::task::spawn_blocking(move || wait_exit(child)).await.unwrap().expect("exits on the second SIGTERM");
    assert_eq!(status.code(), Some(143), "{status}");
    call.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_dribbling_a_request_do_not_hold_up_the_drain() {
    use tokio::io::AsyncWriteExt;
    let (child, base, _) = serve(&["--listen", "127.0.0.1:0", "--api-key", API_KEY, "--drain-grace", "1s"], &[]).await;
    let addr = base.trim_start_matches("http://").to_string();
    // One sends its headers a byte at a time, one its body; neither ever finishes.
    let head = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_string();
    let body = format!(
        "POST /v1/realtime/client_secrets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n{{"
    );
    let mut dribblers = Vec::new();
    for start in [head, body] {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(start.as_bytes()).await.unwrap();
        dribblers.push(tokio::spawn(async move {
            for _ in 0..600 {
                if tcp.write_all(b"a").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(http().get(format!("{base}/healthz")).send().await.unwrap().status(), 200, "others are served meanwhile");
    sigterm(&child);
    // The grace is 1 s and no call is live; the dribblers (a minute of bytes each) must not keep
    // the process.
    let status = tokio::task::spawn_blocking(move || wait_exit(child)).await.unwrap().expect("exits while clients dribble");
    assert_eq!(status.code(), Some(0), "{status}");
    for d in dribblers {
        d.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_sits_under_environment_and_flags() {
    let dir = std::env::temp_dir().join(format!("voxrelay-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("voxrelay.toml");
    // A listen address this machine does not have: only the flag can make the server start.
    std::fs::write(&file, "listen = \"192.0.2.1:8080\"\napi_key = \"sk_from_file\"\nmax_calls = 3\n").unwrap();
    let (mut child, base, listening) =
        serve(&["--config", file.to_str().unwrap(), "--listen", "127.0.0.1:0"], &[("VOXRELAY_API_KEY", "sk_from_env")]).await;
    assert_eq!(listening["fields"]["max_calls"], 3, "file over default: {listening}");
    let session = |key: &'static str| http().post(format!("{base}/v1/realtime/sessions")).bearer_auth(key).json(&json!({})).send();
    assert_eq!(session("sk_from_env").await.unwrap().status(), 200, "env over file");
    assert_eq!(session("sk_from_file").await.unwrap().status(), 401);
    let _ = child.kill();
    let _ = child.wait();

    // `config check` finds the same mistakes without starting anything.
    let check = |path: &std::path::Path| Command::new(env!("CARGO_BIN_EXE_voxrelay")).args(["config", "check"]).arg(path).output().unwrap();
    let ok = check(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/voxrelay.example.toml")));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK"));
    std::fs::write(&file, "max_calls = 3\nrtc_ports = \"20000-10000\"\n").unwrap();
    let bad = check(&file);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("voxrelay.toml") && err.contains("rtc_ports"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn token_mints_room_tokens_offline_with_the_servers_key() {
    let data_dir = std::env::temp_dir().join(format!("voxrelay-token-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_voxrelay"))
            .args(["token", "--room", "standup", "--identity", "alice", "--ttl", "30m"])
            .args(extra)
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("VOXRELAY_API_KEY")
            .output()
            .expect("voxrelay binary runs")
    };
    // No key anywhere: a clear error, no token, and no key file made up on the spot.
    let out = run(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no API key"), "{}", String::from_utf8_lossy(&out.stderr));
    // With the key file a server wrote: a token the server accepts, with the grants asked for.
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("api_key"), "vr_cli_key\n").unwrap();
    let out = run(&["--no-publish"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let now = voxrelay_signaling::auth::unix_now();
    let claims = voxrelay_signaling::room_token::RoomTokens::new("vr_cli_key").verify(token.trim(), now).unwrap();
    assert_eq!((claims.sub.as_str(), claims.room.name.as_str()), ("alice", "standup"));
    assert!(!claims.room.publish && claims.room.subscribe && claims.room.publish_data && !claims.room.admin);
    assert!((claims.exp - now).abs_diff(1800) <= 5);
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirected_text_logs_are_plain_and_a_healthy_call_logs_no_warnings() {
    let server = LoggedServer::start(&["--listen", "127.0.0.1:0", "--api-key", API_KEY], false).await;
    let base = server.base.clone();
    // One whole echo turn over WebRTC.
    let secret = client_secret(&base, serde_json::json!({})).await;
    let mut c = Call::connect(&base, "/v1/realtime", &secret).await;
    c.say(&speech());
    c.say(&silence_ms(1500));
    c.expect("response.done").await;
    c.close().await;
    let lines = server.stop().await.expect("the server exits on SIGTERM");
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "ANSI escapes in redirected logs: {lines:#?}");
    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains(" WARN ")).collect();
    assert!(warnings.is_empty(), "a healthy call logged warnings: {warnings:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_or_secret_reaches_a_log_line_or_an_error_body() {
    let args = ["--listen", "127.0.0.1:0", "--api-key", API_KEY, "--log-level", "debug,rtc=info,webrtc=info,hyper=info"];
    let server = LoggedServer::start(&args, true).await;
    let base = server.base.clone();
    let secret = client_secret(&base, json!({})).await;
    let mut bodies = Vec::new();
    // Almost the key, the secret where the key is needed, a secret used twice, and a secret
    // on every route a secret may not use.
    let near_miss = format!("{}x", &API_KEY[..API_KEY.len() - 1]);
    let mut c = Call::connect(&base, "/v1/realtime", &secret).await;
    c.expect("session.created").await;
    let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n";
    let requests = [
        http().post(format!("{base}/v1/realtime/sessions")).bearer_auth(&near_miss).json(&json!({})),
        http().post(format!("{base}/v1/realtime/sessions")).bearer_auth(&secret).json(&json!({})),
        http().post(format!("{base}/v1/realtime/client_secrets")).bearer_auth(&secret).json(&json!({})),
        http().post(format!("{base}/v1/rooms/r1/tokens")).bearer_auth(&secret).json(&json!({"identity": "x"})),
        http().get(format!("{base}/v1/rooms")).bearer_auth(&secret),
        http().post(format!("{base}/v1/rtp")).bearer_auth(&secret).json(&json!({})),
        http().get(format!("{base}/v1/calls/rtc_nope/events")).bearer_auth(&secret),
        http().get(format!("{base}/v1/calls")).bearer_auth(&secret),
        http().get(format!("{base}/v1/calls/rtc_nope")).bearer_auth(&secret),
        http().get(format!("{base}/v1/realtime?call_id=rtc_nope")).bearer_auth(&secret),
        http().post(format!("{base}/v1/realtime")).bearer_auth(&secret).header("content-type", "application/sdp").body(offer),
        http().post(format!("{base}/v1/realtime")).bearer_auth(format!("{secret}0")).header("content-type", "application/sdp").body(offer),
    ];
    for req in requests {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert!([400, 401, 403, 429].contains(&status), "a secret is refused here: {status} {body}");
        bodies.push(body);
    }
    c.close().await;
    let lines = server.stop().await.expect("the server exits on SIGTERM");
    assert!(lines.len() > 10, "the debug log was read: {lines:#?}");
    for text in lines.iter().chain(&bodies) {
        for (what, value) in [("API key", API_KEY), ("near-miss key", near_miss.as_str()), ("client secret", secret.as_str())] {
            assert!(!text.contains(value), "the {what} appears in: {text}");
        }
    }
}
