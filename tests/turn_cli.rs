//! `voxrelay turn --config FILE`, the TURN server on its own, as an operator runs it: a bad
//! value refuses to start naming `FILE:LINE`; a good file serves STUN/TURN on UDP and exits 0 on
//! SIGTERM.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use voxrelay::relay::probe::{CLASS_SUCCESS_RESPONSE, METHOD_BINDING, Probe, parse};

const WAIT: Duration = Duration::from_secs(20);

/// A config file in a directory of its own, both removed when the test is done with it.
struct Conf(std::path::PathBuf);

impl std::ops::Deref for Conf {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Conf {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn write_conf(name: &str, text: &str) -> Conf {
    let dir = std::env::temp_dir().join(format!("voxrelay-turn-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    Conf(path)
}

#[test]
fn a_bad_value_refuses_to_start_and_names_the_line() {
    let path = write_conf("bad.conf", "use-auth-secret\nlistening-port=99999\nstatic-auth-secret=x\n");
    let out = Command::new(env!("CARGO_BIN_EXE_voxrelay"))
        .args(["turn", "--config"])
        .arg(&*path)
        .env_remove("VOXRELAY_TURN_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.conf:2: listening-port: \"99999\" is not a port"), "{stderr}");
}

#[test]
fn turn_alone_answers_on_udp_and_exits_cleanly_on_sigterm() {
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = write_conf(
        "good.conf",
        &format!("listening-ip=127.0.0.1\nlistening-port={port}\nuse-auth-secret\nstatic-auth-secret=x\nno-tcp\nno-tls\n"),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_voxrelay"))
        .args(["turn", "--config"])
        .arg(&*path)
        .env_remove("VOXRELAY_TURN_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let request = Probe::new("", "", "voxrelay").request(METHOD_BINDING, &[]);
    let started = Instant::now();
    let mut buf = [0u8; 1500];
    let answer = loop {
        assert!(started.elapsed() < WAIT, "no Binding answer from voxrelay turn");
        let _ = sock.send_to(&request, ("127.0.0.1", port));
        if let Ok(n) = sock.recv(&mut buf) {
            break parse(&buf[..n]).unwrap();
        }
    };
    assert_eq!(answer.class, CLASS_SUCCESS_RESPONSE);
    // SAFETY: kill(2) on the pid we spawned and have not waited for.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WAIT {
            let _ = child.kill();
            panic!("voxrelay turn did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
