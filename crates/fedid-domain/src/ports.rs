//! The ports: what the domain needs from the outside world. Every trait is
//! synchronous and object-safe; adapters implement them and `main` wires
//! them together.

use crate::handle::{Alias, Domain, Handle};
use crate::keylog::{KeyConflict, PeerPin, PinTarget};
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
    /// Creates or replaces the relationship with its peer; a replaced one
    /// keeps its `created_at`.
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
    /// The user's relationships with those of `peers` it has one with, in
    /// any order. Stores that can read them at once override this.
    fn relationships_with(&mut self, user: UserId, peers: &[Handle]) -> Result<Vec<Relationship>, StoreError> {
        let mut found = Vec::with_capacity(peers.len());
        for peer in peers {
            found.extend(self.relationship(user, peer)?);
        }
        Ok(found)
    }
    /// The user's relationships, of one state or all.
    fn count_relationships(&mut self, user: UserId, state: Option<RelationshipState>) -> Result<u64, StoreError>;

    // Inbox.
    /// Stores `messages` in their order and raises the user's inbox count
    /// by their number; their ids, in the same order.
    fn insert_messages(&mut self, user: UserId, messages: &[NewMessage<'_>]) -> Result<Vec<i64>, StoreError>;
    /// Stores one message (see [`Tx::insert_messages`]); its id.
    fn insert_message(
        &mut self,
        user: UserId,
        received_at: UnixTime,
        unsolicited_from: Option<&str>,
        envelope: &str,
    ) -> Result<i64, StoreError> {
        let message = NewMessage {
            received_at,
            unsolicited_from,
            envelope,
        };
        let ids = self.insert_messages(user, &[message])?;
        ids.first()
            .copied()
            .ok_or_else(|| StoreError::Unavailable("the store returned no id for the message".into()))
    }
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
    /// Overwrites everything of a queued row but its peer and `queued_at`.
    fn update_queued(&mut self, user: UserId, row: &QueuedRevocation) -> Result<(), StoreError>;
    /// Claims up to `limit` rows due at `now` (a `next_attempt_at` at or
    /// before it) and not claimed at `now`, the earliest due first, setting
    /// their claim to `until`; returns them claimed. Two instances on one
    /// database never claim the same row at once.
    fn claim_due(
        &mut self,
        now: UnixTime,
        until: UnixTime,
        limit: usize,
    ) -> Result<Vec<(UserId, QueuedRevocation)>, StoreError>;
    /// Every user's rows the server retries by itself: the
    /// `fedid_revocations_scheduled` gauge.
    fn total_scheduled(&mut self) -> Result<u64, StoreError>;
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

    // Key logs (PROTOCOL.md section 12).
    /// The user's log position: its last entry's seq and hash.
    fn key_log_head(&mut self, user: UserId) -> Result<Option<(u64, String)>, StoreError>;
    /// The user's last key-log entry, as stored (entry bytes).
    fn key_log_last(&mut self, user: UserId) -> Result<Option<String>, StoreError>;
    /// Appends an entry (its entry bytes and hash) at `seq` unless one is
    /// there already (a race lost: `false`). Entries are never updated or
    /// deleted.
    fn key_log_append(
        &mut self,
        user: UserId,
        seq: u64,
        entry: &str,
        hash: &str,
        at: UnixTime,
    ) -> Result<bool, StoreError>;
    /// Up to `limit` entries after `after`, in order.
    fn key_log_after(&mut self, user: UserId, after: u64, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Entries appended at or after `since`.
    fn key_log_appended_since(&mut self, user: UserId, since: UnixTime) -> Result<u64, StoreError>;
    /// Up to `limit` users with an alias and both keys but an empty log.
    fn users_missing_key_log(&mut self, limit: usize) -> Result<Vec<UserId>, StoreError>;

    // Pins of remote handles' key logs (PROTOCOL.md section 12).
    /// The pin this server keeps for a remote handle, if any.
    fn key_pin(&mut self, handle: &Handle) -> Result<Option<PeerPin>, StoreError>;
    /// The pins of those of `handles` that have one.
    fn key_pins(&mut self, handles: &[Handle]) -> Result<Vec<PeerPin>, StoreError>;
    /// Writes `pin` if the handle's pin is still at `from` (its seq and
    /// head; `None`: no pin yet), a compare-and-set that two instances on
    /// one database never both win; whether it was written.
    fn move_key_pin(&mut self, pin: &PeerPin, from: Option<&(u64, String)>) -> Result<bool, StoreError>;
    /// The conflict recorded for a handle, if any.
    fn key_conflict(&mut self, handle: &Handle) -> Result<Option<KeyConflict>, StoreError>;
    /// Records a conflict unless one is recorded for its handle already;
    /// whether it was recorded.
    fn record_key_conflict(&mut self, conflict: &KeyConflict) -> Result<bool, StoreError>;
    /// Every recorded conflict, by handle (byte order).
    fn key_conflicts(&mut self) -> Result<Vec<KeyConflict>, StoreError>;
    /// How many conflicts are recorded: the `fedid_key_log_conflicts` gauge.
    fn count_key_conflicts(&mut self) -> Result<u64, StoreError>;
    /// Forgets the pins and conflicts of one handle or of every handle of
    /// one domain; the handles whose pin it forgot.
    fn unpin(&mut self, target: &PinTarget) -> Result<Vec<Handle>, StoreError>;
    /// Local users with a relationship with `peer`, by id, at most `limit`.
    fn users_related_to(&mut self, peer: &Handle, limit: usize) -> Result<Vec<UserId>, StoreError>;

    // Peer domains (PROTOCOL.md section 11).
    /// What is known of `domain`, if anything was delivered to it.
    fn peer_domain(&mut self, domain: &Domain) -> Result<Option<PeerDomainHealth>, StoreError>;
    /// Every peer domain delivered to, by domain (byte order).
    fn peer_domains(&mut self) -> Result<Vec<PeerDomainHealth>, StoreError>;
    /// Records a delivery to `domain` at `at`: a success resets its
    /// failures; a failure (its reason) adds one.
    fn record_peer_outcome(&mut self, domain: &Domain, failure: Option<&str>, at: UnixTime) -> Result<(), StoreError>;
    /// Takes the lease of a failing `domain` until `until` if nobody holds
    /// it at `now` (one delivery in flight across instances, section 11);
    /// whether it was taken.
    fn lease_peer_domain(&mut self, domain: &Domain, now: UnixTime, until: UnixTime) -> Result<bool, StoreError>;
    /// Gives the lease of `domain` back.
    fn release_peer_domain(&mut self, domain: &Domain) -> Result<(), StoreError>;
    /// Rows queued, all users, for peers of `domain`.
    fn queued_for_domain(&mut self, domain: &Domain) -> Result<u64, StoreError>;

    // Replay protection (PROTOCOL.md section 5).
    /// The rows recorded in the way of `records`, expired or not: for a
    /// record without a nonce, the row with its key and no nonce; for one
    /// with a nonce, the row with its sender and nonce.
    fn replays_in_way(&mut self, records: &[ReplayRecord]) -> Result<Vec<ReplayRecord>, StoreError>;
    /// Records `records`, in whose way [`Tx::replays_in_way`] found no row
    /// live at `now` in this transaction, and which are not in each
    /// other's way: an expired row in the way is replaced. A live row
    /// found there after all (another instance's, recorded since) fails
    /// the unit, which a database store then runs again.
    fn record_replays(&mut self, records: &[ReplayRecord], now: UnixTime) -> Result<(), StoreError>;
    /// Records an accepted envelope unless its key, or its sender and
    /// non-empty nonce, is already recorded and not expired at `now`.
    fn record_replay(&mut self, record: &ReplayRecord, now: UnixTime) -> Result<ReplayOutcome, StoreError> {
        let records = std::slice::from_ref(record);
        let in_way = self.replays_in_way(records)?;
        if let Some(outcome) = in_way.iter().find_map(|earlier| record.outcome_against(earlier, now)) {
            return Ok(outcome);
        }
        self.record_replays(records, now)?;
        Ok(ReplayOutcome::Recorded)
    }

    // The inbox's reads and writes for a batch of deliveries to one
    // recipient, each one round trip where the store can.
    /// The recipient who holds `alias` (locked), its relationships with
    /// `senders` and the replay rows in the way of `records`; `None` when
    /// no user holds the alias. Stores override this to read all at once.
    fn inbox_batch_view(
        &mut self,
        alias: &Alias,
        senders: &[Handle],
        records: &[ReplayRecord],
    ) -> Result<Option<InboxBatchView>, StoreError> {
        inbox_batch_view_by_steps(self, alias, senders, records)
    }
    /// [`Tx::record_replays`] then [`Tx::insert_messages`] for `user`.
    /// Stores override this to write both at once.
    fn store_inbox_batch(
        &mut self,
        user: UserId,
        replays: &[ReplayRecord],
        now: UnixTime,
        messages: &[NewMessage<'_>],
    ) -> Result<(), StoreError> {
        if !replays.is_empty() {
            self.record_replays(replays, now)?;
        }
        if !messages.is_empty() {
            self.insert_messages(user, messages)?;
        }
        Ok(())
    }
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

/// [`Tx::inbox_batch_view`] one step after the other, as its provided body
/// does: for a store that reads it at once only in some transactions.
pub fn inbox_batch_view_by_steps<T: Tx + ?Sized>(
    tx: &mut T,
    alias: &Alias,
    senders: &[Handle],
    records: &[ReplayRecord],
) -> Result<Option<InboxBatchView>, StoreError> {
    let Some(recipient) = tx.identity_by_alias(alias)? else {
        return Ok(None);
    };
    let relationships = tx.relationships_with(recipient.user, senders)?;
    let replays_in_way = tx.replays_in_way(records)?;
    Ok(Some(InboxBatchView {
        recipient,
        relationships,
        replays_in_way,
    }))
}

/// A read: gets the transaction on a consistent snapshot and must not
/// write. It runs on the caller's thread, so it may borrow.
pub type Work<'a> = dyn FnMut(&mut dyn Tx) -> Result<(), StoreError> + Send + 'a;

/// A unit of write work, owned, so that the store may run it wherever it
/// writes (the SQLite store on one writer thread, the PostgreSQL store on a
/// few) and answer it from there. [`write()`] makes one from a closure.
pub trait WriteUnit: Send {
    /// Runs inside the transaction; `Err` rolls back what this unit did.
    /// May run again after a serialization conflict.
    fn run(&mut self, tx: &mut dyn Tx) -> Result<(), StoreError>;
    /// Called once with how the unit ended: `Ok` only after the commit that
    /// holds it. A store that drops a unit uncalled is reported to its
    /// caller as unavailable.
    fn finish(self: Box<Self>, outcome: Result<(), StoreError>);
    /// Units that share a lane run one after another, in the order they
    /// were handed over, on a store that writes in parallel; the units of
    /// one user share one, so that they share commits rather than wait on
    /// each other's row locks. `None`: any lane.
    fn lane(&self) -> Option<Lane>;
}

/// Which units a store keeps in one line (see [`WriteUnit::lane`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lane(pub u64);

impl Lane {
    /// The lane of a local user's writes. Inbox writes, which know the
    /// recipient by alias, use [`Lane::of_alias`].
    pub fn of_user(user: UserId) -> Self {
        Self(user.0 as u64)
    }

    /// The lane of writes to the user who holds `alias` (FNV-1a of its text:
    /// stable across processes and cheap).
    pub fn of_alias(alias: &Alias) -> Self {
        let hash = alias.as_str().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        Self(hash)
    }
}

/// Storage with transactions. A store runs each write unit in one
/// all-or-nothing transaction (which it may share with other units, each
/// undone alone on failure) and answers it through [`WriteUnit::finish`]
/// once that transaction has ended; `read` runs its work on a consistent
/// snapshot, on the caller's thread. A unit of work never calls the store
/// itself: it has its `Tx`.
pub trait Store: Send + Sync {
    /// Hands `unit` over; its outcome comes through [`WriteUnit::finish`].
    fn write(&self, unit: Box<dyn WriteUnit>);
    /// Runs `work` on a consistent, read-only snapshot.
    fn read(&self, work: &mut Work<'_>) -> Result<(), StoreError>;
}

/// The outcome of a write handed to the store: a one-shot that a
/// synchronous caller [`waits`](Completion::wait) for and an async caller
/// awaits, on any runtime.
#[must_use = "a write's outcome says whether it was stored"]
pub struct Completion<T, E> {
    answer: oneshot::Receiver<Result<T, E>>,
}

impl<T, E> Completion<T, E> {
    /// A completion and the sender that answers it.
    pub(crate) fn channel() -> (oneshot::Sender<Result<T, E>>, Self) {
        let (answer, answered) = oneshot::channel();
        (answer, Self { answer: answered })
    }
}

impl<T, E: From<StoreError>> Completion<T, E> {
    /// Blocks the calling thread until the write has ended.
    pub fn wait(self) -> Result<T, E> {
        self.answer.recv().unwrap_or_else(|_| Err(dropped().into()))
    }
}

impl<T, E: From<StoreError>> std::future::IntoFuture for Completion<T, E> {
    type Output = Result<T, E>;
    type IntoFuture = Completing<T, E>;

    fn into_future(self) -> Self::IntoFuture {
        Completing {
            answer: self.answer.into_future(),
        }
    }
}

/// A [`Completion`] being awaited.
pub struct Completing<T, E> {
    answer: oneshot::AsyncReceiver<Result<T, E>>,
}

impl<T, E: From<StoreError>> std::future::Future for Completing<T, E> {
    type Output = Result<T, E>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| answer.unwrap_or_else(|_| Err(dropped().into())))
    }
}

fn dropped() -> StoreError {
    StoreError::Unavailable("the store dropped a write without answering it".into())
}

/// Hands `work` to the store as a write unit in `lane`; the completion
/// gives the work's own value or error if the store ran it, else the
/// store's error.
pub fn write<T, E, F>(store: &dyn Store, lane: Option<Lane>, work: F) -> Completion<T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: FnMut(&mut dyn Tx) -> Result<T, E> + Send + 'static,
{
    let (answer, completion) = Completion::channel();
    store.write(Box::new(ClosureUnit {
        work,
        lane,
        outcome: None,
        answer,
    }));
    completion
}

/// Runs `work` in a read transaction and hands back its value or error.
pub fn read<T: Send, E: From<StoreError> + Send>(
    store: &dyn Store,
    mut work: impl FnMut(&mut dyn Tx) -> Result<T, E> + Send,
) -> Result<T, E> {
    let mut outcome: Option<Result<T, E>> = None;
    let result = store.read(&mut |tx: &mut dyn Tx| keep_outcome(work(tx), &mut outcome));
    settle(result, outcome)
}

/// A closure as a [`WriteUnit`]: it keeps the closure's last outcome and
/// sends it, settled against the store's, to its [`Completion`].
struct ClosureUnit<F, T, E> {
    work: F,
    lane: Option<Lane>,
    outcome: Option<Result<T, E>>,
    answer: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> WriteUnit for ClosureUnit<F, T, E>
where
    T: Send,
    E: From<StoreError> + Send,
    F: FnMut(&mut dyn Tx) -> Result<T, E> + Send,
{
    fn run(&mut self, tx: &mut dyn Tx) -> Result<(), StoreError> {
        keep_outcome((self.work)(tx), &mut self.outcome)
    }

    fn finish(self: Box<Self>, outcome: Result<(), StoreError>) {
        // A dropped completion: the caller has gone; nothing to tell.
        let _ = self.answer.send(settle(outcome, self.outcome));
    }

    fn lane(&self) -> Option<Lane> {
        self.lane
    }
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
        /// A `Retry-After` in seconds, when the answer had one.
        retry_after_secs: Option<u64>,
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
    /// `keyLogSeq` and `keyLogHead` (revision 1.1); `None` from a peer
    /// that publishes no key log.
    pub key_log: Option<(u64, String)>,
}

/// One page of a remote user's key log (`GET
/// /federation/users/{alias}/keylog`, PROTOCOL.md section 12).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyLogFetch {
    /// The entries after the page's start, in order, as served.
    pub entries: Vec<serde_json::Value>,
    /// The whole log's last seq.
    pub seq: u64,
    /// The whole log's head.
    pub head: String,
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

    /// One page of `handle`'s key log after seq `after` (section 12);
    /// `refetch` asks caches to revalidate. A fetcher that cannot read key
    /// logs answers [`KeyFetchFailure::NotFound`].
    fn fetch_key_log(&self, handle: &Handle, after: u64, refetch: bool) -> Result<KeyLogFetch, KeyFetchFailure> {
        let _ = (handle, after, refetch);
        Err(KeyFetchFailure::NotFound)
    }
}
