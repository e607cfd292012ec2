//! The ports: what the domain needs from the outside world. Every trait is
//! synchronous and object-safe; adapters implement them and `main` wires
//! them together.

use crate::handle::{Alias, Domain, Handle};
use crate::keys::{EncryptionKey, SigningKey};
use crate::model::*;
use crate::time::UnixTime;

/// Failures of the store, translated by each adapter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or failed; the message is for logs.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Another user holds or once held this alias.
    #[error("alias taken")]
    AliasTaken,
    /// The unit of work asked for a rollback; the store only passes it on.
    #[error("transaction aborted")]
    Aborted,
}

/// The work inside one transaction. Each method may fail with
/// [`StoreError::Unavailable`]; `set_alias` also with [`StoreError::AliasTaken`].
pub trait Tx {
    // Users and sessions.
    /// Creates a user with no alias and no keys.
    fn create_user(&mut self, at: UnixTime) -> Result<UserId, StoreError>;
    /// The identity of an existing user; locks that user against concurrent
    /// resets and alias changes until the transaction ends.
    fn identity(&mut self, user: UserId) -> Result<Option<IdentityRecord>, StoreError>;
    /// Stores the SHA-256 of a new session token.
    fn insert_session(&mut self, user: UserId, token_hash: &[u8; 32], expires_at: UnixTime) -> Result<(), StoreError>;
    /// The user of an unexpired, unrevoked session.
    fn session_user(&mut self, token_hash: &[u8; 32], now: UnixTime) -> Result<Option<UserId>, StoreError>;
    /// Revokes every live session of the user; returns how many.
    fn revoke_sessions(&mut self, user: UserId, at: UnixTime) -> Result<u64, StoreError>;

    // Identities.
    /// The identity whose current alias this is; locks it like [`Tx::identity`].
    fn identity_by_alias(&mut self, alias: &Alias) -> Result<Option<IdentityRecord>, StoreError>;
    /// The user who holds or once held this alias (aliases are never reused).
    fn alias_holder(&mut self, alias: &Alias) -> Result<Option<UserId>, StoreError>;
    /// Sets the alias, remembers it for good and records the change at
    /// `at`. `AliasTaken` when another user holds or held it (a race lost
    /// on the unique index included).
    fn set_alias(&mut self, user: UserId, alias: &Alias, at: UnixTime) -> Result<(), StoreError>;
    /// The user's alias changes, ever and at or after `since`. Changes made
    /// before they were recorded with a time count as ever only.
    fn alias_changes(&mut self, user: UserId, since: UnixTime) -> Result<AliasChanges, StoreError>;
    /// Registers both keys; returns the user's relationships (for the audit).
    fn set_keys(
        &mut self,
        user: UserId,
        signing: &SigningKey,
        encryption: &EncryptionKey,
        at: UnixTime,
    ) -> Result<(), StoreError>;
    /// Clears both keys and records the reset time.
    fn clear_keys(&mut self, user: UserId, at: UnixTime) -> Result<(), StoreError>;

    // Relationships.
    /// The user's relationship with `peer`, if any.
    fn relationship(&mut self, user: UserId, peer: &Handle) -> Result<Option<Relationship>, StoreError>;
    /// Creates or replaces the relationship with its peer.
    fn put_relationship(&mut self, user: UserId, relationship: &Relationship) -> Result<(), StoreError>;
    /// Removes it; whether there was one.
    fn delete_relationship(&mut self, user: UserId, peer: &Handle) -> Result<bool, StoreError>;
    /// Deletes all of the user's relationships; returns their peers.
    fn delete_relationships(&mut self, user: UserId) -> Result<Vec<Handle>, StoreError>;
    /// Ordered by peer handle (byte order), strictly after `after`.
    fn relationships_after(
        &mut self,
        user: UserId,
        after: Option<&Handle>,
        limit: usize,
    ) -> Result<Vec<Relationship>, StoreError>;
    /// The user's relationships, of one state or all.
    fn count_relationships(&mut self, user: UserId, state: Option<RelationshipState>) -> Result<u64, StoreError>;

    // Inbox.
    /// Stores a message. `unsolicited_from` is the sender's handle when the
    /// sender had no active relationship with the user (the message is then
    /// counted by [`Tx::count_unsolicited`]); `None` for messages the user
    /// consented to.
    fn insert_message(
        &mut self,
        user: UserId,
        received_at: UnixTime,
        unsolicited_from: Option<&str>,
        envelope: &str,
    ) -> Result<i64, StoreError>;
    /// The user's stored messages (kept as a count, not counted).
    fn count_messages(&mut self, user: UserId) -> Result<u64, StoreError>;
    /// The user's stored messages that came unsolicited `from` one sender.
    fn count_unsolicited(&mut self, user: UserId, from: &str) -> Result<u64, StoreError>;
    /// Erases the user's messages; how many.
    fn delete_messages(&mut self, user: UserId) -> Result<u64, StoreError>;
    /// Ordered by id, strictly after `after`.
    fn messages_after(
        &mut self,
        user: UserId,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<InboxMessage>, StoreError>;
    /// Deletes one of the user's messages; whether it was theirs and there.
    fn delete_message(&mut self, user: UserId, id: i64) -> Result<bool, StoreError>;

    // Revocation queue.
    /// The user's queued revocation to `peer`, if any.
    fn queued(&mut self, user: UserId, peer: &Handle) -> Result<Option<QueuedRevocation>, StoreError>;
    /// Queues a row unless one is queued already; true when added.
    fn enqueue(&mut self, user: UserId, row: &QueuedRevocation) -> Result<bool, StoreError>;
    /// Overwrites attempts, last attempt, last error and claim of a queued row.
    fn update_queued(&mut self, user: UserId, row: &QueuedRevocation) -> Result<(), StoreError>;
    /// Removes it; whether it was queued.
    fn dequeue(&mut self, user: UserId, peer: &Handle) -> Result<bool, StoreError>;
    /// Ordered by peer handle (byte order), strictly after `after`.
    fn queue_after(
        &mut self,
        user: UserId,
        after: Option<&Handle>,
        limit: usize,
    ) -> Result<Vec<QueuedRevocation>, StoreError>;
    /// The user's queued revocations.
    fn queue_len(&mut self, user: UserId) -> Result<u64, StoreError>;
    /// Every user's queued rows: the `fedid_revocations_queued` gauge.
    fn total_queue_len(&mut self) -> Result<u64, StoreError>;

    // Replay protection (PROTOCOL.md section 5).
    /// Records an accepted envelope unless its key, or its sender and
    /// non-empty nonce, is already recorded and not expired at `now`.
    fn record_replay(&mut self, record: &ReplayRecord, now: UnixTime) -> Result<ReplayOutcome, StoreError>;
    /// Deletes rows expired at `now`, at most `limit`; returns how many.
    fn prune_replays(&mut self, now: UnixTime, limit: usize) -> Result<u64, StoreError>;

    // Operations.
    /// Records a readiness probe at `at`: a small write that the database
    /// must accept (a full disk refuses it) for the server to be ready.
    fn record_readiness(&mut self, at: UnixTime) -> Result<(), StoreError>;

    // Audit.
    /// Appends an audit record.
    fn append_audit(&mut self, record: &AuditRecord) -> Result<(), StoreError>;
    /// Oldest first.
    fn audit_records(&mut self, user: UserId) -> Result<Vec<AuditRecord>, StoreError>;
}

/// A unit of work: gets the transaction, returns `Err` to roll back. It is
/// `Send` so that an adapter may run it on a thread of its own (the SQLite
/// store runs every write on one writer thread).
pub type Work<'a> = dyn FnMut(&mut dyn Tx) -> Result<(), StoreError> + Send + 'a;

/// Storage with transactions. `write` runs `work` in one serializable,
/// all-or-nothing transaction and may run it again after a serialization
/// conflict; `read` runs it on a consistent snapshot and must not write.
/// A unit of work never calls the store itself (no nested units): it has
/// its `Tx`, and adapters may serialize units.
pub trait Store: Send + Sync {
    /// Runs `work` in one all-or-nothing transaction (see the trait).
    fn write(&self, work: &mut Work<'_>) -> Result<(), StoreError>;
    /// Runs `work` on a consistent, read-only snapshot.
    fn read(&self, work: &mut Work<'_>) -> Result<(), StoreError>;

    /// Whether [`Store::write_detached`] queues the work for a thread of
    /// the store's own and returns at once (so that a caller on an async
    /// runtime may use it), rather than running it on the caller's thread.
    fn queues_writes(&self) -> bool {
        false
    }

    /// Runs `work` as [`Store::write`] does and hands the outcome to `done`.
    /// By default on the caller's thread, before returning.
    fn write_detached(&self, mut work: Box<Work<'static>>, done: WriteDone) {
        done(self.write(&mut *work))
    }
}

/// What receives a detached write's outcome.
pub type WriteDone = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Runs `work` in a write transaction and hands back its value or error.
pub fn write<T: Send, E: From<StoreError> + Send>(
    store: &dyn Store,
    work: impl FnMut(&mut dyn Tx) -> Result<T, E> + Send,
) -> Result<T, E> {
    run(store, work, true)
}

/// Runs `work` in a read transaction and hands back its value or error.
pub fn read<T: Send, E: From<StoreError> + Send>(
    store: &dyn Store,
    work: impl FnMut(&mut dyn Tx) -> Result<T, E> + Send,
) -> Result<T, E> {
    run(store, work, false)
}

fn run<T: Send, E: From<StoreError> + Send>(
    store: &dyn Store,
    mut work: impl FnMut(&mut dyn Tx) -> Result<T, E> + Send,
    writing: bool,
) -> Result<T, E> {
    let mut outcome: Option<Result<T, E>> = None;
    let mut unit = |tx: &mut dyn Tx| keep_outcome(work(tx), &mut outcome);
    let result = if writing {
        store.write(&mut unit)
    } else {
        store.read(&mut unit)
    };
    settle(result, outcome)
}

/// [`write()`] without waiting: `done` gets what `write` would return, on
/// the thread that ran the work (see [`Store::write_detached`]).
pub fn write_detached<T: Send + 'static, E: From<StoreError> + Send + 'static>(
    store: &dyn Store,
    mut work: impl FnMut(&mut dyn Tx) -> Result<T, E> + Send + 'static,
    done: impl FnOnce(Result<T, E>) + Send + 'static,
) {
    let outcome = std::sync::Arc::new(std::sync::Mutex::new(None));
    let kept = std::sync::Arc::clone(&outcome);
    let unit = move |tx: &mut dyn Tx| {
        let mut slot = kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        keep_outcome(work(tx), &mut slot)
    };
    store.write_detached(
        Box::new(unit),
        Box::new(move |result| {
            let outcome = outcome.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            done(settle(result, outcome))
        }),
    );
}

/// Keeps the work's own value or error; an error rolls the unit back.
fn keep_outcome<T, E>(result: Result<T, E>, slot: &mut Option<Result<T, E>>) -> Result<(), StoreError> {
    let failed = result.is_err();
    *slot = Some(result);
    if failed {
        Err(StoreError::Aborted)
    } else {
        Ok(())
    }
}

/// What a unit's caller gets: the work's outcome if the store committed
/// it (or rolled it back on the work's own error), else the store's error.
fn settle<T, E: From<StoreError>>(result: Result<(), StoreError>, outcome: Option<Result<T, E>>) -> Result<T, E> {
    match (result, outcome) {
        (Ok(()), Some(Ok(value))) => Ok(value),
        (Err(StoreError::Aborted), Some(Err(error))) => Err(error),
        (Err(error), _) => Err(error.into()),
        (Ok(()), _) => Err(StoreError::Unavailable("the store committed without running the work".into()).into()),
    }
}

/// The time. Tests use a fixed or stepped clock.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> UnixTime;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixTime::from_nanos(since.as_nanos() as i128)
    }
}

/// Randomness for session tokens.
pub trait Random: Send + Sync {
    /// Fills `bytes` from a cryptographically secure source.
    fn fill(&self, bytes: &mut [u8]) -> Result<(), RandomUnavailable>;
}

/// The random source failed: no token can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the system random source failed")]
pub struct RandomUnavailable;

/// The operating system's CSPRNG, through ring.
#[derive(Debug)]
pub struct SystemRandom(ring::rand::SystemRandom);

impl Default for SystemRandom {
    fn default() -> Self {
        Self(ring::rand::SystemRandom::new())
    }
}

impl Random for SystemRandom {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), RandomUnavailable> {
        use ring::rand::SecureRandom;
        self.0.fill(bytes).map_err(|_| RandomUnavailable)
    }
}

/// Why a delivery failed (PROTOCOL.md section 7); `Display` is the
/// recorded reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryFailure {
    /// The peer answered with this status (and problem `code`).
    #[error("{}", http_reason(*status, code.as_deref()))]
    Http {
        /// The HTTP status.
        status: u16,
        /// The problem `code` of the answer, when it had one.
        code: Option<String>,
    },
    /// No answer in time.
    #[error("timeout")]
    Timeout,
    /// The connection was refused.
    #[error("connect refused")]
    ConnectRefused,
    /// The name did not resolve.
    #[error("dns")]
    Dns,
    /// An address the guard refuses (section 6).
    #[error("blocked address")]
    BlockedAddress,
    /// Not on the allow-list.
    #[error("blocked domain")]
    BlockedDomain,
    /// The TLS handshake failed.
    #[error("tls")]
    Tls,
    /// The peer redirected (never followed).
    #[error("redirect")]
    Redirect,
    /// A broken connection or malformed HTTP.
    #[error("io")]
    Io,
}

fn http_reason(status: u16, code: Option<&str>) -> String {
    match code {
        Some(code) => format!("http {status} {code}"),
        None => format!("http {status}"),
    }
}

/// Outbound delivery: `POST {scheme}://{domain}/federation/inbox` with the
/// wire form. Any 2xx is success. Each call has its own timeout.
pub trait Transport: Send + Sync {
    /// Posts the envelope to `to`'s inbox (section 7).
    fn deliver(&self, to: &Domain, wire_form: &str) -> Result<(), DeliveryFailure>;
}

/// A remote user's published keys (key discovery, PROTOCOL.md section 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKeys {
    /// Whose keys.
    pub handle: Handle,
    /// The signing key.
    pub signing_key: SigningKey,
    /// The encryption key.
    pub encryption_key: EncryptionKey,
    /// When the keys were registered, if the peer says.
    pub keys_updated_at: Option<UnixTime>,
}

/// Why no key could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFetchFailure {
    /// The peer answered that it has no such user, or no keys for it.
    #[error("no key published")]
    NotFound,
    /// No answer at all: name resolution, a refused or blocked connection,
    /// a timeout, TLS. The whole domain is remembered as failing for a
    /// while (PROTOCOL.md section 6, docs/security.md).
    #[error("key server unreachable: {0}")]
    Unreachable(String),
    /// An answer, but not keys: a status, the media type, the size, a
    /// malformed document, another handle.
    #[error("key lookup failed: {0}")]
    Failed(String),
}

/// Fetches a remote handle's keys over the network. `refetch` asks caches
/// on the way to revalidate (`Cache-Control: no-cache`).
pub trait KeyFetcher: Send + Sync {
    /// Looks up `handle`'s keys on its server; `refetch` after a failed signature.
    fn fetch_keys(&self, handle: &Handle, refetch: bool) -> Result<PublishedKeys, KeyFetchFailure>;
}
