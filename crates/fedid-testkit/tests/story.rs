//! The whole product story across three in-process instances (issue 2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use fedid_domain::services::{FlushError, FlushOutcome, IdentityError, OutboxOutcome, ResetError};
use fedid_domain::{MessageType, PageLimit, Received, RelationshipState};
use fedid_testkit::{ClientKeys, Instance, ManualClock, Network};
use serde_json::{json, Map};

type Person = fedid_testkit::TestUser;

fn person(instance: &Instance, alias: &str) -> Person {
    instance.user(alias).unwrap()
}

fn send(from: &Person, to: &Person, kind: MessageType, clock: &ManualClock) -> OutboxOutcome {
    let payload = if kind == MessageType::Message {
        json!({"ciphertext": "3q2-7w"})
    } else {
        json!({})
    };
    let Some(payload) = payload.as_object().cloned() else {
        unreachable!()
    };
    let request = from
        .keys
        .outbox_request(&from.handle, &to.handle, kind, payload, fedid_domain::Clock::now(clock));
    from.node.send(from.user, request).unwrap()
}

fn state(p: &Person, peer: &Person) -> Option<RelationshipState> {
    let page = p.node.relationships(p.user, None, PageLimit::DEFAULT).unwrap();
    page.items
        .into_iter()
        .find(|r| r.relationship.peer == peer.handle)
        .map(|r| r.relationship.state)
}

fn inbox_len(p: &Person) -> usize {
    p.node.inbox(p.user, None, PageLimit::DEFAULT).unwrap().items.len()
}

#[test]
fn reset_and_revoke_across_three_instances() {
    let clock = Arc::new(ManualClock::at_vectors_now());
    let network = Network::new(Duration::from_millis(200));
    let a = Instance::start(&network, "a.example", clock.clone()).unwrap();
    let b = Instance::start(&network, "b.example", clock.clone()).unwrap();
    let c = Instance::start(&network, "c.example", clock.clone()).unwrap();
    let alice = person(&a, "Alice");
    let bob = person(&b, "bob");
    let carol = person(&c, "carol");
    assert_eq!(alice.handle.as_str(), "alice@a.example");

    // Relationships by REQUEST and ACCEPT through the outbox.
    assert_eq!(
        send(&alice, &bob, MessageType::RelationshipRequest, &clock),
        OutboxOutcome::Delivered
    );
    assert_eq!(state(&alice, &bob), Some(RelationshipState::Outgoing));
    assert_eq!(state(&bob, &alice), Some(RelationshipState::Incoming));
    assert_eq!(
        send(&bob, &alice, MessageType::RelationshipAccept, &clock),
        OutboxOutcome::Delivered
    );
    assert_eq!(state(&alice, &bob), Some(RelationshipState::Active));
    assert_eq!(state(&bob, &alice), Some(RelationshipState::Active));
    send(&carol, &alice, MessageType::RelationshipRequest, &clock);
    send(&alice, &carol, MessageType::RelationshipAccept, &clock);
    assert_eq!(state(&carol, &alice), Some(RelationshipState::Active));

    // Messages exchanged.
    send(&bob, &alice, MessageType::Message, &clock);
    send(&carol, &alice, MessageType::Message, &clock);
    send(&alice, &bob, MessageType::Message, &clock);
    assert_eq!(inbox_len(&alice), 4, "carol's request, bob's accept, two messages");

    // A wrong confirmation changes nothing.
    assert_eq!(
        alice.node.reset_identity(alice.user, Some("yes")),
        Err(ResetError::ConfirmationRequired)
    );
    assert_eq!(
        alice.node.reset_identity(alice.user, None),
        Err(ResetError::ConfirmationRequired)
    );
    assert_eq!(inbox_len(&alice), 4);

    // The right one erases inbox and relationships, keeps the alias, queues every former peer.
    let report = alice
        .node
        .reset_identity(alice.user, Some("erase-all-my-data"))
        .unwrap();
    assert_eq!(report.revocations_queued, 2);
    assert_eq!(report.relationships_erased, 2);
    assert_eq!(report.inbox_messages_erased, 4);
    assert_eq!(report.identity.record.alias.as_ref().map(|a| a.as_str()), Some("alice"));
    assert_eq!(report.identity.state(), "setup_required");
    assert_eq!(report.identity.pending_revocations, 2);
    assert_eq!(inbox_len(&alice), 0);
    assert_eq!(state(&alice, &bob), None);
    let again = alice
        .node
        .reset_identity(alice.user, Some("erase-all-my-data"))
        .unwrap();
    assert_eq!(
        (
            again.revocations_queued,
            again.relationships_erased,
            again.inbox_messages_erased
        ),
        (0, 0, 0)
    );
    let audit = alice.node.audit_records(alice.user).unwrap();
    assert_eq!(audit.iter().filter(|r| r.action == "identity_reset").count(), 2);

    // Alias change refused while queued; flush refused until new keys exist.
    assert_eq!(
        alice.node.set_alias(alice.user, "alice2"),
        Err(IdentityError::RevocationsPending)
    );
    let now = fedid_domain::Clock::now(clock.as_ref());
    let new_keys = ClientKeys::generate().unwrap();
    let items = vec![
        new_keys.flush_item(&alice.handle, &bob.handle, now),
        new_keys.flush_item(&alice.handle, &carol.handle, now),
    ];
    assert_eq!(alice.node.flush(alice.user, &items), Err(FlushError::IdentityNotSetUp));
    new_keys.with_keys(|k| alice.node.set_keys(alice.user, k)).unwrap();

    // Flush with carol's domain unreachable: bob's server refetches alice's rotated key.
    network.set_unreachable("c.example", true);
    let report = alice.node.flush(alice.user, &items).unwrap();
    assert_eq!(report.results[0].outcome, FlushOutcome::Delivered);
    assert_eq!(
        report.results[1].outcome,
        FlushOutcome::Failed("connect refused".into())
    );
    assert_eq!((report.delivered, report.failed, report.remaining), (1, 1, 1));
    assert_eq!(
        state(&bob, &alice),
        None,
        "bob's server verified the new key and removed the relationship"
    );
    assert_eq!(state(&carol, &alice), Some(RelationshipState::Active));
    let pending = alice
        .node
        .pending_revocations(alice.user, None, PageLimit::DEFAULT)
        .unwrap();
    assert_eq!(pending.items.len(), 1);
    assert_eq!(pending.items[0].peer, carol.handle);
    assert_eq!(pending.items[0].attempts, 1);
    assert_eq!(pending.items[0].last_error.as_deref(), Some("connect refused"));

    // The domain comes back; a second flush delivers.
    network.set_unreachable("c.example", false);
    clock.advance_secs(5);
    let now = fedid_domain::Clock::now(clock.as_ref());
    let retry = vec![new_keys.flush_item(&alice.handle, &carol.handle, now)];
    let report = alice.node.flush(alice.user, &retry).unwrap();
    assert_eq!(report.results[0].outcome, FlushOutcome::Delivered);
    assert_eq!(report.remaining, 0);
    assert_eq!(state(&carol, &alice), None);
    let carol_inbox = carol.node.inbox(carol.user, None, PageLimit::DEFAULT).unwrap().items;
    assert_eq!(
        carol_inbox.len(),
        2,
        "alice's earlier ACCEPT, then the REVOKE that removed the relationship"
    );
    assert!(carol_inbox[1].envelope.contains("\"type\":\"RELATIONSHIP_REVOKE\""));

    // Redelivering the same envelope is a duplicate with no effect.
    let envelope = new_keys.envelope(
        &alice.handle,
        &bob.handle,
        MessageType::RelationshipRequest,
        Map::new(),
        now,
    );
    assert_eq!(
        bob.node.receive(envelope.wire_form().as_bytes()),
        Ok(Received::Accepted)
    );
    let stored = inbox_len(&bob);
    assert_eq!(
        bob.node.receive(envelope.wire_form().as_bytes()),
        Ok(Received::Duplicate)
    );
    assert_eq!(inbox_len(&bob), stored);
    assert_eq!(state(&bob, &alice), Some(RelationshipState::Incoming));

    // With the queue empty, the alias may change again (no relationships left on alice's side).
    assert!(alice.node.set_alias(alice.user, "alice2").is_ok());
}
