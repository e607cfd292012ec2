//! The real binary serving: a token from `user create` works against
//! `serve`; SIGTERM ends it with exit code 0; a port in use is one line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn command(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedid-server"));
    command.current_dir(dir).env_remove("RUST_LOG");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FEDID__")) {
        command.env_remove(key);
    }
    command
        .env("FEDID__DATABASE__URL", "sqlite://serve.db")
        .env("FEDID__FEDERATION__DOMAIN", "a.example")
        .env("FEDID__LOG__FORMAT", "json");
    command
}

/// Starts `serve` on port 0, logging in `format`; returns its log lines.
fn spawn_serve(dir: &std::path::Path, format: &str) -> (Child, std::io::Lines<BufReader<std::process::ChildStderr>>) {
    let mut child = command(dir)
        .args(["serve"])
        .env("FEDID__SERVER__BIND", "127.0.0.1:0")
        .env("FEDID__LOG__FORMAT", format)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, lines)
}

/// Starts `serve` on port 0 and reads the bound port from its log.
fn serve(dir: &std::path::Path) -> (Child, u16) {
    let (child, mut lines) = spawn_serve(dir, "json");
    let port = loop {
        let line = lines.next().expect("serve logs before it listens").unwrap();
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if entry["fields"]["message"] == "serving" {
            let address = entry["fields"]["address"].as_str().unwrap().to_owned();
            break address.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

#[test]
fn serve_answers_with_a_created_token_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let created = command(dir.path()).args(["user", "create"]).output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let token = serde_json::from_slice::<serde_json::Value>(&created.stdout).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut child, port) = serve(dir.path());
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent
        .get(&format!("http://127.0.0.1:{port}/users/me/identity"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let identity: serde_json::Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(identity["userId"], "1");
    assert_eq!(identity["state"], "setup_required");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut waited = Duration::ZERO;
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(waited < Duration::from_secs(20), "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    };
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn a_port_in_use_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = command(dir.path())
        .args(["serve"])
        .env("FEDID__SERVER__BIND", &address)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap();
    assert!(last.starts_with("fedid-server: cannot listen on"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut lines) = spawn_serve(dir.path(), "pretty");
    let serving = lines
        .by_ref()
        .map(|line| line.unwrap())
        .find(|line| line.contains("serving"))
        .expect("serve logs before it listens");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    assert!(!serving.contains('\u{1b}'), "{serving:?}");
}
