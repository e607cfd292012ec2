//! The contract's key-log vectors (../shared/spec/vectors/keylog.json):
//! bytes, hashes and classes of one log, the verdicts of 22 pin checks and
//! 5 cases of the rotation grace, made with an implementation independent
//! of fedid.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fedid_domain::keylog::{check_pin, grace_key, EntryClass, KeyLogEntry, KeyPin, LogAnswer, PinVerdict};
use fedid_domain::{DomainPolicy, EncryptionKey, Envelope, Handle, SigningKey, Timestamp, UnixTime};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/spec/vectors/keylog.json");
    let text = std::fs::read_to_string(path).expect("the contract's vectors sit beside the repository in ../shared");
    serde_json::from_str(&text).unwrap()
}

/// After every entry of the vectors: no `at` is in the future.
fn now() -> UnixTime {
    Timestamp::parse("2026-11-28T00:00:00Z").unwrap().instant()
}

fn class_name(class: Option<EntryClass>) -> Value {
    class.map_or(Value::Null, |c| Value::String(c.as_str().into()))
}

#[test]
fn the_log_reproduces_bytes_hashes_proofs_and_classes() {
    let v = vectors();
    let mut previous: Option<KeyLogEntry> = None;
    for case in v["log"]["entries"].as_array().unwrap() {
        let entry = KeyLogEntry::parse(&case["entry"]).unwrap();
        let seq = entry.seq();
        assert_eq!(
            std::str::from_utf8(entry.signed_bytes()).unwrap(),
            case["signedBytes"].as_str().unwrap(),
            "{seq}"
        );
        assert_eq!(
            std::str::from_utf8(entry.entry_bytes()).unwrap(),
            case["entryBytes"].as_str().unwrap(),
            "{seq}"
        );
        assert_eq!(entry.hash(), case["hash"].as_str().unwrap(), "{seq}");
        // `follows` verifies every proof present and gives the class.
        let class = entry.follows(previous.as_ref(), now(), 300).unwrap();
        assert_eq!(class_name(class), case["class"], "{seq}");
        previous = Some(entry);
    }
    let last = previous.unwrap();
    assert_eq!(last.hash(), v["log"]["head"].as_str().unwrap());
    assert_eq!(last.seq(), v["log"]["seq"].as_u64().unwrap());
}

fn pin_of(value: &Value) -> Option<KeyPin> {
    if value.is_null() {
        return None;
    }
    let entry = KeyLogEntry::parse(&value["entry"]).unwrap();
    assert_eq!(entry.hash(), value["head"].as_str().unwrap());
    assert!(value["lastBreak"].is_null(), "the vectors' pins start without a break");
    Some(KeyPin {
        entry,
        class: None,
        previous_signing_key: value["previousSigningKey"]
            .as_str()
            .map(|k| SigningKey::parse(k).unwrap()),
        last_break: None,
    })
}

fn answer_of(value: &Value) -> LogAnswer {
    LogAnswer {
        signing: SigningKey::parse(value["signingKey"].as_str().unwrap()).unwrap(),
        encryption: EncryptionKey::parse(value["encryptionKey"].as_str().unwrap()).unwrap(),
        log: value["keyLogSeq"]
            .as_u64()
            .map(|seq| (seq, value["keyLogHead"].as_str().unwrap().to_owned())),
    }
}

#[test]
fn every_pin_check_gives_its_verdict_change_and_last_break() {
    let v = vectors();
    let alice = Handle::parse("alice@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    for case in v["pinChecks"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let pin = pin_of(&case["pinned"]);
        let entries = case["entries"].as_array().unwrap();
        let verdict = check_pin(
            &alice,
            pin.as_ref(),
            entries,
            &answer_of(&case["discovery"]),
            now(),
            300,
        );
        match (case["verdict"].as_str().unwrap(), verdict) {
            ("ok", PinVerdict::Ok { change, pin }) => {
                assert_eq!(class_name(change), case["change"], "{name}");
                assert_eq!(pin.last_break.map(|b| b.seq), case["lastBreakSeq"].as_u64(), "{name}");
            }
            ("conflict", PinVerdict::Conflict(_)) => {}
            (wanted, got) => panic!("{name}: wanted {wanted}, got {got:?}"),
        }
    }
}

#[test]
fn the_rotation_grace_gives_every_verdict() {
    let v = vectors();
    let log: Vec<&Value> = v["log"]["entries"].as_array().unwrap().iter().collect();
    for case in v["grace"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let seq = case["pinnedSeq"].as_u64().unwrap() as usize;
        let entry = KeyLogEntry::parse(&log[seq - 1]["entry"]).unwrap();
        let previous = KeyLogEntry::parse(&log[seq - 2]["entry"]).unwrap();
        let class = log[seq - 1]["class"].as_str().unwrap();
        let pin = KeyPin {
            class: [
                EntryClass::Replaced,
                EntryClass::Reset,
                EntryClass::First,
                EntryClass::Unchanged,
                EntryClass::Rotated,
            ]
            .into_iter()
            .find(|c| c.as_str() == class),
            previous_signing_key: previous.signing_key().copied(),
            entry,
            last_break: None,
        };
        let envelope = Envelope::parse(
            serde_json::to_string(&case["envelope"]).unwrap().as_bytes(),
            DomainPolicy::HTTPS_PUBLIC,
        )
        .unwrap();
        assert!(
            envelope.clone().verify(pin.entry.signing_key().unwrap()).is_err(),
            "{name}: signed with an earlier key"
        );
        let now = Timestamp::parse(case["now"].as_str().unwrap()).unwrap().instant();
        let verdict = match grace_key(&pin, envelope.timestamp().instant(), now, 300) {
            Some(key) if envelope.verify(key).is_ok() => "accepted",
            _ => "invalid_signature",
        };
        assert_eq!(verdict, case["verdict"].as_str().unwrap(), "{name}");
    }
}

/// The vectors' six-entry log as entry bytes, and the answer for it.
fn valid_chain() -> (Vec<Vec<u8>>, LogAnswer) {
    let v = vectors();
    let entries: Vec<Vec<u8>> = v["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entryBytes"].as_str().unwrap().as_bytes().to_vec())
        .collect();
    let last = KeyLogEntry::parse(&v["log"]["entries"][5]["entry"]).unwrap();
    let fedid_domain::keylog::EntryKind::Keys { signing, encryption } = last.kind().clone() else {
        panic!("the log ends with keys")
    };
    let answer = LogAnswer {
        signing,
        encryption,
        log: Some((6, v["log"]["head"].as_str().unwrap().to_owned())),
    };
    (entries, answer)
}

fn first_contact(entries: &[Vec<u8>], answer: &LogAnswer) -> Option<PinVerdict> {
    let values: Option<Vec<Value>> = entries
        .iter()
        .map(|e| fedid_domain::json::parse_strict(e).ok())
        .collect();
    let alice = Handle::parse("alice@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    // An entry that is not JSON any more is refused before any check.
    Some(check_pin(&alice, None, &values?, answer, now(), 300))
}

proptest::proptest! {
    #[test]
    fn any_single_byte_change_to_any_entry_is_a_conflict(entry in 0usize..6, position in 0usize..400, byte in 0u8..=255) {
        let (mut entries, answer) = valid_chain();
        let target = &mut entries[entry];
        let position = position % target.len();
        proptest::prop_assume!(target[position] != byte);
        target[position] = byte;
        if let Some(verdict) = first_contact(&entries, &answer) {
            proptest::prop_assert!(matches!(verdict, PinVerdict::Conflict(_)), "{verdict:?}");
        }
    }
}

#[test]
fn the_valid_chain_passes_whole_and_from_every_pin() {
    let (entries, answer) = valid_chain();
    assert!(matches!(first_contact(&entries, &answer), Some(PinVerdict::Ok { .. })));
    let alice = Handle::parse("alice@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let values: Vec<Value> = entries
        .iter()
        .map(|e| fedid_domain::json::parse_strict(e).unwrap())
        .collect();
    for pinned in 1..6 {
        let pin = KeyPin {
            entry: KeyLogEntry::parse(&values[pinned - 1]).unwrap(),
            class: None,
            previous_signing_key: None,
            last_break: None,
        };
        let verdict = check_pin(&alice, Some(&pin), &values[pinned..], &answer, now(), 300);
        assert!(
            matches!(verdict, PinVerdict::Ok { .. }),
            "from seq {pinned}: {verdict:?}"
        );
    }
}

#[test]
fn entries_appended_after_the_discovery_answer_are_ignored_at_first_contact() {
    // Discovery said seq 3; by the time the log was read, it had 6.
    let (entries, _) = valid_chain();
    let v = vectors();
    let third = KeyLogEntry::parse(&v["log"]["entries"][2]["entry"]).unwrap();
    let fedid_domain::keylog::EntryKind::Keys { signing, encryption } = third.kind().clone() else {
        panic!("entry 3 holds keys")
    };
    let answer = LogAnswer {
        signing,
        encryption,
        log: Some((3, v["log"]["entries"][2]["hash"].as_str().unwrap().to_owned())),
    };
    match first_contact(&entries, &answer) {
        Some(PinVerdict::Ok { pin, .. }) => assert_eq!(pin.entry.seq(), 3),
        other => panic!("{other:?}"),
    }
}

/// What a user does to their keys, in a generated history.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// New keys, the old key vouching for them.
    Rotate,
    /// New keys nobody vouched for.
    Replace,
    /// The same keys again (an alias change).
    Same,
    /// An identity reset.
    Reset,
}

/// A valid log built from `steps` (ending with keys), as served values,
/// and the answer that publishes its last keys.
fn generated_log(steps: &[Step]) -> (Vec<Value>, LogAnswer) {
    use fedid_domain::keylog::EntryKind;
    use fedid_domain::{EncryptionSecret, SigningSecret};
    let handle = Handle::parse("alice@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let keys_for = |n: u8| {
        let signing = SigningSecret::from_seed(&[n; 32]).unwrap();
        let encryption = EncryptionSecret::from_bytes([n.wrapping_add(100); 32])
            .public_key()
            .unwrap();
        (signing, encryption)
    };
    let start = Timestamp::parse("2026-11-20T00:00:00Z").unwrap().instant();
    let mut values = Vec::new();
    let mut last: Option<KeyLogEntry> = None;
    let mut current: Option<(SigningSecret, EncryptionKey)> = None;
    let mut fresh = 1u8;
    let mut steps = steps.to_vec();
    steps.insert(0, Step::Replace);
    steps.push(Step::Replace);
    for step in steps {
        let seq = last.as_ref().map_or(1, |l| l.seq() + 1);
        let prev = last.as_ref().map(KeyLogEntry::hash).unwrap_or_default();
        let at = Timestamp::from_instant(start.plus_secs(seq as i64 * 60));
        let after_reset = last.as_ref().is_some_and(|l| matches!(l.kind(), EntryKind::Reset));
        let entry = match (step, &current) {
            (Step::Reset, Some(_)) => {
                current = None;
                KeyLogEntry::build(&handle, seq, &prev, &at, &EntryKind::Reset, None, None).unwrap()
            }
            (Step::Same, Some((signing, encryption))) if !after_reset => {
                let kind = EntryKind::Keys {
                    signing: signing.public_key(),
                    encryption: *encryption,
                };
                KeyLogEntry::build(&handle, seq, &prev, &at, &kind, None, None).unwrap()
            }
            (step, old) => {
                fresh = fresh.wrapping_add(1);
                let (signing, encryption) = keys_for(fresh);
                let kind = EntryKind::Keys {
                    signing: signing.public_key(),
                    encryption,
                };
                let unsigned = KeyLogEntry::build(&handle, seq, &prev, &at, &kind, None, None).unwrap();
                let proof = signing.sign(unsigned.signed_bytes());
                let rotation = match (step, old) {
                    (Step::Rotate, Some((old, _))) if !after_reset => Some(old.sign(unsigned.signed_bytes())),
                    _ => None,
                };
                current = Some((signing, encryption));
                KeyLogEntry::build(&handle, seq, &prev, &at, &kind, Some(&proof), rotation.as_ref()).unwrap()
            }
        };
        values.push(serde_json::from_slice(entry.entry_bytes()).unwrap());
        last = Some(entry);
    }
    let last = last.unwrap();
    let (signing, encryption) = current.unwrap();
    let answer = LogAnswer {
        signing: signing.public_key(),
        encryption,
        log: Some((last.seq(), last.hash())),
    };
    (values, answer)
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    proptest::prop_oneof![
        proptest::strategy::Just(Step::Rotate),
        proptest::strategy::Just(Step::Replace),
        proptest::strategy::Just(Step::Same),
        proptest::strategy::Just(Step::Reset),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn a_valid_chain_passes_at_first_contact_and_from_any_pin(
        steps in proptest::collection::vec(step(), 0..12),
        pin_at in 0usize..16,
    ) {
        let (values, answer) = generated_log(&steps);
        let alice = Handle::parse("alice@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
        let first = check_pin(&alice, None, &values, &answer, now(), 300);
        proptest::prop_assert!(matches!(first, PinVerdict::Ok { .. }), "{first:?}");
        // A peer that pinned an earlier entry extends its pin with the rest.
        let pinned = pin_at % values.len();
        if pinned + 1 < values.len() {
            let pin = KeyPin {
                entry: KeyLogEntry::parse(&values[pinned]).unwrap(),
                class: None,
                previous_signing_key: None,
                last_break: None,
            };
            let extended = check_pin(&alice, Some(&pin), &values[pinned + 1..], &answer, now(), 300);
            proptest::prop_assert!(matches!(extended, PinVerdict::Ok { .. }), "{extended:?}");
        }
    }
}

/// A log long enough that its signatures are checked on several threads.
fn long_log() -> (Vec<Value>, LogAnswer) {
    generated_log(&[Step::Rotate; 300])
}

#[test]
fn a_long_log_of_proven_rotations_passes_at_first_contact() {
    let (values, answer) = long_log();
    let alice = Handle::parse("alice@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let verdict = check_pin(&alice, None, &values, &answer, now(), 300);
    assert!(
        matches!(&verdict, PinVerdict::Ok { change: Some(EntryClass::First), pin } if pin.entry.seq() == 302),
        "{verdict:?}"
    );
}

#[test]
fn a_broken_rotation_proof_late_in_a_long_log_is_the_conflict_named() {
    let (mut values, answer) = long_log();
    // Entry 251 carries the rotation proof of entry 250: valid, for other bytes.
    let borrowed = values[249]["rotationProof"].clone();
    values[250]["rotationProof"] = borrowed;
    let alice = Handle::parse("alice@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let verdict = check_pin(&alice, None, &values, &answer, now(), 300);
    assert!(
        matches!(&verdict, PinVerdict::Conflict(reason) if reason.contains("entry 251: rotationProof")),
        "{verdict:?}"
    );
}
