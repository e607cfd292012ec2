//! Every user-API request body type, then the domain values built from it:
//! never a panic on any input.
#![no_main]

use fedid_domain::{Alias, DomainPolicy, EncryptionKey, Handle, MessageType, Nonce, SigningKey, Timestamp};
use fedid_http::dto::{AliasRequest, FlushRequest, KeysRequest, OutboxRequestBody, ResetRequest};
use libfuzzer_sys::fuzz_target;

const LOCAL: DomainPolicy = DomainPolicy { default_port: 80, allow_ip_literals: true };

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<AliasRequest>(data) {
        let _ = Alias::parse_user_input(&r.alias);
    }
    if let Ok(r) = serde_json::from_slice::<KeysRequest>(data) {
        let _ = SigningKey::parse(&r.signing_key);
        let _ = EncryptionKey::parse(&r.encryption_key);
    }
    let _ = serde_json::from_slice::<ResetRequest>(data);
    if let Ok(r) = serde_json::from_slice::<FlushRequest>(data) {
        for item in r.items {
            let _ = Handle::parse_user_input(&item.peer_handle, LOCAL);
            let _ = Timestamp::parse(&item.timestamp);
            let _ = item.nonce.as_deref().map(Nonce::parse);
            let _ = fedid_domain::Signature::parse(&item.signature);
        }
    }
    if let Ok(r) = serde_json::from_slice::<OutboxRequestBody>(data) {
        let _ = Handle::parse_user_input(&r.to, DomainPolicy::HTTPS_PUBLIC);
        let _ = MessageType::parse(&r.message_type);
        let _ = Timestamp::parse(&r.timestamp);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Handle::parse(text, LOCAL);
        let _ = Timestamp::parse(text);
        let _ = fedid_domain::base64url::decode(text);
    }
});
