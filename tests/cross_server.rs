//! Real `fedid-server` processes on 127.0.0.1, each with its own SQLite
//! file, completing the product's story over HTTP (issue 5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedid_domain::{Handle, MessageType};
use fedid_testkit::ClientKeys;
use harness::*;
use serde_json::{json, Map, Value};

#[test]
fn reset_and_revoke_across_three_real_servers() {
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(dir.path(), "a", &[]);
    let b = Server::start(dir.path(), "b", &[]);
    let mut c = Server::start(dir.path(), "c", &[]);
    let (alice, ah, ak) = a.user("alice");
    let (bob, bh, bk) = b.user("bob");
    let (carol, ch, ck) = c.user("carol");

    // Relationships by outbox REQUEST and ACCEPT.
    assert_eq!(
        outbox(&a, &alice, &ak, &ah, &bh, MessageType::RelationshipRequest),
        (200, json!({"outcome": "delivered"}))
    );
    assert_eq!(outbox(&b, &bob, &bk, &bh, &ah, MessageType::RelationshipAccept).0, 200);
    assert_eq!(
        outbox(&c, &carol, &ck, &ch, &ah, MessageType::RelationshipRequest).0,
        200
    );
    assert_eq!(
        outbox(&a, &alice, &ak, &ah, &ch, MessageType::RelationshipAccept).0,
        200
    );
    assert_eq!(relationship_state(&a, &alice, &bh).as_deref(), Some("active"));
    assert_eq!(relationship_state(&c, &carol, &ah).as_deref(), Some("active"));

    // A MESSAGE lands in the peer's inbox.
    assert_eq!(outbox(&b, &bob, &bk, &bh, &ah, MessageType::Message).0, 200);
    let (_, inbox) = get(&a.url("/users/me/inbox"), Some(&alice));
    let last = inbox["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["envelope"]["message_type"], "MESSAGE");
    assert_eq!(last["envelope"]["payload"]["ciphertext"], "3q2-7w");

    // Reset, pending list, alias refused, flush refused before new keys.
    let (status, reset) = send(
        &a.url("/users/me/identity/reset"),
        "POST",
        Some(&alice),
        json!({"confirm": "erase-all-my-data"}),
    );
    assert_eq!((status, reset["revocationsQueued"].clone()), (200, json!(2)));
    let (_, pending) = get(&a.url("/users/me/revocations/pending"), Some(&alice));
    let mut queued: Vec<&str> = pending["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["peerHandle"].as_str().unwrap())
        .collect();
    queued.sort();
    let mut expected = vec![bh.as_str(), ch.as_str()];
    expected.sort();
    assert_eq!(queued, expected);
    assert_eq!(
        send(
            &a.url("/users/me/alias"),
            "PATCH",
            Some(&alice),
            json!({"alias": "alice2"})
        )
        .1["code"],
        "revocations_pending"
    );
    let new_keys = ClientKeys::generate().unwrap();
    let (status, body) = send(
        &a.url("/users/me/revocations/flush"),
        "POST",
        Some(&alice),
        flush_body(&new_keys, &ah, &[&bh, &ch]),
    );
    assert_eq!((status, body["code"].clone()), (409, json!("identity_not_set_up")));
    a.register_keys(&alice, &new_keys);

    // Flush while carol's server is stopped.
    c.stop();
    let (status, report) = send(
        &a.url("/users/me/revocations/flush"),
        "POST",
        Some(&alice),
        flush_body(&new_keys, &ah, &[&bh, &ch]),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["results"][0],
        json!({"peerHandle": bh.as_str(), "outcome": "delivered", "error": null})
    );
    assert_eq!(
        report["results"][1],
        json!({"peerHandle": ch.as_str(), "outcome": "failed", "error": "connect refused"})
    );
    assert_eq!(
        relationship_state(&b, &bob, &ah),
        None,
        "bob's server refetched the rotated key and removed the relationship"
    );
    let (_, pending) = get(&a.url("/users/me/revocations/pending"), Some(&alice));
    assert_eq!(pending["items"][0]["attempts"], 1);
    assert_eq!(pending["items"][0]["lastError"], "connect refused");

    // Carol's server comes back; a second flush delivers.
    c.launch();
    let (_, report) = send(
        &a.url("/users/me/revocations/flush"),
        "POST",
        Some(&alice),
        flush_body(&new_keys, &ah, &[&ch]),
    );
    assert_eq!(report["results"][0]["outcome"], "delivered", "{report}");
    assert_eq!(report["remaining"], 0);
    assert_eq!(relationship_state(&c, &carol, &ah), None);

    // DELETE of a pending row: bob asks carol, resets, then drops carol's row without delivering.
    assert_eq!(outbox(&b, &bob, &bk, &bh, &ch, MessageType::RelationshipRequest).0, 200);
    send(
        &b.url("/users/me/identity/reset"),
        "POST",
        Some(&bob),
        json!({"confirm": "erase-all-my-data"}),
    );
    let row = b.url(&format!(
        "/users/me/revocations/pending/{}",
        ch.as_str().replace('@', "%40").replace(':', "%3A")
    ));
    assert_eq!(delete(&row, &bob), 204);
    assert_eq!(delete(&row, &bob), 404);
    assert_eq!(get(&b.url("/users/me/identity"), Some(&bob)).1["pendingRevocations"], 0);

    // The same envelope twice is a duplicate; tampered, stale, misaddressed are refused.
    let envelope = new_keys
        .envelope(&ah, &ch, MessageType::RelationshipRequest, Map::new(), now())
        .wire_form();
    assert_eq!(
        send_raw(&c.url("/federation/inbox"), "POST", None, envelope.clone()),
        (202, json!({"status": "accepted"}))
    );
    assert_eq!(
        send_raw(&c.url("/federation/inbox"), "POST", None, envelope.clone()),
        (200, json!({"status": "duplicate"}))
    );
    let tampered = envelope.replace("RELATIONSHIP_REQUEST", "RELATIONSHIP_ACCEPT");
    assert_eq!(
        send_raw(&c.url("/federation/inbox"), "POST", None, tampered).1["code"],
        "invalid_signature"
    );
    let stale = new_keys
        .envelope(&ah, &ch, MessageType::Message, Map::new(), now().plus_secs(-600))
        .wire_form();
    assert_eq!(
        send_raw(&c.url("/federation/inbox"), "POST", None, stale).1["code"],
        "timestamp_out_of_window"
    );
    let misaddressed = new_keys
        .envelope(&ah, &bh, MessageType::RelationshipRequest, Map::new(), now())
        .wire_form();
    let (status, body) = send_raw(&c.url("/federation/inbox"), "POST", None, misaddressed);
    assert_eq!((status, body["code"].clone()), (404, json!("unknown_recipient")));
}

/// A fake peer: answers 202 at once, or, once `slow` is set, never answers.
fn fake_peer(slow: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let slow = slow.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                if slow.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_secs(30));
                }
                let _ = stream.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
            });
        }
    });
    port
}

#[test]
fn a_slow_peer_does_not_hold_up_the_others_beyond_one_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(dir.path(), "a", &[("FEDID__DELIVERY__TIMEOUT_MS", "1500")]);
    let b = Server::start(dir.path(), "b", &[]);
    let (alice, ah, ak) = a.user("alice");
    let slow = Arc::new(AtomicBool::new(false));
    let slow_port = fake_peer(slow.clone());
    let sloth = Handle::parse(&format!("sloth@127.0.0.1:{slow_port}"), ANY).unwrap();
    assert_eq!(
        outbox(&a, &alice, &ak, &ah, &sloth, MessageType::RelationshipRequest).0,
        200
    );
    let mut peers = vec![sloth.clone()];
    for i in 0..4 {
        let (token, handle, keys) = b.user(&format!("peer{i}"));
        outbox(&a, &alice, &ak, &ah, &handle, MessageType::RelationshipRequest);
        outbox(&b, &token, &keys, &handle, &ah, MessageType::RelationshipAccept);
        peers.push(handle);
    }
    send(
        &a.url("/users/me/identity/reset"),
        "POST",
        Some(&alice),
        json!({"confirm": "erase-all-my-data"}),
    );
    let new_keys = ClientKeys::generate().unwrap();
    a.register_keys(&alice, &new_keys);
    slow.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let refs: Vec<&Handle> = peers.iter().collect();
    let (status, report) = send(
        &a.url("/users/me/revocations/flush"),
        "POST",
        Some(&alice),
        flush_body(&new_keys, &ah, &refs),
    );
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["results"][0]["error"], "timeout");
    assert_eq!(report["delivered"], 4, "{report}");
    assert!(
        elapsed < Duration::from_millis(1500 + 1500),
        "one timeout, not one per peer: {elapsed:?}"
    );
}

/// alice (on `home`) and bob (on `b`) become friends; bob's server stops;
/// alice resets on `home` and flushes a long-lived REVOKE on `flush_on`,
/// which fails. Returns alice's token and handle, bob's token, and the flush
/// report.
fn flush_while_peer_down(home: &Server, flush_on: &Server, b: &mut Server) -> (String, Handle, String, Value) {
    let (alice, ah, ak) = home.user("alice");
    let (bob, bh, bk) = b.user("bob");
    assert_eq!(
        outbox(home, &alice, &ak, &ah, &bh, MessageType::RelationshipRequest).0,
        200
    );
    assert_eq!(outbox(b, &bob, &bk, &bh, &ah, MessageType::RelationshipAccept).0, 200);
    b.stop();
    let (status, _) = send(
        &home.url("/users/me/identity/reset"),
        "POST",
        Some(&alice),
        json!({"confirm": "erase-all-my-data"}),
    );
    assert_eq!(status, 200);
    let keys = ClientKeys::generate().unwrap();
    home.register_keys(&alice, &keys);
    let item = keys.flush_item_expiring(&ah, &bh, now(), Some(now().plus_secs(7 * 86_400)));
    let (status, report) = send(
        &flush_on.url("/users/me/revocations/flush"),
        "POST",
        Some(&alice),
        json!({"items": [{"peerHandle": item.peer_handle, "signature": item.signature, "nonce": item.nonce,
                          "timestamp": item.timestamp, "expires": item.expires}]}),
    );
    assert_eq!(
        (status, report["results"][0]["outcome"].clone()),
        (200, json!("failed")),
        "{report}"
    );
    (alice, ah, bob, report)
}

/// Waits until alice's pending list on `server` is empty.
fn until_nothing_pending(server: &Server, alice: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, pending) = get(&server.url("/users/me/revocations/pending"), Some(alice));
        if pending["items"].as_array().unwrap().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still queued: {pending}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// PROTOCOL.md section 11 with real processes: bob's server is down when
/// alice flushes; her client goes away; when bob's server comes back, the
/// REVOKE reaches it without any further request from her.
#[test]
fn a_long_lived_revoke_reaches_a_peer_that_comes_back_after_the_client_left() {
    let dir = tempfile::tempdir().unwrap();
    let fast_retries = [
        ("FEDID__DELIVERY__RETRY_BASE_SECS", "1"),
        ("FEDID__DELIVERY__RETRY_MAX_SECS", "2"),
    ];
    let a = Server::start(dir.path(), "a", &fast_retries);
    let mut b = Server::start(dir.path(), "b", &[]);
    let (alice, ah, bob, report) = flush_while_peer_down(&a, &a, &mut b);
    assert!(report["results"][0]["nextAttemptAt"].is_string(), "{report}");
    let (_, pending) = get(&a.url("/users/me/revocations/pending"), Some(&alice));
    assert!(pending["items"][0]["nextAttemptAt"].is_string(), "{pending}");
    let status = a.command().args(["federation", "status"]).output().unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (
            status["domain"].as_str(),
            status["lastFailure"].as_str(),
            status["queued"].as_u64()
        ),
        (Some(b.domain().as_str()), Some("connect refused"), Some(1)),
        "{status}"
    );
    let metrics = a.metrics();
    assert!(metrics.contains("fedid_revocations_scheduled 1"), "{metrics}");
    assert!(metrics.contains("fedid_peer_domains{state=\"healthy\"} 1"), "{metrics}");

    b.launch();
    until_nothing_pending(&a, &alice);
    assert_eq!(relationship_state(&b, &bob, &ah), None, "bob's relationship is gone");
    let (_, identity) = get(&a.url("/users/me/identity"), Some(&alice));
    let audit = a
        .command()
        .args(["audit", "list", "--user", identity["userId"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&audit.stdout).contains("revocation_delivered"),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
}

/// Two instances of alice's server on one PostgreSQL both run a deliverer:
/// the REVOKE is delivered once, by one of them.
#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn two_instances_on_one_postgres_deliver_a_scheduled_revoke_once() {
    let base = std::env::var("FEDID_TEST_POSTGRES_URL").expect("FEDID_TEST_POSTGRES_URL (make test-postgres)");
    let url = fedid_bench::process::fresh_postgres_schema(&base, "fedid_test", "two_deliverers").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let on_postgres = [
        ("FEDID__DATABASE__URL", url.as_str()),
        ("FEDID__DELIVERY__RETRY_BASE_SECS", "1"),
        ("FEDID__DELIVERY__RETRY_MAX_SECS", "2"),
    ];
    let a1 = Server::start(dir.path(), "a1", &on_postgres);
    let domain = a1.domain();
    let mut second = on_postgres.to_vec();
    second.push(("FEDID__FEDERATION__DOMAIN", domain.as_str()));
    let a2 = Server::start(dir.path(), "a2", &second);
    let mut b = Server::start(dir.path(), "b", &[]);
    let (alice, _, _, _) = flush_while_peer_down(&a1, &a2, &mut b);

    b.launch();
    until_nothing_pending(&a2, &alice);
    // Give a second, wrongful delivery time to arrive.
    std::thread::sleep(Duration::from_secs(3));
    let metrics = b.metrics();
    let revokes_answered: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("fedid_inbox_envelopes_total"))
        .collect();
    assert_eq!(
        revokes_answered,
        vec!["fedid_inbox_envelopes_total{code=\"accepted\"} 1"],
        "bob's server, since it came back, answered one envelope, once"
    );
    let (_, identity) = get(&a1.url("/users/me/identity"), Some(&alice));
    let audit = a1
        .command()
        .args(["audit", "list", "--user", identity["userId"].as_str().unwrap()])
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert_eq!(audit.matches("revocation_delivered").count(), 1, "{audit}");
}

/// `fedid-server federation probe` as `server` runs it against `domain`.
fn probe(server: &Server, domain: &str) -> (bool, Value) {
    let out = server.command().args(["federation", "probe", domain]).output().unwrap();
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap())
}

fn steps(report: &Value) -> Vec<(String, bool)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().to_owned(), s["ok"].as_bool().unwrap()))
        .collect()
}

#[test]
fn a_probe_of_a_running_peer_passes_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Server::start(dir.path(), "a", &[]), Server::start(dir.path(), "b", &[]));
    let (ok, report) = probe(&a, &b.domain());
    assert!(ok, "{report}");
    assert_eq!(
        steps(&report),
        vec![
            ("resolve".into(), true),
            ("connect".into(), true),
            ("discovery".into(), true)
        ]
    );
    assert!(
        report["steps"][2]["detail"]
            .as_str()
            .unwrap()
            .contains("a fedid server"),
        "{report}"
    );
}

#[test]
fn a_probe_stops_at_the_first_failing_step_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(dir.path(), "a", &[]);
    let closed = format!("127.0.0.1:{}", free_port());
    let (ok, report) = probe(&a, &closed);
    assert!(!ok);
    assert_eq!(
        steps(&report),
        vec![("resolve".into(), true), ("connect".into(), false)]
    );
}
