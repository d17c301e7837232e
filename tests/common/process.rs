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
    // Each server its own history (tests that need a file pass --database or --data-dir).
    if !args.iter().any(|a| *a == "--database" || *a == "--data-dir") {
        cmd.env("VOXRELAY_DATABASE", ":memory:");
    }
    cmd.envs(env.iter().copied());
    let (child, mut rx) = spawn_lines(&mut cmd);
    loop {
        let line = tokio::time::timeout(WAIT, rx.recv()).await.expect("server output").expect("server running");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(addr) = v["fields"]["addr"].as_str()
        {
            return (child, format!("http://{addr}"), v);
        }
    }
}

/// Spawns `cmd` and reads its piped output (stdout, and stderr when piped) line by line.
fn spawn_lines(cmd: &mut Command) -> (std::process::Child, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let mut child = cmd.spawn().expect("voxrelay binary runs");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut pipes: Vec<Box<dyn std::io::Read + Send>> = Vec::new();
    pipes.extend(child.stdout.take().map(|o| Box::new(o) as Box<dyn std::io::Read + Send>));
    pipes.extend(child.stderr.take().map(|e| Box::new(e) as Box<dyn std::io::Read + Send>));
    for pipe in pipes {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    (child, rx)
}

pub fn sigterm(child: &std::process::Child) {
    // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0, "SIGTERM delivered");
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

/// `voxrelay serve` as an operator runs it (text logs unless `args` say otherwise), its output
/// read line by line: stdout, and stderr too when `stderr`.
pub struct LoggedServer {
    pub child: std::process::Child,
    pub base: String,
    /// Every line so far.
    pub lines: Vec<String>,
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl LoggedServer {
    /// Starts it and reads until its `listening on` line.
    pub async fn start(args: &[&str], stderr: bool) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxrelay"));
        cmd.arg("serve").args(args).stdout(Stdio::piped());
        if stderr {
            cmd.stderr(Stdio::piped());
        }
        let env = ["VOXRELAY_API_KEY", "VOXRELAY_LISTEN", "VOXRELAY_CONFIG", "VOXRELAY_LOG", "VOXRELAY_LOG_LEVEL", "VOXRELAY_LOG_FORMAT"];
        for var in env.into_iter().chain(["NO_COLOR"]) {
            cmd.env_remove(var);
        }
        cmd.env("VOXRELAY_DATABASE", ":memory:");
        let (child, mut rx) = spawn_lines(&mut cmd);
        let mut lines = Vec::new();
        let base = loop {
            let line = tokio::time::timeout(WAIT, rx.recv()).await.expect("server output").expect("server running");
            lines.push(line.clone());
            if let Some(at) = line.find("listening on http://") {
                break line[at + "listening on ".len()..].split_whitespace().next().unwrap().to_string();
            }
        };
        LoggedServer { child, base, lines, rx }
    }

    /// SIGTERM, then every line it wrote until it exited (`None`: it did not exit in time).
    pub async fn stop(mut self) -> Option<Vec<String>> {
        sigterm(&self.child);
        wait_exit(self.child)?;
        while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(2), self.rx.recv()).await {
            self.lines.push(line);
        }
        Some(self.lines)
    }
}
