//! The deployment files of `deploy/`: what can be checked without a
//! container engine or a running systemd.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn deploy(file: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Ok(version) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: nothing to check here");
        return;
    };
    assert!(version.status.success());
    let (_, unit) = deploy("fedid.service");
    // The unit names the installed binary; verify needs one that exists.
    let dir = tempfile::tempdir().unwrap();
    let checked = dir.path().join("fedid.service");
    std::fs::write(
        &checked,
        unit.replace("/usr/local/bin/fedid-server", env!("CARGO_BIN_EXE_fedid-server")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&checked)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn the_image_runs_as_a_user_with_a_health_check_and_a_volume() {
    let (_, dockerfile) = deploy("Dockerfile");
    assert_eq!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")),
        2,
        "multi-stage"
    );
    assert!(dockerfile.contains("\nUSER fedid"));
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("/healthz"));
    assert!(dockerfile.contains("VOLUME /var/lib/fedid"));
}

#[test]
fn the_compose_file_migrates_once_then_serves_two_instances() {
    let (_, compose) = deploy("compose.yaml");
    assert!(compose.contains(r#"command: ["migrate"]"#));
    assert!(compose.contains(r#"command: ["serve", "--no-migrate"]"#));
    assert!(compose.contains("fedid-1:") && compose.contains("fedid-2:"));
}
