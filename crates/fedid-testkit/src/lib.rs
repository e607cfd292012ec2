//! Adapters for integration testers: an in-memory store, a manual clock,
//! and an in-process network that connects several fedid instances by
//! domain. Build instances with [`Instance::start`], or join one over a
//! real store with [`start_on`]; [`contract`] is the store contract suite
//! that any `Store` adapter should pass.
//!
//! The reset-and-revoke story on three instances, in memory:
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use fedid_domain::{Clock, MessageType, PageLimit};
//! use fedid_testkit::{ClientKeys, Instance, ManualClock, Network, TestUser};
//!
//! let clock = Arc::new(ManualClock::at_vectors_now());
//! let network = Network::new(Duration::from_millis(100));
//! let [a, b, c] = ["a.example", "b.example", "c.example"].map(|d| Instance::start(&network, d, clock.clone()).unwrap());
//! let (alice, bob, carol) = (a.user("alice").unwrap(), b.user("bob").unwrap(), c.user("carol").unwrap());
//! let send = |from: &TestUser, to: &TestUser, kind| {
//!     let request = from.keys.outbox_request(&from.handle, &to.handle, kind, Default::default(), clock.now());
//!     from.node.send(from.user, request)
//! };
//! send(&alice, &bob, MessageType::RelationshipRequest)?;
//! send(&bob, &alice, MessageType::RelationshipAccept)?;
//! send(&carol, &alice, MessageType::RelationshipRequest)?;
//!
//! // Alice loses her seed: the reset queues a revocation for each former peer.
//! assert_eq!(alice.node.reset_identity(alice.user, Some("erase-all-my-data"))?.revocations_queued, 2);
//! let keys = ClientKeys::generate().unwrap();
//! keys.with_keys(|input| alice.node.set_keys(alice.user, input))?;
//! let items = [&bob, &carol].map(|peer| keys.flush_item(&alice.handle, &peer.handle, clock.now()));
//! assert_eq!(alice.node.flush(alice.user, &items)?.delivered, 2);
//! assert!(bob.node.relationships(bob.user, None, PageLimit::DEFAULT)?.items.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod clock;
pub mod contract;
#[cfg(feature = "http")]
pub mod http;
pub mod memory_store;
pub mod network;

use std::sync::Arc;

pub use client::ClientKeys;
pub use clock::ManualClock;
pub use memory_store::MemoryStore;
pub use network::Network;

use fedid_domain::ports::SystemRandom;
use fedid_domain::services::Ports;
use fedid_domain::{Clock, Domain, DomainPolicy, Fedid, KeyDirectory, Scheme, Settings, Store};

/// One fedid instance on an in-process [`Network`].
pub struct Instance {
    /// The instance's use cases.
    pub fedid: Arc<Fedid>,
    /// Its store, for looking inside.
    pub store: Arc<MemoryStore>,
}

impl Instance {
    /// Starts an instance of `domain` with default settings and a memory store.
    pub fn start(network: &Arc<Network>, domain: &str, clock: Arc<dyn Clock>) -> Option<Self> {
        Some(Self::start_with(network, settings(domain)?, clock))
    }

    /// Starts an instance with the given settings and a memory store.
    pub fn start_with(network: &Arc<Network>, settings: Settings, clock: Arc<dyn Clock>) -> Self {
        let store = Arc::new(MemoryStore::new());
        let fedid = start_on(network, settings, Arc::clone(&store) as Arc<dyn Store>, clock);
        Self { fedid, store }
    }
}

/// Default settings for `domain`: https, public networks only.
pub fn settings(domain: &str) -> Option<Settings> {
    let domain = Domain::parse(domain, DomainPolicy::HTTPS_PUBLIC).ok()?;
    Some(Settings::for_domain(domain, Scheme::Https, false))
}

/// A [`Fedid`] over any store (a real database under test, say), joined to
/// the in-process network under its own domain.
pub fn start_on(
    network: &Arc<Network>,
    settings: Settings,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Arc<Fedid> {
    let fedid = Arc::new(build(settings, store, network, clock));
    network.join(&fedid.settings().domain.clone(), &fedid);
    fedid
}

/// A user of an instance with a set-up identity, and the keys its client holds.
pub struct TestUser {
    /// The instance the user lives on.
    pub node: Arc<Fedid>,
    /// The user's id.
    pub user: fedid_domain::UserId,
    /// The user's handle.
    pub handle: fedid_domain::Handle,
    /// The user's client keys.
    pub keys: ClientKeys,
}

impl Instance {
    /// Creates a user, sets `alias` (folded as user input) and fresh keys.
    pub fn user(&self, alias: &str) -> Option<TestUser> {
        TestUser::create(&self.fedid, alias)
    }
}

impl TestUser {
    /// Creates a user of `node` (over any store), sets `alias` (folded as
    /// user input) and fresh keys.
    pub fn create(node: &Arc<Fedid>, alias: &str) -> Option<TestUser> {
        let node = Arc::clone(node);
        let (user, _token) = node.create_user().ok()?;
        node.set_alias(user, alias).ok()?;
        let keys = ClientKeys::generate()?;
        keys.with_keys(|k| node.set_keys(user, k)).ok()?;
        let handle = node.identity(user).ok()?.handle?;
        Some(TestUser {
            node,
            user,
            handle,
            keys,
        })
    }
}

/// A [`Fedid`] over any store, wired to the in-process network.
pub fn build(settings: Settings, store: Arc<dyn Store>, network: &Arc<Network>, clock: Arc<dyn Clock>) -> Fedid {
    let keys = KeyDirectory::new(network.key_fetcher(), Arc::clone(&store), Arc::clone(&clock), &settings);
    let ports = Ports {
        store,
        clock,
        random: Arc::new(SystemRandom::default()),
        transport: network.transport(),
        keys: Arc::new(keys),
    };
    Fedid::new(settings, ports)
}
