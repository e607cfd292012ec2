//! Where an inbox envelope's time goes, in process, single-threaded:
//! parse, verify, the whole `receive` on SQLite, and single store
//! transactions. `cargo run --release -p fedid-bench --example inbox_probe`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use fedid_domain::*;
use fedid_testkit::*;
use serde_json::Map;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = fedid_store::DieselStore::open(&format!("sqlite://{}", dir.path().join("p.db").display()), 8).unwrap();
    store.migrate().unwrap();
    let clock = Arc::new(ManualClock::at(fedid_domain::ports::SystemClock.now()));
    let network = Network::new(Duration::from_secs(1));
    let a = Instance::start(&network, "a.example", clock.clone()).unwrap();
    let store = Arc::new(store);
    let b = start_on(&network, settings("b.example").unwrap(), store.clone(), clock.clone());
    let alice = a.user("alice").unwrap();
    let (bob, bob_token) = b.create_user().unwrap();
    b.set_alias(bob, "bob").unwrap();
    let bob_keys = ClientKeys::generate().unwrap();
    bob_keys.with_keys(|k| b.set_keys(bob, k)).unwrap();
    let bh = b.identity(bob).unwrap().handle.unwrap();
    alice
        .node
        .send(
            alice.user,
            alice.keys.outbox_request(
                &alice.handle,
                &bh,
                MessageType::RelationshipRequest,
                Map::new(),
                clock.now(),
            ),
        )
        .unwrap();
    b.send(
        bob,
        bob_keys.outbox_request(
            &bh,
            &alice.handle,
            MessageType::RelationshipAccept,
            Map::new(),
            clock.now(),
        ),
    )
    .unwrap();
    let mut payload = Map::new();
    payload.insert("ciphertext".into(), serde_json::Value::String("3q2-7w-".repeat(20)));
    let n = 5000;
    let wires: Vec<String> = (0..n)
        .map(|_| {
            alice
                .keys
                .envelope(&alice.handle, &bh, MessageType::Message, payload.clone(), clock.now())
                .wire_form()
        })
        .collect();
    let t = Instant::now();
    for w in &wires {
        let e = Envelope::parse(w.as_bytes(), DomainPolicy::HTTPS_PUBLIC).unwrap();
        let _ = e.replay_key();
    }
    println!("parse: {:?}/env", t.elapsed() / n as u32);
    let t = Instant::now();
    for w in &wires {
        let e = Envelope::parse(w.as_bytes(), DomainPolicy::HTTPS_PUBLIC).unwrap();
        assert!(e.verify(&alice.keys.signing_key()).is_ok());
    }
    println!("parse+verify: {:?}/env", t.elapsed() / n as u32);
    // Large envelopes: one long string, and many small members (the inbox
    // parses and verifies envelopes up to 4 KiB on the actix worker).
    let long: Map<String, serde_json::Value> =
        [("ciphertext".to_owned(), serde_json::Value::String("A".repeat(60_000)))]
            .into_iter()
            .collect();
    let members = |n: usize| -> Map<String, serde_json::Value> {
        (0..n)
            .map(|i| (format!("m{i:05}"), serde_json::Value::from(i)))
            .collect()
    };
    for (name, payload) in [
        ("one long member", long),
        ("4,000 members", members(4_000)),
        ("280 members (under the inline limit)", members(280)),
    ] {
        let wire = alice
            .keys
            .envelope(&alice.handle, &bh, MessageType::Message, payload, clock.now())
            .wire_form();
        let t = Instant::now();
        for _ in 0..100 {
            let e = Envelope::parse(wire.as_bytes(), DomainPolicy::HTTPS_PUBLIC).unwrap();
            assert!(e.verify(&alice.keys.signing_key()).is_ok());
        }
        println!(
            "parse+verify, {name}, {} bytes: {:?}/env",
            wire.len(),
            t.elapsed() / 100
        );
    }
    let t = Instant::now();
    for w in &wires {
        assert_eq!(b.receive(w.as_bytes()), Ok(Received::Accepted));
    }
    println!("receive (sqlite): {:?}/env", t.elapsed() / n as u32);
    let store = store.as_ref();
    let now = clock.now();
    let t = Instant::now();
    for i in 0..n as u32 {
        let rec = ReplayRecord {
            key: ReplayKey::from_bytes({
                let mut key = [7u8; 32];
                key[0] = (i % 251) as u8;
                key[1] = (i / 251) as u8;
                key
            }),
            sender: alice.handle.clone(),
            nonce: Nonce::empty(),
            expires_at: now.plus_secs(300),
        };
        fedid_domain::ports::write(store, None, move |tx| tx.record_replay(&rec, now))
            .wait()
            .unwrap();
    }
    println!("record_replay tx: {:?}", t.elapsed() / n as u32);
    let t = Instant::now();
    for _ in 0..n {
        let wire = wires[0].clone();
        fedid_domain::ports::write(store, None, move |tx| tx.insert_message(bob, now, None, &wire))
            .wait()
            .unwrap();
    }
    println!("insert_message tx: {:?}", t.elapsed() / n as u32);
    let t = Instant::now();
    for _ in 0..n {
        fedid_domain::ports::write(store, None, move |tx| tx.identity(bob))
            .wait()
            .unwrap();
    }
    println!("empty-ish write tx: {:?}", t.elapsed() / n as u32);
    let t = Instant::now();
    for _ in 0..n {
        b.authenticate(bob_token.expose()).unwrap();
    }
    println!("authenticate: {:?}", t.elapsed() / n as u32);
    let t = Instant::now();
    for _ in 0..n {
        b.identity(bob).unwrap();
    }
    println!("identity read: {:?}", t.elapsed() / n as u32);
}
