//! Rows as diesel reads and writes them, converted to and from the
//! domain's records here and nowhere else.

use diesel::prelude::*;
use fedid_domain::keylog::{EntryClass, KeyBreak, KeyConflict, KeyLogEntry, KeyPin, PeerPin};
use fedid_domain::ports::StoreError;
use fedid_domain::{
    Alias, AuditRecord, Domain, DomainPolicy, EncryptionKey, Handle, IdentityRecord, InboxMessage, Nonce,
    PeerDomainHealth, QueuedRevocation, Relationship, RelationshipState, ReplayKey, ReplayRecord, SigningKey,
    Timestamp, UnixTime, UserId,
};

use crate::schema::*;

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!("stored {what} is not valid"))
}

pub(crate) fn nanos(t: UnixTime) -> i64 {
    t.as_nanos().clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

pub(crate) fn time(n: i64) -> UnixTime {
    UnixTime::from_nanos(i128::from(n))
}

pub(crate) fn handle(text: &str) -> Result<Handle, StoreError> {
    Handle::parse(text, DomainPolicy::ANY).map_err(|_| corrupt("handle"))
}

/// A replay row's key, sender, nonce and expiry as a record.
pub(crate) fn replay_row(
    (key, sender, nonce, expires_at): (Vec<u8>, String, String, i64),
) -> Result<ReplayRecord, StoreError> {
    let key: [u8; 32] = key.try_into().map_err(|_| corrupt("replay key"))?;
    Ok(ReplayRecord {
        key: ReplayKey::from_bytes(key),
        sender: handle(&sender)?,
        nonce: Nonce::parse(&nonce).map_err(|_| corrupt("nonce"))?,
        expires_at: time(expires_at),
    })
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
pub(crate) struct UserRow {
    pub id: i64,
    pub alias: Option<String>,
    pub signing_key: Option<Vec<u8>>,
    pub encryption_key: Option<Vec<u8>>,
    pub keys_updated_at: Option<i64>,
    pub last_reset_at: Option<i64>,
    pub inbox_count: i64,
}

impl UserRow {
    pub fn into_record(self) -> Result<IdentityRecord, StoreError> {
        let key = |bytes: Option<Vec<u8>>| -> Result<Option<[u8; 32]>, StoreError> {
            bytes.map(|b| b.try_into().map_err(|_| corrupt("key"))).transpose()
        };
        Ok(IdentityRecord {
            user: UserId(self.id),
            alias: self
                .alias
                .map(|a| Alias::parse(&a).map_err(|_| corrupt("alias")))
                .transpose()?,
            signing_key: key(self.signing_key)?.map(SigningKey::from_stored_bytes),
            encryption_key: key(self.encryption_key)?
                .map(|b| EncryptionKey::from_bytes(b).map_err(|_| corrupt("encryption key")))
                .transpose()?,
            keys_updated_at: self.keys_updated_at.map(time),
            last_reset_at: self.last_reset_at.map(time),
            inbox_messages: self.inbox_count.max(0) as u64,
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = relationships)]
pub(crate) struct RelationshipRow {
    pub user_id: i64,
    pub peer: String,
    pub state: String,
    pub since: i64,
    pub created_at: i64,
}

impl RelationshipRow {
    pub fn new(user: UserId, r: &Relationship) -> Self {
        Self {
            user_id: user.0,
            peer: r.peer.as_str().into(),
            state: r.state.as_str().into(),
            since: nanos(r.since),
            created_at: nanos(r.created_at),
        }
    }

    pub fn into_record(self) -> Result<Relationship, StoreError> {
        Ok(Relationship {
            peer: handle(&self.peer)?,
            state: RelationshipState::parse(&self.state).ok_or_else(|| corrupt("relationship state"))?,
            since: time(self.since),
            created_at: time(self.created_at),
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = inbox_messages)]
pub(crate) struct MessageRow {
    pub id: i64,
    pub received_at: i64,
    pub envelope: String,
}

impl MessageRow {
    pub fn into_record(self) -> InboxMessage {
        InboxMessage {
            id: self.id,
            received_at: time(self.received_at),
            envelope: self.envelope,
        }
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = revocations)]
pub(crate) struct RevocationRow {
    pub user_id: i64,
    pub peer: String,
    pub queued_at: i64,
    pub attempts: i32,
    pub last_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub claimed_until: Option<i64>,
    pub envelope: Option<String>,
    pub expires_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
    pub retries: i32,
    pub unauthorized: i32,
}

impl RevocationRow {
    pub fn new(user: UserId, r: &QueuedRevocation) -> Self {
        Self {
            user_id: user.0,
            peer: r.peer.as_str().into(),
            queued_at: nanos(r.queued_at),
            attempts: i32::try_from(r.attempts).unwrap_or(i32::MAX),
            last_attempt_at: r.last_attempt_at.map(nanos),
            last_error: r.last_error.clone(),
            claimed_until: r.claimed_until.map(nanos),
            envelope: r.envelope.clone(),
            expires_at: r.expires_at.map(nanos),
            next_attempt_at: r.next_attempt_at.map(nanos),
            retries: i32::try_from(r.retries).unwrap_or(i32::MAX),
            unauthorized: i32::try_from(r.unauthorized).unwrap_or(i32::MAX),
        }
    }

    pub fn into_record(self) -> Result<QueuedRevocation, StoreError> {
        Ok(QueuedRevocation {
            peer: handle(&self.peer)?,
            queued_at: time(self.queued_at),
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            last_attempt_at: self.last_attempt_at.map(time),
            last_error: self.last_error,
            claimed_until: self.claimed_until.map(time),
            envelope: self.envelope,
            expires_at: self.expires_at.map(time),
            next_attempt_at: self.next_attempt_at.map(time),
            retries: u32::try_from(self.retries).unwrap_or(0),
            unauthorized: u32::try_from(self.unauthorized).unwrap_or(0),
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = peer_domains)]
pub(crate) struct PeerDomainRow {
    pub domain: String,
    pub consecutive_failures: i32,
    pub last_success_at: Option<i64>,
    pub last_failure_at: Option<i64>,
    pub last_failure: Option<String>,
    pub failing_since: Option<i64>,
    pub lease_until: Option<i64>,
}

impl PeerDomainRow {
    pub fn into_record(self) -> Result<PeerDomainHealth, StoreError> {
        Ok(PeerDomainHealth {
            domain: Domain::parse(&self.domain, DomainPolicy::ANY).map_err(|_| corrupt("peer domain"))?,
            consecutive_failures: u32::try_from(self.consecutive_failures).unwrap_or(0),
            last_success_at: self.last_success_at.map(time),
            last_failure_at: self.last_failure_at.map(time),
            last_failure: self.last_failure,
            failing_since: self.failing_since.map(time),
        })
    }
}

fn seq(n: i64) -> u64 {
    n.max(0) as u64
}

pub(crate) fn stored_seq(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = key_pins)]
pub(crate) struct KeyPinRow {
    pub handle: String,
    pub domain: String,
    pub seq: i64,
    pub head: String,
    pub entry: String,
    pub class: Option<String>,
    pub previous_signing_key: Option<String>,
    pub change: String,
    pub changed_at: i64,
    pub break_seq: Option<i64>,
    pub break_change: Option<String>,
    pub break_at: Option<String>,
    pub break_seen_at: Option<i64>,
}

impl KeyPinRow {
    pub fn new(pin: &PeerPin) -> Self {
        let last_break = pin.pin.last_break.as_ref();
        Self {
            handle: pin.handle.as_str().to_owned(),
            domain: pin.handle.domain_str().to_owned(),
            seq: stored_seq(pin.pin.entry.seq()),
            head: pin.pin.head(),
            entry: pin.pin.entry.entry_text(),
            class: pin.pin.class.map(|c| c.as_str().to_owned()),
            previous_signing_key: pin.pin.previous_signing_key.map(|k| k.to_base64url()),
            change: pin.change.as_str().to_owned(),
            changed_at: nanos(pin.changed_at),
            break_seq: last_break.map(|b| stored_seq(b.seq)),
            break_change: last_break.map(|b| b.change.as_str().to_owned()),
            break_at: last_break.map(|b| b.at.as_str().to_owned()),
            break_seen_at: last_break.map(|b| nanos(b.seen_at)),
        }
    }

    pub fn into_record(self) -> Result<PeerPin, StoreError> {
        let class = |text: &str| EntryClass::parse(text).ok_or_else(|| corrupt("pin class"));
        let last_break = match (self.break_seq, self.break_change, self.break_at, self.break_seen_at) {
            (Some(at_seq), Some(change), Some(at), Some(seen_at)) => Some(KeyBreak {
                seq: seq(at_seq),
                change: class(&change)?,
                at: Timestamp::parse(&at).map_err(|_| corrupt("pin break"))?,
                seen_at: time(seen_at),
            }),
            _ => None,
        };
        Ok(PeerPin {
            handle: handle(&self.handle)?,
            pin: KeyPin {
                entry: KeyLogEntry::from_entry_bytes(self.entry.as_bytes()).map_err(|_| corrupt("pinned entry"))?,
                class: self.class.as_deref().map(class).transpose()?,
                previous_signing_key: self
                    .previous_signing_key
                    .map(|k| SigningKey::parse(&k).map_err(|_| corrupt("pinned key")))
                    .transpose()?,
                last_break,
            },
            change: class(&self.change)?,
            changed_at: time(self.changed_at),
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = key_log_conflicts)]
pub(crate) struct KeyConflictRow {
    pub handle: String,
    pub domain: String,
    pub at: i64,
    pub pinned_seq: i64,
    pub pinned_head: String,
    pub offered_seq: Option<i64>,
    pub offered_head: Option<String>,
    pub reason: String,
}

impl KeyConflictRow {
    pub fn new(conflict: &KeyConflict) -> Self {
        Self {
            handle: conflict.handle.as_str().to_owned(),
            domain: conflict.handle.domain_str().to_owned(),
            at: nanos(conflict.at),
            pinned_seq: stored_seq(conflict.pinned_seq),
            pinned_head: conflict.pinned_head.clone(),
            offered_seq: conflict.offered_seq.map(stored_seq),
            offered_head: conflict.offered_head.clone(),
            reason: conflict.reason.clone(),
        }
    }

    pub fn into_record(self) -> Result<KeyConflict, StoreError> {
        Ok(KeyConflict {
            handle: handle(&self.handle)?,
            at: time(self.at),
            pinned_seq: seq(self.pinned_seq),
            pinned_head: self.pinned_head,
            offered_seq: self.offered_seq.map(seq),
            offered_head: self.offered_head,
            reason: self.reason,
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_log)]
pub(crate) struct AuditRow {
    pub user_id: i64,
    pub at: i64,
    pub action: String,
    pub details: String,
}

impl AuditRow {
    pub fn into_record(self) -> Result<AuditRecord, StoreError> {
        Ok(AuditRecord {
            user: UserId(self.user_id),
            at: time(self.at),
            action: self.action,
            details: serde_json::from_str(&self.details).map_err(|_| corrupt("audit details"))?,
        })
    }
}
