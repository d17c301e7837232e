//! The sound-device path of `voxrelay-talk` (built with `--features devices`) against ALSA's
//! `null` device: an `.asoundrc` in a scratch HOME makes `default` a null PCM (capture gives
//! silence, playback discards), so the device path opens, streams through a real echo call and
//! closes on a machine without sound hardware, as in CI. The null PCM keeps no time (its
//! callbacks run as fast as they are served), so this also shows the rings dropping instead of
//! blocking and the call sending at its own 20 ms pace.
#![cfg(feature = "devices")]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const API_KEY: &str = "sk_test_voxrelay";

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn null_home() -> PathBuf {
    let home = std::env::temp_dir().join(format!("voxrelay-talk-alsa-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join(".asoundrc"), "pcm.!default { type null }\nctl.!default { type hw card 0 }\n").unwrap();
    home
}

/// Runs `voxrelay-talk ARGS` with the null device as default (bounded: killed after a minute).
async fn talk(home: PathBuf, args: Vec<String>) -> Ran {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_voxrelay-talk"))
            .args(&args)
            .env("HOME", &home)
            .env_remove("VOXRELAY_API_KEY")
            .env_remove("VOXRELAY_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("voxrelay-talk runs");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().ok();
                panic!("voxrelay-talk did not finish in a minute");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (mut stdout, mut stderr) = (String::new(), String::new());
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        Ran { code: status.code(), stdout, stderr }
    })
    .await
    .unwrap()
}

/// Waits (bounded) until the terminal output so far contains `what`.
fn screen_shows(screen: &std::sync::Mutex<String>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !screen.lock().unwrap().contains(what) {
        assert!(Instant::now() < deadline, "the screen never showed {what:?}:\n{}", screen.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The live view and its keys on a real terminal: `script` (util-linux) runs voxrelay-talk on a
/// pseudo-terminal and passes it the keys written to its stdin. Push-to-talk: space starts the
/// turn, space sends it (the server commits and answers), `q` quits.
fn push_to_talk_on_a_terminal(home: PathBuf, url: String) -> String {
    use std::io::Write;
    let command = format!("{} --url {url} --api-key {API_KEY} --agent echo --push-to-talk", env!("CARGO_BIN_EXE_voxrelay-talk"));
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("HOME", &home)
        .env("COLUMNS", "100")
        .env_remove("VOXRELAY_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let copy = screen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            copy.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut keys = child.stdin.take().unwrap();
    screen_shows(&screen, "you   press space to talk");
    assert!(screen.lock().unwrap().contains("space talk/send · m mute · q quit"));
    keys.write_all(b" ").unwrap();
    screen_shows(&screen, "you   talking (space sends)");
    keys.write_all(b"m").unwrap();
    screen_shows(&screen, "MUTED");
    keys.write_all(b"m").unwrap();
    keys.write_all(b" ").unwrap();
    screen_shows(&screen, "you: turn sent");
    screen_shows(&screen, "agent: answering");
    keys.write_all(b"q").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("q did not end voxrelay-talk:\n{}", screen.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    let screen = screen.lock().unwrap().clone();
    assert!(status.success(), "exit {status:?}:\n{screen}");
    screen
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_null_device_opens_streams_through_a_call_and_closes() {
    voxrelay::install_tls_provider();
    let mut cfg = voxrelay::ServeConfig::defaults();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.api_key = Some(API_KEY.into());
    cfg.database = Some(":memory:".into());
    cfg.providers = Some(voxrelay::agent::Providers::resolve_with(&Default::default(), &|_| None).unwrap());
    let server = voxrelay::start(cfg).await.expect("server starts");
    let home = null_home();

    let ran = talk(home.clone(), args(&["--list-devices"])).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    for line in ["input   default", "output  default", "default input: "] {
        assert!(ran.stdout.lines().any(|l| l.starts_with(line)), "no {line:?} in:\n{}", ran.stdout);
    }

    // A two-second echo call on the default (null) microphone and speaker.
    let ran = talk(home.clone(), args(&["--url", &server.url(), "--api-key", API_KEY, "--agent", "echo", "--duration", "2"])).await;
    assert_eq!(ran.code, Some(0), "stdout:\n{}\nstderr:\n{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("using microphone ") && ran.stderr.contains(", speaker "), "{}", ran.stderr);
    assert!(ran.stdout.contains("connected: agent echo") && ran.stdout.contains("hung up: sent"), "{}", ran.stdout);
    // The microphone streamed: about two seconds were sent (null capture is silence).
    let sent: f64 = ran.stdout.split("sent ").nth(1).and_then(|s| s.split(' ').next()).and_then(|s| s.parse().ok()).unwrap();
    assert!(sent >= 1.0, "only {sent} s of microphone audio sent:\n{}", ran.stdout);

    // The live view on a terminal, driven by keys.
    let url = server.url();
    let home_t = home.clone();
    let screen = tokio::task::spawn_blocking(move || push_to_talk_on_a_terminal(home_t, url)).await.unwrap();
    assert!(screen.contains("hung up: sent"), "the last line, after the terminal is restored:\n{screen}");

    // A device that is not there is named, with what there is.
    let ran = talk(home.clone(), args(&["--url", &server.url(), "--api-key", API_KEY, "--input-device", "no such mic"])).await;
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("no input device named \"no such mic\"; found:"), "{}", ran.stderr);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.engine.live_calls() != 0 {
        assert!(Instant::now() < deadline, "the call outlived the client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_dir_all(&home).ok();
    server.shutdown().await;
}
