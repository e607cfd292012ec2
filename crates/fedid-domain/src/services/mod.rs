//! The use cases, as methods of [`Fedid`]: one file per use case, one error
//! enum per use case. Each error has a stable `code()` from the contract;
//! HTTP statuses are the HTTP adapter's business (except where the protocol
//! itself records them, see [`InboxError::protocol_status`]).

mod discovery;
mod identity;
mod inbox;
mod key_log;
mod outbox;
mod reads;
mod reset;
mod retries;
mod revocations;
mod sessions;

use std::sync::{Arc, Condvar, Mutex};

pub use discovery::PublishedIdentity;
pub use identity::{ClientEntry, IdentityError, IdentityView, KeysInput};
use inbox::InboxBatches;
pub use inbox::{CheckedEnvelope, InboxError, Received};
pub use key_log::{KeyLogHead, KeyLogPage, KEY_LOG_PAGE};
pub use outbox::{OutboxError, OutboxOutcome, OutboxRequest};
pub use reads::{PeerRelationship, ReadError, UserReads};
pub use reset::{ResetError, ResetReport, RESET_CONFIRMATION};
pub use retries::DeliveryRound;
pub use revocations::{FlushError, FlushItem, FlushOutcome, FlushReport, FlushResult};
pub use sessions::{SessionError, SessionToken};

use crate::envelope::Envelope;
use crate::handle::Domain;
use crate::key_directory::KeyDirectory;
use crate::model::{PeerDomainHealth, PeerDomainState};
use crate::ports::{Clock, DeliveryFailure, Random, Store, StoreError, Transport};
use crate::settings::Settings;

/// Counts what the metrics adapter wants to know about deliveries.
pub trait DeliveryObserver: Send + Sync {
    /// One delivery attempt: its outcome and duration.
    fn delivery(&self, delivered: bool, seconds: f64);
}

/// The adapters one fedid instance runs on.
pub struct Ports {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Randomness (tokens).
    pub random: Arc<dyn Random>,
    /// Outbound deliveries.
    pub transport: Arc<dyn Transport>,
    /// Remote keys.
    pub keys: Arc<KeyDirectory>,
}

/// One fedid instance: settings, ports, and every use case.
pub struct Fedid {
    /// Shared with write units, which own what they use.
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    transport: Arc<dyn Transport>,
    keys: Arc<KeyDirectory>,
    deliveries: Semaphore,
    /// Inbox deliveries waiting to share a unit of work.
    inbox_batches: Arc<InboxBatches>,
    delivery_observer: Option<Arc<dyn DeliveryObserver>>,
}

impl Fedid {
    /// The use cases over these settings and ports.
    pub fn new(settings: Settings, ports: Ports) -> Self {
        let deliveries = Semaphore::new(settings.delivery_max_in_flight.max(1));
        Self {
            settings: Arc::new(settings),
            store: ports.store,
            clock: ports.clock,
            random: ports.random,
            transport: ports.transport,
            keys: ports.keys,
            deliveries,
            inbox_batches: Arc::default(),
            delivery_observer: None,
        }
    }

    /// An instance that never talks to other servers, for administrative
    /// tools (users, tokens, audit): deliveries fail as `blocked domain`
    /// and key lookups fail, without any network adapter to provide.
    pub fn offline(settings: Settings, store: Arc<dyn Store>, clock: Arc<dyn Clock>, random: Arc<dyn Random>) -> Self {
        let keys = KeyDirectory::new(Arc::new(Offline), Arc::clone(&store), Arc::clone(&clock), &settings);
        Self::new(
            settings,
            Ports {
                store,
                clock,
                random,
                transport: Arc::new(Offline),
                keys: Arc::new(keys),
            },
        )
    }

    /// Reports every delivery attempt to `observer`.
    pub fn with_delivery_observer(mut self, observer: Arc<dyn DeliveryObserver>) -> Self {
        self.delivery_observer = Some(observer);
        self
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The clock port.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Delivers an envelope (PROTOCOL.md section 7): in-process through the
    /// inbox for a local recipient, else through the transport. Bounded by
    /// `delivery.max_in_flight` for the whole instance.
    pub(crate) fn deliver(&self, envelope: &Envelope) -> Result<(), DeliveryFailure> {
        let started = std::time::Instant::now();
        let wire = envelope.wire_form();
        let to = envelope.to().domain();
        let result = if !self.settings.domain_allowed(to.as_str()) {
            Err(DeliveryFailure::BlockedDomain)
        } else if self.settings.is_local(to.as_str()) {
            self.receive(wire.as_bytes())
                .map(|_| ())
                .map_err(|e| DeliveryFailure::Http {
                    retry_after_secs: None,
                    status: e.protocol_status(),
                    code: Some(e.code().to_owned()),
                })
        } else {
            let result = {
                let _permit = self.deliveries.acquire();
                self.transport.deliver(&to, &wire)
            };
            self.record_peer_outcome(to, result.as_ref().err());
            result
        };
        if let Some(observer) = &self.delivery_observer {
            observer.delivery(result.is_ok(), started.elapsed().as_secs_f64());
        }
        result
    }

    /// Keeps the health of a peer domain (PROTOCOL.md section 11) after a
    /// delivery to it. Health steers retries; a write that fails leaves it
    /// as it was, and the delivery's outcome stands.
    fn record_peer_outcome(&self, domain: Domain, failure: Option<&DeliveryFailure>) {
        let (failure, now) = (failure.map(|f| f.to_string()), self.clock.now());
        let _ = crate::ports::write(self.store.as_ref(), None, move |tx| {
            tx.record_peer_outcome(&domain, failure.as_deref(), now)
        })
        .wait();
    }

    /// Prunes expired replay keys, a batch at a time; returns how many.
    pub fn prune_replay_keys(&self, batch: usize) -> Result<u64, StoreError> {
        let now = self.clock.now();
        crate::ports::write(self.store.as_ref(), None, move |tx| tx.prune_replays(now, batch)).wait()
    }

    /// Whether the store answers and accepts a write (`/readyz`).
    pub fn ready(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        crate::ports::write(self.store.as_ref(), None, move |tx| tx.record_readiness(now)).wait()
    }

    /// The gauges of `/metrics` that the store knows, from one snapshot.
    pub fn federation_gauges(&self) -> Result<FederationGauges, StoreError> {
        let now = self.clock.now();
        crate::ports::read(self.store.as_ref(), |tx| {
            let mut domains = [0u64; 3];
            for health in tx.peer_domains()? {
                domains[health.state(now) as usize] += 1;
            }
            Ok::<_, StoreError>(FederationGauges {
                queued: tx.total_queue_len()?,
                scheduled: tx.total_scheduled()?,
                key_log_conflicts: tx.count_key_conflicts()?,
                peer_domains: [
                    (PeerDomainState::Healthy, domains[0]),
                    (PeerDomainState::Failing, domains[1]),
                    (PeerDomainState::Unreachable, domains[2]),
                ],
            })
        })
    }

    /// What this server knows of each peer domain it delivered to (or of
    /// `only` that one), with its state now and the rows queued for it:
    /// `fedid-server federation status`.
    pub fn peer_domain_report(&self, only: Option<&Domain>) -> Result<Vec<PeerDomainReport>, StoreError> {
        let now = self.clock.now();
        crate::ports::read(self.store.as_ref(), |tx| {
            let known = match only {
                Some(domain) => tx.peer_domain(domain)?.into_iter().collect(),
                None => tx.peer_domains()?,
            };
            known
                .into_iter()
                .map(|health| {
                    Ok(PeerDomainReport {
                        state: health.state(now),
                        queued: tx.queued_for_domain(&health.domain)?,
                        health,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
    }
}

/// The gauges of `/metrics` that the store knows (API.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FederationGauges {
    /// Revocation rows queued, all users.
    pub queued: u64,
    /// Rows holding a long-lived REVOKE the server retries by itself.
    pub scheduled: u64,
    /// Key-log conflicts recorded for the operator (PROTOCOL.md section 12).
    pub key_log_conflicts: u64,
    /// Peer domains by state.
    pub peer_domains: [(PeerDomainState, u64); 3],
}

/// One line of `fedid-server federation status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDomainReport {
    /// What is known of the domain.
    pub health: PeerDomainHealth,
    /// Its state now.
    pub state: PeerDomainState,
    /// Revocation rows queued for its users, all local users.
    pub queued: u64,
}

/// The network of [`Fedid::offline`]: nothing is reachable.
struct Offline;

impl Transport for Offline {
    fn deliver(&self, _to: &crate::handle::Domain, _wire_form: &str) -> Result<(), DeliveryFailure> {
        Err(DeliveryFailure::BlockedDomain)
    }
}

impl crate::ports::KeyFetcher for Offline {
    fn fetch_keys(
        &self,
        _handle: &crate::handle::Handle,
        _refetch: bool,
    ) -> Result<crate::ports::PublishedKeys, crate::ports::KeyFetchFailure> {
        Err(crate::ports::KeyFetchFailure::Failed("this instance is offline".into()))
    }
}

/// A counting semaphore for deliveries in flight.
struct Semaphore {
    available: Mutex<usize>,
    freed: Condvar,
}

struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    fn new(permits: usize) -> Self {
        Self {
            available: Mutex::new(permits),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut available = self.available.lock().unwrap_or_else(|p| p.into_inner());
        while *available == 0 {
            available = self.freed.wait(available).unwrap_or_else(|p| p.into_inner());
        }
        *available -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut available = self.0.available.lock().unwrap_or_else(|p| p.into_inner());
        *available += 1;
        self.0.freed.notify_one();
    }
}
