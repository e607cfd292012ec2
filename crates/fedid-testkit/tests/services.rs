//! Every error code and outcome of PROTOCOL.md sections 5, 8, 9, 10 and the
//! flush, through the services over the in-memory adapters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use fedid_domain::services::{FlushError, FlushOutcome, IdentityError, InboxError, OutboxError, OutboxOutcome};
use fedid_domain::{
    Clock, Domain, DomainPolicy, EnvelopeError, Handle, MessageType, PageLimit, Received, RelationshipState, Settings,
    UnixTime,
};
use fedid_testkit::{ClientKeys, Instance, ManualClock, Network};
use serde_json::{json, Map, Value};

struct World {
    clock: Arc<ManualClock>,
    network: Arc<Network>,
    a: Instance,
    b: Instance,
}

type Person = fedid_testkit::TestUser;

fn settings(domain: &str, tweak: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = fedid_testkit::settings(domain).unwrap();
    tweak(&mut s);
    s
}

fn world_with(tweak_b: impl FnOnce(&mut Settings)) -> World {
    let clock = Arc::new(ManualClock::at_vectors_now());
    let network = Network::new(Duration::from_millis(100));
    let a = Instance::start_with(&network, settings("a.example", |_| {}), clock.clone());
    let b = Instance::start_with(&network, settings("b.example", tweak_b), clock.clone());
    World { clock, network, a, b }
}

fn world() -> World {
    world_with(|_| {})
}

fn person(instance: &Instance, alias: &str) -> Person {
    instance.user(alias).unwrap()
}

impl World {
    fn now(&self) -> UnixTime {
        self.clock.now()
    }

    fn envelope(&self, from: &Person, to: &Person, kind: MessageType) -> String {
        from.keys
            .envelope(&from.handle, &to.handle, kind, Map::new(), self.now())
            .wire_form()
    }

    fn send(&self, from: &Person, to: &Person, kind: MessageType) -> Result<OutboxOutcome, OutboxError> {
        let request = from
            .keys
            .outbox_request(&from.handle, &to.handle, kind, Map::new(), self.now());
        from.node.send(from.user, request)
    }

    fn befriend(&self, x: &Person, y: &Person) {
        self.send(x, y, MessageType::RelationshipRequest).unwrap();
        self.send(y, x, MessageType::RelationshipAccept).unwrap();
    }
}

fn state(p: &Person, peer: &Handle) -> Option<RelationshipState> {
    p.node
        .relationships(p.user, None, PageLimit::DEFAULT)
        .unwrap()
        .items
        .into_iter()
        .find(|r| r.relationship.peer == *peer)
        .map(|r| r.relationship.state)
}

fn inbox_len(p: &Person) -> usize {
    p.node.inbox(p.user, None, PageLimit::DEFAULT).unwrap().items.len()
}

fn edit(wire: &str, change: impl FnOnce(&mut Map<String, Value>)) -> Vec<u8> {
    let mut value: Value = serde_json::from_str(wire).unwrap();
    change(value.as_object_mut().unwrap());
    serde_json::to_vec(&value).unwrap()
}

/// The inbox's step-1 code for alice's REQUEST to bob edited by `change`.
fn step_one_code(change: impl FnOnce(&mut Map<String, Value>)) -> &'static str {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let wire = w.envelope(&alice, &bob, MessageType::RelationshipRequest);
    bob.node.receive(&edit(&wire, change)).unwrap_err().code()
}

#[test]
fn a_body_that_is_not_a_json_object_is_an_invalid_envelope() {
    let w = world();
    let bob = person(&w.b, "bob");
    for body in [&b"not json"[..], b"[]"] {
        assert_eq!(bob.node.receive(body).unwrap_err().code(), "invalid_envelope");
    }
}

#[test]
fn another_protocol_version_is_refused_before_any_member_rule() {
    let code = step_one_code(|o| {
        o.insert("protocol_version".into(), json!(2));
        o.remove("from");
    });
    assert_eq!(code, "unsupported_protocol_version");
}

#[test]
fn an_unknown_message_type_is_unsupported() {
    let code = step_one_code(|o| {
        o.insert("message_type".into(), json!("POKE"));
        o.insert("type".into(), json!("POKE"));
    });
    assert_eq!(code, "unsupported_message_type");
}

#[test]
fn a_message_type_not_in_upper_case_is_an_invalid_envelope() {
    let code = step_one_code(|o| {
        o.insert("message_type".into(), json!("poke"));
    });
    assert_eq!(code, "invalid_envelope");
}

#[test]
fn a_payload_over_the_size_limit_is_too_large() {
    let mut big = Map::new();
    big.insert("x".into(), json!("y".repeat(70_000)));
    let code = step_one_code(|o| {
        o.insert("payload".into(), Value::Object(big));
    });
    assert_eq!(code, "payload_too_large");
}

/// A payload of `depth` nested objects.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!({}), |inner, _| json!({ "d": inner }))
}

#[test]
fn a_payload_nested_to_the_depth_limit_passes_step_one() {
    // Step 1 passes; the edit then breaks the signature (step 5).
    let code = step_one_code(|o| {
        o.insert("payload".into(), nested(31));
    });
    assert_eq!(code, "invalid_signature");
}

#[test]
fn a_payload_nested_past_the_depth_limit_is_an_invalid_envelope() {
    let code = step_one_code(|o| {
        o.insert("payload".into(), nested(32));
    });
    assert_eq!(code, "invalid_envelope");
}

#[test]
fn a_null_nonce_is_an_invalid_envelope() {
    let code = step_one_code(|o| {
        o.insert("nonce".into(), Value::Null);
    });
    assert_eq!(code, "invalid_envelope");
}

#[test]
fn a_message_version_of_zero_is_an_invalid_envelope() {
    let code = step_one_code(|o| {
        o.insert("message_version".into(), json!(0));
    });
    assert_eq!(code, "invalid_envelope");
}

#[test]
fn inbox_recipient_allow_list_and_window() {
    let w = world_with(|s| s.allowed_domains = vec![Domain::parse("c.example", DomainPolicy::HTTPS_PUBLIC).unwrap()]);
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let wire = w.envelope(&alice, &bob, MessageType::RelationshipRequest);
    assert_eq!(bob.node.receive(wire.as_bytes()), Err(InboxError::DomainNotAllowed));
    let to_nobody = edit(&wire, |o| {
        o.insert("to".into(), json!("nobody@b.example"));
    });
    assert_eq!(
        bob.node.receive(&to_nobody),
        Err(InboxError::UnknownRecipient),
        "recipient is checked before the allow-list"
    );
    let elsewhere = edit(&wire, |o| {
        o.insert("to".into(), json!("bob@c.example"));
    });
    assert_eq!(bob.node.receive(&elsewhere), Err(InboxError::UnknownRecipient));

    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let wire = w.envelope(&alice, &bob, MessageType::RelationshipRequest);
    w.clock.advance_secs(300);
    assert_eq!(
        bob.node.receive(wire.as_bytes()),
        Ok(Received::Accepted),
        "the boundary is inside the window"
    );
    let late = w.envelope(&alice, &bob, MessageType::Message);
    w.clock.advance_secs(301);
    assert_eq!(bob.node.receive(late.as_bytes()), Err(InboxError::TimestampOutOfWindow));
}

/// With the sender's key cached, the inbox verifies before it reads the
/// store; the refusals still come in the order of section 8.
#[test]
fn refusals_keep_their_order_when_the_sender_key_is_cached() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.befriend(&alice, &bob);
    let before = inbox_len(&bob);
    let forger = ClientKeys::generate().unwrap();
    let forged_to = |to: &str| {
        let to = Handle::parse(to, DomainPolicy::HTTPS_PUBLIC).unwrap();
        forger
            .envelope(&alice.handle, &to, MessageType::Message, Map::new(), w.now())
            .wire_form()
    };
    assert_eq!(
        bob.node.receive(forged_to("nobody@b.example").as_bytes()),
        Err(InboxError::UnknownRecipient),
        "step 2 before step 5"
    );
    assert_eq!(
        bob.node.receive(forged_to("bob@b.example").as_bytes()),
        Err(InboxError::InvalidSignature)
    );
    let to_nobody = edit(&w.envelope(&alice, &bob, MessageType::Message), |o| {
        o.insert("to".into(), json!("nobody@b.example"));
    });
    assert_eq!(bob.node.receive(&to_nobody), Err(InboxError::UnknownRecipient));
    let valid = w.envelope(&alice, &bob, MessageType::Message);
    w.clock.advance_secs(301);
    assert_eq!(
        bob.node.receive(valid.as_bytes()),
        Err(InboxError::TimestampOutOfWindow)
    );
    let valid = w.envelope(&alice, &bob, MessageType::Message);
    assert_eq!(bob.node.receive(valid.as_bytes()), Ok(Received::Accepted));
    assert_eq!(inbox_len(&bob), before + 1, "only the valid message is stored");
}

#[test]
fn recipient_without_keys_takes_only_revokes() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.befriend(&alice, &bob);
    bob.node.reset_identity(bob.user, Some("erase-all-my-data")).unwrap();
    let request = w.envelope(&alice, &bob, MessageType::Message);
    assert_eq!(bob.node.receive(request.as_bytes()), Err(InboxError::UnknownRecipient));
    let revoke = w.envelope(&alice, &bob, MessageType::RelationshipRevoke);
    assert_eq!(bob.node.receive(revoke.as_bytes()), Ok(Received::Accepted));
    assert_eq!(
        bob.node.published_identity("bob").unwrap(),
        None,
        "no keys are published after a reset"
    );
}

/// An envelope of `kind` from `from` to `to`, signed with `keys`.
fn signed_by(keys: &ClientKeys, from: &Handle, to: &Handle, kind: MessageType, w: &World) -> String {
    keys.envelope(from, to, kind, Map::new(), w.now()).wire_form()
}

#[test]
fn a_sender_with_no_published_key_is_sender_keys_unavailable() {
    let w = world();
    let bob = person(&w.b, "bob");
    let ghost = Handle::parse("ghost@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let wire = signed_by(
        &ClientKeys::generate().unwrap(),
        &ghost,
        &bob.handle,
        MessageType::RelationshipRequest,
        &w,
    );
    assert_eq!(
        bob.node.receive(wire.as_bytes()),
        Err(InboxError::SenderKeysUnavailable)
    );
}

#[test]
fn an_unreachable_sender_domain_is_not_asked_again_for_60_seconds() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.network.set_unreachable("a.example", true);
    let wire = w.envelope(&alice, &bob, MessageType::RelationshipRequest);
    assert_eq!(
        bob.node.receive(wire.as_bytes()),
        Err(InboxError::SenderKeysUnavailable)
    );
    w.network.set_unreachable("a.example", false);
    assert_eq!(
        bob.node.receive(wire.as_bytes()),
        Err(InboxError::SenderKeysUnavailable),
        "the failure is remembered"
    );
    w.clock.advance_secs(61);
    let wire = w.envelope(&alice, &bob, MessageType::RelationshipRequest);
    assert_eq!(bob.node.receive(wire.as_bytes()), Ok(Received::Accepted));
}

#[test]
fn a_signature_by_another_key_is_invalid() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let forged = signed_by(
        &ClientKeys::generate().unwrap(),
        &alice.handle,
        &bob.handle,
        MessageType::RelationshipRequest,
        &w,
    );
    assert_eq!(bob.node.receive(forged.as_bytes()), Err(InboxError::InvalidSignature));
}

#[test]
fn a_rotated_key_is_fetched_again_only_30_seconds_after_the_last_refetch() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let first = w.envelope(&alice, &bob, MessageType::RelationshipRequest);
    assert_eq!(bob.node.receive(first.as_bytes()), Ok(Received::Accepted));
    let rotated = ClientKeys::generate().unwrap();
    rotated.with_keys(|k| alice.node.set_keys(alice.user, k)).unwrap();
    // The cached key fails: one refetch, which finds the new key.
    let fresh = signed_by(&rotated, &alice.handle, &bob.handle, MessageType::Message, &w);
    assert_eq!(bob.node.receive(fresh.as_bytes()), Err(InboxError::NoRelationship));
    let again = ClientKeys::generate().unwrap();
    again.with_keys(|k| alice.node.set_keys(alice.user, k)).unwrap();
    let within = signed_by(&again, &alice.handle, &bob.handle, MessageType::Message, &w);
    assert_eq!(
        bob.node.receive(within.as_bytes()),
        Err(InboxError::InvalidSignature),
        "no second refetch within 30 s"
    );
    w.clock.advance_secs(31);
    let after = signed_by(&again, &alice.handle, &bob.handle, MessageType::Message, &w);
    assert_eq!(bob.node.receive(after.as_bytes()), Err(InboxError::NoRelationship));
}

#[test]
fn a_refetch_that_finds_no_key_is_sender_keys_unavailable() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let first = w.envelope(&alice, &bob, MessageType::RelationshipRequest);
    assert_eq!(bob.node.receive(first.as_bytes()), Ok(Received::Accepted));
    alice
        .node
        .reset_identity(alice.user, Some("erase-all-my-data"))
        .unwrap();
    let forged = signed_by(
        &ClientKeys::generate().unwrap(),
        &alice.handle,
        &bob.handle,
        MessageType::RelationshipRevoke,
        &w,
    );
    assert_eq!(
        bob.node.receive(forged.as_bytes()),
        Err(InboxError::SenderKeysUnavailable)
    );
}

#[test]
fn replay_and_nonce_rules() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let wire = w.envelope(&alice, &bob, MessageType::RelationshipRequest);
    assert_eq!(bob.node.receive(wire.as_bytes()), Ok(Received::Accepted));
    assert_eq!(bob.node.receive(wire.as_bytes()), Ok(Received::Duplicate));
    // Same nonce, other bytes: nonce_reused.
    let first: Value = serde_json::from_str(&wire).unwrap();
    let nonce = fedid_domain::Nonce::parse(first["nonce"].as_str().unwrap()).unwrap();
    let reused = fedid_domain::UnsignedEnvelope {
        message_type: MessageType::Message,
        message_version: 1,
        nonce,
        from: alice.handle.clone(),
        to: bob.handle.clone(),
        timestamp: fedid_domain::Timestamp::from_instant(w.now()),
        payload: Map::new(),
    }
    .sign(alice.keys.secret());
    assert_eq!(
        bob.node.receive(reused.wire_form().as_bytes()),
        Err(InboxError::NonceReused)
    );
    // A refused envelope consumes neither its replay key nor its nonce.
    let message = w.envelope(&alice, &bob, MessageType::Message);
    assert_eq!(bob.node.receive(message.as_bytes()), Err(InboxError::NoRelationship));
    w.send(&alice, &bob, MessageType::RelationshipRequest).unwrap();
    w.send(&bob, &alice, MessageType::RelationshipAccept).unwrap();
    assert_eq!(bob.node.receive(message.as_bytes()), Ok(Received::Accepted));
    // After the window the replay row no longer counts (and is pruned).
    w.clock.advance_secs(700);
    assert!(bob.node.prune_replay_keys(1000).unwrap() >= 2);
}

#[test]
fn received_relationship_rules_and_limits() {
    let w = world_with(|s| {
        s.inbox_messages_per_user = 3;
        s.incoming_requests_per_user = 1;
    });
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let carol = person(&w.a, "carol");
    let receive = |from: &Person, kind| bob.node.receive(w.envelope(from, &bob, kind).as_bytes());
    assert_eq!(
        receive(&alice, MessageType::RelationshipAccept),
        Err(InboxError::NoPendingRequest)
    );
    assert_eq!(receive(&alice, MessageType::Message), Err(InboxError::NoRelationship));
    assert_eq!(receive(&alice, MessageType::RelationshipRevoke), Ok(Received::Accepted));
    assert_eq!(inbox_len(&bob), 0, "a REVOKE with nothing to remove is not stored");
    assert_eq!(
        receive(&alice, MessageType::RelationshipRequest),
        Ok(Received::Accepted)
    );
    assert_eq!(state(&bob, &alice.handle), Some(RelationshipState::Incoming));
    assert_eq!(
        receive(&alice, MessageType::RelationshipAccept),
        Err(InboxError::NoPendingRequest)
    );
    assert_eq!(
        receive(&alice, MessageType::RelationshipRequest),
        Ok(Received::Accepted)
    );
    assert_eq!(inbox_len(&bob), 1, "a repeated REQUEST is not stored");
    assert_eq!(
        receive(&carol, MessageType::RelationshipRequest),
        Err(InboxError::InboxFull),
        "incoming limit"
    );
    w.send(&alice, &bob, MessageType::RelationshipRequest).unwrap();
    w.send(&bob, &alice, MessageType::RelationshipAccept).unwrap();
    assert_eq!(state(&bob, &alice.handle), Some(RelationshipState::Active));
    assert_eq!(receive(&alice, MessageType::RelationshipAccept), Ok(Received::Accepted));
    assert_eq!(receive(&alice, MessageType::Message), Ok(Received::Accepted));
    assert_eq!(receive(&alice, MessageType::Message), Ok(Received::Accepted));
    assert_eq!(inbox_len(&bob), 3);
    assert_eq!(receive(&alice, MessageType::Message), Err(InboxError::InboxFull));
    assert_eq!(
        receive(&alice, MessageType::RelationshipRevoke),
        Ok(Received::Accepted),
        "never refused for limits"
    );
    assert_eq!(inbox_len(&bob), 4);
    assert_eq!(state(&bob, &alice.handle), None);
}

#[test]
fn one_sender_without_consent_stores_at_most_its_limit_even_when_requests_and_revokes_cancel_out() {
    let w = world_with(|s| s.unsolicited_per_sender = 4);
    let (mallory, bob) = (person(&w.a, "mallory"), person(&w.b, "bob"));
    let receive = |from: &Person, kind| bob.node.receive(w.envelope(from, &bob, kind).as_bytes());
    let mut refused = 0;
    for _ in 0..10 {
        if receive(&mallory, MessageType::RelationshipRequest) == Err(InboxError::InboxFull) {
            refused += 1;
        }
        assert_eq!(
            receive(&mallory, MessageType::RelationshipRevoke),
            Ok(Received::Accepted)
        );
    }
    assert_eq!(inbox_len(&bob), 4, "two messages a cycle until the limit");
    assert_eq!(refused, 8);
    let carol = person(&w.a, "carol");
    assert_eq!(
        receive(&carol, MessageType::RelationshipRequest),
        Ok(Received::Accepted),
        "other senders still get in"
    );
}

#[test]
fn a_revoke_is_stored_even_past_a_strangers_limit() {
    let w = world_with(|s| s.unsolicited_per_sender = 1);
    let (mallory, bob) = (person(&w.a, "mallory"), person(&w.b, "bob"));
    let receive = |kind| bob.node.receive(w.envelope(&mallory, &bob, kind).as_bytes());
    assert_eq!(receive(MessageType::RelationshipRequest), Ok(Received::Accepted));
    assert_eq!(receive(MessageType::RelationshipRevoke), Ok(Received::Accepted));
    assert_eq!(
        inbox_len(&bob),
        2,
        "the REVOKE removed the request and was stored past the limit"
    );
    assert_eq!(receive(MessageType::RelationshipRequest), Err(InboxError::InboxFull));
}

#[test]
fn a_peer_with_an_active_relationship_is_not_bounded_as_a_stranger() {
    let w = world_with(|s| s.unsolicited_per_sender = 2);
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.befriend(&bob, &alice);
    for _ in 0..5 {
        let wire = w.envelope(&alice, &bob, MessageType::Message);
        assert_eq!(bob.node.receive(wire.as_bytes()), Ok(Received::Accepted));
    }
    assert_eq!(inbox_len(&bob), 6, "the ACCEPT and five messages");
}

#[test]
fn alias_changes_are_bounded_per_day_with_the_wait_then_in_all() {
    let w = world_with(|s| {
        s.alias_changes_per_day = 2;
        s.alias_changes_total = 3;
    });
    let node = &w.b.fedid;
    let (user, _) = node.create_user().unwrap();
    node.set_alias(user, "one").unwrap();
    w.clock.advance_secs(3600);
    node.set_alias(user, "two").unwrap();
    assert_eq!(
        node.set_alias(user, "three"),
        Err(IdentityError::RateLimited {
            retry_after_secs: Some(86_400 - 3600)
        })
    );
    assert!(node.set_alias(user, "two").is_ok(), "the alias it has is no change");
    w.clock.advance_secs(86_400 - 3600);
    node.set_alias(user, "three").unwrap();
    w.clock.advance_secs(10 * 86_400);
    assert_eq!(
        node.set_alias(user, "four"),
        Err(IdentityError::RateLimited { retry_after_secs: None }),
        "the total never renews"
    );
}

#[test]
fn an_alias_must_be_valid_and_free() {
    let w = world();
    let alice = person(&w.a, "alice");
    let (other, _) = alice.node.create_user().unwrap();
    assert!(matches!(
        alice.node.set_alias(other, "a"),
        Err(IdentityError::InvalidAlias(_))
    ));
    assert_eq!(alice.node.set_alias(other, "ALICE"), Err(IdentityError::AliasTaken));
    assert!(
        alice.node.set_alias(alice.user, "Alice").is_ok(),
        "setting the same alias is a no-op"
    );
}

#[test]
fn aliases_are_never_reused() {
    let w = world();
    let alice = person(&w.a, "alice");
    let (other, _) = alice.node.create_user().unwrap();
    alice.node.set_alias(alice.user, "alicia").unwrap();
    assert_eq!(alice.node.set_alias(other, "alice"), Err(IdentityError::AliasTaken));
    assert!(
        alice.node.set_alias(alice.user, "alice").is_ok(),
        "its holder may return to it"
    );
}

#[test]
fn an_alias_cannot_change_while_relationships_exist() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.befriend(&alice, &bob);
    assert_eq!(
        alice.node.set_alias(alice.user, "alice3"),
        Err(IdentityError::RelationshipsExist)
    );
}

#[test]
fn keys_are_checked_signing_key_first() {
    let w = world();
    let alice = person(&w.a, "alice");
    let set = |s: &str, e: &str| {
        alice.node.set_keys(
            alice.user,
            fedid_domain::services::KeysInput {
                signing_key: s,
                encryption_key: e,
                entry: None,
            },
        )
    };
    let member = |result: Result<_, IdentityError>| match result {
        Err(IdentityError::InvalidKey { member, .. }) => member,
        other => panic!("{other:?}"),
    };
    let (sk, ek) = alice.keys.public_keys();
    assert_eq!(member(set("AAAA", &ek)), "signingKey");
    assert_eq!(
        member(set(&sk, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
        "encryptionKey"
    );
    assert_eq!(member(set("x", "y")), "signingKey", "both wrong: the first is named");
}

/// alice's REQUEST to bob as her client would post it, at `at`.
fn request_at(alice: &Person, bob: &Person, at: UnixTime) -> fedid_domain::services::OutboxRequest {
    alice.keys.outbox_request(
        &alice.handle,
        &bob.handle,
        MessageType::RelationshipRequest,
        Map::new(),
        at,
    )
}

#[test]
fn the_outbox_needs_an_identity_set_up() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let (fresh, _) = alice.node.create_user().unwrap();
    assert_eq!(
        alice.node.send(fresh, request_at(&alice, &bob, w.now())),
        Err(OutboxError::IdentityNotSetUp)
    );
}

#[test]
fn the_outbox_refuses_an_envelope_its_signature_does_not_cover() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let mut tampered = request_at(&alice, &bob, w.now());
    tampered.payload = Some(json!({"x": 1}).as_object().cloned().unwrap());
    assert_eq!(
        alice.node.send(alice.user, tampered),
        Err(OutboxError::InvalidSignature)
    );
}

#[test]
fn the_outbox_refuses_a_timestamp_outside_the_skew() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let stale = request_at(&alice, &bob, w.now().plus_secs(-400));
    assert_eq!(
        alice.node.send(alice.user, stale),
        Err(OutboxError::TimestampOutOfWindow)
    );
}

#[test]
fn the_outbox_refuses_an_unknown_message_type() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let mut request = request_at(&alice, &bob, w.now());
    request.message_type = "NOPE".into();
    assert_eq!(
        alice.node.send(alice.user, request).unwrap_err().code(),
        "unsupported_message_type"
    );
}

#[test]
fn the_outbox_refuses_a_local_recipient_who_does_not_exist() {
    let w = world();
    let alice = person(&w.a, "alice");
    let nobody = Handle::parse("nobody@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let request = alice.keys.outbox_request(
        &alice.handle,
        &nobody,
        MessageType::RelationshipRequest,
        Map::new(),
        w.now(),
    );
    assert_eq!(alice.node.send(alice.user, request), Err(OutboxError::UnknownRecipient));
}

#[test]
fn an_accept_without_a_request_to_accept_is_refused() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    assert_eq!(
        w.send(&alice, &bob, MessageType::RelationshipAccept),
        Err(OutboxError::NoPendingRequest)
    );
}

#[test]
fn a_message_without_an_active_relationship_is_refused() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    assert_eq!(
        w.send(&alice, &bob, MessageType::Message),
        Err(OutboxError::NoRelationship)
    );
}

#[test]
fn a_failed_delivery_changes_no_relationship() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.network.set_unreachable("b.example", true);
    assert_eq!(
        w.send(&alice, &bob, MessageType::RelationshipRequest),
        Err(OutboxError::DeliveryFailed(
            fedid_domain::DeliveryFailure::ConnectRefused
        ))
    );
    assert_eq!(state(&alice, &bob.handle), None);
}

#[test]
fn a_revoke_that_cannot_be_delivered_is_queued_and_the_relationship_is_gone() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.befriend(&alice, &bob);
    w.network.set_unreachable("b.example", true);
    assert_eq!(
        w.send(&alice, &bob, MessageType::RelationshipRevoke),
        Ok(OutboxOutcome::Queued { next_attempt_at: None })
    );
    assert_eq!(state(&alice, &bob.handle), None);
    let row = &alice
        .node
        .pending_revocations(alice.user, None, PageLimit::DEFAULT)
        .unwrap()
        .items[0];
    assert_eq!((row.attempts, row.last_error.as_deref()), (1, Some("connect refused")));
}

#[test]
fn a_queued_revoke_blocks_other_envelopes_to_that_peer() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.befriend(&alice, &bob);
    w.network.set_unreachable("b.example", true);
    w.send(&alice, &bob, MessageType::RelationshipRevoke).unwrap();
    w.network.set_unreachable("b.example", false);
    assert_eq!(
        w.send(&alice, &bob, MessageType::RelationshipRequest),
        Err(OutboxError::RevocationsPending)
    );
}

#[test]
fn a_delivered_revoke_clears_its_queued_row() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.befriend(&alice, &bob);
    w.network.set_unreachable("b.example", true);
    w.send(&alice, &bob, MessageType::RelationshipRevoke).unwrap();
    w.network.set_unreachable("b.example", false);
    assert_eq!(
        w.send(&alice, &bob, MessageType::RelationshipRevoke),
        Ok(OutboxOutcome::Delivered)
    );
    assert_eq!(alice.node.identity(alice.user).unwrap().pending_revocations, 0);
    assert_eq!(state(&bob, &alice.handle), None);
}

#[test]
fn a_peers_refusal_is_reported_with_its_status_and_code() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.befriend(&alice, &bob);
    // Bob's identity is reset: his server knows no active bob.
    bob.node.reset_identity(bob.user, Some("erase-all-my-data")).unwrap();
    assert_eq!(
        w.send(&alice, &bob, MessageType::Message),
        Err(OutboxError::DeliveryFailed(fedid_domain::DeliveryFailure::Http {
            status: 404,
            code: Some("unknown_recipient".into()),
            retry_after_secs: None,
        }))
    );
}

/// alice, reset after befriending `peers`, with her new keys.
fn reset_alice_with(w: &World, peers: &[&Person]) -> (Person, ClientKeys) {
    let alice = person(&w.a, "alice");
    for peer in peers {
        w.befriend(&alice, peer);
    }
    alice
        .node
        .reset_identity(alice.user, Some("erase-all-my-data"))
        .unwrap();
    let keys = ClientKeys::generate().unwrap();
    keys.with_keys(|k| alice.node.set_keys(alice.user, k)).unwrap();
    (alice, keys)
}

/// The member an invalid flush request names.
fn refused_member(alice: &Person, items: &[fedid_domain::services::FlushItem]) -> String {
    match alice.node.flush(alice.user, items) {
        Err(FlushError::InvalidRequest { member, .. }) => member,
        other => panic!("{other:?}"),
    }
}

/// alice's queued rows: (last error, attempts), by peer.
fn queued_rows(alice: &Person) -> Vec<(Option<String>, u32)> {
    alice
        .node
        .pending_revocations(alice.user, None, PageLimit::DEFAULT)
        .unwrap()
        .items
        .into_iter()
        .map(|r| (r.last_error, r.attempts))
        .collect()
}

#[test]
fn an_empty_flush_is_refused_naming_items() {
    let w = world();
    let (alice, _) = reset_alice_with(&w, &[]);
    assert_eq!(refused_member(&alice, &[]), "items");
}

#[test]
fn a_peer_listed_twice_in_any_case_is_refused_naming_the_second() {
    let w = world();
    let bob = person(&w.b, "bob");
    let (alice, keys) = reset_alice_with(&w, &[&bob]);
    let mut twice = vec![
        keys.flush_item(&alice.handle, &bob.handle, w.now()),
        keys.flush_item(&alice.handle, &bob.handle, w.now()),
    ];
    twice[1].peer_handle = "BOB@b.example".into();
    assert_eq!(refused_member(&alice, &twice), "items[1].peerHandle");
}

#[test]
fn a_malformed_peer_handle_is_refused_naming_it() {
    let w = world();
    let bob = person(&w.b, "bob");
    let (alice, keys) = reset_alice_with(&w, &[&bob]);
    let mut bad = keys.flush_item(&alice.handle, &bob.handle, w.now());
    bad.peer_handle = "not a handle".into();
    assert_eq!(refused_member(&alice, &[bad]), "items[0].peerHandle");
}

#[test]
fn a_peer_without_a_queued_row_is_not_queued() {
    let w = world();
    let (alice, keys) = reset_alice_with(&w, &[]);
    let stranger = Handle::parse("erin@b.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let report = alice
        .node
        .flush(alice.user, &[keys.flush_item(&alice.handle, &stranger, w.now())])
        .unwrap();
    assert_eq!(report.results[0].outcome, FlushOutcome::NotQueued);
}

#[test]
fn a_stale_item_is_refused_and_its_row_keeps_the_reason() {
    let w = world();
    let carol = person(&w.b, "carol");
    let (alice, keys) = reset_alice_with(&w, &[&carol]);
    let stale = keys.flush_item(&alice.handle, &carol.handle, w.now().plus_secs(-600));
    let report = alice.node.flush(alice.user, &[stale]).unwrap();
    assert_eq!(
        report.results[0].outcome,
        FlushOutcome::InvalidItem("timestamp_out_of_window")
    );
    assert_eq!(queued_rows(&alice), vec![(Some("timestamp_out_of_window".into()), 0)]);
}

#[test]
fn an_item_signed_with_the_old_key_is_refused_and_its_row_keeps_the_reason() {
    let w = world();
    let carol = person(&w.b, "carol");
    let (alice, _) = reset_alice_with(&w, &[&carol]);
    let forged = alice.keys.flush_item(&alice.handle, &carol.handle, w.now());
    let report = alice.node.flush(alice.user, &[forged]).unwrap();
    assert_eq!(report.results[0].outcome, FlushOutcome::InvalidSignature);
    assert_eq!(queued_rows(&alice), vec![(Some("invalid_signature".into()), 0)]);
}

#[test]
fn a_delivered_item_leaves_the_queue_and_the_others_stay() {
    let w = world();
    let (bob, carol) = (person(&w.b, "bob"), person(&w.b, "carol"));
    let (alice, keys) = reset_alice_with(&w, &[&bob, &carol]);
    let report = alice
        .node
        .flush(alice.user, &[keys.flush_item(&alice.handle, &bob.handle, w.now())])
        .unwrap();
    assert_eq!(report.results[0].outcome, FlushOutcome::Delivered);
    assert_eq!((report.delivered, report.failed, report.remaining), (1, 0, 1));
    assert_eq!(state(&bob, &alice.handle), None);
}

#[test]
fn a_local_peer_whose_identity_was_reset_still_takes_the_revoke() {
    let w = world();
    let dave = person(&w.a, "dave");
    let (alice, keys) = reset_alice_with(&w, &[&dave]);
    dave.node.reset_identity(dave.user, Some("erase-all-my-data")).unwrap();
    let report = alice
        .node
        .flush(alice.user, &[keys.flush_item(&alice.handle, &dave.handle, w.now())])
        .unwrap();
    assert_eq!(report.results[0].outcome, FlushOutcome::Delivered);
}

#[test]
fn a_slow_peer_fails_with_timeout_and_counts_an_attempt() {
    let w = world();
    let carol = person(&w.b, "carol");
    let (alice, keys) = reset_alice_with(&w, &[&carol]);
    w.network.set_delay("b.example", Duration::from_millis(500));
    let report = alice
        .node
        .flush(alice.user, &[keys.flush_item(&alice.handle, &carol.handle, w.now())])
        .unwrap();
    assert_eq!(report.results[0].outcome, FlushOutcome::Failed("timeout".into()));
    assert_eq!(queued_rows(&alice), vec![(Some("timeout".into()), 1)]);
}

#[test]
fn a_dropped_row_is_gone_audited_and_not_queued_the_second_time() {
    let w = world();
    let carol = person(&w.b, "carol");
    let (alice, _) = reset_alice_with(&w, &[&carol]);
    alice.node.drop_revocation(alice.user, &carol.handle).unwrap();
    assert!(queued_rows(&alice).is_empty());
    assert_eq!(
        alice.node.drop_revocation(alice.user, &carol.handle),
        Err(FlushError::NotQueued)
    );
    assert!(alice
        .node
        .audit_records(alice.user)
        .unwrap()
        .iter()
        .any(|r| r.action == "revocation_dropped"));
}

#[test]
fn concurrent_flushes_never_deliver_a_row_twice() {
    let w = world();
    let alice = person(&w.a, "alice");
    let peers: Vec<Person> = (0..4).map(|i| person(&w.b, &format!("peer{i}"))).collect();
    for p in &peers {
        w.befriend(&alice, p);
    }
    alice
        .node
        .reset_identity(alice.user, Some("erase-all-my-data"))
        .unwrap();
    let keys = ClientKeys::generate().unwrap();
    keys.with_keys(|k| alice.node.set_keys(alice.user, k)).unwrap();
    w.network.set_delay("b.example", Duration::from_millis(50));
    let now = w.now();
    let items: Vec<_> = peers
        .iter()
        .map(|p| keys.flush_item(&alice.handle, &p.handle, now))
        .collect();
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| alice.node.flush(alice.user, &items).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let delivered: u64 = reports.iter().map(|r| r.delivered).sum();
    assert_eq!(delivered, 4, "each row delivered exactly once");
    for report in &reports {
        for result in &report.results {
            assert!(matches!(
                result.outcome,
                FlushOutcome::Delivered | FlushOutcome::InProgress | FlushOutcome::NotQueued
            ));
        }
    }
}

#[test]
fn envelope_error_codes_are_stable() {
    assert_eq!(EnvelopeError::TooLarge.code(), "payload_too_large");
    assert_eq!(InboxError::InvalidSignature.protocol_status(), 401);
    assert_eq!(InboxError::SenderKeysUnavailable.protocol_status(), 502);
}

#[test]
fn a_claim_lapses_after_the_delivery_timeout_plus_30_seconds() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.befriend(&alice, &bob);
    alice
        .node
        .reset_identity(alice.user, Some("erase-all-my-data"))
        .unwrap();
    let keys = ClientKeys::generate().unwrap();
    keys.with_keys(|k| alice.node.set_keys(alice.user, k)).unwrap();
    // A flush that crashed after claiming the row: the claim runs for timeout + 30 s.
    let lapse = w
        .now()
        .plus_millis(alice.node.settings().delivery_timeout_ms)
        .plus_secs(30);
    let (user, peer) = (alice.user, bob.handle.clone());
    fedid_domain::ports::write(w.a.store.as_ref(), None, move |tx| {
        let mut row = tx.queued(user, &peer)?.unwrap();
        row.claimed_until = Some(lapse);
        tx.update_queued(user, &row)
    })
    .wait()
    .unwrap();
    let flush = |w: &World| {
        alice
            .node
            .flush(alice.user, &[keys.flush_item(&alice.handle, &bob.handle, w.now())])
            .unwrap()
    };
    assert_eq!(flush(&w).results[0].outcome, FlushOutcome::InProgress);
    w.clock.advance_secs(39);
    assert_eq!(
        flush(&w).results[0].outcome,
        FlushOutcome::InProgress,
        "still inside timeout + 30 s"
    );
    w.clock.advance_secs(2);
    assert_eq!(flush(&w).results[0].outcome, FlushOutcome::Delivered);
}

#[test]
fn key_lookups_in_flight_are_bounded_per_domain_and_refusals_are_not_remembered() {
    let clock = Arc::new(ManualClock::at_vectors_now());
    let network = Network::new(Duration::from_secs(5));
    let a = Instance::start_with(&network, settings("a.example", |_| {}), clock.clone());
    let b = Instance::start_with(&network, settings("b.example", |_| {}), clock.clone());
    let bob = person(&b, "bob");
    let senders: Vec<Person> = (0..5).map(|i| person(&a, &format!("sender{i}"))).collect();
    let wires: Vec<String> = senders
        .iter()
        .map(|s| {
            s.keys
                .envelope(
                    &s.handle,
                    &bob.handle,
                    MessageType::RelationshipRequest,
                    Map::new(),
                    clock.now(),
                )
                .wire_form()
        })
        .collect();
    network.set_delay("a.example", Duration::from_millis(1500));
    let start = std::sync::Barrier::new(wires.len());
    let outcomes: Vec<Result<Received, InboxError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = wires
            .iter()
            .map(|wire| {
                let (node, start) = (&bob.node, &start);
                scope.spawn(move || {
                    start.wait();
                    node.receive(wire.as_bytes())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused = outcomes
        .iter()
        .filter(|o| **o == Err(InboxError::SenderKeysUnavailable))
        .count();
    let accepted = outcomes.iter().filter(|o| **o == Ok(Received::Accepted)).count();
    assert_eq!(
        (accepted, refused),
        (4, 1),
        "4 lookups per domain at once: {outcomes:?}"
    );
    network.set_delay("a.example", Duration::ZERO);
    let retried = wires
        .iter()
        .zip(&outcomes)
        .find(|(_, o)| o.is_err())
        .map(|(w, _)| w)
        .unwrap();
    assert_eq!(
        bob.node.receive(retried.as_bytes()),
        Ok(Received::Accepted),
        "the refusal was not remembered"
    );
}

/// `read_as` authenticates and reads on one snapshot: a live token reads
/// its own user's data, and anything else reads nothing at all.
#[test]
fn reads_as_the_holder_of_a_token() {
    let w = world();
    let bob = person(&w.b, "bob");
    let alice = person(&w.a, "alice");
    let (carol, carol_token) = w.b.fedid.create_user().unwrap();
    w.b.fedid.set_alias(carol, "carol").unwrap();
    // Bob receives a relationship request; Carol has nothing.
    assert_eq!(
        w.b.fedid
            .receive(w.envelope(&alice, &bob, MessageType::RelationshipRequest).as_bytes()),
        Ok(Received::Accepted)
    );
    let bob_token = w.b.fedid.issue_token(bob.user, None).unwrap();

    let seen =
        w.b.fedid
            .read_as(bob_token.expose(), |reads| -> Result<_, IdentityError> {
                let view = reads.identity()?;
                let inbox = reads.inbox(None, PageLimit::DEFAULT)?;
                let relationships = reads.relationships(None, PageLimit::DEFAULT)?;
                Ok((reads.user(), view.handle, inbox.items.len(), relationships.items.len()))
            });
    assert_eq!(seen, Ok(Some((bob.user, Some(bob.handle.clone()), 1, 1))));
    let carols =
        w.b.fedid
            .read_as(carol_token.expose(), |reads| -> Result<_, IdentityError> {
                Ok((reads.user(), reads.inbox(None, PageLimit::DEFAULT)?.items.len()))
            });
    assert_eq!(carols, Ok(Some((carol, 0))));

    let mut ran = false;
    for bad in ["", "not-a-token", &"A".repeat(43), &bob_token.expose()[1..]] {
        let none = w.b.fedid.read_as(bad, |_| -> Result<(), IdentityError> {
            ran = true;
            Ok(())
        });
        assert_eq!(none, Ok(None), "{bad:?}");
    }
    w.b.fedid.revoke_tokens(bob.user).unwrap();
    let revoked = w.b.fedid.read_as(bob_token.expose(), |_| -> Result<(), IdentityError> {
        ran = true;
        Ok(())
    });
    assert_eq!(revoked, Ok(None));
    assert!(!ran, "a read never runs without a live token");
}

#[test]
fn an_offline_instance_serves_its_users_and_delivers_nothing() {
    let clock = Arc::new(ManualClock::at_vectors_now());
    let fedid = fedid_domain::Fedid::offline(
        fedid_testkit::settings("a.example").unwrap(),
        Arc::new(fedid_testkit::MemoryStore::new()),
        clock.clone(),
        Arc::new(fedid_domain::ports::SystemRandom::default()),
    );
    let (user, _) = fedid.create_user().unwrap();
    fedid.set_alias(user, "alice").unwrap();
    let keys = ClientKeys::generate().unwrap();
    keys.with_keys(|k| fedid.set_keys(user, k)).unwrap();
    let alice = Handle::parse("alice@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let bob = Handle::parse("bob@b.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let request = keys.outbox_request(&alice, &bob, MessageType::RelationshipRequest, Map::new(), clock.now());
    assert_eq!(
        fedid.send(user, request),
        Err(OutboxError::DeliveryFailed(
            fedid_domain::DeliveryFailure::BlockedDomain
        ))
    );
}

/// alice's long-lived REVOKE to bob, signed now and valid for `days`.
fn long_lived_revoke(w: &World, alice: &Person, bob: &Person, days: i64) -> String {
    let expires = fedid_domain::Timestamp::from_instant(w.now().plus_secs(days * 86_400));
    let mut payload = Map::new();
    payload.insert("expires".into(), json!(expires.as_str()));
    alice
        .keys
        .envelope(
            &alice.handle,
            &bob.handle,
            MessageType::RelationshipRevoke,
            payload,
            w.now(),
        )
        .wire_form()
}

#[test]
fn a_long_lived_revoke_signed_days_ago_removes_the_relationship() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.befriend(&alice, &bob);
    let revoke = long_lived_revoke(&w, &alice, &bob, 7);
    w.clock.advance_secs(6 * 86_400);
    assert_eq!(bob.node.receive(revoke.as_bytes()), Ok(Received::Accepted));
    assert_eq!(state(&bob, &alice.handle), None);
}

#[test]
fn a_long_lived_revoke_past_its_expiry_is_out_of_window() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.befriend(&alice, &bob);
    let revoke = long_lived_revoke(&w, &alice, &bob, 1);
    w.clock.advance_secs(86_400 + 301);
    assert_eq!(
        bob.node.receive(revoke.as_bytes()),
        Err(InboxError::TimestampOutOfWindow)
    );
}

#[test]
fn a_revoke_signed_before_the_relationship_was_created_leaves_it_in_place() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let stale = long_lived_revoke(&w, &alice, &bob, 7);
    w.clock.advance_secs(600);
    w.befriend(&alice, &bob);
    assert_eq!(bob.node.receive(stale.as_bytes()), Ok(Received::Accepted));
    assert_eq!(state(&bob, &alice.handle), Some(RelationshipState::Active));
    assert_eq!(inbox_len(&bob), 1, "only the REQUEST is stored");
}

#[test]
fn a_long_lived_revoke_that_removes_nothing_records_no_replay_row() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    let revoke = long_lived_revoke(&w, &alice, &bob, 7);
    for _ in 0..2 {
        assert_eq!(
            bob.node.receive(revoke.as_bytes()),
            Ok(Received::Accepted),
            "never a duplicate: nothing was recorded"
        );
    }
}

#[test]
fn a_long_lived_revoke_that_removed_a_relationship_is_a_duplicate_until_it_expires() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.befriend(&alice, &bob);
    let revoke = long_lived_revoke(&w, &alice, &bob, 7);
    assert_eq!(bob.node.receive(revoke.as_bytes()), Ok(Received::Accepted));
    w.befriend(&alice, &bob);
    w.clock.advance_secs(5 * 86_400);
    assert_eq!(bob.node.receive(revoke.as_bytes()), Ok(Received::Duplicate));
    assert_eq!(state(&bob, &alice.handle), Some(RelationshipState::Active));
}

/// alice, reset after befriending bob, flushes a long-lived REVOKE valid
/// for `days` while bob's server is down; her keys and the flush result.
fn flush_long_lived_while_down(w: &World, bob: &Person, days: i64) -> (Person, fedid_domain::services::FlushResult) {
    let (alice, keys) = reset_alice_with(w, &[bob]);
    w.network.set_unreachable("b.example", true);
    let expires = w.now().plus_secs(days * 86_400);
    let item = keys.flush_item_expiring(&alice.handle, &bob.handle, w.now(), Some(expires));
    let report = alice.node.flush(alice.user, &[item]).unwrap();
    (alice, report.results[0].clone())
}

/// alice's one queued row.
fn only_row(alice: &Person) -> fedid_domain::QueuedRevocation {
    let mut rows = alice
        .node
        .pending_revocations(alice.user, None, PageLimit::DEFAULT)
        .unwrap()
        .items;
    assert_eq!(rows.len(), 1);
    rows.remove(0)
}

#[test]
fn a_failed_long_lived_flush_item_is_retried_by_the_server_after_the_base_delay() {
    let w = world();
    let bob = person(&w.b, "bob");
    let (alice, result) = flush_long_lived_while_down(&w, &bob, 7);
    assert_eq!(result.outcome, FlushOutcome::Failed("connect refused".into()));
    let next = result.next_attempt_at.flatten().unwrap();
    let delay = next.as_nanos() - w.now().as_nanos();
    assert!((15_000_000_000..=30_000_000_000).contains(&delay), "{delay}");
    let row = only_row(&alice);
    assert!(row.is_scheduled());
    assert_eq!(row.next_attempt_at, Some(next));
}

#[test]
fn a_revoke_to_a_peer_down_for_three_days_lands_on_its_first_day_back() {
    let w = world();
    let bob = person(&w.b, "bob");
    let (alice, _) = flush_long_lived_while_down(&w, &bob, 7);
    let down_until = w.now().plus_secs(3 * 86_400);
    let mut attempts = vec![w.now()];
    let mut scheduled_after = vec![0u32];
    loop {
        let row = only_row(&alice);
        let due = row.next_attempt_at.unwrap();
        w.clock
            .advance_secs(((due.as_nanos() - w.now().as_nanos()) / 1_000_000_000 + 1) as i64);
        if w.now() >= down_until {
            w.network.set_unreachable("b.example", false);
        }
        let round = alice.node.deliver_due(16).unwrap();
        assert_eq!(round.claimed, 1);
        attempts.push(w.now());
        if round.delivered == 1 {
            break;
        }
        scheduled_after.push(only_row(&alice).retries);
    }
    // Each wait was in [D/2, D] (plus the second this test rounds up), D =
    // min(30 s x 2^n, 6 h), n the background attempts made before it.
    for (pair, n) in attempts.windows(2).zip(&scheduled_after) {
        let waited = (pair[1].as_nanos() - pair[0].as_nanos()) as f64 / 1e9;
        let ceiling = (30.0 * 2f64.powi(*n as i32)).min(21_600.0);
        assert!(
            waited >= ceiling / 2.0 && waited <= ceiling + 1.0,
            "n={n}: waited {waited} s"
        );
    }
    let delivered_at = *attempts.last().unwrap();
    assert!(delivered_at >= down_until);
    assert!(
        delivered_at.as_nanos() - down_until.as_nanos() <= 86_400 * 1_000_000_000,
        "on its first day back"
    );
    assert_eq!(state(&bob, &alice.handle), None, "bob's relationship is gone");
    assert!(alice
        .node
        .pending_revocations(alice.user, None, PageLimit::DEFAULT)
        .unwrap()
        .items
        .is_empty());
    assert!(alice
        .node
        .audit_records(alice.user)
        .unwrap()
        .iter()
        .any(|r| r.action == "revocation_delivered"));
}

#[test]
fn a_final_refusal_ends_the_retries_at_once() {
    let w = world();
    let (alice, keys) = reset_alice_with(&w, &[]);
    // A former peer that bob's server does not know: 404 unknown_recipient.
    let ghost = Handle::parse("ghost@b.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let (user, row) = (alice.user, fedid_domain::QueuedRevocation::new(ghost.clone(), w.now()));
    fedid_domain::ports::write(w.a.store.as_ref(), None, move |tx| tx.enqueue(user, &row))
        .wait()
        .unwrap();
    let expires = w.now().plus_secs(86_400);
    let item = keys.flush_item_expiring(&alice.handle, &ghost, w.now(), Some(expires));
    let result = alice.node.flush(alice.user, &[item]).unwrap().results.remove(0);
    assert_eq!(
        result.outcome,
        FlushOutcome::Failed("http 404 unknown_recipient".into())
    );
    assert_eq!(result.next_attempt_at, Some(None), "the server will not try again");
    assert!(!only_row(&alice).is_scheduled());
}

#[test]
fn a_long_lived_revoke_past_its_expiry_stays_queued_as_expired() {
    let w = world();
    let bob = person(&w.b, "bob");
    let (alice, _) = flush_long_lived_while_down(&w, &bob, 1);
    w.clock.advance_secs(86_400 + 1);
    let round = alice.node.deliver_due(16).unwrap();
    assert_eq!((round.claimed, round.delivered), (1, 0));
    let row = only_row(&alice);
    assert_eq!(row.last_error.as_deref(), Some("expired"));
    assert!(!row.is_scheduled() && row.envelope.is_none());
    assert_eq!(
        state(&bob, &alice.handle),
        Some(RelationshipState::Active),
        "never delivered"
    );
}

#[test]
fn a_scheduled_row_is_not_delivered_before_it_is_due() {
    let w = world();
    let bob = person(&w.b, "bob");
    let (alice, _) = flush_long_lived_while_down(&w, &bob, 7);
    w.network.set_unreachable("b.example", false);
    assert_eq!(alice.node.deliver_due(16).unwrap().claimed, 0);
    assert!(only_row(&alice).is_scheduled());
}

#[test]
fn a_scheduled_row_claimed_by_a_flush_is_left_to_it() {
    let w = world();
    let bob = person(&w.b, "bob");
    let (alice, _) = flush_long_lived_while_down(&w, &bob, 7);
    let due = only_row(&alice).next_attempt_at.unwrap();
    w.clock
        .advance_secs((due.as_nanos() - w.now().as_nanos()) as i64 / 1_000_000_000 + 1);
    // A flush holds the row (as one in flight would).
    let (user, peer, until) = (alice.user, bob.handle.clone(), w.now().plus_secs(60));
    fedid_domain::ports::write(w.a.store.as_ref(), None, move |tx| {
        let mut row = tx.queued(user, &peer)?.unwrap();
        row.claimed_until = Some(until);
        tx.update_queued(user, &row)
    })
    .wait()
    .unwrap();
    assert_eq!(alice.node.deliver_due(16).unwrap().claimed, 0);
}

#[test]
fn an_outbox_revoke_that_is_long_lived_is_queued_with_its_next_attempt() {
    let w = world();
    let (alice, bob) = (person(&w.a, "alice"), person(&w.b, "bob"));
    w.befriend(&alice, &bob);
    w.network.set_unreachable("b.example", true);
    let expires = fedid_domain::Timestamp::from_instant(w.now().plus_secs(86_400));
    let mut payload = Map::new();
    payload.insert("expires".into(), json!(expires.as_str()));
    let request = alice.keys.outbox_request(
        &alice.handle,
        &bob.handle,
        MessageType::RelationshipRevoke,
        payload,
        w.now(),
    );
    let outcome = alice.node.send(alice.user, request).unwrap();
    let OutboxOutcome::Queued {
        next_attempt_at: Some(next),
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(only_row(&alice).next_attempt_at, Some(next));
}

/// What alice's server knows of b.example.
fn b_health(w: &World) -> Option<fedid_domain::PeerDomainHealth> {
    let domain = Domain::parse("b.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    fedid_domain::ports::read(w.a.store.as_ref(), |tx| tx.peer_domain(&domain)).unwrap()
}

#[test]
fn deliveries_keep_the_health_of_the_peer_domain() {
    let w = world();
    let bob = person(&w.b, "bob");
    let (alice, _) = flush_long_lived_while_down(&w, &bob, 7);
    let health = b_health(&w).unwrap();
    assert_eq!(
        (health.consecutive_failures, health.last_failure.as_deref()),
        (1, Some("connect refused"))
    );
    w.network.set_unreachable("b.example", false);
    let due = only_row(&alice).next_attempt_at.unwrap();
    w.clock
        .advance_secs((due.as_nanos() - w.now().as_nanos()) as i64 / 1_000_000_000 + 1);
    assert_eq!(alice.node.deliver_due(16).unwrap().delivered, 1);
    let health = b_health(&w).unwrap();
    assert_eq!(
        (health.consecutive_failures, health.last_success_at),
        (0, Some(w.now()))
    );
}

/// alice with three long-lived REVOKEs to b.example, which is down and,
/// after one of the deliverer's rounds, failing.
fn alice_with_b_failing(w: &World) -> Person {
    let peers: Vec<Person> = ["bob", "carol", "dave"].iter().map(|p| person(&w.b, p)).collect();
    let (alice, keys) = reset_alice_with(w, &peers.iter().collect::<Vec<_>>());
    w.network.set_unreachable("b.example", true);
    let expires = w.now().plus_secs(7 * 86_400);
    let items: Vec<_> = peers
        .iter()
        .map(|p| keys.flush_item_expiring(&alice.handle, &p.handle, w.now(), Some(expires)))
        .collect();
    alice.node.flush(alice.user, &items).unwrap();
    // Three failures from the flush, three from a round: failing.
    w.clock.advance_secs(60);
    assert_eq!(alice.node.deliver_due(16).unwrap().claimed, 3);
    assert!(b_health(w).unwrap().consecutive_failures >= 5);
    alice
}

#[test]
fn a_failing_domain_gets_one_delivery_at_a_time() {
    let w = world();
    let alice = alice_with_b_failing(&w);
    w.clock.advance_secs(600);
    let attempts_before: u32 = queued_rows(&alice).iter().map(|(_, attempts)| attempts).sum();
    let round = alice.node.deliver_due(16).unwrap();
    let attempts_after: u32 = queued_rows(&alice).iter().map(|(_, attempts)| attempts).sum();
    assert_eq!(
        (round.claimed, attempts_after - attempts_before),
        (3, 1),
        "one attempt, two waiting"
    );
    assert_eq!(
        alice.node.deliver_due(16).unwrap().claimed,
        0,
        "the others wait for its outcome"
    );
    w.clock.advance_secs(1);
    assert_eq!(
        alice.node.deliver_due(16).unwrap().claimed,
        2,
        "then they are due again"
    );
}

#[test]
fn a_failing_domain_leased_by_another_instance_gets_nothing_from_this_one() {
    let w = world();
    let alice = alice_with_b_failing(&w);
    // Another instance on the same database holds b.example's lease.
    let (domain, now) = (Domain::parse("b.example", DomainPolicy::HTTPS_PUBLIC).unwrap(), w.now());
    let until = now.plus_secs(3_600);
    let leased = fedid_domain::ports::write(w.a.store.as_ref(), None, move |tx| {
        tx.lease_peer_domain(&domain, now, until)
    })
    .wait()
    .unwrap();
    assert!(leased);
    w.clock.advance_secs(600);
    let before: u32 = queued_rows(&alice).iter().map(|(_, attempts)| attempts).sum();
    alice.node.deliver_due(16).unwrap();
    let after: u32 = queued_rows(&alice).iter().map(|(_, attempts)| attempts).sum();
    assert_eq!(after, before, "no delivery while another instance holds the lease");
}

#[test]
fn a_new_flush_replaces_the_scheduled_revoke_and_counts_its_retries_afresh() {
    let w = world();
    let bob = person(&w.b, "bob");
    let (alice, _) = flush_long_lived_while_down(&w, &bob, 7);
    for _ in 0..3 {
        let due = only_row(&alice).next_attempt_at.unwrap();
        w.clock
            .advance_secs((due.as_nanos() - w.now().as_nanos()) as i64 / 1_000_000_000 + 1);
        alice.node.deliver_due(16).unwrap();
    }
    let before = only_row(&alice);
    assert_eq!(before.retries, 3);
    // The client comes back and flushes a new signature while bob is still down.
    let keys = ClientKeys::generate().unwrap();
    keys.with_keys(|k| alice.node.set_keys(alice.user, k)).unwrap();
    let item = keys.flush_item_expiring(&alice.handle, &bob.handle, w.now(), Some(w.now().plus_secs(86_400)));
    alice.node.flush(alice.user, &[item]).unwrap();
    let after = only_row(&alice);
    assert_ne!(after.envelope, before.envelope, "the new REVOKE replaces the old");
    assert_eq!(after.retries, 0);
    let wait = after.next_attempt_at.unwrap().as_nanos() - w.now().as_nanos();
    assert!(wait <= 30_000_000_000, "back to the base delay: {wait}");
}
