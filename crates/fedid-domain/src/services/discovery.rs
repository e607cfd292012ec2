//! The key discovery answer (PROTOCOL.md section 6), serving side.

use crate::handle::{Alias, Handle};
use crate::keys::{EncryptionKey, SigningKey};
use crate::ports::{self, StoreError};
use crate::services::{Fedid, KeyLogHead};
use crate::time::UnixTime;

/// What `GET /federation/users/{alias}` publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedIdentity {
    /// The user's handle.
    pub handle: Handle,
    /// The signing key.
    pub signing_key: SigningKey,
    /// The encryption key.
    pub encryption_key: EncryptionKey,
    /// When the keys were registered.
    pub keys_updated_at: Option<UnixTime>,
    /// The key log's position (`keyLogSeq`, `keyLogHead`); seq 0 while
    /// the log is empty.
    pub key_log: KeyLogHead,
}

impl Fedid {
    /// The keys a local alias publishes; `None` when the alias is unknown,
    /// not canonical, or has no keys.
    pub fn published_identity(&self, alias: &str) -> Result<Option<PublishedIdentity>, StoreError> {
        let Ok(alias) = Alias::parse(alias) else {
            return Ok(None);
        };
        let found = ports::read(self.store.as_ref(), |tx| {
            let Some(record) = tx.identity_by_alias(&alias)? else {
                return Ok::<_, StoreError>(None);
            };
            let head = crate::services::key_log::head_of(tx, record.user)?;
            Ok(Some((record, head)))
        })?;
        Ok(found.and_then(|(r, key_log)| {
            Some(PublishedIdentity {
                handle: Handle::new(&alias, &self.settings.domain),
                signing_key: r.signing_key?,
                encryption_key: r.encryption_key?,
                keys_updated_at: r.keys_updated_at,
                key_log,
            })
        }))
    }
}
