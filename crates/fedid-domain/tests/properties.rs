//! Property tests: sign/verify round trips over arbitrary payloads, any
//! change to a signed member breaks verification, canonicalization is
//! idempotent, and the reader never panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fedid_domain::envelope::canonical;
use fedid_domain::json::parse_strict;
use fedid_domain::{DomainPolicy, Envelope, Handle, MessageType, Nonce, SigningSecret, Timestamp, UnsignedEnvelope};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53)..(1i64 << 53)).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn payload() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("\\PC{0,8}", json_value(), 0..6).prop_map(|m| m.into_iter().collect())
}

fn secret() -> SigningSecret {
    SigningSecret::from_seed(&[7u8; 32]).unwrap()
}

fn unsigned(payload: Map<String, Value>, kind: usize, version: u64) -> UnsignedEnvelope {
    UnsignedEnvelope {
        message_type: MessageType::ALL[kind % 4],
        message_version: version,
        nonce: Nonce::parse("q3Zk0m4b2Kx8R1sYw9uAeQ").unwrap(),
        from: Handle::parse("alice@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap(),
        to: Handle::parse("bob@b.example", DomainPolicy::HTTPS_PUBLIC).unwrap(),
        timestamp: Timestamp::parse("2026-11-27T10:15:00Z").unwrap(),
        payload,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn verify_of_sign_holds_and_survives_the_wire(payload in payload(), kind in 0usize..4, version in 1u64..1000) {
        let secret = secret();
        let envelope = unsigned(payload, kind, version).sign(&secret);
        let reparsed = Envelope::parse(envelope.wire_form().as_bytes(), DomainPolicy::HTTPS_PUBLIC).unwrap();
        prop_assert_eq!(reparsed.signed_bytes(), envelope.signed_bytes());
        prop_assert!(reparsed.verify(&secret.public_key()).is_ok());
    }

    #[test]
    fn the_spliced_wire_form_is_the_serialized_one(payload in payload(), kind in 0usize..4, version in 1u64..1000) {
        let envelope = unsigned(payload, kind, version).sign(&secret());
        prop_assert_eq!(envelope.wire_form(), envelope.serialized_wire_form());
    }

    #[test]
    fn signed_bytes_are_the_canonical_form_of_the_signed_object(payload in payload(), kind in 0usize..4, version in 1u64..u64::MAX) {
        let envelope = unsigned(payload, kind, version);
        let mut object = Map::new();
        object.insert("to".into(), envelope.to.as_str().into());
        object.insert("timestamp".into(), envelope.timestamp.as_str().into());
        object.insert("protocol_version".into(), 1.into());
        object.insert("payload".into(), Value::Object(envelope.payload.clone()));
        object.insert("nonce".into(), envelope.nonce.as_str().into());
        object.insert("message_version".into(), version.into());
        object.insert("message_type".into(), envelope.message_type.as_str().into());
        object.insert("from".into(), envelope.from.as_str().into());
        prop_assert_eq!(envelope.signed_bytes(), canonical(&Value::Object(object)));
    }

    #[test]
    fn changing_any_signed_member_breaks_verification(payload in payload(), member in 0usize..8) {
        let secret = secret();
        let envelope = unsigned(payload, 0, 1).sign(&secret);
        let mut wire: Value = serde_json::from_str(&envelope.wire_form()).unwrap();
        let object = wire.as_object_mut().unwrap();
        match member {
            0 => { object.insert("from".into(), "mallory@a.example".into()); }
            1 => { object.insert("message_type".into(), "MESSAGE".into()); object.insert("type".into(), "MESSAGE".into()); }
            2 => { object.insert("message_version".into(), 2.into()); }
            3 => { object.insert("nonce".into(), "AAAAAAAAAAAAAAAAAAAAAA".into()); }
            4 => { object.get_mut("payload").unwrap().as_object_mut().unwrap().insert("\u{1}extra".into(), Value::Null); }
            5 => { object.insert("timestamp".into(), "2026-11-27T10:15:00.0Z".into()); }
            6 => { object.insert("to".into(), "carol@b.example".into()); }
            _ => { object.remove("nonce"); }
        }
        let tampered = Envelope::parse(&serde_json::to_vec(&wire).unwrap(), DomainPolicy::HTTPS_PUBLIC).unwrap();
        prop_assert!(tampered.verify(&secret.public_key()).is_err());
    }

    #[test]
    fn canonicalizing_twice_gives_the_same_bytes(value in json_value()) {
        let once = canonical(&value);
        let again = canonical(&parse_strict(&once).unwrap());
        prop_assert_eq!(once, again);
    }

    #[test]
    fn the_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Envelope::parse(&bytes, DomainPolicy::HTTPS_PUBLIC);
        let _ = parse_strict(&bytes);
    }
}
