//! Remote signing keys for the inbox (PROTOCOL.md section 6): a per-handle
//! cache with one refetch on a failed signature (at most every 30 s), a
//! 60-second memory of failed lookups, and bounded lookups in flight. The
//! rules live here once; a [`KeyFetcher`] adapter only does the HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::envelope::{Envelope, VerifiedEnvelope};
use crate::handle::Handle;
use crate::keys::SigningKey;
use crate::ports::{Clock, KeyFetchFailure, KeyFetcher};
use crate::time::UnixTime;

const REFETCH_INTERVAL_SECS: i64 = 30;
const FAILURE_MEMORY_SECS: i64 = 60;
/// Past this many remembered handles, stale entries are dropped first.
const MAX_ENTRIES: usize = 100_000;

/// Why a remote envelope could not be verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheckError {
    /// 502 `sender_keys_unavailable`.
    Unavailable,
    /// 401 `invalid_signature`.
    InvalidSignature,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    Fetched,
    NotFound,
    Failed,
    /// Over the in-flight bound: refused without a lookup.
    Busy,
}

impl FetchOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fetched => "fetched",
            Self::NotFound => "not_found",
            Self::Failed => "failed",
            Self::Busy => "busy",
        }
    }
}

/// Counts outcomes of key lookups (the `fedid_key_fetches_total` series).
pub trait KeyFetchObserver: Send + Sync {
    fn key_fetch(&self, outcome: FetchOutcome);
}

#[derive(Default)]
struct Entry {
    key: Option<(SigningKey, UnixTime)>,
    failed_at: Option<UnixTime>,
    refetched_at: Option<UnixTime>,
}

#[derive(Default)]
struct InFlight {
    total: usize,
    per_domain: HashMap<String, usize>,
}

pub struct KeyDirectory {
    fetcher: Arc<dyn KeyFetcher>,
    clock: Arc<dyn Clock>,
    ttl_secs: i64,
    max_in_flight: usize,
    max_per_domain: usize,
    entries: Mutex<HashMap<Handle, Entry>>,
    refetching: Mutex<HashMap<Handle, Arc<Mutex<()>>>>,
    in_flight: Mutex<InFlight>,
    observer: Option<Arc<dyn KeyFetchObserver>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves only a cache behind: keep going.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Slot<'a> {
    directory: &'a KeyDirectory,
    domain: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.directory.in_flight);
        in_flight.total = in_flight.total.saturating_sub(1);
        if let Some(n) = in_flight.per_domain.get_mut(&self.domain) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                in_flight.per_domain.remove(&self.domain);
            }
        }
    }
}

impl KeyDirectory {
    pub fn new(
        fetcher: Arc<dyn KeyFetcher>,
        clock: Arc<dyn Clock>,
        ttl_secs: i64,
        max_in_flight: usize,
        max_per_domain: usize,
    ) -> Self {
        Self {
            fetcher,
            clock,
            ttl_secs,
            max_in_flight,
            max_per_domain,
            entries: Mutex::new(HashMap::new()),
            refetching: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(InFlight::default()),
            observer: None,
        }
    }

    pub fn with_observer(mut self, observer: Arc<dyn KeyFetchObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Verifies a remote envelope against its sender's current key.
    pub fn verify(&self, envelope: Envelope) -> Result<VerifiedEnvelope, KeyCheckError> {
        let sender = envelope.from().clone();
        let now = self.clock.now();
        let (key, fresh) = match self.cached_key(&sender, now)? {
            Some(key) => (key, false),
            None => (self.fetch(&sender, false, now)?, true),
        };
        match envelope.verify(&key) {
            Ok(verified) => Ok(verified),
            Err(envelope) => self.verify_again(*envelope, key, fresh),
        }
    }

    /// The sender's key if the cache holds a live one: what the inbox tries
    /// before anything that needs the store or the network.
    pub fn cached(&self, handle: &Handle) -> Option<SigningKey> {
        self.cached_key(handle, self.clock.now()).ok().flatten()
    }

    /// After `envelope` failed against the cached key `failed`: the rest of
    /// [`Self::verify`] (a key rotated meanwhile, or one refetch).
    pub fn verify_after_cached_failure(
        &self,
        envelope: Envelope,
        failed: SigningKey,
    ) -> Result<VerifiedEnvelope, KeyCheckError> {
        self.verify_again(envelope, failed, false)
    }

    fn verify_again(
        &self,
        mut envelope: Envelope,
        failed: SigningKey,
        fresh: bool,
    ) -> Result<VerifiedEnvelope, KeyCheckError> {
        let sender = envelope.from().clone();
        let now = self.clock.now();
        // One refetch per handle at a time. A concurrent request may have
        // refetched meanwhile (the REVOKEs of one flush arrive together):
        // after waiting for it, try what the cache holds now before
        // spending this handle's refetch.
        let turn = self.refetch_turn(&sender);
        let _turn = lock(&turn);
        if let Ok(Some(current)) = self.cached_key(&sender, now) {
            if current != failed {
                envelope = match envelope.verify(&current) {
                    Ok(verified) => return Ok(verified),
                    Err(envelope) => *envelope,
                };
            }
        }
        if fresh || !self.may_refetch(&sender, now) {
            return Err(KeyCheckError::InvalidSignature);
        }
        let key = self.fetch(&sender, true, now)?;
        envelope.verify(&key).map_err(|_| KeyCheckError::InvalidSignature)
    }

    fn cached_key(&self, handle: &Handle, now: UnixTime) -> Result<Option<SigningKey>, KeyCheckError> {
        let entries = lock(&self.entries);
        let Some(entry) = entries.get(handle) else {
            return Ok(None);
        };
        if let Some((key, fetched_at)) = entry.key {
            if now < fetched_at.plus_secs(self.ttl_secs) {
                return Ok(Some(key));
            }
        }
        match entry.failed_at {
            Some(at) if now < at.plus_secs(FAILURE_MEMORY_SECS) => Err(KeyCheckError::Unavailable),
            _ => Ok(None),
        }
    }

    fn refetch_turn(&self, handle: &Handle) -> Arc<Mutex<()>> {
        let mut turns = lock(&self.refetching);
        if turns.len() >= MAX_ENTRIES {
            // Only idle turns (held by the map alone) may go.
            turns.retain(|_, turn| Arc::strong_count(turn) > 1);
        }
        Arc::clone(turns.entry(handle.clone()).or_default())
    }

    /// The 30-second rule: records the refetch when allowed.
    fn may_refetch(&self, handle: &Handle, now: UnixTime) -> bool {
        let mut entries = lock(&self.entries);
        let entry = entries.entry(handle.clone()).or_default();
        match entry.refetched_at {
            Some(at) if now < at.plus_secs(REFETCH_INTERVAL_SECS) => false,
            _ => {
                entry.refetched_at = Some(now);
                true
            }
        }
    }

    fn fetch(&self, handle: &Handle, refetch: bool, now: UnixTime) -> Result<SigningKey, KeyCheckError> {
        let Some(_slot) = self.take_slot(handle.domain_str()) else {
            self.observe(FetchOutcome::Busy);
            return Err(KeyCheckError::Unavailable);
        };
        let result = self.fetcher.fetch_keys(handle, refetch);
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_ENTRIES {
            let (ttl, memory) = (self.ttl_secs, FAILURE_MEMORY_SECS);
            entries.retain(|_, e| {
                e.key.is_some_and(|(_, at)| now < at.plus_secs(ttl))
                    || e.failed_at.is_some_and(|at| now < at.plus_secs(memory))
            });
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        let entry = entries.entry(handle.clone()).or_default();
        match result {
            Ok(keys) if keys.handle == *handle => {
                self.observe(FetchOutcome::Fetched);
                entry.key = Some((keys.signing_key, now));
                entry.failed_at = None;
                Ok(keys.signing_key)
            }
            other => {
                let outcome = match other {
                    Err(KeyFetchFailure::NotFound) => FetchOutcome::NotFound,
                    _ => FetchOutcome::Failed,
                };
                self.observe(outcome);
                entry.key = None;
                entry.failed_at = Some(now);
                Err(KeyCheckError::Unavailable)
            }
        }
    }

    fn take_slot(&self, domain: &str) -> Option<Slot<'_>> {
        let mut in_flight = lock(&self.in_flight);
        let per_domain = in_flight.per_domain.get(domain).copied().unwrap_or(0);
        if in_flight.total >= self.max_in_flight || per_domain >= self.max_per_domain {
            return None;
        }
        in_flight.total += 1;
        *in_flight.per_domain.entry(domain.to_owned()).or_default() += 1;
        Some(Slot {
            directory: self,
            domain: domain.to_owned(),
        })
    }

    fn observe(&self, outcome: FetchOutcome) {
        if let Some(observer) = &self.observer {
            observer.key_fetch(outcome);
        }
    }
}
