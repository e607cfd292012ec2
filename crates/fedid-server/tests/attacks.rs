//! docs/security.md's attacks against the real binary, each a regression
//! test of one hole: the bound it must keep, never a speed beyond the
//! generous ones the attacks state. `make attack` runs the same attacks,
//! larger, against a release build.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fedid_bench::attack::{self, Finding, Target};

/// One attack at a time: each floods a server on this 2-core machine, and
/// the bounds that speak of time must not measure another attack's load.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn target() -> (std::sync::MutexGuard<'static, ()>, tempfile::TempDir, Target) {
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let target = Target {
        binary: env!("CARGO_BIN_EXE_fedid-server").into(),
        dir: dir.path().to_owned(),
    };
    (turn, dir, target)
}

fn assert_kept(findings: Vec<Finding>) {
    for finding in &findings {
        assert_ne!(
            finding.kept,
            Some(false),
            "{} = {} breaks its bound: {}",
            finding.name,
            finding.value,
            finding.bound
        );
    }
}

#[test]
fn distinct_method_names_leave_memory_metrics_and_log_bounded() {
    let (_turn, _dir, target) = target();
    assert_kept(attack::method_flood(&target, 2_000, 16_384).unwrap());
}

#[test]
fn one_address_stalling_bodies_cannot_shut_out_another() {
    let (_turn, _dir, target) = target();
    assert_kept(attack::stalled_bodies(&target, 600).unwrap());
}

#[test]
fn slow_request_heads_are_cut_off() {
    let (_turn, _dir, target) = target();
    assert_kept(attack::slow_headers(&target, 20).unwrap());
}

#[test]
fn a_hanging_key_server_cannot_hold_the_threads_that_serve_users() {
    let (_turn, _dir, target) = target();
    assert_kept(attack::refetch_storm(&target, 1_000).unwrap());
}

#[test]
fn one_stranger_cannot_fill_an_inbox() {
    let (_turn, _dir, target) = target();
    assert_kept(attack::one_sender_inbox(&target, 30).unwrap());
}

#[test]
fn one_user_cannot_squat_aliases() {
    let (_turn, _dir, target) = target();
    assert_kept(attack::alias_squatting(&target, 50).unwrap());
}

#[test]
fn rotating_aliases_of_one_domain_do_not_multiply_key_lookups() {
    let (_turn, _dir, target) = target();
    assert_kept(attack::key_lookup_amplifier(&target, 300).unwrap());
}

#[test]
fn a_refused_database_url_never_shows_its_password() {
    let (_turn, _dir, target) = target();
    assert_kept(attack::database_password(&target).unwrap());
}

#[test]
fn first_contacts_with_long_key_logs_share_a_budget() {
    let (_turn, _dir, target) = target();
    assert_kept(attack::key_log_flood(&target, 2_000, 5).unwrap());
}
