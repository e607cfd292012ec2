//! The revocation queue (PROTOCOL.md section 10; API.md): drop a row, and
//! flush: deliver client-signed REVOKEs for queued peers, concurrently,
//! each row claimed so that two flushes never deliver it twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::json;

use crate::envelope::{Envelope, VerifiedEnvelope};
use crate::handle::Handle;
use crate::model::{QueuedRevocation, UserId};
use crate::ports::{self, Lane, StoreError};
use crate::services::identity::{audit, ViewError};
use crate::services::outbox::OutboxRequest;
use crate::services::retries::LongLived;
use crate::services::Fedid;
use crate::time::UnixTime;

/// At most this many items in one flush.
pub const MAX_FLUSH_ITEMS: usize = 1000;

/// Why a flush failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    /// `member` is the JSON member at fault, e.g. `items[3].peerHandle`.
    #[error("{member}: {reason}")]
    InvalidRequest {
        /// The member at fault, such as `items[2].signature`.
        member: String,
        /// Why, for people.
        reason: String,
    },
    /// The user has no keys yet (after a reset).
    #[error("the user has no alias or no signing key yet")]
    IdentityNotSetUp,
    /// `404 not_queued` (DELETE).
    #[error("no such queued revocation")]
    NotQueued,
    /// The session's user is gone.
    #[error("unknown user")]
    UnknownUser,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FlushError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::IdentityNotSetUp => "identity_not_set_up",
            Self::NotQueued => "not_queued",
            Self::UnknownUser => "unauthenticated",
            Self::Store(_) => "internal_error",
        }
    }
}

impl From<ViewError> for FlushError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::UnknownUser => Self::UnknownUser,
            ViewError::Store(s) => Self::Store(s),
        }
    }
}

/// One item of a flush, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushItem {
    /// The queued peer.
    pub peer_handle: String,
    /// Base64url over the REVOKE's signed bytes.
    pub signature: String,
    /// Default: none.
    pub nonce: Option<String>,
    /// As signed.
    pub timestamp: String,
    /// 1 or more.
    pub message_version: u64,
    /// When set, the item is a long-lived REVOKE with payload
    /// `{"expires": ...}`, which the server retries by itself after a
    /// failure (PROTOCOL.md section 11).
    pub expires: Option<String>,
}

/// Each item's outcome, in the order API.md checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushOutcome {
    /// No row for this peer.
    NotQueued,
    /// Another flush holds the row.
    InProgress,
    /// A member rule or the timestamp window; holds the code.
    InvalidItem(&'static str),
    /// The signature does not verify.
    InvalidSignature,
    /// The peer accepted it: the row is gone.
    Delivered,
    /// Holds the delivery failure reason.
    Failed(String),
}

impl FlushOutcome {
    /// The API name of the outcome.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotQueued => "not_queued",
            Self::InProgress => "in_progress",
            Self::InvalidItem(_) => "invalid_item",
            Self::InvalidSignature => "invalid_signature",
            Self::Delivered => "delivered",
            Self::Failed(_) => "failed",
        }
    }

    /// The `error` member of the result.
    pub fn error(&self) -> Option<&str> {
        match self {
            Self::InvalidItem(code) => Some(code),
            Self::InvalidSignature => Some("invalid_signature"),
            Self::Failed(reason) => Some(reason),
            _ => None,
        }
    }
}

/// One item's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushResult {
    /// The peer.
    pub peer: Handle,
    /// What happened.
    pub outcome: FlushOutcome,
    /// For a long-lived item that failed: when the server tries again by
    /// itself, `Some(None)` when it will not (a final refusal); `None` for
    /// every other item.
    pub next_attempt_at: Option<Option<UnixTime>>,
}

/// A flush's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushReport {
    /// In request order.
    pub results: Vec<FlushResult>,
    /// Items delivered.
    pub delivered: u64,
    /// Items whose delivery failed.
    pub failed: u64,
    /// The user's queue length after every result was recorded.
    pub remaining: u64,
}

enum Claim {
    Outcome(FlushOutcome),
    Ready(Box<VerifiedEnvelope>),
}

impl Fedid {
    /// Drops a queued row without delivering it, with an audit record.
    pub fn drop_revocation(&self, user: UserId, peer: &Handle) -> Result<(), FlushError> {
        let now = self.clock.now();
        let peer = peer.clone();
        ports::write(self.store.as_ref(), Some(Lane::of_user(user)), move |tx| {
            if !tx.dequeue(user, &peer)? {
                return Err(FlushError::NotQueued);
            }
            audit(
                tx,
                user,
                now,
                "revocation_dropped",
                json!({ "peerHandle": peer.as_str() }),
            )?;
            Ok(())
        })
        .wait()
    }

    /// Delivers the signed REVOKE of each item whose row is queued.
    pub fn flush(&self, user: UserId, items: &[FlushItem]) -> Result<FlushReport, FlushError> {
        let peers = self.check_flush_shape(items)?;
        let record = ports::read(self.store.as_ref(), |tx| tx.identity(user))?.ok_or(FlushError::UnknownUser)?;
        let (Some(from), Some(key)) = (record.handle(&self.settings.domain), record.signing_key) else {
            return Err(FlushError::IdentityNotSetUp);
        };

        // Claims first, all in one transaction: a flush of 1000 rows pays
        // for one commit, not 1000, before its first delivery.
        let mut outcomes = self.claim(user, &peers)?;
        let mut ready: Vec<(usize, Box<VerifiedEnvelope>)> = Vec::new();
        for (index, (item, peer)) in items.iter().zip(&peers).enumerate() {
            if outcomes[index].is_some() {
                continue;
            }
            match self.check_item(user, &from, &key, item, peer)? {
                Claim::Outcome(outcome) => outcomes[index] = Some(outcome),
                Claim::Ready(envelope) => ready.push((index, envelope)),
            }
        }

        let delivered = Mutex::new(Vec::with_capacity(ready.len()));
        let next = AtomicUsize::new(0);
        let workers = self.settings.delivery_concurrency.clamp(1, ready.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    while let Some((index, envelope)) = ready.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let outcome = self.deliver_claimed(user, envelope);
                        delivered
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((*index, outcome));
                    }
                });
            }
        });
        let mut next_attempts = vec![None; peers.len()];
        for (index, (outcome, next_attempt_at)) in delivered.into_inner().unwrap_or_else(|p| p.into_inner()) {
            outcomes[index] = Some(outcome);
            next_attempts[index] = next_attempt_at;
        }

        let results: Vec<FlushResult> = peers
            .into_iter()
            .zip(outcomes)
            .zip(next_attempts)
            .map(|((peer, outcome), next_attempt_at)| FlushResult {
                peer,
                outcome: outcome.unwrap_or(FlushOutcome::Failed("io".into())),
                next_attempt_at,
            })
            .collect();
        let count = |wanted: fn(&FlushOutcome) -> bool| results.iter().filter(|r| wanted(&r.outcome)).count() as u64;
        let remaining = ports::read(self.store.as_ref(), |tx| tx.queue_len(user))?;
        Ok(FlushReport {
            delivered: count(|o| *o == FlushOutcome::Delivered),
            failed: count(|o| matches!(o, FlushOutcome::Failed(_))),
            results,
            remaining,
        })
    }

    fn check_flush_shape(&self, items: &[FlushItem]) -> Result<Vec<Handle>, FlushError> {
        if items.is_empty() || items.len() > MAX_FLUSH_ITEMS {
            return Err(FlushError::InvalidRequest {
                member: "items".into(),
                reason: format!("between 1 and {MAX_FLUSH_ITEMS} items"),
            });
        }
        let mut peers: Vec<Handle> = Vec::with_capacity(items.len());
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let member = format!("items[{index}].peerHandle");
            let peer = Handle::parse_user_input(&item.peer_handle, self.settings.policy()).map_err(|e| {
                FlushError::InvalidRequest {
                    member: member.clone(),
                    reason: e.to_string(),
                }
            })?;
            if !seen.insert(peer.clone()) {
                return Err(FlushError::InvalidRequest {
                    member,
                    reason: "this peer is listed twice".into(),
                });
            }
            peers.push(peer);
        }
        Ok(peers)
    }

    /// Claims every queued, unclaimed row of `peers`; the others get their
    /// outcome (`not_queued`, `in_progress`) at once.
    fn claim(&self, user: UserId, peers: &[Handle]) -> Result<Vec<Option<FlushOutcome>>, FlushError> {
        let now = self.clock.now();
        let claim_until = now.plus_millis(self.settings.delivery_timeout_ms).plus_secs(30);
        let peers = peers.to_vec();
        ports::write(self.store.as_ref(), Some(Lane::of_user(user)), move |tx| {
            let mut outcomes = Vec::with_capacity(peers.len());
            for peer in &peers {
                let outcome = match tx.queued(user, peer)? {
                    None => Some(FlushOutcome::NotQueued),
                    Some(row) if row.claimed_until.is_some_and(|until| until > now) => Some(FlushOutcome::InProgress),
                    Some(mut row) => {
                        row.claimed_until = Some(claim_until);
                        tx.update_queued(user, &row)?;
                        None
                    }
                };
                outcomes.push(outcome);
            }
            Ok::<_, FlushError>(outcomes)
        })
        .wait()
    }

    /// Checks a claimed item; a refused item releases the claim with its
    /// code as `lastError` and attempts unchanged.
    fn check_item(
        &self,
        user: UserId,
        from: &Handle,
        key: &crate::keys::SigningKey,
        item: &FlushItem,
        peer: &Handle,
    ) -> Result<Claim, FlushError> {
        let request = OutboxRequest {
            to: peer.clone(),
            message_type: "RELATIONSHIP_REVOKE".into(),
            message_version: item.message_version,
            nonce: item.nonce.clone(),
            timestamp: item.timestamp.clone(),
            payload: item.expires.as_ref().map(|expires| {
                let mut payload = serde_json::Map::new();
                payload.insert("expires".into(), serde_json::Value::String(expires.clone()));
                payload
            }),
            signature: item.signature.clone(),
        };
        let refusal = match self.build_envelope(from, &request) {
            Err(e) => FlushOutcome::InvalidItem(e.code()),
            Ok(envelope) if self.check_window(&envelope).is_err() => {
                FlushOutcome::InvalidItem("timestamp_out_of_window")
            }
            Ok(envelope) => match envelope.verify(key) {
                Ok(verified) => return Ok(Claim::Ready(Box::new(verified))),
                Err(_) => FlushOutcome::InvalidSignature,
            },
        };
        let code = refusal.error().unwrap_or_default().to_owned();
        self.release(user, peer, move |row| row.last_error = Some(code.clone()))?;
        Ok(Claim::Outcome(refusal))
    }

    /// Delivers a claimed item; for a long-lived one that failed, also when
    /// the server tries again by itself (`Some(None)`: it will not).
    fn deliver_claimed(&self, user: UserId, envelope: &Envelope) -> (FlushOutcome, Option<Option<UnixTime>>) {
        let peer = envelope.to();
        match self.deliver(envelope) {
            Ok(()) => {
                // A row whose removal could not be written keeps its claim
                // until it lapses (a later flush delivers it again, and the
                // peer answers `duplicate`); the client sees the delivery's
                // own outcome.
                let peer = peer.clone();
                let _ = ports::write(self.store.as_ref(), Some(Lane::of_user(user)), move |tx| {
                    tx.dequeue(user, &peer)
                })
                .wait();
                (FlushOutcome::Delivered, None)
            }
            Err(failure) => {
                let reason = failure.to_string();
                let fresh = LongLived::of(envelope);
                let long_lived = fresh.is_some();
                let (plan, now) = (self.retry_plan(), self.clock.now());
                let recorded = self.release(user, peer, move |row| {
                    plan.record_failure(row, &failure, now, fresh.as_ref());
                });
                let next_attempt_at = recorded.ok().flatten().and_then(|row| row.next_attempt_at);
                (FlushOutcome::Failed(reason), long_lived.then_some(next_attempt_at))
            }
        }
    }

    fn release(
        &self,
        user: UserId,
        peer: &Handle,
        change: impl Fn(&mut QueuedRevocation) + Send + 'static,
    ) -> Result<Option<QueuedRevocation>, StoreError> {
        let peer = peer.clone();
        ports::write(self.store.as_ref(), Some(Lane::of_user(user)), move |tx| {
            let Some(mut row) = tx.queued(user, &peer)? else {
                return Ok(None);
            };
            change(&mut row);
            row.claimed_until = None;
            tx.update_queued(user, &row)?;
            Ok(Some(row))
        })
        .wait()
    }
}
