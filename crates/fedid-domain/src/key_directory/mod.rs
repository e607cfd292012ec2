//! Remote signing keys for the inbox (PROTOCOL.md section 6): a per-handle
//! cache with one refetch on a failed signature (at most every 30 s), a
//! 60-second memory of failed lookups (per handle, and per domain when the
//! domain did not answer), and bounded lookups: in flight (total and per
//! domain), started per domain per second, and requests waiting for another
//! request's refetch (per handle, per domain and in all, each for at most
//! the fetch timeout). Every bound answers `Unavailable` at once, so that no
//! remote party can hold the inbox's threads. The rules live here once; a
//! [`KeyFetcher`] adapter only does the HTTP.
//!
//! Every lookup also runs the pin check of section 12 against the pin the
//! store keeps for the handle: the pin check happens on fetch, not on every
//! envelope. A cached key carries its [`PinMove`], which the inbox writes
//! with the first envelope it accepts and stores; a conflict is recorded
//! (for a pinned handle) and answered `Conflict` until the operator unpins.

mod pins;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use pins::PinMove;
use pins::{LOG_ENTRIES_BURST, LOG_ENTRIES_PER_SEC};

use crate::envelope::{Envelope, VerifiedEnvelope};
use crate::handle::Handle;
use crate::keylog;
use crate::keys::SigningKey;
use crate::ports::{self, Clock, KeyFetcher, Store, StoreError};
use crate::settings::Settings;
use crate::time::UnixTime;

const REFETCH_INTERVAL_SECS: i64 = 30;
const FAILURE_MEMORY_SECS: i64 = 60;
/// Past this many remembered handles, stale entries are dropped first.
const MAX_ENTRIES: usize = 100_000;
/// Requests that may wait for one handle's refetch: the REVOKEs of one
/// flush (`delivery.concurrency`, 16 by default) arrive together.
const MAX_WAITERS_PER_HANDLE: usize = 16;
/// Requests that may wait for refetches of one domain's handles.
const MAX_WAITERS_PER_DOMAIN: usize = 32;
/// Requests that may wait for refetches, in all: with the lookups in
/// flight, what bounds the threads that peers can hold.
pub const MAX_REFETCH_WAITERS: usize = 64;

/// Why a remote envelope could not be verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheckError {
    /// 502 `sender_keys_unavailable`.
    Unavailable,
    /// 401 `invalid_signature`.
    InvalidSignature,
    /// 502 `key_log_conflict`: the handle's key log contradicts its pin
    /// or the discovery answer (section 12).
    Conflict,
}

/// A sender's key as the directory holds it, with its pin (none for a
/// peer that publishes no key log).
#[derive(Debug, Clone)]
pub struct SenderKey {
    /// The current signing key.
    pub key: SigningKey,
    /// The pin checked when the key was fetched.
    pub pin: Option<Arc<PinMove>>,
}

/// An envelope whose signature verified, and the pin its sender's key
/// was checked against.
pub struct Verified {
    /// The envelope.
    pub envelope: VerifiedEnvelope,
    /// The pin, to be written if still pending.
    pub pin: Option<Arc<PinMove>>,
}

/// What one key lookup came to (the `fedid_key_fetches_total` labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The peer published keys for the handle.
    Fetched,
    /// The peer answered that it has no such user or no keys.
    NotFound,
    /// No usable answer: network, status, document.
    Failed,
    /// Over a bound (in flight, per-domain rate, waiters): refused
    /// without a lookup.
    Busy,
    /// The domain failed a lookup in the last 60 s: refused without one.
    DomainFailing,
    /// The key log contradicts the pin or the answer (section 12).
    Conflict,
}

impl FetchOutcome {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fetched => "fetched",
            Self::NotFound => "not_found",
            Self::Failed => "failed",
            Self::Busy => "busy",
            Self::DomainFailing => "domain_failing",
            Self::Conflict => "conflict",
        }
    }
}

/// Counts outcomes of key lookups (the `fedid_key_fetches_total` series).
pub trait KeyFetchObserver: Send + Sync {
    /// Called once per lookup attempt, or refusal without one.
    fn key_fetch(&self, outcome: FetchOutcome);
}

#[derive(Default)]
struct Entry {
    key: Option<(SenderKey, UnixTime)>,
    failed_at: Option<UnixTime>,
    refetched_at: Option<UnixTime>,
}

/// What one lookup came to.
enum Lookup {
    Found(SenderKey),
    Refused {
        outcome: FetchOutcome,
        error: KeyCheckError,
        /// The domain did not answer at all.
        unreachable: bool,
    },
}

impl Lookup {
    fn refused(outcome: FetchOutcome) -> Self {
        Self::Refused {
            outcome,
            error: if outcome == FetchOutcome::Conflict {
                KeyCheckError::Conflict
            } else {
                KeyCheckError::Unavailable
            },
            unreachable: false,
        }
    }
}

#[derive(Default)]
struct Lookups {
    in_flight: usize,
    in_flight_per_domain: HashMap<String, usize>,
    /// Per domain: the current one-second window (seconds since the
    /// directory was made, real time: a bound on work, not a protocol
    /// rule, so it does not follow the `Clock`) and the lookups started
    /// in it.
    started_per_domain: HashMap<String, (u64, u32)>,
    /// Domains whose last lookup failed (no answer), and when.
    failed_domains: HashMap<String, UnixTime>,
}

/// One handle's refetch: whether one is in progress, and who waits for it.
#[derive(Default)]
struct HandleTurn {
    busy: bool,
    waiters: usize,
}

#[derive(Default)]
struct Refetches {
    turns: HashMap<Handle, HandleTurn>,
    waiters_per_domain: HashMap<String, usize>,
    waiters: usize,
}

impl Refetches {
    fn busy(&self, handle: &Handle) -> bool {
        self.turns.get(handle).is_some_and(|t| t.busy)
    }

    /// Whether one more request may wait for `handle`'s refetch.
    fn may_wait(&self, handle: &Handle, domain: &str) -> bool {
        self.turns.get(handle).map_or(0, |t| t.waiters) < MAX_WAITERS_PER_HANDLE
            && self.waiters_per_domain.get(domain).copied().unwrap_or(0) < MAX_WAITERS_PER_DOMAIN
            && self.waiters < MAX_REFETCH_WAITERS
    }

    /// Counts a request that starts (`true`) or stops waiting.
    fn waiter(&mut self, handle: &Handle, domain: &str, starts: bool) {
        if starts {
            self.turns.entry(handle.clone()).or_default().waiters += 1;
            *self.waiters_per_domain.entry(domain.to_owned()).or_default() += 1;
            self.waiters += 1;
        } else {
            if let Some(turn) = self.turns.get_mut(handle) {
                turn.waiters = turn.waiters.saturating_sub(1);
            }
            decrement(&mut self.waiters_per_domain, &domain.to_owned());
            self.waiters = self.waiters.saturating_sub(1);
        }
    }
}

/// Remote signing keys for the inbox, with the bounds of the module's documentation.
pub struct KeyDirectory {
    fetcher: Arc<dyn KeyFetcher>,
    /// Where pins and conflicts are kept.
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ttl_secs: i64,
    skew_secs: i64,
    max_in_flight: usize,
    max_per_domain: usize,
    lookups_per_domain_per_sec: u32,
    refetch_wait: Duration,
    created: Instant,
    entries: Mutex<HashMap<Handle, Entry>>,
    refetches: Mutex<Refetches>,
    refetch_done: Condvar,
    lookups: Mutex<Lookups>,
    /// Log entries that may still be checked now, and when that was
    /// counted (a token bucket in real time: a bound on work).
    log_budget: Mutex<(f64, Instant)>,
    /// The bucket's refill per second and size.
    log_entries_per_sec: f64,
    log_entries_burst: f64,
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
        let mut lookups = lock(&self.directory.lookups);
        lookups.in_flight = lookups.in_flight.saturating_sub(1);
        decrement(&mut lookups.in_flight_per_domain, &self.domain);
    }
}

/// Lowers a count kept per key, forgetting the key at zero so that maps
/// hold only what is in use.
fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// The right to refetch one handle's key; dropping it wakes the waiters.
struct Turn<'a> {
    directory: &'a KeyDirectory,
    handle: Handle,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut refetches = lock(&self.directory.refetches);
        if let Some(turn) = refetches.turns.get_mut(&self.handle) {
            turn.busy = false;
            if turn.waiters == 0 {
                refetches.turns.remove(&self.handle);
            }
        }
        drop(refetches);
        self.directory.refetch_done.notify_all();
    }
}

impl KeyDirectory {
    /// A directory with the bounds of `settings` (PROTOCOL.md section 6),
    /// keeping pins in `store` (section 12).
    pub fn new(
        fetcher: Arc<dyn KeyFetcher>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: &Settings,
    ) -> Self {
        Self {
            fetcher,
            store,
            clock,
            ttl_secs: settings.key_cache_ttl_secs,
            skew_secs: settings.max_clock_skew_secs,
            max_in_flight: settings.max_key_fetches,
            max_per_domain: settings.max_key_fetches_per_domain,
            lookups_per_domain_per_sec: settings.key_lookups_per_domain_per_sec,
            refetch_wait: Duration::from_millis(settings.key_refetch_wait_ms),
            created: Instant::now(),
            entries: Mutex::new(HashMap::new()),
            refetches: Mutex::new(Refetches::default()),
            refetch_done: Condvar::new(),
            lookups: Mutex::new(Lookups::default()),
            log_budget: Mutex::new((LOG_ENTRIES_BURST, Instant::now())),
            log_entries_per_sec: LOG_ENTRIES_PER_SEC,
            log_entries_burst: LOG_ENTRIES_BURST,
            observer: None,
        }
    }

    /// Remote log entries fetched and checked per second in all, and at
    /// once (default 2,000 and 10,000: one whole log at once).
    pub fn with_log_entry_budget(mut self, per_sec: u32, burst: u32) -> Self {
        self.log_entries_per_sec = f64::from(per_sec);
        self.log_entries_burst = f64::from(burst);
        self.log_budget = Mutex::new((self.log_entries_burst, Instant::now()));
        self
    }

    /// Reports every lookup to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn KeyFetchObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Verifies a remote envelope against its sender's current key (or,
    /// right after a proven rotation, the previous one).
    pub fn verify(&self, envelope: Envelope) -> Result<Verified, KeyCheckError> {
        let sender = envelope.from().clone();
        let now = self.clock.now();
        let (key, fresh) = match self.cached_key(&sender, now)? {
            Some(key) => (key, false),
            None => (self.fetch(&sender, false, now)?, true),
        };
        match envelope.verify(&key.key) {
            Ok(envelope) => Ok(Verified { envelope, pin: key.pin }),
            Err(envelope) => self.verify_again(*envelope, key, fresh),
        }
    }

    /// The sender's key if the cache holds a live one: what the inbox tries
    /// before anything that needs the store or the network.
    pub fn cached(&self, handle: &Handle) -> Option<SenderKey> {
        self.cached_key(handle, self.clock.now()).ok().flatten()
    }

    /// After `envelope` failed against the cached key `failed`: the rest of
    /// [`Self::verify`] (the rotation grace, a key rotated meanwhile, or
    /// one refetch).
    pub fn verify_after_cached_failure(
        &self,
        envelope: Envelope,
        failed: SenderKey,
    ) -> Result<Verified, KeyCheckError> {
        self.verify_again(envelope, failed, false)
    }

    fn verify_again(&self, envelope: Envelope, failed: SenderKey, fresh: bool) -> Result<Verified, KeyCheckError> {
        let sender = envelope.from().clone();
        let now = self.clock.now();
        let mut envelope = match self.within_grace(envelope, &failed, now) {
            Ok(verified) => return Ok(verified),
            Err(envelope) => *envelope,
        };
        // One refetch per handle at a time. A concurrent request may have
        // refetched meanwhile (the REVOKEs of one flush arrive together):
        // after waiting for it, try what the cache holds now before
        // spending this handle's refetch. The wait is bounded in count and
        // time, so a sender whose key server hangs holds few threads.
        let _turn = self.refetch_turn(&sender).ok_or_else(|| {
            self.observe(FetchOutcome::Busy);
            KeyCheckError::Unavailable
        })?;
        if let Ok(Some(current)) = self.cached_key(&sender, now) {
            if current.key != failed.key {
                envelope = match envelope.verify(&current.key) {
                    Ok(envelope) => {
                        return Ok(Verified {
                            envelope,
                            pin: current.pin,
                        })
                    }
                    Err(envelope) => *envelope,
                };
            }
        }
        if fresh || !self.may_refetch(&sender, now) {
            return Err(KeyCheckError::InvalidSignature);
        }
        let key = self.fetch(&sender, true, now)?;
        match envelope.verify(&key.key) {
            Ok(envelope) => Ok(Verified { envelope, pin: key.pin }),
            Err(envelope) => self
                .within_grace(*envelope, &key, now)
                .map_err(|_| KeyCheckError::InvalidSignature),
        }
    }

    /// The rotation grace of section 12: the pinned previous key, right
    /// after a proven rotation.
    fn within_grace(&self, envelope: Envelope, current: &SenderKey, now: UnixTime) -> Result<Verified, Box<Envelope>> {
        let previous = current.pin.as_ref().and_then(|pin| {
            keylog::grace_key(&pin.to().pin, envelope.timestamp().instant(), now, self.skew_secs).copied()
        });
        match previous {
            Some(key) => envelope.verify(&key).map(|envelope| Verified {
                envelope,
                pin: current.pin.clone(),
            }),
            None => Err(Box::new(envelope)),
        }
    }

    fn cached_key(&self, handle: &Handle, now: UnixTime) -> Result<Option<SenderKey>, KeyCheckError> {
        let entries = lock(&self.entries);
        let Some(entry) = entries.get(handle) else {
            return Ok(None);
        };
        if let Some((key, fetched_at)) = &entry.key {
            let pin_lost = key.pin.as_ref().is_some_and(|pin| pin.is_lost());
            if now < fetched_at.plus_secs(self.ttl_secs) && !pin_lost {
                return Ok(Some(key.clone()));
            }
        }
        match entry.failed_at {
            Some(at) if now < at.plus_secs(FAILURE_MEMORY_SECS) => Err(KeyCheckError::Unavailable),
            _ => Ok(None),
        }
    }

    /// Takes `handle`'s refetch turn, waiting for a refetch in progress if
    /// the waiter bounds allow, for at most the refetch wait.
    fn refetch_turn(&self, handle: &Handle) -> Option<Turn<'_>> {
        let deadline = Instant::now() + self.refetch_wait;
        let domain = handle.domain_str();
        let mut refetches = lock(&self.refetches);
        if let Some(turn) = self.take_turn(&mut refetches, handle) {
            return Some(turn);
        }
        if !refetches.may_wait(handle, domain) {
            return None;
        }
        refetches.waiter(handle, domain, true);
        loop {
            let now = Instant::now();
            if !refetches.busy(handle) || now >= deadline {
                refetches.waiter(handle, domain, false);
                // `None` when timed out behind a refetch that still runs.
                return self.take_turn(&mut refetches, handle);
            }
            refetches = self
                .refetch_done
                .wait_timeout(refetches, deadline - now)
                .map_or_else(|p| p.into_inner().0, |(guard, _)| guard);
        }
    }

    /// `handle`'s turn if no refetch of it is in progress.
    fn take_turn(&self, refetches: &mut Refetches, handle: &Handle) -> Option<Turn<'_>> {
        let turn = refetches.turns.entry(handle.clone()).or_default();
        if turn.busy {
            return None;
        }
        turn.busy = true;
        Some(Turn {
            directory: self,
            handle: handle.clone(),
        })
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

    fn fetch(&self, handle: &Handle, refetch: bool, now: UnixTime) -> Result<SenderKey, KeyCheckError> {
        // What the store keeps for the handle, read before any network: a
        // recorded conflict stands until the operator unpins, without a
        // lookup (and is not remembered here, so an unpin acts at once).
        let (pin, conflicted) = ports::read(self.store.as_ref(), |tx| {
            Ok::<_, StoreError>((tx.key_pin(handle)?, tx.key_conflict(handle)?.is_some()))
        })
        .map_err(|_| KeyCheckError::Unavailable)?;
        if conflicted {
            self.observe(FetchOutcome::Conflict);
            return Err(KeyCheckError::Conflict);
        }
        let _slot = self.take_slot(handle.domain_str(), now).map_err(|outcome| {
            self.observe(outcome);
            KeyCheckError::Unavailable
        })?;
        let lookup = self.look_up(handle, pin.as_ref(), refetch, now);
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_ENTRIES {
            let (ttl, memory) = (self.ttl_secs, FAILURE_MEMORY_SECS);
            entries.retain(|_, e| {
                e.key.as_ref().is_some_and(|(_, at)| now < at.plus_secs(ttl))
                    || e.failed_at.is_some_and(|at| now < at.plus_secs(memory))
            });
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        let entry = entries.entry(handle.clone()).or_default();
        match lookup {
            Lookup::Found(key) => {
                self.observe(FetchOutcome::Fetched);
                entry.key = Some((key.clone(), now));
                entry.failed_at = None;
                Ok(key)
            }
            Lookup::Refused {
                outcome,
                error,
                unreachable,
            } => {
                self.observe(outcome);
                entry.key = None;
                // A conflict is kept by the store, not here.
                entry.failed_at = (error != KeyCheckError::Conflict).then_some(now);
                drop(entries);
                if unreachable {
                    // The domain did not answer: its other handles would
                    // fail the same way. (An answer that is not keys says
                    // nothing of the domain's other users, and a stranger
                    // could provoke one at will.)
                    let mut lookups = lock(&self.lookups);
                    if lookups.failed_domains.len() >= MAX_ENTRIES {
                        lookups
                            .failed_domains
                            .retain(|_, at| now < at.plus_secs(FAILURE_MEMORY_SECS));
                    }
                    lookups.failed_domains.insert(handle.domain_str().to_owned(), now);
                }
                Err(error)
            }
        }
    }

    /// A lookup slot for `domain`, or why there is none: the domain failed
    /// within 60 s, too many lookups are in flight (total or for the
    /// domain), or the domain's lookups for this second are spent.
    fn take_slot(&self, domain: &str, now: UnixTime) -> Result<Slot<'_>, FetchOutcome> {
        let mut lookups = lock(&self.lookups);
        if let Some(at) = lookups.failed_domains.get(domain).copied() {
            if now < at.plus_secs(FAILURE_MEMORY_SECS) {
                return Err(FetchOutcome::DomainFailing);
            }
            lookups.failed_domains.remove(domain);
        }
        let per_domain = lookups.in_flight_per_domain.get(domain).copied().unwrap_or(0);
        if lookups.in_flight >= self.max_in_flight || per_domain >= self.max_per_domain {
            return Err(FetchOutcome::Busy);
        }
        let second = self.created.elapsed().as_secs();
        if lookups.started_per_domain.len() >= MAX_ENTRIES {
            lookups.started_per_domain.retain(|_, (s, _)| *s == second);
        }
        let started = lookups
            .started_per_domain
            .entry(domain.to_owned())
            .or_insert((second, 0));
        if started.0 != second {
            *started = (second, 0);
        }
        if started.1 >= self.lookups_per_domain_per_sec {
            return Err(FetchOutcome::Busy);
        }
        started.1 += 1;
        lookups.in_flight += 1;
        *lookups.in_flight_per_domain.entry(domain.to_owned()).or_default() += 1;
        Ok(Slot {
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
