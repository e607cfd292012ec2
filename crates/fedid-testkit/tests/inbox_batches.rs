//! Inbox deliveries to one recipient that arrive while an earlier one waits
//! for the store share its unit of work, and each keeps its own answer as
//! if it had been applied alone, in order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedid_domain::ports::{Completion, StoreError, Work, WriteUnit};
use fedid_domain::services::InboxError;
use fedid_domain::{Clock, MessageType, PageLimit, Received, RelationshipState, Settings, Store, UnixTime};
use fedid_testkit::{ClientKeys, Instance, ManualClock, MemoryStore, Network, TestUser};
use serde_json::Map;

/// A memory store that, while holding, keeps the units handed to it until
/// the test lets them run: deliveries then gather as behind a busy writer.
#[derive(Default)]
struct HeldStore {
    inner: MemoryStore,
    holding: AtomicBool,
    held: Mutex<Vec<Box<dyn WriteUnit>>>,
    handed: AtomicUsize,
}

impl Store for HeldStore {
    fn write(&self, unit: Box<dyn WriteUnit>) {
        if self.holding.load(Ordering::SeqCst) {
            self.handed.fetch_add(1, Ordering::SeqCst);
            self.held.lock().unwrap().push(unit);
        } else {
            self.inner.write(unit);
        }
    }

    fn read(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        self.inner.read(work)
    }
}

impl HeldStore {
    fn hold(&self) {
        self.holding.store(true, Ordering::SeqCst);
    }

    /// Units handed over while holding.
    fn handed(&self) -> usize {
        self.handed.load(Ordering::SeqCst)
    }

    /// Runs the held units, in order, and stops holding.
    fn release(&self) {
        self.holding.store(false, Ordering::SeqCst);
        for unit in std::mem::take(&mut *self.held.lock().unwrap()) {
            self.inner.write(unit);
        }
    }
}

struct World {
    clock: Arc<ManualClock>,
    store: Arc<HeldStore>,
    a: Instance,
    bob: TestUser,
}

fn world_with(tweak: impl FnOnce(&mut Settings)) -> World {
    let clock = Arc::new(ManualClock::at_vectors_now());
    let network = Network::new(Duration::from_millis(100));
    let a = Instance::start_with(&network, fedid_testkit::settings("a.example").unwrap(), clock.clone());
    let mut settings = fedid_testkit::settings("b.example").unwrap();
    tweak(&mut settings);
    let store = Arc::new(HeldStore::default());
    let b = fedid_testkit::start_on(&network, settings, store.clone(), clock.clone());
    let bob = TestUser::create(&b, "bob").unwrap();
    World { clock, store, a, bob }
}

fn world() -> World {
    world_with(|_| {})
}

impl World {
    fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// A user of a.example with an active relationship with bob.
    fn friend(&self, alias: &str) -> TestUser {
        let friend = self.a.user(alias).unwrap();
        self.send(&friend, &self.bob, MessageType::RelationshipRequest);
        self.send(&self.bob, &friend, MessageType::RelationshipAccept);
        friend
    }

    fn send(&self, from: &TestUser, to: &TestUser, kind: MessageType) {
        let request = from
            .keys
            .outbox_request(&from.handle, &to.handle, kind, Map::new(), self.now());
        from.node.send(from.user, request).unwrap();
    }

    fn envelope(&self, from: &TestUser, kind: MessageType) -> String {
        signed(&from.keys, from, &self.bob, kind, self.now())
    }

    /// Hands `wire` to bob's inbox without waiting for the store.
    fn deliver(&self, wire: &str) -> Completion<Received, InboxError> {
        let node = &self.bob.node;
        node.receive_checked(node.check_envelope(wire.as_bytes()).unwrap())
            .unwrap()
    }

    /// Delivers every envelope while the store holds, then lets it run;
    /// their answers, in order.
    fn deliver_together(&self, wires: &[String]) -> Vec<Result<Received, InboxError>> {
        self.store.hold();
        let completions: Vec<_> = wires.iter().map(|wire| self.deliver(wire)).collect();
        self.store.release();
        completions.into_iter().map(Completion::wait).collect()
    }

    fn inbox_len(&self) -> usize {
        self.bob
            .node
            .inbox(self.bob.user, None, PageLimit::DEFAULT)
            .unwrap()
            .items
            .len()
    }
}

/// The completion's answer, or a failure after 5 s rather than a test
/// that hangs when no answer ever comes.
fn answer_of(completion: Completion<Received, InboxError>) -> Result<Received, InboxError> {
    let (answered, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || answered.send(completion.wait()));
    answer
        .recv_timeout(Duration::from_secs(5))
        .expect("the delivery was answered")
}

fn signed(keys: &ClientKeys, from: &TestUser, to: &TestUser, kind: MessageType, at: UnixTime) -> String {
    keys.envelope(&from.handle, &to.handle, kind, Map::new(), at)
        .wire_form()
}

#[test]
fn deliveries_that_arrive_while_a_unit_waits_share_it() {
    let w = world();
    let alice = w.friend("alice");
    let before = w.inbox_len();
    let wires: Vec<String> = (0..5).map(|_| w.envelope(&alice, MessageType::Message)).collect();
    let answers = w.deliver_together(&wires);
    assert_eq!(answers, vec![Ok(Received::Accepted); 5]);
    assert_eq!(w.store.handed(), 1, "one unit for the five");
    assert_eq!(w.inbox_len(), before + 5);
}

#[test]
fn one_unit_is_handed_over_for_every_64_waiting_deliveries() {
    let w = world();
    let alice = w.friend("alice");
    let before = w.inbox_len();
    let wires: Vec<String> = (0..65).map(|_| w.envelope(&alice, MessageType::Message)).collect();
    let answers = w.deliver_together(&wires);
    assert!(answers.iter().all(|a| *a == Ok(Received::Accepted)), "{answers:?}");
    assert_eq!(w.store.handed(), 2);
    assert_eq!(w.inbox_len(), before + 65);
}

#[test]
fn a_refused_delivery_in_a_shared_unit_leaves_the_others_standing() {
    let w = world();
    let (alice, carol) = (w.friend("alice"), w.a.user("carol").unwrap());
    let before = w.inbox_len();
    let first = w.envelope(&alice, MessageType::Message);
    let wires = [
        first.clone(),
        w.envelope(&carol, MessageType::Message),
        first,
        w.envelope(&alice, MessageType::Message),
    ];
    let answers = w.deliver_together(&wires);
    assert_eq!(
        answers,
        vec![
            Ok(Received::Accepted),
            Err(InboxError::NoRelationship),
            Ok(Received::Duplicate),
            Ok(Received::Accepted)
        ]
    );
    assert_eq!(w.inbox_len(), before + 2);
}

#[test]
fn a_refused_delivery_in_a_shared_unit_consumes_no_replay_key() {
    let w = world();
    let (alice, carol) = (w.friend("alice"), w.a.user("carol").unwrap());
    let refused = w.envelope(&carol, MessageType::Message);
    let wires = [w.envelope(&alice, MessageType::Message), refused.clone()];
    assert_eq!(w.deliver_together(&wires)[1], Err(InboxError::NoRelationship));
    w.send(&carol, &w.bob, MessageType::RelationshipRequest);
    w.send(&w.bob, &carol, MessageType::RelationshipAccept);
    assert_eq!(w.deliver(&refused).wait(), Ok(Received::Accepted));
}

#[test]
fn a_nonce_used_again_within_one_unit_is_refused() {
    let w = world();
    let alice = w.friend("alice");
    let first = w.envelope(&alice, MessageType::Message);
    let mut other: serde_json::Value = serde_json::from_str(&first).unwrap();
    let reused = fedid_domain::UnsignedEnvelope {
        message_type: MessageType::Message,
        message_version: 1,
        nonce: fedid_domain::Nonce::parse(other["nonce"].take().as_str().unwrap()).unwrap(),
        from: alice.handle.clone(),
        to: w.bob.handle.clone(),
        timestamp: fedid_domain::Timestamp::from_instant(w.now()),
        payload: Map::from_iter([("other".to_owned(), serde_json::Value::Bool(true))]),
    }
    .sign(alice.keys.secret())
    .wire_form();
    let answers = w.deliver_together(&[first, reused]);
    assert_eq!(answers, vec![Ok(Received::Accepted), Err(InboxError::NonceReused)]);
}

#[test]
fn a_delivery_sees_the_relationship_an_earlier_one_of_its_unit_changed() {
    let w = world();
    let dave = w.a.user("dave").unwrap();
    w.send(&w.bob, &dave, MessageType::RelationshipRequest);
    let wires = [
        w.envelope(&dave, MessageType::RelationshipAccept),
        w.envelope(&dave, MessageType::Message),
    ];
    let answers = w.deliver_together(&wires);
    assert_eq!(answers, vec![Ok(Received::Accepted), Ok(Received::Accepted)]);
    let relationships = w.bob.node.relationships(w.bob.user, None, PageLimit::DEFAULT).unwrap();
    assert_eq!(relationships.items[0].relationship.state, RelationshipState::Active);
}

#[test]
fn the_inbox_limit_counts_the_messages_stored_earlier_in_the_same_unit() {
    let w = world_with(|s| s.inbox_messages_per_user = 3);
    let alice = w.friend("alice");
    // alice's REQUEST is stored: one of three.
    assert_eq!(w.inbox_len(), 1);
    let wires: Vec<String> = (0..3).map(|_| w.envelope(&alice, MessageType::Message)).collect();
    let answers = w.deliver_together(&wires);
    assert_eq!(
        answers,
        vec![
            Ok(Received::Accepted),
            Ok(Received::Accepted),
            Err(InboxError::InboxFull)
        ]
    );
}

#[test]
fn the_incoming_request_limit_counts_requests_of_the_same_unit() {
    let w = world_with(|s| s.incoming_requests_per_user = 1);
    let (carol, dave) = (w.a.user("carol").unwrap(), w.a.user("dave").unwrap());
    let wires = [
        w.envelope(&carol, MessageType::RelationshipRequest),
        w.envelope(&dave, MessageType::RelationshipRequest),
    ];
    let answers = w.deliver_together(&wires);
    assert_eq!(answers, vec![Ok(Received::Accepted), Err(InboxError::InboxFull)]);
}

#[test]
fn every_delivery_of_a_unit_the_store_drops_hears_the_failure() {
    let w = world();
    let alice = w.friend("alice");
    let before = w.inbox_len();
    w.store.hold();
    let completions: Vec<_> = (0..3)
        .map(|_| w.deliver(&w.envelope(&alice, MessageType::Message)))
        .collect();
    // The store answers the unit without running it, as a stopped writer does.
    for unit in std::mem::take(&mut *w.store.held.lock().unwrap()) {
        unit.finish(Err(StoreError::Unavailable("stopped".into())));
    }
    for completion in completions {
        assert!(matches!(answer_of(completion), Err(InboxError::Store(_))));
    }
    assert_eq!(w.inbox_len(), before);
}

#[test]
fn deliveries_of_a_unit_the_store_drops_unanswered_hear_it_and_later_ones_go_through() {
    let w = world();
    let alice = w.friend("alice");
    w.store.hold();
    let completions: Vec<_> = (0..3)
        .map(|_| w.deliver(&w.envelope(&alice, MessageType::Message)))
        .collect();
    // A store that stops drops its queued units without answering them.
    w.store.held.lock().unwrap().clear();
    for completion in completions {
        assert!(matches!(answer_of(completion), Err(InboxError::Store(_))));
    }
    w.store.release();
    let later = w.deliver(&w.envelope(&alice, MessageType::Message));
    assert_eq!(answer_of(later), Ok(Received::Accepted));
}
