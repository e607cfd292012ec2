//! Section 12 on the lookup path: the pin check of each discovery answer
//! (with the log pages it needs, within a budget of entries for the whole
//! server), the no-cache recheck before a conflict, conflicts recorded for
//! the operator, the check of a pinned handle without keys, and the
//! [`PinMove`] a cached key hands the inbox.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{lock, FetchOutcome, KeyCheckError, KeyDirectory, Lookup, SenderKey};
use crate::handle::Handle;
use crate::keylog::{self, EntryClass, KeyConflict, LogAnswer, PeerPin, PinVerdict, MAX_CHECKED_ENTRIES};
use crate::ports::{self, KeyFetchFailure, PublishedKeys};
use crate::time::UnixTime;

/// A whole key-log check, every page included (section 12).
const LOG_CHECK_TIME: Duration = Duration::from_secs(30);
/// Remote log entries fetched and checked per second, in all: a first
/// contact checks a whole log (up to 10,000 entries, about 90 µs each
/// with proofs), and strangers choose when first contacts happen
/// (docs/security.md).
pub(super) const LOG_ENTRIES_PER_SEC: f64 = 2_000.0;
/// Entries that may be checked in one burst: one whole log.
pub(super) const LOG_ENTRIES_BURST: f64 = MAX_CHECKED_ENTRIES as f64;

const PIN_PENDING: u8 = 0;
const PIN_WRITTEN: u8 = 1;
const PIN_LOST: u8 = 2;

/// The pin behind a cached key: the position it moves from and the pin
/// it moves to, written by the inbox with the first envelope from the
/// handle that it accepts and stores.
#[derive(Debug)]
pub struct PinMove {
    from: Option<(u64, String)>,
    to: PeerPin,
    state: AtomicU8,
}

impl PinMove {
    pub(super) fn new(from: Option<(u64, String)>, to: PeerPin, pending: bool) -> Self {
        Self {
            from,
            to,
            state: AtomicU8::new(if pending { PIN_PENDING } else { PIN_WRITTEN }),
        }
    }

    /// The stored pin's seq and head it replaces (`None`: first contact).
    pub fn from(&self) -> Option<&(u64, String)> {
        self.from.as_ref()
    }

    /// The pin.
    pub fn to(&self) -> &PeerPin {
        &self.to
    }

    /// Whether the store still has to get it.
    pub fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) == PIN_PENDING
    }

    /// The store holds it now.
    pub fn written(&self) {
        let _ = self
            .state
            .compare_exchange(PIN_PENDING, PIN_WRITTEN, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Another instance moved the stored pin elsewhere: the cached key is
    /// dropped and the next envelope checks again against the new pin.
    pub fn lost(&self) {
        self.state.store(PIN_LOST, Ordering::Release);
    }

    pub(super) fn is_lost(&self) -> bool {
        self.state.load(Ordering::Acquire) == PIN_LOST
    }
}

impl KeyDirectory {
    /// Discovery, then the pin check of section 12 against `pin`; a
    /// conflict is checked once more without caches before it is
    /// recorded.
    pub(super) fn look_up(&self, handle: &Handle, pin: Option<&PeerPin>, refetch: bool, now: UnixTime) -> Lookup {
        let mut fresh = refetch;
        loop {
            let keys = match self.fetcher.fetch_keys(handle, fresh) {
                Ok(keys) if keys.handle == *handle => keys,
                Err(KeyFetchFailure::NotFound) => match pin {
                    Some(pin) => return self.check_unpublished(handle, pin, now),
                    None => return Lookup::refused(FetchOutcome::NotFound),
                },
                Err(KeyFetchFailure::Unreachable(_)) => {
                    return Lookup::Refused {
                        outcome: FetchOutcome::Failed,
                        error: KeyCheckError::Unavailable,
                        unreachable: true,
                    }
                }
                _ => return Lookup::refused(FetchOutcome::Failed),
            };
            let verdict = match self.pin_verdict(handle, pin, &keys, fresh, now) {
                Ok(verdict) => verdict,
                Err(outcome) => return Lookup::refused(outcome),
            };
            let key = keys.signing_key;
            return match verdict {
                PinVerdict::Unlogged => Lookup::Found(SenderKey { key, pin: None }),
                PinVerdict::Ok { change, pin: moved } => {
                    let pin_move = match (pin, change) {
                        // Nothing changed: the stored pin stands.
                        (Some(stored), None) => PinMove::new(Some(stored.position()), stored.clone(), false),
                        (stored, change) => PinMove::new(
                            stored.map(PeerPin::position),
                            PeerPin {
                                handle: handle.clone(),
                                pin: *moved,
                                change: change.unwrap_or(EntryClass::First),
                                changed_at: now,
                            },
                            true,
                        ),
                    };
                    Lookup::Found(SenderKey {
                        key,
                        pin: Some(Arc::new(pin_move)),
                    })
                }
                PinVerdict::Conflict(_) if !fresh => {
                    fresh = true;
                    continue;
                }
                PinVerdict::Conflict(reason) => {
                    if let Some(pin) = pin {
                        self.record_conflict(pin, keys.key_log, reason, now);
                    }
                    Lookup::refused(FetchOutcome::Conflict)
                }
            };
        }
    }

    /// The pin check of a discovery answer, with the log entries it needs
    /// fetched; why not, when they could not be.
    fn pin_verdict(
        &self,
        handle: &Handle,
        pin: Option<&PeerPin>,
        keys: &PublishedKeys,
        refetch: bool,
        now: UnixTime,
    ) -> Result<PinVerdict, FetchOutcome> {
        let answer = LogAnswer {
            signing: keys.signing_key,
            encryption: keys.encryption_key,
            log: keys.key_log.clone(),
        };
        let after = pin.map_or(0, |p| p.pin.entry.seq());
        let entries = match &answer.log {
            Some((seq, _)) if seq.saturating_sub(after) > MAX_CHECKED_ENTRIES as u64 => {
                return Ok(PinVerdict::Conflict(format!(
                    "{} entries to check, over {MAX_CHECKED_ENTRIES}",
                    seq.saturating_sub(after)
                )))
            }
            Some((seq, _)) if *seq > after => {
                if !self.spend_log_budget(seq - after) {
                    return Err(FetchOutcome::Busy);
                }
                self.fetch_entries(handle, after, *seq, refetch)?
            }
            _ => Vec::new(),
        };
        Ok(keylog::check_pin(
            handle,
            pin.map(|p| &p.pin),
            &entries,
            &answer,
            now,
            self.skew_secs,
        ))
    }

    /// The entries of `handle`'s log after `after`, page by page, up to
    /// `up_to` or the log's end: at most [`MAX_CHECKED_ENTRIES`] and 30 s
    /// in all; `Failed` when a page could not be had in time. The caller
    /// has paid for the entries from the budget, all at once, so that
    /// checks running together never leave each other half done.
    fn fetch_entries(
        &self,
        handle: &Handle,
        after: u64,
        up_to: u64,
        refetch: bool,
    ) -> Result<Vec<Value>, FetchOutcome> {
        self.fetch_entries_from(handle, Vec::new(), after, up_to, refetch)
    }

    /// [`Self::fetch_entries`] when the page after `after` is in hand
    /// already (`first`, possibly empty: then it is fetched).
    fn fetch_entries_from(
        &self,
        handle: &Handle,
        first: Vec<Value>,
        after: u64,
        up_to: u64,
        refetch: bool,
    ) -> Result<Vec<Value>, FetchOutcome> {
        let deadline = Instant::now() + LOG_CHECK_TIME;
        let mut entries = Vec::new();
        let mut page = Some(first).filter(|first| !first.is_empty());
        let mut next = after;
        while next < up_to && entries.len() <= MAX_CHECKED_ENTRIES {
            if Instant::now() >= deadline {
                return Err(FetchOutcome::Failed);
            }
            let fetched = match page.take() {
                Some(fetched) => fetched,
                None => {
                    self.fetcher
                        .fetch_key_log(handle, next, refetch)
                        .map_err(|_| FetchOutcome::Failed)?
                        .entries
                }
            };
            let last = fetched.last().and_then(|e| e.get("seq")).and_then(Value::as_u64);
            entries.extend(fetched);
            match last {
                Some(last) if last > next => next = last,
                // A page that does not go forward ends the fetch: the
                // check refuses what is missing.
                _ => break,
            }
        }
        Ok(entries)
    }

    /// Takes `entries` from the budget of log entries if it holds them all.
    fn spend_log_budget(&self, entries: u64) -> bool {
        let mut budget = lock(&self.log_budget);
        let now = Instant::now();
        let refilled = budget.0 + now.duration_since(budget.1).as_secs_f64() * self.log_entries_per_sec;
        *budget = (refilled.min(self.log_entries_burst), now);
        if budget.0 < entries as f64 {
            return false;
        }
        budget.0 -= entries as f64;
        true
    }

    /// A pinned handle whose discovery answers `404`: its log alone, twice
    /// before a conflict; the pin moves when the log ends in a `reset`
    /// entry. The keys stay not obtainable either way.
    fn check_unpublished(&self, handle: &Handle, pin: &PeerPin, now: UnixTime) -> Lookup {
        let mut reason = String::new();
        let after = pin.pin.entry.seq();
        for refetch in [false, true] {
            // The first page says how long the log is, and so what to pay.
            let Ok(first) = self.fetcher.fetch_key_log(handle, after, refetch) else {
                return Lookup::refused(FetchOutcome::NotFound);
            };
            let claimed = first.seq.saturating_sub(after);
            let checked = if claimed > MAX_CHECKED_ENTRIES as u64 {
                Err(keylog::KeyLogError(format!(
                    "{claimed} entries to check, over {MAX_CHECKED_ENTRIES}"
                )))
            } else if !self.spend_log_budget(claimed) {
                return Lookup::refused(FetchOutcome::Busy);
            } else {
                match self.fetch_entries_from(handle, first.entries, after, first.seq, refetch) {
                    Ok(entries) => keylog::check_log_alone(handle, &pin.pin, &entries, now, self.skew_secs),
                    Err(_) => return Lookup::refused(FetchOutcome::NotFound),
                }
            };
            match checked {
                Ok(Some(moved)) => {
                    let to = PeerPin {
                        handle: handle.clone(),
                        pin: moved,
                        change: EntryClass::Reset,
                        changed_at: now,
                    };
                    let from = pin.position();
                    // A lost race means another instance moved it: fine.
                    let _ = ports::write(self.store.as_ref(), None, move |tx| tx.move_key_pin(&to, Some(&from))).wait();
                    return Lookup::refused(FetchOutcome::NotFound);
                }
                Ok(None) => return Lookup::refused(FetchOutcome::NotFound),
                Err(refused) => reason = refused.0,
            }
        }
        self.record_conflict(pin, None, reason, now);
        Lookup::refused(FetchOutcome::Conflict)
    }

    /// Records a conflict for the operator. A write that fails leaves the
    /// answer a conflict all the same.
    fn record_conflict(&self, pin: &PeerPin, offered: Option<(u64, String)>, reason: String, now: UnixTime) {
        let (pinned_seq, pinned_head) = pin.position();
        let conflict = KeyConflict {
            handle: pin.handle.clone(),
            at: now,
            pinned_seq,
            pinned_head,
            offered_seq: offered.as_ref().map(|(seq, _)| *seq),
            offered_head: offered.map(|(_, head)| head),
            reason,
        };
        let _ = ports::write(self.store.as_ref(), None, move |tx| tx.record_key_conflict(&conflict)).wait();
    }
}
