//! `POST /users/me/outbox` (API.md; PROTOCOL.md section 9, sender side):
//! one client-signed envelope from a local user.

use serde_json::{Map, Value};

use crate::envelope::{Envelope, EnvelopeError, MessageType};
use crate::handle::Handle;
use crate::model::{QueuedRevocation, Relationship, RelationshipState, UserId};
use crate::ports::{self, DeliveryFailure, Lane, StoreError};
use crate::services::identity::ViewError;
use crate::services::retries::LongLived;
use crate::services::Fedid;
use crate::time::UnixTime;

/// Why an outbox call failed (API.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// The user has no alias or keys.
    #[error("the user has no alias or no signing key yet")]
    IdentityNotSetUp,
    /// The envelope is invalid.
    #[error(transparent)]
    Envelope(EnvelopeError),
    /// The timestamp is outside the skew window.
    #[error("the timestamp is outside the allowed clock skew")]
    TimestampOutOfWindow,
    /// The signature does not verify against the user's key.
    #[error("the signature does not verify against the user's signing key")]
    InvalidSignature,
    /// A local recipient that does not exist.
    #[error("no local user with an active identity has this handle")]
    UnknownRecipient,
    /// A REQUEST or ACCEPT while revocations are queued.
    #[error("a revocation to this peer is still queued")]
    RevocationsPending,
    /// An ACCEPT with no request from the peer.
    #[error("there is no pending request to accept")]
    NoPendingRequest,
    /// A MESSAGE without an active relationship.
    #[error("there is no active relationship with this peer")]
    NoRelationship,
    /// The peer refused or could not be reached.
    #[error("delivery failed: {0}")]
    DeliveryFailed(DeliveryFailure),
    /// The session's user is gone.
    #[error("unknown user")]
    UnknownUser,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OutboxError {
    /// The stable error code of API.md.
    pub fn code(&self) -> &'static str {
        match self {
            Self::IdentityNotSetUp => "identity_not_set_up",
            Self::Envelope(e) => e.code(),
            Self::TimestampOutOfWindow => "timestamp_out_of_window",
            Self::InvalidSignature => "invalid_signature",
            Self::UnknownRecipient => "unknown_recipient",
            Self::RevocationsPending => "revocations_pending",
            Self::NoPendingRequest => "no_pending_request",
            Self::NoRelationship => "no_relationship",
            Self::DeliveryFailed(_) => "delivery_failed",
            Self::UnknownUser => "unauthenticated",
            Self::Store(_) => "internal_error",
        }
    }
}

impl From<ViewError> for OutboxError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::UnknownUser => Self::UnknownUser,
            ViewError::Store(s) => Self::Store(s),
        }
    }
}

/// The client's envelope members; the server adds `from`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRequest {
    /// The recipient.
    pub to: Handle,
    /// The wire name of the type.
    pub message_type: String,
    /// 1 or more.
    pub message_version: u64,
    /// Default: none.
    pub nonce: Option<String>,
    /// As signed.
    pub timestamp: String,
    /// Default: `{}`.
    pub payload: Option<Map<String, Value>>,
    /// Base64url over the signed bytes.
    pub signature: String,
}

/// What the outbox did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxOutcome {
    /// The recipient's server accepted it.
    Delivered,
    /// A REVOKE whose delivery failed: it waits in the revocation queue.
    Queued {
        /// For a long-lived REVOKE (PROTOCOL.md section 11): when the server
        /// tries it again by itself, unless the failure ended its retries.
        next_attempt_at: Option<UnixTime>,
    },
}

impl Fedid {
    /// Signs nothing: checks the client's envelope, applies it to the sender's side and delivers it.
    pub fn send(&self, user: UserId, request: OutboxRequest) -> Result<OutboxOutcome, OutboxError> {
        let record = ports::read(self.store.as_ref(), |tx| tx.identity(user))?.ok_or(OutboxError::UnknownUser)?;
        let (Some(from), Some(key)) = (record.handle(&self.settings.domain), record.signing_key) else {
            return Err(OutboxError::IdentityNotSetUp);
        };
        let envelope = self.build_envelope(&from, &request)?;
        self.check_window(&envelope)
            .map_err(|_| OutboxError::TimestampOutOfWindow)?;
        let envelope = envelope.verify(&key).map_err(|_| OutboxError::InvalidSignature)?;
        let to = envelope.to().clone();
        if self.settings.is_local(to.domain_str()) {
            let alias = to.alias();
            let recipient = ports::read(self.store.as_ref(), |tx| tx.identity_by_alias(&alias))?;
            let known =
                recipient.is_some_and(|r| r.is_active() || envelope.message_type() == MessageType::RelationshipRevoke);
            if !known {
                return Err(OutboxError::UnknownRecipient);
            }
        }
        let kind = envelope.message_type();
        if kind == MessageType::RelationshipRevoke {
            return self.send_revoke(user, &envelope);
        }
        ports::read(self.store.as_ref(), |tx| {
            if tx.queued(user, &to)?.is_some() {
                return Err(OutboxError::RevocationsPending);
            }
            let state = tx.relationship(user, &to)?.map(|r| r.state);
            match (kind, state) {
                (MessageType::RelationshipAccept, Some(RelationshipState::Incoming | RelationshipState::Active)) => {
                    Ok(())
                }
                (MessageType::RelationshipAccept, _) => Err(OutboxError::NoPendingRequest),
                (MessageType::Message, Some(RelationshipState::Active)) => Ok(()),
                (MessageType::Message, _) => Err(OutboxError::NoRelationship),
                _ => Ok(()),
            }
        })?;
        self.deliver(&envelope).map_err(OutboxError::DeliveryFailed)?;
        // The transition applies to the state at the moment delivery succeeded.
        let now = self.clock.now();
        ports::write(self.store.as_ref(), Some(Lane::of_user(user)), move |tx| {
            let existing = tx.relationship(user, &to)?;
            let next = match (kind, existing.as_ref().map(|r| r.state)) {
                (MessageType::RelationshipRequest, None) => Some(RelationshipState::Outgoing),
                (MessageType::RelationshipRequest, Some(RelationshipState::Incoming)) => {
                    Some(RelationshipState::Active)
                }
                (MessageType::RelationshipAccept, Some(RelationshipState::Incoming)) => Some(RelationshipState::Active),
                _ => None,
            };
            if let Some(state) = next {
                tx.put_relationship(user, &Relationship::entering(to.clone(), state, now, existing.as_ref()))?;
            }
            Ok::<_, OutboxError>(())
        })
        .wait()?;
        Ok(OutboxOutcome::Delivered)
    }

    /// A REVOKE removes the relationship at once; delivery failures queue it.
    fn send_revoke(&self, user: UserId, envelope: &Envelope) -> Result<OutboxOutcome, OutboxError> {
        let to = envelope.to().clone();
        let lane = Some(Lane::of_user(user));
        let peer = to.clone();
        ports::write(self.store.as_ref(), lane, move |tx| tx.delete_relationship(user, &peer)).wait()?;
        let result = self.deliver(envelope);
        let (plan, now, fresh) = (self.retry_plan(), self.clock.now(), LongLived::of(envelope));
        ports::write(self.store.as_ref(), lane, move |tx| {
            let failure = match &result {
                Ok(()) => {
                    tx.dequeue(user, &to)?;
                    return Ok(OutboxOutcome::Delivered);
                }
                Err(failure) => failure,
            };
            let mut row = match tx.queued(user, &to)? {
                Some(row) => row,
                None => {
                    let row = QueuedRevocation::new(to.clone(), now);
                    tx.enqueue(user, &row)?;
                    row
                }
            };
            plan.record_failure(&mut row, failure, now, fresh.as_ref());
            tx.update_queued(user, &row)?;
            Ok::<_, OutboxError>(OutboxOutcome::Queued {
                next_attempt_at: row.next_attempt_at,
            })
        })
        .wait()
    }

    /// Builds the envelope the inbox would read, and checks it the same way.
    pub(crate) fn build_envelope(&self, from: &Handle, r: &OutboxRequest) -> Result<Envelope, OutboxError> {
        let mut object = Map::new();
        object.insert(
            "protocol_version".into(),
            Value::from(crate::envelope::PROTOCOL_VERSION),
        );
        object.insert("message_type".into(), Value::String(r.message_type.clone()));
        object.insert("message_version".into(), Value::from(r.message_version));
        if let Some(nonce) = &r.nonce {
            object.insert("nonce".into(), Value::String(nonce.clone()));
        }
        object.insert("from".into(), Value::String(from.as_str().into()));
        object.insert("to".into(), Value::String(r.to.as_str().into()));
        object.insert("timestamp".into(), Value::String(r.timestamp.clone()));
        object.insert("payload".into(), Value::Object(r.payload.clone().unwrap_or_default()));
        object.insert("signature".into(), Value::String(r.signature.clone()));
        let body = crate::envelope::canonical(&Value::Object(object));
        Envelope::parse(&body, self.settings.policy()).map_err(OutboxError::Envelope)
    }
}
