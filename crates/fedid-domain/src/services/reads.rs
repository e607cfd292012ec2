//! Lists and acknowledgements of the user API: relationships, inbox,
//! pending revocations, audit.

use crate::handle::Handle;
use crate::model::{AuditRecord, InboxMessage, Page, PageLimit, QueuedRevocation, Relationship, UserId};
use crate::ports::{self, StoreError};
use crate::services::Fedid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("not found")]
    NotFound,
    #[error("unknown user")]
    UnknownUser,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReadError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::UnknownUser => "unknown_user",
            Self::Store(_) => "internal_error",
        }
    }
}

impl Fedid {
    /// Ordered by peer handle, byte order.
    pub fn relationships(
        &self,
        user: UserId,
        after: Option<&Handle>,
        limit: PageLimit,
    ) -> Result<Page<Relationship, Handle>, StoreError> {
        let rows = ports::read(self.store.as_ref(), |tx| {
            tx.relationships_after(user, after, limit.get() + 1)
        })?;
        Ok(Page::from_overfetch(rows, limit.get(), |r| r.peer.clone()))
    }

    /// Ordered by peer handle, byte order.
    pub fn pending_revocations(
        &self,
        user: UserId,
        after: Option<&Handle>,
        limit: PageLimit,
    ) -> Result<Page<QueuedRevocation, Handle>, StoreError> {
        let rows = ports::read(self.store.as_ref(), |tx| tx.queue_after(user, after, limit.get() + 1))?;
        Ok(Page::from_overfetch(rows, limit.get(), |r| r.peer.clone()))
    }

    /// Oldest first by id.
    pub fn inbox(
        &self,
        user: UserId,
        after: Option<i64>,
        limit: PageLimit,
    ) -> Result<Page<InboxMessage, i64>, StoreError> {
        let rows = ports::read(self.store.as_ref(), |tx| {
            tx.messages_after(user, after, limit.get() + 1)
        })?;
        Ok(Page::from_overfetch(rows, limit.get(), |m| m.id))
    }

    /// Deletes one of the user's own messages.
    pub fn acknowledge(&self, user: UserId, id: i64) -> Result<(), ReadError> {
        let deleted = ports::write(self.store.as_ref(), |tx| tx.delete_message(user, id))?;
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
