//! Key logs made for measurements (PROTOCOL.md section 12): chains of
//! proven rotations, the costliest entries a peer can be asked to check.

use fedid_domain::keylog::{EntryKind, KeyLogEntry};
use fedid_domain::{EncryptionKey, Handle, Timestamp, UnixTime};
use fedid_testkit::ClientKeys;

use crate::client::Failure;

/// The keys entry of `keys`.
pub fn keys_entry(keys: &ClientKeys) -> Result<EntryKind, Failure> {
    let (_, encryption) = keys.public_keys();
    Ok(EntryKind::Keys {
        signing: keys.signing_key(),
        encryption: EncryptionKey::parse(&encryption).map_err(|e| e.to_string())?,
    })
}

/// A log of `entries` entries under `handle`, each a rotation proven by
/// its own key and the previous one (two signatures to check per entry),
/// one a second from `start`; and the last entry's keys.
pub fn proven_rotations(
    handle: &Handle,
    entries: u64,
    start: UnixTime,
) -> Result<(Vec<KeyLogEntry>, ClientKeys), Failure> {
    let mut log: Vec<KeyLogEntry> = Vec::with_capacity(entries as usize);
    let mut previous_keys: Option<ClientKeys> = None;
    for seq in 1..=entries {
        let keys = ClientKeys::generate().ok_or("no randomness")?;
        let kind = keys_entry(&keys)?;
        let at = Timestamp::from_instant(start.plus_secs(seq as i64));
        let prev = log.last().map(KeyLogEntry::hash).unwrap_or_default();
        let unsigned = KeyLogEntry::build(handle, seq, &prev, &at, &kind, None, None).map_err(|e| e.to_string())?;
        let proof = keys.secret().sign(unsigned.signed_bytes());
        let rotation = previous_keys
            .as_ref()
            .map(|old| old.secret().sign(unsigned.signed_bytes()));
        log.push(
            KeyLogEntry::build(handle, seq, &prev, &at, &kind, Some(&proof), rotation.as_ref())
                .map_err(|e| e.to_string())?,
        );
        previous_keys = Some(keys);
    }
    Ok((log, previous_keys.ok_or("no entry")?))
}
