//! The real `voxrelay serve` binary as a child process, for tests that need the process itself
//! (signals, its own file descriptors and memory).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::WAIT;

/// `voxrelay serve` with `args` and extra environment; returns the child, its base URL and
/// the `voxrelay listening` log line (JSON).
pub async fn serve(args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, String, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxrelay"));
    cmd.arg("serve").args(args).args(["--log-format", "json"]).stdout(Stdio::piped());
    for var in ["VOXRELAY_API_KEY", "VOXRELAY_LISTEN", "VOXRELAY_CONFIG", "VOXRELAY_MAX_CALLS", "VOXRELAY_DRAIN_GRACE"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("voxrelay binary runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = tokio::time::timeout(WAIT, rx.recv()).await.expect("server output").expect("server running");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(addr) = v["fields"]["addr"].as_str()
        {
            return (child, format!("http://{addr}"), v);
        }
    }
}

pub fn wait_exit(mut child: std::process::Child) -> Option<std::process::ExitStatus> {
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
}

/// Kills the child when dropped, so a failing test does not leave a server running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
