//! Long-lived REVOKEs that the server delivers by itself (PROTOCOL.md
//! section 11): what a failed delivery schedules, and the deliverer's
//! rounds, which claim due rows like a flush does so that no row is ever
//! delivered twice at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use crate::envelope::Envelope;
use crate::handle::Domain;
use crate::model::{PeerDomainState, QueuedRevocation, UserId};
use crate::ports::{self, DeliveryFailure, Lane, StoreError};
use crate::services::identity::audit;
use crate::services::Fedid;
use crate::time::UnixTime;

/// A `401` may come from the peer's refetch limit (section 6): it is
/// retried this many times in all, at least [`UNAUTHORIZED_SPACING_SECS`]
/// apart.
const UNAUTHORIZED_ANSWERS: u32 = 3;
const UNAUTHORIZED_SPACING_SECS: i64 = 30;

/// A long-lived REVOKE a queued row keeps, to be retried by the server.
#[derive(Debug, Clone)]
pub(crate) struct LongLived {
    wire: String,
    expires_at: UnixTime,
}

impl LongLived {
    /// `envelope`'s wire form and `expires`, if it is a long-lived REVOKE.
    pub(crate) fn of(envelope: &Envelope) -> Option<Self> {
        Some(Self {
            expires_at: envelope.expires()?.instant(),
            wire: envelope.wire_form(),
        })
    }
}

/// How a failed delivery is recorded and its next attempt scheduled: the
/// settings' delays and one random draw for the jitter, taken before the
/// write (a write unit may run again, and must decide the same).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPlan {
    base_secs: u64,
    max_secs: u64,
    /// The peer domain is unreachable: every delay is the ceiling.
    at_ceiling: bool,
    /// Where in [D/2, D] the delay falls: 0 is D/2, 1 is D.
    jitter: f64,
}

impl RetryPlan {
    /// Records `failure` at `now` on `row`; `fresh` is a long-lived REVOKE
    /// just tried, which the row keeps instead of any other, its retries
    /// counted from 0. A row that holds a long-lived REVOKE is scheduled
    /// again, unless the failure ends its retries.
    pub(crate) fn record_failure(
        &self,
        row: &mut QueuedRevocation,
        failure: &DeliveryFailure,
        now: UnixTime,
        fresh: Option<&LongLived>,
    ) {
        row.attempts = row.attempts.saturating_add(1);
        row.last_attempt_at = Some(now);
        row.last_error = Some(failure.to_string());
        if let Some(fresh) = fresh {
            row.envelope = Some(fresh.wire.clone());
            row.expires_at = Some(fresh.expires_at);
            row.retries = 0;
            row.unauthorized = 0;
        }
        if row.envelope.is_none() {
            return;
        }
        let unauthorized = matches!(failure, DeliveryFailure::Http { status: 401, .. });
        if unauthorized {
            row.unauthorized = row.unauthorized.saturating_add(1);
        }
        if ends_retries(failure, row.unauthorized) {
            row.unschedule();
            return;
        }
        let mut next = UnixTime::from_nanos(now.as_nanos() + self.delay_nanos(row.retries));
        if unauthorized {
            next = next.max(now.plus_secs(UNAUTHORIZED_SPACING_SECS));
        }
        if let DeliveryFailure::Http {
            status: 429,
            retry_after_secs: Some(wait),
            ..
        } = failure
        {
            if *wait <= self.max_secs {
                next = next.max(now.plus_secs(i64::try_from(*wait).unwrap_or(i64::MAX)));
            }
        }
        row.next_attempt_at = Some(next);
    }

    /// The delay after background attempt `n`: d in [D/2, D], D = min(base
    /// x 2^n, max) (section 11).
    fn delay_nanos(&self, n: u32) -> i128 {
        let n = if self.at_ceiling { u32::MAX } else { n };
        let doubled = self.base_secs.saturating_mul(1u64.checked_shl(n).unwrap_or(u64::MAX));
        let ceiling = doubled.min(self.max_secs) as f64 * 1e9;
        (ceiling * (0.5 + 0.5 * self.jitter.clamp(0.0, 1.0))) as i128
    }
}

/// Whether a failure ends the retries (section 11): a refusal that cannot
/// change on retry, or the third `401`.
fn ends_retries(failure: &DeliveryFailure, unauthorized: u32) -> bool {
    match failure {
        DeliveryFailure::Http { status, .. } => {
            matches!(status, 400 | 403 | 404 | 409 | 413) || (*status == 401 && unauthorized >= UNAUTHORIZED_ANSWERS)
        }
        DeliveryFailure::BlockedAddress | DeliveryFailure::BlockedDomain | DeliveryFailure::Redirect => true,
        DeliveryFailure::Timeout
        | DeliveryFailure::ConnectRefused
        | DeliveryFailure::Dns
        | DeliveryFailure::Tls
        | DeliveryFailure::Io => false,
    }
}

/// What one of the deliverer's rounds did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryRound {
    /// Rows claimed and tried (or found expired).
    pub claimed: usize,
    /// Of those, delivered: gone from the queue.
    pub delivered: usize,
}

impl Fedid {
    /// The plan for one failed delivery, with a fresh random jitter (the
    /// top of the range if the random source fails).
    pub(crate) fn retry_plan(&self) -> RetryPlan {
        let mut bytes = [0u8; 8];
        let jitter = match self.random.fill(&mut bytes) {
            Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
            Err(_) => 1.0,
        };
        RetryPlan {
            base_secs: self.settings.retry_base_secs.max(1),
            max_secs: self.settings.retry_max_secs.max(1),
            at_ceiling: false,
            jitter,
        }
    }

    /// One round of the deliverer: claims up to `limit` rows whose next
    /// attempt is due and delivers their long-lived REVOKEs, several at a
    /// time (`delivery.concurrency`, within `delivery.max_in_flight` for the
    /// whole instance). A 2xx removes the row with an audit record
    /// `revocation_delivered`; a failure schedules the next attempt or ends
    /// the retries; a REVOKE past its `expires` is dropped with `lastError`
    /// `expired`, the row staying queued.
    pub fn deliver_due(&self, limit: usize) -> Result<DeliveryRound, StoreError> {
        let now = self.clock.now();
        let until = now.plus_millis(self.settings.delivery_timeout_ms).plus_secs(30);
        let claimed = ports::write(self.store.as_ref(), None, move |tx| tx.claim_due(now, until, limit)).wait()?;
        if claimed.is_empty() {
            // The idle case, every second: nothing more to read or write.
            return Ok(DeliveryRound::default());
        }
        let claimed_count = claimed.len();
        let (claimed, leased) = self.one_per_failing_domain(claimed, now, until)?;
        let next = AtomicUsize::new(0);
        let delivered = AtomicUsize::new(0);
        let workers = self.settings.delivery_concurrency.clamp(1, claimed.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    while let Some((user, row, state)) = claimed.get(next.fetch_add(1, Ordering::Relaxed)) {
                        // A row that could not be recorded keeps its claim
                        // until it lapses, and is tried again then.
                        if let Ok(true) = self.deliver_scheduled(*user, row, *state) {
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        if !leased.is_empty() {
            // A lease that cannot be given back lapses with the claims.
            let _ = ports::write(self.store.as_ref(), None, move |tx| {
                for domain in &leased {
                    tx.release_peer_domain(domain)?;
                }
                Ok::<_, StoreError>(())
            })
            .wait();
        }
        Ok(DeliveryRound {
            claimed: claimed_count,
            delivered: delivered.into_inner(),
        })
    }

    /// The claimed rows to deliver now, each with its domain's state, and
    /// the failing domains leased for them: of a failing (or unreachable)
    /// domain only the first row, and only if this instance holds the
    /// domain's lease (one delivery in flight across instances); the other
    /// rows are released to wait for its outcome (section 11).
    #[allow(clippy::type_complexity)]
    fn one_per_failing_domain(
        &self,
        claimed: Vec<(UserId, QueuedRevocation)>,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<(Vec<(UserId, QueuedRevocation, PeerDomainState)>, Vec<Domain>), StoreError> {
        let mut domains: Vec<Domain> = claimed.iter().map(|(_, row)| row.peer.domain()).collect();
        domains.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        domains.dedup();
        let states: HashMap<String, PeerDomainState> = ports::read(self.store.as_ref(), |tx| {
            let mut states = HashMap::with_capacity(domains.len());
            for domain in &domains {
                let state = tx
                    .peer_domain(domain)?
                    .map_or(PeerDomainState::Healthy, |h| h.state(now));
                states.insert(domain.as_str().to_owned(), state);
            }
            Ok::<_, StoreError>(states)
        })?;
        let failing: Vec<Domain> = domains
            .into_iter()
            .filter(|d| states.get(d.as_str()).is_some_and(|s| *s != PeerDomainState::Healthy))
            .collect();
        let leased: Vec<Domain> = if failing.is_empty() {
            Vec::new()
        } else {
            ports::write(self.store.as_ref(), None, move |tx| {
                let mut leased = Vec::new();
                for domain in &failing {
                    if tx.lease_peer_domain(domain, now, until)? {
                        leased.push(domain.clone());
                    }
                }
                Ok::<_, StoreError>(leased)
            })
            .wait()?
        };
        let mut free: HashSet<String> = leased.iter().map(|d| d.as_str().to_owned()).collect();
        let (mut now_rows, mut waiting) = (Vec::new(), Vec::new());
        for (user, row) in claimed {
            let state = states
                .get(row.peer.domain_str())
                .copied()
                .unwrap_or(PeerDomainState::Healthy);
            if state == PeerDomainState::Healthy || free.remove(row.peer.domain_str()) {
                now_rows.push((user, row, state));
            } else {
                waiting.push((user, row.peer));
            }
        }
        if !waiting.is_empty() {
            // They come due again a second later: a round returns only once
            // its deliveries have their outcome, so the next round knows it;
            // meanwhile they leave the round's room to other domains' rows.
            let after_outcome = now.plus_secs(1);
            ports::write(self.store.as_ref(), None, move |tx| {
                for (user, peer) in &waiting {
                    if let Some(mut row) = tx.queued(*user, peer)? {
                        row.claimed_until = None;
                        row.next_attempt_at = row.next_attempt_at.map(|due| due.max(after_outcome));
                        tx.update_queued(*user, &row)?;
                    }
                }
                Ok::<_, StoreError>(())
            })
            .wait()?;
        }
        Ok((now_rows, leased))
    }

    /// Delivers one claimed row's REVOKE and records what happened; whether
    /// it was delivered.
    fn deliver_scheduled(
        &self,
        user: UserId,
        row: &QueuedRevocation,
        state: PeerDomainState,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let lane = Some(Lane::of_user(user));
        let peer = row.peer.clone();
        let envelope = row
            .envelope
            .as_deref()
            .and_then(|wire| Envelope::parse(wire.as_bytes(), self.settings.policy()).ok());
        let expired = row.expires_at.is_none_or(|expires| now > expires);
        let Some(envelope) = envelope.filter(|_| !expired) else {
            // Past `expires` (or unreadable): only a new flush can deliver it.
            ports::write(self.store.as_ref(), lane, move |tx| {
                if let Some(mut row) = tx.queued(user, &peer)? {
                    row.unschedule();
                    row.last_error = Some("expired".into());
                    row.claimed_until = None;
                    tx.update_queued(user, &row)?;
                }
                Ok::<_, StoreError>(())
            })
            .wait()?;
            return Ok(false);
        };
        match self.deliver(&envelope) {
            Ok(()) => {
                let now = self.clock.now();
                ports::write(self.store.as_ref(), lane, move |tx| {
                    if tx.dequeue(user, &peer)? {
                        audit(
                            tx,
                            user,
                            now,
                            "revocation_delivered",
                            json!({ "peerHandle": peer.as_str() }),
                        )?;
                    }
                    Ok::<_, StoreError>(())
                })
                .wait()?;
                Ok(true)
            }
            Err(failure) => {
                let plan = RetryPlan {
                    at_ceiling: state == PeerDomainState::Unreachable,
                    ..self.retry_plan()
                };
                let now = self.clock.now();
                ports::write(self.store.as_ref(), lane, move |tx| {
                    if let Some(mut row) = tx.queued(user, &peer)? {
                        row.retries = row.retries.saturating_add(1);
                        plan.record_failure(&mut row, &failure, now, None);
                        row.claimed_until = None;
                        tx.update_queued(user, &row)?;
                    }
                    Ok::<_, StoreError>(())
                })
                .wait()?;
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::handle::{DomainPolicy, Handle};

    fn plan(jitter: f64) -> RetryPlan {
        RetryPlan {
            base_secs: 30,
            max_secs: 21_600,
            at_ceiling: false,
            jitter,
        }
    }

    fn scheduled_row() -> QueuedRevocation {
        let mut row = QueuedRevocation::new(
            Handle::parse("bob@b.example", DomainPolicy::HTTPS_PUBLIC).unwrap(),
            UnixTime::from_secs(0),
        );
        let fresh = LongLived {
            wire: "{}".into(),
            expires_at: UnixTime::from_secs(604_800),
        };
        plan(1.0).record_failure(
            &mut row,
            &DeliveryFailure::Timeout,
            UnixTime::from_secs(0),
            Some(&fresh),
        );
        row
    }

    fn http(status: u16, retry_after_secs: Option<u64>) -> DeliveryFailure {
        DeliveryFailure::Http {
            status,
            code: None,
            retry_after_secs,
        }
    }

    #[test]
    fn the_delay_doubles_from_the_base_up_to_the_ceiling_within_its_jitter() {
        let secs = |jitter: f64, n: u32| plan(jitter).delay_nanos(n) as f64 / 1e9;
        assert_eq!((secs(0.0, 0), secs(1.0, 0)), (15.0, 30.0));
        assert_eq!((secs(0.0, 3), secs(1.0, 3)), (120.0, 240.0));
        assert_eq!((secs(0.0, 20), secs(1.0, 20)), (10_800.0, 21_600.0));
        assert_eq!(secs(1.0, 200), 21_600.0, "no overflow past 64 doublings");
    }

    #[test]
    fn an_unreachable_domain_is_retried_at_the_ceiling() {
        let ceiling = RetryPlan {
            at_ceiling: true,
            ..plan(1.0)
        };
        assert_eq!(ceiling.delay_nanos(0), 21_600 * 1_000_000_000);
    }

    #[test]
    fn a_fresh_long_lived_revoke_is_kept_and_scheduled_after_the_base() {
        let row = scheduled_row();
        assert!(row.is_scheduled());
        assert_eq!(row.next_attempt_at, Some(UnixTime::from_secs(30)));
        assert_eq!(
            (row.attempts, row.retries, row.last_error.as_deref()),
            (1, 0, Some("timeout"))
        );
    }

    #[test]
    fn a_refusal_that_cannot_change_ends_the_retries() {
        for failure in [
            http(400, None),
            http(403, None),
            http(404, None),
            http(409, None),
            http(413, None),
        ]
        .into_iter()
        .chain([
            DeliveryFailure::BlockedAddress,
            DeliveryFailure::BlockedDomain,
            DeliveryFailure::Redirect,
        ]) {
            let mut row = scheduled_row();
            plan(1.0).record_failure(&mut row, &failure, UnixTime::from_secs(60), None);
            assert!(!row.is_scheduled() && row.envelope.is_none(), "{failure}");
            assert_eq!(row.last_error, Some(failure.to_string()));
        }
    }

    #[test]
    fn a_third_401_ends_the_retries_and_each_waits_30_seconds_at_least() {
        let mut row = scheduled_row();
        let short = RetryPlan {
            base_secs: 1,
            ..plan(0.0)
        };
        for answer in 1..=2 {
            short.record_failure(&mut row, &http(401, None), UnixTime::from_secs(100), None);
            assert_eq!(
                row.next_attempt_at,
                Some(UnixTime::from_secs(130)),
                "401 number {answer}"
            );
        }
        short.record_failure(&mut row, &http(401, None), UnixTime::from_secs(200), None);
        assert!(!row.is_scheduled());
    }

    #[test]
    fn a_retry_after_within_the_ceiling_postpones_the_next_attempt() {
        let mut row = scheduled_row();
        plan(1.0).record_failure(&mut row, &http(429, Some(3_600)), UnixTime::from_secs(100), None);
        assert_eq!(row.next_attempt_at, Some(UnixTime::from_secs(3_700)));
        let mut row = scheduled_row();
        plan(1.0).record_failure(&mut row, &http(429, Some(100_000)), UnixTime::from_secs(100), None);
        assert_eq!(
            row.next_attempt_at,
            Some(UnixTime::from_secs(130)),
            "past the ceiling: ignored"
        );
    }

    #[test]
    fn a_row_without_a_long_lived_revoke_is_not_scheduled() {
        let mut row = QueuedRevocation::new(
            Handle::parse("bob@b.example", DomainPolicy::HTTPS_PUBLIC).unwrap(),
            UnixTime::from_secs(0),
        );
        plan(1.0).record_failure(&mut row, &DeliveryFailure::Timeout, UnixTime::from_secs(5), None);
        assert!(!row.is_scheduled());
        assert_eq!((row.attempts, row.last_error.as_deref()), (1, Some("timeout")));
    }
}
