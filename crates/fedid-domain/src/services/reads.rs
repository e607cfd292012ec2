//! Lists and acknowledgements of the user API: relationships, inbox,
//! pending revocations, audit.

use crate::handle::Handle;
use crate::keylog::PeerPin;
use crate::model::{AuditRecord, InboxMessage, Page, PageLimit, QueuedRevocation, Relationship, UserId};
use crate::ports::{self, Lane, StoreError, Tx};
use crate::services::{Fedid, IdentityError, IdentityView};

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No such item of the user's.
    #[error("not found")]
    NotFound,
    /// The session's user is gone.
    #[error("unknown user")]
    UnknownUser,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReadError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::UnknownUser => "unknown_user",
            Self::Store(_) => "internal_error",
        }
    }
}

/// A relationship as its user sees it: with what this server pinned of the
/// peer's key log (`peerKeys`, PROTOCOL.md section 12), when it did.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRelationship {
    /// The relationship.
    pub relationship: Relationship,
    /// The peer's pin; `None` until this server holds one (local peers
    /// are never pinned).
    pub peer_keys: Option<PeerPin>,
}

impl Fedid {
    /// Ordered by peer handle, byte order.
    pub fn relationships(
        &self,
        user: UserId,
        after: Option<&Handle>,
        limit: PageLimit,
    ) -> Result<Page<PeerRelationship, Handle>, StoreError> {
        ports::read(self.store.as_ref(), |tx| {
            self.reads(tx, user).relationships(after, limit)
        })
    }

    /// Ordered by peer handle, byte order.
    pub fn pending_revocations(
        &self,
        user: UserId,
        after: Option<&Handle>,
        limit: PageLimit,
    ) -> Result<Page<QueuedRevocation, Handle>, StoreError> {
        ports::read(self.store.as_ref(), |tx| {
            self.reads(tx, user).pending_revocations(after, limit)
        })
    }

    /// Oldest first by id.
    pub fn inbox(
        &self,
        user: UserId,
        after: Option<i64>,
        limit: PageLimit,
    ) -> Result<Page<InboxMessage, i64>, StoreError> {
        ports::read(self.store.as_ref(), |tx| self.reads(tx, user).inbox(after, limit))
    }

    /// Authenticates `token` and runs `read` as its user in the same read
    /// transaction: one snapshot and one round of locks for what would
    /// otherwise be two. `Ok(None)` when the token is not live.
    pub fn read_as<T: Send, E: From<StoreError> + Send>(
        &self,
        token: &str,
        read: impl FnOnce(&mut UserReads<'_>) -> Result<T, E> + Send,
    ) -> Result<Option<T>, E> {
        let Some(hash) = super::sessions::well_formed_token_hash(token) else {
            return Ok(None);
        };
        let now = self.clock.now();
        // Stores run a read once (only writes are retried).
        let mut read = Some(read);
        ports::read(self.store.as_ref(), |tx| {
            let Some(user) = tx.session_user(&hash, now)? else {
                return Ok(None);
            };
            let read = read
                .take()
                .ok_or_else(|| StoreError::Unavailable("the store ran a read twice".into()))?;
            read(&mut self.reads(tx, user)).map(Some)
        })
    }

    fn reads<'a>(&'a self, tx: &'a mut dyn Tx, user: UserId) -> UserReads<'a> {
        UserReads { fedid: self, tx, user }
    }

    /// Deletes one of the user's own messages.
    pub fn acknowledge(&self, user: UserId, id: i64) -> Result<(), ReadError> {
        let deleted = ports::write(self.store.as_ref(), Some(Lane::of_user(user)), move |tx| {
            tx.delete_message(user, id)
        })
        .wait()?;
        if deleted {
            Ok(())
        } else {
            Err(ReadError::NotFound)
        }
    }

    /// The user's audit records, oldest first.
    pub fn audit_records(&self, user: UserId) -> Result<Vec<AuditRecord>, ReadError> {
        ports::read(self.store.as_ref(), |tx| {
            tx.identity(user)?.ok_or(ReadError::UnknownUser)?;
            Ok(tx.audit_records(user)?)
        })
    }
}

/// The user API's reads for one authenticated user, on the snapshot that
/// authenticated them ([`Fedid::read_as`]).
pub struct UserReads<'a> {
    fedid: &'a Fedid,
    tx: &'a mut dyn Tx,
    user: UserId,
}

impl UserReads<'_> {
    /// Whose reads these are.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// The user's identity object.
    pub fn identity(&mut self) -> Result<IdentityView, IdentityError> {
        Ok(self.fedid.view(self.tx, self.user)?)
    }

    /// As [`Fedid::relationships`].
    pub fn relationships(
        &mut self,
        after: Option<&Handle>,
        limit: PageLimit,
    ) -> Result<Page<PeerRelationship, Handle>, StoreError> {
        let rows = self.tx.relationships_after(self.user, after, limit.get() + 1)?;
        let page = Page::from_overfetch(rows, limit.get(), |r| r.peer.clone());
        let peers: Vec<Handle> = page.items.iter().map(|r| r.peer.clone()).collect();
        let mut pins = self.tx.key_pins(&peers)?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|relationship| {
                    let peer_keys = pins
                        .iter()
                        .position(|pin| pin.handle == relationship.peer)
                        .map(|i| pins.swap_remove(i));
                    PeerRelationship {
                        relationship,
                        peer_keys,
                    }
                })
                .collect(),
            next_after: page.next_after,
        })
    }

    /// As [`Fedid::pending_revocations`].
    pub fn pending_revocations(
        &mut self,
        after: Option<&Handle>,
        limit: PageLimit,
    ) -> Result<Page<QueuedRevocation, Handle>, StoreError> {
        let rows = self.tx.queue_after(self.user, after, limit.get() + 1)?;
        Ok(Page::from_overfetch(rows, limit.get(), |r| r.peer.clone()))
    }

    /// As [`Fedid::inbox`].
    pub fn inbox(&mut self, after: Option<i64>, limit: PageLimit) -> Result<Page<InboxMessage, i64>, StoreError> {
        let rows = self.tx.messages_after(self.user, after, limit.get() + 1)?;
        Ok(Page::from_overfetch(rows, limit.get(), |m| m.id))
    }
}
