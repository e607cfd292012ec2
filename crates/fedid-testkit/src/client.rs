//! [`ClientKeys`]: what a client holds (the private signing key) and signs,
//! so tests can drive fedid the way real clients do.

use fedid_domain::services::{FlushItem, KeysInput, OutboxRequest};
use fedid_domain::{
    base64url, EncryptionKey, Handle, MessageType, Nonce, SigningKey, SigningSecret, Timestamp, UnixTime,
    UnsignedEnvelope,
};
use serde_json::{Map, Value};

/// A client's keys: what a user's device holds, for tests and tools.
pub struct ClientKeys {
    secret: SigningSecret,
    encryption: EncryptionKey,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use fedid_domain::Random;
    let mut out = [0u8; N];
    // An OS randomness failure leaves zeros: callers re-draw or accept a
    // predictable test nonce, never a panic.
    let _ = fedid_domain::ports::SystemRandom::default().fill(&mut out);
    out
}

impl ClientKeys {
    /// Fresh keys from the operating system's randomness.
    pub fn generate() -> Option<Self> {
        Self::from_seed(&SigningSecret::generate_seed()?)
    }

    /// Keys from a signing seed (the encryption secret derived from it).
    pub fn from_seed(seed: &[u8; 32]) -> Option<Self> {
        let secret = SigningSecret::from_seed(seed).ok()?;
        // Any u below p with bit 255 clear and not low-order is a valid
        // X25519 public key; loop until the random draw is one.
        let encryption = loop {
            let mut bytes: [u8; 32] = random_bytes();
            bytes[31] &= 0x7f;
            if let Ok(key) = EncryptionKey::from_bytes(bytes) {
                break key;
            }
        };
        Some(Self { secret, encryption })
    }

    /// The public signing key.
    pub fn signing_key(&self) -> SigningKey {
        self.secret.public_key()
    }

    /// The signing secret.
    pub fn secret(&self) -> &SigningSecret {
        &self.secret
    }

    /// The two keys as base64url, for `PUT /users/me/keys`.
    pub fn public_keys(&self) -> (String, String) {
        (self.signing_key().to_base64url(), self.encryption.to_base64url())
    }

    /// Runs `f` with the body of `PUT /users/me/keys` for these keys.
    pub fn with_keys<T>(&self, f: impl FnOnce(KeysInput<'_>) -> T) -> T {
        let (signing_key, encryption_key) = self.public_keys();
        f(KeysInput {
            signing_key: &signing_key,
            encryption_key: &encryption_key,
            entry: None,
        })
    }

    /// Runs `f` with a `PUT /users/me/keys` body for these keys that
    /// carries a proven key-log entry (PROTOCOL.md section 12): it follows
    /// the log at `log_seq`/`log_head` under `handle`, written `at`, and,
    /// with `rotate_from`, the old keys vouch for these.
    pub fn with_proven_keys<T>(
        &self,
        handle: &Handle,
        (log_seq, log_head): (u64, &str),
        at: UnixTime,
        rotate_from: Option<&ClientKeys>,
        f: impl FnOnce(KeysInput<'_>) -> T,
    ) -> T {
        let (signing_key, encryption_key) = self.public_keys();
        let at = fedid_domain::Timestamp::from_instant(at);
        // Keys generated here always parse; were they not to, the empty
        // bytes signed make a proof the server refuses.
        let signed = fedid_domain::EncryptionKey::parse(&encryption_key)
            .ok()
            .and_then(|encryption| {
                let kind = fedid_domain::keylog::EntryKind::Keys {
                    signing: self.signing_key(),
                    encryption,
                };
                fedid_domain::keylog::KeyLogEntry::build(handle, log_seq + 1, log_head, &at, &kind, None, None).ok()
            })
            .map(|e| e.signed_bytes().to_vec())
            .unwrap_or_default();
        let proof = self.secret().sign(&signed).to_base64url();
        let rotation = rotate_from.map(|old| old.secret().sign(&signed).to_base64url());
        f(KeysInput {
            signing_key: &signing_key,
            encryption_key: &encryption_key,
            entry: Some(fedid_domain::services::ClientEntry {
                seq: log_seq + 1,
                at: at.as_str(),
                proof: &proof,
                rotation_proof: rotation.as_deref(),
            }),
        })
    }

    /// A fresh random nonce.
    pub fn nonce() -> Nonce {
        Nonce::parse(&base64url::encode(&random_bytes::<16>())).unwrap_or_default()
    }

    /// Signs an envelope from `from` to `to` at `now`.
    pub fn envelope(
        &self,
        from: &Handle,
        to: &Handle,
        message_type: MessageType,
        payload: Map<String, Value>,
        now: UnixTime,
    ) -> fedid_domain::Envelope {
        UnsignedEnvelope {
            message_type,
            message_version: 1,
            nonce: Self::nonce(),
            from: from.clone(),
            to: to.clone(),
            timestamp: Timestamp::from_instant(now),
            payload,
        }
        .sign(&self.secret)
    }

    /// The body of an outbox call.
    pub fn outbox_request(
        &self,
        from: &Handle,
        to: &Handle,
        message_type: MessageType,
        payload: Map<String, Value>,
        now: UnixTime,
    ) -> OutboxRequest {
        let envelope = self.envelope(from, to, message_type, payload.clone(), now);
        OutboxRequest {
            to: to.clone(),
            message_type: message_type.as_str().into(),
            message_version: 1,
            nonce: Some(envelope.nonce().as_str().into()),
            timestamp: envelope.timestamp().as_str().into(),
            payload: Some(payload),
            signature: envelope.signature().to_base64url(),
        }
    }

    /// One item of a flush: the REVOKE for `peer`, signed now.
    pub fn flush_item(&self, from: &Handle, peer: &Handle, now: UnixTime) -> FlushItem {
        self.flush_item_expiring(from, peer, now, None)
    }

    /// A flush item that is a long-lived REVOKE valid until `expires`
    /// (PROTOCOL.md section 11) when given, else a plain one.
    pub fn flush_item_expiring(
        &self,
        from: &Handle,
        peer: &Handle,
        now: UnixTime,
        expires: Option<UnixTime>,
    ) -> FlushItem {
        let expires = expires.map(|at| fedid_domain::Timestamp::from_instant(at).as_str().to_owned());
        let mut payload = Map::new();
        if let Some(expires) = &expires {
            payload.insert("expires".into(), Value::String(expires.clone()));
        }
        let envelope = self.envelope(from, peer, MessageType::RelationshipRevoke, payload, now);
        FlushItem {
            peer_handle: peer.as_str().into(),
            signature: envelope.signature().to_base64url(),
            nonce: Some(envelope.nonce().as_str().into()),
            timestamp: envelope.timestamp().as_str().into(),
            message_version: 1,
            expires,
        }
    }
}
