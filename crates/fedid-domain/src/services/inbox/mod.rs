//! `POST /federation/inbox` (PROTOCOL.md section 8), steps 1 to 7 in order,
//! with the relationship rules of section 9 (recipient side): steps 1 to 5
//! here, the write of steps 6 and 7 in [`apply`], deliveries gathered into
//! shared units of work in [`gather`].

mod apply;
mod gather;

use std::sync::Arc;

use crate::envelope::{Envelope, EnvelopeError, MessageType, VerifiedEnvelope};
use crate::key_directory::{KeyCheckError, PinMove, SenderKey, Verified};
use crate::model::{IdentityRecord, ReplayRecord};
use crate::ports::{self, Completion, StoreError};
use crate::services::Fedid;

use apply::{Delivery, InboxLimits};
pub(crate) use gather::InboxBatches;

/// Why the inbox refused an envelope (section 8), in its order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboxError {
    /// Step 1.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Step 2.
    #[error("no local user with an active identity has this handle")]
    UnknownRecipient,
    /// Step 2, with an allow-list.
    #[error("the sender's domain is not on this server's allow-list")]
    DomainNotAllowed,
    /// Step 3.
    #[error("the timestamp is outside the allowed clock skew")]
    TimestampOutOfWindow,
    /// Step 4.
    #[error("the sender's keys cannot be obtained right now")]
    SenderKeysUnavailable,
    /// Step 4: the sender's key log contradicts what this server pinned
    /// (PROTOCOL.md section 12).
    #[error("the sender's key log contradicts what this server pinned")]
    KeyLogConflict,
    /// Step 5.
    #[error("the signature does not verify against the sender's key")]
    InvalidSignature,
    /// Step 6.
    #[error("this nonce was already used by the sender for another envelope")]
    NonceReused,
    /// Step 7: a MESSAGE without an active relationship.
    #[error("there is no relationship with the sender")]
    NoRelationship,
    /// Step 7: an ACCEPT with no request of ours.
    #[error("there is no pending request to accept")]
    NoPendingRequest,
    /// Step 7: a limit of the recipient.
    #[error("the recipient's inbox is full")]
    InboxFull,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl InboxError {
    /// The stable error code of PROTOCOL.md section 8.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Envelope(e) => e.code(),
            Self::UnknownRecipient => "unknown_recipient",
            Self::DomainNotAllowed => "domain_not_allowed",
            Self::TimestampOutOfWindow => "timestamp_out_of_window",
            Self::SenderKeysUnavailable => "sender_keys_unavailable",
            Self::KeyLogConflict => "key_log_conflict",
            Self::InvalidSignature => "invalid_signature",
            Self::NonceReused => "nonce_reused",
            Self::NoRelationship => "no_relationship",
            Self::NoPendingRequest => "no_pending_request",
            Self::InboxFull => "inbox_full",
            Self::Store(_) => "internal_error",
        }
    }

    /// The status PROTOCOL.md section 8 gives this refusal. The protocol
    /// itself needs it: a refused local delivery is recorded as
    /// `http <status> <code>` (section 7).
    pub fn protocol_status(&self) -> u16 {
        match self {
            Self::Envelope(EnvelopeError::TooLarge) => 413,
            Self::Envelope(_) | Self::TimestampOutOfWindow => 400,
            Self::UnknownRecipient => 404,
            Self::DomainNotAllowed | Self::NoRelationship => 403,
            Self::SenderKeysUnavailable | Self::KeyLogConflict => 502,
            Self::InvalidSignature => 401,
            Self::NonceReused | Self::NoPendingRequest => 409,
            Self::InboxFull => 429,
            Self::Store(_) => 500,
        }
    }
}

impl From<KeyCheckError> for InboxError {
    fn from(e: KeyCheckError) -> Self {
        match e {
            KeyCheckError::Unavailable => Self::SenderKeysUnavailable,
            KeyCheckError::InvalidSignature => Self::InvalidSignature,
            KeyCheckError::Conflict => Self::KeyLogConflict,
        }
    }
}

/// A successful answer: `202 accepted` or `200 duplicate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// `202 accepted`: applied now.
    Accepted,
    /// `200 duplicate`: applied before.
    Duplicate,
}

/// An envelope that passed step 1 ([`Fedid::check_envelope`]), to be
/// finished by [`Fedid::receive_checked`].
pub struct CheckedEnvelope(Box<Checked>);

enum Checked {
    /// Steps 2 to 5 to run; `failed_key` is a cached key that the
    /// signature did not verify against.
    Unchecked {
        envelope: Envelope,
        failed_key: Option<SenderKey>,
    },
    /// Steps 2 to 5 passed without the store: only the write is left.
    Verified(Verified),
}

impl CheckedEnvelope {
    /// Whether only the write is left: [`Fedid::receive_checked`] then
    /// neither reads the store nor asks a peer, and returns at once.
    pub fn is_verified(&self) -> bool {
        matches!(*self.0, Checked::Verified(_))
    }
}

impl Fedid {
    /// Receives one envelope from another server (or from this one) and
    /// waits for its answer: [`Fedid::check_envelope`], then
    /// [`Fedid::receive_checked`].
    pub fn receive(&self, body: &[u8]) -> Result<Received, InboxError> {
        self.receive_checked(self.check_envelope(body)?)?.wait()
    }

    /// Step 1 and, when the sender's key is cached, steps 2 to 5 as far as
    /// they need neither the store nor the network: CPU only, never blocks.
    pub fn check_envelope(&self, body: &[u8]) -> Result<CheckedEnvelope, InboxError> {
        self.first_look(body).map(|checked| CheckedEnvelope(Box::new(checked)))
    }

    /// The rest of the steps: 2 to 5 if they are left (reads and key
    /// lookups, which block), then hands steps 6 and 7 to the store and
    /// returns the write's completion. A refusal before the write comes
    /// back at once.
    pub fn receive_checked(&self, checked: CheckedEnvelope) -> Result<Completion<Received, InboxError>, InboxError> {
        let (envelope, failed_key) = match *checked.0 {
            Checked::Verified(verified) => return Ok(self.apply(verified, None)),
            Checked::Unchecked { envelope, failed_key } => (envelope, failed_key),
        };
        // Step 2: recipient, then allow-list.
        let recipient = self.local_recipient(&envelope)?;
        if !self.settings.domain_allowed(envelope.from().domain_str()) {
            return Err(InboxError::DomainNotAllowed);
        }
        // Step 3: timestamp window.
        self.check_window(&envelope)
            .map_err(|_| InboxError::TimestampOutOfWindow)?;
        // Steps 4 and 5: sender keys, signature.
        let verified = match failed_key {
            Some(key) => self
                .keys
                .verify_after_cached_failure(envelope, key)
                .map_err(InboxError::from)?,
            None => self.verify_sender(envelope)?,
        };
        // Steps 6 and 7 in one transaction with the re-check of step 2.
        Ok(self.apply(verified, Some(recipient)))
    }

    /// Step 1, then steps 2 to 5 if they need no read: every check of
    /// steps 2 to 5 but the recipient's passes without the store (the
    /// sender's key is cached). The write transaction checks the recipient
    /// before anything else, so refusals keep their order.
    fn first_look(&self, body: &[u8]) -> Result<Checked, InboxError> {
        // Step 1: size, I-JSON, protocol version, member rules, type.
        let envelope = Envelope::parse(body, self.settings.policy())?;
        Ok(match self.cached_sender_key(&envelope) {
            Some(key) => match envelope.verify(&key.key) {
                Ok(envelope) => Checked::Verified(Verified { envelope, pin: key.pin }),
                Err(envelope) => Checked::Unchecked {
                    envelope: *envelope,
                    failed_key: Some(key),
                },
            },
            None => Checked::Unchecked {
                envelope,
                failed_key: None,
            },
        })
    }

    /// The remote sender's cached key, if every check of steps 2 and 3
    /// that needs neither the store nor the network passes.
    fn cached_sender_key(&self, envelope: &Envelope) -> Option<SenderKey> {
        let (to, from) = (envelope.to().domain_str(), envelope.from().domain_str());
        let store_free_checks_pass = self.settings.is_local(to)
            && !self.settings.is_local(from)
            && self.settings.domain_allowed(from)
            && self.check_window(envelope).is_ok();
        if store_free_checks_pass {
            self.keys.cached(envelope.from())
        } else {
            None
        }
    }

    /// Whether now is inside the envelope's window (step 3, section 11).
    pub(crate) fn check_window(&self, envelope: &Envelope) -> Result<(), ()> {
        if envelope.in_window(self.clock.now(), self.settings.max_clock_skew_secs) {
            Ok(())
        } else {
            Err(())
        }
    }

    fn local_recipient(&self, envelope: &Envelope) -> Result<IdentityRecord, InboxError> {
        let to = envelope.to();
        if !self.settings.is_local(to.domain_str()) {
            return Err(InboxError::UnknownRecipient);
        }
        let alias = to.alias();
        let record = ports::read(self.store.as_ref(), |tx| tx.identity_by_alias(&alias))?;
        match record {
            Some(r) if r.is_active() || envelope.message_type() == MessageType::RelationshipRevoke => Ok(r),
            _ => Err(InboxError::UnknownRecipient),
        }
    }

    fn verify_sender(&self, envelope: Envelope) -> Result<Verified, InboxError> {
        let from = envelope.from().clone();
        if !self.settings.is_local(from.domain_str()) {
            return self.keys.verify(envelope).map_err(InboxError::from);
        }
        let alias = from.alias();
        let sender = ports::read(self.store.as_ref(), |tx| tx.identity_by_alias(&alias))?;
        let key = sender
            .and_then(|s| s.signing_key)
            .ok_or(InboxError::SenderKeysUnavailable)?;
        // Local users' keys are read from local storage, never pinned.
        match envelope.verify(&key) {
            Ok(envelope) => Ok(Verified { envelope, pin: None }),
            Err(_) => Err(InboxError::InvalidSignature),
        }
    }

    /// Steps 6 and 7, handed to the store. `seen` is the recipient as step
    /// 2 read it, if it was read before this transaction.
    fn apply(&self, verified: Verified, seen: Option<IdentityRecord>) -> Completion<Received, InboxError> {
        let pin = verified.pin.filter(|pin| pin.is_pending());
        let delivery = self.delivery(&verified.envelope, seen, pin);
        self.inbox_batches.apply(self.store.as_ref(), delivery)
    }

    fn delivery(
        &self,
        envelope: &VerifiedEnvelope,
        seen: Option<IdentityRecord>,
        pin: Option<Arc<PinMove>>,
    ) -> Delivery {
        let record = ReplayRecord {
            key: envelope.replay_key(),
            sender: envelope.from().clone(),
            nonce: envelope.nonce().clone(),
            expires_at: envelope.replay_expires_at(self.settings.max_clock_skew_secs),
        };
        Delivery {
            kind: envelope.message_type(),
            alias: envelope.to().alias(),
            // Serialized outside the transaction: writers run one at a time.
            wire: envelope.wire_form(),
            now: self.clock.now(),
            seen,
            record,
            revokes_created_up_to: envelope
                .timestamp()
                .instant()
                .plus_secs(self.settings.max_clock_skew_secs),
            long_lived: envelope.expires().is_some(),
            pin,
            limits: InboxLimits {
                messages_per_user: self.settings.inbox_messages_per_user,
                unsolicited_per_sender: self.settings.unsolicited_per_sender,
                incoming_requests_per_user: self.settings.incoming_requests_per_user,
            },
        }
    }
}
