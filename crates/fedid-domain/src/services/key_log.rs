//! Writing and publishing users' key logs (PROTOCOL.md section 12): the
//! entries the server appends when keys, alias or identity change, the
//! first entry of users whose keys predate the log, and the public pages.

use crate::handle::{Alias, Handle};
use crate::keylog::{EntryKind, KeyConflict, KeyLogEntry, PinTarget};
use crate::model::{IdentityRecord, UserId};
use crate::ports::{self, Lane, StoreError, Tx};
use crate::services::Fedid;
use crate::time::{Timestamp, UnixTime};

/// At most this many entries on one page of `GET .../keylog`.
pub const KEY_LOG_PAGE: usize = 100;

/// A log's position: its last seq and head (`0` and `""` while empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyLogHead {
    /// The last entry's seq.
    pub seq: u64,
    /// The SHA-256 of its entry bytes, unpadded base64url.
    pub head: String,
}

/// One page of a user's log, as `GET /federation/users/{alias}/keylog` serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLogPage {
    /// The user's handle now.
    pub handle: Handle,
    /// The entries after the page's start, in order, as entry bytes.
    pub entries: Vec<String>,
    /// The whole log's position.
    pub head: KeyLogHead,
}

/// The user's last entry, read back.
pub(crate) fn last_entry(tx: &mut dyn Tx, user: UserId) -> Result<Option<KeyLogEntry>, StoreError> {
    tx.key_log_last(user)?
        .map(|text| {
            KeyLogEntry::from_entry_bytes(text.as_bytes())
                .map_err(|e| StoreError::Unavailable(format!("a stored key-log entry is unreadable: {e}")))
        })
        .transpose()
}

/// The log's position, as stored.
pub(crate) fn head_of(tx: &mut dyn Tx, user: UserId) -> Result<KeyLogHead, StoreError> {
    Ok(tx
        .key_log_head(user)?
        .map_or_else(KeyLogHead::default, |(seq, head)| KeyLogHead { seq, head }))
}

/// Appends a server-built entry (no proofs) after `last`, at `now`.
pub(crate) fn append(
    tx: &mut dyn Tx,
    user: UserId,
    handle: &Handle,
    last: Option<&KeyLogEntry>,
    kind: &EntryKind,
    now: UnixTime,
) -> Result<KeyLogEntry, StoreError> {
    let seq = last.map_or(1, |l| l.seq() + 1);
    let at = Timestamp::from_instant(now);
    let prev = last.map(KeyLogEntry::hash).unwrap_or_default();
    let entry = KeyLogEntry::build(handle, seq, &prev, &at, kind, None, None)
        .map_err(|e| StoreError::Unavailable(format!("a key-log entry could not be built: {e}")))?;
    if !tx.key_log_append(user, seq, &entry.entry_text(), &entry.hash(), now)? {
        return Err(StoreError::Unavailable("another append took this seq".into()));
    }
    Ok(entry)
}

/// The `keys` entry a user's current keys and handle call for.
pub(crate) fn keys_of(record: &IdentityRecord) -> Option<EntryKind> {
    Some(EntryKind::Keys {
        signing: record.signing_key?,
        encryption: record.encryption_key?,
    })
}

/// After `record`'s user took the alias of `handle`: a user with keys gets
/// a `keys` entry under the new handle (the first, for keys set while the
/// user had no alias).
pub(crate) fn log_alias_change(
    tx: &mut dyn Tx,
    record: &IdentityRecord,
    handle: &Handle,
    now: UnixTime,
) -> Result<(), StoreError> {
    let Some(kind) = keys_of(record) else {
        return Ok(());
    };
    let last = last_entry(tx, record.user)?;
    append(tx, record.user, handle, last.as_ref(), &kind, now).map(|_| ())
}

/// In a reset's transaction: a `reset` entry when the log ends with keys.
pub(crate) fn log_reset(
    tx: &mut dyn Tx,
    handle: Option<Handle>,
    user: UserId,
    now: UnixTime,
) -> Result<(), StoreError> {
    let last = last_entry(tx, user)?;
    match (handle, &last) {
        (Some(handle), Some(entry)) if matches!(entry.kind(), EntryKind::Keys { .. }) => {
            append(tx, user, &handle, last.as_ref(), &EntryKind::Reset, now).map(|_| ())
        }
        _ => Ok(()),
    }
}

impl Fedid {
    /// The public page of `alias`'s log after `after` (section 12); `None`
    /// for an alias no user holds now.
    pub fn key_log_page(&self, alias: &Alias, after: u64) -> Result<Option<KeyLogPage>, StoreError> {
        let domain = self.settings.domain.clone();
        ports::read(self.store.as_ref(), |tx| {
            let Some(record) = tx.identity_by_alias(alias)? else {
                return Ok(None);
            };
            let Some(handle) = record.handle(&domain) else {
                return Ok(None);
            };
            Ok(Some(KeyLogPage {
                handle,
                entries: tx.key_log_after(record.user, after, KEY_LOG_PAGE)?,
                head: head_of(tx, record.user)?,
            }))
        })
    }

    /// Gives every user whose keys predate the log its first entry
    /// (`at`: the keys' last update), a batch at a time; how many. Run at
    /// start: peers can pin only a published log.
    pub fn backfill_key_logs(&self) -> Result<u64, StoreError> {
        let mut done = 0;
        loop {
            let users = ports::read(self.store.as_ref(), |tx| tx.users_missing_key_log(100))?;
            if users.is_empty() {
                return Ok(done);
            }
            let mut appended = 0;
            for user in users {
                let (settings, now) = (std::sync::Arc::clone(&self.settings), self.clock.now());
                let wrote = ports::write(self.store.as_ref(), Some(Lane::of_user(user)), move |tx| {
                    let Some(record) = tx.identity(user)? else {
                        return Ok(false);
                    };
                    let (Some(handle), Some(kind)) = (record.handle(&settings.domain), keys_of(&record)) else {
                        return Ok(false);
                    };
                    if tx.key_log_last(user)?.is_some() {
                        return Ok(false);
                    }
                    let at = record.keys_updated_at.unwrap_or(now);
                    append(tx, user, &handle, None, &kind, at).map(|_| true)
                })
                .wait()?;
                appended += u64::from(wrote);
            }
            if appended == 0 {
                // Nothing could be appended (another instance did it): done.
                return Ok(done);
            }
            done += appended;
        }
    }
}

/// Audit records written per unpinned handle, at most (one per local user
/// related to it).
const UNPIN_AUDIT_USERS: usize = 10_000;

impl Fedid {
    /// Every key-log conflict recorded for the operator, by handle
    /// (`fedid-server federation conflicts`).
    pub fn key_conflicts(&self) -> Result<Vec<KeyConflict>, StoreError> {
        ports::read(self.store.as_ref(), |tx| tx.key_conflicts())
    }

    /// Forgets the pins (and conflicts) of one remote handle or of a whole
    /// domain (`fedid-server federation unpin`); how many pins. Each local
    /// user related to an unpinned handle gets an audit record: their
    /// `peerKeys` for it is gone, and the next contact is a first one.
    pub fn unpin(&self, target: PinTarget) -> Result<u64, StoreError> {
        let now = self.clock.now();
        ports::write(self.store.as_ref(), None, move |tx| {
            let unpinned = tx.unpin(&target)?;
            for handle in &unpinned {
                for user in tx.users_related_to(handle, UNPIN_AUDIT_USERS)? {
                    super::identity::audit(
                        tx,
                        user,
                        now,
                        "peer_unpinned",
                        serde_json::json!({ "peerHandle": handle.as_str() }),
                    )?;
                }
            }
            Ok(unpinned.len() as u64)
        })
        .wait()
    }
}
