//! The identity object, alias changes and key registration (API.md).

use serde_json::json;

use crate::handle::{Alias, Handle};
use crate::keys::{EncryptionKey, SigningKey};
use crate::model::{AuditRecord, IdentityRecord, UserId};
use std::sync::Arc;

use crate::keylog::EntryKind;
use crate::ports::{self, Lane, StoreError, Tx};
use crate::services::key_log::{self, KeyLogHead};
use crate::services::Fedid;
use crate::settings::Settings;
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
            key_log::log_alias_change(tx, &settings, user, now)?;
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
        ports::write(self.store.as_ref(), Some(Lane::of_user(user)), move |tx| {
            let record = tx.identity(user)?.ok_or(IdentityError::UnknownUser)?;
            log_new_keys(tx, &settings, &record, &signing, &encryption, now)?;
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
    if last.as_ref().is_some_and(|l| l.seq() >= KEY_LOG_MAX) {
        return Err(IdentityError::KeyLogFull);
    }
    let day_ago = now.plus_secs(-DAY_SECS);
    if tx.key_log_appended_since(record.user, day_ago)? >= KEY_LOG_PER_DAY {
        return Err(IdentityError::RateLimited {
            retry_after_secs: Some(DAY_SECS as u64),
        });
    }
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
