//! The embedded web page driven by a real headless Chromium (tests/browser/*.mjs through npm
//! playwright-core and Debian's /usr/bin/chromium) with a fake microphone: a call with the echo
//! agent (page_e2e.mjs), and two participants in one room (room_e2e.mjs). Missing browser
//! tooling fails the tests with install instructions; `VOXRELAY_SKIP_BROWSER=1` skips them,
//! saying so. The page's HTTP side (headers, helpers) is checked in web_page.rs.

use crate::common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use voxrelay_signaling::web::PAGE_WEIGHT_BYTES;

/// A whole browser run (Chromium start, one echo turn or a room visit, hang-up) is bounded by this.
/// Chromium alone may take 20 s and more to start on a loaded 2-core CI machine (its launch is
/// given 45 s).
const BROWSER_BUDGET: Duration = Duration::from_secs(120);

/// One Chromium at a time: the browser tests run in parallel threads of this binary, and two
/// browsers decoding and encoding audio on a small machine would make each other late.
static ONE_BROWSER: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

const INSTALL: &str = "install them with `.ci/run` (does all of this), or by hand: \
     `apt-get install -y chromium nodejs npm && (cd tests/browser && npm ci)`; \
     or set VOXRELAY_SKIP_BROWSER=1 to skip the browser test (it is then NOT run)";

/// Chromium, node and playwright-core, or a message saying which are missing.
fn browser_tooling(dir: &Path) -> Result<PathBuf, String> {
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let mut missing = Vec::new();
    if !chromium.is_file() {
        missing.push(format!("Chromium at {} (Debian package `chromium`; or set CHROMIUM)", chromium.display()));
    }
    let node = Command::new("node").arg("--version").output().ok().filter(|o| o.status.success());
    let major = node
        .as_ref()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().trim_start_matches('v').split('.').next()?.parse::<u32>().ok());
    match major {
        None => missing.push("`node` on PATH (Debian packages `nodejs npm`)".into()),
        // playwright-core's `engines`; Debian 12's own nodejs is 18 (NodeSource or Debian 13 have 20+).
        Some(m) if m < 20 => missing.push(format!("Node.js >= 20 for playwright-core (found {m})")),
        Some(_) => {}
    }
    if !dir.join("node_modules/playwright-core/package.json").is_file() {
        missing.push(format!("npm playwright-core in {}/node_modules (`npm ci` there)", dir.display()));
    }
    if missing.is_empty() { Ok(chromium) } else { Err(format!("browser test prerequisites missing: {}; {INSTALL}", missing.join(", "))) }
}

/// Runs the node script in its own process group; kills the group (node and Chromium) if it
/// overruns `budget`. Returns (exit code, stdout, stderr).
fn run_node(dir: &Path, script: &str, env: &[(&str, String)], budget: Duration) -> (Option<i32>, String, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("node");
    cmd.arg(script).current_dir(dir).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("node starts");
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + budget;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the process group we created for the child.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

/// `<target>/test-artifacts`, next to `<target>/tmp`.
fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("test-artifacts")
}

fn skip_browser(what: &str) -> bool {
    let skip = std::env::var("VOXRELAY_SKIP_BROWSER").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("NOTICE: VOXRELAY_SKIP_BROWSER=1: the real-browser test of the web page ({what}) is SKIPPED");
    }
    skip
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_page_call_shows_turns_transcript_and_agent_audio() {
    if skip_browser("a call") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = browser_tooling(&dir).unwrap_or_else(|msg| panic!("{msg}"));
    let _one_browser = ONE_BROWSER.lock().await;
    let shot = artifacts().join("browser-call.png");
    let _ = std::fs::remove_file(&shot);

    let server = start_server().await;
    let env = vec![
        ("VOXRELAY_URL", server.url()),
        ("E2E_SCREENSHOT", shot.display().to_string()),
        ("CHROMIUM", chromium.display().to_string()),
        ("E2E_TIMEOUT_MS", (BROWSER_BUDGET.as_millis() - 10_000).to_string()),
        // Lets the script drop the call server-side mid-way, to see the page reconnect.
        ("VOXRELAY_API_KEY", API_KEY.to_string()),
    ];
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || run_node(&dir, "page_e2e.mjs", &env, BROWSER_BUDGET)).await.unwrap();
    let s: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("page_e2e.mjs printed no JSON summary ({e}); exit {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    let ctx = || format!("\nsummary: {}", serde_json::to_string_pretty(&s).unwrap());
    assert_eq!(status, Some(0), "page_e2e.mjs did not complete{}", ctx());
    assert_eq!(s["errors"], json!([]), "{}", ctx());

    // Voice activity as the page showed it: speaking, then stopped, then committed.
    let turns: Vec<&str> = s["turn_states"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let at = |state: &str| turns.iter().position(|t| *t == state).unwrap_or_else(|| panic!("turn state {state} never shown: {turns:?}"));
    assert!(at("speaking") < at("stopped") && at("stopped") < at("committed"), "{turns:?}");
    assert!(turns.iter().filter(|t| **t == "committed").count() >= 2, "two turns expected: {turns:?}");
    let types: Vec<&str> = s["event_types"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for t in [
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "response.done",
        "output_audio_buffer.cleared",
        "conversation.item.truncated",
    ] {
        assert!(types.contains(&t), "{t} not in the page's event log: {types:?}");
    }

    // The conversation: the caller spoke again while the first echo played (page_e2e.mjs's fake
    // microphone), so the first answer is shown interrupted, and the second completes with
    // "[echo N s]", N the fixture's length.
    let call = &s["during_call"];
    let conv = call["conversation"].as_array().unwrap();
    let barged = conv
        .iter()
        .position(|e| e["role"] == "agent" && e["status"] == "cancelled")
        .unwrap_or_else(|| panic!("no interrupted answer{}", ctx()));
    assert_eq!(conv[barged]["meta"], "interrupted (barge-in)");
    assert!(conv[barged + 1..].iter().any(|e| e["role"] == "agent" && e["status"] == "completed"), "no answer after the barge-in{}", ctx());
    let user = conv
        .iter()
        .find(|e| e["role"] == "user" && e["status"] == "committed")
        .unwrap_or_else(|| panic!("no committed user turn{}", ctx()));
    let user_secs: f64 = user["meta"].as_str().unwrap().trim_end_matches(" s").parse().unwrap();
    let agent = conv
        .iter()
        .find(|e| e["role"] == "agent" && e["status"] == "completed")
        .unwrap_or_else(|| panic!("no completed agent turn{}", ctx()));
    let echo_secs: f64 = agent["text"]
        .as_str()
        .and_then(|t| t.strip_prefix("[echo ")?.strip_suffix(" s]")?.parse().ok())
        .unwrap_or_else(|| panic!("agent text {} is not \"[echo N s]\"", agent["text"]));
    // speech.wav is 2.78 s of speech; the turn holds it plus VAD padding.
    assert!((2.5..=4.0).contains(&echo_secs) && (2.5..=4.0).contains(&user_secs), "echo {echo_secs} s, user turn {user_secs} s");

    // The agent-speaking indicator went on, then off.
    let speaking: Vec<&str> = s["agent_speaking"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let on = speaking.iter().position(|v| *v == "true").unwrap_or_else(|| panic!("agent never shown speaking: {speaking:?}"));
    assert!(speaking[on..].contains(&"false"), "agent never shown silent again: {speaking:?}");

    // getStats(): the agent's audio reached the browser after the turn (silent before it).
    let g = &s["getstats"];
    assert!(
        f(&g["total_audio_energy_end"]) > f(&g["total_audio_energy_at_speech_stopped"]) + 1e-3,
        "no inbound audio energy from the agent: {g}"
    );
    assert!(f(&g["audio_level_max"]) > 0.01, "{g}");
    assert!(s["mic_meter_max"].as_f64().unwrap() > 0.0, "the input level meter never moved");

    // Chromium honours the answer's usedtx=1: its fake microphone's silences arrive as DTX
    // (one DTX packet, then nothing), which the server plays as silence without decoding. Its
    // bandwidth probes (RTP padding without payload) are passed over, not decoded as bad
    // packets.
    let media = server.engine.media_totals();
    println!("BROWSER_MEDIA {media:?}");
    assert!(media.dtx_frames > 0, "Chromium sent no DTX: {media:?}");
    assert_eq!(media.codec_errors, 0, "{media:?}");

    // The page's stats panel shows numbers.
    let st = &call["stats"];
    for key in ["rtt_ms", "jitter_ms", "loss_pct", "bitrate_in_kbps", "agent_level"] {
        assert!(f(&st[key]["value"]).is_finite() && f(&st[key]["value"]) >= 0.0, "stats panel {key}: {}", st[key]);
    }
    assert!(f(&st["bitrate_in_kbps"]["value"]) > 0.0 && f(&st["bitrate_out_kbps"]) > 0.0 && f(&st["agent_energy"]) > 0.0, "{st}");
    assert!((0.0..=100.0).contains(&f(&st["loss_pct"]["value"])), "{st}");
    assert!(st["codec"].as_str().unwrap().contains("opus"), "{st}");
    assert_eq!(call["status"]["phase"], "connected", "{}", ctx());
    assert_eq!(call["error"], Value::Null, "{}", ctx());
    assert!(call["horizontal_overflow_px"].as_i64().unwrap() <= 0, "the page scrolls sideways on a phone-sized viewport");

    // The network changed: the page restarted ICE on the same call (PATCH 200 with a new
    // ETag), with no new peer connection or session, and the next turn was answered.
    let ice = &s["ice_restart"];
    assert_eq!(ice["patches"].as_array().map(Vec::len), Some(1), "one PATCH: {ice} {}", ctx());
    assert_eq!(ice["patches"][0]["status"], 200, "{ice}");
    assert!(ice["patches"][0]["etag"].as_str().is_some_and(|e| e.starts_with('"')), "{ice}");
    assert_eq!((ice["new_peer_connections"].as_u64(), ice["sessions_created_since"].as_u64()), (Some(0), Some(0)), "{ice}");
    assert!(ice["echoes_after"].as_u64() > ice["echoes_before"].as_u64(), "no turn answered after the restart: {ice}");
    assert_eq!(ice["connection"], "connected", "{ice}");

    // The server dropped the call: the page said so and started a new call by itself.
    assert_eq!(s["server_drop"]["status"], 200, "{}", ctx());
    let phases: Vec<&str> = s["phases"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let first_up = phases.iter().position(|p| *p == "connected").unwrap_or_else(|| panic!("never connected: {phases:?}"));
    let retry =
        first_up + phases[first_up..].iter().position(|p| *p == "reconnecting").unwrap_or_else(|| panic!("no reconnect: {phases:?}"));
    assert!(phases[retry..].contains(&"connected"), "not connected again after the drop: {phases:?}");
    assert_eq!(s["peer_connections"], 2, "one new peer connection for the reconnect");
    let notes: Vec<&str> = s["after_reconnect"]["conversation"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["role"] == "note")
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(notes.iter().any(|n| n.starts_with("Call dropped")) && notes.iter().any(|n| n.starts_with("Reconnected")), "{notes:?}");
    assert_eq!(s["after_reconnect"]["status"]["phase"], "connected");

    // A deliberate hang-up shows no error (Chrome's "User-Initiated Abort" is not one) and ends
    // the call on the server.
    let after = &s["after_disconnect"];
    assert_eq!((after["status"]["phase"].as_str(), &after["error"]), (Some("idle"), &Value::Null), "{}", ctx());
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.engine.live_calls() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the call is still live after the page hung up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Chromium sends RFC 6464 audio levels once the answer keeps its extmap (rooms rank
    // speakers by them): on every audio packet.
    let metrics = &server.engine.metrics;
    let (levels, packets) = (metrics.rtp_audio_levels_in.load(Ordering::Relaxed), metrics.rtp_packets_in.load(Ordering::Relaxed));
    assert!(levels * 2 > packets && levels <= packets, "audio levels on {levels} of {packets} inbound packets");
    // An agent the server has not configured: a clear error, no retrying.
    let bad = &s["unconfigured_agent"];
    assert_eq!(bad["status"]["phase"], "error", "{}", ctx());
    let msg = bad["error"].as_str().unwrap_or_default();
    assert!(msg.contains("openai-realtime") && msg.contains("not configured"), "error shown: {msg:?}");
    assert_eq!(phases.last(), Some(&"error"), "the page retried an unconfigured agent: {phases:?}");

    // Microphone permission denied: said so, not retried.
    let denied = &s["mic_denied"];
    assert_eq!(denied["status"]["phase"], "error", "{}", ctx());
    assert!(denied["error"].as_str().unwrap_or_default().starts_with("Microphone access was denied"), "{}", denied["error"]);

    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("screenshot {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");

    let t = &s["timing_ms"];
    eprintln!(
        "browser page: Chromium {}, page weight {PAGE_WEIGHT_BYTES} bytes, Connect → session.created {} ms, \
         speech_stopped → first agent audio in getStats {} ms, server drop → reconnected session.created {} ms, screenshot {}",
        s["chromium"],
        t["click_to_session_created"],
        t["speech_stopped_to_first_agent_audio"],
        t["server_drop_to_session_created"],
        shot.display()
    );
    server.shutdown().await;
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_room_two_participants_hear_each_other() {
    if skip_browser("room mode") {
        return;
    }
    const ROOM: &str = "e2e-room";
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = browser_tooling(&dir).unwrap_or_else(|msg| panic!("{msg}"));
    let _one_browser = ONE_BROWSER.lock().await;
    let shot = artifacts().join("browser-room.png");
    let _ = std::fs::remove_file(&shot);

    let server = start_server().await;
    let base = server.url();
    let env = vec![
        ("VOXRELAY_URL", base.clone()),
        ("E2E_ROOM", ROOM.to_string()),
        ("E2E_SCREENSHOT", shot.display().to_string()),
        ("CHROMIUM", chromium.display().to_string()),
        ("E2E_TIMEOUT_MS", (BROWSER_BUDGET.as_millis() - 10_000).to_string()),
    ];
    let started = Instant::now();
    let mut node = tokio::task::spawn_blocking(move || run_node(&dir, "room_e2e.mjs", &env, BROWSER_BUDGET));
    // While the pages are in the room, the room API (API key) lists them: polled, the fullest
    // listing kept.
    let mut listed: Vec<String> = Vec::new();
    let mut listing = Value::Null;
    let (status, stdout, stderr) = loop {
        tokio::select! {
            out = &mut node => break out.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let resp = http().get(format!("{base}/v1/rooms/{ROOM}")).bearer_auth(API_KEY).send().await.unwrap();
                if resp.status() != 200 {
                    continue;
                }
                let v: Value = resp.json().await.unwrap();
                let ids: Vec<String> = v["participants"].as_array().unwrap().iter().filter_map(|p| p["identity"].as_str().map(String::from)).collect();
                if ids.len() > listed.len() {
                    (listed, listing) = (ids, v);
                }
            }
        }
    };
    let elapsed = started.elapsed();
    let s: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("room_e2e.mjs printed no JSON summary ({e}); exit {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    let ctx = || format!("\nsummary: {}", serde_json::to_string_pretty(&s).unwrap());
    assert_eq!(status, Some(0), "room_e2e.mjs did not complete{}", ctx());
    assert_eq!(s["errors"], json!([]), "{}", ctx());
    let pages = s["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 2);
    let ids: Vec<&str> = pages.iter().map(|p| p["identity"].as_str().unwrap_or_else(|| panic!("a page never joined{}", ctx()))).collect();
    assert_ne!(ids[0], ids[1], "each tab has its own identity");

    // The server's view, while both were in: both identities, each with three slots.
    let (mut want, mut got) = (ids.clone(), listed.iter().map(String::as_str).collect::<Vec<_>>());
    want.sort();
    got.sort();
    assert_eq!(got, want, "GET /v1/rooms/{ROOM} while the pages were in: {listing}");
    assert!(listing["participants"].as_array().unwrap().iter().all(|p| p["slots"] == 3), "{listing}");

    let mut heard_report = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        let (me, other, name) = (ids[i], ids[1 - i], page["name"].as_str().unwrap());
        assert_eq!(page["errors"], json!([]), "{name}{}", ctx());
        let room = &page["in_room"];
        assert_eq!((room["status"]["phase"].as_str(), &room["error"]), (Some("connected"), &Value::Null), "{name}{}", ctx());
        // The participant list shows both, the other lit as speaking at some point.
        let people: Vec<&str> = room["people"].as_array().unwrap().iter().filter_map(|p| p["identity"].as_str()).collect();
        assert!(people.contains(&me) && people.contains(&other), "{name}'s participants: {people:?}");
        assert!(strs(&page["speaking_marked"]).contains(&other), "{name} never showed {other} speaking: {}", page["speaking_marked"]);
        // Heard: getStats() inbound-rtp of the slot the page maps (slot.assigned) to the other.
        let slots = room["slots"].as_array().unwrap();
        assert_eq!(slots.len(), 3, "{name}: one <audio> per slot");
        assert!(slots.iter().all(|sl| sl["identity"] != me), "{name} was sent its own audio: {slots:?}");
        let slot = slots.iter().find(|sl| sl["identity"] == other).unwrap_or_else(|| panic!("{name}: no slot carries {other}: {slots:?}"));
        let (packets, energy) = (f(&slot["packets"]), f(&slot["energy"]));
        assert!(packets > 50.0 && energy > 0.0 && f(&slot["bytes"]) > 0.0, "{name} did not hear {other}: {slot}");
        assert!(f(&slot["level_max"]) > 0.01, "{name} heard only silence from {other}: {slot}");
        assert_eq!(slot["playing"], true, "{name}: the slot's <audio> does not play: {slot}");
        heard_report.push(format!(
            "{name} heard {other} on mid {}: {packets} packets, energy {energy:.3}, audio level max {:.2}; join → room.joined {} ms, → first slot packet {} ms",
            slot["mid"], f(&slot["level_max"]), page["timing_ms"]["join_to_room_joined"], page["timing_ms"]["join_to_first_slot_packet"]
        ));
    }

    // Chat: each page's message reached the other, as text.
    let sent = strs(&s["chat_sent"]);
    for (from, to) in [(0, 1), (1, 0)] {
        let got = &pages[to]["chat_received"];
        assert!(
            got.as_array().unwrap().iter().any(|e| e["from"] == ids[from] && e["payload"]["text"] == sent[from] && e["topic"] == "chat"),
            "{} did not receive {:?}: {got}",
            pages[to]["name"],
            sent[from]
        );
        let lines = strs(&pages[to]["left"]["chat"]);
        assert!(lines.iter().any(|l| l.ends_with(sent[from])), "{} does not show {:?}: {lines:?}", pages[to]["name"], sent[from]);
    }

    // Mute: the muting page disabled its microphone track; the other page showed it muted.
    let muted = &s["while_muted"];
    assert_eq!(
        (muted["self"]["mic_enabled"].as_bool(), muted["self"]["mute_button"]["pressed"].as_str()),
        (Some(false), Some("true")),
        "{muted}"
    );
    let seen = muted["other"]["people"].as_array().unwrap().iter().find(|p| p["identity"] == ids[0]).cloned().unwrap_or_default();
    assert_eq!(seen["muted"], true, "{muted}");
    assert_eq!(s["after_unmute"]["self"]["mic_enabled"], true);

    // Leave: the second page saw the first go (reason left); both ended idle, without errors.
    let left = pages[1]["participant_left"].as_array().unwrap();
    assert!(left.iter().any(|e| e["identity"] == ids[0] && e["reason"] == "left"), "{left:?}");
    for page in pages {
        assert_eq!((page["left"]["status"]["phase"].as_str(), &page["left"]["error"]), (Some("idle"), &Value::Null), "{}", ctx());
        assert!(!strs(&page["phases"]).contains(&"error"), "{}", page["phases"]);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v: Value = http().get(format!("{base}/v1/rooms/{ROOM}")).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
        if v["participants"] == json!([]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "participants still in the room after Leave: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("screenshot {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");

    eprintln!(
        "browser room: Chromium {}, two pages in {elapsed:?} (script {} ms), page weight {PAGE_WEIGHT_BYTES} bytes, screenshot {}\n  {}",
        s["chromium"],
        s["elapsed_ms"],
        shot.display(),
        heard_report.join("\n  ")
    );
    server.shutdown().await;
}
