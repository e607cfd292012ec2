//! Identity reset (PROTOCOL.md section 10): the last resort after a lost
//! seed. One transaction erases what was encrypted under the old keys and
//! queues a revocation for every former peer.

use serde_json::json;

use crate::model::{QueuedRevocation, UserId};
use crate::ports::{self, Lane, StoreError};
use std::sync::Arc;

use crate::services::identity::{audit, identity_view, IdentityView, ViewError};
use crate::services::Fedid;

/// The exact confirmation a client must send.
pub const RESET_CONFIRMATION: &str = "erase-all-my-data";

/// Why a reset failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResetError {
    /// The body did not confirm.
    #[error("send {{\"confirm\":\"{RESET_CONFIRMATION}\"}} to erase everything")]
    ConfirmationRequired,
    /// The session's user is gone.
    #[error("unknown user")]
    UnknownUser,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ResetError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ConfirmationRequired => "confirmation_required",
            Self::UnknownUser => "unauthenticated",
            Self::Store(_) => "internal_error",
        }
    }
}

impl From<ViewError> for ResetError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::UnknownUser => Self::UnknownUser,
            ViewError::Store(s) => Self::Store(s),
        }
    }
}

/// What a reset erased and queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetReport {
    /// Rows this reset added to the queue.
    pub revocations_queued: u64,
    /// Relationships erased.
    pub relationships_erased: u64,
    /// Inbox messages erased.
    pub inbox_messages_erased: u64,
    /// The identity after the reset.
    pub identity: IdentityView,
}

impl Fedid {
    /// Erases the user's inbox, relationships and keys, queues one
    /// revocation per former peer not already queued, and audits it; all or
    /// nothing. `confirmation` must be exactly [`RESET_CONFIRMATION`].
    pub fn reset_identity(&self, user: UserId, confirmation: Option<&str>) -> Result<ResetReport, ResetError> {
        if confirmation != Some(RESET_CONFIRMATION) {
            return Err(ResetError::ConfirmationRequired);
        }
        let now = self.clock.now();
        let settings = Arc::clone(&self.settings);
        ports::write(self.store.as_ref(), Some(Lane::of_user(user)), move |tx| {
            let record = tx.identity(user)?.ok_or(ResetError::UnknownUser)?;
            let inbox_messages_erased = tx.delete_messages(user)?;
            let peers = tx.delete_relationships(user)?;
            let mut revocations_queued = 0;
            for peer in &peers {
                if tx.enqueue(user, &QueuedRevocation::new(peer.clone(), now))? {
                    revocations_queued += 1;
                }
            }
            crate::services::key_log::log_reset(tx, record.handle(&settings.domain), user, now)?;
            tx.clear_keys(user, now)?;
            let counts = json!({
                "relationships": peers.len(),
                "inboxMessages": inbox_messages_erased,
                "revocationsQueued": revocations_queued,
            });
            audit(tx, user, now, "identity_reset", counts)?;
            Ok(ResetReport {
                revocations_queued,
                relationships_erased: peers.len() as u64,
                inbox_messages_erased,
                identity: identity_view(&settings, tx, user)?,
            })
        })
        .wait()
    }
}
