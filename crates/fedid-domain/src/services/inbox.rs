//! `POST /federation/inbox` (PROTOCOL.md section 8), steps 1 to 7 in order,
//! with the relationship rules of section 9 (recipient side).

use std::sync::Arc;

use crate::envelope::{Envelope, EnvelopeError, MessageType, VerifiedEnvelope};
use crate::handle::{Alias, Handle};
use crate::key_directory::{KeyCheckError, PinMove, SenderKey, Verified};
use crate::model::{IdentityRecord, Relationship, RelationshipState, ReplayOutcome, ReplayRecord};
use crate::ports::{self, Completion, Lane, StoreError, Tx};
use crate::services::Fedid;
use crate::time::UnixTime;

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

/// Everything the write of steps 6 and 7 needs, owned, so that the store
/// may run it on a thread of its own. Only this crosses to the store's
/// thread (and is freed there): the parsed envelope, a tree of small
/// allocations, stays behind.
struct Delivery {
    kind: MessageType,
    seen: Option<IdentityRecord>,
    record: ReplayRecord,
    alias: Alias,
    wire: String,
    now: UnixTime,
    /// A REVOKE removes only a relationship created at or before this: its
    /// timestamp plus the skew (section 11, order).
    revokes_created_up_to: UnixTime,
    /// A long-lived REVOKE (section 11), which records no replay row when
    /// it removes nothing.
    long_lived: bool,
    /// The sender's pin, when the store has yet to get it (section 12).
    pin: Option<Arc<PinMove>>,
    limits: InboxLimits,
}

/// The recipient's limits (`limits.*`), copied from the settings.
#[derive(Clone, Copy)]
struct InboxLimits {
    messages_per_user: u64,
    unsolicited_per_sender: u64,
    incoming_requests_per_user: u64,
}

/// What the recipient's rule decided (section 9, received side).
enum Effect {
    Nothing,
    /// Store the message; `consented` when the relationship is then
    /// `active` (the recipient agreed to hear from the sender).
    Store {
        consented: bool,
    },
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
        let lane = Some(Lane::of_alias(&delivery.alias));
        ports::write(self.store.as_ref(), lane, move |tx| delivery.store(tx))
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

impl Delivery {
    /// The write transaction of steps 6 and 7.
    fn store(&self, tx: &mut dyn Tx) -> Result<Received, InboxError> {
        let Delivery {
            kind,
            seen,
            record,
            alias,
            wire,
            now,
            revokes_created_up_to,
            long_lived,
            pin,
            limits,
        } = self;
        // Step 2 (again), under the recipient's lock: never apply to an
        // identity reset (or an alias moved) since a first check.
        let recipient = tx
            .identity_by_alias(alias)?
            .filter(|r| r.is_active() || *kind == MessageType::RelationshipRevoke)
            .filter(|r| {
                seen.as_ref()
                    .is_none_or(|s| r.user == s.user && r.last_reset_at == s.last_reset_at)
            })
            .ok_or(InboxError::UnknownRecipient)?;
        // What the rule of section 9 applies to: for a REVOKE, only a
        // relationship created no later than it was signed (section 11).
        let relationship = tx
            .relationship(recipient.user, &record.sender)?
            .filter(|r| *kind != MessageType::RelationshipRevoke || r.created_at <= *revokes_created_up_to);
        if *long_lived && relationship.is_none() {
            // Harmless to replay, and a stranger's must not fill storage
            // for a week: no replay row (section 11).
            return Ok(Received::Accepted);
        }
        match tx.record_replay(record, *now)? {
            ReplayOutcome::Duplicate => return Ok(Received::Duplicate),
            ReplayOutcome::NonceReused => return Err(InboxError::NonceReused),
            ReplayOutcome::Recorded => {}
        }
        let effect = apply_rule(
            tx,
            limits,
            *kind,
            relationship.as_ref(),
            &record.sender,
            &recipient,
            *now,
        )?;
        if let Effect::Store { consented } = effect {
            // A REVOKE is never refused for limits (section 8).
            if *kind != MessageType::RelationshipRevoke {
                limits.check(tx, &recipient, &record.sender, consented)?;
            }
            let unsolicited_from = (!consented).then(|| record.sender.as_str());
            tx.insert_message(recipient.user, *now, unsolicited_from, wire)?;
        }
        if let Some(pin) = pin {
            // A first pin only with an envelope that was stored, so that
            // strangers cannot fill the pins; a pin moves with any.
            if pin.from().is_some() || matches!(effect, Effect::Store { .. }) {
                write_pin(tx, pin)?;
            }
        }
        Ok(Received::Accepted)
    }
}

/// Moves the sender's pin by compare-and-set (section 12). Lost to another
/// instance: fine if that one moved it to the same place, else the
/// envelope is refused as retryable and the next one checks again.
fn write_pin(tx: &mut dyn Tx, pin: &PinMove) -> Result<(), InboxError> {
    let to = pin.to();
    let landed = tx.move_key_pin(to, pin.from())?
        || tx.key_pin(&to.handle)?.map(|current| current.position()) == Some(to.position());
    if landed {
        // Marked before the commit: should the commit fail, the pin is
        // written again once the cached key expires.
        pin.written();
        Ok(())
    } else {
        pin.lost();
        Err(InboxError::SenderKeysUnavailable)
    }
}

impl InboxLimits {
    /// The recipient's limits, for a message about to be stored: the whole
    /// inbox, then, without the recipient's consent, what one sender may
    /// leave there (`limits.unsolicited_per_sender`), so that no stranger
    /// fills an inbox alone.
    fn check(
        &self,
        tx: &mut dyn Tx,
        recipient: &IdentityRecord,
        sender: &Handle,
        consented: bool,
    ) -> Result<(), InboxError> {
        if recipient.inbox_messages >= self.messages_per_user {
            return Err(InboxError::InboxFull);
        }
        if !consented && tx.count_unsolicited(recipient.user, sender.as_str())? >= self.unsolicited_per_sender {
            return Err(InboxError::InboxFull);
        }
        Ok(())
    }
}

/// Section 9, received side: the state change of `relationship` (the
/// recipient's with `peer`) and whether to store.
fn apply_rule(
    tx: &mut dyn Tx,
    limits: &InboxLimits,
    kind: MessageType,
    relationship: Option<&Relationship>,
    peer: &Handle,
    recipient: &IdentityRecord,
    now: UnixTime,
) -> Result<Effect, InboxError> {
    use RelationshipState::*;
    let user = recipient.user;
    let set = |tx: &mut dyn Tx, state| {
        tx.put_relationship(user, &Relationship::entering(peer.clone(), state, now, relationship))
    };
    match (kind, relationship.map(|r| r.state)) {
        (MessageType::RelationshipRequest, None) => {
            if tx.count_relationships(user, Some(Incoming))? >= limits.incoming_requests_per_user {
                return Err(InboxError::InboxFull);
            }
            set(tx, Incoming)?;
            Ok(Effect::Store { consented: false })
        }
        (MessageType::RelationshipRequest, Some(Outgoing)) | (MessageType::RelationshipAccept, Some(Outgoing)) => {
            set(tx, Active)?;
            Ok(Effect::Store { consented: true })
        }
        (MessageType::RelationshipRequest, Some(Incoming | Active)) => Ok(Effect::Nothing),
        (MessageType::RelationshipAccept, None | Some(Incoming)) => Err(InboxError::NoPendingRequest),
        (MessageType::RelationshipAccept, Some(Active)) => Ok(Effect::Nothing),
        (MessageType::RelationshipRevoke, None) => Ok(Effect::Nothing),
        (MessageType::RelationshipRevoke, Some(_)) => {
            tx.delete_relationship(user, peer)?;
            Ok(Effect::Store { consented: false })
        }
        (MessageType::Message, Some(Active)) => Ok(Effect::Store { consented: true }),
        (MessageType::Message, _) => Err(InboxError::NoRelationship),
    }
}
