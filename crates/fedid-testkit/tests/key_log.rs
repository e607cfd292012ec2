//! Users' key logs as the server writes and publishes them (PROTOCOL.md
//! section 12), checked the way a peer checks them at first contact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use fedid_domain::keylog::{check_pin, EntryClass, KeyLogEntry, LogAnswer, PinVerdict};
use fedid_domain::services::IdentityError;
use fedid_domain::{Alias, Clock};
use fedid_testkit::{ClientKeys, Instance, ManualClock, Network, TestUser};
use serde_json::Value;

fn instance() -> (Arc<ManualClock>, Instance) {
    let clock = Arc::new(ManualClock::at_vectors_now());
    let network = Network::new(Duration::from_millis(100));
    let a = Instance::start(&network, "a.example", clock.clone()).unwrap();
    (clock, a)
}

/// Every entry of `alias`'s published log, parsed, and the page's head.
fn published(a: &Instance, alias: &str) -> (Vec<KeyLogEntry>, Vec<Value>, u64, String) {
    let page = a.fedid.key_log_page(&Alias::parse(alias).unwrap(), 0).unwrap().unwrap();
    let values: Vec<Value> = page.entries.iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let entries = values.iter().map(|v| KeyLogEntry::parse(v).unwrap()).collect();
    (entries, values, page.head.seq, page.head.head)
}

/// The classes a peer gives the entries, checking them one after another.
fn classes(entries: &[KeyLogEntry], now: fedid_domain::UnixTime) -> Vec<Option<EntryClass>> {
    let mut previous: Option<&KeyLogEntry> = None;
    entries
        .iter()
        .map(|entry| {
            let class = entry.follows(previous, now, 300).unwrap();
            previous = Some(entry);
            class
        })
        .collect()
}

/// What a peer at first contact concludes from `alice`'s discovery and log.
fn first_contact(a: &Instance, alice: &TestUser) -> PinVerdict {
    let keys = a.fedid.published_identity(alice.handle.alias_str()).unwrap().unwrap();
    let (_, values, seq, head) = published(a, alice.handle.alias_str());
    let answer = LogAnswer {
        signing: keys.signing_key,
        encryption: keys.encryption_key,
        log: Some((keys.key_log.seq, keys.key_log.head.clone())),
    };
    assert_eq!((seq, head), (keys.key_log.seq, keys.key_log.head));
    check_pin(&alice.handle, None, &values, &answer, a.fedid.clock().now(), 300)
}

#[test]
fn keys_set_after_the_alias_start_the_log() {
    let (_, a) = instance();
    let alice = a.user("alice").unwrap();
    let (entries, _, seq, head) = published(&a, "alice");
    assert_eq!((entries.len(), seq), (1, 1));
    assert_eq!(entries[0].hash(), head);
    assert_eq!(entries[0].handle(), &alice.handle);
    let identity = a.fedid.identity(alice.user).unwrap();
    assert_eq!((identity.key_log.seq, identity.key_log.head), (1, head));
}

#[test]
fn the_same_keys_again_append_nothing() {
    let (_, a) = instance();
    let alice = a.user("alice").unwrap();
    alice.keys.with_keys(|k| alice.node.set_keys(alice.user, k)).unwrap();
    assert_eq!(published(&a, "alice").2, 1);
}

#[test]
fn keys_set_before_an_alias_are_logged_when_it_is_set() {
    let (_, a) = instance();
    let (user, _) = a.fedid.create_user().unwrap();
    ClientKeys::generate()
        .unwrap()
        .with_keys(|k| a.fedid.set_keys(user, k))
        .unwrap();
    assert_eq!(a.fedid.identity(user).unwrap().key_log.seq, 0);
    a.fedid.set_alias(user, "alice").unwrap();
    assert_eq!(published(&a, "alice").2, 1);
}

#[test]
fn an_alias_change_a_replacement_and_a_reset_are_logged_and_classed() {
    let (clock, a) = instance();
    let alice = a.user("alice").unwrap();
    clock.advance_secs(60);
    a.fedid.set_alias(alice.user, "ally").unwrap();
    clock.advance_secs(60);
    let replaced = ClientKeys::generate().unwrap();
    replaced.with_keys(|k| a.fedid.set_keys(alice.user, k)).unwrap();
    clock.advance_secs(60);
    a.fedid.reset_identity(alice.user, Some("erase-all-my-data")).unwrap();
    clock.advance_secs(60);
    let after_reset = ClientKeys::generate().unwrap();
    after_reset.with_keys(|k| a.fedid.set_keys(alice.user, k)).unwrap();
    let (entries, _, seq, _) = published(&a, "ally");
    assert_eq!(seq, 5);
    assert_eq!(
        classes(&entries, clock.now()),
        vec![
            Some(EntryClass::First),
            Some(EntryClass::Unchanged),
            Some(EntryClass::Replaced),
            None,
            Some(EntryClass::Reset),
        ]
    );
    assert_eq!(entries[0].handle().as_str(), "alice@a.example");
    assert_eq!(entries[4].handle().as_str(), "ally@a.example");
}

#[test]
fn a_published_log_passes_a_peers_first_contact_check() {
    let (clock, a) = instance();
    let alice = a.user("alice").unwrap();
    clock.advance_secs(60);
    a.fedid.reset_identity(alice.user, Some("erase-all-my-data")).unwrap();
    let keys = ClientKeys::generate().unwrap();
    keys.with_keys(|k| a.fedid.set_keys(alice.user, k)).unwrap();
    match first_contact(&a, &alice) {
        PinVerdict::Ok { change, pin } => {
            assert_eq!(change, Some(EntryClass::First));
            assert_eq!(pin.entry.seq(), 3);
            assert_eq!(pin.last_break.map(|b| (b.seq, b.change)), Some((3, EntryClass::Reset)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_log_survives_a_reset_and_stays_public_without_keys() {
    let (_, a) = instance();
    let alice = a.user("alice").unwrap();
    a.fedid.reset_identity(alice.user, Some("erase-all-my-data")).unwrap();
    assert!(
        a.fedid.published_identity("alice").unwrap().is_none(),
        "no keys to discover"
    );
    let (entries, _, seq, _) = published(&a, "alice");
    assert_eq!((entries.len(), seq), (2, 2));
    assert!(matches!(entries[1].kind(), fedid_domain::keylog::EntryKind::Reset));
}

#[test]
fn an_eleventh_append_in_a_day_is_rate_limited() {
    let (clock, a) = instance();
    let alice = a.user("alice").unwrap();
    for _ in 0..9 {
        clock.advance_secs(1);
        ClientKeys::generate()
            .unwrap()
            .with_keys(|k| a.fedid.set_keys(alice.user, k))
            .unwrap();
    }
    let eleventh = ClientKeys::generate()
        .unwrap()
        .with_keys(|k| a.fedid.set_keys(alice.user, k));
    assert!(
        matches!(eleventh, Err(IdentityError::RateLimited { .. })),
        "{eleventh:?}"
    );
    clock.advance_secs(86_400);
    ClientKeys::generate()
        .unwrap()
        .with_keys(|k| a.fedid.set_keys(alice.user, k))
        .unwrap();
}

#[test]
fn keys_that_predate_the_log_get_their_first_entry_at_start() {
    let (clock, a) = instance();
    let (user, _) = a.fedid.create_user().unwrap();
    a.fedid.set_alias(user, "alice").unwrap();
    let keys = ClientKeys::generate().unwrap();
    let (signing, encryption) = keys.public_keys();
    let set_at = clock.now();
    let (signing, encryption) = (
        fedid_domain::SigningKey::parse(&signing).unwrap(),
        fedid_domain::EncryptionKey::parse(&encryption).unwrap(),
    );
    // As a server before the log wrote them: no entry.
    fedid_domain::ports::write(a.store.as_ref(), None, move |tx| {
        tx.set_keys(user, &signing, &encryption, set_at)
    })
    .wait()
    .unwrap();
    assert_eq!(a.fedid.identity(user).unwrap().key_log.seq, 0);
    clock.advance_secs(3_600);
    assert_eq!(a.fedid.backfill_key_logs().unwrap(), 1);
    assert_eq!(a.fedid.backfill_key_logs().unwrap(), 0, "once");
    let (entries, _, _, _) = published(&a, "alice");
    assert_eq!(
        entries[0].at().instant(),
        fedid_domain::UnixTime::from_secs(set_at.as_secs())
    );
}

/// alice's log position now.
fn position(a: &Instance, alice: &TestUser) -> (u64, String) {
    let log = a.fedid.identity(alice.user).unwrap().key_log;
    (log.seq, log.head)
}

#[test]
fn a_proven_rotation_is_classed_rotated_by_a_peer() {
    let (clock, a) = instance();
    let alice = a.user("alice").unwrap();
    clock.advance_secs(60);
    let new = ClientKeys::generate().unwrap();
    let (seq, head) = position(&a, &alice);
    new.with_proven_keys(&alice.handle, (seq, &head), clock.now(), Some(&alice.keys), |k| {
        a.fedid.set_keys(alice.user, k)
    })
    .unwrap();
    let (entries, _, _, _) = published(&a, "alice");
    assert_eq!(
        classes(&entries, clock.now()),
        vec![Some(EntryClass::First), Some(EntryClass::Rotated)]
    );
    assert_eq!(
        a.fedid.identity(alice.user).unwrap().record.signing_key,
        Some(new.signing_key())
    );
}

#[test]
fn a_client_entry_that_does_not_follow_the_log_is_a_conflict() {
    let (clock, a) = instance();
    let alice = a.user("alice").unwrap();
    let new = ClientKeys::generate().unwrap();
    let (_, head) = position(&a, &alice);
    let stale = new.with_proven_keys(&alice.handle, (0, ""), clock.now(), None, |k| {
        a.fedid.set_keys(alice.user, k)
    });
    assert_eq!(stale.unwrap_err(), IdentityError::KeyLogConflict);
    let ahead = new.with_proven_keys(&alice.handle, (5, &head), clock.now(), None, |k| {
        a.fedid.set_keys(alice.user, k)
    });
    assert_eq!(ahead.unwrap_err(), IdentityError::KeyLogConflict);
}

#[test]
fn a_proof_by_another_key_is_invalid() {
    let (clock, a) = instance();
    let alice = a.user("alice").unwrap();
    let new = ClientKeys::generate().unwrap();
    let (seq, head) = position(&a, &alice);
    // Signed for another handle: the entry the server rebuilds differs.
    let other = fedid_domain::Handle::parse("mallory@a.example", fedid_domain::DomainPolicy::HTTPS_PUBLIC).unwrap();
    let wrong = new.with_proven_keys(&other, (seq, &head), clock.now(), None, |k| {
        a.fedid.set_keys(alice.user, k)
    });
    assert_eq!(wrong.unwrap_err(), IdentityError::InvalidProof { member: "proof" });
    let stranger = ClientKeys::generate().unwrap();
    let bad_rotation = new.with_proven_keys(&alice.handle, (seq, &head), clock.now(), Some(&stranger), |k| {
        a.fedid.set_keys(alice.user, k)
    });
    assert_eq!(
        bad_rotation.unwrap_err(),
        IdentityError::InvalidProof {
            member: "rotationProof"
        }
    );
}

#[test]
fn a_rotation_proof_across_a_reset_is_invalid() {
    let (clock, a) = instance();
    let alice = a.user("alice").unwrap();
    a.fedid.reset_identity(alice.user, Some("erase-all-my-data")).unwrap();
    let new = ClientKeys::generate().unwrap();
    let (seq, head) = position(&a, &alice);
    let across = new.with_proven_keys(&alice.handle, (seq, &head), clock.now(), Some(&alice.keys), |k| {
        a.fedid.set_keys(alice.user, k)
    });
    assert_eq!(
        across.unwrap_err(),
        IdentityError::InvalidProof {
            member: "rotationProof"
        }
    );
}

#[test]
fn a_client_entry_outside_the_skew_window_is_refused() {
    let (clock, a) = instance();
    let alice = a.user("alice").unwrap();
    let new = ClientKeys::generate().unwrap();
    let (seq, head) = position(&a, &alice);
    let late = clock.now().plus_secs(-301);
    let refused = new.with_proven_keys(&alice.handle, (seq, &head), late, None, |k| {
        a.fedid.set_keys(alice.user, k)
    });
    assert_eq!(refused.unwrap_err(), IdentityError::TimestampOutOfWindow);
}

#[test]
fn a_client_entry_needs_an_alias() {
    let (clock, a) = instance();
    let (user, _) = a.fedid.create_user().unwrap();
    let nobody = fedid_domain::Handle::parse("nobody@a.example", fedid_domain::DomainPolicy::HTTPS_PUBLIC).unwrap();
    let keys = ClientKeys::generate().unwrap();
    let refused = keys.with_proven_keys(&nobody, (0, ""), clock.now(), None, |k| a.fedid.set_keys(user, k));
    assert_eq!(refused.unwrap_err(), IdentityError::IdentityNotSetUp);
}

#[test]
fn the_in_process_network_serves_discovery_with_the_log_and_its_pages() {
    let clock = Arc::new(ManualClock::at_vectors_now());
    let network = Network::new(Duration::from_millis(100));
    let a = Instance::start(&network, "a.example", clock.clone()).unwrap();
    let alice = a.user("alice").unwrap();
    let fetcher = network.key_fetcher();
    let keys = fetcher.fetch_keys(&alice.handle, false).unwrap();
    let page = fetcher.fetch_key_log(&alice.handle, 0, false).unwrap();
    assert_eq!(keys.key_log, Some((page.seq, page.head.clone())));
    let answer = LogAnswer {
        signing: keys.signing_key,
        encryption: keys.encryption_key,
        log: keys.key_log,
    };
    assert!(matches!(
        check_pin(&alice.handle, None, &page.entries, &answer, clock.now(), 300),
        PinVerdict::Ok { .. }
    ));
}

#[test]
fn a_keylog_page_holds_at_most_100_entries_and_names_the_whole_log() {
    let (clock, a) = instance();
    let alice = a.user("alice").unwrap();
    let (user, now) = (alice.user, clock.now());
    fedid_domain::ports::write(a.store.as_ref(), None, move |tx| {
        for seq in 2..=150u64 {
            tx.key_log_append(user, seq, &format!("{{\"seq\":{seq}}}"), &format!("h{seq}"), now)?;
        }
        Ok::<_, fedid_domain::StoreError>(())
    })
    .wait()
    .unwrap();
    let alias = Alias::parse("alice").unwrap();
    let page = a.fedid.key_log_page(&alias, 0).unwrap().unwrap();
    assert_eq!(page.entries.len(), fedid_domain::services::KEY_LOG_PAGE);
    assert_eq!((page.head.seq, page.head.head.as_str()), (150, "h150"));
    let rest = a.fedid.key_log_page(&alias, 100).unwrap().unwrap();
    assert_eq!(rest.entries.len(), 50);
    assert_eq!(rest.entries[0], "{\"seq\":101}");
}
