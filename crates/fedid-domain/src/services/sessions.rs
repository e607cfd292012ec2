//! Users and session tokens (OPERATIONS.md): 32 random bytes, base64url;
//! the store keeps only their SHA-256.

use crate::base64url;
use crate::model::UserId;
use crate::ports::{self, Lane, RandomUnavailable, StoreError};
use crate::services::Fedid;

/// Why a token could not be issued or revoked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No such user.
    #[error("unknown user")]
    UnknownUser,
    /// Not 1 to 3650 days.
    #[error("a token lifetime is 1 to 3650 days")]
    InvalidTtl,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No randomness for a token.
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
}

impl SessionError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownUser => "unknown_user",
            Self::InvalidTtl => "invalid_request",
            Self::Store(_) | Self::Random(_) => "internal_error",
        }
    }
}

/// A bearer token as handed to its user once; `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    /// The token itself, to hand to its user once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

impl Fedid {
    /// Creates a user with a first session token.
    pub fn create_user(&self) -> Result<(UserId, SessionToken), SessionError> {
        let (token, hash) = self.new_token()?;
        let now = self.clock.now();
        let expires = now.plus_secs(i64::from(self.settings.token_ttl_days) * 86_400);
        let user = ports::write(self.store.as_ref(), None, move |tx| {
            let user = tx.create_user(now)?;
            tx.insert_session(user, &hash, expires)?;
            Ok::<_, SessionError>(user)
        })
        .wait()?;
        Ok((user, token))
    }

    /// A new token for an existing user; `ttl_days` defaults to the setting.
    pub fn issue_token(&self, user: UserId, ttl_days: Option<u32>) -> Result<SessionToken, SessionError> {
        let days = ttl_days.unwrap_or(self.settings.token_ttl_days);
        if !(1..=3650).contains(&days) {
            return Err(SessionError::InvalidTtl);
        }
        let (token, hash) = self.new_token()?;
        let expires = self.clock.now().plus_secs(i64::from(days) * 86_400);
        ports::write(self.store.as_ref(), Some(Lane::of_user(user)), move |tx| {
            tx.identity(user)?.ok_or(SessionError::UnknownUser)?;
            tx.insert_session(user, &hash, expires)?;
            Ok::<_, SessionError>(())
        })
        .wait()?;
        Ok(token)
    }

    /// Revokes all of a user's tokens; returns how many were live.
    pub fn revoke_tokens(&self, user: UserId) -> Result<u64, SessionError> {
        let now = self.clock.now();
        ports::write(self.store.as_ref(), Some(Lane::of_user(user)), move |tx| {
            tx.identity(user)?.ok_or(SessionError::UnknownUser)?;
            Ok(tx.revoke_sessions(user, now)?)
        })
        .wait()
    }

    /// The user of a live token; `None` for anything else, alike.
    pub fn authenticate(&self, token: &str) -> Result<Option<UserId>, StoreError> {
        let Some(hash) = well_formed_token_hash(token) else {
            return Ok(None);
        };
        let now = self.clock.now();
        ports::read(self.store.as_ref(), |tx| tx.session_user(&hash, now))
    }

    fn new_token(&self) -> Result<(SessionToken, [u8; 32]), RandomUnavailable> {
        let mut bytes = [0u8; 32];
        self.random.fill(&mut bytes)?;
        let token = base64url::encode(&bytes);
        let hash = token_hash(&token);
        Ok((SessionToken(token), hash))
    }
}

/// The stored hash of a token of the issued shape; `None` for any other
/// text, which cannot be a live token.
pub(crate) fn well_formed_token_hash(token: &str) -> Option<[u8; 32]> {
    (token.len() == 43).then(|| token_hash(token))
}
