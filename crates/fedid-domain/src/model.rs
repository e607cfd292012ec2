//! What the store keeps, as the domain sees it. Adapters convert their rows
//! into these in one place.

use std::fmt;

use serde_json::Value;

use crate::envelope::{Nonce, ReplayKey};
use crate::handle::{Alias, Domain, Handle};
use crate::keys::{EncryptionKey, SigningKey};
use crate::time::UnixTime;

/// A user's numeric id; shown as a decimal string in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A user's federation identity as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    /// Whose identity this is.
    pub user: UserId,
    /// The current alias, once set.
    pub alias: Option<Alias>,
    /// The signing key, while registered.
    pub signing_key: Option<SigningKey>,
    /// The encryption key, while registered.
    pub encryption_key: Option<EncryptionKey>,
    /// When the keys were last registered.
    pub keys_updated_at: Option<UnixTime>,
    /// When the identity was last reset.
    pub last_reset_at: Option<UnixTime>,
    /// How many messages wait in the user's inbox: kept with the identity,
    /// so that the inbox limit costs no query of its own.
    pub inbox_messages: u64,
}

impl IdentityRecord {
    /// A user with nothing set yet.
    pub fn new(user: UserId) -> Self {
        Self {
            user,
            alias: None,
            signing_key: None,
            encryption_key: None,
            keys_updated_at: None,
            last_reset_at: None,
            inbox_messages: 0,
        }
    }

    /// Alias and both keys set.
    pub fn is_active(&self) -> bool {
        self.alias.is_some() && self.signing_key.is_some() && self.encryption_key.is_some()
    }

    /// `alias@domain` once the alias is set.
    pub fn handle(&self, domain: &Domain) -> Option<Handle> {
        self.alias.as_ref().map(|alias| Handle::new(alias, domain))
    }
}

/// A relationship's state, seen from the user who holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelationshipState {
    /// I asked.
    Outgoing,
    /// They asked.
    Incoming,
    /// Both sides agreed.
    Active,
}

impl RelationshipState {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outgoing => "outgoing",
            Self::Incoming => "incoming",
            Self::Active => "active",
        }
    }

    /// Reads a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Outgoing, Self::Incoming, Self::Active]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A user's alias changes, for the limits of an alias change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AliasChanges {
    /// Every change ever recorded.
    pub ever: u64,
    /// Changes at or after the time asked about.
    pub recent: u64,
    /// The oldest of those recent changes.
    pub oldest_recent: Option<UnixTime>,
}

/// One user's relationship with one peer (section 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    /// The peer's handle.
    pub peer: Handle,
    /// The state, seen from the user.
    pub state: RelationshipState,
    /// When it entered its current state.
    pub since: UnixTime,
    /// When it was created from none (revision 1.1, not shown to users):
    /// it does not move while the state changes, and a REVOKE signed
    /// before it leaves the relationship in place (PROTOCOL.md section 11).
    pub created_at: UnixTime,
}

impl Relationship {
    /// `peer`'s relationship entering `state` at `now`: a new one, or
    /// `existing` in its new state, created when it was.
    pub fn entering(peer: Handle, state: RelationshipState, now: UnixTime, existing: Option<&Relationship>) -> Self {
        Self {
            peer,
            state,
            since: now,
            created_at: existing.map_or(now, |r| r.created_at),
        }
    }
}

/// A revocation waiting to be delivered to a former peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRevocation {
    /// The former peer to revoke.
    pub peer: Handle,
    /// When the reset queued it.
    pub queued_at: UnixTime,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When the last attempt was.
    pub last_attempt_at: Option<UnixTime>,
    /// The last attempt's failure (section 7 reasons).
    pub last_error: Option<String>,
    /// A flush or the deliverer delivering this row holds it until then.
    pub claimed_until: Option<UnixTime>,
    /// The long-lived REVOKE the server delivers by itself (PROTOCOL.md
    /// section 11), in wire form; `None` for a row only a flush delivers.
    pub envelope: Option<String>,
    /// That REVOKE's `expires`.
    pub expires_at: Option<UnixTime>,
    /// When the server tries that REVOKE again by itself.
    pub next_attempt_at: Option<UnixTime>,
    /// Background attempts made for that REVOKE (n of section 11).
    pub retries: u32,
    /// `http 401` answers to that REVOKE: the third ends the retries.
    pub unauthorized: u32,
}

impl QueuedRevocation {
    /// A new row, never attempted.
    pub fn new(peer: Handle, queued_at: UnixTime) -> Self {
        Self {
            peer,
            queued_at,
            attempts: 0,
            last_attempt_at: None,
            last_error: None,
            claimed_until: None,
            envelope: None,
            expires_at: None,
            next_attempt_at: None,
            retries: 0,
            unauthorized: 0,
        }
    }

    /// Whether the server retries it by itself (section 11).
    pub fn is_scheduled(&self) -> bool {
        self.envelope.is_some() && self.next_attempt_at.is_some()
    }

    /// Drops its envelope: only a flush delivers it from now on.
    pub fn unschedule(&mut self) {
        self.envelope = None;
        self.expires_at = None;
        self.next_attempt_at = None;
        self.retries = 0;
        self.unauthorized = 0;
    }
}

/// What this server knows of a peer domain it delivered to (PROTOCOL.md
/// section 11); never sent to peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDomainHealth {
    /// The peer domain.
    pub domain: Domain,
    /// Failed deliveries since the last success.
    pub consecutive_failures: u32,
    /// The last delivery that succeeded.
    pub last_success_at: Option<UnixTime>,
    /// The last delivery that failed.
    pub last_failure_at: Option<UnixTime>,
    /// Its reason (section 7).
    pub last_failure: Option<String>,
    /// The first failure since the last success.
    pub failing_since: Option<UnixTime>,
}

/// A peer domain's state (section 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerDomainState {
    /// Fewer than 5 failures in a row.
    Healthy,
    /// 5 or more in a row: one delivery to it at a time.
    Failing,
    /// Failing without a success for 7 days: retried at the ceiling.
    Unreachable,
}

impl PeerDomainState {
    /// Failures in a row from which a domain is failing.
    pub const FAILING_AFTER: u32 = 5;
    /// Seconds of failing without a success after which it is unreachable.
    pub const UNREACHABLE_AFTER_SECS: i64 = 7 * 86_400;

    /// The name of the state in metrics and commands.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Failing => "failing",
            Self::Unreachable => "unreachable",
        }
    }
}

impl PeerDomainHealth {
    /// The state at `now`.
    pub fn state(&self, now: UnixTime) -> PeerDomainState {
        if self.consecutive_failures < PeerDomainState::FAILING_AFTER {
            return PeerDomainState::Healthy;
        }
        match self.failing_since {
            Some(since) if now >= since.plus_secs(PeerDomainState::UNREACHABLE_AFTER_SECS) => {
                PeerDomainState::Unreachable
            }
            _ => PeerDomainState::Failing,
        }
    }
}

/// An envelope stored for its recipient, in wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxMessage {
    /// Its id: increasing, with possible gaps.
    pub id: i64,
    /// When the inbox accepted it.
    pub received_at: UnixTime,
    /// The envelope in wire form, as signed.
    pub envelope: String,
}

/// What the replay table remembers of an accepted envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRecord {
    /// The hash of the envelope's signed bytes.
    pub key: ReplayKey,
    /// Who signed it.
    pub sender: Handle,
    /// Its nonce (empty for none).
    pub nonce: Nonce,
    /// When the record may be forgotten.
    pub expires_at: UnixTime,
}

impl ReplayRecord {
    /// What accepting `self` comes to with `earlier` recorded (PROTOCOL.md
    /// section 5): `None` when `earlier` is not in its way (another key
    /// without a nonce, another sender or nonce) or is expired at `now`.
    pub fn outcome_against(&self, earlier: &ReplayRecord, now: UnixTime) -> Option<ReplayOutcome> {
        let in_the_way = if self.nonce.is_empty() {
            earlier.nonce.is_empty() && earlier.key == self.key
        } else {
            earlier.sender == self.sender && earlier.nonce == self.nonce
        };
        (in_the_way && earlier.expires_at > now).then(|| {
            if earlier.key == self.key {
                ReplayOutcome::Duplicate
            } else {
                ReplayOutcome::NonceReused
            }
        })
    }
}

/// What the inbox reads to apply deliveries to one recipient (see
/// [`crate::Tx::inbox_batch_view`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxBatchView {
    /// The recipient, locked like [`crate::Tx::identity_by_alias`] locks it.
    pub recipient: IdentityRecord,
    /// Its relationships with those of the senders it has one with.
    pub relationships: Vec<Relationship>,
    /// The replay rows in the way of the deliveries' records.
    pub replays_in_way: Vec<ReplayRecord>,
}

/// A message to store (see [`crate::Tx::insert_messages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewMessage<'a> {
    /// When the inbox accepted it.
    pub received_at: UnixTime,
    /// The sender's handle when the sender had no active relationship with
    /// the recipient (counted by [`crate::Tx::count_unsolicited`]); `None`
    /// for a message the recipient consented to.
    pub unsolicited_from: Option<&'a str>,
    /// The envelope in wire form.
    pub envelope: &'a str,
}

/// The result of recording a replay key; rows past `expires_at` no longer count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// First seen: recorded.
    Recorded,
    /// The same signed bytes were accepted already.
    Duplicate,
    /// The same sender used this non-empty nonce for other bytes.
    NonceReused,
}

/// An audit record: who, when, what, with counts only (never content).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Whose record.
    pub user: UserId,
    /// When.
    pub at: UnixTime,
    /// What happened, such as `identity_reset` or `keys_set`.
    pub action: String,
    /// Counts and public facts; never content or secrets.
    pub details: Value,
}

/// One page of a list ordered by a cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, C> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// The cursor of the last item when more follow.
    pub next_after: Option<C>,
}

impl<T, C> Page<T, C> {
    /// Builds a page from up to `limit + 1` fetched items.
    pub fn from_overfetch(mut items: Vec<T>, limit: usize, cursor: impl Fn(&T) -> C) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        let next_after = if more { items.last().map(cursor) } else { None };
        Self { items, next_after }
    }
}

/// A page size: 1 to 1000, 100 by default (API.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(usize);

impl PageLimit {
    /// 100 items.
    pub const DEFAULT: Self = Self(100);

    /// 1 to 1000; `None` otherwise.
    pub fn new(limit: i64) -> Option<Self> {
        (1..=1000).contains(&limit).then_some(Self(limit as usize))
    }

    /// The number of items.
    pub fn get(self) -> usize {
        self.0
    }
}
