//! Envelope parsing, canonicalization and verification on arbitrary bytes:
//! never a panic, and whatever parses round-trips through its wire form.
#![no_main]

use fedid_domain::{DomainPolicy, Envelope, SigningSecret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for policy in [DomainPolicy::HTTPS_PUBLIC, DomainPolicy { default_port: 80, allow_ip_literals: true }] {
        let Ok(envelope) = Envelope::parse(data, policy) else { continue };
        let wire = envelope.wire_form();
        let again = Envelope::parse(wire.as_bytes(), policy).expect("a wire form parses");
        assert_eq!(again.signed_bytes(), envelope.signed_bytes(), "a relayed envelope keeps its signed bytes");
        assert_eq!(again.replay_key(), envelope.replay_key());
        if let Ok(secret) = SigningSecret::from_seed(&[1; 32]) {
            let _ = envelope.clone().verify(&secret.public_key());
            let resigned = envelope.fields().clone().sign(&secret);
            assert!(resigned.verify(&secret.public_key()).is_ok());
        }
    }
});
