//! The contract's test vectors (../shared/spec/vectors/envelopes.json and
//! revoke-expires.json).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fedid_domain::{base64url, DomainPolicy, EncryptionKey, Envelope, SigningKey, SigningSecret, Timestamp};
use serde_json::Value;

fn vectors_file(name: &str) -> Value {
    let path = format!("{}/../../../shared/spec/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).expect("the contract's vectors sit beside the repository in ../shared");
    serde_json::from_str(&text).unwrap()
}

fn vectors() -> Value {
    vectors_file("envelopes.json")
}

/// What the inbox's steps 1, 3 and 5 say of `body` at `now`, with the
/// default skew: `accepted` or the refusal's code.
fn verdict(body: &[u8], now: fedid_domain::UnixTime, key: Option<&SigningKey>) -> String {
    match Envelope::parse(body, DomainPolicy::HTTPS_PUBLIC) {
        Err(e) => e.code().to_owned(),
        Ok(envelope) if !envelope.in_window(now, 300) => "timestamp_out_of_window".to_owned(),
        Ok(envelope) => match envelope.verify(key.expect("a case that reaches step 5 names its signer")) {
            Ok(_) => "accepted".to_owned(),
            Err(_) => "invalid_signature".to_owned(),
        },
    }
}

fn body(case: &Value) -> Vec<u8> {
    match case.get("envelopeRaw") {
        Some(Value::String(raw)) => raw.as_bytes().to_vec(),
        _ => serde_json::to_vec(&case["envelope"]).unwrap(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_of(v: &Value, handle: &str) -> SigningKey {
    SigningKey::parse(v["keys"][handle]["signingKey"].as_str().unwrap()).unwrap()
}

#[test]
fn valid_cases_reproduce_bytes_keys_and_signatures() {
    let v = vectors();
    for case in v["valid"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let envelope =
            Envelope::parse(&body(case), DomainPolicy::HTTPS_PUBLIC).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            std::str::from_utf8(envelope.signed_bytes()).unwrap(),
            case["signedBytes"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            hex(envelope.signed_bytes()),
            case["signedBytesHex"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            envelope.replay_key().to_hex(),
            case["replayKeySha256Hex"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(envelope.wire_form(), case["wireForm"].as_str().unwrap(), "{name}");

        let signer = case["verifyWith"].as_str().unwrap();
        let seed = base64url::decode_array::<32>(v["keys"][signer]["ed25519Seed"].as_str().unwrap()).unwrap();
        let secret = SigningSecret::from_seed(&seed).unwrap();
        assert_eq!(
            secret.public_key(),
            key_of(&v, signer),
            "{name}: seed gives the listed key"
        );
        let resigned = envelope.fields().clone().sign(&secret);
        assert_eq!(
            resigned.signature(),
            envelope.signature(),
            "{name}: Ed25519 is deterministic"
        );
        assert!(envelope.clone().verify(&key_of(&v, signer)).is_ok(), "{name}");

        let relayed = Envelope::parse(envelope.wire_form().as_bytes(), DomainPolicy::HTTPS_PUBLIC).unwrap();
        assert_eq!(
            relayed.signed_bytes(),
            envelope.signed_bytes(),
            "{name}: wire form re-canonicalizes"
        );
    }
}

#[test]
fn invalid_cases_are_refused_for_the_stated_reason() {
    let v = vectors();
    let now = Timestamp::parse(v["now"].as_str().unwrap()).unwrap().instant();
    for case in v["invalid"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let key = case["verifyWith"].as_str().map(|signer| key_of(&v, signer));
        let outcome = verdict(&body(case), now, key.as_ref());
        assert_eq!(outcome, case["expectedError"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn long_lived_revokes_reproduce_bytes_replay_keys_and_lifetimes() {
    let (v, keys) = (vectors_file("revoke-expires.json"), vectors());
    let now = Timestamp::parse(v["now"].as_str().unwrap()).unwrap().instant();
    let key = key_of(&keys, v["verifyWith"].as_str().unwrap());
    for case in v["valid"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        assert_eq!(verdict(&body(case), now, Some(&key)), "accepted", "{name}");
        let envelope = Envelope::parse(&body(case), DomainPolicy::HTTPS_PUBLIC).unwrap();
        assert_eq!(
            std::str::from_utf8(envelope.signed_bytes()).unwrap(),
            case["signedBytes"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            envelope.replay_key().to_hex(),
            case["replayKeySha256Hex"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            Some(envelope.replay_expires_at(300)),
            fedid_domain::UnixTime::parse_rfc3339(case["replayExpiresAt"].as_str().unwrap()),
            "{name}"
        );
    }
}

#[test]
fn long_lived_revokes_are_refused_for_the_stated_reason() {
    let (v, keys) = (vectors_file("revoke-expires.json"), vectors());
    let now = Timestamp::parse(v["now"].as_str().unwrap()).unwrap().instant();
    let key = key_of(&keys, v["verifyWith"].as_str().unwrap());
    for case in v["invalid"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let outcome = verdict(&body(case), now, Some(&key));
        assert_eq!(outcome, case["expectedError"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn invalid_keys_are_refused_and_listed_forms_accepted() {
    let v = vectors();
    for case in v["invalidKeys"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        if let Some(k) = case.get("signingKey") {
            assert!(SigningKey::parse(k.as_str().unwrap()).is_err(), "{name}");
        }
        if let Some(k) = case.get("encryptionKey") {
            assert!(EncryptionKey::parse(k.as_str().unwrap()).is_err(), "{name}");
        }
    }
    for case in v["acceptedKeyForms"].as_array().unwrap() {
        let key = SigningKey::parse(case["signingKey"].as_str().unwrap()).unwrap();
        assert_eq!(key.to_base64url(), case["canonical"].as_str().unwrap());
    }
    for keys in v["keys"].as_object().unwrap().values() {
        assert!(SigningKey::parse(keys["signingKey"].as_str().unwrap()).is_ok());
        assert!(EncryptionKey::parse(keys["encryptionKey"].as_str().unwrap()).is_ok());
    }
}
