//! The store contract: one suite, written against the ports, that every
//! `Store` adapter must pass (the memory store here; SQLite and PostgreSQL
//! in `fedid-store`). Each function panics with a message on a violation;
//! call them from a `#[test]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use fedid_domain::keylog::{EntryClass, EntryKind, KeyBreak, KeyConflict, KeyLogEntry, KeyPin, PeerPin, PinTarget};
use fedid_domain::ports::{read, StoreError, Tx};
use fedid_domain::{
    Alias, AuditRecord, Domain, DomainPolicy, Handle, MessageType, NewMessage, Nonce, PageLimit, PeerDomainState,
    QueuedRevocation, Relationship, RelationshipState, ReplayKey, ReplayOutcome, ReplayRecord, Store, Timestamp,
    UnixTime, UserId,
};
use serde_json::Map;

use crate::{ClientKeys, Instance, ManualClock, Network};

fn h(text: &str) -> Handle {
    Handle::parse(text, DomainPolicy::HTTPS_PUBLIC).unwrap()
}

fn t(secs: i64) -> UnixTime {
    UnixTime::from_secs(1_795_774_530 + secs)
}

/// Runs `work` as a write unit and waits for its outcome.
fn write<T, E>(store: &dyn Store, work: impl FnMut(&mut dyn Tx) -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    fedid_domain::ports::write(store, None, work).wait()
}

/// Every `Tx` method's documented behaviour.
pub fn tx_semantics(store: &dyn Store) {
    let (u1, u2) = write(store, move |tx| {
        Ok::<_, StoreError>((tx.create_user(t(0))?, tx.create_user(t(0))?))
    })
    .unwrap();
    assert_ne!(u1, u2);
    // Aliases: unique and never reused.
    let alice = Alias::parse("alice").unwrap();
    let held = alice.clone();
    write(store, move |tx| tx.set_alias(u1, &held, t(0))).unwrap();
    assert_eq!(
        write(store, {
            let alice = alice.clone();
            move |tx| tx.set_alias(u2, &alice, t(0))
        }),
        Err(StoreError::AliasTaken)
    );
    write(store, move |tx| {
        tx.set_alias(u1, &Alias::parse("alicia").unwrap(), t(10))
    })
    .unwrap();
    assert_eq!(read(store, |tx| tx.alias_holder(&alice)).unwrap(), Some(u1));
    assert_eq!(
        write(store, {
            let alice = alice.clone();
            move |tx| tx.set_alias(u2, &alice, t(10))
        }),
        Err(StoreError::AliasTaken)
    );
    assert_eq!(
        read(store, |tx| tx.identity_by_alias(&alice)).unwrap(),
        None,
        "alice is no one's current alias"
    );
    let back = alice.clone();
    write(store, move |tx| tx.set_alias(u1, &back, t(20))).unwrap();
    assert_eq!(
        read(store, |tx| tx.identity_by_alias(&alice)).unwrap().unwrap().user,
        u1
    );
    // Alias changes are counted, refused ones not; back to an old alias too.
    let changes = |user, since| read(store, |tx| tx.alias_changes(user, since)).unwrap();
    let expect = |ever, recent, oldest_recent| fedid_domain::AliasChanges {
        ever,
        recent,
        oldest_recent,
    };
    assert_eq!(changes(u1, t(10)), expect(3, 2, Some(t(10))));
    assert_eq!(changes(u1, t(21)), expect(3, 0, None));
    assert_eq!(changes(u2, t(0)), expect(0, 0, None));

    // Keys and reset.
    let keys = ClientKeys::from_seed(&[3u8; 32]).unwrap();
    let (sk, ek) = keys.public_keys();
    let (sk, ek) = (
        fedid_domain::SigningKey::parse(&sk).unwrap(),
        fedid_domain::EncryptionKey::parse(&ek).unwrap(),
    );
    write(store, move |tx| tx.set_keys(u1, &sk, &ek, t(1))).unwrap();
    let id = read(store, |tx| tx.identity(u1)).unwrap().unwrap();
    assert!(id.is_active());
    assert_eq!((id.signing_key, id.keys_updated_at), (Some(sk), Some(t(1))));
    write(store, move |tx| tx.clear_keys(u1, t(2))).unwrap();
    let id = read(store, |tx| tx.identity(u1)).unwrap().unwrap();
    assert_eq!(
        (id.signing_key, id.encryption_key, id.last_reset_at),
        (None, None, Some(t(2)))
    );
    assert_eq!(read(store, |tx| tx.identity(UserId(987_654))).unwrap(), None);

    // Sessions.
    write(store, move |tx| tx.insert_session(u1, &[1u8; 32], t(100))).unwrap();
    write(store, move |tx| tx.insert_session(u1, &[2u8; 32], t(100))).unwrap();
    assert_eq!(read(store, |tx| tx.session_user(&[1u8; 32], t(99))).unwrap(), Some(u1));
    assert_eq!(
        read(store, |tx| tx.session_user(&[1u8; 32], t(100))).unwrap(),
        None,
        "expired"
    );
    assert_eq!(read(store, |tx| tx.session_user(&[9u8; 32], t(0))).unwrap(), None);
    assert_eq!(write(store, move |tx| tx.revoke_sessions(u1, t(5))).unwrap(), 2);
    assert_eq!(
        read(store, |tx| tx.session_user(&[2u8; 32], t(6))).unwrap(),
        None,
        "revoked"
    );

    // Relationships: upsert, byte-order pages, counts, delete all.
    let peers = ["bbb@z.example", "B-c@a.example", "aaa@b.example", "aab@b.example"];
    for (i, p) in peers.iter().enumerate() {
        let Ok(peer) = Handle::parse(p, DomainPolicy::HTTPS_PUBLIC) else {
            continue;
        };
        let state = if i % 2 == 0 {
            RelationshipState::Incoming
        } else {
            RelationshipState::Active
        };
        write(store, move |tx| {
            tx.put_relationship(
                u1,
                &Relationship {
                    peer: peer.clone(),
                    state,
                    since: t(i as i64),
                    created_at: t(i as i64),
                },
            )
        })
        .unwrap();
    }
    write(store, move |tx| {
        tx.put_relationship(
            u2,
            &Relationship {
                peer: h("aaa@b.example"),
                state: RelationshipState::Outgoing,
                since: t(0),
                created_at: t(0),
            },
        )
    })
    .unwrap();
    let page: Vec<String> = read(store, |tx| tx.relationships_after(u1, None, 10))
        .unwrap()
        .into_iter()
        .map(|r| r.peer.to_string())
        .collect();
    assert_eq!(page, vec!["aaa@b.example", "aab@b.example", "bbb@z.example"]);
    let after: Vec<String> = read(store, |tx| tx.relationships_after(u1, Some(&h("aaa@b.example")), 1))
        .unwrap()
        .into_iter()
        .map(|r| r.peer.to_string())
        .collect();
    assert_eq!(after, vec!["aab@b.example"]);
    write(store, move |tx| {
        tx.put_relationship(
            u1,
            &Relationship {
                peer: h("bbb@z.example"),
                state: RelationshipState::Active,
                since: t(9),
                created_at: t(9),
            },
        )
    })
    .unwrap();
    let r = read(store, |tx| tx.relationship(u1, &h("bbb@z.example")))
        .unwrap()
        .unwrap();
    assert_eq!((r.state, r.since), (RelationshipState::Active, t(9)));
    assert_eq!(r.created_at, t(0), "a replaced relationship keeps its creation time");
    assert_eq!(read(store, |tx| tx.count_relationships(u1, None)).unwrap(), 3);
    assert_eq!(
        read(store, |tx| tx.count_relationships(u1, Some(RelationshipState::Active))).unwrap(),
        2
    );
    assert!(write(store, move |tx| tx.delete_relationship(u1, &h("aab@b.example"))).unwrap());
    assert!(!write(store, move |tx| tx.delete_relationship(u1, &h("aab@b.example"))).unwrap());
    let gone = write(store, move |tx| tx.delete_relationships(u1)).unwrap();
    assert_eq!(gone, vec![h("aaa@b.example"), h("bbb@z.example")]);
    assert_eq!(
        read(store, |tx| tx.count_relationships(u2, None)).unwrap(),
        1,
        "other users untouched"
    );

    // Inbox: ids increase, pages by id, per user.
    let m1 = write(store, move |tx| {
        tx.insert_message(u1, t(1), Some("x@b.example"), "{\"a\":1}")
    })
    .unwrap();
    let m2 = write(store, move |tx| tx.insert_message(u2, t(1), Some("x@b.example"), "{}")).unwrap();
    let m3 = write(store, move |tx| {
        tx.insert_message(u1, t(2), Some("y@b.example"), "{\"b\":2}")
    })
    .unwrap();
    assert!(m1 < m2 && m2 < m3);
    // Unsolicited messages, per recipient and sender.
    let from = |user, sender| read(store, |tx| tx.count_unsolicited(user, sender)).unwrap();
    assert_eq!(
        (
            from(u1, "x@b.example"),
            from(u1, "y@b.example"),
            from(u2, "y@b.example")
        ),
        (1, 1, 0)
    );
    let msgs = read(store, |tx| tx.messages_after(u1, None, 10)).unwrap();
    assert_eq!(msgs.iter().map(|m| m.id).collect::<Vec<_>>(), vec![m1, m3]);
    assert_eq!(msgs[1].envelope, "{\"b\":2}");
    assert_eq!(read(store, |tx| tx.messages_after(u1, Some(m1), 10)).unwrap().len(), 1);
    // The count the inbox limit reads follows every insert and delete.
    let count = |user| read(store, |tx| tx.identity(user)).unwrap().unwrap().inbox_messages;
    assert_eq!((count(u1), count(u2)), (2, 1));
    assert!(
        !write(store, move |tx| tx.delete_message(u2, m1)).unwrap(),
        "not another user's message"
    );
    assert_eq!((count(u1), count(u2)), (2, 1));
    assert!(write(store, move |tx| tx.delete_message(u1, m1)).unwrap());
    assert!(!write(store, move |tx| tx.delete_message(u1, m1)).unwrap(), "once");
    assert_eq!(count(u1), 1);
    assert_eq!(write(store, move |tx| tx.delete_messages(u1)).unwrap(), 1);
    assert_eq!((count(u1), count(u2)), (0, 1));
    // A consented message counts for the inbox, not as unsolicited.
    write(store, move |tx| tx.insert_message(u1, t(3), None, "{}")).unwrap();
    assert_eq!((count(u1), from(u1, "x@b.example"), from(u1, "")), (1, 0, 0));
    assert_eq!(write(store, move |tx| tx.delete_messages(u1)).unwrap(), 1);

    // Revocation queue.
    let row = QueuedRevocation::new(h("bob@b.example"), t(0));
    let first = row.clone();
    assert!(write(store, move |tx| tx.enqueue(u1, &first)).unwrap());
    let again = row.clone();
    assert!(!write(store, move |tx| tx.enqueue(u1, &again)).unwrap(), "queued once");
    let mut updated = row.clone();
    updated.attempts = 2;
    updated.last_error = Some("http 503".into());
    updated.last_attempt_at = Some(t(3));
    updated.claimed_until = Some(t(40));
    let change = updated.clone();
    write(store, move |tx| tx.update_queued(u1, &change)).unwrap();
    assert_eq!(
        read(store, |tx| tx.queued(u1, &h("bob@b.example"))).unwrap(),
        Some(updated)
    );
    write(store, move |tx| {
        tx.enqueue(u1, &QueuedRevocation::new(h("amy@b.example"), t(0)))
    })
    .unwrap();
    let q: Vec<String> = read(store, |tx| tx.queue_after(u1, None, 10))
        .unwrap()
        .into_iter()
        .map(|r| r.peer.to_string())
        .collect();
    assert_eq!(q, vec!["amy@b.example", "bob@b.example"]);
    assert_eq!(read(store, |tx| tx.queue_len(u1)).unwrap(), 2);
    assert!(read(store, |tx| tx.total_queue_len()).unwrap() >= 2);
    assert!(write(store, move |tx| tx.dequeue(u1, &h("amy@b.example"))).unwrap());
    assert!(!write(store, move |tx| tx.dequeue(u1, &h("amy@b.example"))).unwrap());

    // Scheduled rows (PROTOCOL.md section 11): claimed when due and not
    // claimed, earliest first, at most `limit`, each claim until `until`.
    let scheduled = |peer: &str, due: i64| QueuedRevocation {
        envelope: Some("{}".into()),
        expires_at: Some(t(1_000)),
        next_attempt_at: Some(t(due)),
        ..QueuedRevocation::new(h(peer), t(0))
    };
    let rows = [
        scheduled("late@s.example", 20),
        scheduled("early@s.example", 10),
        scheduled("future@s.example", 100),
    ];
    for row in rows {
        assert!(write(store, move |tx| tx.enqueue(u2, &row)).unwrap());
    }
    assert_eq!(read(store, |tx| tx.total_scheduled()).unwrap(), 3);
    let claimed = |now: i64, until: i64, limit: usize| -> Vec<(String, Option<UnixTime>)> {
        write(store, move |tx| tx.claim_due(t(now), t(until), limit))
            .unwrap()
            .into_iter()
            .map(|(user, row)| {
                assert_eq!(user, u2);
                (row.peer.to_string(), row.claimed_until)
            })
            .collect()
    };
    assert_eq!(claimed(50, 80, 1), vec![("early@s.example".into(), Some(t(80)))]);
    assert_eq!(
        claimed(50, 80, 10),
        vec![("late@s.example".into(), Some(t(80)))],
        "the early one is claimed"
    );
    assert_eq!(
        claimed(81, 90, 10),
        vec![
            ("early@s.example".into(), Some(t(90))),
            ("late@s.example".into(), Some(t(90)))
        ],
        "lapsed claims are claimed again; the future row is not due"
    );
    let early = read(store, |tx| tx.queued(u2, &h("early@s.example"))).unwrap().unwrap();
    assert_eq!(
        early,
        QueuedRevocation {
            claimed_until: Some(t(90)),
            ..scheduled("early@s.example", 10)
        }
    );
    for peer in ["late@s.example", "early@s.example", "future@s.example"] {
        assert!(write(store, move |tx| tx.dequeue(u2, &h(peer))).unwrap());
    }

    // Key logs (section 12): append-only, one entry per seq, pages in order.
    assert_eq!(read(store, |tx| tx.key_log_last(u2)).unwrap(), None);
    assert_eq!(read(store, |tx| tx.key_log_head(u2)).unwrap(), None);
    assert!(write(store, move |tx| tx.key_log_append(u2, 1, "{\"seq\":1}", "h1", t(100))).unwrap());
    assert!(
        !write(store, move |tx| tx.key_log_append(u2, 1, "{\"seq\":9}", "h9", t(101))).unwrap(),
        "a seq is taken once"
    );
    assert!(write(store, move |tx| tx.key_log_append(u2, 2, "{\"seq\":2}", "h2", t(200))).unwrap());
    assert_eq!(
        read(store, |tx| tx.key_log_last(u2)).unwrap(),
        Some("{\"seq\":2}".to_owned())
    );
    assert_eq!(
        read(store, |tx| tx.key_log_head(u2)).unwrap(),
        Some((2, "h2".to_owned()))
    );
    assert_eq!(
        read(store, |tx| tx.key_log_after(u2, 0, 10)).unwrap(),
        vec!["{\"seq\":1}".to_owned(), "{\"seq\":2}".to_owned()]
    );
    assert_eq!(read(store, |tx| tx.key_log_after(u2, 1, 10)).unwrap().len(), 1);
    assert_eq!(read(store, |tx| tx.key_log_after(u2, 0, 1)).unwrap().len(), 1);
    assert_eq!(read(store, |tx| tx.key_log_appended_since(u2, t(150))).unwrap(), 1);
    assert_eq!(read(store, |tx| tx.key_log_last(u1)).unwrap(), None, "per user");

    // Peer domains (section 11): failures in a row, since when, reset by a success.
    let peer = Domain::parse("p.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let d = peer.clone();
    assert_eq!(read(store, |tx| tx.peer_domain(&d)).unwrap(), None);
    for at in 1..=5 {
        let d = peer.clone();
        write(store, move |tx| tx.record_peer_outcome(&d, Some("timeout"), t(at))).unwrap();
    }
    let health = read(store, |tx| tx.peer_domain(&d)).unwrap().unwrap();
    assert_eq!(
        (
            health.consecutive_failures,
            health.failing_since,
            health.last_failure_at,
            health.last_failure.as_deref()
        ),
        (5, Some(t(1)), Some(t(5)), Some("timeout"))
    );
    assert_eq!(health.state(t(6)), PeerDomainState::Failing);
    assert_eq!(health.state(t(1 + 7 * 86_400)), PeerDomainState::Unreachable);
    let d = peer.clone();
    write(store, move |tx| tx.record_peer_outcome(&d, None, t(9))).unwrap();
    let health = read(store, |tx| tx.peer_domain(&peer)).unwrap().unwrap();
    assert_eq!(
        (
            health.consecutive_failures,
            health.failing_since,
            health.last_success_at,
            health.last_failure_at
        ),
        (0, None, Some(t(9)), Some(t(5)))
    );
    assert_eq!(health.state(t(10)), PeerDomainState::Healthy);
    assert_eq!(read(store, |tx| tx.peer_domains()).unwrap(), vec![health]);
    // The lease of a failing domain: one holder at a time, lapsing.
    let d = peer.clone();
    assert!(write(store, move |tx| tx.lease_peer_domain(&d, t(20), t(30))).unwrap());
    let d = peer.clone();
    assert!(
        !write(store, move |tx| tx.lease_peer_domain(&d, t(25), t(35))).unwrap(),
        "held"
    );
    let d = peer.clone();
    assert!(
        write(store, move |tx| tx.lease_peer_domain(&d, t(30), t(40))).unwrap(),
        "lapsed"
    );
    let d = peer.clone();
    write(store, move |tx| tx.release_peer_domain(&d)).unwrap();
    let d = peer.clone();
    assert!(
        write(store, move |tx| tx.lease_peer_domain(&d, t(31), t(41))).unwrap(),
        "given back"
    );
    let row = QueuedRevocation::new(h("xyz@p.example"), t(0));
    write(store, move |tx| tx.enqueue(u2, &row)).unwrap();
    let d = peer.clone();
    assert_eq!(read(store, |tx| tx.queued_for_domain(&d)).unwrap(), 1);
    write(store, move |tx| tx.dequeue(u2, &h("xyz@p.example"))).unwrap();

    // Replay keys: duplicate, nonce reuse, expiry, empty nonces never collide, pruning.
    let rec = |key: u8, nonce: &str, exp: i64| ReplayRecord {
        key: ReplayKey::from_bytes([key; 32]),
        sender: h("alice@a.example"),
        nonce: Nonce::parse(nonce).unwrap(),
        expires_at: t(exp),
    };
    let n1 = "AAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(
        write(store, move |tx| tx.record_replay(&rec(1, n1, 10), t(0))).unwrap(),
        ReplayOutcome::Recorded
    );
    assert_eq!(
        write(store, move |tx| tx.record_replay(&rec(1, n1, 10), t(0))).unwrap(),
        ReplayOutcome::Duplicate
    );
    assert_eq!(
        write(store, move |tx| tx.record_replay(&rec(2, n1, 10), t(0))).unwrap(),
        ReplayOutcome::NonceReused
    );
    assert_eq!(
        write(store, move |tx| tx.record_replay(&rec(3, "", 10), t(0))).unwrap(),
        ReplayOutcome::Recorded
    );
    assert_eq!(
        write(store, move |tx| tx.record_replay(&rec(4, "", 10), t(0))).unwrap(),
        ReplayOutcome::Recorded
    );
    assert_eq!(
        write(store, move |tx| tx.record_replay(&rec(3, "", 10), t(9))).unwrap(),
        ReplayOutcome::Duplicate,
        "live until it expires"
    );
    assert_eq!(
        write(store, move |tx| tx.record_replay(&rec(1, n1, 10), t(10))).unwrap(),
        ReplayOutcome::Recorded,
        "expired"
    );
    assert_eq!(
        write(store, move |tx| tx.record_replay(&rec(4, "", 10), t(10))).unwrap(),
        ReplayOutcome::Recorded,
        "expired, without a nonce"
    );
    assert_eq!(
        write(store, move |tx| tx.record_replay(&rec(2, n1, 30), t(11))).unwrap(),
        ReplayOutcome::Recorded,
        "expired rows no longer count"
    );
    assert!(
        write(store, move |tx| tx.prune_replays(t(20), 1)).unwrap() == 1,
        "pruning takes batches"
    );
    assert!(write(store, move |tx| tx.prune_replays(t(20), 1000)).unwrap() >= 1);
    assert_eq!(write(store, move |tx| tx.prune_replays(t(20), 1000)).unwrap(), 0);
    assert_eq!(
        write(store, move |tx| tx.record_replay(&rec(2, n1, 30), t(20))).unwrap(),
        ReplayOutcome::Duplicate,
        "pruning keeps live rows"
    );

    // Audit, oldest first, per user.
    for action in ["first", "second"] {
        let record = AuditRecord {
            user: u1,
            at: t(1),
            action: action.into(),
            details: serde_json::json!({"n": 1}),
        };
        write(store, move |tx| tx.append_audit(&record)).unwrap();
    }
    let audit = read(store, |tx| tx.audit_records(u1)).unwrap();
    assert_eq!(
        audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
        vec!["first", "second"]
    );
    assert_eq!(audit[0].details, serde_json::json!({"n": 1}));
    assert!(read(store, |tx| tx.audit_records(u2)).unwrap().is_empty());

    // A unit of work that fails leaves nothing behind.
    let failed = write(store, move |tx| {
        tx.enqueue(u2, &QueuedRevocation::new(h("zed@b.example"), t(0)))?;
        tx.insert_message(u2, t(0), None, "{}")?;
        Err::<(), _>(StoreError::Unavailable("injected".into()))
    });
    assert!(failed.is_err());
    assert_eq!(read(store, |tx| tx.queue_len(u2)).unwrap(), 0);
    assert_eq!(read(store, |tx| tx.identity(u2)).unwrap().unwrap().inbox_messages, 1);
    assert!(write(store, move |tx| tx.record_readiness(t(0))).is_ok());
}

/// Messages stored by batch: in order, each with its own time and sender,
/// the inbox count raised by their number.
pub fn batched_messages(store: &dyn Store) {
    let user = write(store, move |tx| tx.create_user(t(0))).unwrap();
    let ids = write(store, move |tx| {
        let messages = [
            NewMessage {
                received_at: t(1),
                unsolicited_from: None,
                envelope: "{\"n\":1}",
            },
            NewMessage {
                received_at: t(2),
                unsolicited_from: Some("x@b.example"),
                envelope: "{\"n\":2}",
            },
            NewMessage {
                received_at: t(3),
                unsolicited_from: Some("x@b.example"),
                envelope: "{\"n\":3}",
            },
        ];
        tx.insert_messages(user, &messages)
    })
    .unwrap();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in the batch's order: {ids:?}");
    let stored = read(store, |tx| tx.messages_after(user, None, 10)).unwrap();
    let stored: Vec<(i64, UnixTime, &str)> = stored
        .iter()
        .map(|m| (m.id, m.received_at, m.envelope.as_str()))
        .collect();
    assert_eq!(
        stored,
        vec![
            (ids[0], t(1), "{\"n\":1}"),
            (ids[1], t(2), "{\"n\":2}"),
            (ids[2], t(3), "{\"n\":3}")
        ]
    );
    assert_eq!(read(store, |tx| tx.count_unsolicited(user, "x@b.example")).unwrap(), 2);
    let record = read(store, |tx| tx.identity(user)).unwrap().unwrap();
    assert_eq!(record.inbox_messages, 3, "the inbox count follows the batch");
    assert!(write(store, move |tx| tx.insert_messages(user, &[]))
        .unwrap()
        .is_empty());
}

/// A user's relationships with several peers read at once: those it has,
/// none of another user's.
pub fn batched_relationships(store: &dyn Store) {
    let (u1, u2) = write(store, move |tx| {
        Ok::<_, StoreError>((tx.create_user(t(0))?, tx.create_user(t(0))?))
    })
    .unwrap();
    write(store, move |tx| {
        for peer in ["ann@p.example", "ben@p.example"] {
            tx.put_relationship(
                u1,
                &Relationship::entering(h(peer), RelationshipState::Active, t(1), None),
            )?;
        }
        tx.put_relationship(
            u2,
            &Relationship::entering(h("cat@p.example"), RelationshipState::Active, t(1), None),
        )
    })
    .unwrap();
    let peers = [
        h("ann@p.example"),
        h("cat@p.example"),
        h("dan@p.example"),
        h("ben@p.example"),
    ];
    let mut found: Vec<String> = read(store, |tx| tx.relationships_with(u1, &peers))
        .unwrap()
        .into_iter()
        .map(|r| r.peer.as_str().to_owned())
        .collect();
    found.sort();
    assert_eq!(found, ["ann@p.example", "ben@p.example"]);
    assert!(read(store, |tx| tx.relationships_with(u1, &[])).unwrap().is_empty());
}

/// Replay records by batch: the rows in the way of several records read at
/// once (expired or not), several recorded at once, expired rows in the
/// way replaced, and a live one in the way refused with nothing recorded.
pub fn batched_replays(store: &dyn Store) {
    let rec = |key: u8, sender: &str, nonce: &str, exp: i64| ReplayRecord {
        key: ReplayKey::from_bytes([key; 32]),
        sender: h(sender),
        nonce: Nonce::parse(nonce).unwrap(),
        expires_at: t(exp),
    };
    let (n1, n2) = ("AAAAAAAAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBBBBBBBB");
    let first = vec![
        rec(1, "alice@a.example", n1, 10),
        rec(2, "bob@a.example", "", 10),
        rec(3, "alice@a.example", n2, 30),
    ];
    let records = first.clone();
    write(store, move |tx| tx.record_replays(&records, t(0))).unwrap();

    let asked = vec![
        // Same sender and nonce, other bytes: row 1 is in its way.
        rec(9, "alice@a.example", n1, 40),
        // Same key without a nonce: row 2.
        rec(2, "bob@a.example", "", 40),
        // Another sender with nonce n2, another key without a nonce: nothing.
        rec(3, "carol@a.example", n2, 40),
        rec(8, "bob@a.example", "", 40),
    ];
    let records = asked.clone();
    let mut in_way = read(store, move |tx| tx.replays_in_way(&records)).unwrap();
    in_way.sort_by_key(|r| r.key.as_bytes()[0]);
    assert_eq!(in_way, first[..2].to_vec(), "rows in the way, and only those");

    let records = asked.clone();
    write(store, move |tx| tx.record_replays(&records[..1], t(10))).expect("row 1 expired at 10: replaced");
    let records = asked.clone();
    let refused = write(store, move |tx| {
        tx.record_replays(&[records[2].clone(), records[1].clone()], t(9))
    });
    assert!(refused.is_err(), "row 2 is live at 9: {refused:?}");
    let records = asked.clone();
    assert_eq!(
        write(store, move |tx| tx.record_replay(&records[2], t(9))).unwrap(),
        ReplayOutcome::Recorded,
        "the refused batch recorded nothing"
    );
    let records = asked.clone();
    assert_eq!(
        write(store, move |tx| tx.record_replay(&records[0], t(10))).unwrap(),
        ReplayOutcome::Duplicate,
        "the replacement is recorded"
    );
}

/// The inbox's batch read and write: the recipient (none for a free
/// alias), its relationships with the senders asked about and the replay
/// rows in the way, read at once; replays and messages written at once,
/// an expired row in the way replaced.
pub fn inbox_batch_reads_and_writes(store: &dyn Store) {
    let alias = Alias::parse("rita").unwrap();
    let held = alias.clone();
    let user = write(store, move |tx| {
        let user = tx.create_user(t(0))?;
        tx.set_alias(user, &held, t(0))?;
        tx.put_relationship(
            user,
            &Relationship::entering(h("ann@p.example"), RelationshipState::Active, t(1), None),
        )?;
        tx.put_relationship(
            user,
            &Relationship::entering(h("cat@p.example"), RelationshipState::Incoming, t(1), None),
        )?;
        Ok::<_, StoreError>(user)
    })
    .unwrap();
    let rec = |key: u8, sender: &str, nonce: &str, exp: i64| ReplayRecord {
        key: ReplayKey::from_bytes([key; 32]),
        sender: h(sender),
        nonce: Nonce::parse(nonce).unwrap(),
        expires_at: t(exp),
    };
    let n1 = "AAAAAAAAAAAAAAAAAAAAAA";
    let stored = vec![rec(1, "ann@p.example", n1, 10), rec(2, "ann@p.example", "", 50)];
    let records = stored.clone();
    write(store, move |tx| tx.record_replays(&records, t(0))).unwrap();

    let senders = [h("ann@p.example"), h("ben@p.example")];
    let asked = vec![
        rec(3, "ann@p.example", n1, 60),
        rec(2, "ann@p.example", "", 60),
        rec(4, "ben@p.example", "", 60),
    ];
    let (held, records) = (alias.clone(), asked.clone());
    // In a write, where the recipient is locked as the inbox reads it.
    let view = write(store, move |tx| tx.inbox_batch_view(&held, &senders, &records))
        .unwrap()
        .expect("rita holds the alias");
    assert_eq!(view.recipient.user, user);
    let peers: Vec<&str> = view.relationships.iter().map(|r| r.peer.as_str()).collect();
    assert_eq!(peers, ["ann@p.example"], "only the senders asked about");
    let mut in_way = view.replays_in_way.clone();
    in_way.sort_by_key(|r| r.key.as_bytes()[0]);
    assert_eq!(in_way, stored, "expired or not");
    let nobody = Alias::parse("nobody").unwrap();
    assert_eq!(
        read(store, move |tx| tx.inbox_batch_view(&nobody, &[], &[])).unwrap(),
        None
    );

    // Row 1 (n1) expired at 20: replaced by record 3.
    let records = vec![asked[0].clone(), asked[2].clone()];
    write(store, move |tx| {
        let messages = [
            NewMessage {
                received_at: t(20),
                unsolicited_from: None,
                envelope: "{\"m\":1}",
            },
            NewMessage {
                received_at: t(21),
                unsolicited_from: Some("ben@p.example"),
                envelope: "{\"m\":2}",
            },
        ];
        tx.store_inbox_batch(user, &records, t(20), &messages)
    })
    .unwrap();
    let envelopes: Vec<String> = read(store, |tx| tx.messages_after(user, None, 10))
        .unwrap()
        .into_iter()
        .map(|m| m.envelope)
        .collect();
    assert_eq!(envelopes, ["{\"m\":1}", "{\"m\":2}"]);
    assert_eq!(read(store, |tx| tx.identity(user)).unwrap().unwrap().inbox_messages, 2);
    assert_eq!(
        read(store, |tx| tx.count_unsolicited(user, "ben@p.example")).unwrap(),
        1
    );
    let records = asked.clone();
    let outcomes = write(store, move |tx| {
        Ok::<_, StoreError>((
            tx.record_replay(&records[0], t(20))?,
            tx.record_replay(&records[2], t(20))?,
        ))
    })
    .unwrap();
    assert_eq!(
        outcomes,
        (ReplayOutcome::Duplicate, ReplayOutcome::Duplicate),
        "both recorded"
    );

    // Replays alone: the inbox count stays.
    let records = vec![rec(5, "ann@p.example", "", 60)];
    write(store, move |tx| tx.store_inbox_batch(user, &records, t(20), &[])).unwrap();
    assert_eq!(read(store, |tx| tx.identity(user)).unwrap().unwrap().inbox_messages, 2);
}

fn pin_of(handle: &str, seq: u64, prev: &str, kind: EntryKind, change: EntryClass) -> PeerPin {
    let handle = h(handle);
    let at = Timestamp::parse("2026-11-27T10:00:00Z").unwrap();
    let entry = KeyLogEntry::build(&handle, seq, prev, &at, &kind, None, None).unwrap();
    PeerPin {
        handle,
        pin: KeyPin {
            class: matches!(kind, EntryKind::Keys { .. }).then_some(change),
            entry,
            previous_signing_key: None,
            last_break: (change == EntryClass::Reset).then(|| KeyBreak {
                seq,
                change,
                at,
                seen_at: t(5),
            }),
        },
        change,
        changed_at: t(5),
    }
}

/// Pins of remote handles' key logs and their conflicts (PROTOCOL.md
/// section 12): stored whole, moved only by compare-and-set, forgotten by
/// handle or by domain together with their conflicts.
pub fn key_pins(store: &dyn Store) {
    let keys = ClientKeys::generate().unwrap();
    let signing = keys.signing_key();
    let encryption = fedid_domain::EncryptionKey::parse(&keys.public_keys().1).unwrap();
    let first = pin_of(
        "alice@a.example",
        1,
        "",
        EntryKind::Keys { signing, encryption },
        EntryClass::First,
    );
    let moved = pin_of(
        "alice@a.example",
        2,
        &first.pin.head(),
        EntryKind::Reset,
        EntryClass::Reset,
    );
    let other = pin_of(
        "carol@a.example",
        1,
        "",
        EntryKind::Keys { signing, encryption },
        EntryClass::First,
    );
    let elsewhere = pin_of(
        "dave@c.example",
        1,
        "",
        EntryKind::Keys { signing, encryption },
        EntryClass::First,
    );

    let pin = first.clone();
    assert!(
        write(store, move |tx| tx.move_key_pin(&pin, None)).unwrap(),
        "a first pin is written"
    );
    let pin = first.clone();
    assert!(
        !write(store, move |tx| tx.move_key_pin(&pin, None)).unwrap(),
        "a second first contact loses"
    );
    assert_eq!(
        read(store, |tx| tx.key_pin(&h("alice@a.example"))).unwrap(),
        Some(first.clone())
    );
    let (pin, stale) = (moved.clone(), (7, first.pin.head()));
    assert!(
        !write(store, move |tx| tx.move_key_pin(&pin, Some(&stale))).unwrap(),
        "a move from another position loses"
    );
    let (pin, from) = (moved.clone(), first.position());
    assert!(write(store, move |tx| tx.move_key_pin(&pin, Some(&from))).unwrap());
    let (pin, from) = (moved.clone(), first.position());
    assert!(
        !write(store, move |tx| tx.move_key_pin(&pin, Some(&from))).unwrap(),
        "the same move twice: the second loses"
    );
    assert_eq!(
        read(store, |tx| tx.key_pin(&h("alice@a.example"))).unwrap(),
        Some(moved.clone())
    );
    for pin in [other.clone(), elsewhere.clone()] {
        assert!(write(store, move |tx| tx.move_key_pin(&pin, None)).unwrap());
    }
    let asked = [h("alice@a.example"), h("nobody@a.example"), h("dave@c.example")];
    let mut found = read(store, |tx| tx.key_pins(&asked)).unwrap();
    found.sort_by(|a, b| a.handle.as_str().cmp(b.handle.as_str()));
    assert_eq!(found, vec![moved.clone(), elsewhere.clone()]);

    // Conflicts: one per handle, the first kept.
    let conflict = |handle: &str, reason: &str| KeyConflict {
        handle: h(handle),
        at: t(6),
        pinned_seq: 2,
        pinned_head: moved.pin.head(),
        offered_seq: Some(1),
        offered_head: None,
        reason: reason.into(),
    };
    let (c1, c2, c3) = (
        conflict("alice@a.example", "rolled back"),
        conflict("alice@a.example", "later"),
        conflict("dave@c.example", "forked"),
    );
    assert!(write(store, move |tx| tx.record_key_conflict(&c1)).unwrap());
    assert!(!write(store, move |tx| tx.record_key_conflict(&c2)).unwrap());
    assert!(write(store, move |tx| tx.record_key_conflict(&c3)).unwrap());
    assert_eq!(
        read(store, |tx| tx.key_conflict(&h("alice@a.example"))).unwrap(),
        Some(conflict("alice@a.example", "rolled back"))
    );
    assert_eq!(read(store, |tx| tx.count_key_conflicts()).unwrap(), 2);
    let listed = read(store, |tx| tx.key_conflicts()).unwrap();
    assert_eq!(
        listed.iter().map(|c| c.handle.as_str()).collect::<Vec<_>>(),
        vec!["alice@a.example", "dave@c.example"]
    );

    // Unpinning: a domain's handles, then one handle.
    let target = PinTarget::Domain(Domain::parse("a.example", DomainPolicy::HTTPS_PUBLIC).unwrap());
    let mut unpinned = write(store, move |tx| tx.unpin(&target)).unwrap();
    unpinned.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(unpinned, vec![h("alice@a.example"), h("carol@a.example")]);
    assert_eq!(read(store, |tx| tx.key_pin(&h("alice@a.example"))).unwrap(), None);
    assert_eq!(read(store, |tx| tx.key_conflict(&h("alice@a.example"))).unwrap(), None);
    assert_eq!(
        read(store, |tx| tx.count_key_conflicts()).unwrap(),
        1,
        "other domains keep theirs"
    );
    let target = PinTarget::Handle(h("dave@c.example"));
    assert_eq!(
        write(store, move |tx| tx.unpin(&target)).unwrap(),
        vec![h("dave@c.example")]
    );
    assert_eq!(read(store, |tx| tx.count_key_conflicts()).unwrap(), 0);
    let target = PinTarget::Handle(h("dave@c.example"));
    assert!(write(store, move |tx| tx.unpin(&target)).unwrap().is_empty());
}

/// Two instances (or writers) moving one pin from one position at once:
/// exactly one move wins, whatever the store's parallelism.
pub fn concurrent_pin_moves(store: Arc<dyn Store>) {
    let keys = ClientKeys::generate().unwrap();
    let kind = || EntryKind::Keys {
        signing: keys.signing_key(),
        encryption: fedid_domain::EncryptionKey::parse(&keys.public_keys().1).unwrap(),
    };
    let first = pin_of("erin@a.example", 1, "", kind(), EntryClass::First);
    let pin = first.clone();
    assert!(write(store.as_ref(), move |tx| tx.move_key_pin(&pin, None)).unwrap());
    let movers: Vec<_> = (0..8)
        .map(|i| {
            let (store, from) = (Arc::clone(&store), first.position());
            // Each mover goes to a different entry 2 (another `at`).
            let mut to = pin_of(
                "erin@a.example",
                2,
                &first.pin.head(),
                EntryKind::Reset,
                EntryClass::Reset,
            );
            to.changed_at = t(100 + i);
            std::thread::spawn(move || write(store.as_ref(), move |tx| tx.move_key_pin(&to, Some(&from))).unwrap())
        })
        .collect();
    let won = movers.into_iter().map(|m| m.join().unwrap()).filter(|won| *won).count();
    assert_eq!(won, 1, "one move from one position");
}

/// Who relates to a peer: every local user with a relationship with it.
pub fn users_related_to(store: &dyn Store) {
    let (u1, u2, u3) = write(store, move |tx| {
        Ok::<_, StoreError>((tx.create_user(t(0))?, tx.create_user(t(0))?, tx.create_user(t(0))?))
    })
    .unwrap();
    for (user, peer) in [(u1, "alice@a.example"), (u2, "alice@a.example"), (u3, "bob@a.example")] {
        let relationship = Relationship::entering(h(peer), RelationshipState::Active, t(1), None);
        write(store, move |tx| tx.put_relationship(user, &relationship)).unwrap();
    }
    assert_eq!(
        read(store, |tx| tx.users_related_to(&h("alice@a.example"), 10)).unwrap(),
        vec![u1, u2]
    );
    assert_eq!(
        read(store, |tx| tx.users_related_to(&h("alice@a.example"), 1)).unwrap(),
        vec![u1]
    );
}

/// The product story with `store` behind the instance of `b.example`,
/// against an in-memory `a.example`: relationships, messages, reset of the
/// store's user, flush with refetch at the peer.
pub fn service_story(store: Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::at_vectors_now());
    let network = Network::new(Duration::from_millis(200));
    let a = Instance::start(&network, "a.example", clock.clone()).unwrap();
    let b = crate::start_on(&network, crate::settings("b.example").unwrap(), store, clock.clone());
    let now = || fedid_domain::Clock::now(clock.as_ref());

    let (alice, _) = a.fedid.create_user().unwrap();
    a.fedid.set_alias(alice, "alice").unwrap();
    let alice_keys = ClientKeys::generate().unwrap();
    alice_keys.with_keys(|k| a.fedid.set_keys(alice, k)).unwrap();
    let (bob, token) = b.create_user().unwrap();
    assert_eq!(b.authenticate(token.expose()).unwrap(), Some(bob));
    b.set_alias(bob, "Bob").unwrap();
    let bob_keys = ClientKeys::generate().unwrap();
    bob_keys.with_keys(|k| b.set_keys(bob, k)).unwrap();
    let (ha, hb) = (h("alice@a.example"), h("bob@b.example"));

    let send = |node: &fedid_domain::Fedid, user, keys: &ClientKeys, from: &Handle, to: &Handle, kind| {
        node.send(user, keys.outbox_request(from, to, kind, Map::new(), now()))
            .unwrap()
    };
    send(&b, bob, &bob_keys, &hb, &ha, MessageType::RelationshipRequest);
    send(&a.fedid, alice, &alice_keys, &ha, &hb, MessageType::RelationshipAccept);
    send(&a.fedid, alice, &alice_keys, &ha, &hb, MessageType::Message);
    let envelope = alice_keys
        .envelope(&ha, &hb, MessageType::Message, Map::new(), now())
        .wire_form();
    assert_eq!(b.receive(envelope.as_bytes()), Ok(fedid_domain::Received::Accepted));
    assert_eq!(b.receive(envelope.as_bytes()), Ok(fedid_domain::Received::Duplicate));
    let inbox = b.inbox(bob, None, PageLimit::DEFAULT).unwrap();
    assert_eq!(inbox.items.len(), 3, "accept and two messages");
    b.acknowledge(bob, inbox.items[0].id).unwrap();

    let report = b.reset_identity(bob, Some("erase-all-my-data")).unwrap();
    assert_eq!(
        (
            report.revocations_queued,
            report.relationships_erased,
            report.inbox_messages_erased
        ),
        (1, 1, 2)
    );
    let new_keys = ClientKeys::generate().unwrap();
    new_keys.with_keys(|k| b.set_keys(bob, k)).unwrap();
    network.set_unreachable("a.example", true);
    let item = new_keys.flush_item(&hb, &ha, now());
    let report = b.flush(bob, std::slice::from_ref(&item)).unwrap();
    assert_eq!(report.results[0].outcome.as_str(), "failed");
    network.set_unreachable("a.example", false);
    let report = b.flush(bob, &[item]).unwrap();
    assert_eq!(report.results[0].outcome.as_str(), "delivered");
    assert_eq!(report.remaining, 0);
    assert!(a
        .fedid
        .relationships(alice, None, PageLimit::DEFAULT)
        .unwrap()
        .items
        .is_empty());
    let audit = b.audit_records(bob).unwrap();
    assert_eq!(audit.iter().filter(|r| r.action == "identity_reset").count(), 1);
}
