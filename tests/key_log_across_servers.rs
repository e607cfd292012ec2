//! The key log between real `fedid-server` processes on 127.0.0.1
//! (PROTOCOL.md section 12, issue 15): bob's server pins alice, a proven
//! rotation loses nothing, a reset shows as one, keys swapped behind the
//! log are refused until the operator unpins, and a version 1 peer still
//! federates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use fedid_domain::ports::{read, write, StoreError};
use fedid_domain::{Alias, EncryptionKey, Handle, MessageType};
use fedid_testkit::ClientKeys;
use harness::*;
use serde_json::{json, Map, Value};

/// Alice on `a` and bob on `b`, related: alice asked, bob accepted.
fn related(a: &Server, b: &Server) -> ((String, Handle, ClientKeys), (String, Handle, ClientKeys)) {
    let alice = a.user("alice");
    let bob = b.user("bob");
    assert_eq!(
        outbox(
            a,
            &alice.0,
            &alice.2,
            &alice.1,
            &bob.1,
            MessageType::RelationshipRequest
        )
        .0,
        200
    );
    assert_eq!(
        outbox(b, &bob.0, &bob.2, &bob.1, &alice.1, MessageType::RelationshipAccept).0,
        200
    );
    (alice, bob)
}

/// `peerKeys` of `peer` in `token`'s relationship list, if listed.
fn peer_keys(server: &Server, token: &str, peer: &Handle) -> Option<Value> {
    relationship_item(server, token, peer).map(|i| i["peerKeys"].clone())
}

fn key_log(server: &Server, token: &str) -> (u64, String) {
    let (_, identity) = get(&server.url("/users/me/identity"), Some(token));
    let log = &identity["keyLog"];
    (log["seq"].as_u64().unwrap(), log["head"].as_str().unwrap().to_owned())
}

fn inbox(server: &Server, wire: &str) -> (u16, Value) {
    send_raw(&server.url("/federation/inbox"), "POST", None, wire.to_owned())
}

fn cli(server: &Server, args: &[&str]) -> Vec<Value> {
    let out = server.command().args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bob_pins_alice_and_a_proven_rotation_loses_an_envelope_signed_just_before() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Server::start(dir.path(), "a", &[]), Server::start(dir.path(), "b", &[]));
    let ((alice, ah, ak), (bob, bh, _)) = related(&a, &b);
    let pinned = peer_keys(&b, &bob, &ah).unwrap();
    let (seq, head) = key_log(&a, &alice);
    assert_eq!(pinned["change"], "first");
    assert_eq!(pinned["lastBreak"], Value::Null, "alice's log holds no break");
    let changed_at = pinned["changedAt"].as_str().unwrap();
    assert!(fedid_domain::Timestamp::parse(changed_at).is_ok() && changed_at.ends_with('Z'));
    assert_eq!(
        (pinned["seq"].as_u64(), pinned["head"].as_str()),
        (Some(seq), Some(head.as_str()))
    );

    let signed_before = ak
        .envelope(&ah, &bh, MessageType::Message, Map::new(), now())
        .wire_form();
    let new = ClientKeys::generate().unwrap();
    let body = new.with_proven_keys(&ah, (seq, &head), now(), Some(&ak), |input| {
        let entry = input.entry.unwrap();
        json!({"signingKey": input.signing_key, "encryptionKey": input.encryption_key, "seq": entry.seq,
               "at": entry.at, "proof": entry.proof, "rotationProof": entry.rotation_proof})
    });
    let (status, identity) = send(&a.url("/users/me/keys"), "PUT", Some(&alice), body);
    assert_eq!(
        (status, identity["keyLog"]["seq"].as_u64()),
        (200, Some(seq + 1)),
        "{identity}"
    );
    assert_eq!(outbox(&a, &alice, &new, &ah, &bh, MessageType::Message).0, 200);
    assert_eq!(peer_keys(&b, &bob, &ah).unwrap()["change"], "rotated");

    assert_eq!(inbox(&b, &signed_before), (202, json!({"status": "accepted"})));
}

#[test]
fn after_alice_resets_bobs_relationship_list_shows_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Server::start(dir.path(), "a", &[]), Server::start(dir.path(), "b", &[]));
    let ((alice, ah, _), (bob, bh, _)) = related(&a, &b);
    let (status, _) = send(
        &a.url("/users/me/identity/reset"),
        "POST",
        Some(&alice),
        json!({"confirm": "erase-all-my-data"}),
    );
    assert_eq!(status, 200);
    let new = ClientKeys::generate().unwrap();
    a.register_keys(&alice, &new);
    let (status, report) = send(
        &a.url("/users/me/revocations/flush"),
        "POST",
        Some(&alice),
        flush_body(&new, &ah, &[&bh]),
    );
    assert_eq!((status, report["delivered"].as_u64()), (200, Some(1)), "{report}");
    assert_eq!(
        outbox(&a, &alice, &new, &ah, &bh, MessageType::RelationshipRequest).0,
        200
    );

    let keys = peer_keys(&b, &bob, &ah).unwrap();
    assert_eq!(keys["change"], "reset", "{keys}");
    assert_eq!(keys["lastBreak"]["change"], "reset", "{keys}");
    assert_eq!(keys["seq"].as_u64(), Some(key_log(&a, &alice).0));
}

/// Publishes other keys for alice straight in her server's database, as a
/// compromised server would: no log entry.
fn swap_keys_behind_the_log(server: &Server, alias: &str) -> ClientKeys {
    let other = ClientKeys::generate().unwrap();
    let store = fedid_store::DieselStore::open(&format!("sqlite://{}", server.db.display()), 1).unwrap();
    let alias = Alias::parse(alias).unwrap();
    let (signing, encryption) = (
        other.signing_key(),
        EncryptionKey::parse(&other.public_keys().1).unwrap(),
    );
    let user = read(&store, |tx| tx.identity_by_alias(&alias)).unwrap().unwrap().user;
    write(&store, None, move |tx| {
        tx.set_keys(user, &signing, &encryption, fedid_domain::UnixTime::from_secs(0))
    })
    .wait()
    .map_err(|e: StoreError| e)
    .unwrap();
    other
}

#[test]
fn keys_swapped_behind_the_log_are_refused_listed_for_the_operator_and_cleared_by_unpin() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Server::start(dir.path(), "a", &[]), Server::start(dir.path(), "b", &[]));
    let ((alice, ah, _), (bob, bh, _)) = related(&a, &b);
    let made_up = swap_keys_behind_the_log(&a, "alice");

    let (status, answer) = outbox(&a, &alice, &made_up, &ah, &bh, MessageType::Message);
    assert_eq!(
        (status, answer["remoteCode"].as_str()),
        (502, Some("key_log_conflict")),
        "{answer}"
    );
    let conflicts = cli(&b, &["federation", "conflicts"]);
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0]["handle"], ah.as_str());
    assert_eq!(conflicts[0]["pinnedSeq"].as_u64(), Some(key_log(&a, &alice).0));
    assert!(b.metrics().contains("fedid_key_log_conflicts 1"));

    assert_eq!(
        cli(&b, &["federation", "unpin", ah.as_str()]),
        vec![json!({"unpinned": 1})]
    );
    assert!(cli(&b, &["federation", "conflicts"]).is_empty());
    assert_eq!(peer_keys(&b, &bob, &ah), Some(Value::Null));
}

/// A server without revision 1.1: discovery without `keyLogSeq`, no
/// key log. Answers every request with `keys` for the alias asked.
fn version_one_peer(keys: &ClientKeys) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (signing, encryption) = keys.public_keys();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let alias = request_line
                .split_whitespace()
                .nth(1)
                .and_then(|path| path.strip_prefix("/federation/users/"))
                .unwrap_or("nobody")
                .to_owned();
            let body = json!({"handle": format!("{alias}@127.0.0.1:{port}"), "signingKey": signing,
                              "encryptionKey": encryption, "keysUpdatedAt": "2026-11-27T10:00:00Z"})
            .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn a_version_one_peer_still_federates_while_unpinned() {
    let dir = tempfile::tempdir().unwrap();
    let b = Server::start(dir.path(), "b", &[]);
    let (bob, bh, _) = b.user("bob");
    let keys = ClientKeys::generate().unwrap();
    let port = version_one_peer(&keys);
    let dave = Handle::parse(&format!("dave@127.0.0.1:{port}"), ANY).unwrap();
    let request = keys
        .envelope(&dave, &bh, MessageType::RelationshipRequest, Map::new(), now())
        .wire_form();
    assert_eq!(inbox(&b, &request), (202, json!({"status": "accepted"})));
    assert_eq!(peer_keys(&b, &bob, &dave), Some(Value::Null));
}
