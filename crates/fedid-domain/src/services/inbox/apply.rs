//! Steps 6 and 7 of section 8, with the relationship rules of section 9
//! (recipient side), for the deliveries to one recipient that share a unit
//! of work ([`super::gather`]). The store is read once for all of them (the
//! recipient, its relationships with their senders, the replay records in
//! their way: `Tx::inbox_batch_view`); each delivery is then decided in
//! order, against what the store held and what the deliveries before it
//! did; what was decided is written at the end (`Tx::store_inbox_batch`). A refused
//! delivery writes nothing, so each stays all or nothing without a
//! savepoint of its own.

use std::collections::HashMap;
use std::sync::Arc;

use crate::envelope::MessageType;
use crate::handle::{Alias, Handle};
use crate::key_directory::PinMove;
use crate::model::{
    IdentityRecord, InboxBatchView, NewMessage, Relationship, RelationshipState, ReplayOutcome, ReplayRecord, UserId,
};
use crate::ports::{StoreError, Tx};
use crate::time::UnixTime;

use super::{InboxError, Received};

/// Everything the write of steps 6 and 7 needs, owned, so that the store
/// may run it on a thread of its own. Only this crosses to the store's
/// thread (and is freed there): the parsed envelope, a tree of small
/// allocations, stays behind.
pub(super) struct Delivery {
    pub kind: MessageType,
    /// The recipient as step 2 read it, if it was read before the write.
    pub seen: Option<IdentityRecord>,
    pub record: ReplayRecord,
    pub alias: Alias,
    pub wire: String,
    pub now: UnixTime,
    /// A REVOKE removes only a relationship created at or before this: its
    /// timestamp plus the skew (section 11, order).
    pub revokes_created_up_to: UnixTime,
    /// A long-lived REVOKE (section 11), which records no replay row when
    /// it removes nothing.
    pub long_lived: bool,
    /// The sender's pin, when the store has yet to get it (section 12).
    pub pin: Option<Arc<PinMove>>,
    pub limits: InboxLimits,
}

/// The recipient's limits (`limits.*`), copied from the settings.
#[derive(Clone, Copy)]
pub(super) struct InboxLimits {
    pub messages_per_user: u64,
    pub unsolicited_per_sender: u64,
    pub incoming_requests_per_user: u64,
}

/// Applies `deliveries` (all to one recipient alias) in one transaction:
/// each one's answer, in order. `Err` only when the store failed, which
/// fails them all.
pub(super) fn apply_all<'d>(
    deliveries: impl Iterator<Item = &'d Delivery> + Clone,
    tx: &mut dyn Tx,
) -> Result<Vec<Result<Received, InboxError>>, StoreError> {
    let Some(first) = deliveries.clone().next() else {
        return Ok(Vec::new());
    };
    let mut senders: Vec<Handle> = deliveries.clone().map(|d| d.record.sender.clone()).collect();
    senders.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    senders.dedup();
    let records: Vec<ReplayRecord> = deliveries.clone().map(|d| d.record.clone()).collect();
    // Step 2 (again), under the recipient's lock: never apply to an
    // identity reset (or an alias moved) since a first check.
    let Some(view) = tx.inbox_batch_view(&first.alias, &senders, &records)? else {
        return Ok(deliveries.map(|_| Err(InboxError::UnknownRecipient)).collect());
    };
    let mut batch = Batch::new(view);
    let mut answers = Vec::new();
    for delivery in deliveries {
        match batch.decide(delivery, tx) {
            Err(InboxError::Store(e)) => return Err(e),
            answer => answers.push(answer),
        }
    }
    batch.write(tx)?;
    Ok(answers)
}

/// What the recipient's rule decided (section 9, received side).
#[derive(Clone, Copy)]
enum Effect {
    Nothing,
    /// Store the message; `consented` when the relationship is then
    /// `active` (the recipient agreed to hear from the sender).
    Store {
        consented: bool,
    },
}

/// A relationship change decided for the batch, written in order.
enum RelationshipWrite {
    Put(Relationship),
    Delete(Handle),
}

/// One batch: what the store held when it was read, and what the
/// deliveries accepted so far add to it.
struct Batch<'d> {
    recipient: IdentityRecord,
    /// The recipient's relationships with the batch's senders, as the
    /// deliveries accepted so far left them.
    relationships: HashMap<Handle, Relationship>,
    /// Rows the store holds in the way of the batch's replay records.
    stored_replays: Vec<ReplayRecord>,
    /// The replay records of the deliveries accepted so far.
    replays: Vec<ReplayRecord>,
    relationship_writes: Vec<RelationshipWrite>,
    messages: Vec<NewMessage<'d>>,
    /// The recipient's incoming requests: as stored (read when first
    /// needed), and the change the batch made since.
    incoming_stored: Option<u64>,
    incoming_change: i64,
    /// Unsolicited messages per sender, as stored (read when first
    /// needed) plus those the batch stores.
    unsolicited: HashMap<&'d str, u64>,
    /// The latest time among the accepted deliveries.
    now: Option<UnixTime>,
}

impl<'d> Batch<'d> {
    fn new(view: InboxBatchView) -> Self {
        Self {
            recipient: view.recipient,
            relationships: view.relationships.into_iter().map(|r| (r.peer.clone(), r)).collect(),
            stored_replays: view.replays_in_way,
            replays: Vec::new(),
            relationship_writes: Vec::new(),
            messages: Vec::new(),
            incoming_stored: None,
            incoming_change: 0,
            unsolicited: HashMap::new(),
            now: None,
        }
    }

    /// Decides one delivery, steps 2 (against the recipient read) to 7 in
    /// order; an accepted one's changes join the batch.
    fn decide(&mut self, delivery: &'d Delivery, tx: &mut dyn Tx) -> Result<Received, InboxError> {
        let Delivery {
            kind,
            seen,
            record,
            wire,
            now,
            revokes_created_up_to,
            long_lived,
            pin,
            limits,
            ..
        } = delivery;
        let recipient = &self.recipient;
        let present = (recipient.is_active() || *kind == MessageType::RelationshipRevoke)
            && seen
                .as_ref()
                .is_none_or(|s| recipient.user == s.user && recipient.last_reset_at == s.last_reset_at);
        if !present {
            return Err(InboxError::UnknownRecipient);
        }
        // What the rule of section 9 applies to: for a REVOKE, only a
        // relationship created no later than it was signed (section 11).
        let relationship = self
            .relationships
            .get(&record.sender)
            .filter(|r| *kind != MessageType::RelationshipRevoke || r.created_at <= *revokes_created_up_to)
            .cloned();
        if *long_lived && relationship.is_none() {
            // Harmless to replay, and a stranger's must not fill storage
            // for a week: no replay row (section 11).
            return Ok(Received::Accepted);
        }
        match self.replay_outcome(record, *now) {
            Some(ReplayOutcome::Duplicate) => return Ok(Received::Duplicate),
            Some(ReplayOutcome::NonceReused) => return Err(InboxError::NonceReused),
            Some(ReplayOutcome::Recorded) | None => {}
        }
        let (effect, write) = self.rule(tx, delivery, relationship.as_ref())?;
        if let Effect::Store { consented } = effect {
            // A REVOKE is never refused for limits (section 8).
            if *kind != MessageType::RelationshipRevoke {
                self.check_limits(tx, limits, &record.sender, consented)?;
            }
        }
        if let Some(pin) = pin {
            // A first pin only with an envelope that is stored, so that
            // strangers cannot fill the pins; a pin moves with any.
            if pin.from().is_some() || matches!(effect, Effect::Store { .. }) {
                write_pin(tx, pin)?;
            }
        }
        // Accepted: everything that could refuse it has passed.
        self.replays.push(record.clone());
        if let Some(write) = write {
            self.change_relationship(write);
        }
        if let Effect::Store { consented } = effect {
            let unsolicited_from = (!consented).then(|| record.sender.as_str());
            if let Some(from) = unsolicited_from {
                *self.unsolicited.entry(from).or_default() += 1;
            }
            self.messages.push(NewMessage {
                received_at: *now,
                unsolicited_from,
                envelope: wire,
            });
        }
        self.now = self.now.max(Some(*now));
        Ok(Received::Accepted)
    }

    /// What accepting `record` comes to, after the rows the store holds and
    /// the records of the deliveries accepted before it (section 5).
    fn replay_outcome(&self, record: &ReplayRecord, now: UnixTime) -> Option<ReplayOutcome> {
        self.replays
            .iter()
            .chain(&self.stored_replays)
            .find_map(|earlier| record.outcome_against(earlier, now))
    }

    /// Section 9, received side: whether to store, and the relationship's
    /// change, if any.
    fn rule(
        &mut self,
        tx: &mut dyn Tx,
        delivery: &Delivery,
        relationship: Option<&Relationship>,
    ) -> Result<(Effect, Option<RelationshipWrite>), InboxError> {
        use RelationshipState::*;
        let peer = &delivery.record.sender;
        let entering = |state| {
            Some(RelationshipWrite::Put(Relationship::entering(
                peer.clone(),
                state,
                delivery.now,
                relationship,
            )))
        };
        match (delivery.kind, relationship.map(|r| r.state)) {
            (MessageType::RelationshipRequest, None) => {
                if self.incoming(tx)? >= delivery.limits.incoming_requests_per_user {
                    return Err(InboxError::InboxFull);
                }
                Ok((Effect::Store { consented: false }, entering(Incoming)))
            }
            (MessageType::RelationshipRequest, Some(Outgoing)) | (MessageType::RelationshipAccept, Some(Outgoing)) => {
                Ok((Effect::Store { consented: true }, entering(Active)))
            }
            (MessageType::RelationshipRequest, Some(Incoming | Active)) => Ok((Effect::Nothing, None)),
            (MessageType::RelationshipAccept, None | Some(Incoming)) => Err(InboxError::NoPendingRequest),
            (MessageType::RelationshipAccept, Some(Active)) => Ok((Effect::Nothing, None)),
            (MessageType::RelationshipRevoke, None) => Ok((Effect::Nothing, None)),
            (MessageType::RelationshipRevoke, Some(_)) => Ok((
                Effect::Store { consented: false },
                Some(RelationshipWrite::Delete(peer.clone())),
            )),
            (MessageType::Message, Some(Active)) => Ok((Effect::Store { consented: true }, None)),
            (MessageType::Message, _) => Err(InboxError::NoRelationship),
        }
    }

    /// The recipient's limits, for a message about to be stored: the whole
    /// inbox, then, without the recipient's consent, what one sender may
    /// leave there (`limits.unsolicited_per_sender`), so that no stranger
    /// fills an inbox alone.
    fn check_limits(
        &mut self,
        tx: &mut dyn Tx,
        limits: &InboxLimits,
        sender: &'d Handle,
        consented: bool,
    ) -> Result<(), InboxError> {
        let stored = self.recipient.inbox_messages + self.messages.len() as u64;
        if stored >= limits.messages_per_user {
            return Err(InboxError::InboxFull);
        }
        if !consented && self.unsolicited_from(tx, sender.as_str())? >= limits.unsolicited_per_sender {
            return Err(InboxError::InboxFull);
        }
        Ok(())
    }

    /// The recipient's incoming requests, with the batch's changes.
    fn incoming(&mut self, tx: &mut dyn Tx) -> Result<u64, StoreError> {
        let stored = match self.incoming_stored {
            Some(stored) => stored,
            None => *self
                .incoming_stored
                .insert(tx.count_relationships(self.recipient.user, Some(RelationshipState::Incoming))?),
        };
        Ok(stored.saturating_add_signed(self.incoming_change))
    }

    /// Unsolicited messages from `sender`, with the batch's.
    fn unsolicited_from(&mut self, tx: &mut dyn Tx, sender: &'d str) -> Result<u64, StoreError> {
        if let Some(count) = self.unsolicited.get(sender) {
            return Ok(*count);
        }
        let stored = tx.count_unsolicited(self.recipient.user, sender)?;
        Ok(*self.unsolicited.entry(sender).or_insert(stored))
    }

    /// Makes an accepted delivery's relationship change part of the batch.
    fn change_relationship(&mut self, write: RelationshipWrite) {
        let incoming = |r: Option<&Relationship>| i64::from(r.is_some_and(|r| r.state == RelationshipState::Incoming));
        let (peer, now) = match &write {
            RelationshipWrite::Put(r) => (r.peer.clone(), Some(r)),
            RelationshipWrite::Delete(peer) => (peer.clone(), None),
        };
        self.incoming_change += incoming(now) - incoming(self.relationships.get(&peer));
        match now {
            Some(r) => {
                self.relationships.insert(peer, r.clone());
            }
            None => {
                self.relationships.remove(&peer);
            }
        }
        self.relationship_writes.push(write);
    }

    /// Writes what the accepted deliveries decided.
    fn write(self, tx: &mut dyn Tx) -> Result<(), StoreError> {
        let user: UserId = self.recipient.user;
        for write in &self.relationship_writes {
            match write {
                RelationshipWrite::Put(relationship) => tx.put_relationship(user, relationship)?,
                RelationshipWrite::Delete(peer) => {
                    tx.delete_relationship(user, peer)?;
                }
            }
        }
        if let Some(now) = self.now {
            tx.store_inbox_batch(user, &self.replays, now, &self.messages)?;
        }
        Ok(())
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
