//! The key discovery answer (PROTOCOL.md section 6), serving side.

use crate::handle::{Alias, Handle};
use crate::keys::{EncryptionKey, SigningKey};
use crate::ports::{self, StoreError};
use crate::services::Fedid;
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
}

impl Fedid {
    /// The keys a local alias publishes; `None` when the alias is unknown,
    /// not canonical, or has no keys.
    pub fn published_identity(&self, alias: &str) -> Result<Option<PublishedIdentity>, StoreError> {
        let Ok(alias) = Alias::parse(alias) else {
            return Ok(None);
        };
        let record = ports::read(self.store.as_ref(), |tx| tx.identity_by_alias(&alias))?;
        Ok(record.and_then(|r| {
            Some(PublishedIdentity {
                handle: Handle::new(&alias, &self.settings.domain),
                signing_key: r.signing_key?,
                encryption_key: r.encryption_key?,
                keys_updated_at: r.keys_updated_at,
            })
        }))
    }
}
