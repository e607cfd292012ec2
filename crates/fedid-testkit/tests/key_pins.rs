//! Pins of remote key logs as the inbox keeps them (PROTOCOL.md section
//! 12), through the services over the in-memory adapters: first contact,
//! moves, the rotation grace, conflicts and unpinning, version 1 peers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use fedid_domain::keylog::{EntryClass, PeerPin, PinTarget};
use std::sync::Mutex;

use fedid_domain::ports::{read, write, KeyFetchFailure, KeyLogFetch, PublishedKeys, StoreError, SystemRandom};
use fedid_domain::services::InboxError;
use fedid_domain::services::Ports;
use fedid_domain::{Clock, EncryptionKey, Handle, MessageType, PageLimit, Received, UnixTime};
use fedid_domain::{Fedid, KeyDirectory, KeyFetcher, Store};
use fedid_testkit::{ClientKeys, Instance, ManualClock, MemoryStore, Network, TestUser};
use serde_json::Map;

struct World {
    clock: Arc<ManualClock>,
    network: Arc<Network>,
    a: Instance,
    b: Instance,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::at_vectors_now());
    let network = Network::new(Duration::from_millis(100));
    let a = Instance::start(&network, "a.example", clock.clone()).unwrap();
    let b = Instance::start(&network, "b.example", clock.clone()).unwrap();
    World { clock, network, a, b }
}

impl World {
    fn signed(&self, keys: &ClientKeys, from: &TestUser, to: &TestUser, kind: MessageType, at: UnixTime) -> String {
        keys.envelope(&from.handle, &to.handle, kind, Map::new(), at)
            .wire_form()
    }

    fn receive(&self, to: &TestUser, wire: &str) -> Result<Received, InboxError> {
        to.node.receive(wire.as_bytes())
    }

    /// Alice asks, bob accepts: bob has stored alice's REQUEST.
    fn befriend(&self, alice: &TestUser, bob: &TestUser) {
        let now = self.clock.now();
        let request = alice.keys.outbox_request(
            &alice.handle,
            &bob.handle,
            MessageType::RelationshipRequest,
            Map::new(),
            now,
        );
        alice.node.send(alice.user, request).unwrap();
        let accept = bob.keys.outbox_request(
            &bob.handle,
            &alice.handle,
            MessageType::RelationshipAccept,
            Map::new(),
            now,
        );
        bob.node.send(bob.user, accept).unwrap();
    }
}

/// Alice on a.example and bob on b.example, related: bob has stored
/// alice's REQUEST, so he pins her log.
fn related() -> (World, TestUser, TestUser) {
    let w = world();
    let (alice, bob) = (w.a.user("alice").unwrap(), w.b.user("bob").unwrap());
    w.befriend(&alice, &bob);
    (w, alice, bob)
}

/// [`related`], then alice's server publishes keys it made up, and bob
/// refuses an envelope signed with them: a conflict is recorded.
fn conflicted() -> (World, TestUser, TestUser, ClientKeys) {
    let (w, alice, bob) = related();
    let made_up = swap_keys_unlogged(&w, &alice);
    let message = w.signed(&made_up, &alice, &bob, MessageType::Message, w.clock.now());
    assert_eq!(w.receive(&bob, &message), Err(InboxError::KeyLogConflict));
    (w, alice, bob, made_up)
}

fn pin(instance: &Instance, handle: &Handle) -> Option<PeerPin> {
    let handle = handle.clone();
    read(instance.store.as_ref(), move |tx| tx.key_pin(&handle)).unwrap()
}

fn log_position(user: &TestUser) -> (u64, String) {
    let head = user.node.identity(user.user).unwrap().key_log;
    (head.seq, head.head)
}

/// Alice rotates to new keys that her old key vouches for.
fn rotate(w: &World, alice: &TestUser) -> ClientKeys {
    let (seq, head) = log_position(alice);
    let new = ClientKeys::generate().unwrap();
    new.with_proven_keys(&alice.handle, (seq, &head), w.clock.now(), Some(&alice.keys), |input| {
        alice.node.set_keys(alice.user, input)
    })
    .unwrap();
    new
}

/// Alice's server publishes keys it made up, without a log entry (what
/// a database edit or a compromised server would do).
fn swap_keys_unlogged(w: &World, alice: &TestUser) -> ClientKeys {
    let other = ClientKeys::generate().unwrap();
    let signing = other.signing_key();
    let encryption = EncryptionKey::parse(&other.public_keys().1).unwrap();
    let (user, at) = (alice.user, w.clock.now());
    write(w.a.store.as_ref(), None, move |tx| {
        tx.set_keys(user, &signing, &encryption, at)
    })
    .wait()
    .map_err(|e: StoreError| e)
    .unwrap();
    other
}

#[test]
fn bob_pins_alice_with_the_first_envelope_he_stores() {
    let w = world();
    let (alice, bob) = (w.a.user("alice").unwrap(), w.b.user("bob").unwrap());
    let request = w.signed(
        &alice.keys,
        &alice,
        &bob,
        MessageType::RelationshipRequest,
        w.clock.now(),
    );
    assert_eq!(w.receive(&bob, &request), Ok(Received::Accepted));
    let pinned = pin(&w.b, &alice.handle).expect("pinned");
    assert_eq!(pinned.position(), log_position(&alice));
    assert_eq!(pinned.change, EntryClass::First);
    let items = bob
        .node
        .relationships(bob.user, None, PageLimit::DEFAULT)
        .unwrap()
        .items;
    assert_eq!(items[0].peer_keys.as_ref(), Some(&pinned), "peerKeys shows the pin");
}

#[test]
fn an_envelope_that_stores_nothing_pins_no_stranger() {
    let w = world();
    let (mallory, bob) = (w.a.user("mallory").unwrap(), w.b.user("bob").unwrap());
    let revoke = w.signed(
        &mallory.keys,
        &mallory,
        &bob,
        MessageType::RelationshipRevoke,
        w.clock.now(),
    );
    assert_eq!(w.receive(&bob, &revoke), Ok(Received::Accepted));
    assert_eq!(pin(&w.b, &mallory.handle), None);
}

#[test]
fn local_senders_are_never_pinned() {
    let w = world();
    let (carol, bob) = (w.b.user("carol").unwrap(), w.b.user("bob").unwrap());
    let request = w.signed(
        &carol.keys,
        &carol,
        &bob,
        MessageType::RelationshipRequest,
        w.clock.now(),
    );
    assert_eq!(w.receive(&bob, &request), Ok(Received::Accepted));
    assert_eq!(pin(&w.b, &carol.handle), None);
}

#[test]
fn a_proven_rotation_moves_the_pin_as_rotated() {
    let (w, alice, bob) = related();
    let new = rotate(&w, &alice);
    let message = w.signed(&new, &alice, &bob, MessageType::Message, w.clock.now());
    assert_eq!(w.receive(&bob, &message), Ok(Received::Accepted));
    let pinned = pin(&w.b, &alice.handle).unwrap();
    assert_eq!(pinned.change, EntryClass::Rotated);
    assert_eq!(pinned.position(), log_position(&alice));
}

#[test]
fn an_envelope_signed_with_the_old_key_just_before_a_rotation_verifies_within_the_grace() {
    let (w, alice, bob) = related();
    let signed_before = w.signed(&alice.keys, &alice, &bob, MessageType::Message, w.clock.now());
    w.clock.advance_secs(1);
    let new = rotate(&w, &alice);
    let message = w.signed(&new, &alice, &bob, MessageType::Message, w.clock.now());
    assert_eq!(w.receive(&bob, &message), Ok(Received::Accepted));
    w.clock.advance_secs(60);
    assert_eq!(w.receive(&bob, &signed_before), Ok(Received::Accepted));
}

#[test]
fn the_old_key_is_refused_once_the_grace_is_over() {
    let (w, alice, bob) = related();
    let new = rotate(&w, &alice);
    let message = w.signed(&new, &alice, &bob, MessageType::Message, w.clock.now());
    assert_eq!(w.receive(&bob, &message), Ok(Received::Accepted));
    // Past `at` + 2 x skew, even an envelope whose timestamp is in the window.
    w.clock.advance_secs(601);
    let late = w.signed(
        &alice.keys,
        &alice,
        &bob,
        MessageType::Message,
        w.clock.now().plus_secs(-250),
    );
    assert_eq!(w.receive(&bob, &late), Err(InboxError::InvalidSignature));
}

#[test]
fn keys_replaced_without_a_proof_get_no_grace() {
    let (w, alice, bob) = related();
    let signed_before = w.signed(&alice.keys, &alice, &bob, MessageType::Message, w.clock.now());
    let new = ClientKeys::generate().unwrap();
    new.with_keys(|k| alice.node.set_keys(alice.user, k)).unwrap();
    let message = w.signed(&new, &alice, &bob, MessageType::Message, w.clock.now());
    assert_eq!(w.receive(&bob, &message), Ok(Received::Accepted));
    assert_eq!(pin(&w.b, &alice.handle).unwrap().change, EntryClass::Replaced);
    assert_eq!(w.receive(&bob, &signed_before), Err(InboxError::InvalidSignature));
}

#[test]
fn a_reset_shows_as_the_change_and_last_break_of_the_peers_pin() {
    let (w, alice, bob) = related();
    alice
        .node
        .reset_identity(alice.user, Some("erase-all-my-data"))
        .unwrap();
    let new = ClientKeys::generate().unwrap();
    new.with_keys(|k| alice.node.set_keys(alice.user, k)).unwrap();
    let item = new.flush_item(&alice.handle, &bob.handle, w.clock.now());
    assert_eq!(alice.node.flush(alice.user, &[item]).unwrap().delivered, 1);
    let pinned = pin(&w.b, &alice.handle).unwrap();
    assert_eq!(pinned.change, EntryClass::Reset);
    let last_break = pinned.pin.last_break.expect("a break");
    assert_eq!(
        (last_break.seq, last_break.change),
        (log_position(&alice).0, EntryClass::Reset)
    );
}

#[test]
fn a_pinned_handle_without_keys_is_checked_through_its_log_and_its_pin_moves_to_the_reset() {
    let (w, alice, bob) = related();
    alice
        .node
        .reset_identity(alice.user, Some("erase-all-my-data"))
        .unwrap();
    w.clock.advance_secs(301); // past the cached key
    let claimed = w.signed(&alice.keys, &alice, &bob, MessageType::Message, w.clock.now());
    assert_eq!(w.receive(&bob, &claimed), Err(InboxError::SenderKeysUnavailable));
    let pinned = pin(&w.b, &alice.handle).unwrap();
    assert_eq!(pinned.position(), log_position(&alice), "pinned at the reset entry");
    assert_eq!(pinned.change, EntryClass::Reset);
    assert_eq!(pinned.pin.last_break.map(|b| b.seq), Some(pinned.pin.entry.seq()));
}

#[test]
fn keys_published_without_a_log_entry_are_refused_and_recorded_for_the_operator() {
    // `conflicted` asserts the refusal, `key_log_conflict`.
    let (_w, alice, bob, _) = conflicted();
    let conflicts = bob.node.key_conflicts().unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].handle, alice.handle);
    assert_eq!(
        (conflicts[0].pinned_seq, conflicts[0].pinned_head.clone()),
        log_position(&alice)
    );
}

#[test]
fn a_recorded_conflict_stands_even_for_the_pinned_keys() {
    let (w, alice, bob, _) = conflicted();
    let genuine = w.signed(&alice.keys, &alice, &bob, MessageType::Message, w.clock.now());
    assert_eq!(w.receive(&bob, &genuine), Err(InboxError::KeyLogConflict));
}

#[test]
fn unpinning_clears_the_conflict_and_the_next_contact_is_a_first_one() {
    let (w, alice, bob, made_up) = conflicted();
    assert_eq!(bob.node.unpin(PinTarget::Handle(alice.handle.clone())), Ok(1));
    assert!(bob.node.key_conflicts().unwrap().is_empty());
    assert_eq!(pin(&w.b, &alice.handle), None);
    let audit = bob.node.audit_records(bob.user).unwrap();
    assert_eq!(audit.last().map(|a| a.action.as_str()), Some("peer_unpinned"));
    // Alice's server logs her keys properly: accepted, pinned afresh.
    made_up.with_keys(|k| alice.node.set_keys(alice.user, k)).unwrap();
    let again = w.signed(&made_up, &alice, &bob, MessageType::Message, w.clock.now());
    assert_eq!(w.receive(&bob, &again), Ok(Received::Accepted));
    let pinned = pin(&w.b, &alice.handle).unwrap();
    assert_eq!(pinned.change, EntryClass::First);
    assert_eq!(pinned.pin.last_break.map(|b| b.change), Some(EntryClass::Replaced));
}

#[test]
fn unpinning_a_domain_forgets_every_handle_of_it() {
    let w = world();
    let bob = w.b.user("bob").unwrap();
    for alias in ["alice", "carol"] {
        let peer = w.a.user(alias).unwrap();
        let request = w.signed(&peer.keys, &peer, &bob, MessageType::RelationshipRequest, w.clock.now());
        assert_eq!(w.receive(&bob, &request), Ok(Received::Accepted));
    }
    let domain = fedid_domain::Domain::parse("a.example", fedid_domain::DomainPolicy::HTTPS_PUBLIC).unwrap();
    assert_eq!(bob.node.unpin(PinTarget::Domain(domain)), Ok(2));
}

#[test]
fn a_peer_without_a_key_log_federates_unpinned() {
    let w = world();
    w.network.set_unlogged("a.example", true);
    let (alice, bob) = (w.a.user("alice").unwrap(), w.b.user("bob").unwrap());
    let request = w.signed(
        &alice.keys,
        &alice,
        &bob,
        MessageType::RelationshipRequest,
        w.clock.now(),
    );
    assert_eq!(w.receive(&bob, &request), Ok(Received::Accepted));
    assert_eq!(pin(&w.b, &alice.handle), None);
}

#[test]
fn a_pinned_peer_that_stops_publishing_its_log_is_a_downgrade() {
    let (w, alice, bob) = related();
    w.network.set_unlogged("a.example", true);
    let new = ClientKeys::generate().unwrap();
    new.with_keys(|k| alice.node.set_keys(alice.user, k)).unwrap();
    let message = w.signed(&new, &alice, &bob, MessageType::Message, w.clock.now());
    assert_eq!(w.receive(&bob, &message), Err(InboxError::KeyLogConflict));
}

/// A cache on the way that serves an old discovery answer unless asked to
/// revalidate (`Cache-Control: no-cache`).
struct StaleCache {
    network: Arc<dyn KeyFetcher>,
    old_answer: Mutex<Option<PublishedKeys>>,
}

impl KeyFetcher for StaleCache {
    fn fetch_keys(&self, handle: &Handle, refetch: bool) -> Result<PublishedKeys, KeyFetchFailure> {
        match (&*self.old_answer.lock().unwrap(), refetch) {
            (Some(old), false) => Ok(old.clone()),
            _ => self.network.fetch_keys(handle, refetch),
        }
    }

    fn fetch_key_log(&self, handle: &Handle, after: u64, refetch: bool) -> Result<KeyLogFetch, KeyFetchFailure> {
        self.network.fetch_key_log(handle, after, refetch)
    }
}

#[test]
fn a_conflict_is_checked_again_without_caches_before_it_counts() {
    let clock = Arc::new(ManualClock::at_vectors_now());
    let network = Network::new(Duration::from_millis(100));
    let a = Instance::start(&network, "a.example", clock.clone()).unwrap();
    let settings = fedid_testkit::settings("b.example").unwrap();
    let cache = Arc::new(StaleCache {
        network: network.key_fetcher(),
        old_answer: Mutex::new(None),
    });
    let store = Arc::new(MemoryStore::new());
    let keys = KeyDirectory::new(cache.clone(), store.clone(), clock.clone(), &settings);
    let fedid = Arc::new(Fedid::new(
        settings,
        Ports {
            store: store.clone() as Arc<dyn Store>,
            clock: clock.clone(),
            random: Arc::new(SystemRandom::default()),
            transport: network.transport(),
            keys: Arc::new(keys),
        },
    ));
    network.join(&fedid.settings().domain.clone(), &fedid);
    let w = World {
        clock,
        network,
        a,
        b: Instance { fedid, store },
    };
    let (alice, bob) = (w.a.user("alice").unwrap(), w.b.user("bob").unwrap());
    w.befriend(&alice, &bob);
    *cache.old_answer.lock().unwrap() = Some(cache.network.fetch_keys(&alice.handle, false).unwrap());
    let new = rotate(&w, &alice);
    let message = w.signed(&new, &alice, &bob, MessageType::Message, w.clock.now());
    assert_eq!(
        w.receive(&bob, &message),
        Ok(Received::Accepted),
        "the refetch revalidates"
    );
    w.clock.advance_secs(301);
    // The cache now answers with the log before the rotation: a rollback,
    // unless checked again without it.
    let later = w.signed(&new, &alice, &bob, MessageType::Message, w.clock.now());
    assert_eq!(w.receive(&bob, &later), Ok(Received::Accepted));
    assert!(bob.node.key_conflicts().unwrap().is_empty());
}
