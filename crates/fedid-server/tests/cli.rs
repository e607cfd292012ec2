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
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/sqlite"))
        .unwrap()
        .count();
    assert_eq!(
        String::from_utf8_lossy(&migrated.stdout).lines().count(),
        migrations,
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

#[test]
fn migrate_prints_the_name_of_each_migration() {
    let dir = tempfile::tempdir().unwrap();
    let migrated = fedid(dir.path(), &["migrate"], &[]);
    let first = String::from_utf8_lossy(&migrated.stdout)
        .lines()
        .next()
        .map(str::to_owned);
    assert_eq!(first.as_deref(), Some("applied 2026-11-27-000001_init"));
}

/// The two-server story runs `serve` and `user create` on one new file at
/// once: every process that migrates must wait for the others, and each
/// migration must be applied once, however they interleave.
#[test]
fn processes_starting_together_on_a_new_sqlite_file_migrate_it_once() {
    let binary = env!("CARGO_BIN_EXE_fedid-server");
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let children: Vec<_> = (0..6)
            .map(|i| {
                let args: &[&str] = if i % 2 == 0 { &["migrate"] } else { &["user", "create"] };
                let mut command = Command::new(binary);
                command.args(args).current_dir(dir.path()).env_remove("RUST_LOG");
                for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FEDID__")) {
                    command.env_remove(key);
                }
                command
                    .env("FEDID__DATABASE__URL", "sqlite://race.db")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut applied = Vec::new();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "round {round}, process {i}: {stderr}");
            if i % 2 == 0 {
                applied.extend(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned));
            }
        }
        let unique: std::collections::BTreeSet<_> = applied.iter().collect();
        assert_eq!(
            unique.len(),
            applied.len(),
            "round {round}: a migration applied twice: {applied:?}"
        );
        let again = Command::new(binary)
            .arg("migrate")
            .current_dir(dir.path())
            .env("FEDID__DATABASE__URL", "sqlite://race.db")
            .output()
            .unwrap();
        assert!(again.stdout.is_empty(), "round {round}: nothing left to apply");
    }
}

#[test]
fn a_command_on_a_database_without_tables_says_to_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let out = fedid(dir.path(), &["token", "issue", "--user", "1"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("run `fedid-server migrate`"), "{stderr}");
}

#[test]
fn help_names_the_environment_variables_and_the_operations_contract() {
    let out = fedid(std::path::Path::new("."), &["--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("FEDID__SECTION__KEY") && help.contains("OPERATIONS.md"),
        "{help}"
    );
}
