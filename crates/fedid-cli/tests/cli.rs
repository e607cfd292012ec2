//! The client tool signs what the servers verify.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use fedid_domain::{DomainPolicy, Envelope, SigningKey};
use serde_json::Value;

fn fedid(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fedid"))
        .args(args)
        .env_remove("FEDID_SEED")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn keygen_sign_and_flush_produce_verifiable_signatures() {
    let keys = fedid(&["keygen"]);
    let seed = keys["seed"].as_str().unwrap();
    let signing = SigningKey::parse(keys["signingKey"].as_str().unwrap()).unwrap();
    assert!(fedid_domain::EncryptionKey::parse(keys["encryptionKey"].as_str().unwrap()).is_ok());
    let again = fedid(&[
        "keys",
        "--seed",
        seed,
        "--encryption-secret",
        keys["encryptionSecret"].as_str().unwrap(),
    ]);
    assert_eq!(
        (again["signingKey"].clone(), again["encryptionKey"].clone()),
        (keys["signingKey"].clone(), keys["encryptionKey"].clone())
    );

    let wire = fedid(&[
        "sign",
        "--seed",
        seed,
        "--from",
        "Alice@a.example",
        "--to",
        "bob@b.example",
        "--type",
        "MESSAGE",
        "--payload",
        "{\"ciphertext\":\"x\"}",
    ]);
    let envelope = Envelope::parse(wire.to_string().as_bytes(), DomainPolicy::HTTPS_PUBLIC).unwrap();
    assert_eq!(envelope.from().as_str(), "alice@a.example");
    assert!(envelope.verify(&signing).is_ok());

    let outbox = fedid(&[
        "sign",
        "--seed",
        seed,
        "--from",
        "alice@a.example",
        "--to",
        "bob@b.example",
        "--type",
        "RELATIONSHIP_REQUEST",
        "--as",
        "outbox",
    ]);
    assert_eq!(outbox["messageType"], "RELATIONSHIP_REQUEST");
    assert_eq!(outbox["signature"].as_str().unwrap().len(), 86);

    let flush = fedid(&[
        "flush",
        "--seed",
        seed,
        "--from",
        "alice@a.example",
        "--peer",
        "bob@b.example",
        "--peer",
        "carol@127.0.0.1:18082",
    ]);
    let items = flush["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["peerHandle"], "carol@127.0.0.1:18082");

    let out = Command::new(env!("CARGO_BIN_EXE_fedid"))
        .args(["sign", "--seed", "bad", "--from", "a", "--to", "b", "--type", "X"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// One seed in 64 starts with `-` (base64url): it must still read as the
/// value of `--seed`, as the README pastes it, not as an option.
#[test]
fn secrets_that_start_with_a_hyphen_are_values() {
    let seed = "-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let secret = "-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA";
    let keys = fedid(&["keys", "--seed", seed, "--encryption-secret", secret]);
    assert!(SigningKey::parse(keys["signingKey"].as_str().unwrap()).is_ok());
}

/// The envelope the server builds from a flush item, parsed.
fn item_envelope(item: &Value, from: &str) -> fedid_domain::Envelope {
    let mut envelope = serde_json::json!({
        "protocol_version": 1,
        "message_type": "RELATIONSHIP_REVOKE",
        "from": from,
        "to": item["peerHandle"],
        "nonce": item["nonce"],
        "timestamp": item["timestamp"],
        "signature": item["signature"],
        "payload": {},
    });
    if let Some(expires) = item.get("expires") {
        envelope["payload"] = serde_json::json!({ "expires": expires });
    }
    fedid_domain::Envelope::parse(envelope.to_string().as_bytes(), fedid_domain::DomainPolicy::ANY).unwrap()
}

#[test]
fn flush_items_are_long_lived_for_seven_days_unless_told_otherwise() {
    let keys = fedid(&["keygen"]);
    let seed = keys["seed"].as_str().unwrap();
    let signing = SigningKey::parse(keys["signingKey"].as_str().unwrap()).unwrap();
    let flush = |extra: &[&str]| {
        let mut args = vec![
            "flush",
            "--seed",
            seed,
            "--from",
            "alice@a.example",
            "--peer",
            "bob@b.example",
        ];
        args.extend_from_slice(extra);
        fedid(&args)["items"][0].clone()
    };
    let item = flush(&[]);
    let envelope = item_envelope(&item, "alice@a.example");
    let lifetime = envelope.expires().unwrap().instant().as_secs() - envelope.timestamp().instant().as_secs();
    assert_eq!(lifetime, 7 * 86_400);
    assert!(envelope.verify(&signing).is_ok());
    let plain = flush(&["--expires-in", "0"]);
    assert!(plain.get("expires").is_none());
    assert!(item_envelope(&plain, "alice@a.example").verify(&signing).is_ok());
    let short = item_envelope(&flush(&["--expires-in", "90m"]), "alice@a.example");
    assert_eq!(
        short.expires().unwrap().instant().as_secs() - short.timestamp().instant().as_secs(),
        5_400
    );
}

#[test]
fn a_lifetime_past_seven_days_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_fedid"))
        .args([
            "flush",
            "--seed",
            "x",
            "--from",
            "a@a.example",
            "--peer",
            "b@b.example",
            "--expires-in",
            "8d",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 7d"));
}

#[test]
fn keys_with_a_log_position_carry_a_proven_rotation() {
    let old = fedid(&["keygen"]);
    let new = fedid(&["keygen"]);
    let body = fedid(&[
        "keys",
        "--seed",
        new["seed"].as_str().unwrap(),
        "--encryption-secret",
        new["encryptionSecret"].as_str().unwrap(),
        "--handle",
        "alice@a.example",
        "--log-seq",
        "1",
        "--log-head",
        "QX-SSY2onOQMQ0MAPVTE7yPkP3f5m7L3pOO2ZZj9BhY",
        "--rotate-from-seed",
        old["seed"].as_str().unwrap(),
    ]);
    assert_eq!(body["seq"], 2);
    let handle = fedid_domain::Handle::parse("alice@a.example", DomainPolicy::ANY).unwrap();
    let at = fedid_domain::Timestamp::parse(body["at"].as_str().unwrap()).unwrap();
    let new_key = SigningKey::parse(new["signingKey"].as_str().unwrap()).unwrap();
    let kind = fedid_domain::keylog::EntryKind::Keys {
        signing: new_key,
        encryption: fedid_domain::EncryptionKey::parse(new["encryptionKey"].as_str().unwrap()).unwrap(),
    };
    let entry = fedid_domain::keylog::KeyLogEntry::build(
        &handle,
        2,
        "QX-SSY2onOQMQ0MAPVTE7yPkP3f5m7L3pOO2ZZj9BhY",
        &at,
        &kind,
        None,
        None,
    )
    .unwrap();
    let proof = fedid_domain::Signature::parse(body["proof"].as_str().unwrap()).unwrap();
    assert!(
        proof.verify(&new_key, entry.signed_bytes()),
        "the new key signs the entry"
    );
    let rotation = fedid_domain::Signature::parse(body["rotationProof"].as_str().unwrap()).unwrap();
    let old_key = SigningKey::parse(old["signingKey"].as_str().unwrap()).unwrap();
    assert!(
        rotation.verify(&old_key, entry.signed_bytes()),
        "the old key vouches for it"
    );
}
