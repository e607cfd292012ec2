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
    pub user: UserId,
    pub alias: Option<Alias>,
    pub signing_key: Option<SigningKey>,
    pub encryption_key: Option<EncryptionKey>,
    pub keys_updated_at: Option<UnixTime>,
    pub last_reset_at: Option<UnixTime>,
}

impl IdentityRecord {
    pub fn new(user: UserId) -> Self {
        Self {
            user,
            alias: None,
            signing_key: None,
            encryption_key: None,
            keys_updated_at: None,
            last_reset_at: None,
        }
    }

    /// Alias and both keys set.
    pub fn is_active(&self) -> bool {
        self.alias.is_some() && self.signing_key.is_some() && self.encryption_key.is_some()
    }

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
    Active,
}

impl RelationshipState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outgoing => "outgoing",
            Self::Incoming => "incoming",
            Self::Active => "active",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Outgoing, Self::Incoming, Self::Active]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    pub peer: Handle,
    pub state: RelationshipState,
    /// When it entered its current state.
    pub since: UnixTime,
}

/// A revocation waiting to be delivered to a former peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRevocation {
    pub peer: Handle,
    pub queued_at: UnixTime,
    pub attempts: u32,
    pub last_attempt_at: Option<UnixTime>,
    pub last_error: Option<String>,
    /// A flush delivering this row holds it until then.
    pub claimed_until: Option<UnixTime>,
}

impl QueuedRevocation {
    pub fn new(peer: Handle, queued_at: UnixTime) -> Self {
        Self {
            peer,
            queued_at,
            attempts: 0,
            last_attempt_at: None,
            last_error: None,
            claimed_until: None,
        }
    }
}

/// An envelope stored for its recipient, in wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxMessage {
    pub id: i64,
    pub received_at: UnixTime,
    pub envelope: String,
}

/// What the replay table remembers of an accepted envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRecord {
    pub key: ReplayKey,
    pub sender: Handle,
    pub nonce: Nonce,
    pub expires_at: UnixTime,
}

/// The result of recording a replay key; rows past `expires_at` no longer count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayOutcome {
    Recorded,
    /// The same signed bytes were accepted already.
    Duplicate,
    /// The same sender used this non-empty nonce for other bytes.
    NonceReused,
}

/// An audit record: who, when, what, with counts only (never content).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub user: UserId,
    pub at: UnixTime,
    pub action: String,
    pub details: Value,
}

/// One page of a list ordered by a cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, C> {
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
    pub const DEFAULT: Self = Self(100);

    pub fn new(limit: i64) -> Option<Self> {
        (1..=1000).contains(&limit).then_some(Self(limit as usize))
    }

    pub fn get(self) -> usize {
        self.0
    }
}
