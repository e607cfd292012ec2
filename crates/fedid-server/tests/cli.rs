//! The real binary's administrative commands (OPERATIONS.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

fn fedid(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedid-server"));
    command.args(args).current_dir(dir).env_remove("RUST_LOG");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FEDID__")) {
        command.env_remove(key);
    }
    command.env("FEDID__DATABASE__URL", "sqlite://test.db");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn administrative_commands() {
    let dir = tempfile::tempdir().unwrap();
    let migrated = fedid(dir.path(), &["migrate"], &[]);
    assert!(migrated.status.success());
    assert_eq!(
        String::from_utf8_lossy(&migrated.stdout).lines().count(),
        4,
        "every migration applied"
    );
    assert_eq!(
        fedid(dir.path(), &["migrate"], &[]).stdout.len(),
        0,
        "nothing left to apply"
    );

    let created = json(&fedid(dir.path(), &["user", "create"], &[]));
    assert_eq!(created["userId"], "1");
    assert_eq!(created["token"].as_str().unwrap().len(), 43, "32 bytes, base64url");
    let issued = json(&fedid(
        dir.path(),
        &["token", "issue", "--user", "1", "--ttl-days", "2"],
        &[],
    ));
    assert_ne!(issued["token"], created["token"]);
    assert_eq!(
        json(&fedid(dir.path(), &["token", "revoke", "--user", "1"], &[]))["revoked"],
        2
    );
    assert_eq!(
        json(&fedid(dir.path(), &["token", "revoke", "--user", "1"], &[]))["revoked"],
        0
    );
    let audit = fedid(dir.path(), &["audit", "list", "--user", "1"], &[]);
    assert!(audit.status.success());
}

#[test]
fn failures_are_one_line_errors_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    for (args, env, needle) in [
        (&["token", "issue", "--user", "99"][..], &[][..], "unknown user"),
        (
            &["migrate"][..],
            &[("FEDID__FEDERATION__DOMAIN", "Bad_Domain")][..],
            "federation.domain",
        ),
        (
            &["migrate"][..],
            &[("FEDID__DATABASE__URL", "mysql://x")][..],
            "database.url",
        ),
        (
            &["migrate"][..],
            &[("FEDID__DATABASE__URL", "postgres://nobody@127.0.0.1:1/none")][..],
            "database",
        ),
        (
            &["token", "issue", "--user", "1", "--ttl-days", "0"][..],
            &[][..],
            "1 to 3650",
        ),
    ] {
        fedid(dir.path(), &["migrate"], &[]);
        let out = fedid(dir.path(), args, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
