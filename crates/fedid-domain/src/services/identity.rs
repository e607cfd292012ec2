//! The identity object, alias changes and key registration (API.md).

use serde_json::json;

use crate::handle::{Alias, Handle};
use crate::keys::{EncryptionKey, SigningKey};
use crate::model::{AuditRecord, IdentityRecord, UserId};
use std::sync::Arc;

use crate::keylog::{EntryKind, KeyLogEntry};
use crate::keys::Signature;
use crate::ports::{self, Lane, StoreError, Tx};
use crate::services::key_log::{self, KeyLogHead};
use crate::services::Fedid;
use crate::settings::Settings;
use crate::time::Timestamp;
use crate::time::UnixTime;

const DAY_SECS: i64 = 86_400;

/// Why an identity call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The session's user is gone.
    #[error("unknown user")]
    UnknownUser,
    /// Not an alias (section 1).
    #[error("{0}")]
    InvalidAlias(String),
    /// `409 alias_taken`.
    #[error("another user holds or once held this alias")]
    AliasTaken,
    /// `409 relationships_exist`.
    #[error("the alias cannot change while relationships exist")]
    RelationshipsExist,
    /// `409 revocations_pending`.
    #[error("the alias cannot change while revocations are queued")]
    RevocationsPending,
    /// Past `limits.alias_changes_per_day` (then `retry_after_secs` says
    /// when the oldest change of the day leaves the window) or
    /// `limits.alias_changes_total` (never again: no retry).
    #[error("too many alias changes")]
    RateLimited {
        /// Seconds until a change is free again; `None` once the total is spent.
        retry_after_secs: Option<u64>,
    },
    /// `member` names the first key at fault.
    #[error("{member}: {reason}")]
    InvalidKey {
        /// `signingKey` or `encryptionKey`.
        member: &'static str,
        /// Why, for people.
        reason: String,
    },
    /// `409 key_log_full`: the log holds 10,000 entries.
    #[error("the key log is full")]
    KeyLogFull,
    /// `409 identity_not_set_up`: a client-built entry needs an alias.
    #[error("a key-log entry needs an alias first")]
    IdentityNotSetUp,
    /// `409 key_log_conflict`: the log does not end at `seq` - 1, or
    /// another append won the race.
    #[error("the key log does not end where this entry follows")]
    KeyLogConflict,
    /// `400 timestamp_out_of_window`: `at` is outside the skew window or
    /// earlier than the last entry's.
    #[error("at is outside the clock skew or earlier than the last entry")]
    TimestampOutOfWindow,
    /// `400 invalid_proof`: `member` (`proof` or `rotationProof`) does not
    /// verify over the entry the server rebuilt.
    #[error("{member} does not verify over the entry")]
    InvalidProof {
        /// `proof` or `rotationProof`.
        member: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// Why the identity object of a user could not be read: what every use
/// case that answers with it must handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ViewError {
    #[error("unknown user")]
    UnknownUser,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ViewError> for IdentityError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::UnknownUser => Self::UnknownUser,
            ViewError::Store(s) => Self::Store(s),
        }
    }
}

impl From<StoreError> for IdentityError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AliasTaken => Self::AliasTaken,
            other => Self::Store(other),
        }
    }
}

impl IdentityError {
    /// The stable error code of API.md.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownUser => "unauthenticated",
            Self::InvalidAlias(_) => "invalid_alias",
            Self::AliasTaken => "alias_taken",
            Self::RelationshipsExist => "relationships_exist",
            Self::RevocationsPending => "revocations_pending",
            Self::RateLimited { .. } => "rate_limited",
            Self::InvalidKey { .. } => "invalid_key",
            Self::KeyLogFull => "key_log_full",
            Self::IdentityNotSetUp => "identity_not_set_up",
            Self::KeyLogConflict => "key_log_conflict",
            Self::TimestampOutOfWindow => "timestamp_out_of_window",
            Self::InvalidProof { .. } => "invalid_proof",
            Self::Store(_) => "internal_error",
        }
    }
}

/// The identity object of API.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityView {
    /// The stored identity.
    pub record: IdentityRecord,
    /// `alias@domain` once the alias is set.
    pub handle: Option<Handle>,
    /// Revocations queued for delivery.
    pub pending_revocations: u64,
    /// The user's key log (PROTOCOL.md section 12).
    pub key_log: KeyLogHead,
}

impl IdentityView {
    /// `active` when alias and both keys are set, else `setup_required`.
    pub fn state(&self) -> &'static str {
        if self.record.is_active() {
            "active"
        } else {
            "setup_required"
        }
    }
}

/// Keys as the client sent them, validated here.
#[derive(Debug, Clone, Copy)]
pub struct KeysInput<'a> {
    /// Base64url, as sent.
    pub signing_key: &'a str,
    /// Base64url, as sent.
    pub encryption_key: &'a str,
    /// The client-built key-log entry, when the client sent one.
    pub entry: Option<ClientEntry<'a>>,
}

/// The members of a client-built key-log entry (API.md `PUT
/// /users/me/keys`); the server rebuilds the entry from them, its log's
/// head and the user's handle, and checks every proof.
#[derive(Debug, Clone, Copy)]
pub struct ClientEntry<'a> {
    /// The entry's seq: the log must end at `seq` - 1.
    pub seq: u64,
    /// When the change was made, as the client wrote it.
    pub at: &'a str,
    /// The new signing key's signature over the entry's signed bytes.
    pub proof: &'a str,
    /// The previous signing key's signature over them, for a rotation.
    pub rotation_proof: Option<&'a str>,
}

impl Fedid {
    /// The user's identity object.
    pub fn identity(&self, user: UserId) -> Result<IdentityView, IdentityError> {
        ports::read(self.store.as_ref(), |tx| Ok(self.view(tx, user)?))
    }

    pub(crate) fn view(&self, tx: &mut dyn Tx, user: UserId) -> Result<IdentityView, ViewError> {
        identity_view(&self.settings, tx, user)
    }

    /// Sets the alias (ASCII folded). Aliases are never reused, and the
    /// handle peers know is stable while relationships or revocations exist.
    ///
    /// Changes are bounded per day and in all (`limits.alias_changes_*`):
    /// each alias ever set is kept from everyone else for good, so without a
    /// bound one user could reserve any number of them.
    pub fn set_alias(&self, user: UserId, input: &str) -> Result<IdentityView, IdentityError> {
        let alias = Alias::parse_user_input(input).map_err(|e| IdentityError::InvalidAlias(e.to_string()));
        let now = self.clock.now();
        let settings = Arc::clone(&self.settings);
        ports::write(self.store.as_ref(), Some(Lane::of_user(user)), move |tx| {
            let record = tx.identity(user)?.ok_or(IdentityError::UnknownUser)?;
            if alias.as_ref().is_ok_and(|alias| record.alias.as_ref() == Some(alias)) {
                return Ok(identity_view(&settings, tx, user)?);
            }
            // API.md's order: 429 before 400.
            check_alias_budget(&settings, tx, user, now)?;
            let alias = alias.clone()?;
            if tx.alias_holder(&alias)?.is_some_and(|holder| holder != user) {
                return Err(IdentityError::AliasTaken);
            }
            if tx.count_relationships(user, None)? > 0 {
                return Err(IdentityError::RelationshipsExist);
            }
            if tx.queue_len(user)? > 0 {
                return Err(IdentityError::RevocationsPending);
            }
            tx.set_alias(user, &alias, now)?;
            key_log::log_alias_change(tx, &record, &Handle::new(&alias, &settings.domain), now)?;
            Ok(identity_view(&settings, tx, user)?)
        })
        .wait()
    }

    /// Registers or replaces both keys, with an audit record.
    pub fn set_keys(&self, user: UserId, input: KeysInput<'_>) -> Result<IdentityView, IdentityError> {
        let signing = SigningKey::parse(input.signing_key).map_err(|e| IdentityError::InvalidKey {
            member: "signingKey",
            reason: e.to_string(),
        })?;
        let encryption = EncryptionKey::parse(input.encryption_key).map_err(|e| IdentityError::InvalidKey {
            member: "encryptionKey",
            reason: e.to_string(),
        })?;
        let now = self.clock.now();
        let settings = Arc::clone(&self.settings);
        let entry = input.entry.map(OwnedClientEntry::from);
        ports::write(self.store.as_ref(), Some(Lane::of_user(user)), move |tx| {
            let record = tx.identity(user)?.ok_or(IdentityError::UnknownUser)?;
            match &entry {
                Some(entry) => log_client_entry(tx, &settings, &record, &signing, &encryption, entry, now)?,
                None => log_new_keys(tx, &settings, &record, &signing, &encryption, now)?,
            }
            tx.set_keys(user, &signing, &encryption, now)?;
            audit(
                tx,
                user,
                now,
                "keys_set",
                json!({ "signingKey": signing.to_base64url() }),
            )?;
            Ok(identity_view(&settings, tx, user)?)
        })
        .wait()
    }
}

/// Key-log appends per user per day, and in all (PROTOCOL.md section 12).
const KEY_LOG_PER_DAY: u64 = 10;
const KEY_LOG_MAX: u64 = 10_000;

/// A [`ClientEntry`] the write unit owns.
#[derive(Debug, Clone)]
struct OwnedClientEntry {
    seq: u64,
    at: String,
    proof: String,
    rotation_proof: Option<String>,
}

impl From<ClientEntry<'_>> for OwnedClientEntry {
    fn from(e: ClientEntry<'_>) -> Self {
        Self {
            seq: e.seq,
            at: e.at.to_owned(),
            proof: e.proof.to_owned(),
            rotation_proof: e.rotation_proof.map(str::to_owned),
        }
    }
}

/// The bounds every append to a user's log meets (section 12).
fn check_append_bounds(
    tx: &mut dyn Tx,
    user: UserId,
    last: Option<&KeyLogEntry>,
    now: UnixTime,
) -> Result<(), IdentityError> {
    if tx.key_log_appended_since(user, now.plus_secs(-DAY_SECS))? >= KEY_LOG_PER_DAY {
        return Err(IdentityError::RateLimited {
            retry_after_secs: Some(DAY_SECS as u64),
        });
    }
    if last.is_some_and(|l| l.seq() >= KEY_LOG_MAX) {
        return Err(IdentityError::KeyLogFull);
    }
    Ok(())
}

/// A client-built `keys` entry (section 12, API.md): rebuilt from the
/// body, the log's head and the user's handle, every proof checked, and
/// appended only if the log still ends at `seq` - 1.
fn log_client_entry(
    tx: &mut dyn Tx,
    settings: &Settings,
    record: &IdentityRecord,
    signing: &SigningKey,
    encryption: &EncryptionKey,
    entry: &OwnedClientEntry,
    now: UnixTime,
) -> Result<(), IdentityError> {
    let handle = record.handle(&settings.domain).ok_or(IdentityError::IdentityNotSetUp)?;
    let last = key_log::last_entry(tx, record.user)?;
    check_append_bounds(tx, record.user, last.as_ref(), now)?;
    if entry.seq != last.as_ref().map_or(1, |l| l.seq() + 1) {
        return Err(IdentityError::KeyLogConflict);
    }
    let at = Timestamp::parse(&entry.at).map_err(|_| IdentityError::TimestampOutOfWindow)?;
    let skew = settings.max_clock_skew_secs.max(0) as u128 * 1_000_000_000;
    let too_early = last.as_ref().is_some_and(|l| at.instant() < l.at().instant());
    if at.instant().distance_nanos(now) > skew || too_early {
        return Err(IdentityError::TimestampOutOfWindow);
    }
    let proof = Signature::parse(&entry.proof).ok_or(IdentityError::InvalidProof { member: "proof" })?;
    let rotation_proof = entry
        .rotation_proof
        .as_deref()
        .map(|p| {
            Signature::parse(p).ok_or(IdentityError::InvalidProof {
                member: "rotationProof",
            })
        })
        .transpose()?;
    let kind = EntryKind::Keys {
        signing: *signing,
        encryption: *encryption,
    };
    let prev = last.as_ref().map(KeyLogEntry::hash).unwrap_or_default();
    let built = KeyLogEntry::build(
        &handle,
        entry.seq,
        &prev,
        &at,
        &kind,
        Some(&proof),
        rotation_proof.as_ref(),
    )
    .map_err(|_| IdentityError::InvalidProof { member: "proof" })?;
    if !proof.verify(signing, built.signed_bytes()) {
        return Err(IdentityError::InvalidProof { member: "proof" });
    }
    if let Some(rotation_proof) = rotation_proof {
        let vouches = last
            .as_ref()
            .and_then(KeyLogEntry::signing_key)
            .is_some_and(|old| rotation_proof.verify(old, built.signed_bytes()));
        if !vouches {
            return Err(IdentityError::InvalidProof {
                member: "rotationProof",
            });
        }
    }
    if !tx.key_log_append(record.user, entry.seq, &built.entry_text(), &built.hash(), now)? {
        return Err(IdentityError::KeyLogConflict);
    }
    Ok(())
}

/// The server-built `keys` entry that new keys call for (section 12): none
/// while the user has no alias (logged when it is set), none when the keys
/// equal the last `keys` entry's with no reset after it.
fn log_new_keys(
    tx: &mut dyn Tx,
    settings: &Settings,
    record: &IdentityRecord,
    signing: &SigningKey,
    encryption: &EncryptionKey,
    now: UnixTime,
) -> Result<(), IdentityError> {
    let Some(handle) = record.handle(&settings.domain) else {
        return Ok(());
    };
    let last = key_log::last_entry(tx, record.user)?;
    let kind = EntryKind::Keys {
        signing: *signing,
        encryption: *encryption,
    };
    if last.as_ref().is_some_and(|l| *l.kind() == kind) {
        return Ok(());
    }
    check_append_bounds(tx, record.user, last.as_ref(), now)?;
    key_log::append(tx, record.user, &handle, last.as_ref(), &kind, now)?;
    Ok(())
}

/// The alias change budget of `limits.alias_changes_*`.
fn check_alias_budget(settings: &Settings, tx: &mut dyn Tx, user: UserId, now: UnixTime) -> Result<(), IdentityError> {
    // The last 24 hours, the change exactly 24 hours ago excluded: what
    // `Retry-After` promises is free then.
    let day_ago = UnixTime::from_nanos(now.plus_secs(-DAY_SECS).as_nanos() + 1);
    let changes = tx.alias_changes(user, day_ago)?;
    if changes.ever >= settings.alias_changes_total {
        return Err(IdentityError::RateLimited { retry_after_secs: None });
    }
    if changes.recent >= settings.alias_changes_per_day {
        let oldest = changes.oldest_recent.unwrap_or(now);
        let free_at = oldest.plus_secs(DAY_SECS);
        // Whole seconds, rounded up, at least one.
        let wait_nanos = (free_at.as_nanos() - now.as_nanos()).max(1);
        let retry_after_secs = u64::try_from((wait_nanos + 999_999_999) / 1_000_000_000).unwrap_or(DAY_SECS as u64);
        return Err(IdentityError::RateLimited {
            retry_after_secs: Some(retry_after_secs),
        });
    }
    Ok(())
}

/// The identity object of `user`, as the settings' domain names it.
pub(crate) fn identity_view(settings: &Settings, tx: &mut dyn Tx, user: UserId) -> Result<IdentityView, ViewError> {
    let record = tx.identity(user)?.ok_or(ViewError::UnknownUser)?;
    let pending_revocations = tx.queue_len(user)?;
    let handle = record.handle(&settings.domain);
    Ok(IdentityView {
        record,
        handle,
        pending_revocations,
        key_log: key_log::head_of(tx, user)?,
    })
}

pub(crate) fn audit(
    tx: &mut dyn Tx,
    user: UserId,
    at: UnixTime,
    action: &str,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    tx.append_audit(&AuditRecord {
        user,
        at,
        action: action.to_owned(),
        details,
    })
}
